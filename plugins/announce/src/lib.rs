//! The `announce` plugin: messages the bot posts into rooms by itself.
//!
//! `!announce <room> <text>` posts now; `!announce every "<cron>" ...` adds
//! a durable schedule whose payload is the room and the text, so the
//! schedule *is* the announcement and nothing can drift apart. Operators
//! declare fixed announcements in the config; describe() turns them into
//! declared schedules, which the host keeps in step with the file.
//!
//! State: the schedules (`user:<n>` from chat, `config:<name>` from the
//! config) and, in kv, `seq` for the next number.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod settings;

use ikkyu_plugin_sdk::time::{show, zone};
use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo, When, chat,
    cron, export_plugin, failed, kv, log_warn, plugin_config, schedule, schedule_spec, usage,
};
use serde::{Deserialize, Serialize};
use settings::Settings;

/// What a schedule carries: where to post what.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    room: String,
    text: String,
    /// Who added it (`ikkyu.toml` for declared ones).
    by: String,
}

const USER: &str = "user:";
const CONFIG: &str = "config:";

struct Announce;

impl Plugin for Announce {
    fn describe() -> PluginInfo {
        let mut info = Info::new("announce", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("announce", "post a message in a room now")
                    .arg("room", ArgKind::Room, "#room, a room id, or here")
                    .arg("text", ArgKind::Text, "what to post (Markdown)")
                    .role("admin"),
            )
            .command(
                Command::new(
                    "announce every",
                    "post a message on a schedule; returns its id",
                )
                .arg(
                    "cron",
                    ArgKind::Word,
                    "when, in quotes: minute hour day month weekday, e.g. \"0 10 * * mon\"",
                )
                .arg("room", ArgKind::Room, "#room, a room id, or here")
                .arg("text", ArgKind::Text, "what to post (Markdown)")
                .flag(
                    "tz",
                    ArgKind::Word,
                    "IANA time zone, e.g. Asia/Shanghai (default: the configured one, else UTC)",
                )
                .role("admin"),
            )
            .command(Command::new("announce list", "the scheduled announcements").role("admin"))
            .command(
                Command::new("announce rm", "stop a scheduled announcement")
                    .arg("id", ArgKind::Word, "its id, as `announce list` shows it")
                    .role("admin"),
            );
        // Declared here so the host creates, updates and removes them with
        // the config; a broken entry is logged and left out rather than
        // keeping the whole plugin from loading.
        match plugin_config::<Settings>() {
            Ok(settings) => {
                for a in settings.announcements {
                    let zone_name = a.zone.unwrap_or_else(|| settings.default_zone.clone());
                    let payload = Payload {
                        room: a.room,
                        text: a.text,
                        by: "ikkyu.toml".into(),
                    };
                    info = info.schedule(schedule_spec(
                        &format!("{CONFIG}{}", a.name),
                        cron(&a.cron, &zone_name),
                        &payload,
                    ));
                }
            }
            Err(e) => log_warn(&format!("announcements in the config are ignored: {e}")),
        }
        info.build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        match command {
            "announce" => now(&args),
            "announce every" => every(&inv, &args),
            "announce list" => list(),
            "announce rm" => remove(args.text("id").unwrap_or_default()),
            other => Err(failed(format!("announce has no command {other:?}"))),
        }
    }

    fn handle_schedule(firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let p: Payload = serde_json::from_value(payload)
            .map_err(|e| format!("announcement {:?} has a broken payload: {e}", firing.id))?;
        chat::send(&p.room, &p.text).map(drop)
    }
}

export_plugin!(Announce);

fn now(args: &Args) -> Result<String, CommandError> {
    let (Some(room), Some(text)) = (args.text("room"), args.text("text")) else {
        return Err(usage("a room and a text are needed"));
    };
    chat::send(room, text).map_err(failed)?;
    Ok(format!("posted in {room}"))
}

fn every(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let (Some(expr), Some(room), Some(text)) =
        (args.text("cron"), args.text("room"), args.text("text"))
    else {
        return Err(usage("a cron expression, a room and a text are needed"));
    };
    let settings = plugin_config::<Settings>().map_err(failed)?;
    let zone_name = args.text("tz").unwrap_or(&settings.default_zone);
    let tz = zone(zone_name).map_err(usage)?;
    let n = kv::get::<u64>("seq").map_err(failed)?.unwrap_or(0) + 1;
    let payload = Payload {
        room: room.to_owned(),
        text: text.to_owned(),
        by: inv.sender.clone(),
    };
    let id = format!("{USER}{n}");
    schedule::add(&schedule_spec(&id, cron(expr, zone_name), &payload)).map_err(usage)?;
    kv::set("seq", &n).map_err(failed)?;
    let next = next_of(&id).map_or_else(|| "never".to_owned(), |ms| show(ms, tz));
    Ok(format!(
        "announcement **{n}**: every `{expr}` ({zone_name}) in {room}; next {next}"
    ))
}

fn next_of(id: &str) -> Option<i64> {
    schedule::list()
        .into_iter()
        .find(|s| s.spec.id == id)
        .and_then(|s| s.next_ms)
}

fn list() -> Result<String, CommandError> {
    let mut lines = Vec::new();
    for s in schedule::list() {
        let Ok(p) = serde_json::from_str::<Payload>(&s.spec.payload_json) else {
            continue;
        };
        let (when, tz) = match &s.spec.when {
            When::Cron(c) => (
                format!("every `{}` ({})", c.expression, c.zone),
                zone(&c.zone).ok(),
            ),
            When::At(at) => (
                format!("once at {}", show(*at, ikkyu_plugin_sdk::time::Tz::UTC)),
                None,
            ),
        };
        let next = match (s.next_ms, tz) {
            (Some(ms), Some(tz)) => show(ms, tz),
            (Some(ms), None) => show(ms, ikkyu_plugin_sdk::time::Tz::UTC),
            (None, _) => "never".into(),
        };
        let id = match s.spec.id.strip_prefix(USER) {
            Some(n) => format!("**{n}**"),
            None => format!("`{}` (ikkyu.toml)", s.spec.id.trim_start_matches(CONFIG)),
        };
        lines.push(format!(
            "- {id}: {when} in {} — next {next}, by {}: {}",
            p.room,
            p.by,
            first_line(&p.text)
        ));
    }
    if lines.is_empty() {
        return Ok(
            "no scheduled announcements; add one with `announce every \"<cron>\" <room> <text>`"
                .into(),
        );
    }
    Ok(format!("**Scheduled announcements**\n{}", lines.join("\n")))
}

fn remove(id: &str) -> Result<String, CommandError> {
    if id.starts_with(CONFIG)
        || schedule::list()
            .iter()
            .any(|s| s.spec.id == format!("{CONFIG}{id}"))
    {
        return Err(CommandError::Denied(format!(
            "announcement {id:?} is declared in ikkyu.toml; remove it there and restart"
        )));
    }
    let n = id.trim_start_matches('#');
    if schedule::remove(&format!("{USER}{n}")) {
        Ok(format!("announcement **{n}** removed"))
    } else {
        Err(usage(format!(
            "there is no announcement {id:?}; `announce list` shows them"
        )))
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
