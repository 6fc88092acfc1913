//! SQLite's WAL copied back into the database file off the command path.
//!
//! SQLite checkpoints by itself in the connection that commits, right after
//! the commit that took the WAL past 1,000 pages: that command waits while
//! the WAL is flushed, copied into the file and the file flushed. With a
//! dozen pages per command that is one command in forty, and it was the
//! whole p99 of `!points` (3 ms against a p50 of 60 µs). So the writer's
//! connection does not checkpoint on its own; every [`EVERY`] batches it
//! wakes a thread of ours that copies the WAL into the file from a
//! connection of its own, alongside the writer (`PASSIVE` never takes the
//! write lock).
//!
//! The WAL starts over from its beginning only when a write begins with
//! all of it copied, which a thread racing a busy writer seldom sees. So
//! once the WAL passes [`LIMIT`] pages the writer catches it up itself,
//! between two batches: what is left is the few pages since the thread's
//! last pass and two flushes, once in about three hundred commands
//! instead of a whole checkpoint once in forty. The WAL stays under about
//! `LIMIT` pages (16 MiB).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;

use super::StoreError;

/// Batches between two wake-ups of the checkpoint thread.
const EVERY: u32 = 32;

/// WAL pages past which the writer catches the WAL up itself, so that it
/// starts over: four times SQLite's own threshold.
const LIMIT: i64 = 4_000;

/// The writer's side: counts batches, wakes the thread, and says when the
/// writer must checkpoint itself.
#[derive(Debug)]
pub(super) struct Checkpoints {
    wake: mpsc::SyncSender<()>,
    batches: AtomicU32,
    behind: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Starts the checkpoint thread for the SQLite file at `path`. It ends
    /// when this is dropped.
    pub(super) fn start(path: PathBuf) -> Result<Self, StoreError> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let behind = Arc::new(AtomicBool::new(false));
        let flag = behind.clone();
        std::thread::Builder::new()
            .name("ikkyu-checkpoint".into())
            .spawn(move || run(&path, &woken, &flag))
            .map_err(|e| StoreError::Db(Box::new(e)))?;
        Ok(Self {
            wake,
            batches: AtomicU32::new(0),
            behind,
        })
    }

    /// The writer committed a batch: whether it must catch the WAL up now
    /// (see the module's comment).
    pub(super) fn committed(&self) -> bool {
        if self.batches.fetch_add(1, Ordering::Relaxed) % EVERY == EVERY - 1 {
            // Already woken and not yet running is as good as woken again.
            let _ = self.wake.try_send(());
        }
        self.behind.swap(false, Ordering::Relaxed)
    }
}

/// Turns automatic checkpoints off on the writer's connection.
pub(super) fn manual(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .map_err(super::sql::classify)
}

/// Copies what it can of the WAL into the file, without waiting for the
/// writer or readers: the WAL's size in pages after it.
pub(super) fn passive(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    })
    .map_err(super::sql::classify)
}

fn run(path: &std::path::Path, woken: &mpsc::Receiver<()>, behind: &AtomicBool) {
    let mut conn = None;
    while woken.recv().is_ok() {
        if conn.is_none() {
            conn = super::sql::open(path)
                .inspect_err(|e| tracing::warn!("opening the database to checkpoint it: {e}"))
                .ok();
        }
        let Some(c) = &conn else { continue };
        match passive(c) {
            Ok(pages) => behind.store(pages > LIMIT, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!("checkpointing the database: {e}; the writer will");
                behind.store(true, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}
