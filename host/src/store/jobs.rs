//! Jobs plugins started: inserted with the call's commit, claimed by the
//! host that runs them, ended in the transaction that hands the outcome
//! to the plugin (`crate::jobs`).

use sqlx::Row;

use super::sql::{Conn, query};
use super::{Db, StoreError, classify};

/// What a job's row says became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a free slot.
    Queued,
    /// A host runs it now.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited otherwise, was killed by a signal, or could not start.
    Failed,
    /// Still running at its timeout; killed.
    TimedOut,
    /// Cancelled by its plugin (killed if it was running).
    Cancelled,
    /// It was running when its host died: nobody knows how it ended.
    Lost,
}

impl JobState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed-out",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "timed-out" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            "lost" => JobState::Lost,
            _ => JobState::Failed,
        }
    }

    /// Whether it is over.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job a plugin asked for, committed with its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The handle the plugin got back (`job-…`).
    pub key: String,
    /// The plugin that asked; the outcome goes back to it.
    pub plugin: String,
    /// The operator's job.
    pub name: String,
    /// The plugin's name for this run, handed back with the outcome.
    pub tag: String,
    /// Parameter values, as given.
    pub params: Vec<(String, String)>,
}

/// A job effect of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    /// Start (queue) a job.
    Start(NewJob),
    /// Cancel the plugin's job with this key, if it has not ended.
    Cancel {
        /// Whose job.
        plugin: String,
        /// Its key.
        key: String,
    },
}

/// The end of a job, committed with its outcome event and audit record.
#[derive(Debug, Clone)]
pub struct JobEnd {
    /// The job.
    pub id: i64,
    /// Applies only while the row is in this state (a queued job cancelled,
    /// a running one ended or found lost), so it happens once.
    pub from: JobState,
    /// How it ended.
    pub state: JobState,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The last lines of its output, masked.
    pub output: String,
    /// Why it failed, in words, if it did.
    pub error: Option<String>,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// `!jobs N`.
    pub id: i64,
    /// The plugin's handle.
    pub key: String,
    /// When it was committed.
    pub created_ms: i64,
    /// Who started it.
    pub plugin: String,
    /// The operator's job.
    pub name: String,
    /// The plugin's tag.
    pub tag: String,
    /// Parameter values.
    pub params: Vec<(String, String)>,
    /// Where it is.
    pub state: JobState,
    /// Its plugin asked to cancel it.
    pub cancel_requested: bool,
    /// The host running it (`host:pid:nonce`).
    pub owner: Option<String>,
    /// Until when the owner's claim holds unless renewed.
    pub lease_until_ms: Option<i64>,
    /// The process (group) id, while running.
    pub pid: Option<i64>,
    /// When it started running.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub ended_ms: Option<i64>,
    /// Its exit code.
    pub exit_code: Option<i64>,
    /// The last lines of its output.
    pub output: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// The columns [`stored`] reads, in its order (a macro, so queries stay
/// string literals).
macro_rules! columns {
    () => {
        "id, job_key, created_ms, plugin, name, tag, params, state, cancel_requested, owner, \
         lease_until_ms, pid, started_ms, ended_ms, exit_code, output, error"
    };
}

fn stored(r: &sqlx::any::AnyRow) -> StoredJob {
    let params: String = r.get(6);
    let state: String = r.get(7);
    let cancel: i64 = r.get(8);
    StoredJob {
        id: r.get(0),
        key: r.get(1),
        created_ms: r.get(2),
        plugin: r.get(3),
        name: r.get(4),
        tag: r.get(5),
        params: serde_json::from_str(&params).unwrap_or_default(),
        state: JobState::parse(&state),
        cancel_requested: cancel != 0,
        owner: r.get(9),
        lease_until_ms: r.get(10),
        pid: r.get(11),
        started_ms: r.get(12),
        ended_ms: r.get(13),
        exit_code: r.get(14),
        output: r.get(15),
        error: r.get(16),
    }
}

pub(super) async fn apply(
    tx: &mut Conn<'_>,
    change: &JobChange,
    now_ms: i64,
) -> Result<(), StoreError> {
    match change {
        JobChange::Start(j) => {
            let params = serde_json::to_string(&j.params).unwrap_or_else(|_| "[]".into());
            query(
                "INSERT INTO jobs (job_key, created_ms, plugin, name, tag, params) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&j.key)
            .bind(now_ms)
            .bind(&j.plugin)
            .bind(&j.name)
            .bind(crate::text::storable(&j.tag, crate::text::MAX_AUDIT_FIELD).into_owned())
            .bind(crate::text::storable(&params, usize::MAX).into_owned())
            .execute(tx)
            .await?;
        }
        JobChange::Cancel { plugin, key } => {
            query(
                "UPDATE jobs SET cancel_requested = 1 WHERE job_key = $1 AND plugin = $2 \
                 AND state IN ('queued', 'running')",
            )
            .bind(key)
            .bind(plugin)
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn end(tx: &mut Conn<'_>, e: &JobEnd, now_ms: i64) -> Result<(), StoreError> {
    let updated = query(
        "UPDATE jobs SET state = $1, exit_code = $2, output = $3, error = $4, ended_ms = $5, \
         lease_until_ms = NULL WHERE id = $6 AND state = $7",
    )
    .bind(e.state.as_str())
    .bind(e.exit_code.map(i64::from))
    .bind(crate::text::storable(&e.output, usize::MAX).into_owned())
    .bind(
        e.error
            .as_deref()
            .map(|x| crate::text::storable(x, crate::text::MAX_AUDIT_FIELD).into_owned()),
    )
    .bind(now_ms)
    .bind(e.id)
    .bind(e.from.as_str())
    .execute(tx)
    .await?;
    if updated == 0 {
        return Err(StoreError::Duplicate(format!("job {}", e.id)));
    }
    Ok(())
}

impl Db {
    /// Queued jobs, oldest first.
    pub async fn jobs_queued(&self, limit: i64) -> Result<Vec<StoredJob>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE state = 'queued' ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(stored).collect())
    }

    /// Running jobs, of every owner.
    pub async fn jobs_running(&self) -> Result<Vec<StoredJob>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE state = 'running' ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(stored).collect())
    }

    /// How many jobs are queued or running.
    pub async fn jobs_open(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// Takes a queued job for `owner`, leased until `lease_until_ms`:
    /// whether this host got it (another may have been first).
    pub async fn job_claim(
        &self,
        id: i64,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'running', owner = $1, started_ms = $2, lease_until_ms = $3 \
             WHERE id = $4 AND state = 'queued' AND cancel_requested = 0",
        )
        .bind(owner)
        .bind(now_ms)
        .bind(lease_until_ms)
        .bind(id)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// Renews `owner`'s lease on a running job and saves its process id
    /// and output so far (for `!jobs N` while it runs).
    pub async fn job_renew(
        &self,
        id: i64,
        owner: &str,
        lease_until_ms: i64,
        pid: Option<u32>,
        output: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1, pid = COALESCE($2, pid), output = $3 \
             WHERE id = $4 AND owner = $5 AND state = 'running'",
        )
        .bind(lease_until_ms)
        .bind(pid.map(i64::from))
        .bind(crate::text::storable(output, usize::MAX).into_owned())
        .bind(id)
        .bind(owner)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// One job by number.
    pub async fn job(&self, id: i64) -> Result<Option<StoredJob>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(stored))
    }

    /// A plugin's job by its key.
    pub async fn job_by_key(
        &self,
        plugin: &str,
        key: &str,
    ) -> Result<Option<StoredJob>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE job_key = $1 AND plugin = $2"
        ))
        .bind(key)
        .bind(plugin)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(stored))
    }

    /// The newest jobs, newest first.
    pub async fn jobs_recent(&self, limit: i64) -> Result<Vec<StoredJob>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(stored).collect())
    }
}
