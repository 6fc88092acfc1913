//! `log`: a plugin's diagnostics in the host log, tagged with its name.

use crate::runtime::bindings::ikkyu::plugin::log::{Host, Level};
use crate::runtime::state::CallState;

/// Longest line a plugin may log; the rest is cut so a plugin cannot flood
/// the log with one call.
const MAX_LINE: usize = 4096;

impl Host for CallState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.require("log")?;
        self.charge(message.len(), "log.write")?;
        let cut = message
            .char_indices()
            .nth(MAX_LINE)
            .and_then(|(i, _)| message.get(..i))
            .unwrap_or(&message);
        // Escaped, so a plugin cannot forge log lines or drive a terminal.
        let cut = crate::text::one_line(cut);
        let plugin = &*self.plugin;
        match level {
            Level::Debug => tracing::debug!(plugin, "{cut}"),
            Level::Info => tracing::info!(plugin, "{cut}"),
            Level::Warn => tracing::warn!(plugin, "{cut}"),
            Level::Error => tracing::error!(plugin, "{cut}"),
        }
        Ok(())
    }
}
