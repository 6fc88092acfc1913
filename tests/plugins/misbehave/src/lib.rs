//! Test-only plugin that is wrong on purpose: it loops, allocates without
//! bound, sleeps inside a host call, crashes, and pokes at kv keys that
//! belong to other plugins. The containment tests drop it into a running
//! bot and check that everyone else is still served. Never loaded by
//! default.

// Natively (clippy, `cargo test --workspace`) nothing is exported.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, export_plugin,
    failed, kv,
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
}

export_plugin!(Misbehave);
