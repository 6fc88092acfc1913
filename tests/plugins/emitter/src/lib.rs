//! Test-only plugin: emits events on command and fails on demand, so tests
//! can drive other plugins' event handlers and prove that a failing call
//! commits nothing. It also counts the `test.*` events delivered to it
//! (`!seen`) and emits from a scheduled run (`!emit-later`), so tests can
//! see deliveries flow. With `declare = "<words>"` in its config it also
//! declares a command of those words, as a hostile plugin trying to answer
//! for a built-in or another plugin would. Its webhook `hook` counts
//! deliveries (`!hooked`) and emits `test.hooked`, refusing or crashing
//! when the body says `"fail": "error"` or `"trap"`. Built by the test
//! setup; never loaded by default. (`lab` is the same webhook again, for
//! a GitLab sender.)

// Natively (clippy, `cargo test --workspace`) nothing is exported.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo,
    WebhookRequest, When, chat, events, export_plugin, failed, kv, plugin_config, schedule,
    schedule_spec,
};

struct Emitter;

/// The plugin's config.
#[derive(Default, serde::Deserialize)]
struct Settings {
    /// An extra command to declare.
    declare: Option<String>,
}

impl Plugin for Emitter {
    fn describe() -> PluginInfo {
        let settings: Settings = plugin_config().unwrap_or_default();
        let mut info = Info::new("emitter", env!("CARGO_PKG_VERSION"));
        if let Some(words) = &settings.declare {
            info = info.command(Command::new(words, "a command taken from the config"));
        }
        info.command(
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
        .command(Command::new(
            "seen",
            "how many test.* events were delivered",
        ))
        .command(
            Command::new("emit-later", "emit an event from a run one minute from now").arg(
                "topic",
                ArgKind::Word,
                "event topic",
            ),
        )
        .command(Command::new(
            "hooked",
            "how many webhook deliveries were taken",
        ))
        .webhook("hook", "counts deliveries; fails on request")
        .webhook("lab", "the same, for a GitLab sender")
        .subscribe("test.*")
        .own_events()
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
            "hooked" => {
                let n: u64 = kv::get("hooked").map_err(failed)?.unwrap_or(0);
                let last: String = kv::get("last-delivery")
                    .map_err(failed)?
                    .unwrap_or_default();
                Ok(format!("took {n} deliveries; the last was {last:?}"))
            }
            "seen" => {
                let n: u64 = kv::get("seen").map_err(failed)?.unwrap_or(0);
                Ok(format!("seen {n} events"))
            }
            "emit-later" => {
                let when = When::At(inv.now_ms + 60_000);
                let spec = schedule_spec(&format!("later-{topic}"), when, &topic);
                schedule::add(&spec).map_err(failed)?;
                Ok(format!("{topic} will be emitted in a minute"))
            }
            other => Err(failed(format!("no command {other:?}"))),
        }
    }

    fn handle_event(_topic: &str, payload: serde_json::Value, _source: &str) -> Result<(), String> {
        let n: u64 = kv::get("seen").map_err(|e| e.to_string())?.unwrap_or(0);
        kv::set("seen", &(n + 1)).map_err(|e| e.to_string())?;
        // A storm on request: every event with a fan-out emits that many
        // more, which (with own events) come back here.
        let fanout = payload
            .get("fanout")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        for _ in 0..fanout {
            events::emit("test.storm", &payload.to_string());
        }
        Ok(())
    }

    fn handle_webhook(name: &str, request: &WebhookRequest) -> Result<String, String> {
        if name != "hook" && name != "lab" {
            return Err(format!("no webhook {name:?}"));
        }
        let body: serde_json::Value = serde_json::from_slice(&request.body)
            .map_err(|e| format!("the body is not JSON: {e}"))?;
        let n: u64 = kv::get("hooked").map_err(|e| e.to_string())?.unwrap_or(0);
        kv::set("hooked", &(n + 1)).map_err(|e| e.to_string())?;
        kv::set("last-delivery", &request.delivery).map_err(|e| e.to_string())?;
        let payload = serde_json::json!({
            "delivery": request.delivery,
            "event": request.event,
            "sender": request.sender,
        });
        events::emit("test.hooked", &payload.to_string());
        match body.get("fail").and_then(serde_json::Value::as_str) {
            Some("error") => Err("refused on purpose".into()),
            Some("trap") => panic!("emitter's webhook trapped on purpose"),
            _ => Ok(format!("took delivery {} ({})", request.delivery, n + 1)),
        }
    }

    fn handle_schedule(_firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let topic = payload.as_str().unwrap_or("test.tick");
        events::emit(topic, "{}");
        Ok(())
    }
}

fn bump() -> Result<(), CommandError> {
    let n: u64 = kv::get("count").map_err(failed)?.unwrap_or(0);
    kv::set("count", &(n + 1)).map_err(failed)
}

export_plugin!(Emitter);
