//! Emitted events and their per-subscriber deliveries.

use sqlx::Row;

use super::sql::query;
use super::{Db, StoreError};

/// An event waiting to be handled by one subscriber.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    /// The event.
    pub event_id: i64,
    /// The subscriber to deliver to.
    pub plugin: String,
    /// The event's topic.
    pub topic: String,
    /// Its JSON payload.
    pub payload: String,
    /// Who emitted it.
    pub source_plugin: String,
    /// How many event handlers led to it.
    pub depth: i64,
    /// The first event of its chain (itself, for a first event).
    pub root: i64,
    /// Failed tries so far.
    pub attempts: i64,
}

impl Db {
    /// Subscribers with deliveries pending, whether due now or not.
    pub async fn delivery_subscribers(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT plugin FROM event_deliveries WHERE state = 'pending' ORDER BY plugin",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Deliveries to `plugin` due at `now_ms`, oldest event first. Asked
    /// per subscriber, so one that cannot run now (quarantined, busy)
    /// never hides another's.
    pub async fn deliveries_pending(
        &self,
        plugin: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.event_id, d.plugin, e.topic, e.payload, e.source_plugin, e.depth, d.attempts, \
             COALESCE(e.root_id, e.id) \
             FROM event_deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'pending' AND d.plugin = $1 AND COALESCE(d.next_attempt_ms, 0) <= $2 \
             ORDER BY d.event_id LIMIT $3",
        )
        .bind(plugin)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PendingDelivery {
                event_id: r.get(0),
                plugin: r.get(1),
                topic: r.get(2),
                payload: r.get(3),
                source_plugin: r.get(4),
                depth: r.get(5),
                attempts: r.get(6),
                root: r.get(7),
            })
            .collect())
    }

    /// Events so far in the chain that started from event `root`.
    pub async fn chain_size(&self, root: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE root_id = $1")
                .bind(root)
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// When the earliest delivery waiting on a retry is due, if any.
    pub async fn deliveries_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        let q = query(
            "SELECT MIN(COALESCE(next_attempt_ms, 0)) FROM event_deliveries WHERE state = 'pending'",
        );
        Ok(self.read_scalar::<Option<i64>>(&q).await?.flatten())
    }
}
