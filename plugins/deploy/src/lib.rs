//! Deploys as `seeds/000` and `seeds/004` describe them: a queue of tasks
//! (at most 15 rolling out at once, one per service, `--after` another,
//! waiting for an upstream task's static files), each going static files →
//! a canary on one host → a countdown to confirm (not confirmed: cancelled)
//! → batches of hosts, datacenter by datacenter; a failed batch stops it,
//! a rollback runs the service's plan in its order over the hosts done.
//! The work itself is the operator's jobs (the host's `jobs` capability);
//! their outcomes come back as `job.finished`.
//!
//! [`flow`] is the state machine (pure), [`settings`] the services,
//! [`record`] what lives in kv, [`commands`] the commands and reactions,
//! [`render`] how it reads.

// Natively (for unit tests of the pure logic) nothing is exported, so the
// glue below is unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod commands;
pub mod flow;
mod record;
mod render;
pub mod settings;

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo,
    export_plugin, failed, plugin_config,
};

use commands::Ctx;
use settings::Settings;

struct Deploy;

fn numbered(name: &str, summary: &str) -> Command {
    Command::new(name, summary).arg("n", ArgKind::Integer, "the task's number")
}

fn ctx(now_ms: i64) -> Result<Ctx, String> {
    let settings: Settings = plugin_config()?;
    settings
        .check()
        .map_err(|e| format!("the deploy settings are not valid: {e}"))?;
    Ok(Ctx { settings, now_ms })
}

impl Plugin for Deploy {
    fn describe() -> PluginInfo {
        Info::new("deploy", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new(
                    "deploy",
                    "queue a deploy of a service's version; returns its number",
                )
                .arg("service", ArgKind::Word, "the service, as configured")
                .arg("version", ArgKind::Word, "the version, e.g. 1.4.2")
                .flag(
                    "after",
                    ArgKind::Integer,
                    "wait for this task to finish first",
                )
                .switch("force", "ops: deploy outside the service's deploy window"),
            )
            .command(Command::new(
                "deploy queue",
                "tasks with their state, position and why each waits",
            ))
            .command(numbered(
                "deploy status",
                "one task: progress, hosts, time left, history",
            ))
            .command(numbered(
                "deploy confirm",
                "go on after the canary (initiator or ops)",
            ))
            .command(numbered(
                "deploy cancel",
                "call a task off; its running jobs are stopped first (initiator or ops)",
            ))
            .command(numbered(
                "deploy rollback",
                "run the rollback plan over the hosts already done (initiator or ops)",
            ))
            .subscribe("job.finished")
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        let ctx = ctx(inv.now_ms).map_err(failed)?;
        let n = args.integer("n").unwrap_or_default();
        match command {
            "deploy" => commands::request(
                &ctx,
                &inv,
                args.text("service").unwrap_or_default(),
                args.text("version").unwrap_or_default(),
                args.integer("after"),
                args.switch("force"),
            ),
            "deploy queue" => commands::queue(&ctx),
            "deploy status" => commands::status(&ctx, n),
            "deploy confirm" => commands::confirm(&ctx, &inv, n),
            "deploy cancel" => commands::cancel(&ctx, &inv, n),
            "deploy rollback" => commands::rollback(&ctx, &inv, n),
            other => Err(failed(format!("no command {other:?}"))),
        }
    }

    fn handle_event(topic: &str, payload: serde_json::Value, source: &str) -> Result<(), String> {
        if topic != "job.finished" || source != "ikkyu" {
            return Ok(());
        }
        let now = ikkyu_plugin_sdk::now_ms();
        commands::job_finished(&ctx(now)?, &payload)
    }

    fn handle_schedule(firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let Some(n) = payload.as_u64() else {
            return Ok(());
        };
        if firing.id.starts_with("countdown/") {
            return commands::countdown(&ctx(firing.now_ms)?, n);
        }
        Ok(())
    }
}

export_plugin!(Deploy);
