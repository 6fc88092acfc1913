//! How much after-commit work is waiting, read for `/metrics`: counted in
//! the database rather than kept in memory, so the numbers include work
//! left by an earlier run or another process.

use std::collections::BTreeMap;

use sqlx::Row as _;

use super::{Db, StoreError};

/// Work committed and not yet done, and jobs by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Chat messages waiting to be delivered (not given up).
    pub outbox: i64,
    /// Event deliveries to plugins still pending.
    pub deliveries: i64,
    /// Jobs not ended yet, by state (`queued`, `running`).
    pub jobs: BTreeMap<String, i64>,
}

impl Db {
    /// The backlog now; each count reads only the index of the waiting
    /// rows, so a scrape costs the same however long the history.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        // Sent messages whose marks wait in memory are not waiting.
        self.write_marks().await?;
        let outbox = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE delivered_ms IS NULL AND given_up_ms IS NULL",
        )
        .fetch_one(&self.read)
        .await?;
        let deliveries =
            sqlx::query_scalar("SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'")
                .fetch_one(&self.read)
                .await?;
        let mut jobs = BTreeMap::new();
        for row in sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs \
             WHERE state IN ('queued', 'running') GROUP BY state",
        )
        .fetch_all(&self.read)
        .await?
        {
            jobs.insert(row.try_get("state")?, row.try_get("n")?);
        }
        Ok(Backlog {
            outbox,
            deliveries,
            jobs,
        })
    }
}
