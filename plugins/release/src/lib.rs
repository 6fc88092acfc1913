//! The release permission queue of `seeds/003` ("dobro"): requests checked
//! against the tracker's signs of done work, approvals, admins, one
//! release of a critical component at a time, first in first out per
//! component, freezes, reminders that outlive restarts, the ticket moved
//! after the release, and a full log.
//!
//! [`flow`] is the state machine (pure), [`signs`] the checks (pure),
//! [`tracker`] reads Jira or GitLab and builds the write-backs, [`record`]
//! is what lives in kv, [`commands`] the chat commands, [`render`] how
//! they read and [`notify`] who else is told.

// Natively (for unit tests of the pure logic) nothing is exported, so the
// glue below is unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod commands;
pub mod flow;
mod notify;
mod record;
mod render;
mod settings;
pub mod signs;
mod tracker;

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo, directory,
    export_plugin, failed, log_warn, plugin_config,
};

use notify::Notice;
use settings::Settings;

struct Release;

fn numbered(name: &str, summary: &str) -> Command {
    Command::new(name, summary).arg("n", ArgKind::Integer, "the request's number")
}

impl Plugin for Release {
    fn describe() -> PluginInfo {
        Info::new("release", env!("CARGO_PKG_VERSION"))
            .command(Command::new("release", "the open release requests (same as `release queue`)"))
            .command(
                Command::new(
                    "release request",
                    "ask for permission to release a ticket; its signs of done work are checked first",
                )
                .alias("dobro")
                .arg("ticket", ArgKind::Word, "the ticket: PROJ-123, #12, or a link to it or to a fix version")
                .flag("component", ArgKind::Word, "what is released (default: the ticket's component)")
                .switch("no-admin", "no admin is needed (an app store upload)")
                .flag("docs", ArgKind::Word, "link to the release docs")
                .flag("rollback", ArgKind::Word, "link to the rollback plan"),
            )
            .command(Command::new("release queue", "open requests and why each waits"))
            .command(numbered("release show", "one request: history, signs, tracker updates"))
            .command(numbered("release accept", "approve a request").role("approver"))
            .command(
                numbered("release here", "take a request as its admin, or hand it to someone")
                    .flag("to", ArgKind::User, "the ops user who takes it instead of you")
                    .role("ops"),
            )
            .command(
                numbered("release start", "start an accepted release (initiator or ops)")
                    .switch("force", "ops: start before earlier requests of the component"),
            )
            .command(numbered("release finish", "the release is done (initiator or ops)"))
            .command(numbered("release cancel", "call a request off (initiator or ops)"))
            .command(numbered("release rollback", "a started or finished release was undone (initiator or ops)"))
            .command(Command::new("release log", "who requested, approved, took, started and finished what, when").optional(
                "what",
                ArgKind::Word,
                "how many (default 10), or a component",
            ))
            .command(
                Command::new("release freeze", "no release of a component (or all) starts for a while")
                    .arg("component", ArgKind::Word, "a component, or all")
                    .arg("duration", ArgKind::Duration, "how long: 2h, 3d")
                    .arg("reason", ArgKind::Text, "why, shown in the queue")
                    .role("ops"),
            )
            .command(
                Command::new("release unfreeze", "lift a freeze")
                    .arg("component", ArgKind::Word, "the component, or all")
                    .role("ops"),
            )
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        match command {
            "release" | "release queue" => commands::queue(&inv),
            "release request" => commands::request(&inv, &args),
            "release show" => commands::show(&args),
            "release accept" => commands::accept(&inv, &args),
            "release here" => commands::here(&inv, &args),
            "release start" => commands::start(&inv, &args),
            "release finish" => commands::finish(&inv, &args),
            "release cancel" => commands::cancel(&inv, &args),
            "release rollback" => commands::rollback(&inv, &args),
            "release log" => commands::log(&args),
            "release freeze" => commands::freeze(&inv, &args),
            "release unfreeze" => commands::unfreeze(&inv, &args),
            other => Err(failed(format!("release has no command {other:?}"))),
        }
    }

    /// The outcome of a tracker update (`http.sent` from the host): kept
    /// with the request, and the initiator told when it failed.
    fn handle_event(topic: &str, payload: serde_json::Value, source: &str) -> Result<(), String> {
        if topic != "http.sent" || source != "ikkyu" {
            return Ok(());
        }
        let tag = payload
            .get("tag")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let Some(n) = tag.split('/').next().and_then(|n| n.parse::<i64>().ok()) else {
            return Ok(());
        };
        let mut r = record::load(n)?;
        let name = render::name(&r);
        let Some(update) = r.updates.iter_mut().find(|u| u.tag == tag) else {
            return Ok(());
        };
        let status = payload.get("status").and_then(|s| s.as_u64());
        update.outcome = match (status, payload.get("error").and_then(|e| e.as_str())) {
            (Some(s @ 200..=299), _) => format!("done ({s})"),
            (Some(s), _) => format!("failed: the tracker answered {s}"),
            (None, Some(e)) => format!("failed: {e}"),
            (None, None) => "failed".to_owned(),
        };
        let failure = update.outcome.starts_with("failed").then(|| {
            format!(
                "⚠️ The tracker update for {name} ({}) {}. The release itself is not affected; update the ticket by hand.",
                update.what, update.outcome
            )
        });
        if let Some(text) = failure {
            notify::send(
                &settings()?,
                "",
                None,
                Notice {
                    room: None,
                    direct: vec![(r.request.initiator.as_str(), text)],
                },
            );
        }
        record::save(&r)
    }

    /// Reminders (`remind/N`), overdue pings (`overdue/N`) and a freeze's
    /// end (`thaw/<component>`).
    fn handle_schedule(firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let s = settings()?;
        let (kind, _) = firing.id.split_once('/').unwrap_or((&firing.id, ""));
        if kind == "thaw" {
            let component = payload
                .get("component")
                .and_then(|c| c.as_str())
                .unwrap_or_default();
            if record::unfreeze(component)? {
                notify::send(
                    &s,
                    "",
                    None,
                    Notice::room(&format!("🌤 the freeze of {component} ended")),
                );
            }
            return Ok(());
        }
        let n = payload.get("n").and_then(|n| n.as_i64()).unwrap_or(0);
        let r = match record::load(n) {
            Ok(r) => r,
            Err(e) => {
                log_warn(&format!("schedule {}: {e}", firing.id));
                return Ok(());
            }
        };
        let name = render::name(&r);
        let since = |what: &str| r.last(what).unwrap_or(0);
        // Read only for a reminder, but bound here: the notice borrows it.
        let approvers = if kind == "remind" {
            directory::members("approver")
        } else {
            Vec::new()
        };
        let (again, notice) = match (kind, r.request.state) {
            ("remind", flow::State::Requested) => {
                let text = format!(
                    "⏰ {name} by {} has waited {} for approval: `!release accept {n}`",
                    r.request.initiator,
                    render::span(firing.now_ms - since("requested"))
                );
                (
                    s.remind_every,
                    Notice {
                        room: Some(text.clone()),
                        direct: approvers
                            .iter()
                            .map(|a| (a.as_str(), text.clone()))
                            .collect(),
                    },
                )
            }
            ("overdue", flow::State::Started) => {
                let text = format!(
                    "⏰ {name} was started {} ago and is not finished: `!release finish {n}` or `!release rollback {n}`",
                    render::span(firing.now_ms - since("started"))
                );
                let direct = Notice::everyone(&r.request, &text).direct;
                (s.overdue_after, Notice { room: None, direct })
            }
            // The request moved on; the timer has nothing left to do.
            _ => return Ok(()),
        };
        notify::send(&s, "", None, notice);
        commands::at(&firing.id, firing.now_ms + again.ms(), r.request.n)
    }
}

fn settings() -> Result<Settings, String> {
    plugin_config::<Settings>()
}

export_plugin!(Release);
