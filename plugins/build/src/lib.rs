//! Builds as `seeds/001` (Marvin) asks for them: only the services whose
//! code changed since they last built green, across several repositories,
//! set off by a person (`!build dev --service api`), a push webhook or a
//! cron, with each result posted in the environment's room.
//!
//! Change detection and the builds are the operator's jobs (the host's
//! `jobs` capability): detection fetches a repository and lists the files
//! changed since a service's green commit (`scripts/git-changes.sh`), run
//! with no secrets; a build job builds one service at one commit. Their
//! outcomes come back as `job.finished`.
//!
//! [`changes`] reads a detection and decides who is due, [`flow`] is a
//! build's state, [`push`] reads push payloads, [`settings`] the config,
//! [`record`] what lives in kv, [`commands`] the glue, [`render`] how it
//! reads.

// Natively (for unit tests of the pure logic) nothing is exported, so the
// glue below is unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod changes;
mod commands;
pub mod flow;
pub mod push;
mod record;
mod render;
pub mod settings;

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo,
    WebhookRequest, cron, export_plugin, failed, plugin_config, schedule_spec,
};

use commands::Ctx;
use settings::Settings;

struct BuildPlugin;

fn ctx(now_ms: i64) -> Result<Ctx, String> {
    let settings: Settings = plugin_config()?;
    settings
        .check()
        .map_err(|e| format!("the build settings are not valid: {e}"))?;
    Ok(Ctx { settings, now_ms })
}

impl Plugin for BuildPlugin {
    fn describe() -> PluginInfo {
        let mut info = Info::new("build", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new(
                    "build",
                    "build what changed since its last green build in an environment, or the services named",
                )
                .arg("env", ArgKind::Word, "the environment, e.g. dev")
                .repeated_flag(
                    "service",
                    ArgKind::Word,
                    "build this service whether or not it changed (repeat for more)",
                ),
            )
            .command(
                Command::new(
                    "build status",
                    "running and recent builds, and which services are due",
                )
                .optional("n", ArgKind::Integer, "a build's number, for its details"),
            )
            .webhook(
                "push",
                "a GitHub or GitLab push: builds what changed in the environments on that branch",
            )
            .subscribe("job.finished");
        // A config that does not parse declares no schedules; every call
        // then says what is wrong with it.
        if let Ok(settings) = plugin_config::<Settings>() {
            for (env, e) in &settings.environments {
                if let Some(expression) = &e.cron {
                    info = info.schedule(schedule_spec(
                        &format!("cron/{env}"),
                        cron(expression, &e.zone),
                        env,
                    ));
                }
            }
        }
        info.build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        let ctx = ctx(inv.now_ms).map_err(failed)?;
        match command {
            "build" => commands::request(
                &ctx,
                &inv,
                args.text("env").unwrap_or_default(),
                &args.texts("service"),
            ),
            "build status" => commands::status(&ctx, args.integer("n")),
            other => Err(failed(format!("no command {other:?}"))),
        }
    }

    fn handle_event(topic: &str, payload: serde_json::Value, source: &str) -> Result<(), String> {
        if topic != "job.finished" || source != "ikkyu" {
            return Ok(());
        }
        commands::job_finished(&ctx(ikkyu_plugin_sdk::now_ms())?, &payload)
    }

    fn handle_schedule(firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let Some(env) = payload.as_str() else {
            return Ok(());
        };
        commands::scheduled(&ctx(firing.now_ms)?, env)
    }

    fn handle_webhook(name: &str, request: &WebhookRequest) -> Result<String, String> {
        if name != "push" {
            return Err(format!("no webhook {name:?}"));
        }
        commands::push(&ctx(request.now_ms)?, request)
    }
}

export_plugin!(BuildPlugin);
