//! Test-only plugin: emits events on command and fails on demand, so tests
//! can drive other plugins' event handlers and prove that a failing call
//! commits nothing. Built by the test setup; never loaded by default.

// Natively (clippy, `cargo test --workspace`) nothing is exported.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, chat, events,
    export_plugin, failed, kv,
};

struct Emitter;

impl Plugin for Emitter {
    fn describe() -> PluginInfo {
        Info::new("emitter", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("emit", "emit an event")
                    .arg("topic", ArgKind::Word, "event topic")
                    .arg("payload", ArgKind::Text, "JSON payload"),
            )
            .command(
                Command::new("emit-then-fail", "write kv, send, emit, then fail")
                    .arg("how", ArgKind::Word, "error or trap")
                    .arg("topic", ArgKind::Word, "event topic")
                    .arg("payload", ArgKind::Text, "JSON payload"),
            )
            .command(Command::new("emitted", "how many emits committed"))
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        let topic = args.text("topic").unwrap_or_default();
        let payload = args.text("payload").unwrap_or("{}");
        match command {
            "emit" => {
                bump()?;
                events::emit(topic, payload);
                Ok(format!("emitted {topic}"))
            }
            "emit-then-fail" => {
                bump()?;
                chat::send(&inv.room, "this must never be delivered").map_err(failed)?;
                events::emit(topic, payload);
                if args.text("how") == Some("trap") {
                    panic!("emitter trapped on purpose");
                }
                Err(failed("emitter failed on purpose"))
            }
            "emitted" => {
                let n: u64 = kv::get("count").map_err(failed)?.unwrap_or(0);
                Ok(format!("emitted {n} times"))
            }
            other => Err(failed(format!("no command {other:?}"))),
        }
    }
}

fn bump() -> Result<(), CommandError> {
    let n: u64 = kv::get("count").map_err(failed)?.unwrap_or(0);
    kv::set("count", &(n + 1)).map_err(failed)
}

export_plugin!(Emitter);
