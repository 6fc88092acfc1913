//! Durable schedules: rows, and the changes a commit applies to them.
//!
//! The store keeps a schedule's definition as text (cron expression and
//! zone, or an instant) and does not interpret it; `crate::schedule` does.
//! A run moves `next_fire_ms` on only if it still holds the value the run
//! started from, so two runners (or a runner and a restart) cannot both
//! commit the same run.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::{Conn, query};
use super::{Db, StoreError};

/// One schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The plugin it belongs to.
    pub plugin: String,
    /// The plugin's id for it.
    pub id: String,
    /// Five-field cron expression; none for a one-shot.
    pub cron: Option<String>,
    /// IANA zone of the cron expression.
    pub zone: Option<String>,
    /// The instant of a one-shot.
    pub at_ms: Option<i64>,
    /// JSON handed back to the plugin.
    pub payload: String,
    /// Declared in describe() rather than added by a call.
    pub declared: bool,
    /// When it is due; none when it will not fire again.
    pub next_fire_ms: Option<i64>,
    /// The last run: when it was due, what became of it and why.
    pub last: Option<LastRun>,
}

/// What became of a schedule's last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// When the run was due.
    pub due_ms: i64,
    /// `ok`, `error`, `trap`, `timeout`, `missed`...
    pub outcome: String,
    /// The error, or why it was missed.
    pub detail: Option<String>,
}

impl ScheduleRow {
    /// Whether `other` defines the same timer (ignoring run state).
    pub fn same_definition(&self, other: &ScheduleRow) -> bool {
        (&self.cron, &self.zone, self.at_ms, &self.payload)
            == (&other.cron, &other.zone, other.at_ms, &other.payload)
    }
}

/// A change to the schedules, committed with a call's other effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Adds or replaces a schedule (its last run is kept).
    Put(ScheduleRow),
    /// Removes one.
    Remove {
        /// The plugin.
        plugin: String,
        /// Its id.
        id: String,
    },
}

/// A run that is being committed: where the schedule goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The plugin.
    pub plugin: String,
    /// The schedule's id.
    pub id: String,
    /// `next_fire_ms` as read before the run; the update applies only if
    /// it is unchanged.
    pub expected_next_ms: i64,
    /// The next time; none removes the schedule (a one-shot that ran).
    pub next_ms: Option<i64>,
    /// What became of this run.
    pub last: LastRun,
}

/// `SELECT` of every column [`row`] reads, followed by `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT plugin, id, cron, zone, at_ms, payload, declared, next_fire_ms, ",
            "last_fire_ms, last_outcome, last_detail FROM schedules ",
            $rest
        )
    };
}

fn row(r: &AnyRow) -> ScheduleRow {
    let last_fire: Option<i64> = r.get(8);
    let outcome: Option<String> = r.get(9);
    ScheduleRow {
        plugin: r.get(0),
        id: r.get(1),
        cron: r.get(2),
        zone: r.get(3),
        at_ms: r.get(4),
        payload: r.get(5),
        declared: r.get::<i64, _>(6) != 0,
        next_fire_ms: r.get(7),
        last: last_fire.zip(outcome).map(|(due_ms, outcome)| LastRun {
            due_ms,
            outcome,
            detail: r.get(10),
        }),
    }
}

impl Db {
    /// Every schedule, by plugin and id.
    pub async fn schedules_all(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(select!("ORDER BY plugin, id"))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(row).collect())
    }

    /// The schedules of one plugin, by id.
    pub async fn schedules_of(&self, plugin: &str) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(select!("WHERE plugin = $1 ORDER BY id"))
            .bind(plugin)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(row).collect())
    }

    /// Each plugin's earliest next run: what the schedule loop needs to know
    /// how long to sleep, without reading every row.
    pub async fn schedules_next_by_plugin(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT plugin, MIN(next_fire_ms) FROM schedules \
             WHERE next_fire_ms IS NOT NULL GROUP BY plugin",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Schedules due at `now_ms`, earliest first.
    pub async fn schedules_due(&self, now_ms: i64) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(select!(
            "WHERE next_fire_ms <= $1 ORDER BY next_fire_ms, plugin, id"
        ))
        .bind(now_ms)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(row).collect())
    }
}

/// Applies a run's new state; a run someone else already moved on is a
/// duplicate.
pub(super) async fn apply_fired(tx: &mut Conn<'_>, f: &Fired) -> Result<(), StoreError> {
    let done = match f.next_ms {
        Some(next) => {
            query(
                "UPDATE schedules SET next_fire_ms = $1, last_fire_ms = $2, last_outcome = $3, \
             last_detail = $4 WHERE plugin = $5 AND id = $6 AND next_fire_ms = $7",
            )
            .bind(next)
            .bind(f.last.due_ms)
            .bind(&f.last.outcome)
            .bind(&f.last.detail)
            .bind(&f.plugin)
            .bind(&f.id)
            .bind(f.expected_next_ms)
            .execute(tx)
            .await?
        }
        None => {
            query("DELETE FROM schedules WHERE plugin = $1 AND id = $2 AND next_fire_ms = $3")
                .bind(&f.plugin)
                .bind(&f.id)
                .bind(f.expected_next_ms)
                .execute(tx)
                .await?
        }
    };
    if done == 0 {
        return Err(StoreError::Duplicate(format!(
            "schedule {}/{} due at {}",
            f.plugin, f.id, f.expected_next_ms
        )));
    }
    Ok(())
}

/// Applies a plugin's schedule changes, in order.
pub(super) async fn apply_changes(
    tx: &mut Conn<'_>,
    changes: &[ScheduleChange],
    now_ms: i64,
) -> Result<(), StoreError> {
    for change in changes {
        match change {
            ScheduleChange::Put(s) => query(
                "INSERT INTO schedules (plugin, id, cron, zone, at_ms, payload, declared, \
                 next_fire_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (plugin, id) DO UPDATE SET cron = excluded.cron, \
                 zone = excluded.zone, at_ms = excluded.at_ms, payload = excluded.payload, \
                 declared = excluded.declared, next_fire_ms = excluded.next_fire_ms",
            )
            .bind(&s.plugin)
            .bind(&s.id)
            .bind(&s.cron)
            .bind(&s.zone)
            .bind(s.at_ms)
            .bind(&s.payload)
            .bind(i64::from(s.declared))
            .bind(s.next_fire_ms)
            .bind(now_ms),
            ScheduleChange::Remove { plugin, id } => {
                query("DELETE FROM schedules WHERE plugin = $1 AND id = $2")
                    .bind(plugin)
                    .bind(id)
            }
        }
        .execute(tx)
        .await?;
    }
    Ok(())
}
