//! Pruning what the host no longer needs, so tables do not grow forever:
//! old audit rows, markers of handled messages, delivered or given-up
//! messages and HTTP requests, and events whose every delivery finished.
//! Nothing pending is ever touched.

use super::sql::query;
use super::{Db, StoreError};

/// How many rows one prune removed, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Audit rows.
    pub audit: u64,
    /// Processed-message markers.
    pub processed: u64,
    /// Outbox rows and finished HTTP requests.
    pub outbox: u64,
    /// Events, with their deliveries.
    pub events: u64,
}

/// Cut-off times: rows older than these (ms since the epoch) go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// For the audit log.
    pub audit_ms: i64,
    /// For processed-message markers.
    pub processed_ms: i64,
    /// For finished outbox rows and HTTP requests.
    pub outbox_ms: i64,
    /// For finished events.
    pub events_ms: i64,
}

/// Events older than `$1` with no delivery pending.
macro_rules! finished_events {
    () => {
        "SELECT id FROM events e WHERE e.created_ms < $1 AND NOT EXISTS \
         (SELECT 1 FROM event_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')"
    };
}

impl Db {
    /// Removes rows older than `cut`; see the module docs.
    ///
    /// Each statement is a single write through the writer, like any other
    /// write: on SQLite that is the one write connection, so a prune never
    /// holds SQLite's write lock open across an await, which on the bot's
    /// one runtime thread would stall every commit behind it until the
    /// busy timeout. A crash between statements leaves only what the next
    /// prune removes.
    pub async fn prune(&self, cut: Cutoffs) -> Result<Pruned, StoreError> {
        let run = |sql: &'static str, before: i64| self.writer.mark(query(sql).bind(before));
        let audit = run("DELETE FROM audit_log WHERE at_ms < $1", cut.audit_ms).await?;
        let processed = run(
            "DELETE FROM processed_messages WHERE processed_ms < $1",
            cut.processed_ms,
        )
        .await?;
        let outbox = run(
            "DELETE FROM outbox WHERE created_ms < $1 \
             AND (delivered_ms IS NOT NULL OR given_up_ms IS NOT NULL)",
            cut.outbox_ms,
        )
        .await?
            + run(
                "DELETE FROM http_sends WHERE created_ms < $1 AND state <> 'pending'",
                cut.outbox_ms,
            )
            .await?;
        // Deliveries first: they point at their event.
        run(
            concat!(
                "DELETE FROM event_deliveries WHERE event_id IN (",
                finished_events!(),
                ")"
            ),
            cut.events_ms,
        )
        .await?;
        let events = run(
            concat!("DELETE FROM events WHERE id IN (", finished_events!(), ")"),
            cut.events_ms,
        )
        .await?;
        Ok(Pruned {
            audit,
            processed,
            outbox,
            events,
        })
    }
}
