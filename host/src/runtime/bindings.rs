//! The host side of `wit/plugin.wit`, generated once for the whole host.
//!
//! Every import is async (kv and directory read the database) and
//! trappable (a call that breaks the host's rules ends the call with a
//! trap, whose message reaches the audit log).

// Generated code: its documentation is the WIT's own doc comments.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub use self::ikkyu::plugin::types::{
    Arg, ArgKind, ArgSpec, CommandError, CommandSpec, CronSpec, Firing, FlagSpec, Invocation,
    PluginInfo, ScheduleSpec, Value, WebhookRequest, WebhookSpec, When,
};
