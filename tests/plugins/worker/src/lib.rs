//! Test-only plugin: starts the operator's jobs and cancels them, and
//! edits its own messages, so tests can drive the `jobs` capability and
//! `chat.edit` through the real host. It reports every `job.finished` it
//! gets in the room the job was started from. Built by the test setup;
//! never loaded by default.

// Natively (clippy, `cargo test --workspace`) nothing is exported.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, chat,
    export_plugin, failed, jobs, kv,
};

struct Worker;

impl Plugin for Worker {
    fn describe() -> PluginInfo {
        Info::new("worker", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("work", "start a job; params as a JSON object")
                    .arg("job", ArgKind::Word, "the operator's job")
                    .arg("params", ArgKind::Text, "JSON object of parameters"),
            )
            .command(
                Command::new("work-then-fail", "start a job, then fail the call")
                    .arg("job", ArgKind::Word, "the operator's job")
                    .arg("params", ArgKind::Text, "JSON object of parameters"),
            )
            .command(Command::new("work-cancel", "cancel the last job started"))
            .command(
                Command::new("work-post", "post a message that can be edited later").arg(
                    "text",
                    ArgKind::Text,
                    "what to say",
                ),
            )
            .command(
                Command::new("work-post-edit", "edit the last message posted").arg(
                    "text",
                    ArgKind::Text,
                    "the new text",
                ),
            )
            .command(
                Command::new(
                    "work-edit-foreign",
                    "try to edit a message by a made-up handle",
                )
                .arg("handle", ArgKind::Word, "a handle"),
            )
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        match command {
            "work" | "work-then-fail" => {
                let job = args.text("job").unwrap_or_default();
                let params: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(args.text("params").unwrap_or("{}"))
                        .map_err(|e| failed(format!("params must be a JSON object: {e}")))?;
                let params: Vec<(String, String)> = params
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect();
                let handle = jobs::start(job, &params, "test").map_err(failed)?;
                kv::set("last", &handle).map_err(failed)?;
                kv::set(&format!("room/{handle}"), &inv.room).map_err(failed)?;
                if command == "work-then-fail" {
                    return Err(failed("failed on purpose after starting the job"));
                }
                Ok(format!("started {job}"))
            }
            "work-cancel" => {
                let handle: String = kv::get("last")
                    .map_err(failed)?
                    .ok_or_else(|| failed("no job was started"))?;
                jobs::cancel(&handle).map_err(failed)?;
                Ok("cancelling".into())
            }
            "work-post" => {
                let handle =
                    chat::send(&inv.room, args.text("text").unwrap_or_default()).map_err(failed)?;
                kv::set("msg", &handle).map_err(failed)?;
                Ok("posted".into())
            }
            "work-post-edit" => {
                let handle: String = kv::get("msg")
                    .map_err(failed)?
                    .ok_or_else(|| failed("nothing was posted"))?;
                chat::edit(&handle, args.text("text").unwrap_or_default()).map_err(failed)?;
                Ok("edited".into())
            }
            "work-edit-foreign" => {
                chat::edit(args.text("handle").unwrap_or_default(), "hijacked").map_err(failed)?;
                Ok("edited someone else's message".into())
            }
            other => Err(failed(format!("no command {other:?}"))),
        }
    }

    fn handle_event(topic: &str, p: serde_json::Value, source: &str) -> Result<(), String> {
        if topic != "job.finished" || source != "ikkyu" {
            return Ok(());
        }
        let handle = p["job"].as_str().unwrap_or_default();
        let room: Option<String> = kv::get(&format!("room/{handle}")).map_err(|e| e.to_string())?;
        let Some(room) = room else {
            return Ok(());
        };
        let last = p["output"]
            .as_str()
            .and_then(|o| o.lines().last())
            .unwrap_or("")
            .to_owned();
        let exit = p["exit-code"]
            .as_i64()
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        chat::send(
            &room,
            &format!(
                "job {} {} {} (exit {exit}): {last}",
                p["id"],
                p["name"].as_str().unwrap_or_default(),
                p["outcome"].as_str().unwrap_or_default()
            ),
        )
        .map(drop)
    }
}

export_plugin!(Worker);
