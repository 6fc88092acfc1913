//! `config`: the plugin's own section of the operator's config, as JSON.

use crate::runtime::bindings::ikkyu::plugin::config::Host;
use crate::runtime::state::{CallState, Phase};

impl Host for CallState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        // describe() of a plugin without the grant sees an empty config
        // rather than crashing, so it still loads far enough to say what
        // is wrong with it.
        if self.phase == Phase::Describe && !self.grants.interfaces.contains("config") {
            return Ok("{}".into());
        }
        self.require("config")?;
        Ok(self.grants.config_json.clone())
    }
}
