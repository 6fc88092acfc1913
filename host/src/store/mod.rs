//! The database: the only place host state lives, on SQLite or PostgreSQL.
//!
//! Every query is written once, in SQL both backends accept (`sql` binds
//! it to either): on PostgreSQL through sqlx's `Any` driver, on SQLite the
//! hot path's reads and every commit call SQLite directly on the writer's
//! connection, while the rest runs through sqlx. The backends differ in
//! their migration folders, in how a write transaction starts and in the
//! PostgreSQL-only grouped statements (`grouped`). Nothing outside this
//! module writes SQL. State is kept here rather than in memory so a restart
//! loses nothing and, later, several replicas can share one database; what
//! is kept in memory (`roles`, `kv_copy`, `undelivered`) is a copy the
//! database can always replace.

mod audit;
mod backlog;
mod checkpoint;
mod commit;
mod events;
mod grouped;
mod http;
mod jobs;
mod kv;
mod kv_copy;
mod outbox;
mod pending;
mod positions;
mod retention;
mod roles;
mod schedules;
mod sql;
mod undelivered;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEntry, AuditRecord, Decision, Outcome};
pub use backlog::Backlog;
pub use commit::{Commit, DeliveryUpdate, NewEvent, RoleChange};
pub use events::PendingDelivery;
pub use http::{NewSend, PendingSend, SendUpdate};
pub use jobs::{JobChange, JobEnd, JobState, NewJob, StoredJob};
pub use kv::{KvChanges, KvReads, KvRow, MAX_SCAN_ROWS, scan_digest};
pub use outbox::{DUE_AT_MOST as OUTBOX_DUE_AT_MOST, Edit, OutMessage, PendingMessage, Target};
pub use retention::{Cutoffs, Pruned};
pub use schedules::{Fired, LastRun, ScheduleChange, ScheduleRow};

/// What the database (or its client) said, as text and a source chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a database operation failed, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message was already processed; the caller must do nothing.
    #[error("message {0:?} was already processed")]
    Duplicate(String),
    /// Data the call read changed before it could commit; run it again.
    #[error("a concurrent change touched the same data; retry")]
    Conflict,
    /// The database refused what was in the commit (a value it cannot
    /// store, a limit exceeded): the same commit will always fail, so the
    /// caller records a minimal outcome instead of retrying.
    #[error("the database refused the data: {0}")]
    Refused(Cause),
    /// The database cannot be reached or is shutting down: nothing was
    /// written, and the same commit may succeed in a moment.
    #[error("the database is unavailable: {0}")]
    Unavailable(Cause),
    /// The plugin's kv namespace would grow past its quota: nothing was
    /// written, and the same commit will always fail.
    #[error(
        "{plugin}'s storage is full: it holds {}, and this would take it past its {} quota \
         (kv_quota_mb under [plugins.{plugin}]); an admin can raise the quota, or the plugin's \
         data can be removed with its own commands",
        crate::text::size(*used), crate::text::size(*quota)
    )]
    Full {
        /// The namespace.
        plugin: String,
        /// Bytes it holds.
        used: u64,
        /// Bytes it may hold.
        quota: u64,
    },
    /// Anything else the database said.
    #[error("database error: {0}")]
    Db(Cause),
    /// A migration could not be applied.
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database is behind the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file: the embedded default.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    /// Reads during plugin calls; many at once.
    read: AnyPool,
    /// Transactions. On SQLite this pool has one connection, which makes
    /// writers take turns inside the process instead of failing with
    /// SQLITE_BUSY; on PostgreSQL it is the same pool as `read`.
    write: AnyPool,
    /// Signalled after every commit that left something to deliver
    /// (messages, events), whoever made it: the delivery loop waits on it.
    deliverable: std::sync::Arc<tokio::sync::Notify>,
    /// Signalled after every commit that left HTTP requests to send.
    sendable: std::sync::Arc<tokio::sync::Notify>,
    /// Signalled after every commit that queued or cancelled a job.
    runnable: std::sync::Arc<tokio::sync::Notify>,
    /// Signalled after every commit that added, changed or removed a
    /// schedule.
    rescheduled: std::sync::Arc<tokio::sync::Notify>,
    /// Commits go through it, many to a transaction.
    writer: writer::Writer,
    /// Which kinds of after-commit work may be waiting.
    waiting: std::sync::Arc<Waiting>,
    /// The roles granted in chat, as last read.
    roles: roles::Cached,
    /// The outbox's waiting messages while all are known in memory, and
    /// delivered marks not yet written.
    undelivered: std::sync::Arc<undelivered::Undelivered>,
    /// Plugin kv entries as last read or written here.
    kv_copy: kv_copy::Copies,
}

/// A kind of work commits leave to be done after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Messages in the outbox.
    Messages,
    /// Event deliveries.
    Deliveries,
    /// HTTP sends.
    Sends,
}

#[derive(Debug, Default)]
struct Waiting {
    messages: pending::Pending,
    deliveries: pending::Pending,
    sends: pending::Pending,
}

impl Waiting {
    fn of(&self, work: Work) -> &pending::Pending {
        match work {
            Work::Messages => &self.messages,
            Work::Deliveries => &self.deliveries,
            Work::Sends => &self.sends,
        }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) without
    /// migrating.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            let write = sqlite_pool(&url, 1).await?;
            let read = sqlite_pool(&url, 2).await?;
            let path = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                .get_filename()
                .to_path_buf();
            let shared = writer::Shared::default();
            let writer = writer::Writer::sqlite(&path, shared.clone())?;
            Ok(Self::with(Backend::Sqlite, read, write, writer, shared))
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                // A ping per acquire was a round trip more for every
                // transaction the writer starts; a connection that broke
                // fails its statement as unavailable, which is retried.
                .test_before_acquire(false)
                // Shorter than a plugin call's time limit, so a database that
                // is away is reported as that, not as a plugin timing out.
                .acquire_timeout(Duration::from_secs(3))
                .connect(url)
                .await?;
            let shared = writer::Shared::default();
            let writer = writer::Writer::postgres(pool.clone(), shared.clone());
            Ok(Self::with(
                Backend::Postgres,
                pool.clone(),
                pool,
                writer,
                shared,
            ))
        }
    }

    /// A handle over the pools and the writer.
    fn with(
        backend: Backend,
        read: AnyPool,
        write: AnyPool,
        writer: writer::Writer,
        shared: writer::Shared,
    ) -> Self {
        Self {
            backend,
            read,
            write,
            deliverable: std::sync::Arc::default(),
            sendable: std::sync::Arc::default(),
            runnable: std::sync::Arc::default(),
            rescheduled: std::sync::Arc::default(),
            writer,
            waiting: std::sync::Arc::default(),
            roles: roles::Cached::default(),
            undelivered: shared.undelivered,
            kv_copy: shared.kv,
        }
    }

    /// Connects and applies every pending migration.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.write).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.write).await?,
        }
        Ok(())
    }

    /// Resolves after the next commit that left something to deliver (or
    /// at once if one happened since the last wait).
    pub async fn deliverable(&self) {
        self.deliverable.notified().await;
    }

    /// Marks the work `c` left and wakes whoever does it: after `c`
    /// committed.
    fn committed(&self, c: &Commit) {
        if !c.roles.is_empty() {
            self.roles.drop_copy();
        }
        let w = &self.waiting;
        if !c.messages.is_empty() {
            w.messages.mark();
        }
        if !c.events.is_empty() || c.job_end.is_some() || c.sent.is_some() {
            w.deliveries.mark();
        }
        if let Some(DeliveryUpdate::Failed { give_up: false, .. }) = &c.delivery {
            w.deliveries.retry_later();
        }
        if !c.sends.is_empty() {
            w.sends.mark();
        }
        if let Some(SendUpdate::Retry { .. }) = &c.sent {
            w.sends.retry_later();
        }
        if !c.messages.is_empty() || !c.events.is_empty() || c.delivery.is_some() {
            self.deliverable.notify_one();
        }
        if !c.sends.is_empty() {
            self.sendable.notify_one();
        }
        if !c.jobs.is_empty() {
            self.runnable.notify_one();
        }
        if !c.schedules.is_empty() {
            self.rescheduled.notify_one();
        }
    }

    /// Where a pass over `work` starts: `None` when no commit left any
    /// since a pass found none (so there is nothing to ask the database),
    /// otherwise the mark to hand to [`Db::none_due`] or [`Db::none_pending`].
    pub fn waiting(&self, work: Work) -> Option<u64> {
        self.waiting.of(work).look()
    }

    /// The pass over `work` that started at `seen` found nothing due now.
    /// While some of it may wait for a later try, every pass would look
    /// again, so this asks once whether any is pending at all: when none
    /// is, the commands after it skip the look (the console's flush has
    /// no delivery loop to ask for it).
    pub async fn none_due(&self, work: Work, seen: u64) -> Result<(), StoreError> {
        self.waiting.of(work).none_due(seen);
        self.next_due(work).await.map(drop)
    }

    /// The pass over `work` that started at `seen` found nothing pending,
    /// due or not.
    pub fn none_pending(&self, work: Work, seen: u64) {
        self.waiting.of(work).none_pending(seen);
    }

    /// When the earliest pending piece of `work` is due (ms since the
    /// epoch; none when nothing is pending), asked of the database only
    /// when a commit may have left some.
    pub async fn next_due(&self, work: Work) -> Result<Option<i64>, StoreError> {
        let Some(seen) = self.waiting(work) else {
            return Ok(None);
        };
        let due = match work {
            Work::Messages => self.outbox_next_attempt().await?,
            Work::Deliveries => self.deliveries_next_attempt().await?,
            Work::Sends => self.next_send_ms().await?,
        };
        if due.is_none() {
            self.none_pending(work, seen);
        }
        Ok(due)
    }

    /// `work` failed and waits for a later try.
    fn retry_later(&self, work: Work) {
        self.waiting.of(work).retry_later();
    }

    /// Resolves after the next commit that queued or cancelled a job (or at
    /// once if one happened since the last wait).
    pub async fn runnable(&self) {
        self.runnable.notified().await;
    }

    /// Resolves after the next commit that added, changed or removed a
    /// schedule (or at once if one happened since the last wait).
    pub async fn rescheduled(&self) {
        self.rescheduled.notified().await;
    }

    /// Resolves after the next commit that left HTTP requests to send (or
    /// at once if one happened since the last wait).
    pub async fn sendable(&self) {
        self.sendable.notified().await;
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One trivial statement on the write connection: the cost of a single
    /// database round trip, for health checks and benchmarks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.write).await?;
        Ok(())
    }

    /// Whether work with this processed marker was committed: what tells
    /// a repeated webhook delivery before its plugin runs (the marker in
    /// the commit is what guarantees it).
    pub async fn processed(&self, marker: &str) -> Result<bool, StoreError> {
        let found: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM processed_messages WHERE message_id = $1")
                .bind(marker)
                .fetch_one(&self.read)
                .await?;
        Ok(found > 0)
    }

    /// Writes what waits in memory and closes every connection.
    pub async fn close(&self) {
        if let Err(e) = self.write_marks().await {
            tracing::warn!("marking sent messages delivered before closing: {e}");
        }
        self.read.close().await;
        self.write.close().await;
    }

    /// Runs a read of the hot path, handing its rows to `each` until it
    /// says stop: on SQLite on this thread, through the writer's
    /// connection (see [`writer::Writer::read`]); on PostgreSQL with a
    /// pooled connection.
    async fn read_while(
        &self,
        q: &sql::Query,
        each: impl FnMut(sql::Row) -> Result<bool, StoreError> + Send,
    ) -> Result<(), StoreError> {
        use futures_util::FutureExt;
        match self.backend {
            Backend::Sqlite => {
                self.writer
                    .read(|conn| {
                        q.fetch_while(&mut sql::Conn::Lite(conn), each)
                            .now_or_never()
                            .unwrap_or_else(|| Err(StoreError::Db("an SQLite read waited".into())))
                    })
                    .await
            }
            Backend::Postgres => {
                let mut conn = self.read.acquire().await?;
                q.fetch_while(&mut sql::Conn::Any(&mut conn), each).await
            }
        }
    }

    /// Runs a read of the hot path that gives one row (an aggregate): its
    /// first column.
    async fn read_scalar<T: sql::Column>(&self, q: &sql::Query) -> Result<Option<T>, StoreError> {
        self.read_all(q)
            .await?
            .first()
            .map(|r| r.get(0))
            .transpose()
    }

    /// Runs a read of the hot path: every row.
    async fn read_all(&self, q: &sql::Query) -> Result<Vec<sql::Row>, StoreError> {
        let mut rows = Vec::new();
        self.read_while(q, |row| {
            rows.push(row);
            Ok(true)
        })
        .await?;
        Ok(rows)
    }
}

async fn sqlite_pool(url: &str, max: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(sql::SETTINGS).await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        classify(err)
    }
}

impl StoreError {
    /// Whether waiting and trying again can help: the database is away,
    /// not refusing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Whether an error, anywhere in its chain, is the database being
/// unavailable: the test every caller makes to tell "try again in a
/// moment" from a fault.
pub fn is_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_unavailable)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Classifies a database error into what callers act on: a conflict to
/// retry, data the database refuses (never retried), the database being
/// away (retried after a pause), or anything else.
fn classify(err: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &err {
        E::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            match code {
                // PostgreSQL serialization failure and deadlock; SQLite busy.
                "40001" | "40P01" | "5" | "517" => StoreError::Conflict,
                // PostgreSQL data exceptions (22021: NUL in text, 22001:
                // too long) and program limits (54000: index row too big);
                // SQLite's SQLITE_TOOBIG.
                c if c.starts_with("22") || c.starts_with("54") || c == "18" => {
                    StoreError::Refused(Box::new(err))
                }
                // Connection trouble, shutdown, too many connections,
                // read-only replica (a failover in progress); SQLite I/O,
                // full disk, cannot open.
                c if c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("53")
                    || c == "25006"
                    || matches!(c, "10" | "13" | "14") =>
                {
                    StoreError::Unavailable(Box::new(err))
                }
                _ => StoreError::Db(Box::new(err)),
            }
        }
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StoreError::Unavailable(Box::new(err))
        }
        E::Protocol(_) => StoreError::Unavailable(Box::new(err)),
        _ => StoreError::Db(Box::new(err)),
    }
}

#[cfg(test)]
mod hot_path_tests {
    use super::Db;

    /// A fresh SQLite database in a folder that lives as long as the guard.
    async fn sqlite() -> anyhow::Result<(tempfile::TempDir, Db)> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url).await?;
        Ok((dir, db))
    }

    /// SQLite prepares a statement again whenever a parameter its query
    /// plan looked at is bound anew, which costs more than running it. The
    /// reads every command makes must be prepared once per connection.
    #[tokio::test]
    async fn hot_reads_are_prepared_once() -> anyhow::Result<()> {
        let (_dir, db) = sqlite().await?;
        for now in 0..20 {
            db.outbox_due(now).await?;
            db.kv_scan("points", &format!("balance/{now}"), 1 << 20)
                .await?;
            db.kv_get("points", &format!("balance/{now}")).await?;
        }
        for q in [
            super::outbox::DUE,
            super::kv::SCAN_PREFIX,
            "SELECT value, version FROM plugin_kv WHERE plugin = $1 AND key = $2",
        ] {
            let again = db.writer.reprepared(q).unwrap_or_default();
            assert_eq!(again, 0, "{q} was prepared again {again} times");
        }
        Ok(())
    }

    /// Delivered marks wait in memory and go to the database together, in
    /// one transaction, at the latest when something reads the delivery
    /// state from it: no read finds a sent message still waiting.
    #[tokio::test]
    async fn sent_messages_are_marked_together_before_the_next_read() -> anyhow::Result<()> {
        let (_dir, db) = sqlite().await?;
        for i in 0..3 {
            db.commit(&points_commit(i)).await?;
        }
        let due = db.outbox_due(2_000).await?;
        assert_eq!(due.len(), 3);
        let before = db.writer.batches();
        for m in &due {
            db.outbox_delivered(2_000, &[(m.id, Some(format!("$e{}", m.id)))])
                .await?;
        }
        assert_eq!(db.writer.batches(), before, "no transaction per mark");
        assert!(db.outbox_due(2_000).await?.is_empty(), "all three marked");
        assert_eq!(db.writer.batches(), before.map(|n| n + 1), "one for all");
        Ok(())
    }

    /// Once the writer found the outbox empty, each commit's messages are
    /// handed over as it commits: a pass gets exactly the rows the
    /// database holds (ids, bodies, times) without reading them; a failed
    /// send sends passes back to the database.
    #[tokio::test]
    async fn after_the_outbox_settles_commits_hand_their_messages_over() -> anyhow::Result<()> {
        let (_dir, db) = sqlite().await?;
        assert_eq!(db.outbox_next_attempt().await?, None, "settles");
        for i in 0..3 {
            let mut c = points_commit(i);
            c.messages[0].body = format!("reply {i} with a NUL\0 and Кириллица");
            db.commit(&c).await?;
        }
        let held = db.undelivered.due(10).unwrap_or_default();
        let stored: Vec<super::PendingMessage> = db
            .read_all(&super::sql::query(super::outbox::DUE).bind(2_000))
            .await?
            .iter()
            .map(super::outbox::pending_of)
            .collect::<Result<_, _>>()?;
        assert_eq!(held.len(), 3);
        assert_eq!(format!("{held:?}"), format!("{stored:?}"));
        db.outbox_failed(held[0].id, "connection reset", 2_000, Some(9_000))
            .await?;
        assert!(db.undelivered.due(10).is_none(), "the database again");
        assert_eq!(db.outbox_next_attempt().await?, Some(0), "two are due now");
        Ok(())
    }

    /// Under steady load some reply is always between its commit and its
    /// mark, so the outbox is never found empty: the writer's look takes
    /// the few waiting messages into memory, later commits follow them,
    /// and a pass gets exactly the rows the database holds. With more
    /// than memory takes, passes keep reading the database.
    #[tokio::test]
    async fn a_busy_outbox_is_taken_into_memory() -> anyhow::Result<()> {
        let (_dir, db) = sqlite().await?;
        let stored = async |db: &Db| -> anyhow::Result<Vec<super::PendingMessage>> {
            Ok(db
                .read_all(&super::sql::query(super::outbox::DUE).bind(9_000))
                .await?
                .iter()
                .map(super::outbox::pending_of)
                .collect::<Result<_, _>>()?)
        };
        for i in 0..3 {
            db.commit(&points_commit(i)).await?;
        }
        assert!(db.undelivered.due(10).is_none(), "not looked at yet");
        assert_eq!(db.outbox_next_attempt().await?, Some(0), "three wait");
        for i in 3..5 {
            db.commit(&points_commit(i)).await?;
        }
        let held = db.undelivered.due(10).unwrap_or_default();
        assert_eq!(held.len(), 5);
        assert_eq!(format!("{held:?}"), format!("{:?}", stored(&db).await?));

        let (_dir, db) = sqlite().await?;
        let many = super::undelivered::KNOWN_AT_MOST as i64 + 1;
        for i in 0..many {
            db.commit(&points_commit(i)).await?;
        }
        assert_eq!(db.outbox_next_attempt().await?, Some(0));
        assert!(db.undelivered.due(10).is_none(), "too many to take");
        Ok(())
    }

    /// What a `!points` command commits: its marker, reply and record.
    fn points_commit(i: i64) -> super::Commit {
        use super::{AuditRecord, Commit, Decision, OutMessage, Outcome, Target};
        let audit = AuditRecord {
            at_ms: 1_000 + i,
            kind: "command",
            actor: format!("@u{i}:local"),
            room: Some("!r:local".into()),
            command: "points".into(),
            plugin: Some("points".into()),
            plugin_version: Some("1".into()),
            decision: Decision::NotChecked,
            outcome: Outcome::Ok,
            detail: None,
            duration_us: i,
        };
        let reply = OutMessage::to(Target::Room("!r:local".into()), format!("reply {i}"));
        Commit::only_audit(Some(format!("$m{i}")), audit, vec![reply])
    }

    /// The same for what every command writes.
    #[tokio::test]
    async fn hot_writes_are_prepared_once() -> anyhow::Result<()> {
        let (_dir, db) = sqlite().await?;
        for i in 0..20 {
            db.commit(&points_commit(i)).await?;
            for head in db.outbox_due(2_000 + i).await? {
                db.outbox_delivered(2_000 + i, &[(head.id, Some("$e".into()))])
                    .await?;
            }
        }
        for q in [
            super::commit::PROCESSED,
            super::outbox::INSERT,
            super::outbox::DELIVERED,
            super::audit::INSERT,
        ] {
            let again = db.writer.reprepared(q).unwrap_or_default();
            assert_eq!(again, 0, "{q} was prepared again {again} times");
        }
        Ok(())
    }

    /// Commands do not checkpoint the WAL on every thousand pages, yet it
    /// is copied into the file as they commit and then reused, so it stays
    /// bounded. Without the checkpoint thread and the writer's own catch-up,
    /// 3,000 commits take it past 100 MB.
    #[tokio::test]
    async fn the_wal_is_checkpointed_while_commands_commit() -> anyhow::Result<()> {
        wal_stays_bounded(None).await
    }

    /// The same bound holds when the checkpoint thread never gets to run,
    /// as on a loaded machine.
    #[tokio::test]
    async fn the_wal_stays_bounded_when_the_checkpoint_thread_never_runs() -> anyhow::Result<()> {
        wal_stays_bounded(Some(0)).await
    }

    /// And when the thread is checkpointing much of the time (woken every
    /// fourth batch). A writer that gave up on finding a thread pass under
    /// way let the WAL reach 68 MB in a CI run on two busy cores, and 150 MB
    /// here.
    #[tokio::test]
    async fn the_wal_stays_bounded_when_the_checkpoint_thread_is_always_busy() -> anyhow::Result<()>
    {
        wal_stays_bounded(Some(4)).await
    }

    /// `wake_every`: how often the checkpoint thread is woken, if not as
    /// usual.
    async fn wal_stays_bounded(wake_every: Option<u32>) -> anyhow::Result<()> {
        let (dir, db) = sqlite().await?;
        if let Some(batches) = wake_every {
            db.writer.wake_checkpoints_every(batches);
        }
        for i in 0..3_000 {
            db.commit(&points_commit(i)).await?;
            for head in db.outbox_due(5_000 + i).await? {
                db.outbox_delivered(5_000 + i, &[(head.id, Some("$e".into()))])
                    .await?;
            }
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))?.len();
        assert!(wal < 32 << 20, "the WAL grew to {wal} bytes");
        let file = std::fs::metadata(dir.path().join("t.db"))?.len();
        assert!(
            file > 256 << 10,
            "nothing was copied into the file ({file} bytes)"
        );
        Ok(())
    }
}
