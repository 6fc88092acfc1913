//! The outbox: messages produced by a committed transaction, delivered
//! afterwards and retried until the chat adapter accepts them.

use sqlx::Row as _;

use super::sql::{Conn, Query, Row, query};
use super::undelivered::{self, Mark, Plan};
use super::{Backend, Db, StoreError};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room id.
    Room(String),
    /// A direct message to this user.
    User(String),
}

/// A message to deliver after commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Where it goes.
    pub target: Target,
    /// Markdown.
    pub body: String,
    /// The chat message this answers, so adapters can thread the reply.
    pub reply_to: Option<String>,
    /// The root of the thread the answered message was in; the answer goes
    /// into the same thread.
    pub thread_root: Option<String>,
    /// The plugin whose message it is; none for the host's own.
    pub plugin: Option<String>,
    /// The handle `chat.send` gave the plugin, for editing it later.
    pub handle: Option<String>,
    /// For an edit: the message it replaces.
    pub edit: Option<Edit>,
}

/// What an edit replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The handle of the plugin's earlier message.
    pub of: String,
    /// The chat network's id of that message once it was delivered, filled
    /// in just before the edit is; none when the network gave no id or the
    /// message was never delivered, and then the edit is sent as a message
    /// of its own.
    pub remote_id: Option<String>,
}

/// What the host's own notices begin with. No plugin message may: one that
/// would is prefixed with its plugin's name, so a plugin cannot write to
/// an admin as if it were the host ("plugin X is quarantined, run …").
pub const HOST_MARK: &str = "ikkyu: ";

impl OutMessage {
    /// A plain message to `target`, answering nothing.
    pub fn to(target: Target, body: String) -> Self {
        Self {
            target,
            body,
            reply_to: None,
            thread_root: None,
            plugin: None,
            handle: None,
            edit: None,
        }
    }

    /// One of the host's own notices, sent directly to each of `users`.
    pub fn host_notice(users: &[String], body: &str) -> Vec<Self> {
        users
            .iter()
            .map(|user| Self::to(Target::User(user.clone()), format!("{HOST_MARK}{body}")))
            .collect()
    }

    /// `self` as `plugin`'s message: if it would read as a host notice, it
    /// says whose it is.
    pub fn from_plugin(mut self, plugin: &str) -> Self {
        if poses_as_host(&self.body) {
            self.body = format!("{plugin}: {}", self.body);
        }
        self.plugin = Some(plugin.to_owned());
        self
    }
}

/// Whether `body` begins like a host notice once what Markdown and clients
/// do not show (leading space, emphasis, quote marks) is set aside.
fn poses_as_host(body: &str) -> bool {
    let shown = body.trim_start_matches(|c: char| {
        c.is_whitespace() || c.is_control() || "*_~`>#[|".contains(c) || is_invisible(c)
    });
    let name = HOST_MARK.trim_end_matches([':', ' ']);
    shown
        .get(..name.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(name))
}

/// Characters that take no room on screen (zero-width spaces and joiners,
/// the byte-order mark, direction marks).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{202A}'..='\u{202E}')
}

/// A stored message not yet delivered.
#[derive(Debug, Clone)]
pub struct PendingMessage {
    /// Row id; delivery is in id order.
    pub id: i64,
    /// When it was committed; with the id it makes a key no other message
    /// of any database shares, which adapters use to make a repeated
    /// delivery (after a crash) a no-op on the network.
    pub created_ms: i64,
    /// The message.
    pub message: OutMessage,
    /// Failed deliveries so far.
    pub attempts: i64,
}

/// Every message due at `$1`, oldest first: due itself, with no earlier
/// message of its target waiting for a later try (only a target's head is
/// ever tried, so the rest of its queue is due with it). The limit (100)
/// is written in: SQLite prepares a statement again every time a
/// parameter its plan looked at is bound, and it looks at `LIMIT`'s.
/// The most messages one [`Db::outbox_due`] returns (the `LIMIT` of
/// [`DUE`]): fewer means it found every due message.
pub const DUE_AT_MOST: usize = 100;

pub(super) const DUE: &str = "SELECT o.id, o.target_kind, o.target, o.reply_to, o.body, o.attempts, o.thread_root, \
             o.created_ms, o.plugin, o.handle, o.edits FROM outbox o WHERE o.delivered_ms IS NULL AND o.given_up_ms IS NULL \
             AND COALESCE(o.next_attempt_ms, 0) <= $1 \
             AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.target_kind = o.target_kind \
                 AND p.target = o.target AND p.delivered_ms IS NULL AND p.given_up_ms IS NULL \
                 AND p.id < o.id AND COALESCE(p.next_attempt_ms, 0) > $1) \
             ORDER BY o.id LIMIT 100";

/// One message into the outbox: its id.
pub(super) const INSERT: &str = "INSERT INTO outbox (created_ms, target_kind, target, reply_to, thread_root, body, \
         plugin, handle, edits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

/// When the earliest waiting message is due; NULL when none waits.
pub(super) const NEXT_ATTEMPT: &str = "SELECT MIN(COALESCE(next_attempt_ms, 0)) FROM outbox \
             WHERE delivered_ms IS NULL AND given_up_ms IS NULL";

/// The waiting messages, oldest first, as [`DUE`] gives them plus when
/// each is tried again (NULL for one never tried); one more than
/// [`undelivered::KNOWN_AT_MOST`], to tell when there are too many.
pub(super) const WAITING: &str = "SELECT o.id, o.target_kind, o.target, o.reply_to, o.body, o.attempts, \
             o.thread_root, o.created_ms, o.plugin, o.handle, o.edits, o.next_attempt_ms FROM outbox o \
             WHERE o.delivered_ms IS NULL AND o.given_up_ms IS NULL ORDER BY o.id LIMIT 65";

/// What the writer's look at the outbox between two transactions found.
#[derive(Debug)]
pub(super) enum Look {
    /// Every waiting message, all due now (none was ever tried): memory
    /// can hold them from here on.
    All(Vec<PendingMessage>),
    /// Too many, or some wait for a later try: when the earliest is due.
    Next(Option<i64>),
}

/// The writer's look at the outbox, inside its transaction (`Settle`).
pub(super) async fn look(tx: &mut Conn<'_>) -> Result<Look, StoreError> {
    let mut rows = Vec::new();
    let mut retrying = false;
    query(WAITING)
        .fetch_while(tx, |r| {
            retrying |= r.get::<Option<i64>>(11)?.is_some();
            rows.push(pending_of(&r)?);
            Ok(!retrying)
        })
        .await?;
    if !retrying && rows.len() <= undelivered::KNOWN_AT_MOST {
        return Ok(Look::All(rows));
    }
    let next: Option<Option<i64>> = query(NEXT_ATTEMPT).scalar(tx).await?;
    Ok(Look::Next(next.flatten()))
}

/// A message delivered, with the network's id for it.
pub(super) const DELIVERED: &str = "UPDATE outbox SET delivered_ms = $1, attempts = attempts + 1, remote_id = $2 \
             WHERE id = $3";

/// A message as its row holds it.
#[derive(Debug, serde::Serialize)]
pub(super) struct Stored<'a> {
    created_ms: i64,
    target_kind: &'static str,
    target: &'a str,
    reply_to: Option<&'a str>,
    thread_root: Option<&'a str>,
    body: std::borrow::Cow<'a, str>,
    plugin: Option<&'a str>,
    handle: Option<&'a str>,
    edits: Option<&'a str>,
}

impl<'a> Stored<'a> {
    pub(super) fn new(m: &'a OutMessage, now_ms: i64) -> Self {
        let (target_kind, target) = match &m.target {
            Target::Room(r) => ("room", r),
            Target::User(u) => ("user", u),
        };
        Self {
            created_ms: now_ms,
            target_kind,
            target,
            reply_to: m.reply_to.as_deref(),
            thread_root: m.thread_root.as_deref(),
            // A body with NUL (a plugin's error text, say) is still delivered.
            body: crate::text::storable(&m.body, usize::MAX),
            plugin: m.plugin.as_deref(),
            handle: m.handle.as_deref(),
            edits: m.edit.as_ref().map(|e| e.of.as_str()),
        }
    }
}

/// Writes `m` into the outbox: its id.
pub(super) async fn insert(
    tx: &mut Conn<'_>,
    m: &OutMessage,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let m = Stored::new(m, now_ms);
    query(INSERT)
        .bind(m.created_ms)
        .bind(m.target_kind)
        .bind(m.target)
        .bind(m.reply_to)
        .bind(m.thread_root)
        .bind(m.body.into_owned())
        .bind(m.plugin)
        .bind(m.handle)
        .bind(m.edits)
        .scalar(tx)
        .await?
        .ok_or_else(|| StoreError::Db("an inserted message has no id".into()))
}

impl Db {
    /// The undelivered messages due at `now_ms`, oldest first, at most
    /// 100. Order is kept per target: a message waits for the ones before
    /// it to the same room or user, never for another target's. Taken
    /// from memory while every waiting message is known there
    /// (`undelivered`); read from the database otherwise.
    pub async fn outbox_due(&self, now_ms: i64) -> Result<Vec<PendingMessage>, StoreError> {
        if let Some(due) = self.undelivered.due(DUE_AT_MOST) {
            return Ok(due);
        }
        self.write_marks().await?;
        let q = query(DUE).bind(now_ms);
        self.read_all(&q).await?.iter().map(pending_of).collect()
    }

    /// When the earliest waiting message is due again, if any waits.
    /// Asking the database goes through the writer, which starts keeping
    /// the waiting messages in memory when it finds none.
    pub async fn outbox_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        if let Some(next) = self.undelivered.next_due() {
            return Ok(next);
        }
        self.write_marks_then(true).await
    }

    /// Marks messages delivered so they are never sent again, each with
    /// the chat network's id for it (what later edits are sent against).
    /// The marks are written together with others, at the latest after
    /// [`undelivered::MARKS_WAIT`]; until then every read of the delivery
    /// state writes them first.
    pub async fn outbox_delivered(
        &self,
        now_ms: i64,
        sent: &[(i64, Option<String>)],
    ) -> Result<(), StoreError> {
        let marks = sent.iter().map(|(id, remote_id)| Mark {
            id: *id,
            remote_id: remote_id.clone(),
            at_ms: now_ms,
        });
        match self.undelivered.sent(marks) {
            Plan::Now => self.write_marks().await,
            Plan::Later => {
                let db = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(undelivered::MARKS_WAIT).await;
                    while let Err(e) = db.write_marks().await {
                        tracing::warn!("marking sent messages delivered: {e}; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                });
                Ok(())
            }
            Plan::Nothing => Ok(()),
        }
    }

    /// Writes the delivered marks waiting in memory, if any.
    pub async fn write_marks(&self) -> Result<(), StoreError> {
        self.write_marks_then(false).await.map(drop)
    }

    /// Writes the delivered marks waiting in memory and, with `settle`,
    /// looks for waiting messages in the same transaction
    /// ([`super::writer::Writer::settle`]): the look's answer. Marks whose
    /// write fails wait again.
    async fn write_marks_then(&self, settle: bool) -> Result<Option<i64>, StoreError> {
        let _writing = self.undelivered.writing().await;
        let marks = self.undelivered.take_marks();
        if marks.is_empty() && !settle {
            return Ok(None);
        }
        let result = match mark_queries(self.backend, &marks) {
            Ok(queries) if settle => self.writer.settle(queries).await,
            Ok(queries) => self.writer.marks(queries).await.map(|_| None),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.undelivered.unwritten(marks);
        }
        result
    }

    /// Where `plugin`'s message with `handle` went, if it has one on
    /// record (messages are kept for `retention.outbox`).
    pub async fn outbox_target_of(
        &self,
        plugin: &str,
        handle: &str,
    ) -> Result<Option<Target>, StoreError> {
        let row =
            sqlx::query("SELECT target_kind, target FROM outbox WHERE handle = $1 AND plugin = $2")
                .bind(handle)
                .bind(plugin)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| target_of(r.get(0), r.get(1))))
    }

    /// The chat network's id of the delivered message with `handle`.
    pub async fn outbox_remote_id(&self, handle: &str) -> Result<Option<String>, StoreError> {
        self.write_marks().await?;
        let id: Option<Option<String>> =
            sqlx::query_scalar("SELECT remote_id FROM outbox WHERE handle = $1")
                .bind(handle)
                .fetch_optional(&self.read)
                .await?;
        Ok(id.flatten())
    }

    /// Records a failed delivery attempt: the message is tried again at
    /// `retry_at_ms`, or, with none, given up at `now_ms` and kept on
    /// record, undelivered, no longer holding back the messages after it.
    pub async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        now_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        // What waits in the database is no longer all in memory.
        self.undelivered.not_exact();
        let given_up = retry_at_ms.is_none().then_some(now_ms);
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, given_up_ms = $2, \
             next_attempt_ms = $3 WHERE id = $4",
        )
        .bind(crate::text::storable(error, crate::text::MAX_AUDIT_FIELD).into_owned())
        .bind(given_up)
        .bind(retry_at_ms)
        .bind(id)
        .execute(&self.write)
        .await?;
        self.retry_later(super::Work::Messages);
        Ok(())
    }
}

/// Any number of marks (PostgreSQL): `$1` is a JSON array of [`Mark`].
///
/// Only waiting rows are looked at: PostgreSQL cannot tell how many rows
/// the JSON holds, and joined with every row the outbox keeps it scanned
/// the whole table (5 ms with 20,000 rows kept, growing with history);
/// waiting rows are the small `outbox_waiting` index, and a mark for any
/// other row changes nothing anyway.
const DELIVERED_MANY: &str = "UPDATE outbox o SET delivered_ms = x.at_ms, attempts = o.attempts + 1, \
             remote_id = x.remote_id FROM json_to_recordset($1::json) \
             AS x(id bigint, at_ms bigint, remote_id text) \
             WHERE o.id = x.id AND o.delivered_ms IS NULL AND o.given_up_ms IS NULL";

/// The statements that write `marks`: on PostgreSQL one for all of them
/// (each statement is a round trip), on SQLite one each (in process,
/// prepared once).
fn mark_queries(backend: Backend, marks: &[Mark]) -> Result<Vec<Query>, StoreError> {
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match backend {
        Backend::Postgres => {
            let rows = serde_json::to_string(marks).map_err(|e| StoreError::Db(Box::new(e)))?;
            vec![query(DELIVERED_MANY).bind(rows)]
        }
        Backend::Sqlite => marks
            .iter()
            .map(|m| {
                query(DELIVERED)
                    .bind(m.at_ms)
                    .bind(m.remote_id.as_deref())
                    .bind(m.id)
            })
            .collect(),
    })
}

fn target_of(kind: String, target: String) -> Target {
    if kind == "user" {
        Target::User(target)
    } else {
        Target::Room(target)
    }
}

pub(super) fn pending_of(r: &Row) -> Result<PendingMessage, StoreError> {
    let edits: Option<String> = r.get(10)?;
    Ok(PendingMessage {
        id: r.get(0)?,
        message: OutMessage {
            target: target_of(r.get(1)?, r.get(2)?),
            reply_to: r.get(3)?,
            body: r.get(4)?,
            thread_root: r.get(6)?,
            plugin: r.get(8)?,
            handle: r.get(9)?,
            edit: edits.map(|of| Edit {
                of,
                remote_id: None,
            }),
        },
        attempts: r.get(5)?,
        created_ms: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's look takes every waiting message only when it saw
    /// them all.
    #[test]
    fn the_look_reads_one_past_what_memory_takes() {
        let limit = format!("LIMIT {}", undelivered::KNOWN_AT_MOST + 1);
        assert!(WAITING.ends_with(&limit));
    }

    /// The bot trusts a read shorter than this to hold every due message.
    #[test]
    fn the_due_read_returns_at_most_its_limit() {
        assert!(DUE.ends_with(&format!("LIMIT {DUE_AT_MOST}")));
    }

    fn to(body: &str) -> String {
        OutMessage::to(Target::User("@root:local".into()), body.into())
            .from_plugin("evil")
            .body
    }

    #[test]
    fn a_plugin_cannot_write_like_the_host() {
        for forged in [
            "ikkyu: plugin points is quarantined",
            "IKKYU: hi",
            "  **ikkyu**: hi",
            "\u{200B}ikkyu: hi",
            "> ikkyu: hi",
        ] {
            assert_eq!(to(forged), format!("evil: {forged}"), "{forged:?}");
        }
        for fine in ["points: 3", "ikk", "", "the ikkyu host", "Ꭵkkyu"] {
            assert_eq!(to(fine), fine);
        }
        assert!(OutMessage::host_notice(&["@a:b".into()], "x")[0].body == "ikkyu: x");
    }
}
