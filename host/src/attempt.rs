//! One plugin call taken to its commit: the steps a command, an event
//! delivery and a scheduled run share, written once so they cannot drift.
//!
//! Run the call; a return counts as health and becomes the caller's commit;
//! a crash or timeout counts toward quarantine (telling the admins when it
//! quarantines) and becomes the caller's failure commit; a busy host or an
//! unavailable database is nobody's fault and commits nothing, so the work
//! stays due. A commit that lost to a concurrent change is re-run after a
//! jittered pause, and after [`LANE_AFTER`] losses waits in its plugin's
//! retry lane so a hot key cannot starve anyone. What each kind of call
//! commits is the caller's: see [`Call`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;
use crate::dispatch::CommandTable;
use crate::metrics::Metrics;
use crate::runtime::{CallOutcome, CallState, LoadedPlugin, PluginError};
use crate::store::{AuditRecord, Commit, Db, OutMessage, Outcome, StoreError};

/// How many times a call whose reads went stale is re-run before giving up.
const CONFLICT_RETRIES: u32 = 32;
/// After this many conflicts a call queues in its plugin's retry lane.
const LANE_AFTER: u32 = 2;

/// One kind of plugin call: how to make it and what it commits.
pub trait Call: Sync {
    /// What the guest returns.
    type Value: Send;
    /// Makes the call once, in a fresh store.
    fn run(&self) -> impl Future<Output = CallOutcome<Self::Value>> + Send;
    /// The commit of a call that returned (with its result, ok or not).
    fn returned(&self, value: Self::Value, state: CallState) -> Commit;
    /// The commit of a call that crashed or timed out; `notices` tell the
    /// admins when this failure quarantined the plugin.
    fn failed(&self, error: &PluginError, notices: Vec<OutMessage>) -> Commit;
}

/// What became of the work.
#[derive(Debug)]
pub enum Ran {
    /// Its commit (of the result or of the failure) is in, with this
    /// audit outcome.
    Committed(Outcome),
    /// Someone committed it first (a replayed message, another runner).
    Duplicate,
    /// Not run now, and nothing recorded: the host was busy or its
    /// database away. The work stays due.
    NotNow(PluginError),
    /// The data it read kept changing under it; nothing recorded.
    Contended,
}

/// Runs calls to their commit; shared by every path that calls a plugin.
pub struct Attempts {
    db: Db,
    config: Arc<Config>,
    /// Counts every call and every record committed here.
    metrics: Arc<Metrics>,
    /// Per plugin: calls that already lost [`LANE_AFTER`] commits retry
    /// one at a time. First attempts never wait here; it is the
    /// contention fallback of optimistic concurrency, not a lock around
    /// plugin calls.
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts").finish_non_exhaustive()
    }
}

impl Attempts {
    /// Attempts committing to `db`, quarantining after the config's count,
    /// counted in `metrics`.
    pub fn new(db: Db, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            config,
            metrics,
            lanes: Mutex::default(),
        }
    }

    /// The counters this host keeps, for the paths that count more than
    /// calls and records (commands, webhooks) and for `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `call` in `plugin` to its commit. `salt` spreads the retries
    /// of different work apart.
    pub async fn run<C: Call>(
        &self,
        plugin: &LoadedPlugin,
        salt: &str,
        call: &C,
    ) -> Result<Ran, StoreError> {
        let mut lane = None;
        // Every read over HTTP is on record, including those of runs that
        // lost their commit and ran again.
        let mut requests: Vec<String> = Vec::new();
        for attempt in 0..CONFLICT_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt, salt)).await;
            }
            if attempt == LANE_AFTER {
                lane = Some(self.lane(&plugin.name).lock_owned().await);
            }
            let mut out = call.run().await;
            requests.append(&mut out.state.requests);
            self.metrics
                .call(&plugin.name, out.result.as_ref().map(|_| ()));
            let commit = match out.result {
                Ok(value) => {
                    plugin.health.succeeded();
                    with_requests(call.returned(value, out.state), &requests)
                }
                Err(e) if !e.is_plugin_fault() => return Ok(Ran::NotNow(e)),
                Err(e) => {
                    tracing::warn!(plugin = %plugin.name, work = %crate::text::one_line(salt), "plugin call failed: {}", crate::dispatch::detail_of(&e));
                    let notices = if plugin.health.failed(self.config.runtime.quarantine_after) {
                        self.metrics.quarantined(&plugin.name);
                        self.quarantine_notice(plugin, &e)
                    } else {
                        Vec::new()
                    };
                    let failed = with_requests(call.failed(&e, notices), &requests);
                    return self.settle(&failed, salt).await;
                }
            };
            match self.db.commit(&commit).await {
                Ok(()) => return Ok(self.committed(&commit)),
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Duplicate(_)) => return Ok(Ran::Duplicate),
                Err(e) => return Err(e),
            }
        }
        drop(lane);
        tracing::warn!(plugin = %plugin.name, work = %crate::text::one_line(salt), "gave up after {CONFLICT_RETRIES} conflicting commits");
        Ok(Ran::Contended)
    }

    /// Commits work that read nothing optimistically (a refusal, a failure
    /// record): a serialization conflict is retried with the same commit,
    /// which is still right.
    pub async fn settle(&self, commit: &Commit, salt: &str) -> Result<Ran, StoreError> {
        let mut attempt = 0;
        loop {
            match self.db.commit(commit).await {
                Ok(()) => return Ok(self.committed(commit)),
                Err(StoreError::Duplicate(_)) => return Ok(Ran::Duplicate),
                Err(StoreError::Conflict) if attempt + 1 < CONFLICT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt, salt)).await;
                }
                Err(StoreError::Conflict) => return Ok(Ran::Contended),
                Err(e) => return Err(e),
            }
        }
    }

    /// What a commit that went in means, counted.
    fn committed(&self, commit: &Commit) -> Ran {
        self.metrics.committed(&commit.audit);
        Ran::Committed(commit.audit.outcome)
    }

    fn lane(&self, plugin: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes.entry(plugin.to_owned()).or_default().clone()
    }

    /// Direct messages telling every admin (from the config) that a plugin
    /// was quarantined, why, and how to lift it.
    fn quarantine_notice(&self, plugin: &LoadedPlugin, e: &PluginError) -> Vec<OutMessage> {
        let cause = match e {
            PluginError::Trap { cause, .. } => format!("crashed ({cause})"),
            other => other.to_string(),
        };
        let failures = plugin.health.failures();
        tracing::error!(plugin = %plugin.name, "quarantined after {failures} failures in a row: {cause}");
        let prefix = &self.config.bot.prefix;
        let body = format!(
            "plugin {} {} is quarantined after {failures} failures in a row; the last: {cause}. `{prefix}plugin reload {}` lifts it.",
            plugin.name, plugin.info.version, plugin.name
        );
        OutMessage::host_notice(self.config.admins(), &body)
    }
}

/// The commit of a call that returned: everything it buffered (kv changes,
/// messages after `first`, events at `depth` in the chain from `root` to
/// their subscribers in `table`, schedule changes) with `audit` and the `processed` marker. The
/// one constructor for every kind of call, which adds only its own part
/// (a delivery's end, a run's next time).
pub fn with_effects(
    state: CallState,
    table: &CommandTable,
    (depth, root): (i64, Option<i64>),
    processed: Option<String>,
    audit: AuditRecord,
    first: Option<OutMessage>,
) -> Commit {
    let plugin = state.plugin.clone();
    let messages = first
        .into_iter()
        .chain(state.messages)
        .map(|m| m.from_plugin(&plugin))
        .collect();
    Commit {
        kv: Some(state.kv),
        events: table.new_events(state.events, &state.plugin, depth, root),
        schedules: state.schedules,
        sends: state.sends,
        jobs: state.jobs,
        ..Commit::only_audit(processed, audit, messages)
    }
}

/// `commit` with the HTTP reads of its call added to its audit record.
fn with_requests(mut commit: Commit, requests: &[String]) -> Commit {
    if !requests.is_empty() {
        let reads = format!("http: {}", requests.join("; "));
        commit.audit.detail = Some(match commit.audit.detail.take() {
            Some(d) => format!("{d}; {reads}"),
            None => reads,
        });
    }
    commit
}

/// A jittered, exponentially growing pause before retry `attempt` (under
/// 32 ms), different for each piece of work so contenders do not collide
/// again in lockstep.
fn backoff(attempt: u32, salt: &str) -> std::time::Duration {
    use std::hash::{BuildHasher, RandomState};
    let ceiling_us = 500u64 << attempt.min(6);
    let jitter = RandomState::new().hash_one((salt, attempt)) % ceiling_us;
    std::time::Duration::from_micros(ceiling_us / 2 + jitter / 2)
}
