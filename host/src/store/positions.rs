//! How far each chat adapter has read its network's message stream.

use sqlx::Row;

use super::sql::query;
use super::{Db, StoreError};

impl Db {
    /// The saved position of `adapter` and when it was saved, or none
    /// before its first save.
    pub async fn chat_position(&self, adapter: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT position, saved_ms FROM chat_positions WHERE adapter = $1")
            .bind(adapter)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Saves `adapter`'s position; call it only once everything read before
    /// it is committed, or a crash would lose those messages.
    ///
    /// Saved as a writer mark, with whatever else is waiting and on SQLite
    /// without a thread hop (this runs after every sync response): a save
    /// lost in a crash only means reading again from the position before,
    /// and every command read again is known by its committed marker.
    pub async fn save_chat_position(
        &self,
        adapter: &str,
        position: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let q = query(
            "INSERT INTO chat_positions (adapter, position, saved_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (adapter) DO UPDATE SET position = excluded.position, saved_ms = excluded.saved_ms",
        )
        .bind(adapter)
        .bind(position)
        .bind(now_ms);
        self.writer.mark(q).await?;
        Ok(())
    }
}
