//! `directory`: the roles people hold, for checks finer than a command's
//! required role.

use crate::runtime::bindings::ikkyu::plugin::directory::Host;
use crate::runtime::state::CallState;

impl Host for CallState {
    async fn roles(&mut self, user: String) -> wasmtime::Result<Vec<String>> {
        self.require("directory")?;
        self.charge(user.len(), "directory.roles")?;
        Ok(self.directory.held(&user).await?.to_vec())
    }
}
