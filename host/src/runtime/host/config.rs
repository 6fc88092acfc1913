//! `config`: the plugin's own section of the operator's config, as JSON.

use crate::runtime::bindings::ikkyu::plugin::config::Host;
use crate::runtime::state::CallState;

impl Host for CallState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        self.require("config")?;
        Ok(self.grants.config_json.clone())
    }
}
