//! Running due schedules. A pass reads what is due from the database,
//! calls each plugin's `handle-schedule` and commits the run's effects
//! together with the schedule's next time, the audit record and, on
//! failure, a message to the admins. Nothing is kept between passes except
//! which plugin declarations were already written.
//!
//! Missed runs (the bot was down or busy): the latest run that is at most
//! the grace late fires once; older ones are recorded as `missed` and
//! skipped. A schedule whose plugin is not loaded or is quarantined waits,
//! and the same rule applies when it can run again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::dispatch::{chat_text, detail_of, outcome_of};
use crate::registry::Registry;
use crate::runtime::bindings::Firing;
use crate::runtime::{LoadedPlugin, PluginError, Runtime};
use crate::store::{
    AuditRecord, Commit, Db, Decision, Fired, LastRun, OutMessage, Outcome, ScheduleChange,
    ScheduleRow, StoreError,
};

use super::when::show;

/// Attempts at committing one run when concurrent writers conflict.
const COMMIT_ATTEMPTS: usize = 5;

/// What one pass did, and when the next is needed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Runs that completed.
    pub fired: usize,
    /// Runs skipped for being later than the grace.
    pub missed: usize,
    /// Runs that failed (and were reported).
    pub failed: usize,
    /// Runs left due because every call slot was busy; try again soon.
    pub busy: usize,
    /// The earliest time a schedule of a runnable plugin is due.
    pub next_due_ms: Option<i64>,
}

/// Fires due schedules; see the module docs.
pub struct Scheduler {
    db: Db,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    clock: SharedClock,
    config: Arc<Config>,
    /// The loaded plugin whose declared schedules were last written, by
    /// name (its address: a reload makes a new one).
    synced: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over the bot's parts.
    pub fn new(
        db: Db,
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        clock: SharedClock,
        config: Arc<Config>,
    ) -> Self {
        Self {
            db,
            runtime,
            registry,
            clock,
            config,
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Writes new plugin declarations, then runs everything due now.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let table = self.registry.current();
        for plugin in table.plugins() {
            self.sync_declared(plugin).await?;
        }
        let mut pass = Pass::default();
        let now = self.clock.now_ms();
        for row in self.db.schedules_due(now).await? {
            let Some(plugin) = table
                .plugin(&row.plugin)
                .filter(|p| !p.health.is_quarantined())
            else {
                continue;
            };
            self.fire(&row, plugin, &table, &mut pass).await?;
        }
        pass.next_due_ms = self
            .db
            .schedules_all()
            .await?
            .iter()
            .filter(|r| {
                table
                    .plugin(&r.plugin)
                    .is_some_and(|p| !p.health.is_quarantined())
            })
            .filter_map(|r| r.next_fire_ms)
            .min();
        Ok(pass)
    }

    /// Makes the stored declared schedules of `plugin` match its
    /// describe(): new ones added, changed ones replaced (due at their new
    /// next time), dropped ones removed; unchanged ones keep their state,
    /// so a restart neither repeats nor loses a run.
    async fn sync_declared(&self, plugin: &Arc<LoadedPlugin>) -> anyhow::Result<()> {
        let address = Arc::as_ptr(plugin) as usize;
        let seen = self
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&*plugin.name)
            .copied();
        if seen == Some(address) {
            return Ok(());
        }
        let started = Instant::now();
        let now = self.clock.now_ms();
        let stored = self.db.schedules_of(&plugin.name).await?;
        let mut changes = Vec::new();
        let mut said = Vec::new();
        for spec in &plugin.info.schedules {
            let row = match super::row(&plugin.name, spec, true, now) {
                Ok(row) => row,
                Err(e) => {
                    tracing::warn!(plugin = %plugin.name, "declared schedule not added: {e}");
                    continue;
                }
            };
            match stored.iter().find(|s| s.id == row.id) {
                Some(old) if old.declared && old.same_definition(&row) => {}
                Some(_) => {
                    said.push(format!("updated {}", row.id));
                    changes.push(ScheduleChange::Put(row));
                }
                None => {
                    said.push(format!("added {}", row.id));
                    changes.push(ScheduleChange::Put(row));
                }
            }
        }
        for old in stored.iter().filter(|s| s.declared) {
            if !plugin.info.schedules.iter().any(|s| s.id == old.id) {
                said.push(format!("removed {}", old.id));
                changes.push(ScheduleChange::Remove {
                    plugin: old.plugin.clone(),
                    id: old.id.clone(),
                });
            }
        }
        if !changes.is_empty() {
            let audit = AuditRecord {
                at_ms: now,
                kind: "schedule",
                actor: "host".into(),
                room: None,
                command: "declared schedules".into(),
                plugin: Some(plugin.name.to_string()),
                plugin_version: Some(plugin.info.version.clone()),
                decision: Decision::NotChecked,
                outcome: Outcome::Ok,
                detail: Some(said.join(", ")),
                duration_us: AuditRecord::micros_since(started),
            };
            tracing::info!(plugin = %plugin.name, "declared schedules: {}", said.join(", "));
            let commit = Commit {
                schedules: changes,
                ..Commit::only_audit(None, audit, Vec::new())
            };
            self.db.commit(&commit).await?;
        }
        self.synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(plugin.name.to_string(), address);
        Ok(())
    }

    /// Runs one due schedule (or records it missed) and commits the result.
    async fn fire(
        &self,
        row: &ScheduleRow,
        plugin: &Arc<LoadedPlugin>,
        table: &crate::dispatch::CommandTable,
        pass: &mut Pass,
    ) -> anyhow::Result<()> {
        let Some(expected) = row.next_fire_ms else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let grace = i64::try_from(self.config.scheduler.grace.as_millis()).unwrap_or(i64::MAX);
        let run = Run {
            row,
            plugin,
            expected,
            started: Instant::now(),
        };
        let when = match super::when_of(row) {
            Ok(when) => when,
            Err(e) => {
                // Only a zone that vanished from the time-zone database gets
                // here: the definition was checked when it was stored.
                pass.failed += 1;
                let detail = format!("cannot be read any more, removed: {e}");
                return self
                    .commit_failure(&run, None, Outcome::Error, detail, chrono_tz::Tz::UTC)
                    .await;
            }
        };
        let next = when.next_after(now);
        let Some(due) = when.last_in(expected.max(now.saturating_sub(grace)) - 1, now) else {
            pass.missed += 1;
            let zone = when.zone();
            let detail = format!(
                "due {} and more than the grace ({}) late when the bot could run it; skipped",
                show(expected, zone),
                humantime::format_duration(self.config.scheduler.grace)
            );
            tracing::warn!(plugin = %plugin.name, id = %row.id, "{detail}");
            let commit = Commit {
                fired: Some(run.fired(next, expected, "missed", Some(detail.clone()))),
                ..Commit::only_audit(
                    None,
                    self.audit(&run, Outcome::Skipped, Some(detail)),
                    vec![],
                )
            };
            return Ok(self.db.commit_once(&commit).await?);
        };
        for _ in 0..COMMIT_ATTEMPTS {
            let firing = Firing {
                id: row.id.clone(),
                payload_json: row.payload.clone(),
                due_ms: due,
                now_ms: self.clock.now_ms(),
            };
            let out = self.runtime.schedule(plugin, firing).await;
            let commit = match out.result {
                Err(PluginError::Busy) => {
                    pass.busy += 1;
                    return Ok(());
                }
                Ok(Ok(())) => {
                    plugin.health.succeeded();
                    let state = out.state;
                    Commit {
                        processed: None,
                        audit: self.audit(&run, Outcome::Ok, None),
                        kv: Some(state.kv),
                        messages: state.messages,
                        events: table.new_events(state.events, &plugin.name, 0),
                        roles: Vec::new(),
                        delivery: None,
                        schedules: state.schedules,
                        fired: Some(run.fired(next, due, "ok", None)),
                    }
                }
                Ok(Err(message)) => {
                    pass.failed += 1;
                    return self
                        .commit_failure(
                            &run,
                            next.map(|n| (n, due)),
                            Outcome::Error,
                            message,
                            when.zone(),
                        )
                        .await;
                }
                Err(e) => {
                    pass.failed += 1;
                    tracing::warn!(plugin = %plugin.name, id = %row.id, "scheduled run failed: {}", detail_of(&e));
                    if plugin.health.failed(self.config.runtime.quarantine_after) {
                        tracing::error!(plugin = %plugin.name, "quarantined after {} failures in a row", plugin.health.failures());
                    }
                    let detail = format!("{}; {}", chat_text(&e), detail_of(&e));
                    return self
                        .commit_failure(
                            &run,
                            next.map(|n| (n, due)),
                            outcome_of(&e),
                            detail,
                            when.zone(),
                        )
                        .await;
                }
            };
            match self.db.commit(&commit).await {
                Ok(()) => {
                    pass.fired += 1;
                    return Ok(());
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Duplicate(what)) => {
                    tracing::info!("{what} was already run");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(plugin = %plugin.name, id = %row.id, "kept conflicting with other writers; will try again");
        Ok(())
    }

    /// Records a failed run, moves the schedule on (`next` with the run's
    /// due time, or none to remove it) and tells the admins, with times in
    /// `zone`.
    async fn commit_failure(
        &self,
        run: &Run<'_>,
        next: Option<(i64, i64)>,
        outcome: Outcome,
        detail: String,
        zone: chrono_tz::Tz,
    ) -> anyhow::Result<()> {
        let (next_ms, due) = next.map_or((None, run.expected), |(n, d)| (Some(n), d));
        let body = format!(
            "scheduled run **{}/{}** (due {}) failed: {}{}",
            run.plugin.name,
            run.row.id,
            show(due, zone),
            detail,
            match next_ms {
                Some(n) => format!("\nnext run: {}", show(n, zone)),
                None => "\nit will not run again".into(),
            }
        );
        let messages = OutMessage::direct_to_each(self.config.admins(), &body);
        let commit = Commit {
            fired: Some(run.fired(next_ms, due, outcome.as_str(), Some(detail.clone()))),
            ..Commit::only_audit(None, self.audit(run, outcome, Some(detail)), messages)
        };
        Ok(self.db.commit_once(&commit).await?)
    }

    fn audit(&self, run: &Run<'_>, outcome: Outcome, detail: Option<String>) -> AuditRecord {
        AuditRecord {
            at_ms: self.clock.now_ms(),
            kind: "schedule",
            actor: "scheduler".into(),
            room: None,
            command: run.row.id.clone(),
            plugin: Some(run.plugin.name.to_string()),
            plugin_version: Some(run.plugin.info.version.clone()),
            decision: Decision::NotChecked,
            outcome,
            detail,
            duration_us: AuditRecord::micros_since(run.started),
        }
    }
}

/// One run being handled.
struct Run<'a> {
    row: &'a ScheduleRow,
    plugin: &'a Arc<LoadedPlugin>,
    /// `next_fire_ms` as read.
    expected: i64,
    started: Instant,
}

impl Run<'_> {
    fn fired(
        &self,
        next_ms: Option<i64>,
        due_ms: i64,
        outcome: &str,
        detail: Option<String>,
    ) -> Fired {
        Fired {
            plugin: self.row.plugin.clone(),
            id: self.row.id.clone(),
            expected_next_ms: self.expected,
            next_ms,
            last: LastRun {
                due_ms,
                outcome: outcome.to_owned(),
                detail,
            },
        }
    }
}
