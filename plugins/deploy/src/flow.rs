//! A deploy task's state machine, pure: given the task, its service's
//! plan and the clock, each step says what changes and which jobs to
//! start, or refuses with the rule and what to do. Nothing here talks to
//! the host, so every transition and refusal is tested below.
//!
//! ```text
//! queued ─▶ static files ─▶ canary ─▶ confirm ─▶ batches, dc by dc ─▶ done
//!   │ (blocked: --after failed)        │ (expired: cancelled, "ready")
//!   └─ cancel: cancelled ("in development")    (between dcs: confirm again, if set)
//! any running step ─ cancel ─▶ stopping ─▶ cancelled
//!                   ─ rollback ─▶ stopping ─▶ rolling back ─▶ rolled back
//! a job lost ─▶ needs decision ─ confirm (run the step again) / rollback / cancel
//! a job failed ─▶ failed (which step, which hosts) ─ rollback
//! ```

use serde::{Deserialize, Serialize};

/// What a service's rollout looks like, from the operator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whether it has static files, deployed first.
    pub static_files: bool,
    /// The canary host, deployed alone before anything else.
    pub canary: Option<String>,
    /// The datacenter the canary is in.
    pub canary_datacenter: String,
    /// Datacenters in rollout order, each with its batches of hosts (the
    /// canary in none of them).
    pub datacenters: Vec<(String, Vec<Vec<String>>)>,
    /// Ask again before each datacenter after the first.
    pub confirm_between: bool,
    /// How long a confirmation may take, ms.
    pub countdown_ms: i64,
    /// What an unconfirmed countdown means.
    pub on_expiry: Expiry,
    /// The rollback plan: steps in order, each a job over a set of hosts.
    pub rollback: Vec<(String, Vec<String>)>,
}

/// What an expired countdown does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expiry {
    /// The task is cancelled and the version is back to "ready".
    Cancel,
    /// The rollout goes on by itself.
    Continue,
}

/// A step of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    /// The static files.
    Static,
    /// The canary host.
    Canary,
    /// Batch `batch` of datacenter `dc` (indexes into the plan).
    Batch {
        /// Datacenter index.
        dc: usize,
        /// Batch index within it.
        batch: usize,
    },
    /// Unit `unit` of the rollback (see [`rollback_units`]).
    Rollback {
        /// Unit index.
        unit: usize,
    },
}

/// Why the version is where it is after a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Back {
    /// Built and ready: a new deploy of it may be asked for (cancelled
    /// after the canary, or the countdown ran out: a new build is needed
    /// before deploying again, as the seed says).
    Ready,
    /// Back in development: cancelled before anything was deployed.
    InDevelopment,
}

/// What to do once the running jobs stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Then {
    /// Cancel the task.
    Cancel,
    /// Roll it back.
    Rollback,
}

/// Where a task is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Phase {
    /// Waiting for its turn.
    Queued,
    /// Waiting for a task that failed or was cancelled: never starts by
    /// itself.
    Blocked {
        /// The task it waited for.
        on: u64,
    },
    /// The jobs of `step` run.
    Running {
        /// Which.
        step: Step,
    },
    /// Waiting for `!deploy confirm` before `next`.
    Confirm {
        /// When the countdown ends, ms.
        deadline_ms: i64,
        /// The datacenter that comes next.
        next_dc: usize,
    },
    /// Its jobs are being stopped; then cancelled or rolled back.
    Stopping {
        /// What comes after.
        then: Then,
    },
    /// A job was lost (the bot died while it ran): someone decides.
    NeedsDecision {
        /// The step whose job was lost.
        step: Step,
    },
    /// All hosts deployed.
    Done,
    /// A job failed; the rollout stopped.
    Failed {
        /// The step that failed.
        step: Step,
    },
    /// Called off.
    Cancelled {
        /// Where the version is now.
        back: Back,
    },
    /// The rollback plan ran.
    RolledBack,
    /// A rollback job failed.
    RollbackFailed {
        /// The unit that failed.
        unit: usize,
    },
}

impl Phase {
    /// Still to do something, or waiting for someone.
    pub fn is_open(&self) -> bool {
        !matches!(
            self,
            Phase::Done
                | Phase::Failed { .. }
                | Phase::Cancelled { .. }
                | Phase::RolledBack
                | Phase::RollbackFailed { .. }
        )
    }

    /// Takes one of the concurrency slots (has started and not ended).
    pub fn is_active(&self) -> bool {
        self.is_open() && !matches!(self, Phase::Queued | Phase::Blocked { .. })
    }

    /// How it reads.
    pub fn word(&self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Blocked { .. } => "blocked",
            Phase::Running { step: Step::Static } => "static files",
            Phase::Running { step: Step::Canary } => "canary",
            Phase::Running {
                step: Step::Batch { .. },
            } => "rolling out",
            Phase::Running {
                step: Step::Rollback { .. },
            } => "rolling back",
            Phase::Confirm { .. } => "awaiting confirmation",
            Phase::Stopping { then: Then::Cancel } => "cancelling",
            Phase::Stopping {
                then: Then::Rollback,
            } => "stopping to roll back",
            Phase::NeedsDecision { .. } => "needs a decision",
            Phase::Done => "done",
            Phase::Failed { .. } => "failed",
            Phase::Cancelled { .. } => "cancelled",
            Phase::RolledBack => "rolled back",
            Phase::RollbackFailed { .. } => "rollback failed",
        }
    }
}

/// A job the task runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The host's handle for it.
    pub job: String,
    /// The host it deploys ("" for static files).
    pub host: String,
    /// How it ended, once it did.
    pub outcome: Option<String>,
}

/// A job to start: for which host, in which step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The step.
    pub step: Step,
    /// The host ("" for static files).
    pub host: String,
    /// The datacenter ("" for static files and the canary's own).
    pub datacenter: String,
}

/// One deploy task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `!deploy status N`.
    pub id: u64,
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// Who asked.
    pub initiator: String,
    /// Where it was asked; progress goes there.
    pub room: String,
    /// `--after N`.
    pub after: Option<u64>,
    /// When it was asked, ms.
    pub created_ms: i64,
    /// Where it is.
    pub phase: Phase,
    /// The jobs of the current step.
    pub jobs: Vec<Running>,
    /// Hosts deployed (the canary included).
    pub done: Vec<String>,
    /// Hosts whose job failed, with what it said.
    pub failed: Vec<(String, String)>,
    /// Hosts rolled back.
    pub undone: Vec<String>,
    /// Its progress message (a handle from `chat.send`).
    pub message: Option<String>,
    /// Deployed outside the deploy window with `--force`, by whom.
    pub forced_by: Option<String>,
}

/// Why a queued task does not start yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Another task of the same service runs.
    SameService(u64),
    /// `--after N` and N has not finished.
    After(u64),
    /// An upstream task's static files are not deployed yet.
    StaticFiles(u64),
    /// The concurrency limit.
    Full(usize),
    /// An earlier task of the same service is queued first.
    Earlier(u64),
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::SameService(n) => write!(f, "#{n} of the same service is rolling out"),
            Wait::After(n) => write!(f, "waits for #{n} (--after)"),
            Wait::StaticFiles(n) => write!(f, "waits for the static files of #{n}"),
            Wait::Full(limit) => write!(f, "{limit} deploys run at once, the most allowed"),
            Wait::Earlier(n) => write!(f, "#{n} of the same service is queued first"),
        }
    }
}

/// A refusal: the rule, in words for the person who asked.
pub type Refusal = String;

/// Whether queued `task` may start now, among `all` tasks (itself
/// included), with at most `limit` active; `upstream` are the services
/// whose static files it waits for.
pub fn may_start(task: &Task, all: &[Task], limit: usize, upstream: &[String]) -> Result<(), Wait> {
    if let Some(n) = task.after
        && let Some(other) = all.iter().find(|t| t.id == n)
        && other.phase.is_open()
    {
        return Err(Wait::After(n));
    }
    for other in all.iter().filter(|t| t.id != task.id) {
        if other.service == task.service && other.phase.is_active() {
            return Err(Wait::SameService(other.id));
        }
        if other.service == task.service && other.id < task.id && other.phase == Phase::Queued {
            return Err(Wait::Earlier(other.id));
        }
        let static_pending = matches!(
            other.phase,
            Phase::Queued | Phase::Running { step: Step::Static }
        );
        if upstream.contains(&other.service) && other.id < task.id && static_pending {
            return Err(Wait::StaticFiles(other.id));
        }
    }
    let active = all.iter().filter(|t| t.phase.is_active()).count();
    if active >= limit {
        return Err(Wait::Full(limit));
    }
    Ok(())
}

/// Whether `task` is blocked because `after`, the task it waits for
/// (found wherever it is on record), ended badly; by which.
pub fn blocked_by(task: &Task, after: Option<&Task>) -> Option<u64> {
    let n = task.after?;
    let other = after.filter(|t| t.id == n)?;
    matches!(
        other.phase,
        Phase::Failed { .. }
            | Phase::Cancelled { .. }
            | Phase::RolledBack
            | Phase::RollbackFailed { .. }
    )
    .then_some(n)
}

/// The first step of a task that may start.
pub fn first_step(plan: &Plan) -> Option<Step> {
    if plan.static_files {
        Some(Step::Static)
    } else if plan.canary.is_some() {
        Some(Step::Canary)
    } else {
        first_batch(plan, 0)
    }
}

fn first_batch(plan: &Plan, from_dc: usize) -> Option<Step> {
    plan.datacenters
        .iter()
        .enumerate()
        .skip(from_dc)
        .find(|(_, (_, batches))| !batches.is_empty())
        .map(|(dc, _)| Step::Batch { dc, batch: 0 })
}

/// The jobs of `step`, one per host; hosts already deployed are left out
/// (a step run again after a lost job redoes only what is not done).
pub fn starts(plan: &Plan, step: Step, done: &[String]) -> Vec<Start> {
    match step {
        Step::Static => vec![Start {
            step,
            host: String::new(),
            datacenter: String::new(),
        }],
        Step::Canary => plan
            .canary
            .iter()
            .filter(|h| !done.contains(h))
            .map(|h| Start {
                step,
                host: h.clone(),
                datacenter: datacenter_of(plan, h),
            })
            .collect(),
        Step::Batch { dc, batch } => plan
            .datacenters
            .get(dc)
            .and_then(|(name, batches)| {
                batches.get(batch).map(|hosts| {
                    hosts
                        .iter()
                        .filter(|h| !done.contains(h))
                        .map(|h| Start {
                            step,
                            host: h.clone(),
                            datacenter: name.clone(),
                        })
                        .collect()
                })
            })
            .unwrap_or_default(),
        Step::Rollback { unit } => rollback_units(plan, done)
            .get(unit)
            .map(|u| {
                u.hosts
                    .iter()
                    .map(|h| Start {
                        step,
                        host: h.clone(),
                        datacenter: u.datacenter.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The datacenter `host` is in ("" if none: a canary outside them).
pub fn datacenter_of(plan: &Plan, host: &str) -> String {
    if plan.canary.as_deref() == Some(host) {
        return plan.canary_datacenter.clone();
    }
    plan.datacenters
        .iter()
        .find(|(_, batches)| batches.iter().flatten().any(|h| h == host))
        .map(|(n, _)| n.clone())
        .unwrap_or_default()
}

/// One unit of the rollback: a plan step over the hosts of one
/// datacenter that were deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The operator's job for this step.
    pub job: String,
    /// Its datacenter ("" for hosts outside them).
    pub datacenter: String,
    /// The hosts.
    pub hosts: Vec<String>,
}

/// The rollback in order: the plan's steps in their declared order, and
/// within each step the datacenters in reverse rollout order, over the
/// hosts already deployed; empty units are left out.
pub fn rollback_units(plan: &Plan, done: &[String]) -> Vec<Unit> {
    let mut order: Vec<String> = plan
        .datacenters
        .iter()
        .rev()
        .map(|(n, _)| n.clone())
        .collect();
    order.push(String::new());
    let mut units = Vec::new();
    for (job, group) in &plan.rollback {
        for dc in &order {
            let hosts: Vec<String> = group
                .iter()
                .filter(|h| done.contains(h) && datacenter_of(plan, h) == *dc)
                .cloned()
                .collect();
            if !hosts.is_empty() {
                units.push(Unit {
                    job: job.clone(),
                    datacenter: dc.clone(),
                    hosts,
                });
            }
        }
    }
    units
}

/// What a finished job changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Other jobs of the step still run.
    Wait,
    /// Start these.
    Run(Step),
    /// Now waiting for a confirmation.
    Confirm,
    /// The task ended (done, failed, cancelled, rolled back, …) or waits
    /// for a decision.
    Settled,
}

impl Task {
    /// A new task, queued: `who` asked in `room` at `now_ms`.
    pub fn new(id: u64, service: &str, version: &str, who: &str, room: &str, now_ms: i64) -> Self {
        Self {
            id,
            service: service.to_owned(),
            version: version.to_owned(),
            initiator: who.to_owned(),
            room: room.to_owned(),
            after: None,
            created_ms: now_ms,
            phase: Phase::Queued,
            jobs: Vec::new(),
            done: Vec::new(),
            failed: Vec::new(),
            undone: Vec::new(),
            message: None,
            forced_by: None,
        }
    }

    /// Records that the job `job` ended with `outcome` (`succeeded`,
    /// `failed`, `timed-out`, `cancelled`, `lost`) and says what comes
    /// next. `output` is kept for a failed host. A job the task no longer
    /// waits for changes nothing.
    pub fn job_ended(
        &mut self,
        plan: &Plan,
        job: &str,
        outcome: &str,
        output: &str,
        now_ms: i64,
    ) -> Next {
        let Some(running) = self
            .jobs
            .iter_mut()
            .find(|r| r.job == job && r.outcome.is_none())
        else {
            return Next::Wait;
        };
        running.outcome = Some(outcome.to_owned());
        let host = running.host.clone();
        let step = match &self.phase {
            Phase::Running { step } => Some(*step),
            _ => None,
        };
        match outcome {
            "succeeded" => match step {
                Some(Step::Rollback { .. }) => self.undone.push(host),
                Some(Step::Static) | None => {}
                Some(_) => self.done.push(host),
            },
            "lost" => {}
            _ => self.failed.push((host, output.to_owned())),
        }
        if self.jobs.iter().any(|r| r.outcome.is_none()) {
            return Next::Wait;
        }
        let outcomes: Vec<String> = self.jobs.iter().filter_map(|r| r.outcome.clone()).collect();
        self.jobs.clear();
        if let Phase::Stopping { then } = self.phase {
            return match then {
                Then::Cancel => {
                    self.phase = Phase::Cancelled { back: self.back() };
                    Next::Settled
                }
                Then::Rollback => self.start_rollback(plan),
            };
        }
        let Some(step) = step else {
            return Next::Settled;
        };
        if outcomes.iter().any(|o| o == "lost") {
            self.phase = Phase::NeedsDecision { step };
            return Next::Settled;
        }
        if outcomes.iter().any(|o| o != "succeeded") {
            self.phase = match step {
                Step::Rollback { unit } => Phase::RollbackFailed { unit },
                _ => Phase::Failed { step },
            };
            return Next::Settled;
        }
        self.advance(plan, step, now_ms)
    }

    /// After `step` succeeded (or had nothing left to do).
    pub fn advance(&mut self, plan: &Plan, step: Step, now_ms: i64) -> Next {
        let next = match step {
            Step::Static => plan
                .canary
                .as_ref()
                .map(|_| Step::Canary)
                .or_else(|| first_batch(plan, 0)),
            Step::Canary => {
                if let Some(Step::Batch { dc, .. }) = first_batch(plan, 0) {
                    return self.ask(plan, dc, now_ms);
                }
                None
            }
            Step::Batch { dc, batch } => {
                let more = plan
                    .datacenters
                    .get(dc)
                    .is_some_and(|(_, b)| batch + 1 < b.len());
                if more {
                    Some(Step::Batch {
                        dc,
                        batch: batch + 1,
                    })
                } else {
                    match first_batch(plan, dc + 1) {
                        Some(Step::Batch { dc: next, .. }) if plan.confirm_between => {
                            return self.ask(plan, next, now_ms);
                        }
                        other => other,
                    }
                }
            }
            Step::Rollback { unit } => {
                if unit + 1 < rollback_units(plan, &self.done).len() {
                    Some(Step::Rollback { unit: unit + 1 })
                } else {
                    self.phase = Phase::RolledBack;
                    return Next::Settled;
                }
            }
        };
        match next {
            Some(step) => {
                self.phase = Phase::Running { step };
                Next::Run(step)
            }
            None => {
                self.phase = Phase::Done;
                Next::Settled
            }
        }
    }

    fn ask(&mut self, plan: &Plan, next_dc: usize, now_ms: i64) -> Next {
        self.phase = Phase::Confirm {
            deadline_ms: now_ms.saturating_add(plan.countdown_ms),
            next_dc,
        };
        Next::Confirm
    }

    /// Starts the rollout of a task that may start.
    pub fn begin(&mut self, plan: &Plan) -> Next {
        match first_step(plan) {
            Some(step) => {
                self.phase = Phase::Running { step };
                Next::Run(step)
            }
            None => {
                self.phase = Phase::Done;
                Next::Settled
            }
        }
    }

    /// `!deploy confirm` at `now_ms`.
    pub fn confirm(&mut self, now_ms: i64) -> Result<Next, Refusal> {
        match self.phase.clone() {
            Phase::Confirm {
                deadline_ms,
                next_dc,
            } => {
                if now_ms > deadline_ms {
                    return Err(format!("the countdown of #{} already ran out", self.id));
                }
                let step = Step::Batch {
                    dc: next_dc,
                    batch: 0,
                };
                self.phase = Phase::Running { step };
                Ok(Next::Run(step))
            }
            Phase::NeedsDecision { step } => {
                // The lost step runs again for the hosts it had not done.
                self.phase = Phase::Running { step };
                Ok(Next::Run(step))
            }
            other => Err(format!(
                "#{} is {}, not waiting for a confirmation",
                self.id,
                other.word()
            )),
        }
    }

    /// The countdown's end at `now_ms`: cancelled (or, if so configured,
    /// going on); nothing if it was confirmed meanwhile.
    pub fn expire(&mut self, plan: &Plan, now_ms: i64) -> Option<Next> {
        let Phase::Confirm {
            deadline_ms,
            next_dc,
        } = self.phase
        else {
            return None;
        };
        if now_ms < deadline_ms {
            return None;
        }
        Some(match plan.on_expiry {
            Expiry::Cancel => {
                self.phase = Phase::Cancelled { back: Back::Ready };
                Next::Settled
            }
            Expiry::Continue => {
                let step = Step::Batch {
                    dc: next_dc,
                    batch: 0,
                };
                self.phase = Phase::Running { step };
                Next::Run(step)
            }
        })
    }

    /// `!deploy cancel`: what to stop (jobs to cancel), or that it is over.
    pub fn cancel(&mut self) -> Result<Vec<String>, Refusal> {
        match &self.phase {
            Phase::Queued | Phase::Blocked { .. } => {
                self.phase = Phase::Cancelled {
                    back: Back::InDevelopment,
                };
                Ok(Vec::new())
            }
            Phase::Confirm { .. } | Phase::NeedsDecision { .. } => {
                self.phase = Phase::Cancelled { back: self.back() };
                Ok(Vec::new())
            }
            Phase::Running {
                step: Step::Rollback { .. },
            } => Err(format!(
                "#{} is rolling back; a rollback is not cancelled half-way",
                self.id
            )),
            Phase::Running { .. } => {
                self.phase = Phase::Stopping { then: Then::Cancel };
                Ok(self.open_jobs())
            }
            Phase::Stopping { .. } => Err(format!("#{} is already being stopped", self.id)),
            other => Err(format!("#{} is {} already", self.id, other.word())),
        }
    }

    /// `!deploy rollback`: the jobs to stop first, or the first rollback
    /// step.
    pub fn rollback(&mut self, plan: &Plan) -> Result<(Vec<String>, Next), Refusal> {
        if self.done.is_empty() {
            return Err(format!(
                "#{} has not deployed any host yet, so there is nothing to roll back; `deploy cancel {}` calls it off",
                self.id, self.id
            ));
        }
        if plan.rollback.is_empty() {
            return Err(format!(
                "service {} has no rollback plan; an admin can add one under [plugins.deploy.config.services.{}]",
                self.service, self.service
            ));
        }
        match &self.phase {
            Phase::Running {
                step: Step::Rollback { .. },
            }
            | Phase::Stopping {
                then: Then::Rollback,
            } => Err(format!("#{} is already rolling back", self.id)),
            Phase::RolledBack => Err(format!("#{} was rolled back already", self.id)),
            Phase::Running { .. } | Phase::Stopping { .. } => {
                self.phase = Phase::Stopping {
                    then: Then::Rollback,
                };
                Ok((self.open_jobs(), Next::Wait))
            }
            _ => Ok((Vec::new(), self.start_rollback(plan))),
        }
    }

    fn start_rollback(&mut self, plan: &Plan) -> Next {
        if rollback_units(plan, &self.done).is_empty() {
            self.phase = Phase::RolledBack;
            return Next::Settled;
        }
        let step = Step::Rollback { unit: 0 };
        self.phase = Phase::Running { step };
        Next::Run(step)
    }

    fn open_jobs(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|r| r.outcome.is_none())
            .map(|r| r.job.clone())
            .collect()
    }

    /// Where the version goes when cancelled now: nothing deployed yet is
    /// back in development; after the canary it needs a new build.
    fn back(&self) -> Back {
        if self.done.is_empty() {
            Back::InDevelopment
        } else {
            Back::Ready
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            static_files: true,
            canary: Some("web1".into()),
            canary_datacenter: "dc1".into(),
            datacenters: vec![
                (
                    "dc1".into(),
                    vec![vec!["web2".into(), "web3".into()], vec!["web4".into()]],
                ),
                ("dc2".into(), vec![vec!["web5".into(), "web6".into()]]),
            ],
            confirm_between: false,
            countdown_ms: 160_000,
            on_expiry: Expiry::Cancel,
            rollback: vec![
                (
                    "config".into(),
                    vec!["web1".into(), "web2".into(), "web5".into()],
                ),
                (
                    "code".into(),
                    vec!["web2".into(), "web5".into(), "web1".into()],
                ),
            ],
        }
    }

    fn task(id: u64, service: &str) -> Task {
        Task::new(id, service, "1.0", "@ann:local", "!r:local", 0)
    }

    /// Jobs running on hosts: (job, host).
    fn running(jobs: &[(&str, &str)]) -> Vec<Running> {
        jobs.iter()
            .map(|(job, host)| Running {
                job: (*job).into(),
                host: (*host).into(),
                outcome: None,
            })
            .collect()
    }

    /// Gives the task the jobs of `step` and ends them all with `outcome`.
    fn run(t: &mut Task, p: &Plan, step: Step, outcome: &str, now: i64) -> Next {
        t.jobs = starts(p, step, &t.done)
            .iter()
            .enumerate()
            .map(|(i, s)| Running {
                job: format!("j{i}"),
                host: s.host.clone(),
                outcome: None,
            })
            .collect();
        let names: Vec<String> = t.jobs.iter().map(|r| r.job.clone()).collect();
        let mut last = Next::Wait;
        for j in names {
            last = t.job_ended(p, &j, outcome, "out", now);
        }
        last
    }

    #[test]
    fn a_rollout_goes_static_canary_confirm_then_batches_in_order() {
        let p = plan();
        let mut t = task(1, "web");
        assert_eq!(t.begin(&p), Next::Run(Step::Static));
        assert_eq!(starts(&p, Step::Static, &[])[0].host, "");
        assert_eq!(
            run(&mut t, &p, Step::Static, "succeeded", 0),
            Next::Run(Step::Canary)
        );
        assert_eq!(starts(&p, Step::Canary, &[])[0].host, "web1");
        assert_eq!(
            run(&mut t, &p, Step::Canary, "succeeded", 1000),
            Next::Confirm
        );
        assert_eq!(
            t.phase,
            Phase::Confirm {
                deadline_ms: 161_000,
                next_dc: 0
            }
        );
        let first = Step::Batch { dc: 0, batch: 0 };
        assert_eq!(t.confirm(161_000), Ok(Next::Run(first)));
        let hosts: Vec<String> = starts(&p, first, &[]).into_iter().map(|s| s.host).collect();
        assert_eq!(hosts, ["web2", "web3"], "the canary is never in a batch");
        assert_eq!(
            run(&mut t, &p, first, "succeeded", 0),
            Next::Run(Step::Batch { dc: 0, batch: 1 })
        );
        assert_eq!(
            run(&mut t, &p, Step::Batch { dc: 0, batch: 1 }, "succeeded", 0),
            Next::Run(Step::Batch { dc: 1, batch: 0 })
        );
        assert_eq!(
            run(&mut t, &p, Step::Batch { dc: 1, batch: 0 }, "succeeded", 0),
            Next::Settled
        );
        assert_eq!(t.phase, Phase::Done);
        assert_eq!(t.done, ["web1", "web2", "web3", "web4", "web5", "web6"]);
    }

    #[test]
    fn a_batch_waits_for_all_its_jobs() {
        let p = plan();
        let mut t = task(1, "web");
        t.phase = Phase::Running {
            step: Step::Batch { dc: 0, batch: 0 },
        };
        t.jobs = running(&[("a", "web2"), ("b", "web3")]);
        assert_eq!(t.job_ended(&p, "a", "succeeded", "", 0), Next::Wait);
        assert_eq!(
            t.job_ended(&p, "a", "succeeded", "", 0),
            Next::Wait,
            "a repeat changes nothing"
        );
        assert_eq!(
            t.job_ended(&p, "zzz", "failed", "", 0),
            Next::Wait,
            "a stranger changes nothing"
        );
        assert_eq!(
            t.job_ended(&p, "b", "succeeded", "", 0),
            Next::Run(Step::Batch { dc: 0, batch: 1 })
        );
    }

    #[test]
    fn confirmation_between_datacenters_when_asked_for() {
        let p = Plan {
            confirm_between: true,
            ..plan()
        };
        let mut t = task(1, "web");
        t.phase = Phase::Running {
            step: Step::Batch { dc: 0, batch: 1 },
        };
        assert_eq!(
            run(&mut t, &p, Step::Batch { dc: 0, batch: 1 }, "succeeded", 5),
            Next::Confirm
        );
        assert_eq!(
            t.phase,
            Phase::Confirm {
                deadline_ms: 160_005,
                next_dc: 1
            }
        );
        assert_eq!(
            t.confirm(10),
            Ok(Next::Run(Step::Batch { dc: 1, batch: 0 }))
        );
    }

    #[test]
    fn a_late_confirm_is_refused_and_expiry_cancels_back_to_ready() {
        let p = plan();
        let mut t = task(1, "web");
        t.done = vec!["web1".into()];
        t.phase = Phase::Confirm {
            deadline_ms: 100,
            next_dc: 0,
        };
        assert_eq!(t.expire(&p, 99), None, "not yet");
        let late = t.clone().confirm(101).expect_err("refused");
        assert!(late.contains("ran out"), "{late}");
        assert_eq!(t.expire(&p, 100), Some(Next::Settled));
        assert_eq!(t.phase, Phase::Cancelled { back: Back::Ready });
        assert_eq!(t.expire(&p, 200), None, "once");
        let mut t2 = task(2, "web");
        t2.phase = Phase::Confirm {
            deadline_ms: 100,
            next_dc: 0,
        };
        let go_on = Plan {
            on_expiry: Expiry::Continue,
            ..plan()
        };
        assert_eq!(
            t2.expire(&go_on, 100),
            Some(Next::Run(Step::Batch { dc: 0, batch: 0 }))
        );
    }

    #[test]
    fn a_failed_job_stops_the_rollout_and_names_the_host() {
        let p = plan();
        let mut t = task(1, "web");
        let step = Step::Batch { dc: 0, batch: 0 };
        t.phase = Phase::Running { step };
        t.jobs = running(&[("a", "web2"), ("b", "web3")]);
        t.job_ended(&p, "a", "failed", "disk full", 0);
        assert_eq!(t.job_ended(&p, "b", "succeeded", "", 0), Next::Settled);
        assert_eq!(t.phase, Phase::Failed { step });
        assert_eq!(t.failed, [("web2".to_owned(), "disk full".to_owned())]);
        assert_eq!(t.done, ["web3"]);
    }

    #[test]
    fn a_lost_job_waits_for_a_decision_and_confirm_runs_the_step_again() {
        let p = plan();
        let mut t = task(1, "web");
        t.phase = Phase::Running { step: Step::Canary };
        assert_eq!(run(&mut t, &p, Step::Canary, "lost", 0), Next::Settled);
        assert_eq!(t.phase, Phase::NeedsDecision { step: Step::Canary });
        assert_eq!(t.confirm(0), Ok(Next::Run(Step::Canary)));
    }

    #[test]
    fn a_step_run_again_after_a_lost_job_redoes_only_what_is_not_done() {
        let p = plan();
        let mut t = task(1, "web");
        let step = Step::Batch { dc: 0, batch: 0 };
        t.phase = Phase::Running { step };
        t.jobs = running(&[("a", "web2"), ("b", "web3")]);
        t.job_ended(&p, "a", "succeeded", "", 0);
        assert_eq!(t.job_ended(&p, "b", "lost", "", 0), Next::Settled);
        assert_eq!(t.confirm(0), Ok(Next::Run(step)));
        let again: Vec<String> = starts(&p, step, &t.done)
            .into_iter()
            .map(|s| s.host)
            .collect();
        assert_eq!(again, ["web3"]);
        t.done.push("web3".into());
        assert!(starts(&p, step, &t.done).is_empty());
        assert_eq!(
            t.advance(&p, step, 0),
            Next::Run(Step::Batch { dc: 0, batch: 1 })
        );
    }

    #[test]
    fn cancel_depends_on_where_the_task_is() {
        let p = plan();
        let mut q = task(1, "web");
        assert_eq!(q.cancel(), Ok(vec![]));
        assert_eq!(
            q.phase,
            Phase::Cancelled {
                back: Back::InDevelopment
            }
        );
        assert!(
            q.cancel()
                .expect_err("refused")
                .contains("cancelled already")
        );

        let mut r = task(2, "web");
        r.phase = Phase::Running { step: Step::Canary };
        r.jobs = running(&[("c", "web1")]);
        assert_eq!(
            r.cancel(),
            Ok(vec!["c".to_owned()]),
            "the running job is cancelled first"
        );
        assert_eq!(r.phase, Phase::Stopping { then: Then::Cancel });
        assert_eq!(r.job_ended(&p, "c", "cancelled", "", 0), Next::Settled);
        assert_eq!(
            r.phase,
            Phase::Cancelled {
                back: Back::InDevelopment
            }
        );

        let mut c = task(3, "web");
        c.done = vec!["web1".into()];
        c.phase = Phase::Confirm {
            deadline_ms: 5,
            next_dc: 0,
        };
        assert_eq!(c.cancel(), Ok(vec![]));
        assert_eq!(c.phase, Phase::Cancelled { back: Back::Ready });
    }

    #[test]
    fn rollback_runs_the_plan_in_order_over_done_hosts_datacenters_reversed() {
        let p = plan();
        let done: Vec<String> = ["web1", "web2", "web5"].map(String::from).to_vec();
        let units = rollback_units(&p, &done);
        let order: Vec<(String, String, Vec<String>)> = units
            .iter()
            .map(|u| (u.job.clone(), u.datacenter.clone(), u.hosts.clone()))
            .collect();
        assert_eq!(
            order,
            [
                ("config".into(), "dc2".into(), vec!["web5".to_owned()]),
                (
                    "config".into(),
                    "dc1".into(),
                    vec!["web1".to_owned(), "web2".to_owned()]
                ),
                ("code".into(), "dc2".into(), vec!["web5".to_owned()]),
                (
                    "code".into(),
                    "dc1".into(),
                    vec!["web2".to_owned(), "web1".to_owned()]
                ),
            ]
        );
        let mut t = task(1, "web");
        t.done = done;
        t.phase = Phase::Failed {
            step: Step::Batch { dc: 1, batch: 0 },
        };
        assert_eq!(
            t.rollback(&p),
            Ok((vec![], Next::Run(Step::Rollback { unit: 0 })))
        );
        for unit in 0..3 {
            assert_eq!(
                run(&mut t, &p, Step::Rollback { unit }, "succeeded", 0),
                Next::Run(Step::Rollback { unit: unit + 1 })
            );
        }
        assert_eq!(
            run(&mut t, &p, Step::Rollback { unit: 3 }, "succeeded", 0),
            Next::Settled
        );
        assert_eq!(t.phase, Phase::RolledBack);
        assert!(
            t.rollback(&p)
                .expect_err("refused")
                .contains("rolled back already")
        );
    }

    #[test]
    fn rollback_of_a_running_task_stops_its_jobs_first() {
        let p = plan();
        let mut t = task(1, "web");
        t.done = vec!["web1".into()];
        t.phase = Phase::Running {
            step: Step::Batch { dc: 0, batch: 0 },
        };
        t.jobs = running(&[("x", "web2")]);
        assert_eq!(t.rollback(&p), Ok((vec!["x".to_owned()], Next::Wait)));
        assert_eq!(
            t.job_ended(&p, "x", "cancelled", "", 0),
            Next::Run(Step::Rollback { unit: 0 })
        );
        let nothing = task(2, "web").rollback(&p).expect_err("refused");
        assert!(nothing.contains("nothing to roll back"), "{nothing}");
    }

    #[test]
    fn queued_tasks_wait_for_their_turn_with_the_reason() {
        let mut a = task(1, "web");
        a.phase = Phase::Running { step: Step::Canary };
        let b = task(2, "web");
        let c = Task {
            after: Some(1),
            ..task(3, "api")
        };
        let d = task(4, "api");
        let e = task(5, "front");
        let all = vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()];
        assert_eq!(may_start(&b, &all, 15, &[]), Err(Wait::SameService(1)));
        assert_eq!(may_start(&c, &all, 15, &[]), Err(Wait::After(1)));
        assert_eq!(may_start(&d, &all, 15, &[]), Err(Wait::Earlier(3)));
        assert_eq!(may_start(&e, &all, 1, &[]), Err(Wait::Full(1)));
        assert_eq!(
            may_start(&e, &all, 15, &["web".into()]),
            Err(Wait::StaticFiles(2)),
            "queued #2 has not deployed them"
        );
        let without_b = vec![a.clone(), e.clone()];
        assert_eq!(
            may_start(&e, &without_b, 15, &["web".into()]),
            Ok(()),
            "#1 is past its static files"
        );
        let mut s = a.clone();
        s.phase = Phase::Running { step: Step::Static };
        let all = vec![s, e.clone()];
        assert_eq!(
            may_start(&e, &all, 15, &["web".into()]),
            Err(Wait::StaticFiles(1))
        );
        assert_eq!(may_start(&e, &all, 15, &[]), Ok(()));
    }

    #[test]
    fn a_task_after_one_that_failed_is_blocked() {
        let mut a = task(1, "web");
        let c = Task {
            after: Some(1),
            ..task(3, "api")
        };
        assert_eq!(blocked_by(&c, Some(&a)), None);
        a.phase = Phase::Failed { step: Step::Canary };
        assert_eq!(blocked_by(&c, Some(&a)), Some(1));
        assert_eq!(
            blocked_by(&c, Some(&task(2, "x"))),
            None,
            "only the task it names"
        );
        a.phase = Phase::Cancelled { back: Back::Ready };
        assert_eq!(blocked_by(&c, Some(&a)), Some(1));
        a.phase = Phase::Done;
        assert_eq!(blocked_by(&c, Some(&a)), None);
    }

    #[test]
    fn a_plan_without_static_files_or_canary_starts_with_the_first_batch() {
        let p = Plan {
            static_files: false,
            canary: None,
            ..plan()
        };
        assert_eq!(first_step(&p), Some(Step::Batch { dc: 0, batch: 0 }));
        let empty = Plan {
            datacenters: vec![],
            static_files: false,
            canary: None,
            ..plan()
        };
        assert_eq!(first_step(&empty), None);
        let mut t = task(1, "web");
        assert_eq!(t.begin(&empty), Next::Settled);
        assert_eq!(t.phase, Phase::Done);
    }
}
