//! Roles granted in chat. The config's roles are merged in by the caller;
//! they are never copied into the database, so removing a line from the
//! config really removes the role.

use sqlx::Row;

use super::{Db, StoreError};

impl Db {
    /// Roles granted to `user` in chat.
    pub async fn roles_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT role FROM roles WHERE user_id = $1 ORDER BY role")
                .bind(user)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Every role granted in chat, as (user, role) pairs.
    pub async fn roles_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT user_id, role FROM roles ORDER BY user_id, role")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
