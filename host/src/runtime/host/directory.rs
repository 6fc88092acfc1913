//! `directory`: the roles people hold, for checks finer than a command's
//! required role, and who holds a role, for telling them something.

use crate::runtime::bindings::ikkyu::plugin::directory::Host;
use crate::runtime::state::CallState;

impl Host for CallState {
    async fn roles(&mut self, user: String) -> wasmtime::Result<Vec<String>> {
        self.require("directory")?;
        self.charge(user.len(), "directory.roles")?;
        Ok(self.directory.held(&user).await?.to_vec())
    }

    async fn members(&mut self, role: String) -> wasmtime::Result<Vec<String>> {
        self.require("directory")?;
        self.charge(role.len(), "directory.members")?;
        let users = self.directory.members(&role).await?;
        // What goes back into the guest counts too: a role held by
        // thousands is that many ids.
        self.charge(users.iter().map(String::len).sum(), "directory.members")?;
        Ok(users)
    }
}
