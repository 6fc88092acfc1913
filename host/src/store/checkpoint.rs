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
//!
//! The writer learns the WAL's size from SQLite itself (its WAL hook,
//! called at the end of each of the writer's commits), and when it must
//! catch up it waits for its turn: the thread and the writer checkpoint
//! one at a time. A checkpoint that finds another under way gives up at
//! once (SQLite's checkpoint lock does not wait), so a writer trying
//! beside a slow thread pass gave up batch after batch while the WAL kept
//! growing; on two busy cores it reached 68 MB. Waiting for the thread's
//! pass costs the writer at most that pass, once in a few hundred
//! commands, and the bound then holds however the threads are scheduled.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::StoreError;
use super::writer::lock;

/// Batches between two wake-ups of the checkpoint thread.
const EVERY: u32 = 32;

/// WAL pages past which the writer catches the WAL up itself, so that it
/// starts over: four times SQLite's own threshold.
const LIMIT: i64 = 4_000;

thread_local! {
    /// The WAL's size in pages after the last commit made on this thread
    /// by a connection with [`count`] as its hook. The SQLite writer is
    /// whichever caller finds the connection free, and it reads this right
    /// after its batch, on the same thread, before anything else commits
    /// there.
    static PAGES: Cell<i32> = const { Cell::new(0) };
}

/// SQLite's WAL hook on the writer's connection. A plain function (that is
/// what rusqlite takes), so it reports through [`PAGES`].
fn count(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    PAGES.set(pages);
    Ok(())
}

/// The writer's side: counts batches, wakes the thread, and catches the
/// WAL up when it is long.
#[derive(Debug)]
pub(super) struct Checkpoints {
    wake: mpsc::SyncSender<()>,
    batches: AtomicU32,
    /// Held by whoever checkpoints: the thread or the writer.
    turn: Arc<Mutex<()>>,
    /// Batches between two wake-ups of the thread: [`EVERY`], or what a
    /// test sets (0: never, a thread that never gets to run).
    every: AtomicU32,
}

impl Checkpoints {
    /// Starts the checkpoint thread for the SQLite file at `path`. It ends
    /// when this is dropped.
    pub(super) fn start(path: PathBuf) -> Result<Self, StoreError> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let turn = Arc::new(Mutex::new(()));
        let theirs = turn.clone();
        std::thread::Builder::new()
            .name("ikkyu-checkpoint".into())
            .spawn(move || run(&path, &woken, &theirs))
            .map_err(|e| StoreError::Db(Box::new(e)))?;
        Ok(Self {
            wake,
            batches: AtomicU32::new(0),
            turn,
            every: AtomicU32::new(EVERY),
        })
    }

    /// From now on the thread is woken every `batches` batches, or never
    /// (0), as on a machine too busy to schedule it.
    #[cfg(test)]
    pub(super) fn wake_every(&self, batches: u32) {
        self.every.store(batches, Ordering::Relaxed);
    }

    /// Batches the writer committed so far.
    #[cfg(test)]
    pub(super) fn batches(&self) -> u32 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The writer committed a batch through `conn` on this thread: wakes
    /// the thread every [`EVERY`] batches, and catches the WAL up past
    /// [`LIMIT`] pages, after any thread pass under way.
    pub(super) fn committed(&self, conn: &rusqlite::Connection) {
        let every = self.every.load(Ordering::Relaxed);
        if every > 0 && self.batches.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            // Already woken and not yet running is as good as woken again.
            let _ = self.wake.try_send(());
        }
        if i64::from(PAGES.take()) > LIMIT {
            let _turn = lock(&self.turn);
            if let Err(e) = passive(conn) {
                tracing::warn!("checkpointing the database: {e}");
            }
        }
    }
}

/// Turns automatic checkpoints off on the writer's connection and has it
/// report the WAL's size after each commit. In this order: the pragma
/// replaces the connection's WAL hook.
pub(super) fn manual(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .map_err(super::sql::classify)?;
    conn.wal_hook(Some(count));
    Ok(())
}

/// Copies what it can of the WAL into the file, without waiting for the
/// writer or readers.
fn passive(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .map_err(super::sql::classify)
}

fn run(path: &std::path::Path, woken: &mpsc::Receiver<()>, turn: &Mutex<()>) {
    let mut conn = None;
    while woken.recv().is_ok() {
        if conn.is_none() {
            conn = super::sql::open(path)
                .inspect_err(|e| tracing::warn!("opening the database to checkpoint it: {e}"))
                .ok();
        }
        let Some(c) = &conn else { continue };
        let _turn = lock(turn);
        if let Err(e) = passive(c) {
            tracing::warn!("checkpointing the database: {e}; the writer will once the WAL is long");
            conn = None;
        }
    }
}
