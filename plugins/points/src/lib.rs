//! The `points` plugin: points for good release behaviour.
//!
//! Admins give points by hand; releases and deploys change them by
//! themselves through events from other plugins, with amounts from the
//! operator's config. Every change is kept in a log with its reason and
//! source, so a balance can always be explained.
//!
//! State in kv: `balance/<user>` (a number), `log/<seq>` (every change) and
//! `ulog/<user>/<seq>` (the same change, indexed by user), `seq` (the last
//! sequence number). Ranking is pure logic in [`ledger`].

// Natively (for unit tests of the pure logic) nothing is exported, so the
// glue below is unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod ledger;

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, export_plugin,
    failed, kv, log_warn, plugin_config, usage,
};
use ledger::{Awards, Change, rank_of, top};

const LOG_LIMIT: usize = 10;
const TOP_DEFAULT: i64 = 10;
const TOP_MAX: i64 = 100;

struct Points;

impl Plugin for Points {
    fn describe() -> PluginInfo {
        Info::new("points", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("points", "your points and rank, or another user's points").optional(
                    "user",
                    ArgKind::User,
                    "whose points to show (default: you)",
                ),
            )
            .command(Command::new("points top", "the leaderboard").optional(
                "n",
                ArgKind::Integer,
                "how many places (default 10, at most 100)",
            ))
            .command(
                Command::new(
                    "points give",
                    "add points to a user, or remove them with a negative n",
                )
                .arg("user", ArgKind::User, "who gets them")
                .arg("n", ArgKind::Integer, "how many (negative removes)")
                .arg("reason", ArgKind::Text, "why, for the log")
                .role("admin"),
            )
            .command(
                Command::new("points log", "the last changes with reason and source").optional(
                    "user",
                    ArgKind::User,
                    "only this user's changes",
                ),
            )
            .subscribe("release.*")
            .subscribe("deploy.*")
            .build()
    }

    fn handle_command(inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        match command {
            "points" => show(&inv, args.text("user")),
            "points top" => leaderboard(args.integer("n").unwrap_or(TOP_DEFAULT)),
            "points give" => give(&inv, &args),
            "points log" => history(args.text("user")),
            other => Err(failed(format!("points has no command {other:?}"))),
        }
    }

    fn handle_event(topic: &str, payload: serde_json::Value, source: &str) -> Result<(), String> {
        let config = plugin_config::<ledger::Config>()?;
        // Only the plugins the operator named may move points: anyone can
        // emit a topic called release.finished.
        if !ledger::trusted(&config.sources, topic, source) {
            log_warn(&format!(
                "ignored {topic} from plugin {source:?}, which is not a configured source"
            ));
            return Ok(());
        }
        let awards: Awards = config.awards;
        let Some(change) = ledger::change_for_event(&awards, topic, &payload) else {
            return Ok(());
        };
        apply(change, now_from(&payload))
    }
}

export_plugin!(Points);

fn balances() -> Result<Vec<(String, i64)>, String> {
    Ok(kv::list::<i64>("balance/")?
        .into_iter()
        .map(|(key, n)| (key.trim_start_matches("balance/").to_owned(), n))
        .collect())
}

fn balance(user: &str) -> Result<i64, String> {
    Ok(kv::get::<i64>(&format!("balance/{user}"))?.unwrap_or(0))
}

fn show(inv: &Invocation, user: Option<&str>) -> Result<String, CommandError> {
    let all = balances().map_err(failed)?;
    match user {
        Some(user) if user != inv.sender => {
            let n = balance(user).map_err(failed)?;
            Ok(format!("{user} has {n} points"))
        }
        _ => {
            let me = &inv.sender;
            let n = balance(me).map_err(failed)?;
            Ok(match rank_of(&all, me) {
                Some(rank) => format!("{me}: {n} points, rank {rank} of {}", all.len()),
                None => format!("{me}: {n} points, not ranked yet"),
            })
        }
    }
}

fn leaderboard(n: i64) -> Result<String, CommandError> {
    if !(1..=TOP_MAX).contains(&n) {
        return Err(usage(format!("n must be between 1 and {TOP_MAX}, not {n}")));
    }
    let all = balances().map_err(failed)?;
    if all.is_empty() {
        return Ok("nobody has points yet".to_owned());
    }
    let lines: Vec<String> = top(&all, n as usize)
        .iter()
        .map(|(rank, user, points)| format!("{rank}. {user} — {points}"))
        .collect();
    Ok(format!("**Leaderboard**\n{}", lines.join("\n")))
}

fn give(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let (Some(user), Some(n), Some(reason)) =
        (args.text("user"), args.integer("n"), args.text("reason"))
    else {
        return Err(usage("give needs a user, a number and a reason"));
    };
    if n == 0 {
        return Err(usage("n must not be 0"));
    }
    let change = Change {
        user: user.to_owned(),
        delta: n,
        reason: reason.to_owned(),
        source: format!("given by {}", inv.sender),
        at_ms: inv.now_ms,
    };
    apply(change, inv.now_ms).map_err(failed)?;
    let total = balance(user).map_err(failed)?;
    Ok(format!("{user} {n:+} points ({reason}); now {total}"))
}

fn history(user: Option<&str>) -> Result<String, CommandError> {
    let prefix = match user {
        Some(user) => format!("ulog/{user}/"),
        None => "log/".to_owned(),
    };
    let entries = kv::list::<Change>(&prefix).map_err(failed)?;
    if entries.is_empty() {
        return Ok(match user {
            Some(user) => format!("no point changes for {user} yet"),
            None => "no point changes yet".to_owned(),
        });
    }
    let lines: Vec<String> = entries
        .iter()
        .rev()
        .take(LOG_LIMIT)
        .map(|(_, c)| c.describe())
        .collect();
    Ok(format!("**Last point changes**\n{}", lines.join("\n")))
}

/// Records a change: balance, global log and per-user log, all in the same
/// call so the host commits them together.
fn apply(mut change: Change, now_ms: i64) -> Result<(), String> {
    change.at_ms = now_ms;
    let seq = kv::get::<u64>("seq")?.unwrap_or(0) + 1;
    let total = balance(&change.user)?
        .checked_add(change.delta)
        .ok_or("that would overflow the balance")?;
    kv::set("seq", &seq)?;
    kv::set(&format!("balance/{}", change.user), &total)?;
    kv::set(&format!("log/{seq:012}"), &change)?;
    kv::set(&format!("ulog/{}/{seq:012}", change.user), &change)?;
    Ok(())
}

/// Events carry the time they happened; without it the change is stamped 0
/// and shown without a date.
fn now_from(payload: &serde_json::Value) -> i64 {
    payload.get("at_ms").and_then(|v| v.as_i64()).unwrap_or(0)
}
