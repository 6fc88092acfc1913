//! How deploys read: the one progress message each task keeps editing,
//! the queue, a task's status with its history.

use crate::flow::{Back, Phase, Plan, Step, Task, Then, rollback_units, starts};
use crate::record::Record;

/// `2:40`.
pub fn mmss(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Where a step is, in words: `dc1, batch 2 of 3`.
pub fn step(plan: &Plan, task: &Task, step: Step) -> String {
    match step {
        Step::Static => "static files".into(),
        Step::Canary => format!("canary {}", plan.canary.as_deref().unwrap_or("?")),
        Step::Batch { dc, batch } => {
            let (name, batches) = plan
                .datacenters
                .get(dc)
                .map_or(("?", 0), |(n, b)| (n.as_str(), b.len()));
            format!("{name}, batch {} of {batches}", batch + 1)
        }
        Step::Rollback { unit } => {
            let units = rollback_units(plan, &task.done);
            let what = units
                .get(unit)
                .map(|u| format!("{} on {}", u.job, u.hosts.join(", ")))
                .unwrap_or_default();
            format!("rollback step {} of {}: {what}", unit + 1, units.len())
        }
    }
}

fn hosts_total(plan: &Plan) -> usize {
    usize::from(plan.canary.is_some())
        + plan
            .datacenters
            .iter()
            .map(|(_, b)| b.iter().map(Vec::len).sum::<usize>())
            .sum::<usize>()
}

/// The task's progress message, as it reads at `now_ms`.
pub fn progress(plan: &Plan, task: &Task, now_ms: i64) -> String {
    let head = format!(
        "**Deploy #{}** {} {} by {}",
        task.id, task.service, task.version, task.initiator
    );
    let count = format!("{}/{} hosts done", task.done.len(), hosts_total(plan));
    let body = match &task.phase {
        Phase::Queued => "⏳ queued".to_owned(),
        Phase::Blocked { on } => format!("⛔ blocked: #{on}, which it waited for, did not finish"),
        Phase::Running {
            step: s @ Step::Rollback { .. },
        } => {
            format!(
                "↩ rolling back: {} ({} hosts rolled back)",
                step(plan, task, *s),
                task.undone.len()
            )
        }
        Phase::Running { step: s } => format!("▶ {} ({count})", step(plan, task, *s)),
        Phase::Confirm {
            deadline_ms,
            next_dc,
        } => {
            let next = plan
                .datacenters
                .get(*next_dc)
                .map_or("?", |(n, _)| n.as_str());
            let left = deadline_ms - now_ms;
            if left > 0 {
                format!(
                    "⏳ awaiting confirmation before {next} ({count}): `!deploy confirm {}` within **{}**",
                    task.id,
                    mmss(left)
                )
            } else {
                format!("⏳ the confirmation before {next} is overdue")
            }
        }
        Phase::Stopping { then: Then::Cancel } => "⏹ cancelling: stopping its jobs".to_owned(),
        Phase::Stopping {
            then: Then::Rollback,
        } => "⏹ stopping its jobs to roll back".to_owned(),
        Phase::NeedsDecision { step: s } => format!(
            "❓ needs a decision: the job of {} was lost when the bot stopped; `!deploy confirm {n}` runs it again, `!deploy rollback {n}` or `!deploy cancel {n}`",
            step(plan, task, *s),
            n = task.id
        ),
        Phase::Done => format!("✅ done ({count})"),
        Phase::Failed { step: s } => format!(
            "❌ failed at {}: {} ({count}); `!deploy rollback {}` undoes what was deployed",
            step(plan, task, *s),
            failed_hosts(task),
            task.id
        ),
        Phase::Cancelled { back } => format!("⏹ cancelled; {}", back_words(*back)),
        Phase::RolledBack => format!("↩ rolled back ({} hosts)", task.undone.len()),
        Phase::RollbackFailed { unit } => format!(
            "❌ rollback failed at {}: {}",
            step(plan, task, Step::Rollback { unit: *unit }),
            failed_hosts(task)
        ),
    };
    format!("{head}\n{body}")
}

/// What a cancel leaves the version as.
pub fn back_words(back: Back) -> &'static str {
    match back {
        Back::Ready => "the version is back to ready (a new build is needed to deploy it again)",
        Back::InDevelopment => "the version is back in development",
    }
}

/// `web3 (disk full)`.
pub fn failed_hosts(task: &Task) -> String {
    let names: Vec<String> = task
        .failed
        .iter()
        .map(|(h, out)| {
            let last = out.lines().last().unwrap_or("").trim();
            let h = if h.is_empty() {
                "static files"
            } else {
                h.as_str()
            };
            if last.is_empty() {
                h.to_owned()
            } else {
                format!("{h} (`{}`)", last.replace('`', "'"))
            }
        })
        .collect();
    if names.is_empty() {
        "no host".into()
    } else {
        names.join(", ")
    }
}

/// One line of the queue.
pub fn queue_line(
    plan: Option<&Plan>,
    task: &Task,
    wait: Option<String>,
    position: Option<usize>,
    now_ms: i64,
) -> String {
    let state = match (&task.phase, plan) {
        (Phase::Running { step: s }, Some(p)) => {
            format!("{}: {}", task.phase.word(), step(p, task, *s))
        }
        (Phase::Confirm { deadline_ms, .. }, _) => {
            format!("awaiting confirmation, {} left", mmss(deadline_ms - now_ms))
        }
        (p, _) => p.word().to_owned(),
    };
    let position = position
        .map(|p| format!(", position {p}"))
        .unwrap_or_default();
    let wait = wait.map(|w| format!(" — {w}")).unwrap_or_default();
    format!(
        "#{} {} {} by {}: **{state}**{position}{wait}",
        task.id, task.service, task.version, task.initiator
    )
}

/// `!deploy status N`.
pub fn status(
    plan: Option<&Plan>,
    r: &Record,
    now_ms: i64,
    zone_show: &dyn Fn(i64) -> String,
) -> String {
    let t = &r.task;
    let mut out = match plan {
        Some(p) => progress(p, t, now_ms),
        None => format!(
            "**Deploy #{}** {} {}: {}",
            t.id,
            t.service,
            t.version,
            t.phase.word()
        ),
    };
    if let Some(after) = t.after {
        out.push_str(&format!("\nafter #{after}"));
    }
    if let Some(by) = &t.forced_by {
        out.push_str(&format!(
            "\nstarted outside the deploy window with --force by {by}"
        ));
    }
    if !t.done.is_empty() {
        // In rollout order, not the order the jobs happened to end in.
        let mut done = t.done.clone();
        if let Some(p) = plan {
            let order: Vec<&String> = p
                .canary
                .iter()
                .chain(p.datacenters.iter().flat_map(|(_, b)| b.iter().flatten()))
                .collect();
            done.sort_by_key(|h| order.iter().position(|o| *o == h).unwrap_or(usize::MAX));
        }
        out.push_str(&format!("\ndeployed: {}", done.join(", ")));
    }
    if let (Some(p), Phase::Running { step: s }) = (plan, &t.phase) {
        let running: Vec<String> = starts(p, *s, &t.done)
            .into_iter()
            .map(|s| s.host)
            .filter(|h| !h.is_empty())
            .collect();
        if !running.is_empty() {
            out.push_str(&format!("\nnow: {}", running.join(", ")));
        }
    }
    out.push_str("\n**History**");
    for e in &r.history {
        out.push_str(&format!("\n{} {} — {}", zone_show(e.at_ms), e.who, e.what));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_read_as_minutes_and_seconds() {
        assert_eq!(mmss(160_000), "2:40");
        assert_eq!(mmss(59_001), "1:00");
        assert_eq!(mmss(-5), "0:00");
    }
}
