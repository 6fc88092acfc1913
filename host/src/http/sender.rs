//! Performs the HTTP requests plugins committed (`http.send`), after their
//! commit: each try is checked again against the plugin's current rules,
//! carries the effect's `Idempotency-Key`, and ends in one transaction
//! with its audit record and, once it is over, the `http.sent` event that
//! tells the plugin the outcome. Timeouts, unreachable servers and 5xx
//! answers are tried again with growing pauses up to [`MAX_ATTEMPTS`]; a
//! crash between a try and its commit repeats the try after the restart
//! under the same key; nothing else does: a commit that meets a
//! serialization conflict (two outcomes at once on PostgreSQL) is retried
//! as a commit, never by sending again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{HttpError, Response};
use crate::attempt::{Attempts, Ran};
use crate::clock::SharedClock;
use crate::registry::Registry;
use crate::store::{
    AuditRecord, Commit, Db, Decision, NewEvent, Outcome, PendingSend, SendUpdate, Work,
};

/// Tries of one request before its failure is final.
pub const MAX_ATTEMPTS: i64 = 6;
/// Time one try may take.
const TRY_TIME: Duration = Duration::from_secs(10);
/// Bytes of the answer's body handed to the plugin in the event.
const EVENT_BODY: usize = 64 * 1024;
/// Requests tried at once.
const PARALLEL: usize = 8;
/// The topic of the outcome event, and its source.
pub const SENT_TOPIC: &str = "http.sent";
/// What the outcome event names as its emitter: the host, which no plugin
/// may be named.
pub const HOST_SOURCE: &str = "ikkyu";

/// Sends what plugins committed.
pub struct Sender {
    db: Db,
    /// Commits each try's outcome, taking a serialization conflict again:
    /// a try whose outcome failed to commit would be sent once more.
    attempts: Arc<Attempts>,
    registry: Arc<Registry>,
    clock: SharedClock,
    /// One pass at a time, so no request is tried twice at once.
    passing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender over `db`, using the rules of the plugins in `registry`.
    pub fn new(
        db: Db,
        attempts: Arc<Attempts>,
        registry: Arc<Registry>,
        clock: SharedClock,
    ) -> Self {
        Self {
            db,
            attempts,
            registry,
            clock,
            passing: tokio::sync::Mutex::new(()),
        }
    }

    /// Tries every request that is due, a few at a time (after any pass
    /// already under way); whether any try was committed.
    pub async fn pass(&self) -> anyhow::Result<bool> {
        let _one = self.passing.lock().await;
        let Some(seen) = self.db.waiting(Work::Sends) else {
            return Ok(false);
        };
        let due = self.db.sends_due(self.clock.now_ms(), 100).await?;
        if due.is_empty() {
            self.db.none_due(Work::Sends, seen).await?;
            return Ok(false);
        }
        let committed = futures_util::stream::iter(due)
            .map(|p| async move {
                let result = self.try_once(&p).await;
                if let Err(e) = &result {
                    tracing::warn!(plugin = %p.send.plugin, id = p.id, "an HTTP send stays pending: {e:#}");
                }
                result.is_ok()
            })
            .buffer_unordered(PARALLEL)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        Ok(committed > 0)
    }

    /// When the earliest pending request is due, ms since the epoch.
    pub async fn next_due_ms(&self) -> Option<i64> {
        self.db.next_due(Work::Sends).await.ok().flatten()
    }

    async fn try_once(&self, p: &PendingSend) -> anyhow::Result<()> {
        let started = Instant::now();
        let table = self.registry.current();
        let loaded = table.plugin(&p.send.plugin);
        let result = match loaded.and_then(|l| l.grants.http.clone()) {
            None => Err(HttpError::Refused(format!(
                "plugin {} is not loaded with the http grant",
                p.send.plugin
            ))),
            Some(http) => {
                let mut headers = p.send.headers.clone();
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
                {
                    headers.push(("Idempotency-Key".into(), p.idempotency_key()));
                }
                match http.check(
                    &p.send.method,
                    &p.send.url,
                    headers,
                    p.send.body.clone(),
                    false,
                ) {
                    Ok(request) => http.perform(&request, TRY_TIME).await,
                    Err(e) => Err(e),
                }
            }
        };
        let tries = p.attempts + 1;
        let again = match &result {
            Ok(r) => r.status >= 500,
            Err(e) => e.is_transient(),
        };
        let summary = match &result {
            Ok(r) => format!("status {}", r.status),
            Err(e) => e.to_string(),
        };
        let took = started.elapsed();
        let (update, events) = if again && tries < MAX_ATTEMPTS {
            let update = SendUpdate::Retry {
                id: p.id,
                attempts: p.attempts,
                error: summary.clone(),
                retry_at_ms: self
                    .clock
                    .now_ms()
                    .saturating_add(crate::bot::retry_delay_ms(tries)),
            };
            (update, Vec::new())
        } else {
            let (status, error) = match &result {
                Ok(r) if r.status < 500 => (Some(r.status), None),
                Ok(r) => (
                    Some(r.status),
                    Some(format!("status {} after {tries} tries", r.status)),
                ),
                Err(e) if e.is_transient() => (None, Some(format!("{e} (after {tries} tries)"))),
                Err(e) => (None, Some(e.to_string())),
            };
            let event = NewEvent {
                topic: SENT_TOPIC.into(),
                payload: outcome_payload(
                    &p.send.tag,
                    result.as_ref().ok(),
                    error.as_deref(),
                    tries,
                ),
                source_plugin: HOST_SOURCE.into(),
                depth: 0,
                root: None,
                subscribers: vec![p.send.plugin.clone()],
            };
            let update = SendUpdate::Done {
                id: p.id,
                attempts: p.attempts,
                status,
                error,
            };
            (update, vec![event])
        };
        let ok = matches!(&result, Ok(r) if r.status < 400);
        let audit = AuditRecord {
            at_ms: self.clock.now_ms(),
            kind: "http",
            actor: format!("plugin:{}", p.send.plugin),
            room: None,
            command: describe(&p.send.method, &p.send.url),
            plugin: Some(p.send.plugin.clone()),
            plugin_version: loaded.map(|l| l.info.version.clone()),
            decision: Decision::NotChecked,
            outcome: if ok { Outcome::Ok } else { Outcome::Error },
            detail: Some(format!(
                "{summary} in {} ms, try {tries} of {MAX_ATTEMPTS}, tag {}",
                took.as_millis(),
                crate::text::quoted(&p.send.tag)
            )),
            duration_us: AuditRecord::micros_since(started),
        };
        let commit = Commit {
            sent: Some(update),
            events,
            ..Commit::only_audit(None, audit, Vec::new())
        };
        match self.attempts.settle(&commit, &p.send.tag).await? {
            Ran::Committed(_) | Ran::Duplicate => Ok(()),
            other => {
                anyhow::bail!("its outcome could not be committed ({other:?}); tried again later")
            }
        }
    }
}

/// `METHOD scheme://host:port/path` of a stored request.
fn describe(method: &str, url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| format!("{method} ?"), |u| super::describe(method, &u))
}

/// The payload of `http.sent`: the tag, and the status and body (as text,
/// at most [`EVENT_BODY`] bytes) or the error.
fn outcome_payload(
    tag: &str,
    answer: Option<&Response>,
    error: Option<&str>,
    tries: i64,
) -> String {
    let body = answer.map(|r| {
        let text = String::from_utf8_lossy(&r.body);
        crate::text::storable(&text, EVENT_BODY).into_owned()
    });
    serde_json::json!({
        "tag": tag,
        "status": answer.map(|r| r.status),
        "body": body,
        "error": error,
        "tries": tries,
    })
    .to_string()
}
