//! `events`: topics with JSON payloads, stored with the call's commit and
//! delivered to subscribers afterwards.

use crate::runtime::bindings::ikkyu::plugin::events::Host;
use crate::runtime::state::{CallState, MAX_VALUE};

impl Host for CallState {
    async fn emit(&mut self, topic: String, payload_json: String) -> wasmtime::Result<()> {
        self.require("events")?;
        self.count_effect()?;
        self.charge(topic.len() + payload_json.len(), "events.emit")?;
        let topic_ok = !topic.is_empty()
            && topic.len() <= 128
            && topic
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if !topic_ok {
            wasmtime::bail!(
                "event topic {topic:?} must be lowercase letters, digits, '.', '-' or '_'"
            );
        }
        if payload_json.len() > MAX_VALUE {
            wasmtime::bail!("payload of event {topic:?} is larger than {MAX_VALUE} bytes");
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&payload_json) {
            wasmtime::bail!("payload of event {topic:?} is not JSON: {e}");
        }
        self.events.push((topic, payload_json));
        Ok(())
    }
}
