//! The audit log: one row for everything a command, event or schedule did,
//! allowed or denied, written in the same transaction as its effects.

use sqlx::Row;

use super::sql::{Conn, query};
use super::{Db, StoreError};
use crate::text::{MAX_AUDIT_FIELD, MAX_ID, storable};

/// Whether the caller was allowed to run the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The caller held the required role.
    Allowed,
    /// The caller lacked the required role.
    Denied,
    /// No role check applied (unknown command, bad arguments, events).
    NotChecked,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::NotChecked => "-",
        }
    }
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Ok,
    /// The plugin returned an error, or the arguments were wrong.
    Error,
    /// The plugin crashed or ran out of memory.
    Trap,
    /// The plugin ran past its time limit.
    Timeout,
    /// Refused: missing role, or the plugin's own check.
    Denied,
    /// Not a known command.
    Unknown,
    /// Not run on purpose: too old when the bot saw it, or unreadable.
    Skipped,
}

impl Outcome {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Denied => "denied",
            Outcome::Unknown => "unknown",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One audit row to write.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// `command`, `event`, `schedule`, `delivery`, `reload` or `http` (a try of a send).
    pub kind: &'static str,
    /// Who: a user id, `plugin:<name>` for events, `watcher` for reloads.
    pub actor: String,
    /// Where, for commands.
    pub room: Option<String>,
    /// The command line or the event topic.
    pub command: String,
    /// Which plugin answered (`ikkyu` for built-ins).
    pub plugin: Option<String>,
    /// Its version at the time.
    pub plugin_version: Option<String>,
    /// The role check's result.
    pub decision: Decision,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, for the operator; never shown in chat in full.
    pub detail: Option<String>,
    /// How long it took, in microseconds.
    pub duration_us: i64,
}

impl AuditRecord {
    /// Microseconds since `started`, for [`AuditRecord::duration_us`].
    pub fn micros_since(started: std::time::Instant) -> i64 {
        i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

/// One audit row read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id; increases with time.
    pub id: i64,
    /// See [`AuditRecord::at_ms`].
    pub at_ms: i64,
    /// See [`AuditRecord::kind`].
    pub kind: String,
    /// See [`AuditRecord::actor`].
    pub actor: String,
    /// See [`AuditRecord::room`].
    pub room: Option<String>,
    /// See [`AuditRecord::command`].
    pub command: String,
    /// See [`AuditRecord::plugin`].
    pub plugin: Option<String>,
    /// See [`AuditRecord::plugin_version`].
    pub plugin_version: Option<String>,
    /// `allowed`, `denied` or `-`.
    pub decision: String,
    /// See [`Outcome::as_str`].
    pub outcome: String,
    /// See [`AuditRecord::detail`].
    pub detail: Option<String>,
    /// See [`AuditRecord::duration_us`].
    pub duration_us: i64,
}

/// The store's backstop: whatever callers put in a record (chat text, a
/// plugin's error), the row fits a TEXT column on both backends, so the
/// audit row of a failure can always be written.
fn fit(s: &str, max: usize) -> String {
    storable(s, max).into_owned()
}

/// One audit record.
pub(super) const INSERT: &str = "INSERT INTO audit_log (at_ms, kind, actor, room, command, plugin, plugin_version, \
         decision, outcome, detail, duration_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// An audit record as its row holds it: every field bounded and storable.
#[derive(Debug, serde::Serialize)]
pub(super) struct Stored<'a> {
    at_ms: i64,
    kind: &'a str,
    actor: String,
    room: Option<String>,
    command: String,
    plugin: Option<String>,
    plugin_version: Option<String>,
    decision: &'static str,
    outcome: &'static str,
    detail: Option<String>,
    duration_us: i64,
}

impl<'a> From<&'a AuditRecord> for Stored<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        Self {
            at_ms: r.at_ms,
            kind: r.kind,
            actor: fit(&r.actor, MAX_ID),
            room: r.room.as_deref().map(|v| fit(v, MAX_ID)),
            command: fit(&r.command, MAX_AUDIT_FIELD),
            plugin: r.plugin.as_deref().map(|v| fit(v, MAX_ID)),
            plugin_version: r.plugin_version.as_deref().map(|v| fit(v, MAX_ID)),
            decision: r.decision.as_str(),
            outcome: r.outcome.as_str(),
            detail: r.detail.as_deref().map(|v| fit(v, MAX_AUDIT_FIELD)),
            duration_us: r.duration_us,
        }
    }
}

pub(super) async fn insert(tx: &mut Conn<'_>, r: &AuditRecord) -> Result<(), StoreError> {
    let r = Stored::from(r);
    query(INSERT)
        .bind(r.at_ms)
        .bind(r.kind)
        .bind(r.actor)
        .bind(r.room)
        .bind(r.command)
        .bind(r.plugin)
        .bind(r.plugin_version)
        .bind(r.decision)
        .bind(r.outcome)
        .bind(r.detail)
        .bind(r.duration_us)
        .execute(tx)
        .await?;
    Ok(())
}

impl Db {
    /// The last `n` audit rows, newest first.
    pub async fn audit_recent(&self, n: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, actor, room, command, plugin, plugin_version, decision, \
             outcome, detail, duration_us FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                kind: r.get(2),
                actor: r.get(3),
                room: r.get(4),
                command: r.get(5),
                plugin: r.get(6),
                plugin_version: r.get(7),
                decision: r.get(8),
                outcome: r.get(9),
                detail: r.get(10),
                duration_us: r.get(11),
            })
            .collect())
    }
}
