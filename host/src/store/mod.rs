//! The database: the only place host state lives, on SQLite or PostgreSQL.
//!
//! Every query is written once, in SQL both backends accept, and runs
//! through sqlx's `Any` driver; the backends differ only in their migration
//! folders and in how a write transaction starts. Nothing outside this
//! module writes SQL. State is kept here rather than in memory so a restart
//! loses nothing and, later, several replicas can share one database.

mod audit;
mod commit;
mod events;
mod kv;
mod outbox;
mod positions;
mod roles;
mod schedules;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEntry, AuditRecord, Decision, Outcome};
pub use commit::{Commit, DeliveryUpdate, NewEvent, RoleChange};
pub use events::PendingDelivery;
pub use kv::{KvChanges, KvReads, KvRow, scan_digest};
pub use outbox::{OutMessage, PendingMessage, Target};
pub use schedules::{Fired, LastRun, ScheduleChange, ScheduleRow};

/// Why a database operation failed, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message was already processed; the caller must do nothing.
    #[error("message {0:?} was already processed")]
    Duplicate(String),
    /// Data the call read changed before it could commit; run it again.
    #[error("a concurrent change touched the same data; retry")]
    Conflict,
    /// Anything else the database said.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
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
            let read = sqlite_pool(&url, 8).await?;
            Ok(Self {
                backend: Backend::Sqlite,
                read,
                write,
            })
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Self {
                backend: Backend::Postgres,
                read: pool.clone(),
                write: pool,
            })
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

    /// Closes every connection; used before a restart in tests.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// Starts a write transaction that is serializable on both backends.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.write.begin().await?;
        if self.backend == Backend::Postgres {
            tx.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                .await?;
        }
        Ok(tx)
    }
}

async fn sqlite_pool(url: &str, max: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL lets readers run while a writer commits; NORMAL sync is
                // durable across process crashes (the case that matters for
                // "never lose a command") and much faster than FULL.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Classifies a database error: unique violations and serialization
/// failures become the errors callers handle, the rest stay database errors.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        // 40001: PostgreSQL serialization failure; 5/517: SQLite busy.
        if matches!(db.code().as_deref(), Some("40001" | "5" | "517")) {
            return StoreError::Conflict;
        }
    }
    StoreError::Db(err)
}
