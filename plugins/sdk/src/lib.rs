//! The guest side of the ikkyu plugin contract, for plugins written in Rust.
//!
//! A plugin implements [`Plugin`] and calls [`export_plugin!`] once. The
//! bindings to `wit/plugin.wit` are generated here, once, so plugin crates
//! never run `wit-bindgen` themselves and all of them agree on one version
//! of the contract. This crate holds only what every plugin needs: typed
//! argument access, JSON in kv, a builder for command declarations and a few
//! formatting helpers. It must not grow plugin-specific logic.
#![deny(missing_docs)]

mod args;
mod span;
mod spec;

pub mod kv;
#[cfg(feature = "time")]
pub mod time;

/// Generated bindings to the `ikkyu:plugin` world. Plugins normally use the
/// re-exports at the crate root instead.
#[allow(missing_docs, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_guest",
        default_bindings_module: "ikkyu_plugin_sdk::bindings",
    });
}

pub use args::Args;
pub use bindings::ikkyu::plugin::types::{
    ArgKind, CommandError, CommandSpec, CronSpec, Firing, Invocation, PluginInfo, ScheduleSpec,
    Value, WebhookRequest, WebhookSpec, When,
};
pub use bindings::ikkyu::plugin::{chat, config, directory, events, http, jobs, schedule};
pub use span::{Span, parse_span};
pub use spec::{Command, Info};

use bindings::exports::ikkyu::plugin::guest::Guest;
use bindings::ikkyu::plugin::types::Arg;

/// What a plugin implements. Every method is an associated function: the
/// host instantiates a fresh plugin for every call, so there is no state to
/// keep between calls except what is written to [`kv`].
pub trait Plugin {
    /// Declares the plugin's name, version, commands and subscriptions.
    fn describe() -> PluginInfo;

    /// Runs one declared command with host-validated arguments and returns
    /// the Markdown reply.
    fn handle_command(
        invocation: Invocation,
        command: &str,
        args: Args,
    ) -> Result<String, CommandError>;

    /// Reacts to an event the plugin subscribed to; `source` is the
    /// plugin that emitted it, as the host recorded it. The default ignores
    /// it.
    fn handle_event(
        _topic: &str,
        _payload: serde_json::Value,
        _source: &str,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Runs a due schedule; `payload` is what it was added with. The
    /// default ignores it.
    fn handle_schedule(_firing: &Firing, _payload: serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// Handles a verified delivery to the declared webhook `name`; the
    /// returned text is the sender's response body, an error tells the
    /// sender its payload could not be used. The default refuses: a plugin
    /// that declares no webhook never gets one.
    fn handle_webhook(name: &str, _request: &WebhookRequest) -> Result<String, String> {
        Err(format!("this plugin has no webhook {name:?}"))
    }
}

/// Adapts any [`Plugin`] to the generated `Guest` trait; used by
/// [`export_plugin!`], not by plugin authors.
#[doc(hidden)]
pub struct Exported<P>(std::marker::PhantomData<P>);

impl<P: Plugin> Guest for Exported<P> {
    fn describe() -> PluginInfo {
        P::describe()
    }

    fn handle_command(
        invocation: Invocation,
        command: String,
        args: Vec<Arg>,
    ) -> Result<String, CommandError> {
        P::handle_command(invocation, &command, Args::new(args))
    }

    fn handle_event(topic: String, payload_json: String, source: String) -> Result<(), String> {
        let payload = serde_json::from_str(&payload_json)
            .map_err(|e| format!("event {topic:?} has a payload that is not JSON: {e}"))?;
        P::handle_event(&topic, payload, &source)
    }

    fn handle_webhook(name: String, request: WebhookRequest) -> Result<String, String> {
        P::handle_webhook(&name, &request)
    }

    fn handle_schedule(firing: Firing) -> Result<(), String> {
        let payload = serde_json::from_str(&firing.payload_json).map_err(|e| {
            format!(
                "schedule {:?} has a payload that is not JSON: {e}",
                firing.id
            )
        })?;
        P::handle_schedule(&firing, payload)
    }
}

/// Exports a type implementing [`Plugin`] as the component's `guest`.
///
/// A whole plugin, built with `cargo build --target wasm32-wasip2`:
///
/// ```
/// use ikkyu_plugin_sdk::*;
///
/// struct Hello;
///
/// impl Plugin for Hello {
///     fn describe() -> PluginInfo {
///         Info::new("hello", "0.1.0")
///             .command(Command::new("hello", "greets you").optional("who", ArgKind::User, "whom to greet"))
///             .build()
///     }
///
///     fn handle_command(inv: Invocation, _command: &str, args: Args) -> Result<String, CommandError> {
///         Ok(format!("hello, {}", args.text("who").unwrap_or(&inv.sender)))
///     }
/// }
///
/// export_plugin!(Hello);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // Exported only for wasm: a native build (for the plugin's unit
        // tests) has no host to export to, and the linker rejects the
        // component-model symbol names.
        #[cfg(target_arch = "wasm32")]
        type __IkkyuExported = $crate::Exported<$plugin>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_guest!(__IkkyuExported with_types_in $crate::bindings);
    };
}

/// Writes a line to the host's log, tagged with the plugin's name.
pub fn log_info(message: &str) {
    bindings::ikkyu::plugin::log::write(bindings::ikkyu::plugin::log::Level::Info, message);
}

/// Writes a warning to the host's log.
pub fn log_warn(message: &str) {
    bindings::ikkyu::plugin::log::write(bindings::ikkyu::plugin::log::Level::Warn, message);
}

/// The plugin's section of the operator's config, deserialized. An absent
/// section deserializes from `{}`, so give every field a default.
pub fn plugin_config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    serde_json::from_str(&config::get()).map_err(|e| format!("the plugin's config is invalid: {e}"))
}

/// A cron schedule: `expression` (five crontab fields) read in `zone`.
pub fn cron(expression: &str, zone: &str) -> When {
    When::Cron(CronSpec {
        expression: expression.to_owned(),
        zone: zone.to_owned(),
    })
}

/// A schedule to add or declare, with a JSON payload handed back when it
/// fires.
pub fn schedule_spec<T: serde::Serialize>(id: &str, when: When, payload: &T) -> ScheduleSpec {
    ScheduleSpec {
        id: id.to_owned(),
        when,
        payload_json: serde_json::to_string(payload).unwrap_or_else(|_| "null".into()),
    }
}

/// A failed command whose text is shown to the caller as it is.
pub fn failed(message: impl Into<String>) -> CommandError {
    CommandError::Failed(message.into())
}

/// Wrong arguments; the host adds the command's usage line.
pub fn usage(message: impl Into<String>) -> CommandError {
    CommandError::Usage(message.into())
}

/// The last `n` lines of `output` (a job's, from `job.finished`), for a
/// chat message.
pub fn last_lines(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines
        .get(lines.len().saturating_sub(n)..)
        .unwrap_or_default()
        .join("\n")
}

/// The host's clock now, in ms since the epoch. Event handlers have no
/// invocation to read it from; the WASI clock a plugin sees is the host's
/// own clock (the one transcripts move), so this agrees with `now-ms`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_lines_keeps_the_end_of_the_output() {
        assert_eq!(super::last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(super::last_lines("a\nb\n", 5), "a\nb");
        assert_eq!(super::last_lines("", 3), "");
    }
}
