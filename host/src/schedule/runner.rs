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

use crate::attempt::{Attempts, Call, Ran};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::dispatch::{chat_text, detail_of, outcome_of};
use crate::registry::Registry;
use crate::runtime::bindings::Firing;
use crate::runtime::{CallOutcome, CallState, LoadedPlugin, PluginError, Runtime};
use crate::store::{
    AuditRecord, Commit, Db, Decision, Fired, LastRun, OutMessage, Outcome, ScheduleChange,
    ScheduleRow,
};

use super::when::show;

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
    attempts: Arc<Attempts>,
    /// The load of each plugin whose declared schedules were last
    /// written, by name (its generation: a reload makes a new one).
    synced: Mutex<HashMap<String, u64>>,
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
        attempts: Arc<Attempts>,
    ) -> Self {
        Self {
            db,
            runtime,
            registry,
            clock,
            config,
            attempts,
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
            // One run's trouble is that run's: the others still fire. Only
            // a database that is away ends the pass (it is tried again).
            if let Err(e) = self.fire(&row, plugin, &table, &mut pass).await {
                if e.chain().any(crate::store::is_unavailable) {
                    return Err(e);
                }
                pass.failed += 1;
                tracing::error!(plugin = %row.plugin, id = %crate::text::one_line(&row.id), "scheduled run could not be recorded: {e:#}");
            }
        }
        pass.next_due_ms = self
            .db
            .schedules_next_by_plugin()
            .await?
            .into_iter()
            .filter(|(plugin, _)| {
                table
                    .plugin(plugin)
                    .is_some_and(|p| !p.health.is_quarantined())
            })
            .map(|(_, next)| next)
            .min();
        Ok(pass)
    }

    /// Makes the stored declared schedules of `plugin` match its
    /// describe(): new ones added, changed ones replaced (due at their new
    /// next time), dropped ones removed; unchanged ones keep their state,
    /// so a restart neither repeats nor loses a run.
    async fn sync_declared(&self, plugin: &Arc<LoadedPlugin>) -> anyhow::Result<()> {
        let address = plugin.generation;
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
                let commit = self.failure(&run, None, Outcome::Error, detail, chrono_tz::Tz::UTC);
                self.attempts.settle(&commit, &row.id).await?;
                return Ok(());
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
            self.attempts.settle(&commit, &row.id).await?;
            return Ok(());
        };
        let call = RunCall {
            scheduler: self,
            run: &run,
            table,
            due,
            next,
            zone: when.zone(),
        };
        let salt = format!("{}/{}", row.plugin, row.id);
        match self.attempts.run(plugin, &salt, &call).await? {
            Ran::Committed(Outcome::Ok) => pass.fired += 1,
            Ran::Committed(_) => pass.failed += 1,
            Ran::Duplicate => tracing::info!("{salt} was already run"),
            // The run stays due and is tried again in a moment, within
            // the grace: nothing about it was the plugin's fault.
            Ran::NotNow(_) | Ran::Contended => pass.busy += 1,
        }
        Ok(())
    }

    /// The commit of a failed run: recorded, the schedule moved on (`next`
    /// with the run's due time, or none to remove it) and the admins told,
    /// with times in `zone`.
    fn failure(
        &self,
        run: &Run<'_>,
        next: Option<(i64, i64)>,
        outcome: Outcome,
        detail: String,
        zone: chrono_tz::Tz,
    ) -> Commit {
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
        let messages = OutMessage::host_notice(self.config.admins(), &body);
        Commit {
            fired: Some(run.fired(next_ms, due, outcome.as_str(), Some(detail.clone()))),
            ..Commit::only_audit(None, self.audit(run, outcome, Some(detail)), messages)
        }
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

/// One scheduled run, for [`Attempts::run`].
struct RunCall<'a> {
    scheduler: &'a Scheduler,
    run: &'a Run<'a>,
    table: &'a crate::dispatch::CommandTable,
    /// The due time the plugin is told.
    due: i64,
    /// Where the schedule goes afterwards.
    next: Option<i64>,
    zone: chrono_tz::Tz,
}

impl Call for RunCall<'_> {
    type Value = Result<(), String>;

    fn run(&self) -> impl std::future::Future<Output = CallOutcome<Self::Value>> + Send {
        let firing = Firing {
            id: self.run.row.id.clone(),
            payload_json: self.run.row.payload.clone(),
            due_ms: self.due,
            now_ms: self.scheduler.clock.now_ms(),
        };
        self.scheduler.runtime.schedule(self.run.plugin, firing)
    }

    fn returned(&self, value: Self::Value, state: CallState) -> Commit {
        let s = self.scheduler;
        if let Err(message) = value {
            let next = self.next.map(|n| (n, self.due));
            return s.failure(self.run, next, Outcome::Error, message, self.zone);
        }
        let audit = s.audit(self.run, Outcome::Ok, None);
        Commit {
            fired: Some(self.run.fired(self.next, self.due, "ok", None)),
            ..crate::attempt::with_effects(state, self.table, (0, None), None, audit, None)
        }
    }

    fn failed(&self, e: &PluginError, notices: Vec<OutMessage>) -> Commit {
        let detail = format!("{}; {}", chat_text(e), detail_of(e));
        let next = self.next.map(|n| (n, self.due));
        let mut commit = self
            .scheduler
            .failure(self.run, next, outcome_of(e), detail, self.zone);
        commit.messages.extend(notices);
        commit
    }
}
