//! Emitted events and their per-subscriber deliveries.

use sqlx::Row;

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
    /// Failed tries so far.
    pub attempts: i64,
}

impl Db {
    /// Pending deliveries, oldest event first.
    pub async fn deliveries_pending(&self, limit: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.event_id, d.plugin, e.topic, e.payload, e.source_plugin, e.depth, d.attempts \
             FROM event_deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'pending' ORDER BY d.event_id, d.plugin LIMIT $1",
        )
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
            })
            .collect())
    }
}
