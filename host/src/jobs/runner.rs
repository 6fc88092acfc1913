//! Runs queued jobs: claims them up to the concurrency limit, keeps their
//! owner lease and output fresh while they run, stops the ones their
//! plugin cancelled, and ends each in one transaction with its outcome
//! event; finds the jobs a dead host left `running` and marks them `lost`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Job;
use super::child::{self, Ended};
use super::tail::{Tail, last_bytes};
use crate::attempt::{Attempts, Ran};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::http::sender::HOST_SOURCE;
use crate::registry::Registry;
use crate::store::{
    AuditRecord, Commit, Db, Decision, JobEnd, JobState, NewEvent, Outcome, StoredJob,
};

/// The topic of the outcome event.
pub const FINISHED_TOPIC: &str = "job.finished";
/// How long an owner's claim on a running job holds without renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often a running job's lease and output are saved.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// When they are saved first, with the process id.
const FIRST_RENEW: Duration = Duration::from_millis(200);
/// Bytes of output handed to the plugin in the event.
const EVENT_OUTPUT: usize = 16 * 1024;

/// A job this host runs now.
struct Running {
    cancel: Arc<tokio::sync::Notify>,
    cancelling: bool,
}

/// Runs the jobs plugins committed.
pub struct Runner {
    db: Db,
    attempts: Arc<Attempts>,
    registry: Arc<Registry>,
    clock: SharedClock,
    jobs: BTreeMap<String, Arc<Job>>,
    concurrency: usize,
    kill_grace: Duration,
    output_lines: usize,
    /// `host:pid:nonce`: whose claim a running row is.
    owner: String,
    running: Mutex<HashMap<i64, Running>>,
    /// Signalled whenever a job of this host ended.
    ended: Arc<tokio::sync::Notify>,
    /// One pass at a time, so a job is not claimed twice by this host.
    passing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for the jobs in `config`.
    pub fn new(
        db: Db,
        attempts: Arc<Attempts>,
        registry: Arc<Registry>,
        clock: SharedClock,
        config: &Config,
    ) -> anyhow::Result<Self> {
        let jobs = config
            .jobs
            .compile(&config.base_dir)?
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        Ok(Self {
            db,
            attempts,
            registry,
            clock,
            jobs,
            concurrency: config.jobs.concurrency,
            kill_grace: config.jobs.kill_grace,
            output_lines: config.jobs.output_lines,
            owner: format!(
                "{}:{}:{}",
                this_host(),
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            running: Mutex::new(HashMap::new()),
            ended: Arc::new(tokio::sync::Notify::new()),
            passing: tokio::sync::Mutex::new(()),
        })
    }

    /// One pass: marks jobs of dead owners lost, stops cancelled ones,
    /// starts queued ones while slots are free. Whether anything changed.
    pub async fn pass(self: &Arc<Self>) -> anyhow::Result<bool> {
        let _one = self.passing.lock().await;
        let mut changed = false;
        for job in self.db.jobs_running().await? {
            let mine = job.owner.as_deref() == Some(self.owner.as_str());
            if mine {
                if job.cancel_requested {
                    self.stop(job.id);
                }
            } else if self.owner_gone(&job) {
                self.end_lost(&job).await?;
                changed = true;
            }
        }
        loop {
            let free = self.concurrency.saturating_sub(self.running_count());
            if free == 0 {
                break;
            }
            let queued = self
                .db
                .jobs_queued(i64::try_from(free).unwrap_or(1))
                .await?;
            if queued.is_empty() {
                break;
            }
            for job in queued {
                changed = true;
                if job.cancel_requested {
                    self.end_unrun(
                        &job,
                        JobState::Cancelled,
                        "cancelled before it started".into(),
                    )
                    .await?;
                    continue;
                }
                self.start(job).await?;
            }
        }
        Ok(changed)
    }

    /// Runs passes for as long as the bot runs: after every commit that
    /// queued or cancelled a job, whenever one of ours ended, and every
    /// few seconds (another host's lease may have run out).
    pub async fn run(self: &Arc<Self>) {
        let mut outage = crate::outage::Outage::new("running jobs");
        loop {
            let wait = match self.pass().await {
                Ok(_) => {
                    outage.over();
                    LEASE / 3
                }
                Err(e) => outage.failed(&*e),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.db.runnable() => {}
                () = self.ended.notified() => {}
            }
        }
    }

    /// Runs passes until no job is queued or running (jobs started while
    /// waiting included) or `limit` passed: for transcripts and the
    /// console, where one person waits for the outcome. Whether all ended.
    ///
    /// A job counts as ended once the task that ran it is done, not when
    /// its outcome is visible in the database: that task marks the
    /// outcome's event for delivery just after its commit, and a caller
    /// that flushed in between would find nothing to deliver yet.
    pub async fn settle(self: &Arc<Self>, limit: Duration) -> anyhow::Result<bool> {
        let until = Instant::now() + limit;
        loop {
            self.pass().await?;
            if self.running_count() == 0 && self.db.jobs_open().await? == 0 {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(Duration::from_millis(200))) => {}
                () = self.ended.notified() => {}
            }
        }
    }

    fn running_count(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn stop(&self, id: i64) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.get_mut(&id)
            && !r.cancelling
        {
            r.cancelling = true;
            r.cancel.notify_one();
        }
    }

    /// Whether the host that claimed `job` is gone: its lease ran out, or
    /// it ran on this machine and its process no longer exists.
    fn owner_gone(&self, job: &StoredJob) -> bool {
        if job.lease_until_ms.is_none_or(|t| t < self.clock.now_ms()) {
            return true;
        }
        let Some(owner) = &job.owner else {
            return true;
        };
        let mut parts = owner.rsplitn(3, ':');
        let (_nonce, pid, host) = (parts.next(), parts.next(), parts.next());
        host == Some(this_host().as_str())
            && pid
                .and_then(|p| p.parse::<i64>().ok())
                .is_some_and(|pid| pid != i64::from(std::process::id()) && !child::alive(pid))
    }

    async fn start(self: &Arc<Self>, job: StoredJob) -> anyhow::Result<()> {
        // The config or the plugin's grant may have changed since the call.
        let def = self.jobs.get(&job.name).cloned();
        let granted = self
            .registry
            .current()
            .plugin(&job.plugin)
            .is_some_and(|p| p.grants.jobs.contains_key(&job.name));
        let argv = match (&def, granted) {
            (None, _) => Err(format!(
                "job {} is no longer defined in the config",
                job.name
            )),
            (Some(_), false) => Err(format!(
                "plugin {} is not loaded with job {} granted",
                job.plugin, job.name
            )),
            (Some(def), true) => def.command_line(&job.params),
        };
        let (def, argv) = match (def, argv) {
            (Some(def), Ok(argv)) => (def, argv),
            (_, Err(why)) => return self.end_unrun(&job, JobState::Failed, why).await,
            (None, Ok(_)) => return Ok(()),
        };
        let now = self.clock.now_ms();
        if !self
            .db
            .job_claim(job.id, &self.owner, now, now + lease_ms())
            .await?
        {
            return Ok(());
        }
        let cancel = Arc::new(tokio::sync::Notify::new());
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                job.id,
                Running {
                    cancel: cancel.clone(),
                    cancelling: false,
                },
            );
        tracing::info!(job = job.id, name = %job.name, plugin = %job.plugin, "starting a job");
        let this = self.clone();
        tokio::spawn(async move {
            let id = job.id;
            if let Err(e) = this.supervise(job, def, argv, cancel).await {
                tracing::error!(job = id, "a job's outcome could not be recorded: {e:#}");
            }
            this.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            this.ended.notify_waiters();
            this.ended.notify_one();
        });
        Ok(())
    }

    /// Runs one claimed job to its end and commits the outcome.
    async fn supervise(
        &self,
        job: StoredJob,
        def: Arc<Job>,
        argv: Vec<String>,
        cancel: Arc<tokio::sync::Notify>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let tail = Arc::new(Mutex::new(Tail::new(self.output_lines)));
        let pid = Arc::new(Mutex::new(None::<u32>));
        let keeper = {
            let (db, owner, tail, pid, clock, def) = (
                self.db.clone(),
                self.owner.clone(),
                tail.clone(),
                pid.clone(),
                self.clock.clone(),
                def.clone(),
            );
            let id = job.id;
            tokio::spawn(async move {
                // The first save comes soon, with the process id.
                tokio::time::sleep(FIRST_RENEW).await;
                loop {
                    let output = def.mask(
                        &tail
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .snapshot(),
                    );
                    let pid = *pid.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Err(e) = db
                        .job_renew(id, &owner, clock.now_ms() + lease_ms(), pid, &output)
                        .await
                    {
                        tracing::warn!(job = id, "renewing a job's lease: {e}");
                    }
                    tokio::time::sleep(RENEW_EVERY).await;
                }
            })
        };
        let ended = child::run(&def, &argv, tail.clone(), cancel, self.kill_grace, |p| {
            *pid.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
        })
        .await;
        keeper.abort();
        let output = def.mask(
            &tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot(),
        );
        self.commit_end(&job, JobState::Running, ended, output, started.elapsed())
            .await
    }

    /// Ends a job that never ran (cancelled while queued, or refused at
    /// start).
    async fn end_unrun(&self, job: &StoredJob, state: JobState, why: String) -> anyhow::Result<()> {
        let ended = Ended {
            state,
            exit_code: None,
            error: Some(why),
        };
        self.commit_end(job, JobState::Queued, ended, String::new(), Duration::ZERO)
            .await
    }

    async fn end_lost(&self, job: &StoredJob) -> anyhow::Result<()> {
        tracing::warn!(job = job.id, name = %job.name, owner = ?job.owner, "a job was running when its host stopped; marking it lost");
        let ended = Ended {
            state: JobState::Lost,
            exit_code: None,
            error: Some(
                "it was running when the bot stopped, so how it ended is unknown; it is not run again by itself"
                    .into(),
            ),
        };
        let ran = job
            .started_ms
            .map_or(0, |s| self.clock.now_ms().saturating_sub(s));
        self.commit_end(
            job,
            JobState::Running,
            ended,
            job.output.clone(),
            Duration::from_millis(u64::try_from(ran).unwrap_or(0)),
        )
        .await
    }

    /// Commits how `job` ended (if it is still `from`), its audit record
    /// and the `job.finished` event for its plugin, in one transaction.
    async fn commit_end(
        &self,
        job: &StoredJob,
        from: JobState,
        ended: Ended,
        output: String,
        took: Duration,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let payload = serde_json::json!({
            "job": job.key,
            "id": job.id,
            "name": job.name,
            "tag": job.tag,
            "params": job.params.iter().cloned().collect::<BTreeMap<_, _>>(),
            "outcome": ended.state.as_str(),
            "exit-code": ended.exit_code,
            "duration-ms": duration_ms,
            "error": ended.error,
            "output": last_bytes(&output, EVENT_OUTPUT),
        })
        .to_string();
        let loaded = self.registry.current().plugin(&job.plugin).cloned();
        let audit = AuditRecord {
            at_ms: now,
            kind: "job",
            actor: format!("plugin:{}", job.plugin),
            room: None,
            command: format!("job {} {}", job.id, job.name),
            plugin: Some(job.plugin.clone()),
            plugin_version: loaded.map(|l| l.info.version.clone()),
            decision: Decision::NotChecked,
            outcome: if ended.state == JobState::Succeeded {
                Outcome::Ok
            } else {
                Outcome::Error
            },
            detail: Some(format!(
                "{} after {:.1} s{}{}",
                ended.state.as_str(),
                took.as_secs_f64(),
                ended
                    .exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default(),
                ended
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )),
            duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        };
        let event = NewEvent {
            topic: FINISHED_TOPIC.into(),
            payload,
            source_plugin: HOST_SOURCE.into(),
            depth: 0,
            root: None,
            subscribers: vec![job.plugin.clone()],
        };
        let commit = Commit {
            job_end: Some(JobEnd {
                id: job.id,
                from,
                state: ended.state,
                exit_code: ended.exit_code,
                output,
                error: ended.error,
            }),
            events: vec![event],
            ..Commit::only_audit(None, audit, Vec::new())
        };
        match self.attempts.settle(&commit, &job.key).await? {
            Ran::Committed(_) | Ran::Duplicate => Ok(()),
            other => anyhow::bail!("its end could not be committed ({other:?})"),
        }
    }
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)
}

/// This machine's name, as owners name it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
