//! The rows every commit writes, for a whole batch in one statement each
//! (PostgreSQL).
//!
//! On PostgreSQL each statement is a round trip, and every command's
//! commit writes at least three rows: its processed marker, its audit
//! record and its reply. A batch of N commits was 3N round trips inside
//! the transaction, holding the writer while the next batch waited. Here
//! those rows go as one statement per table for the whole batch, the rows
//! as one JSON parameter expanded by `json_to_recordset`, so the text of
//! each statement (prepared once per connection) does not depend on the
//! batch's size. The rest of each commit (kv, events, schedules, …) is
//! written per commit as before. SQLite runs statements in process, where
//! a statement costs microseconds: it writes each commit whole.

use super::commit::Commit;
use super::sql::{Conn, query};
use super::{StoreError, audit, outbox};

/// Why the batch's rows were not written.
pub(super) enum Refusal {
    /// Commit `usize` (an index into the batch) was handled before.
    Duplicate(usize, String),
    /// A statement failed, and which commit's row caused it is not known:
    /// the batch must be written commit by commit to find out.
    Unattributed(StoreError),
}

/// Inserts the processed markers, replies and audit records of `commits`
/// (each with its index in the batch), in batch order.
pub(super) async fn insert(tx: &mut Conn<'_>, commits: &[(usize, &Commit)]) -> Result<(), Refusal> {
    processed(tx, commits).await?;
    let messages: Vec<outbox::Stored<'_>> = commits
        .iter()
        .flat_map(|(_, c)| {
            c.messages
                .iter()
                .map(|m| outbox::Stored::new(m, c.audit.at_ms))
        })
        .collect();
    if !messages.is_empty() {
        many(tx, outbox::INSERT_MANY, &messages).await?;
    }
    let records: Vec<audit::Stored<'_>> = commits
        .iter()
        .map(|(_, c)| audit::Stored::from(&c.audit))
        .collect();
    many(tx, audit::INSERT_MANY, &records).await
}

/// The processed markers; a commit whose message id is already there (or
/// taken by an earlier commit of the batch) is a duplicate.
async fn processed(tx: &mut Conn<'_>, commits: &[(usize, &Commit)]) -> Result<(), Refusal> {
    #[derive(serde::Serialize)]
    struct Marker<'a> {
        message_id: &'a str,
        processed_ms: i64,
    }
    let markers: Vec<Marker<'_>> = commits
        .iter()
        .filter_map(|(_, c)| {
            c.processed.as_deref().map(|id| Marker {
                message_id: id,
                processed_ms: c.audit.at_ms,
            })
        })
        .collect();
    if markers.is_empty() {
        return Ok(());
    }
    let mut inserted = std::collections::HashSet::new();
    query(super::commit::PROCESSED_MANY)
        .bind(json(&markers)?)
        .fetch_while(tx, |row| {
            inserted.insert(row.get::<String>(0)?);
            Ok(true)
        })
        .await
        .map_err(Refusal::Unattributed)?;
    for (i, c) in commits {
        if let Some(id) = &c.processed
            && !inserted.remove(id)
        {
            return Err(Refusal::Duplicate(*i, id.clone()));
        }
    }
    Ok(())
}

async fn many<T: serde::Serialize>(
    tx: &mut Conn<'_>,
    sql: &'static str,
    rows: &[T],
) -> Result<(), Refusal> {
    query(sql)
        .bind(json(rows)?)
        .execute(tx)
        .await
        .map(drop)
        .map_err(Refusal::Unattributed)
}

fn json<T: serde::Serialize + ?Sized>(rows: &T) -> Result<String, Refusal> {
    serde_json::to_string(rows).map_err(|e| Refusal::Unattributed(StoreError::Refused(Box::new(e))))
}
