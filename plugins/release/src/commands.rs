//! The chat commands of the release queue. Each reads what it needs from
//! kv, asks the state machine ([`crate::flow`]) whether the step is
//! allowed, and writes the new state, its history entry, its lock, its
//! reminders, its event, its tracker updates and its messages in the same
//! call, so they commit together or not at all.

use ikkyu_plugin_sdk::{
    Args, CommandError, Invocation, When, directory, events, failed, http, schedule, schedule_spec,
    usage,
};

use crate::flow::{self, Actor, Freeze, Refusal, Request, Rules, State, Step};
use crate::notify::{self, Notice};
use crate::record::{self, Entry, Record, Update};
use crate::render;
use crate::settings::Settings;
use crate::signs::{self, Given, Outcome};
use crate::tracker;

/// Longest component name.
const MAX_COMPONENT: usize = 64;
/// Longest ticket text taken when no tracker is configured.
const MAX_TICKET: usize = 100;
/// Requests shown by `!release log` without a number, and at most.
const LOG_DEFAULT: usize = 10;
const LOG_MAX: usize = 100;
/// Requests a component's log looks back over.
const LOG_LOOK_BACK: u64 = 1_000;

fn settings() -> Result<Settings, CommandError> {
    crate::settings().map_err(failed)
}

fn rules(s: &Settings) -> Rules {
    Rules {
        self_accept: s.self_accept,
        critical: s.critical.clone(),
    }
}

fn actor(inv: &Invocation) -> Actor {
    let has = |role: &str| inv.roles.iter().any(|r| r == role || r == "admin");
    Actor {
        user: inv.sender.clone(),
        approver: has("approver"),
        ops: has("ops"),
    }
}

fn refused(r: Refusal) -> CommandError {
    match r {
        Refusal::NotAllowed { .. } | Refusal::OwnRequest { .. } => {
            CommandError::Denied(r.to_string())
        }
        _ => failed(r.to_string()),
    }
}

fn number(args: &Args) -> Result<i64, CommandError> {
    args.integer("n")
        .ok_or_else(|| usage("give the request's number, as `!release queue` shows it"))
}

fn emit(topic: &str, r: &Record, by: &str, now_ms: i64) {
    let payload = serde_json::json!({
        "n": r.request.n,
        "ticket": r.request.ticket,
        "component": r.request.component,
        "initiator": r.request.initiator,
        "by": by,
        "approved": r.request.approver.is_some(),
        "at_ms": now_ms,
    });
    events::emit(&format!("release.{topic}"), &payload.to_string());
}

/// The one-shot timer `id` (a reminder or an overdue ping) of request
/// `n`, at `when_ms`; adding it again moves it.
pub(crate) fn at(id: &str, when_ms: i64, n: u64) -> Result<(), String> {
    schedule::add(&schedule_spec(
        id,
        When::At(when_ms),
        &serde_json::json!({ "n": n }),
    ))
}

/// A URL given with `--docs` or `--rollback`.
fn url(args: &Args, flag: &str) -> Result<Option<String>, CommandError> {
    match args.text(flag) {
        None => Ok(None),
        Some(u) if (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2000 => {
            Ok(Some(u.to_owned()))
        }
        Some(_) => Err(usage(format!(
            "--{flag} takes a link starting with https://"
        ))),
    }
}

fn valid_component(c: &str) -> Result<String, CommandError> {
    let c = c.to_lowercase();
    let ok = !c.is_empty()
        && c.chars().count() <= MAX_COMPONENT
        && c.chars()
            .all(|ch| ch.is_alphanumeric() || "-_.".contains(ch));
    if ok {
        Ok(c)
    } else {
        let shown: String = c.chars().take(40).collect();
        Err(usage(format!(
            "`{shown}` is not a component name: use letters, digits, '-', '_' or '.', at most {MAX_COMPONENT}"
        )))
    }
}

/// `!release request <ticket> …` (and `!dobro`).
pub fn request(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let text = args.text("ticket").unwrap_or_default();
    let given = Given {
        docs: url(args, "docs")?,
        rollback: url(args, "rollback")?,
    };
    let flag_component = args.text("component").map(valid_component).transpose()?;
    let (link, keys, ticket_component, evidence, ticket) = match &s.tracker {
        Some(t) => {
            let r = tracker::parse_ref(text, t).map_err(usage)?;
            let active = s.active_signs();
            let tickets = tracker::read(&r, t, &active)
                .map_err(|e| failed(format!("{}; nothing was queued — try again in a moment, and tell an admin if it goes on", e.0)))?;
            let evidence: Vec<_> = active
                .iter()
                .map(|sign| signs::evaluate(sign, &tickets, &given))
                .collect();
            let keys: Vec<String> = tickets.iter().map(|t| t.key.clone()).collect();
            let component = tickets.iter().find_map(|t| t.component.clone());
            let ticket = match &r {
                tracker::TicketRef::JiraVersion(id) => format!("version {id}"),
                _ => keys.first().cloned().unwrap_or_default(),
            };
            (tracker::link(&r, t), keys, component, evidence, ticket)
        }
        None => {
            if text.chars().count() > MAX_TICKET {
                return Err(usage(format!(
                    "a ticket is at most {MAX_TICKET} characters"
                )));
            }
            let ticket = text.to_owned();
            (
                format!("`{}`", ticket.replace('`', "'")),
                vec![],
                None,
                vec![],
                ticket,
            )
        }
    };
    let missing: Vec<&signs::Evidence> = evidence
        .iter()
        .filter(|e| e.outcome != Outcome::Pass)
        .collect();
    if !missing.is_empty() {
        let lines: Vec<String> = missing
            .iter()
            .map(|e| {
                let what = if e.outcome == Outcome::Fail {
                    "missing"
                } else {
                    "unknown"
                };
                format!("- {} ({what}): {}", e.sign, e.reason)
            })
            .collect();
        return Err(failed(format!(
            "{link} is not ready to release, so nothing was queued:\n{}\nFix these in the tracker (or give the links with --docs/--rollback) and request again.",
            lines.join("\n")
        )));
    }
    // The component: as given, else the tracker's, else the ticket's
    // project (`BILL` of `BILL-1`), else `default`.
    let component = flag_component
        .or_else(|| ticket_component.and_then(|c| valid_component(&c).ok()))
        .or_else(|| {
            let project = ticket
                .split(['-', '#', '/', ' '])
                .next()
                .unwrap_or_default();
            valid_component(project).ok()
        })
        .unwrap_or_else(|| "default".to_owned());
    if let Some(open) = record::open()
        .map_err(failed)?
        .into_iter()
        .find(|r| r.ticket == ticket)
    {
        return Err(failed(format!(
            "{link} is already in the queue as #{} ({}); `!release show {}` has the details",
            open.n, open.state, open.n
        )));
    }
    let n = record::next_number().map_err(failed)?;
    let record = Record {
        request: Request {
            n,
            ticket,
            component,
            initiator: inv.sender.clone(),
            needs_admin: !args.switch("no-admin"),
            admin: None,
            approver: None,
            state: State::Requested,
        },
        link,
        keys,
        docs: given.docs,
        rollback: given.rollback,
        signs: evidence,
        history: vec![Entry {
            at_ms: inv.now_ms,
            by: inv.sender.clone(),
            what: "requested".into(),
            from: None,
            note: None,
        }],
        updates: vec![],
    };
    record::save(&record).map_err(failed)?;
    at(&format!("remind/{n}"), inv.now_ms + s.remind_after.ms(), n).map_err(failed)?;
    emit("requested", &record, &inv.sender, inv.now_ms);
    let name = render::name(&record);
    let checked = if record.signs.is_empty() {
        "no tracker is configured, so no signs were checked".to_owned()
    } else {
        format!("all {} signs hold", record.signs.len())
    };
    let approvers = directory::members("approver");
    let ask = format!(
        "New release request {name} by {}: `!release accept {n}`",
        inv.sender
    );
    notify::after(
        &s,
        inv,
        Notice {
            room: Some(format!(
                "📝 {name} requested by {}; waiting for an approver",
                inv.sender
            )),
            direct: approvers
                .iter()
                .map(|a| (a.as_str(), ask.clone()))
                .collect(),
        },
    );
    Ok(format!(
        "{} ({}) is in the queue as **#{n}** ({checked}); approvers were told. Next: an approver says `!release accept {n}`.",
        record.link, record.request.component
    ))
}

/// Loads request `n`, lets `decide` take the step, and records it in the
/// history (with the step's note, if any).
fn take_step(
    inv: &Invocation,
    args: &Args,
    what: &str,
    decide: impl FnOnce(&Record, &Actor) -> Result<Step, Refusal>,
) -> Result<Record, CommandError> {
    let mut record = record::load(number(args)?).map_err(failed)?;
    let step = decide(&record, &actor(inv)).map_err(refused)?;
    let from = record.request.state;
    record::apply_locks(
        record.request.n,
        step.takes_lock.as_deref(),
        step.frees_lock.as_deref(),
    )
    .map_err(failed)?;
    record.request = step.request;
    record.history.push(Entry {
        at_ms: inv.now_ms,
        by: inv.sender.clone(),
        what: what.to_owned(),
        from: Some(from),
        note: step.note,
    });
    Ok(record)
}

/// `!release accept N`.
pub fn accept(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let record = take_step(inv, args, "accepted", |r, a| {
        flow::accept(&r.request, a, &rules(&s))
    })?;
    record::save(&record).map_err(failed)?;
    let n = record.request.n;
    schedule::remove(&format!("remind/{n}"));
    emit("accepted", &record, &inv.sender, inv.now_ms);
    let name = render::name(&record);
    let needs_admin = record.request.needs_admin && record.request.admin.is_none();
    let next = if needs_admin {
        format!("it needs an admin: ops take it with `!release here {n}`")
    } else {
        format!("start it with `!release start {n}`")
    };
    let ops = if needs_admin {
        directory::members("ops")
    } else {
        Vec::new()
    };
    let ask = format!("{name} was accepted and needs an admin: `!release here {n}`");
    let mut direct = vec![(
        record.request.initiator.as_str(),
        format!("✅ {name} was accepted by {}; {next}", inv.sender),
    )];
    direct.extend(ops.iter().map(|o| (o.as_str(), ask.clone())));
    notify::after(
        &s,
        inv,
        Notice {
            room: Some(format!("✅ {name} accepted by {}; {next}", inv.sender)),
            direct,
        },
    );
    Ok(format!(
        "✅ {name} accepted; {} was told, and {next}",
        record.request.initiator
    ))
}

/// `!release here N [--to @user]`.
pub fn here(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let to = args.text("to").map(str::to_owned);
    if let Some(to) = &to {
        let roles = directory::roles(to);
        if !roles.iter().any(|r| r == "ops" || r == "admin") {
            return Err(CommandError::Denied(format!(
                "{to} is not an ops user, so they cannot take a release; hand it to someone with the ops role"
            )));
        }
    }
    let record = take_step(inv, args, "taken", |r, a| {
        flow::here(&r.request, a, to.as_deref())
    })?;
    record::save(&record).map_err(failed)?;
    let name = render::name(&record);
    let admin = record.request.admin.clone().unwrap_or_default();
    let text = format!("🛠 {admin} is the admin of {name}");
    let mut direct = vec![(record.request.initiator.as_str(), text.clone())];
    if admin != inv.sender {
        direct.push((
            admin.as_str(),
            format!("{} handed you {name} as its admin", inv.sender),
        ));
    }
    notify::after(
        &s,
        inv,
        Notice {
            room: Some(text.clone()),
            direct,
        },
    );
    Ok(text)
}

/// `!release start N [--force]`.
pub fn start(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let queue = record::open().map_err(failed)?;
    let freezes = record::freezes().map_err(failed)?;
    let force = args.switch("force");
    let record = take_step(inv, args, "started", |r, a| {
        flow::start(
            &r.request,
            a,
            force,
            &queue,
            &freezes,
            &rules(&s),
            inv.now_ms,
        )
    })?;
    record::save(&record).map_err(failed)?;
    let n = record.request.n;
    at(
        &format!("overdue/{n}"),
        inv.now_ms + s.overdue_after.ms(),
        n,
    )
    .map_err(failed)?;
    emit("started", &record, &inv.sender, inv.now_ms);
    let name = render::name(&record);
    let forced = record
        .history
        .last()
        .and_then(|e| e.note.as_deref())
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let text = format!("🚀 {name} started by {}{forced}", inv.sender);
    notify::after(&s, inv, Notice::everyone(&record.request, &text));
    Ok(format!("{text}; say `!release finish {n}` when it is done"))
}

/// How a release ends: its state machine step, its topic and its words.
struct Ending {
    step: fn(&Request, &Actor, &Rules) -> Result<Step, Refusal>,
    what: &'static str,
    topic: &'static str,
    icon: &'static str,
}

/// `finish`, `cancel` and `rollback`: the step, the lock freed, timers
/// removed, the tracker updated (finish and cancel), everyone told.
fn end(inv: &Invocation, args: &Args, how: Ending) -> Result<String, CommandError> {
    let s = settings()?;
    let mut record = take_step(inv, args, how.what, |r, a| {
        (how.step)(&r.request, a, &rules(&s))
    })?;
    let n = record.request.n;
    schedule::remove(&format!("remind/{n}"));
    schedule::remove(&format!("overdue/{n}"));
    let started = record.last("started");
    if let Some(t) = &s.tracker {
        let comment = match (how.what, started) {
            ("finished", Some(started)) => Some(format!(
                "Released by {} via ikkyu (#{n}): started {}, finished {}, took {}.",
                inv.sender,
                render::time(started),
                render::time(inv.now_ms),
                render::span(inv.now_ms - started)
            )),
            ("cancelled", _) => Some(format!(
                "Release #{n} was cancelled by {} via ikkyu at {}.",
                inv.sender,
                render::time(inv.now_ms)
            )),
            _ => None,
        };
        let to = if how.what == "finished" {
            &t.done
        } else {
            &t.cancelled
        };
        if let Some(comment) = comment {
            for wb in tracker::write_backs(t, &record.keys, &comment, to) {
                let tag = format!("{n}/{}", record.updates.len());
                // An update that cannot even be queued (the operator took
                // the tracker's origin away) is a failed update on record,
                // never a reason to refuse the step.
                let outcome = match http::send(&wb.request, &tag) {
                    Ok(()) => "pending".to_owned(),
                    Err(e) => format!("failed: not sent ({e}); tell an admin"),
                };
                record.updates.push(Update {
                    what: wb.what,
                    tag,
                    outcome,
                });
            }
        }
    }
    record::save(&record).map_err(failed)?;
    emit(how.topic, &record, &inv.sender, inv.now_ms);
    let name = render::name(&record);
    let took = match (how.what, started) {
        ("finished", Some(t)) => format!(" after {}", render::span(inv.now_ms - t)),
        _ => String::new(),
    };
    let text = format!("{} {name} {} by {}{took}", how.icon, how.what, inv.sender);
    notify::after(&s, inv, Notice::everyone(&record.request, &text));
    let tracker = if record
        .updates
        .iter()
        .any(|u| u.outcome.starts_with("failed"))
    {
        "; ⚠️ the tracker could not be updated, so update the ticket by hand (`!release show` says why)"
    } else if record.updates.iter().any(|u| u.outcome == "pending") {
        "; the tracker is being updated (`!release show` has the outcome)"
    } else {
        ""
    };
    Ok(format!("{text}{tracker}"))
}

/// `!release finish N`.
pub fn finish(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    end(
        inv,
        args,
        Ending {
            step: flow::finish,
            what: "finished",
            topic: "finished",
            icon: "🏁",
        },
    )
}

/// `!release cancel N`.
pub fn cancel(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    end(
        inv,
        args,
        Ending {
            step: flow::cancel,
            what: "cancelled",
            topic: "cancelled",
            icon: "🚫",
        },
    )
}

/// `!release rollback N`.
pub fn rollback(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    end(
        inv,
        args,
        Ending {
            step: flow::rollback,
            what: "rolled back",
            topic: "rolled-back",
            icon: "⏪",
        },
    )
}

/// `!release queue` (and `!release`).
pub fn queue(inv: &Invocation) -> Result<String, CommandError> {
    let s = settings()?;
    let requests = record::open().map_err(failed)?;
    let freezes = record::freezes().map_err(failed)?;
    let mut lines: Vec<String> = freezes
        .iter()
        .filter(|f| f.until_ms > inv.now_ms)
        .map(render::freeze_line)
        .collect();
    lines.extend(
        record::locks()
            .map_err(failed)?
            .iter()
            .map(|(component, n)| format!("🔒 {component} is locked by #{n}")),
    );
    let open = requests
        .iter()
        .map(|r| record::load(i64::try_from(r.n).unwrap_or(i64::MAX)))
        .collect::<Result<Vec<Record>, String>>()
        .map_err(failed)?;
    if open.is_empty() {
        lines.insert(0, "The release queue is empty. Ask with `!release request <ticket>` (or `!dobro <ticket>`).".into());
        return Ok(lines.join("\n"));
    }
    lines.insert(0, format!("**Release queue** ({} open)", open.len()));
    lines.extend(open.iter().map(|r| {
        let waits = flow::waits_for(&r.request, &requests, &freezes, &rules(&s), inv.now_ms);
        render::queue_line(r, waits)
    }));
    Ok(lines.join("\n"))
}

/// `!release show N`.
pub fn show(args: &Args) -> Result<String, CommandError> {
    Ok(render::show(&record::load(number(args)?).map_err(failed)?))
}

/// `!release log [n | component]`: the newest first. A component's log
/// looks back over the last [`LOG_LOOK_BACK`] requests, so it costs the
/// same however long the bot has run.
pub fn log(args: &Args) -> Result<String, CommandError> {
    let (picked, what) = match args.text("what") {
        Some(w) if w.chars().all(|c| c.is_ascii_digit()) => {
            let n = w.parse::<usize>().unwrap_or(usize::MAX);
            if !(1..=LOG_MAX).contains(&n) {
                return Err(usage(format!("n must be between 1 and {LOG_MAX}")));
            }
            (
                record::newest(LOG_MAX as u64, n, |_| true),
                format!("last {n}"),
            )
        }
        Some(c) => {
            let c = valid_component(c)?;
            (
                record::newest(LOG_LOOK_BACK, LOG_DEFAULT, |r| r.request.component == c),
                c,
            )
        }
        None => (
            record::newest(LOG_MAX as u64, LOG_DEFAULT, |_| true),
            format!("last {LOG_DEFAULT}"),
        ),
    };
    let picked = picked.map_err(failed)?;
    if picked.is_empty() {
        return Ok(format!("no releases on record ({what})"));
    }
    let mut lines = vec![format!("**Release log** ({what}, newest first)")];
    lines.extend(picked.iter().map(render::log_line));
    Ok(lines.join("\n"))
}

/// `!release freeze <component|all> <duration> <reason>`.
pub fn freeze(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let component = valid_component(args.text("component").unwrap_or_default())?;
    let secs = args.duration("duration").unwrap_or(0);
    if secs == 0 || secs > 90 * 86_400 {
        return Err(usage("the duration must be between 1s and 90d"));
    }
    let until_ms = inv.now_ms + i64::try_from(secs).unwrap_or(0) * 1000;
    let f = Freeze {
        component: component.clone(),
        until_ms,
        reason: args.text("reason").unwrap_or_default().to_owned(),
        by: inv.sender.clone(),
    };
    record::freeze(&f).map_err(failed)?;
    schedule::add(&schedule_spec(
        &format!("thaw/{component}"),
        When::At(until_ms),
        &serde_json::json!({ "component": component }),
    ))
    .map_err(failed)?;
    let text = render::freeze_line(&f);
    notify::after(&s, inv, Notice::room(&text));
    Ok(format!(
        "{text}; no release of {} starts until then",
        if component == "all" {
            "anything".to_owned()
        } else {
            component
        }
    ))
}

/// `!release unfreeze <component|all>`.
pub fn unfreeze(inv: &Invocation, args: &Args) -> Result<String, CommandError> {
    let s = settings()?;
    let component = valid_component(args.text("component").unwrap_or_default())?;
    if !record::unfreeze(&component).map_err(failed)? {
        return Err(failed(format!(
            "{component} is not frozen; `!release queue` shows the freezes"
        )));
    }
    schedule::remove(&format!("thaw/{component}"));
    let text = format!("🌤 {component} unfrozen by {}", inv.sender);
    notify::after(&s, inv, Notice::room(&text));
    Ok(text)
}
