//! Group commit: one writer per database commits the writes that arrive
//! together in one transaction.
//!
//! A commit costs its statements plus the transaction around them, and
//! with one write connection every commit waits for the one before it.
//! So writes queue here, and the writer takes all that are waiting (up to
//! [`MAX_BATCH`]) into one transaction: each caller is still answered only
//! once the transaction holding its write is durable, and nobody waits for
//! a batch that was already under way when it arrived. On SQLite the
//! writer is whichever caller finds the connection free, calling SQLite
//! directly (`sql`); on PostgreSQL it is a task with one connection at a
//! time from the pool.
//!
//! On SQLite the hot path's reads run on the writer's connection too
//! ([`Writer::read`]), so its page cache stays warm, and the WAL is
//! checkpointed by a thread of its own (`checkpoint`).
//!
//! A write that fails on its own (a replayed message, stale reads, data
//! the database refuses, a full namespace) must not take the others with
//! it: the transaction is rolled back, that caller gets its error, and the
//! rest are applied again without it. Errors are rare, so the common path
//! pays nothing for this. A failure of the transaction itself (its start,
//! its commit, the connection) is every caller's.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Checkpoints};
use super::kv_copy::Copies;
use super::sql::{Conn, Query};
use super::undelivered::Undelivered;
use super::{Commit, StoreError, commit, grouped, kv, outbox};

/// The most writes one transaction carries; bounds how long the first of
/// a batch waits for the others' statements.
const MAX_BATCH: usize = 64;

/// One write.
#[derive(Debug)]
pub(super) enum Write {
    /// A command's (or run's, or delivery's) whole commit.
    Commit(Arc<Commit>),
    /// One statement whose loss in a crash is harmless ([`Writer::mark`]).
    Mark(Query),
    /// A look at the outbox between transactions ([`Writer::settle`]).
    Settle,
}

/// What one write did inside its transaction; its caller's answer.
#[derive(Debug)]
enum Applied {
    /// A commit, with what it wrote that is handed on.
    Commit(commit::Written),
    /// Rows changed by a statement.
    Changed(u64),
    /// A settle's look at the outbox.
    Look(outbox::Look),
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<Applied, StoreError>>,
}

/// What every batch hands its results to besides its callers.
#[derive(Debug, Clone, Default)]
pub(super) struct Shared {
    /// Bounds of the kv namespaces, for their quota.
    pub(super) usage: kv::Usage,
    /// Each commit's messages, as it commits.
    pub(super) undelivered: Arc<Undelivered>,
    /// Each commit's kv writes, as it commits.
    pub(super) kv: Copies,
}

/// The queue in front of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Writer(Arc<Queue>);

#[derive(Debug)]
enum Queue {
    /// SQLite: whoever finds the connection free commits everything
    /// waiting, on its own thread (see [`Lite::drain`]).
    Lite(Box<Lite>),
    /// PostgreSQL: a task takes what is waiting.
    Any(mpsc::UnboundedSender<Job>),
}

/// The SQLite writer: no thread of its own. A commit of ours takes tens of
/// microseconds, less than waking another thread and being woken back, so
/// the caller that finds the connection free commits what is waiting
/// (its own write and any that queued meanwhile) and answers the others.
#[derive(Debug)]
struct Lite {
    waiting: Mutex<Vec<Job>>,
    /// Held only by code that does not wait (a batch, a read) but waited
    /// for asynchronously: a task that finds it taken lets its thread run
    /// other tasks' plugin calls meanwhile instead of blocking it.
    conn: tokio::sync::Mutex<rusqlite::Connection>,
    shared: Shared,
    checkpoints: Checkpoints,
}

impl Lite {
    /// Commits every waiting write unless another caller holds the
    /// connection, in which case that caller commits them. After letting
    /// the connection go, a caller looks once more, so a write queued
    /// while it committed is never left behind.
    fn drain(&self) {
        loop {
            let Ok(mut conn) = self.conn.try_lock() else {
                return;
            };
            loop {
                let batch: Vec<Job> = {
                    let mut waiting = lock(&self.waiting);
                    let n = waiting.len().min(MAX_BATCH);
                    waiting.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                // Every statement runs inside the first poll.
                let done = commit_batch(Via::Lite(&mut conn), batch, &self.shared).now_or_never();
                debug_assert!(done.is_some(), "an SQLite write never waits");
                self.checkpoints.committed(&conn);
            }
            drop(conn);
            if lock(&self.waiting).is_empty() {
                return;
            }
        }
    }
}

/// A mutex's guard even if an earlier holder panicked: the store keeps
/// serving rather than failing every later caller.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("write", &self.write).finish()
    }
}

impl Writer {
    /// The SQLite writer, with its own connection to the file at `path`.
    pub(super) fn sqlite(path: &std::path::Path, shared: Shared) -> Result<Self, StoreError> {
        let conn = super::sql::open(path)?;
        checkpoint::manual(&conn)?;
        Ok(Self(Arc::new(Queue::Lite(Box::new(Lite {
            waiting: Mutex::new(Vec::new()),
            conn: tokio::sync::Mutex::new(conn),
            shared,
            checkpoints: Checkpoints::start(path.to_path_buf())?,
        })))))
    }

    /// Starts the PostgreSQL writer as a task on the current runtime. It
    /// ends when every handle to the queue is gone.
    pub(super) fn postgres(pool: sqlx::AnyPool, shared: Shared) -> Self {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Commits apart from marks and looks: a batch of commits
                // that write only `grouped`'s rows is one statement, and
                // marks do not wait for the disk (see `any_batch`).
                let (commits, rest): (Vec<Job>, Vec<Job>) = batch
                    .drain(..)
                    .partition(|job| matches!(job.write, Write::Commit(_)));
                for part in [commits, rest] {
                    if !part.is_empty() {
                        commit_batch(Via::Any(&pool), part, &shared).await;
                    }
                }
            }
        });
        Self(Arc::new(Queue::Any(queue)))
    }

    /// Commits `c` with whatever else is waiting; resolves when it is
    /// durable or failed.
    pub(super) async fn commit(&self, c: Arc<Commit>) -> Result<(), StoreError> {
        self.write_all(vec![Write::Commit(c)]).await.map(drop)
    }

    /// Records, with whatever else is waiting, something a crash may
    /// lose without harm because its work is redone (a message marked
    /// delivered is delivered again under the same key, which the chat
    /// network drops): the rows it changed. A batch of only these is not
    /// flushed to disk before it is answered on PostgreSQL.
    pub(super) async fn mark(&self, q: Query) -> Result<u64, StoreError> {
        self.marks(vec![q]).await
    }

    /// Runs `read` on the SQLite writer's connection, between its batches.
    ///
    /// A connection's page cache survives its own commits, while every
    /// commit of another connection empties it (and, with the file mapped,
    /// unmaps and maps it again: a TLB shootdown on every core). Reading
    /// where we write keeps the pages a command reads warm; a read of ours
    /// takes microseconds, so waiting for a batch in progress costs less
    /// than reading everything again. Whatever queued meanwhile is
    /// committed after, as when a commit finds the connection taken.
    pub(super) async fn read<R>(
        &self,
        read: impl FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self.0.as_ref() {
            Queue::Lite(lite) => {
                let result = read(&mut *lite.conn.lock().await);
                lite.drain();
                result
            }
            Queue::Any(_) => Err(StoreError::Db(
                "an SQLite read on a PostgreSQL database".into(),
            )),
        }
    }

    /// The SQLite checkpoint thread is woken every `batches` batches from
    /// now on, or never (0).
    #[cfg(test)]
    pub(super) fn wake_checkpoints_every(&self, batches: u32) {
        if let Queue::Lite(lite) = self.0.as_ref() {
            lite.checkpoints.wake_every(batches);
        }
    }

    /// Transactions the SQLite writer committed so far.
    #[cfg(test)]
    pub(super) fn batches(&self) -> Option<u32> {
        match self.0.as_ref() {
            Queue::Lite(lite) => Some(lite.checkpoints.batches()),
            Queue::Any(_) => None,
        }
    }

    /// How many times the writer's connection prepared `sql` again (SQLite).
    #[cfg(test)]
    pub(super) fn reprepared(&self, sql: &str) -> Option<i32> {
        match self.0.as_ref() {
            Queue::Lite(lite) => lite
                .conn
                .try_lock()
                .ok()?
                .prepare_cached(sql)
                .ok()
                .map(|stmt| stmt.get_status(rusqlite::StatementStatus::RePrepare)),
            Queue::Any(_) => None,
        }
    }

    /// [`Writer::mark`] for several statements, queued together so that
    /// they share a batch: on SQLite a caller commits what is waiting the
    /// moment it queues, so marks queued one by one were a transaction
    /// each. The rows they changed, together.
    pub(super) async fn marks(&self, qs: Vec<Query>) -> Result<u64, StoreError> {
        let answers = self
            .write_all(qs.into_iter().map(Write::Mark).collect())
            .await?;
        Ok(answers
            .iter()
            .map(|a| match a {
                Applied::Changed(n) => *n,
                Applied::Commit(_) | Applied::Look(_) => 0,
            })
            .sum())
    }

    /// Writes `marks`, then looks, in the same transaction, at the
    /// messages waiting in the outbox: when the earliest is due, if any.
    /// Finding only a few, none of them waiting for a later try, the
    /// writer hands them to [`Undelivered`], and every later commit's
    /// messages after them, before it starts another transaction, so no
    /// commit falls between the look and the switch.
    pub(super) async fn settle(&self, marks: Vec<Query>) -> Result<Option<i64>, StoreError> {
        let mut writes: Vec<Write> = marks.into_iter().map(Write::Mark).collect();
        writes.push(Write::Settle);
        match self.write_all(writes).await?.pop() {
            Some(Applied::Look(outbox::Look::Next(next))) => Ok(next),
            _ => Err(StoreError::Db("a settle gave no answer".into())),
        }
    }

    /// Queues `writes` at once and waits for all of them: their answers.
    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let mut answers = Vec::with_capacity(writes.len());
        let jobs = writes.into_iter().map(|write| {
            let (done, answer) = oneshot::channel();
            answers.push(answer);
            Job { write, done }
        });
        match self.0.as_ref() {
            Queue::Lite(lite) => {
                lock(&lite.waiting).extend(jobs);
                lite.drain();
            }
            Queue::Any(queue) => {
                for job in jobs {
                    queue.send(job).map_err(|_| stopped())?;
                }
            }
        }
        let mut done = Vec::with_capacity(answers.len());
        for answer in answers {
            done.push(answer.await.map_err(|_| stopped())??);
        }
        Ok(done)
    }
}

/// The writer went away (its runtime is shutting down): nothing of this
/// write was done, and trying again later is right.
fn stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

/// Why a batch did not commit.
enum Failure {
    /// The `usize`th write's own statements failed.
    One(usize, StoreError),
    /// Starting or committing the transaction failed.
    All(StoreError),
    /// A statement written for the whole batch failed (`grouped`): which
    /// write caused it shows when the batch is written one by one.
    Grouped(StoreError),
}

/// The connection a writer commits through.
enum Via<'a> {
    /// The SQLite writer's own.
    Lite(&'a mut rusqlite::Connection),
    /// One from the PostgreSQL pool per transaction.
    Any(&'a sqlx::AnyPool),
}

/// Commits `batch` through `via` (one transaction each try), answering
/// every job. A job whose own statements fail is answered with that error
/// and the rest are tried again without it.
async fn commit_batch(mut via: Via<'_>, mut batch: Vec<Job>, shared: &Shared) {
    // Only PostgreSQL pays a round trip per statement.
    let mut grouped = matches!(via, Via::Any(_));
    while !batch.is_empty() {
        let attempt = match &mut via {
            Via::Lite(conn) => lite_batch(conn, &batch, &shared.usage).await,
            Via::Any(pool) => any_batch(pool, &batch, &shared.usage, grouped).await,
        };
        match attempt {
            Ok(applied) => {
                // In batch order, before the next transaction (SQLite: with
                // the connection still held).
                for (job, applied) in batch.into_iter().zip(applied) {
                    if let (Applied::Commit(written), Write::Commit(c)) = (&applied, &job.write) {
                        shared
                            .undelivered
                            .committed(&written.ids, &c.messages, c.audit.at_ms);
                        if let Some(kv) = &c.kv {
                            shared
                                .kv
                                .committed(&kv.namespace, &kv.writes, written.stamp);
                        }
                    }
                    let applied = match applied {
                        Applied::Look(outbox::Look::All(waiting)) => {
                            let next = (!waiting.is_empty()).then_some(0);
                            shared.undelivered.settled(waiting);
                            Applied::Look(outbox::Look::Next(next))
                        }
                        other => other,
                    };
                    let _ = job.done.send(Ok(applied));
                }
                return;
            }
            Err(Failure::One(i, e)) if batch.len() > 1 && i < batch.len() => {
                let job = batch.remove(i);
                let _ = job.done.send(Err(e));
            }
            Err(Failure::Grouped(_)) if grouped => grouped = false,
            Err(Failure::One(_, e) | Failure::All(e) | Failure::Grouped(e)) => {
                for job in batch {
                    let _ = job.done.send(Err(copy(&e)));
                }
                return;
            }
        }
    }
}

/// Applies every write of `batch` inside the open transaction on `conn`;
/// `grouped`: the rows every commit has go in one statement per table
/// for the whole batch (see `grouped`).
async fn apply_all(
    conn: &mut Conn<'_>,
    batch: &[Job],
    usage: &kv::Usage,
    grouped: bool,
) -> Result<Vec<Applied>, Failure> {
    let commits = commits_of(batch);
    let (rows, mut ids) = if grouped && !commits.is_empty() {
        let ids = grouped::insert(conn, &commits)
            .await
            .map_err(grouped_failed)?;
        (commit::Rows::Own, ids.into_iter())
    } else {
        (commit::Rows::All, Vec::new().into_iter())
    };
    let mut applied = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter().enumerate() {
        let result = match &job.write {
            Write::Commit(c) => match commit::apply(conn, c, usage, rows).await {
                Ok(own) if rows == commit::Rows::All => Ok(Applied::Commit(own)),
                Ok(own) => Ok(Applied::Commit(commit::Written {
                    ids: ids.by_ref().take(c.messages.len()).collect(),
                    ..own
                })),
                Err(e) => Err(e),
            },
            Write::Mark(q) => q.execute(conn).await.map(Applied::Changed),
            Write::Settle => outbox::look(conn).await.map(Applied::Look),
        };
        match result {
            Ok(a) => applied.push(a),
            Err(e) if e.is_unavailable() => return Err(Failure::All(e)),
            Err(e) => return Err(Failure::One(i, e)),
        }
    }
    Ok(applied)
}

/// The commits of `batch`, in its order.
fn commits_of(batch: &[Job]) -> Vec<&Commit> {
    batch
        .iter()
        .filter_map(|job| match &job.write {
            Write::Commit(c) => Some(c.as_ref()),
            Write::Mark(_) | Write::Settle => None,
        })
        .collect()
}

/// A failure of `grouped`'s statement: which commit caused it shows when
/// the batch is written commit by commit, unless the database is away.
fn grouped_failed(e: StoreError) -> Failure {
    if e.is_unavailable() {
        Failure::All(e)
    } else {
        Failure::Grouped(e)
    }
}

/// One try of a batch on SQLite. `BEGIN IMMEDIATE` takes the write lock
/// first, so another connection's write makes this wait (busy timeout)
/// rather than fail halfway.
async fn lite_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Job],
    usage: &kv::Usage,
) -> Result<Vec<Applied>, Failure> {
    let control = |conn: &mut rusqlite::Connection, sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.raw_execute())
            .map_err(super::sql::classify)
    };
    control(conn, "BEGIN IMMEDIATE").map_err(Failure::All)?;
    let applied = apply_all(&mut Conn::Lite(conn), batch, usage, false).await;
    let ended = match &applied {
        Ok(_) => control(conn, "COMMIT").map(|_| ()).map_err(Failure::All),
        Err(_) => Ok(()),
    };
    if applied.is_err() || ended.is_err() {
        // Nothing of the batch stays; a failed COMMIT can leave it open.
        let _ = control(conn, "ROLLBACK");
    }
    ended?;
    applied
}

/// One try of a batch on PostgreSQL, serializable like every write.
async fn any_batch(
    pool: &sqlx::AnyPool,
    batch: &[Job],
    usage: &kv::Usage,
    grouped: bool,
) -> Result<Vec<Applied>, Failure> {
    let commits = commits_of(batch);
    if grouped && commits.len() == batch.len() && commits.iter().all(|c| grouped::only_rows(c)) {
        return rows_alone(pool, &commits).await;
    }
    let lazy = commits.is_empty();
    let mut tx = begin(pool, lazy).await.map_err(Failure::All)?;
    // Dropping the transaction on an error rolls it back.
    let changed = apply_all(&mut Conn::Any(&mut tx), batch, usage, grouped).await?;
    tx.commit()
        .await
        .map_err(|e| Failure::All(super::classify(e)))?;
    Ok(changed)
}

/// A batch of commits that write only `grouped`'s rows, on PostgreSQL:
/// that one statement, committed on its own, so one round trip instead of
/// a transaction's three. It reads nothing it depends on, so it needs no
/// isolation, and like the transaction it replaces it writes all or
/// nothing (its failure sends the batch the careful way).
async fn rows_alone(pool: &sqlx::AnyPool, commits: &[&Commit]) -> Result<Vec<Applied>, Failure> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Failure::All(super::classify(e)))?;
    let ids = grouped::insert(&mut Conn::Any(&mut conn), commits)
        .await
        .map_err(grouped_failed)?;
    let mut ids = ids.into_iter();
    Ok(commits
        .iter()
        .map(|c| {
            Applied::Commit(commit::Written {
                ids: ids.by_ref().take(c.messages.len()).collect(),
                stamp: 0,
            })
        })
        .collect())
}

/// Starts a serializable PostgreSQL transaction in one round trip: the
/// isolation level comes with the BEGIN, and so, for a batch of only
/// [`Writer::mark`]s (`lazy`), that its commit is not waited to be on disk.
async fn begin(
    pool: &sqlx::AnyPool,
    lazy: bool,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    Ok(pool
        .begin_with(if lazy {
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL synchronous_commit TO OFF"
        } else {
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
        })
        .await?)
}

/// Each caller gets its own copy of a shared failure: a database error
/// cannot be cloned, so a copy keeps its kind and its text.
fn copy(e: &StoreError) -> StoreError {
    let text = || -> super::Cause { e.to_string().into() };
    match e {
        StoreError::Duplicate(id) => StoreError::Duplicate(id.clone()),
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Refused(_) => StoreError::Refused(text()),
        StoreError::Unavailable(_) => StoreError::Unavailable(text()),
        StoreError::Full {
            plugin,
            used,
            quota,
        } => StoreError::Full {
            plugin: plugin.clone(),
            used: *used,
            quota: *quota,
        },
        StoreError::Db(_) | StoreError::Migrate(_) => StoreError::Db(text()),
    }
}
