//! The commands, the push webhook, the schedule and the reactions to
//! `job.finished`: the glue between the pure parts ([`crate::changes`],
//! [`crate::flow`], [`crate::push`]) and the host (kv, jobs, chat,
//! events).

use std::collections::BTreeMap;

use ikkyu_plugin_sdk::{
    CommandError, Invocation, WebhookRequest, chat, events, failed, jobs, usage,
};
use serde_json::Value;

use crate::changes::{self, Standing};
use crate::flow::{Build, State, Trigger};
use crate::record::{self, Green, JobOf, Work};
use crate::render;
use crate::settings::Settings;

/// Lines of a failed build's output shown in its message.
const TAIL_LINES: usize = 15;

/// The settings and the time of the call.
#[derive(Debug)]
pub struct Ctx {
    /// The operator's settings, checked.
    pub settings: Settings,
    /// Now, ms since the epoch.
    pub now_ms: i64,
}

/// `!build <env> [--service s ...]`.
pub fn request(
    ctx: &Ctx,
    inv: &Invocation,
    env: &str,
    named: &[&str],
) -> Result<String, CommandError> {
    let s = &ctx.settings;
    let Some(environment) = s.environments.get(env) else {
        return Err(usage(format!(
            "there is no environment {}; the environments are: {}",
            quoted(env),
            s.environment_names()
        )));
    };
    if let Some(bad) = named.iter().find(|n| !s.services.contains_key(**n)) {
        return Err(usage(format!(
            "there is no service {}; the services are: {}",
            quoted(bad),
            s.service_names()
        )));
    }
    let mut services: Vec<String> = if named.is_empty() {
        s.services.keys().cloned().collect()
    } else {
        named.iter().map(|n| (*n).to_owned()).collect()
    };
    services.sort();
    services.dedup();
    let trigger = Trigger {
        kind: "command".into(),
        by: inv.sender.clone(),
    };
    let b = start(ctx, env, &services, !named.is_empty(), trigger).map_err(failed)?;
    let what = if named.is_empty() {
        format!(
            "checking {} for changes since their last green builds",
            list(&services)
        )
    } else {
        format!("building {} as asked", list(&services))
    };
    let place = if environment.room == inv.room {
        "progress follows here".to_owned()
    } else {
        format!("progress is posted in {}", environment.room)
    };
    Ok(format!("build {} in {env}: {what}; {place}.", b.id))
}

/// Starts build of `services` in `env`: one change detection per
/// repository and green commit, posted in the environment's room.
fn start(
    ctx: &Ctx,
    env: &str,
    services: &[String],
    named: bool,
    trigger: Trigger,
) -> Result<Build, String> {
    let s = &ctx.settings;
    let environment = s
        .environments
        .get(env)
        .ok_or_else(|| format!("no environment {env}"))?;
    let mut units = Vec::new();
    for name in services {
        let since = record::green(env, name)?
            .map(|g| g.commit)
            .unwrap_or_default();
        units.push((name.clone(), since));
    }
    let mut b = Build::new(record::next_id()?, env, trigger, ctx.now_ms, units.clone());
    b.named = named;
    // One detection for each repository and commit asked about.
    let mut checks: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (name, since) in units {
        if let Some(service) = s.services.get(&name) {
            checks
                .entry((service.repo.clone(), since))
                .or_default()
                .push(name);
        }
    }
    for ((repo, since), names) in checks {
        let url = s
            .repos
            .get(&repo)
            .map(|r| r.url.clone())
            .unwrap_or_default();
        let params = vec![
            ("repo".to_owned(), url),
            ("branch".to_owned(), environment.branch.clone()),
            ("since".to_owned(), since.clone()),
        ];
        match jobs::start(&s.detect_job, &params, "build/detect") {
            Ok(handle) => record::remember_job(
                &handle,
                &JobOf {
                    build: b.id,
                    work: Work::Detect { repo, since },
                },
            )?,
            Err(why) => {
                for name in names {
                    if let Some(u) = b.units.get_mut(&name) {
                        u.state = State::CheckFailed;
                        u.why = format!("the job {} could not start: {why}", s.detect_job);
                    }
                }
            }
        }
    }
    b.settle(ctx.now_ms);
    show(ctx, &mut b)?;
    record::save(&b)?;
    Ok(b)
}

/// Posts or edits the build's message in its environment's room.
fn show(ctx: &Ctx, b: &mut Build) -> Result<(), String> {
    let text = render::build(b, ctx.now_ms);
    match &b.message {
        Some(handle) => chat::edit(handle, &text),
        None => {
            let room = ctx
                .settings
                .environments
                .get(&b.env)
                .map(|e| e.room.clone())
                .unwrap_or_default();
            b.message = Some(chat::send(&room, &text)?);
            Ok(())
        }
    }
}

/// A job of ours ended.
pub fn job_finished(ctx: &Ctx, p: &Value) -> Result<(), String> {
    let handle = p["job"].as_str().unwrap_or_default();
    let Some(of) = record::take_job(handle)? else {
        return Ok(());
    };
    let Some(mut b) = record::load(of.build)? else {
        return Ok(());
    };
    let follow_up = match &of.work {
        Work::Detect { repo, since } => {
            detected(ctx, &mut b, repo, since, p)?;
            None
        }
        Work::Build { service } => built(ctx, &mut b, service, p)?,
    };
    // A service taken out of the config while it was being checked is
    // not waited for.
    for (name, u) in &mut b.units {
        if matches!(u.state, State::Checking { .. }) && !ctx.settings.services.contains_key(name) {
            u.state = State::CheckFailed;
            u.why = "no longer in the config".into();
        }
    }
    b.settle(ctx.now_ms);
    show(ctx, &mut b)?;
    record::save(&b)?;
    if let Some(service) = follow_up {
        let trigger = Trigger {
            kind: "follow-up".into(),
            by: format!("build {}", b.id),
        };
        start(ctx, &b.env, &[service], false, trigger)?;
    }
    Ok(())
}

/// The last line of a job's output, for a short reason.
fn last_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
}

/// A change detection ended: decides each of its services and starts the
/// builds of those due.
fn detected(ctx: &Ctx, b: &mut Build, repo: &str, since: &str, p: &Value) -> Result<(), String> {
    let s = &ctx.settings;
    let outcome = p["outcome"].as_str().unwrap_or("failed");
    let output = p["output"].as_str().unwrap_or_default();
    let result = if outcome == "succeeded" {
        changes::parse(output)
    } else {
        Err(format!(
            "the change detection {outcome}: {}",
            last_line(output)
        ))
    };
    let waiting: Vec<String> = b
        .units
        .iter()
        .filter(|(name, u)| {
            matches!(&u.state, State::Checking { since: from } if from == since)
                && s.services.get(*name).is_some_and(|svc| svc.repo == repo)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let shared = s
        .repos
        .get(repo)
        .map(|r| r.shared.clone())
        .unwrap_or_default();
    for name in waiting {
        let (state, why) = match &result {
            Err(why) => (State::CheckFailed, why.clone()),
            Ok(d) => {
                let paths = s
                    .services
                    .get(&name)
                    .map(|svc| svc.paths.clone())
                    .unwrap_or_default();
                let standing = Standing {
                    named: b.named,
                    green: (!since.is_empty()).then_some(since),
                    failed_in: record::failed_in(&b.env, &name)?,
                };
                match changes::due(&paths, &shared, standing, &d.changed) {
                    None => (
                        State::Unchanged {
                            since: since.to_owned(),
                        },
                        String::new(),
                    ),
                    Some(why) => (
                        launch(ctx, b, &name, repo, &d.head, &d.author)?,
                        why.to_string(),
                    ),
                }
            }
        };
        if let Some(u) = b.units.get_mut(&name) {
            u.state = state;
            u.why = why;
        }
    }
    Ok(())
}

/// Starts building `name` at `commit`, unless another build is building
/// it: then the newer commit is left for one build after that one.
fn launch(
    ctx: &Ctx,
    b: &Build,
    name: &str,
    repo: &str,
    commit: &str,
    author: &str,
) -> Result<State, String> {
    let s = &ctx.settings;
    if let Some(other) = record::running(&b.env, name)?
        && other != b.id
    {
        record::want_follow_up(&b.env, name)?;
        return Ok(State::Coalesced { into: other });
    }
    let branch = s
        .environments
        .get(&b.env)
        .map(|e| e.branch.clone())
        .unwrap_or_default();
    let params = vec![
        ("service".to_owned(), name.to_owned()),
        (
            "repo".to_owned(),
            s.repos.get(repo).map(|r| r.url.clone()).unwrap_or_default(),
        ),
        ("commit".to_owned(), commit.to_owned()),
        ("env".to_owned(), b.env.clone()),
        ("branch".to_owned(), branch),
    ];
    let job = s.job_of(name);
    match jobs::start(job, &params, "build/build") {
        Ok(handle) => {
            record::remember_job(
                &handle,
                &JobOf {
                    build: b.id,
                    work: Work::Build {
                        service: name.to_owned(),
                    },
                },
            )?;
            record::set_running(&b.env, name, b.id)?;
            Ok(State::Building {
                job: handle,
                commit: commit.to_owned(),
                author: author.to_owned(),
                started_ms: ctx.now_ms,
            })
        }
        Err(why) => {
            record::ended(&b.env, name, b.id, None)?;
            Ok(State::Failed {
                commit: commit.to_owned(),
                author: author.to_owned(),
                duration_ms: 0,
                outcome: "not started".into(),
                tail: format!("the job {job} could not start: {why}"),
            })
        }
    }
}

/// A build job ended: records green or red, tells subscribers, and says
/// whether a follow-up build of the service was asked for meanwhile.
fn built(ctx: &Ctx, b: &mut Build, service: &str, p: &Value) -> Result<Option<String>, String> {
    let Some(unit) = b.units.get_mut(service) else {
        return Ok(None);
    };
    let State::Building {
        commit,
        author,
        started_ms,
        ..
    } = &unit.state
    else {
        return Ok(None);
    };
    let (commit, author) = (commit.clone(), author.clone());
    let outcome = p["outcome"].as_str().unwrap_or("failed").to_owned();
    let duration_ms = p["duration-ms"].as_i64().unwrap_or(ctx.now_ms - started_ms);
    let green = outcome == "succeeded";
    unit.state = if green {
        State::Succeeded {
            commit: commit.clone(),
            author: author.clone(),
            duration_ms,
        }
    } else {
        State::Failed {
            commit: commit.clone(),
            author: author.clone(),
            duration_ms,
            outcome: outcome.clone(),
            tail: ikkyu_plugin_sdk::last_lines(
                p["output"].as_str().unwrap_or_default(),
                TAIL_LINES,
            ),
        }
    };
    let green_at = green.then(|| Green {
        commit: commit.clone(),
        build: b.id,
        at_ms: ctx.now_ms,
    });
    record::ended(&b.env, service, b.id, green_at)?;
    let payload = serde_json::json!({
        "build": b.id,
        "env": b.env,
        "service": service,
        "commit": commit,
        "author": author,
        "outcome": outcome,
        "duration-ms": duration_ms,
        "trigger": b.trigger.kind,
    });
    events::emit("build.finished", &payload.to_string());
    Ok(record::take_follow_up(&b.env, service)?.then(|| service.to_owned()))
}

/// `!build status [N]`.
pub fn status(ctx: &Ctx, n: Option<i64>) -> Result<String, CommandError> {
    if let Some(n) = n {
        let b = u64::try_from(n)
            .ok()
            .map(record::load)
            .transpose()
            .map_err(failed)?
            .flatten();
        return match b {
            Some(b) => Ok(render::build(&b, ctx.now_ms)),
            None => Err(usage(format!(
                "there is no build {n}; `build status` lists the recent ones"
            ))),
        };
    }
    let mut lines = Vec::new();
    let open = record::open().map_err(failed)?;
    if open.is_empty() {
        lines.push("**Running**: none".to_owned());
    } else {
        lines.push("**Running**".to_owned());
        lines.extend(open.iter().map(|b| format!("- {}", render::brief(b))));
    }
    let recent: Vec<Build> = record::latest(5)
        .map_err(failed)?
        .into_iter()
        .filter(|b| b.ended_ms.is_some())
        .collect();
    if !recent.is_empty() {
        lines.push("**Recent**".to_owned());
        lines.extend(recent.iter().map(|b| format!("- {}", render::brief(b))));
    }
    lines.push("**Due**".to_owned());
    for env in ctx.settings.environments.keys() {
        let mut due = Vec::new();
        for name in ctx.settings.services.keys() {
            if let Some(n) = record::failed_in(env, name).map_err(failed)? {
                due.push(format!("{name} (failed in build {n})"));
            } else if record::green(env, name).map_err(failed)?.is_none() {
                due.push(format!("{name} (never built)"));
            }
        }
        let due = if due.is_empty() {
            "nothing beyond what changed since each service's last green build".to_owned()
        } else {
            format!("{}, and whatever changed", due.join(", "))
        };
        lines.push(format!("- {env}: {due}"));
    }
    Ok(lines.join("\n"))
}

/// The push webhook: builds what changed in every environment on the
/// pushed branch.
pub fn push(ctx: &Ctx, request: &WebhookRequest) -> Result<String, String> {
    let s = &ctx.settings;
    let p = match crate::push::parse(&request.sender, &request.event, &request.body) {
        Ok(p) => p,
        Err(crate::push::NotAPush::Ignored(why)) => return Ok(why),
        Err(crate::push::NotAPush::Unreadable(why)) => return Err(why),
    };
    let Some(repo) = s.repo_by_webhook_name(&p.repo) else {
        return Err(format!(
            "repository {:?} is not configured: give one of [plugins.build.config.repos] webhook_name = {:?}",
            p.repo, p.repo
        ));
    };
    let envs: Vec<&String> = s
        .environments
        .iter()
        .filter(|(_, e)| e.branch == p.branch)
        .map(|(name, _)| name)
        .collect();
    if envs.is_empty() {
        return Ok(format!(
            "no environment builds branch {} of {}; nothing to do",
            p.branch, p.repo
        ));
    }
    let services: Vec<String> = s
        .services
        .iter()
        .filter(|(_, svc)| svc.repo == repo)
        .map(|(name, _)| name.clone())
        .collect();
    let mut started = Vec::new();
    for env in envs {
        let trigger = Trigger {
            kind: "push".into(),
            by: p.pusher.clone(),
        };
        let b = start(ctx, env, &services, false, trigger)?;
        started.push(format!("build {} in {env}", b.id));
    }
    Ok(format!(
        "push {} to {} of {}: {} checking {} for changes",
        render::short(&p.commit),
        p.branch,
        p.repo,
        started.join(", "),
        list(&services)
    ))
}

/// The environment's cron: builds what is due there.
pub fn scheduled(ctx: &Ctx, env: &str) -> Result<(), String> {
    if !ctx.settings.environments.contains_key(env) {
        return Ok(());
    }
    let services: Vec<String> = ctx.settings.services.keys().cloned().collect();
    let trigger = Trigger {
        kind: "cron".into(),
        by: format!("cron/{env}"),
    };
    start(ctx, env, &services, false, trigger).map(|_| ())
}

/// `a`, `a and b`, `a, b and c`.
fn list(names: &[String]) -> String {
    match names {
        [] => "no services".to_owned(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Text someone typed, shown back safely in a code span.
fn quoted(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '`')
        .take(60)
        .collect();
    format!("`{clean}`")
}
