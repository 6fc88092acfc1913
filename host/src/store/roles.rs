//! Roles granted in chat. The config's roles are merged in by the caller;
//! they are never copied into the database, so removing a line from the
//! config really removes the role.
//!
//! Every command asks who holds which role, so the table (a handful of
//! rows) is kept in memory: dropped by every commit of this process that
//! grants or revokes, so a grant counts from the next command, and read
//! again after [`FRESH_FOR`] at most, so another process's grants count
//! within that.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Row;

use super::{Db, StoreError};

/// How long a copy of the table is trusted without a grant of ours.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// (user, role) pairs, sorted by user.
type Grants = Arc<Vec<(String, String)>>;

/// The table as last read.
#[derive(Debug, Default, Clone)]
pub(super) struct Cached(Arc<Mutex<Copy>>);

#[derive(Debug, Default)]
struct Copy {
    /// Counts grants and revokes committed here; a read that began before
    /// one is not kept.
    generation: u64,
    rows: Option<(Instant, Grants)>,
}

impl Cached {
    fn lock(&self) -> std::sync::MutexGuard<'_, Copy> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copy if it is fresh, else the generation a new read starts at.
    fn get(&self) -> Result<Grants, u64> {
        let copy = self.lock();
        copy.rows
            .as_ref()
            .filter(|(read, _)| read.elapsed() < FRESH_FOR)
            .map(|(_, rows)| rows.clone())
            .ok_or(copy.generation)
    }

    fn put(&self, generation: u64, read: Instant, rows: Grants) {
        let mut copy = self.lock();
        if copy.generation == generation {
            copy.rows = Some((read, rows));
        }
    }

    /// A grant or revoke committed: the copy is stale.
    pub(super) fn drop_copy(&self) {
        let mut copy = self.lock();
        copy.generation += 1;
        copy.rows = None;
    }
}

impl Db {
    /// Roles granted to `user` in chat.
    pub async fn roles_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .roles_all()
            .await?
            .into_iter()
            .filter(|(u, _)| u == user)
            .map(|(_, role)| role)
            .collect())
    }

    /// Every role granted in chat, as (user, role) pairs sorted by user.
    pub async fn roles_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let generation = match self.roles.get() {
            Ok(rows) => return Ok(rows.as_ref().clone()),
            Err(generation) => generation,
        };
        let read = Instant::now();
        let rows = sqlx::query("SELECT user_id, role FROM roles ORDER BY user_id, role")
            .fetch_all(&self.read)
            .await?;
        let rows: Grants = Arc::new(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect());
        self.roles.put(generation, read, rows.clone());
        Ok(rows.as_ref().clone())
    }
}
