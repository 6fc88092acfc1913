//! Test-only plugin that is wrong on purpose: it loops, allocates without
//! bound, sleeps inside a host call, crashes, pokes at kv keys that belong
//! to other plugins, fills its storage, forges events and writes as if it
//! were the host. The containment tests drop it into a running
//! bot and check that everyone else is still served. Never loaded by
//! default.

// Natively (clippy, `cargo test --workspace`) nothing is exported.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, chat, cron, events,
    export_plugin, failed, http, kv, schedule,
};

struct Misbehave;

impl Plugin for Misbehave {
    fn describe() -> PluginInfo {
        Info::new("misbehave", env!("CARGO_PKG_VERSION"))
            .command(Command::new("spin", "loop forever"))
            .command(Command::new("hog", "allocate and touch memory").arg(
                "mb",
                ArgKind::Integer,
                "MiB",
            ))
            .command(Command::new("nap", "sleep inside a host call").arg(
                "seconds",
                ArgKind::Integer,
                "how long",
            ))
            .command(Command::new("boom", "crash"))
            .command(Command::new("noop", "do nothing (for benchmarks)"))
            .command(
                Command::new("poke", "write a kv key in this plugin's own namespace")
                    .arg("key", ArgKind::Word, "key")
                    .arg("value", ArgKind::Integer, "value"),
            )
            .command(Command::new("peek", "read a kv key").arg("key", ArgKind::Word, "key"))
            .command(Command::new("now", "the time as std::time reads it"))
            .command(Command::new("dm", "send a direct message").arg(
                "user",
                ArgKind::User,
                "to whom",
            ))
            .command(
                Command::new("flood", "write many large kv values in one call")
                    .arg("n", ArgKind::Integer, "how many")
                    .arg("kib", ArgKind::Integer, "KiB each"),
            )
            .command(
                Command::new("bigdel", "delete a kv key of this many MiB").arg(
                    "mib",
                    ArgKind::Integer,
                    "MiB",
                ),
            )
            .command(
                Command::new(
                    "bigzone",
                    "ask for the next run in a zone named with this many MiB",
                )
                .arg("mib", ArgKind::Integer, "MiB"),
            )
            .command(
                Command::new("forge", "emit an event it has no business emitting")
                    .arg("topic", ArgKind::Word, "topic")
                    .arg("initiator", ArgKind::User, "who gets the credit"),
            )
            .command(Command::new("impersonate", "answer as if it were the host"))
            .command(Command::new("fill", "store 16 values of 1 MiB").arg(
                "from",
                ArgKind::Integer,
                "first index",
            ))
            .command(
                Command::new("get", "read a URL now")
                    .arg("url", ArgKind::Word, "URL")
                    .optional("auth", ArgKind::Text, "Authorization header"),
            )
            .command(
                Command::new("post", "POST to a URL after the commit")
                    .arg("url", ArgKind::Word, "URL")
                    .arg("tag", ArgKind::Word, "tag")
                    .optional("auth", ArgKind::Text, "Authorization header"),
            )
            .command(
                Command::new("post-then-fail", "ask for a POST, then fail").arg(
                    "url",
                    ArgKind::Word,
                    "URL",
                ),
            )
            .command(Command::new("sent", "what came of a POST").arg("tag", ArgKind::Word, "tag"))
            .command(Command::new("count", "scan a prefix").arg("prefix", ArgKind::Word, "prefix"))
            .build()
    }

    fn handle_command(_inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        match command {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mb = usize::try_from(args.integer("mb").unwrap_or(0)).unwrap_or(0);
                let mut blocks = Vec::new();
                for _ in 0..mb {
                    blocks.push(vec![1u8; 1 << 20]);
                }
                Ok(format!(
                    "held {} MiB",
                    blocks.iter().map(Vec::len).sum::<usize>() >> 20
                ))
            }
            "nap" => {
                let secs = u64::try_from(args.integer("seconds").unwrap_or(0)).unwrap_or(0);
                // Guest code: this blocks inside the host's WASI clock call, which
                // is exactly what the test needs.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(std::time::Duration::from_secs(secs));
                Ok(format!("slept {secs}s"))
            }
            "boom" => panic!("misbehave crashed on purpose"),
            "dm" => {
                let user = args.text("user").unwrap_or_default();
                chat::direct(user, "hello from misbehave").map_err(failed)?;
                Ok(format!("sent to {user}"))
            }
            "flood" => {
                let n = args.integer("n").unwrap_or(0);
                let kib = usize::try_from(args.integer("kib").unwrap_or(0)).unwrap_or(0);
                let value = vec![7u8; kib << 10];
                for i in 0..n {
                    kv::set(&format!("flood/{i}"), &value).map_err(failed)?;
                }
                Ok(format!("wrote {n} values"))
            }
            "bigdel" => {
                let mib = usize::try_from(args.integer("mib").unwrap_or(0)).unwrap_or(0);
                kv::delete(&"k".repeat(mib << 20));
                Ok("deleted".into())
            }
            "bigzone" => {
                let mib = usize::try_from(args.integer("mib").unwrap_or(0)).unwrap_or(0);
                let when = cron("* * * * *", &"Z".repeat(mib << 20));
                match schedule::next(&when, 0) {
                    Ok(next) => Ok(format!("next {next:?}")),
                    Err(e) => Err(failed(e)),
                }
            }
            "now" => {
                // The system clock, as a plugin that does not use the host's
                // `now-ms` would read it.
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                Ok(format!("std::time says {ms}"))
            }
            "forge" => {
                let topic = args.text("topic").unwrap_or_default();
                let initiator = args.text("initiator").unwrap_or_default();
                events::emit(topic, &format!("{{\"initiator\": \"{initiator}\"}}"));
                Ok(format!("emitted {topic}"))
            }
            "impersonate" => Ok(
                "ikkyu: plugin points 0.1.0 is quarantined; `!plugin reload misbehave` lifts it."
                    .into(),
            ),
            "fill" => {
                // 16 values of 1 MiB (raw bytes, not JSON): half the call's
                // budget, so a bot is filled in a few calls.
                let from = args.integer("from").unwrap_or(0);
                let value = vec![7u8; 1 << 20];
                for i in from..from + 16 {
                    ikkyu_plugin_sdk::bindings::ikkyu::plugin::kv::set(
                        &format!("fill/{i}"),
                        &value,
                    );
                }
                Ok(format!("stored fill/{from}..{}", from + 16))
            }
            "get" => {
                let request = request(
                    "GET",
                    args.text("url").unwrap_or_default(),
                    args.text("auth"),
                );
                match http::fetch(&request) {
                    Ok(r) => Ok(format!(
                        "status {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => Ok(format!("fetch failed: {e}")),
                }
            }
            "post" => {
                let tag = args.text("tag").unwrap_or_default();
                let request = request(
                    "POST",
                    args.text("url").unwrap_or_default(),
                    args.text("auth"),
                );
                http::send(&request, tag).map_err(failed)?;
                Ok(format!("queued {tag}"))
            }
            "post-then-fail" => {
                let request = request("POST", args.text("url").unwrap_or_default(), None);
                http::send(&request, "doomed").map_err(failed)?;
                Err(failed("failing after asking for a POST"))
            }
            "sent" => {
                let tag = args.text("tag").unwrap_or_default();
                let outcome: Option<serde_json::Value> =
                    kv::get(&format!("sent/{tag}")).map_err(failed)?;
                Ok(outcome.map_or_else(|| format!("nothing yet for {tag}"), |o| o.to_string()))
            }
            "count" => {
                let prefix = args.text("prefix").unwrap_or_default();
                let n = ikkyu_plugin_sdk::bindings::ikkyu::plugin::kv::scan(prefix).len();
                Ok(format!("{n} under {prefix}"))
            }
            "noop" => Ok(String::new()),
            "poke" => {
                let key = args.text("key").unwrap_or_default();
                kv::set(key, &args.integer("value").unwrap_or(0)).map_err(failed)?;
                Ok(format!("wrote {key}"))
            }
            "peek" => {
                let key = args.text("key").unwrap_or_default();
                let value: Option<i64> = kv::get(key).map_err(failed)?;
                Ok(format!("{key} = {value:?}"))
            }
            other => Err(failed(format!("no command {other:?}"))),
        }
    }

    fn handle_event(topic: &str, payload: serde_json::Value, source: &str) -> Result<(), String> {
        if topic == "http.sent" && source == "ikkyu" {
            let tag = payload.get("tag").and_then(|t| t.as_str()).unwrap_or("?");
            kv::set(&format!("sent/{tag}"), &payload)?;
        }
        Ok(())
    }
}

/// A request with a body naming the plugin and, if given, an
/// `Authorization` header.
fn request(method: &str, url: &str, auth: Option<&str>) -> http::Request {
    http::Request {
        method: method.into(),
        url: url.into(),
        headers: auth
            .map(|a| vec![("Authorization".to_owned(), a.to_owned())])
            .unwrap_or_default(),
        body: if method == "POST" {
            b"{\"from\": \"misbehave\"}".to_vec()
        } else {
            Vec::new()
        },
    }
}

export_plugin!(Misbehave);
