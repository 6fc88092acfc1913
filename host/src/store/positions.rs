//! How far each chat adapter has read its network's message stream.

use sqlx::Row;

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
    pub async fn save_chat_position(
        &self,
        adapter: &str,
        position: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO chat_positions (adapter, position, saved_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (adapter) DO UPDATE SET position = excluded.position, saved_ms = excluded.saved_ms",
        )
        .bind(adapter)
        .bind(position)
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
