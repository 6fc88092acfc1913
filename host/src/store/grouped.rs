//! The rows every commit writes, for a whole batch in one statement each
//! (PostgreSQL).
//!
//! On PostgreSQL each statement is a round trip, and every command's
//! commit writes at least three rows: its processed marker, its audit
//! record and its reply. A batch of N commits was 3N round trips inside
//! the transaction, holding the writer while the next batch waited. Here
//! those rows go as one statement for the whole batch, each table's rows
//! as one JSON parameter expanded by `json_to_recordset`, so the text of
//! the statement (prepared once per connection) does not depend on the
//! batch's size. The rest of each commit (kv, events, schedules, …) is
//! written per commit as before. SQLite runs statements in process, where
//! a statement costs microseconds: it writes each commit whole.

use super::commit::Commit;
use super::sql::{Conn, query};
use super::{StoreError, audit, outbox};

/// A batch's processed markers (`$1`, a JSON array of `{message_id,
/// processed_ms}`), replies (`$2`, of [`outbox::Stored`]) and audit
/// records (`$3`, of [`audit::Stored`]) in one statement, the replies and
/// records inserted in their arrays' order. Each table's insert is a
/// data-modifying `WITH` query, which PostgreSQL runs to completion
/// whether or not the main query reads it. It gives back a row per marker
/// inserted (its message id) and per reply (its id): a reply's rows are
/// produced in array order and each takes the sequence's next value as it
/// is inserted, so the ids, sorted, are the replies' in array order.
///
/// The statement fails unless every marker was inserted (`$4` is how many
/// there are): a command handled before, or twice in the batch, must
/// leave no reply or record, and the statement may be committed on its
/// own ([`only_rows`]). The writer then writes the batch commit by commit,
/// which finds the duplicate.
const ROWS: &str = "WITH p AS (INSERT INTO processed_messages (message_id, processed_ms) \
     SELECT message_id, processed_ms FROM json_to_recordset($1::json) \
     AS x(message_id text, processed_ms bigint) \
     ON CONFLICT (message_id) DO NOTHING RETURNING message_id), \
     o AS (INSERT INTO outbox (created_ms, target_kind, target, reply_to, thread_root, body, plugin, \
     handle, edits) \
     SELECT created_ms, target_kind, target, reply_to, thread_root, body, plugin, handle, edits \
     FROM ROWS FROM (json_to_recordset($2::json) AS (created_ms bigint, target_kind text, \
     target text, reply_to text, thread_root text, body text, plugin text, handle text, edits text)) \
     WITH ORDINALITY AS x(created_ms, target_kind, target, reply_to, thread_root, body, plugin, \
     handle, edits, n) ORDER BY n RETURNING id), \
     a AS (INSERT INTO audit_log (at_ms, kind, actor, room, command, plugin, plugin_version, \
     decision, outcome, detail, duration_us) \
     SELECT at_ms, kind, actor, room, command, plugin, plugin_version, decision, outcome, detail, \
     duration_us FROM ROWS FROM (json_to_recordset($3::json) AS (at_ms bigint, kind text, actor text, \
     room text, command text, plugin text, plugin_version text, decision text, outcome text, \
     detail text, duration_us bigint)) WITH ORDINALITY AS x(at_ms, kind, actor, room, command, \
     plugin, plugin_version, decision, outcome, detail, duration_us, n) ORDER BY n) \
     SELECT message_id, NULL::bigint FROM p UNION ALL SELECT NULL, id FROM o \
     UNION ALL SELECT NULL, NULL WHERE NOT ikkyu_check((SELECT count(*) FROM p) = $4, \
     'a message of this batch was handled before')";

/// Inserts the processed markers, replies and audit records of `commits`,
/// in batch order, in one round trip: the replies' ids, in the same order.
/// Fails, writing nothing, if any marker was there before.
pub(super) async fn insert(tx: &mut Conn<'_>, commits: &[&Commit]) -> Result<Vec<i64>, StoreError> {
    #[derive(serde::Serialize)]
    struct Marker<'a> {
        message_id: &'a str,
        processed_ms: i64,
    }
    let markers: Vec<Marker<'_>> = commits
        .iter()
        .filter_map(|c| {
            c.processed.as_deref().map(|id| Marker {
                message_id: id,
                processed_ms: c.audit.at_ms,
            })
        })
        .collect();
    let messages: Vec<outbox::Stored<'_>> = commits
        .iter()
        .flat_map(|c| {
            c.messages
                .iter()
                .map(|m| outbox::Stored::new(m, c.audit.at_ms))
        })
        .collect();
    let records: Vec<audit::Stored<'_>> = commits
        .iter()
        .map(|c| audit::Stored::from(&c.audit))
        .collect();
    let expected = i64::try_from(markers.len()).unwrap_or(i64::MAX);
    let mut ids = Vec::with_capacity(messages.len());
    query(ROWS)
        .bind(json(&markers)?)
        .bind(json(&messages)?)
        .bind(json(&records)?)
        .bind(expected)
        .fetch_while(tx, |row| {
            ids.extend(row.get::<Option<i64>>(1)?);
            Ok(true)
        })
        .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// Whether everything `c` writes is what [`insert`] writes: then a batch
/// of such commits is that one statement, with no transaction around it.
/// Most commands only read and answer (`!points`, `!oncall`, help, every
/// refusal), and a transaction's begin and commit were two of its three
/// round trips.
pub(super) fn only_rows(c: &Commit) -> bool {
    // Every field named, so that a new kind of effect must be decided here.
    let Commit {
        processed: _,
        audit: _,
        messages: _,
        kv,
        events,
        roles,
        delivery,
        schedules,
        fired,
        sends,
        sent,
        jobs,
        job_end,
    } = c;
    kv.as_ref().is_none_or(|kv| kv.writes.is_empty())
        && events.is_empty()
        && roles.is_empty()
        && delivery.is_none()
        && schedules.is_empty()
        && fired.is_none()
        && sends.is_empty()
        && sent.is_none()
        && jobs.is_empty()
        && job_end.is_none()
}

fn json<T: serde::Serialize + ?Sized>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Refused(Box::new(e)))
}
