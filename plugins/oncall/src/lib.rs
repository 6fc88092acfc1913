//! The `oncall` plugin: rotations such as the weekly front-end and bug
//! duty of the seed, overrides when someone swaps a day, and a handoff
//! message posted by a durable schedule.
//!
//! Who is on duty is computed, never stored: [`duty`] is a pure function
//! of the rotation and the time, so a restart or a late schedule cannot
//! make the bot name the wrong person.
//!
//! State in kv: `rotation/<name>` (the [`duty::Rotation`]). Schedules:
//! `handoff:<name>` with the room to post in.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod duty;

use duty::{Override, Rotation, Schedule, parse_day, parse_time};
use ikkyu_plugin_sdk::time::{parse_local, show, zone};
use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Firing, Info, Invocation, Plugin, PluginInfo, chat, cron,
    export_plugin, failed, kv, plugin_config, schedule, schedule_spec, usage,
};
use serde::{Deserialize, Serialize};

const DAY: u64 = 86_400;
/// Longest period a rotation may have.
const MAX_PERIOD_DAYS: u64 = 366;

/// `[plugins.oncall.config]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Zone for rotations set without `--tz`.
    #[serde(default = "utc")]
    default_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

/// What a handoff schedule carries.
#[derive(Debug, Serialize, Deserialize)]
struct Handoff {
    rotation: String,
    room: String,
}

struct Oncall;

impl Plugin for Oncall {
    fn describe() -> PluginInfo {
        Info::new("oncall", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("oncall", "who is on duty now in every rotation, or in one: now, next and the handoff")
                    .optional("rotation", ArgKind::Word, "the rotation (default: all)"),
            )
            .command(
                Command::new("oncall set", "define or replace a rotation; the first person is on duty from the last handoff")
                    .arg("rotation", ArgKind::Word, "its name, e.g. frontend")
                    .repeated("people", ArgKind::User, "everyone in rotation order")
                    .flag("every", ArgKind::Duration, "time between handoffs in days or weeks (default 1w)")
                    .flag("handoff", ArgKind::Word, "when duty changes hands, e.g. \"mon 10:00\" (default), or \"09:30\" for daily")
                    .flag("tz", ArgKind::Word, "IANA time zone (default: the configured one, else UTC)")
                    .role("admin"),
            )
            .command(
                Command::new("oncall override", "someone else covers a period (admins, or the person being replaced)")
                    .arg("rotation", ArgKind::Word, "the rotation")
                    .arg("user", ArgKind::User, "who covers")
                    .arg("from", ArgKind::Time, "start: 2026-11-24 or 2026-11-24T10:00, in the rotation's zone")
                    .arg("to", ArgKind::Time, "end: a date alone includes that whole day"),
            )
            .command(
                Command::new("oncall announce", "post the new duty in a room at every handoff")
                    .arg("rotation", ArgKind::Word, "the rotation")
                    .arg("room", ArgKind::Room, "#room, a room id, or here")
                    .role("admin"),
            )
            .command(
                Command::new("oncall rm", "delete a rotation and its handoff messages")
                    .arg("rotation", ArgKind::Word, "the rotation")
                    .role("admin"),
            )
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        let name = args.text("rotation").map(str::to_lowercase);
        match (command, name.as_deref()) {
            ("oncall", None) => everyone(inv.now_ms),
            ("oncall", Some(name)) => one(&load(name)?, inv.now_ms),
            ("oncall set", Some(name)) => set(&inv, name, &args),
            ("oncall override", Some(name)) => cover(&inv, name, &args),
            ("oncall announce", Some(name)) => {
                announce(&inv, name, args.text("room").unwrap_or_default())
            }
            ("oncall rm", Some(name)) => remove(name),
            (other, _) => Err(failed(format!("oncall has no command {other:?}"))),
        }
    }

    fn handle_schedule(firing: &Firing, payload: serde_json::Value) -> Result<(), String> {
        let h: Handoff = serde_json::from_value(payload)
            .map_err(|e| format!("handoff schedule {:?} is broken: {e}", firing.id))?;
        let Some(rotation) = kv::get::<Rotation>(&key(&h.rotation))? else {
            // The rotation was deleted: nothing to announce, ever.
            schedule::remove(&firing.id);
            return Ok(());
        };
        let s = Schedule::new(&rotation)?;
        if !s.is_handoff(firing.due_ms) {
            // Cron fires daily or weekly; longer periods hand off less often.
            return Ok(());
        }
        let before = s.duty(firing.due_ms - 1);
        let now = s.duty(firing.due_ms);
        let thanks = if before.user == now.user {
            String::new()
        } else {
            format!("; thank you {}", before.user)
        };
        chat::send(
            &h.room,
            &format!(
                "**{}** duty: {} is on duty until {}{}{thanks}",
                rotation.name,
                now.user,
                show(now.until_ms, s.zone()),
                covering(&now),
            ),
        )
        .map(drop)
    }
}

export_plugin!(Oncall);

fn key(name: &str) -> String {
    format!("rotation/{name}")
}

fn handoff_id(name: &str) -> String {
    format!("handoff:{name}")
}

fn rotations() -> Result<Vec<Rotation>, CommandError> {
    Ok(kv::list::<Rotation>("rotation/")
        .map_err(failed)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

fn load(name: &str) -> Result<Rotation, CommandError> {
    if let Some(r) = kv::get::<Rotation>(&key(name)).map_err(failed)? {
        return Ok(r);
    }
    let names: Vec<String> = rotations()?
        .into_iter()
        .map(|r| format!("`{}`", r.name))
        .collect();
    Err(usage(if names.is_empty() {
        format!(
            "there is no rotation {name:?}; there are none yet, an admin adds one with `oncall set`"
        )
    } else {
        format!(
            "there is no rotation {name:?}; there are {}",
            names.join(", ")
        )
    }))
}

fn covering(d: &duty::Duty) -> String {
    d.instead_of
        .as_ref()
        .map(|u| format!(" (covering for {u})"))
        .unwrap_or_default()
}

fn everyone(now: i64) -> Result<String, CommandError> {
    let all = rotations()?;
    if all.is_empty() {
        return Ok(
            "no rotations yet; an admin adds one with `oncall set <rotation> <@user> ...`".into(),
        );
    }
    let mut lines = Vec::new();
    for r in &all {
        let s = Schedule::new(r).map_err(failed)?;
        let d = s.duty(now);
        lines.push(format!(
            "- **{}**: {} until {}{}",
            r.name,
            d.user,
            show(d.until_ms, s.zone()),
            covering(&d)
        ));
    }
    Ok(format!("**On duty now**\n{}", lines.join("\n")))
}

fn period(days: u32) -> String {
    if days.is_multiple_of(7) {
        format!("{}w", days / 7)
    } else {
        format!("{days}d")
    }
}

fn one(r: &Rotation, now: i64) -> Result<String, CommandError> {
    let s = Schedule::new(r).map_err(failed)?;
    let d = s.duty(now);
    let next = s.duty(d.until_ms);
    let handoff = s.handoff(s.slot(now) + 1);
    let upcoming: Vec<String> = r
        .overrides
        .iter()
        .filter(|o| o.to_ms > now)
        .map(|o| {
            format!(
                "- {} covers {} → {}",
                o.user,
                show(o.from_ms, s.zone()),
                show(o.to_ms, s.zone())
            )
        })
        .collect();
    let mut text = format!(
        "**{}** ({}: {}; every {}, handoff {} {} {})\nnow: {}{} until {}\nnext: {}{}\nnext handoff: {}",
        r.name,
        r.people.len(),
        r.people.join(" → "),
        period(r.period_days),
        r.handoff_day.as_deref().unwrap_or("daily"),
        r.handoff_time,
        r.zone,
        d.user,
        covering(&d),
        show(d.until_ms, s.zone()),
        next.user,
        covering(&next),
        show(handoff, s.zone()),
    );
    if !upcoming.is_empty() {
        text.push_str(&format!("\noverrides:\n{}", upcoming.join("\n")));
    }
    Ok(text)
}

fn set(inv: &Invocation, name: &str, args: &Args) -> Result<String, CommandError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(usage(format!(
            "{name:?} is not a rotation name: letters, digits, `-` and `_`, at most 64"
        )));
    }
    let mut people: Vec<String> = Vec::new();
    for p in args.texts("people") {
        if !people.iter().any(|x| x == p) {
            people.push(p.to_owned());
        }
    }
    let every = args.duration("every").unwrap_or(7 * DAY);
    if !every.is_multiple_of(DAY) || every == 0 || every / DAY > MAX_PERIOD_DAYS {
        return Err(usage(format!(
            "--every must be whole days or weeks (1d to {MAX_PERIOD_DAYS}d), e.g. 1w or 1d"
        )));
    }
    let period_days = u32::try_from(every / DAY).map_err(|e| failed(e.to_string()))?;
    let weekly = period_days.is_multiple_of(7);
    let handoff = args.text("handoff").unwrap_or("mon 10:00");
    let (day, time) = match handoff.split_once(' ') {
        Some((d, t)) => (
            Some(parse_day(d).map_err(usage)?),
            parse_time(t).map_err(usage)?,
        ),
        None => (None, parse_time(handoff).map_err(usage)?),
    };
    let day = match (weekly, day) {
        (true, d) => Some(d.unwrap_or(ikkyu_plugin_sdk::time::chrono::Weekday::Mon)),
        (false, Some(_)) => {
            return Err(usage(
                "a weekday in --handoff only fits periods of whole weeks; write just the time, e.g. \"10:00\"",
            ));
        }
        (false, None) => None,
    };
    let settings = plugin_config::<Settings>().map_err(failed)?;
    let zone_name = args.text("tz").unwrap_or(&settings.default_zone).to_owned();
    let tz = zone(&zone_name).map_err(usage)?;
    let start = Schedule::first_handoff(inv.now_ms, tz, time, day);
    let old = kv::get::<Rotation>(&key(name)).map_err(failed)?;
    let rotation = Rotation {
        name: name.to_owned(),
        people,
        period_days,
        handoff_time: time.format("%H:%M").to_string(),
        handoff_day: day.map(|d| d.to_string().to_lowercase()),
        zone: zone_name,
        start: start.to_string(),
        // Overrides are about dates, not about the order: they stay.
        overrides: old
            .as_ref()
            .map(|o| {
                o.overrides
                    .iter()
                    .filter(|x| x.to_ms > inv.now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    };
    let s = Schedule::new(&rotation).map_err(failed)?;
    kv::set(&key(name), &rotation).map_err(failed)?;
    // A handoff message follows the new handoff time.
    let id = handoff_id(name);
    if let Some(existing) = schedule::list().into_iter().find(|x| x.spec.id == id) {
        let spec = ikkyu_plugin_sdk::ScheduleSpec {
            when: cron(&s.cron(), &rotation.zone),
            ..existing.spec
        };
        schedule::add(&spec).map_err(failed)?;
    }
    let d = s.duty(inv.now_ms);
    Ok(format!(
        "rotation **{name}** {}: {}; every {}, handoff {} {} {}\non duty now: {}{} until {}",
        if old.is_some() { "replaced" } else { "set" },
        rotation.people.join(" → "),
        period(period_days),
        rotation.handoff_day.as_deref().unwrap_or("daily"),
        rotation.handoff_time,
        rotation.zone,
        d.user,
        covering(&d),
        show(d.until_ms, s.zone())
    ))
}

fn cover(inv: &Invocation, name: &str, args: &Args) -> Result<String, CommandError> {
    let mut rotation = load(name)?;
    let (Some(user), Some(from), Some(to)) =
        (args.text("user"), args.text("from"), args.text("to"))
    else {
        return Err(usage("a user, a start and an end are needed"));
    };
    let s = Schedule::new(&rotation).map_err(failed)?;
    let from_ms = parse_local(from, s.zone(), false).map_err(usage)?;
    let to_ms = parse_local(to, s.zone(), true).map_err(usage)?;
    if to_ms <= from_ms {
        return Err(usage("the end must be after the start"));
    }
    if to_ms <= inv.now_ms {
        return Err(usage("that period is already over"));
    }
    // Everyone whose time the override takes, not only whoever is on duty
    // when it starts: a person may hand over their own days, not the next
    // person's.
    let replaced = s.on_duty_during(from_ms, to_ms);
    let zone = s.zone();
    let admin = inv.roles.iter().any(|r| r == "admin");
    if !admin && replaced.iter().any(|u| *u != inv.sender) {
        let others: Vec<&str> = replaced
            .iter()
            .filter(|u| **u != inv.sender)
            .map(String::as_str)
            .collect();
        return Err(CommandError::Denied(format!(
            "from {} to {} the rotation has {} on duty; only an admin, or the person on duty for the whole period, may set this override. Cover only your own days, or ask an admin.",
            show(from_ms, zone),
            show(to_ms, zone),
            others.join(", ")
        )));
    }
    let replaced = replaced.join(", ");
    rotation.overrides.retain(|o| o.to_ms > inv.now_ms);
    rotation.overrides.push(Override {
        user: user.to_owned(),
        from_ms,
        to_ms,
        by: inv.sender.clone(),
    });
    kv::set(&key(name), &rotation).map_err(failed)?;
    Ok(format!(
        "{user} covers **{name}** from {} to {} (instead of {replaced})",
        show(from_ms, zone),
        show(to_ms, zone)
    ))
}

fn announce(inv: &Invocation, name: &str, room: &str) -> Result<String, CommandError> {
    let rotation = load(name)?;
    let s = Schedule::new(&rotation).map_err(failed)?;
    let payload = Handoff {
        rotation: name.to_owned(),
        room: room.to_owned(),
    };
    let spec = schedule_spec(&handoff_id(name), cron(&s.cron(), &rotation.zone), &payload);
    schedule::add(&spec).map_err(failed)?;
    let next = s.handoff(s.slot(inv.now_ms) + 1);
    Ok(format!(
        "the **{name}** handoff will be posted in {room} at every handoff; next {}",
        show(next, s.zone())
    ))
}

fn remove(name: &str) -> Result<String, CommandError> {
    load(name)?;
    kv::delete(&key(name));
    let announced = schedule::remove(&handoff_id(name));
    Ok(format!(
        "rotation **{name}** deleted{}",
        if announced {
            ", and its handoff messages stopped"
        } else {
            ""
        }
    ))
}
