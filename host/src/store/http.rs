//! HTTP requests plugins send as effects: stored with the call's commit,
//! read by the host's sender, and ended in the transaction that hands the
//! outcome to the plugin.

use sqlx::Row;

use super::sql::{Conn, query};
use super::{Db, StoreError};

/// A request to send after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSend {
    /// The plugin that asked; the outcome goes back to it.
    pub plugin: String,
    /// The plugin's name for this request, handed back with the outcome.
    pub tag: String,
    /// `POST`, `PUT`, …
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers as the plugin wrote them (secrets as `{secret:NAME}`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A stored request not yet done.
#[derive(Debug, Clone)]
pub struct PendingSend {
    /// Row id.
    pub id: i64,
    /// When it was committed; with the id, the idempotency key.
    pub created_ms: i64,
    /// Tries so far.
    pub attempts: i64,
    /// The request.
    pub send: NewSend,
}

impl PendingSend {
    /// The `Idempotency-Key` of every try of this request: unique to the
    /// effect, the same on each retry and after a restart.
    pub fn idempotency_key(&self) -> String {
        format!("ikkyu-{}-{}", self.created_ms, self.id)
    }
}

/// What became of a try.
#[derive(Debug, Clone)]
pub enum SendUpdate {
    /// Ended: an answer (any status but 5xx), a refusal, or the last try.
    Done {
        /// The request.
        id: i64,
        /// Tries before this one, as read; the update applies only if unchanged.
        attempts: i64,
        /// The status, if there was an answer.
        status: Option<u16>,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// Try again at `retry_at_ms`.
    Retry {
        /// The request.
        id: i64,
        /// Tries before this one, as read.
        attempts: i64,
        /// Why this try failed.
        error: String,
        /// When to try again.
        retry_at_ms: i64,
    },
}

pub(super) async fn insert(tx: &mut Conn<'_>, s: &NewSend, now_ms: i64) -> Result<(), StoreError> {
    let headers = serde_json::to_string(&s.headers).unwrap_or_else(|_| "[]".into());
    query(
        "INSERT INTO http_sends (created_ms, plugin, tag, method, url, headers, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms)
    .bind(&s.plugin)
    .bind(crate::text::storable(&s.tag, crate::text::MAX_AUDIT_FIELD).into_owned())
    .bind(&s.method)
    .bind(&s.url)
    .bind(crate::text::storable(&headers, usize::MAX).into_owned())
    .bind(&s.body)
    .execute(tx)
    .await?;
    Ok(())
}

/// Applies `u` if the row is still pending with the attempts it was read
/// with; otherwise another sender ended it first.
pub(super) async fn update(
    tx: &mut Conn<'_>,
    u: &SendUpdate,
    now_ms: i64,
) -> Result<(), StoreError> {
    let result = match u {
        SendUpdate::Done {
            id,
            attempts,
            status,
            error,
        } => query(
            "UPDATE http_sends SET attempts = attempts + 1, state = $1, status = $2, \
             last_error = $3, done_ms = $4 WHERE id = $5 AND state = 'pending' AND attempts = $6",
        )
        .bind(if error.is_some() { "failed" } else { "done" })
        .bind(status.map(i64::from))
        .bind(
            error
                .as_deref()
                .map(|e| crate::text::storable(e, crate::text::MAX_AUDIT_FIELD).into_owned()),
        )
        .bind(now_ms)
        .bind(id)
        .bind(attempts),
        SendUpdate::Retry {
            id,
            attempts,
            error,
            retry_at_ms,
        } => query(
            "UPDATE http_sends SET attempts = attempts + 1, last_error = $1, next_attempt_ms = $2 \
             WHERE id = $3 AND state = 'pending' AND attempts = $4",
        )
        .bind(crate::text::storable(error, crate::text::MAX_AUDIT_FIELD).into_owned())
        .bind(retry_at_ms)
        .bind(id)
        .bind(attempts),
    }
    .execute(tx)
    .await?;
    if result == 0 {
        return Err(StoreError::Duplicate(format!(
            "http send {}",
            match u {
                SendUpdate::Done { id, .. } | SendUpdate::Retry { id, .. } => id,
            }
        )));
    }
    Ok(())
}

impl Db {
    /// Requests due to be sent at `now_ms`, oldest first.
    pub async fn sends_due(&self, now_ms: i64, limit: i64) -> Result<Vec<PendingSend>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_ms, attempts, plugin, tag, method, url, headers, body \
             FROM http_sends WHERE state = 'pending' AND next_attempt_ms <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let headers: String = r.get(7);
                PendingSend {
                    id: r.get(0),
                    created_ms: r.get(1),
                    attempts: r.get(2),
                    send: NewSend {
                        plugin: r.get(3),
                        tag: r.get(4),
                        method: r.get(5),
                        url: r.get(6),
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        body: r.get(8),
                    },
                }
            })
            .collect())
    }

    /// When the next pending request is due, if any.
    pub async fn next_send_ms(&self) -> Result<Option<i64>, StoreError> {
        let q = query("SELECT MIN(next_attempt_ms) FROM http_sends WHERE state = 'pending'");
        Ok(self.read_scalar::<Option<i64>>(&q).await?.flatten())
    }
}
