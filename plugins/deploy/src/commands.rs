//! The deploy commands, the job outcomes and the countdown: each reads
//! the tasks it needs, asks [`crate::flow`] what changes, and does it —
//! jobs started or cancelled, the progress message edited, the countdown
//! scheduled, events emitted — all in the one call, so all of it commits
//! or none does.

use ikkyu_plugin_sdk::{
    CommandError, Invocation, When, chat, events, failed, jobs, schedule, schedule_spec, usage,
};

use crate::flow::{Next, Phase, Plan, Step, Task, may_start, starts};
use crate::record::{self, Record};
use crate::render;
use crate::settings::Settings;

/// Who did something that happened by itself.
pub const SELF: &str = "ikkyu";

/// What every handler works with.
pub struct Ctx {
    /// The operator's settings.
    pub settings: Settings,
    /// The host's clock at the call.
    pub now_ms: i64,
}

impl Ctx {
    fn plan(&self, service: &str) -> Result<Plan, String> {
        self.settings
            .plan(service)
            .ok_or_else(|| format!("service {service} is no longer configured"))
    }
}

/// Versions are what build systems print: letters, digits, `.`, `-`,
/// `_`, `+`, at most 64.
fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

fn may_act(inv: &Invocation, task: &Task) -> Result<(), CommandError> {
    let ops = inv.roles.iter().any(|r| r == "ops" || r == "admin");
    if inv.sender == task.initiator || ops {
        Ok(())
    } else {
        Err(CommandError::Denied(format!(
            "only {} (who asked for #{}) or ops can do that",
            task.initiator, task.id
        )))
    }
}

/// `!deploy <service> <version> [--after N] [--force]`.
pub fn request(
    ctx: &Ctx,
    inv: &Invocation,
    service: &str,
    version: &str,
    after: Option<i64>,
    force: bool,
) -> Result<String, CommandError> {
    let Some(svc) = ctx.settings.services.get(service) else {
        let known: Vec<&str> = ctx.settings.services.keys().map(String::as_str).collect();
        return Err(usage(format!(
            "there is no service `{}`; known: {}",
            service.replace('`', "'"),
            if known.is_empty() {
                "none yet (an admin adds them under [plugins.deploy.config.services])".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    if !is_version(version) {
        return Err(usage(
            "a version is letters, digits, `.`, `-`, `_` and `+`, at most 64, e.g. 1.4.2"
                .to_owned(),
        ));
    }
    let open = record::open().map_err(failed)?;
    if let Some(same) = open
        .iter()
        .find(|r| r.task.service == service && r.task.version == version)
    {
        return Err(failed(format!(
            "{service} {version} is already {} as #{}; one task per service and version",
            same.task.phase.word(),
            same.task.id
        )));
    }
    let after = match after {
        None => None,
        Some(n) => {
            let n = u64::try_from(n)
                .map_err(|_| usage("--after takes a task number, e.g. --after 3"))?;
            let Some(r) = record::load(n).map_err(failed)? else {
                return Err(usage(format!("there is no task #{n} to wait for")));
            };
            if matches!(
                r.task.phase,
                Phase::Failed { .. }
                    | Phase::Cancelled { .. }
                    | Phase::RolledBack
                    | Phase::RollbackFailed { .. }
            ) {
                return Err(failed(format!(
                    "#{n} is {} already; nothing to wait for",
                    r.task.phase.word()
                )));
            }
            Some(n)
        }
    };
    let ops = inv.roles.iter().any(|r| r == "ops" || r == "admin");
    let mut forced_by = None;
    if let Some(w) = &svc.window
        && !w.contains(ctx.now_ms)
    {
        let zone = ikkyu_plugin_sdk::time::zone(&w.zone).map_err(failed)?;
        let rule = format!(
            "deploys of {service} are allowed {}; it is {} there",
            w.describe(),
            ikkyu_plugin_sdk::time::show(ctx.now_ms, zone)
        );
        if !ops {
            return Err(CommandError::Denied(format!(
                "{rule}. Outside the window only ops can deploy, with --force"
            )));
        }
        if !force {
            return Err(failed(format!(
                "{rule}. Add --force to deploy anyway; it goes on record"
            )));
        }
        forced_by = Some(inv.sender.clone());
    } else if force && !ops {
        return Err(CommandError::Denied("only ops can use --force".into()));
    }
    let id = record::next_id().map_err(failed)?;
    let mut r = Record {
        task: Task {
            after,
            forced_by: forced_by.clone(),
            ..Task::new(id, service, version, &inv.sender, &inv.room, ctx.now_ms)
        },
        history: Vec::new(),
    };
    let mut what = format!("asked for {service} {version}");
    if let Some(n) = after {
        what.push_str(&format!(" after #{n}"));
    }
    if forced_by.is_some() {
        what.push_str(", outside the deploy window with --force");
    }
    r.note(ctx.now_ms, &inv.sender, what);
    record::save(&r).map_err(failed)?;
    pump(ctx).map_err(failed)?;
    let now = record::load(id).map_err(failed)?.unwrap_or(r);
    let state = match &now.task.phase {
        Phase::Queued => {
            let all = record::open().map_err(failed)?;
            let tasks: Vec<Task> = all.iter().map(|r| r.task.clone()).collect();
            let why = waiting(ctx, &now.task, &tasks).unwrap_or_default();
            format!("queued — {why}")
        }
        other => other.word().to_owned(),
    };
    Ok(format!("{service} {version} is deploy **#{id}**: {state}"))
}

/// Why queued `task` waits, if it does.
fn waiting(ctx: &Ctx, task: &Task, all: &[Task]) -> Option<String> {
    let upstream = ctx
        .settings
        .services
        .get(&task.service)
        .map(|s| s.static_after.clone())
        .unwrap_or_default();
    may_start(task, all, ctx.settings.concurrency, &upstream)
        .err()
        .map(|w| w.to_string())
}

/// Starts every queued task that may start, oldest first, and blocks the
/// ones whose `--after` task ended badly.
pub fn pump(ctx: &Ctx) -> Result<(), String> {
    let mut all = record::open()?;
    for i in 0..all.len() {
        if all[i].task.phase != Phase::Queued {
            continue;
        }
        let tasks: Vec<Task> = all.iter().map(|r| r.task.clone()).collect();
        // The task it waits for may have ended, and left the open ones.
        let after = match all[i].task.after {
            Some(n) => match tasks.iter().find(|t| t.id == n) {
                Some(t) => Some(t.clone()),
                None => record::load(n)?.map(|r| r.task),
            },
            None => None,
        };
        let r = &mut all[i];
        if let Some(on) = crate::flow::blocked_by(&r.task, after.as_ref()) {
            r.task.phase = Phase::Blocked { on };
            r.note(ctx.now_ms, SELF, format!("blocked: #{on} did not finish"));
            let _ = chat::send(
                &r.task.room,
                &format!(
                    "{}: deploy #{} ({} {}) is blocked: #{on}, which it waits for, did not finish. `!deploy cancel {}` removes it; ask again when #{on} is fixed.",
                    r.task.initiator, r.task.id, r.task.service, r.task.version, r.task.id
                ),
            );
            record::save(r)?;
            continue;
        }
        if waiting(ctx, &r.task, &tasks).is_some() {
            continue;
        }
        let plan = ctx.plan(&r.task.service)?;
        r.note(ctx.now_ms, SELF, "started");
        let before = r.task.phase.clone();
        let next = r.task.begin(&plan);
        apply(ctx, r, &plan, &before, next)?;
        record::save(r)?;
    }
    Ok(())
}

/// Does what `next` says for `r` (which was `before`), tells who needs
/// telling if that ended it, and shows where it is now.
pub fn apply(
    ctx: &Ctx,
    r: &mut Record,
    plan: &Plan,
    before: &Phase,
    next: Next,
) -> Result<(), String> {
    match next {
        Next::Run(step) => {
            if run_step(ctx, r, plan, step)? == 0 && r.task.phase == (Phase::Running { step }) {
                // Nothing left to do in this step (run again after a lost
                // job whose host had finished): on to the next.
                let next = r.task.advance(plan, step, ctx.now_ms);
                return apply(ctx, r, plan, before, next);
            }
        }
        Next::Confirm => {
            if let Phase::Confirm { deadline_ms, .. } = r.task.phase {
                r.note(
                    ctx.now_ms,
                    SELF,
                    format!(
                        "waiting for a confirmation, {} at most",
                        render::mmss(deadline_ms - ctx.now_ms)
                    ),
                );
                arm_countdown(ctx, r.task.id, deadline_ms)?;
            }
        }
        Next::Wait | Next::Settled => {}
    }
    if r.task.phase != *before {
        ended(ctx, r, plan);
    }
    show(ctx, r, plan)
}

/// Starts the jobs of `step`; a job the host refuses fails the step. How
/// many it started.
fn run_step(ctx: &Ctx, r: &mut Record, plan: &Plan, step: Step) -> Result<usize, String> {
    let svc = ctx
        .settings
        .services
        .get(&r.task.service)
        .ok_or_else(|| format!("service {} is no longer configured", r.task.service))?;
    let units = crate::flow::rollback_units(plan, &r.task.done);
    let (phase, job) = match step {
        Step::Static => ("static", svc.job("static").map(str::to_owned)),
        Step::Canary => ("canary", svc.job("canary").map(str::to_owned)),
        Step::Batch { .. } => ("batch", svc.job("batch").map(str::to_owned)),
        Step::Rollback { unit } => ("rollback", units.get(unit).map(|u| u.job.clone())),
    };
    let Some(job) = job else {
        return Err(format!("service {} has no job for {phase}", r.task.service));
    };
    r.note(ctx.now_ms, SELF, render::step(plan, &r.task, step));
    r.task.jobs.clear();
    let mut refused = None;
    for start in starts(plan, step, &r.task.done) {
        let mut params = vec![
            ("service".to_owned(), r.task.service.clone()),
            ("version".to_owned(), r.task.version.clone()),
            ("phase".to_owned(), phase.to_owned()),
        ];
        if !start.host.is_empty() {
            params.push(("host".to_owned(), start.host.clone()));
            params.push(("datacenter".to_owned(), start.datacenter.clone()));
        }
        match jobs::start(&job, &params, &format!("deploy/{}", r.task.id)) {
            Ok(handle) => {
                record::remember_job(&handle, r.task.id)?;
                r.task.jobs.push(crate::flow::Running {
                    job: handle,
                    host: start.host,
                    outcome: None,
                });
            }
            Err(why) => {
                refused = Some((start.host, why));
                break;
            }
        }
    }
    if let Some((host, why)) = refused {
        for j in &r.task.jobs {
            let _ = jobs::cancel(&j.job);
        }
        r.task.jobs.clear();
        r.task.failed.push((host, why.clone()));
        r.task.phase = match step {
            Step::Rollback { unit } => Phase::RollbackFailed { unit },
            _ => Phase::Failed { step },
        };
        r.note(
            ctx.now_ms,
            SELF,
            format!("the job could not be started: {why}"),
        );
    }
    Ok(r.task.jobs.len())
}

/// What an ended task tells the room and other plugins.
fn ended(ctx: &Ctx, r: &mut Record, plan: &Plan) {
    let t = &r.task;
    let payload = serde_json::json!({
        "task": t.id, "service": t.service, "version": t.version, "initiator": t.initiator,
    });
    let (topic, note, notice) = match &t.phase {
        Phase::Done => ("deploy.finished", "done".to_owned(), None),
        Phase::Cancelled { back } => (
            "deploy.cancelled",
            format!("cancelled; {}", render::back_words(*back)),
            None,
        ),
        Phase::RolledBack => ("deploy.rolled-back", "rolled back".to_owned(), None),
        Phase::Failed { step } => (
            "",
            format!(
                "failed at {}: {}",
                render::step(plan, t, *step),
                render::failed_hosts(t)
            ),
            Some(format!(
                "{}: deploy #{} ({} {}) failed at {}: {}. Output:\n```\n{}\n```\n`!deploy rollback {}` undoes what was deployed.",
                t.initiator,
                t.id,
                t.service,
                t.version,
                render::step(plan, t, *step),
                render::failed_hosts(t),
                t.failed.first().map(|(_, o)| tail(o)).unwrap_or_default(),
                t.id
            )),
        ),
        Phase::RollbackFailed { unit } => (
            "",
            format!("rollback failed: {}", render::failed_hosts(t)),
            Some(format!(
                "{}: the rollback of deploy #{} failed at {}: {}; the hosts need a look by hand.",
                t.initiator,
                t.id,
                render::step(plan, t, Step::Rollback { unit: *unit }),
                render::failed_hosts(t)
            )),
        ),
        Phase::NeedsDecision { step } => (
            "",
            format!(
                "a job of {} was lost when the bot stopped",
                render::step(plan, t, *step)
            ),
            Some(format!(
                "{} and ops: deploy #{} ({} {}) needs a decision: the job of {} was running when the bot stopped, so its outcome is unknown and it is not run again by itself. `!deploy confirm {n}` runs it again, `!deploy rollback {n}` or `!deploy cancel {n}`.",
                t.initiator,
                t.id,
                t.service,
                t.version,
                render::step(plan, t, *step),
                n = t.id
            )),
        ),
        _ => return,
    };
    if !topic.is_empty() {
        events::emit(topic, &payload.to_string());
    }
    if let Some(text) = notice {
        let _ = chat::send(&r.task.room, &text);
    }
    r.note(ctx.now_ms, SELF, note);
}

/// The last lines of a job's output, for a chat message.
fn tail(output: &str) -> String {
    ikkyu_plugin_sdk::last_lines(output, 10).replace("```", "'''")
}

/// Posts or edits the task's progress message.
fn show(ctx: &Ctx, r: &mut Record, plan: &Plan) -> Result<(), String> {
    // A task that never started has nothing to show in the room: its
    // reply said where it is.
    if r.task.message.is_none() && !r.task.phase.is_active() {
        return Ok(());
    }
    let text = render::progress(plan, &r.task, ctx.now_ms);
    match &r.task.message {
        Some(handle) => chat::edit(handle, &text),
        None => {
            r.task.message = Some(chat::send(&r.task.room, &text)?);
            Ok(())
        }
    }
}

/// The countdown's schedule: it fires at the next tick or at the
/// deadline, whichever is first.
fn arm_countdown(ctx: &Ctx, id: u64, deadline_ms: i64) -> Result<(), String> {
    let at = (ctx.now_ms + ctx.settings.tick.ms()).min(deadline_ms);
    schedule::add(&schedule_spec(
        &format!("countdown/{id}"),
        When::At(at),
        &id,
    ))
}

/// `job.finished` for one of our jobs.
pub fn job_finished(ctx: &Ctx, p: &serde_json::Value) -> Result<(), String> {
    let handle = p["job"].as_str().unwrap_or_default();
    let Some(n) = record::take_job(handle)? else {
        return Ok(());
    };
    let Some(mut r) = record::load(n)? else {
        return Ok(());
    };
    let plan = ctx.plan(&r.task.service)?;
    let outcome = p["outcome"].as_str().unwrap_or("failed");
    let output = p["output"].as_str().unwrap_or_default();
    let Some(host) = r
        .task
        .jobs
        .iter()
        .find(|j| j.job == handle && j.outcome.is_none())
        .map(|j| j.host.clone())
    else {
        return Ok(());
    };
    let before = r.task.phase.clone();
    let next = r.task.job_ended(&plan, handle, outcome, output, ctx.now_ms);
    if outcome != "succeeded" {
        let host = if host.is_empty() {
            "static files".to_owned()
        } else {
            host
        };
        r.note(ctx.now_ms, SELF, format!("{host}: job {}", outcome));
    }
    if next == Next::Wait {
        // Others of the step still run: nothing to show or start yet. The
        // message changes once per step, not once per host (a hundred
        // edits per rollout would only flood the room and its rate limit).
        return record::save(&r);
    }
    apply(ctx, &mut r, &plan, &before, next)?;
    record::save(&r)?;
    pump(ctx)
}

/// The countdown schedule fired.
pub fn countdown(ctx: &Ctx, n: u64) -> Result<(), String> {
    let Some(mut r) = record::load(n)? else {
        return Ok(());
    };
    let Phase::Confirm { deadline_ms, .. } = r.task.phase else {
        return Ok(());
    };
    let plan = ctx.plan(&r.task.service)?;
    let before = r.task.phase.clone();
    match r.task.expire(&plan, ctx.now_ms) {
        Some(next) => {
            r.note(ctx.now_ms, SELF, "not confirmed in time");
            apply(ctx, &mut r, &plan, &before, next)?;
            if let Phase::Cancelled { back } = r.task.phase {
                chat::send(
                    &r.task.room,
                    &format!(
                        "{}: deploy #{} ({} {}) was not confirmed within {} and is cancelled; {}.",
                        r.task.initiator,
                        r.task.id,
                        r.task.service,
                        r.task.version,
                        render::mmss(plan.countdown_ms),
                        render::back_words(back)
                    ),
                )?;
            }
            record::save(&r)?;
            pump(ctx)
        }
        None => {
            show(ctx, &mut r, &plan)?;
            arm_countdown(ctx, n, deadline_ms)?;
            record::save(&r)
        }
    }
}

fn load(n: i64) -> Result<Record, CommandError> {
    let id = u64::try_from(n).map_err(|_| usage(format!("{n} is not a task number")))?;
    record::load(id).map_err(failed)?.ok_or_else(|| {
        usage(format!(
            "there is no deploy #{id}; `!deploy queue` lists the open ones"
        ))
    })
}

/// `!deploy confirm N`.
pub fn confirm(ctx: &Ctx, inv: &Invocation, n: i64) -> Result<String, CommandError> {
    let mut r = load(n)?;
    may_act(inv, &r.task)?;
    let plan = ctx.plan(&r.task.service).map_err(failed)?;
    if let Phase::Confirm { deadline_ms, .. } = r.task.phase
        && ctx.now_ms >= deadline_ms
    {
        // The countdown ended while nobody looked (the bot was down): it
        // ends now, and the confirm is too late.
        let before = r.task.phase.clone();
        let next = r.task.expire(&plan, ctx.now_ms);
        r.note(ctx.now_ms, SELF, "not confirmed in time");
        if let Some(next) = next {
            apply(ctx, &mut r, &plan, &before, next).map_err(failed)?;
        }
        record::save(&r).map_err(failed)?;
        pump(ctx).map_err(failed)?;
        return Ok(format!(
            "too late: the countdown of #{} ran out at {}; {}",
            r.task.id,
            ikkyu_plugin_sdk::time::show(
                deadline_ms,
                ikkyu_plugin_sdk::time::zone("UTC").map_err(failed)?
            ),
            r.task.phase.word()
        ));
    }
    let before = r.task.phase.clone();
    let next = r.task.confirm(ctx.now_ms).map_err(failed)?;
    schedule::remove(&format!("countdown/{}", r.task.id));
    r.note(ctx.now_ms, &inv.sender, "confirmed");
    apply(ctx, &mut r, &plan, &before, next).map_err(failed)?;
    record::save(&r).map_err(failed)?;
    Ok(format!("#{} confirmed: {}", r.task.id, r.task.phase.word()))
}

/// `!deploy cancel N`.
pub fn cancel(ctx: &Ctx, inv: &Invocation, n: i64) -> Result<String, CommandError> {
    let mut r = load(n)?;
    may_act(inv, &r.task)?;
    let plan = ctx.plan(&r.task.service).map_err(failed)?;
    let before = r.task.phase.clone();
    let stop = r.task.cancel().map_err(failed)?;
    for job in &stop {
        jobs::cancel(job).map_err(failed)?;
    }
    schedule::remove(&format!("countdown/{}", r.task.id));
    r.note(ctx.now_ms, &inv.sender, "asked to cancel");
    apply(ctx, &mut r, &plan, &before, Next::Settled).map_err(failed)?;
    record::save(&r).map_err(failed)?;
    pump(ctx).map_err(failed)?;
    Ok(match &r.task.phase {
        Phase::Cancelled { back } => {
            format!("#{} cancelled; {}", r.task.id, render::back_words(*back))
        }
        _ => format!(
            "#{}: stopping its running jobs; it is cancelled when they have stopped",
            r.task.id
        ),
    })
}

/// `!deploy rollback N`.
pub fn rollback(ctx: &Ctx, inv: &Invocation, n: i64) -> Result<String, CommandError> {
    let mut r = load(n)?;
    may_act(inv, &r.task)?;
    let plan = ctx.plan(&r.task.service).map_err(failed)?;
    let before = r.task.phase.clone();
    let (stop, next) = r.task.rollback(&plan).map_err(failed)?;
    for job in &stop {
        jobs::cancel(job).map_err(failed)?;
    }
    schedule::remove(&format!("countdown/{}", r.task.id));
    r.note(ctx.now_ms, &inv.sender, "asked to roll back");
    apply(ctx, &mut r, &plan, &before, next).map_err(failed)?;
    record::save(&r).map_err(failed)?;
    pump(ctx).map_err(failed)?;
    Ok(format!(
        "#{} rolling back: {}",
        r.task.id,
        r.task.phase.word()
    ))
}

/// `!deploy queue`.
pub fn queue(ctx: &Ctx) -> Result<String, CommandError> {
    let open = record::open().map_err(failed)?;
    if open.is_empty() {
        return Ok("no deploys are queued or running".into());
    }
    let tasks: Vec<Task> = open.iter().map(|r| r.task.clone()).collect();
    let mut position = 0;
    let lines: Vec<String> = open
        .iter()
        .map(|r| {
            let queued = r.task.phase == Phase::Queued;
            if queued {
                position += 1;
            }
            let plan = ctx.settings.plan(&r.task.service);
            render::queue_line(
                plan.as_ref(),
                &r.task,
                if queued {
                    waiting(ctx, &r.task, &tasks)
                } else {
                    None
                },
                queued.then_some(position),
                ctx.now_ms,
            )
        })
        .collect();
    Ok(format!(
        "**Deploys** (at most {} at once)\n{}",
        ctx.settings.concurrency,
        lines.join("\n")
    ))
}

/// `!deploy status N`.
pub fn status(ctx: &Ctx, n: i64) -> Result<String, CommandError> {
    let r = load(n)?;
    let plan = ctx.settings.plan(&r.task.service);
    let utc = ikkyu_plugin_sdk::time::zone("UTC").map_err(failed)?;
    Ok(render::status(plan.as_ref(), &r, ctx.now_ms, &|ms| {
        ikkyu_plugin_sdk::time::show(ms, utc)
    }))
}
