//! The one transaction per invocation: effects, audit record and processed
//! marker commit together or not at all.

use std::sync::atomic::{AtomicI64, Ordering};

use super::sql::{Conn, query};
use super::{
    AuditRecord, Db, Fired, JobChange, JobEnd, KvChanges, NewSend, OutMessage, ScheduleChange,
    SendUpdate, StoreError, audit, http, jobs, kv, outbox, schedules,
};

/// An event to store, with the subscribers it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened, e.g. `release.finished`.
    pub topic: String,
    /// JSON.
    pub payload: String,
    /// The plugin that emitted it.
    pub source_plugin: String,
    /// 0 for events from commands, +1 per event handler in between.
    pub depth: i64,
    /// The first event of the chain this one descends from; none for an
    /// event from a command or a run.
    pub root: Option<i64>,
    /// Plugins to deliver it to.
    pub subscribers: Vec<String>,
}

/// A role granted or revoked in chat.
#[derive(Debug, Clone)]
pub enum RoleChange {
    /// Give `user` the role `role`; `by` is the admin who did it.
    Grant {
        /// The user.
        user: String,
        /// The role.
        role: String,
        /// The admin who granted it.
        by: String,
    },
    /// Take the role away.
    Revoke {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
}

/// What became of one event delivery. `attempts` is the count read before
/// the call: the update applies only if nobody else finished or retried
/// the delivery meanwhile, so two concurrent flushes cannot both commit it.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    /// Handled; never delivered again.
    Done {
        /// The event.
        event_id: i64,
        /// The subscriber.
        plugin: String,
        /// Tries before this one, as read; the update applies only if unchanged.
        attempts: i64,
    },
    /// Failed; tried again later unless `give_up`.
    Failed {
        /// The event.
        event_id: i64,
        /// The subscriber.
        plugin: String,
        /// Tries before this one, as read; the update applies only if unchanged.
        attempts: i64,
        /// Why it failed.
        error: String,
        /// Stop retrying.
        give_up: bool,
        /// When to try again, if not given up.
        retry_at_ms: Option<i64>,
    },
}

/// Everything one invocation commits.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The chat message handled, marked so it is never handled again.
    pub processed: Option<String>,
    /// Written whatever else happens.
    pub audit: AuditRecord,
    /// The plugin's kv changes, validated before they are written.
    pub kv: Option<KvChanges>,
    /// Delivered after the commit, in order.
    pub messages: Vec<OutMessage>,
    /// Stored with their deliveries.
    pub events: Vec<NewEvent>,
    /// From `!role grant` / `!role revoke`.
    pub roles: Vec<RoleChange>,
    /// For event deliveries: what became of it.
    pub delivery: Option<DeliveryUpdate>,
    /// Schedules the plugin added or removed.
    pub schedules: Vec<ScheduleChange>,
    /// For scheduled runs: where the schedule goes next.
    pub fired: Option<Fired>,
    /// HTTP requests to send after the commit.
    pub sends: Vec<NewSend>,
    /// For the HTTP sender: what became of a try.
    pub sent: Option<SendUpdate>,
    /// Jobs started or cancelled.
    pub jobs: Vec<JobChange>,
    /// For the job runner: how a job ended.
    pub job_end: Option<JobEnd>,
}

impl Commit {
    /// A commit of only the audit record and the processed marker, plus
    /// the given messages (an error reply).
    pub fn only_audit(
        processed: Option<String>,
        audit: AuditRecord,
        messages: Vec<OutMessage>,
    ) -> Self {
        Self {
            processed,
            audit,
            kv: None,
            messages,
            events: Vec::new(),
            roles: Vec::new(),
            delivery: None,
            schedules: Vec::new(),
            fired: None,
            sends: Vec::new(),
            sent: None,
            jobs: Vec::new(),
            job_end: None,
        }
    }
}

impl Commit {
    /// What is left of `self` when the database refused it for what is in
    /// it (`why`): the processed marker, the schedule's move and the
    /// delivery's end still commit, with an audit row saying so and a
    /// reply to the command (`reply`, or a plain one), so the message or
    /// run is done once and nothing replays it forever.
    pub fn minimal(&self, why: &str, reply: Option<&str>) -> Self {
        let body = reply.map_or_else(
            || {
                "I could not store what this command did, so it changed nothing; \
                 the details are in the audit log."
                    .to_owned()
            },
            |r| format!("{r}. This command changed nothing."),
        );
        let reply = self
            .messages
            .iter()
            .find(|m| m.reply_to.is_some())
            .map(|m| OutMessage { body, ..m.clone() });
        let detail =
            format!("the database refused what this did, so only this record was kept: {why}");
        Self {
            processed: self.processed.clone(),
            audit: AuditRecord {
                outcome: super::Outcome::Error,
                detail: Some(detail.clone()),
                ..self.audit.clone()
            },
            kv: None,
            messages: reply.into_iter().collect(),
            events: Vec::new(),
            roles: Vec::new(),
            delivery: self.delivery.as_ref().map(|d| match d {
                DeliveryUpdate::Done {
                    event_id,
                    plugin,
                    attempts,
                }
                | DeliveryUpdate::Failed {
                    event_id,
                    plugin,
                    attempts,
                    ..
                } => DeliveryUpdate::Failed {
                    event_id: *event_id,
                    plugin: plugin.clone(),
                    attempts: *attempts,
                    error: detail.clone(),
                    give_up: true,
                    retry_at_ms: None,
                },
            }),
            schedules: Vec::new(),
            fired: self.fired.as_ref().map(|f| Fired {
                last: super::LastRun {
                    due_ms: f.last.due_ms,
                    outcome: "error".into(),
                    detail: Some(detail.clone()),
                },
                ..f.clone()
            }),
            sends: Vec::new(),
            sent: self.sent.clone(),
            jobs: Vec::new(),
            job_end: self.job_end.clone(),
        }
    }
}

/// Versions of kv rows: strictly increasing within the process and unlikely
/// to repeat across processes, so a delete and re-create never looks
/// unchanged to a concurrent reader.
fn next_stamp(now_ms: i64) -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let candidate = now_ms.saturating_mul(1000);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl Db {
    /// Commits `c` in one transaction. A commit the database refuses for
    /// what is in it is replaced by [`Commit::minimal`], so a poison value
    /// is recorded once instead of failing on every retry.
    pub async fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let result = self.commit_as_is(c).await;
        let result = match result {
            Err(StoreError::Refused(e)) => {
                let why = crate::text::one_line(&e.to_string());
                tracing::warn!("the database refused a commit ({why}); keeping only its record");
                self.commit_as_is(&c.minimal(&why, None)).await
            }
            Err(full @ StoreError::Full { .. }) => {
                let why = full.to_string();
                tracing::warn!("{why}");
                self.commit_as_is(&c.minimal(&why, Some(&why))).await
            }
            other => other,
        };
        match (&result, &c.kv) {
            (Ok(()), _) => self.committed(c),
            (Err(StoreError::Conflict), Some(kv)) => self.kv_copy.forget(&kv.namespace),
            _ => {}
        }
        result
    }

    /// Commits `c` as it is, in the writer's next transaction.
    async fn commit_as_is(&self, c: &Commit) -> Result<(), StoreError> {
        self.writer.commit(std::sync::Arc::new(c.clone())).await
    }
}

/// A handled message's marker; changes nothing if it was handled before.
pub(super) const PROCESSED: &str = "INSERT INTO processed_messages (message_id, processed_ms) \
     VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING";

/// Which of a commit's rows [`apply`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// All of them.
    All,
    /// All but its processed marker, replies and audit record, which were
    /// written for its whole batch (`grouped`).
    Own,
}

/// What [`apply`] wrote that the writer hands on once it committed.
#[derive(Debug)]
pub(super) struct Written {
    /// The outbox ids of the commit's messages, in their order.
    pub(super) ids: Vec<i64>,
    /// The version its kv writes got.
    pub(super) stamp: i64,
}

/// Writes `c` inside the writer's open transaction on `tx`; `usage`
/// bounds the kv namespaces for their quota. The outbox ids it gives are
/// none with [`Rows::Own`].
pub(super) async fn apply(
    tx: &mut Conn<'_>,
    c: &Commit,
    usage: &kv::Usage,
    rows: Rows,
) -> Result<Written, StoreError> {
    let now = c.audit.at_ms;
    let stamp = next_stamp(now);
    if let (Rows::All, Some(id)) = (rows, &c.processed) {
        let inserted = query(PROCESSED).bind(id).bind(now).execute(tx).await?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(id.clone()));
        }
    }
    if let Some(fired) = &c.fired {
        schedules::apply_fired(tx, fired).await?;
    }
    if let Some(changes) = &c.kv {
        kv::apply(tx, changes, stamp, usage).await?;
    }
    schedules::apply_changes(tx, &c.schedules, now).await?;
    let mut ids = Vec::new();
    if rows == Rows::All {
        for m in &c.messages {
            ids.push(outbox::insert(tx, m, now).await?);
        }
    }
    for send in &c.sends {
        http::insert(tx, send, now).await?;
    }
    if let Some(update) = &c.sent {
        http::update(tx, update, now).await?;
    }
    for change in &c.jobs {
        jobs::apply(tx, change, now).await?;
    }
    if let Some(end) = &c.job_end {
        jobs::end(tx, end, now).await?;
    }
    for e in &c.events {
        let id: i64 = query(
            "INSERT INTO events (created_ms, topic, payload, source_plugin, depth, root_id) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(now)
        .bind(&e.topic)
        .bind(&e.payload)
        .bind(&e.source_plugin)
        .bind(e.depth)
        .bind(e.root)
        .scalar(tx)
        .await?
        .ok_or_else(|| StoreError::Db("an inserted event has no id".into()))?;
        for plugin in &e.subscribers {
            query("INSERT INTO event_deliveries (event_id, plugin) VALUES ($1, $2)")
                .bind(id)
                .bind(plugin)
                .execute(tx)
                .await?;
        }
    }
    for r in &c.roles {
        match r {
            RoleChange::Grant { user, role, by } => query(
                "INSERT INTO roles (user_id, role, granted_by, granted_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, role) DO NOTHING",
            )
            .bind(user)
            .bind(role)
            .bind(by)
            .bind(now),
            RoleChange::Revoke { user, role } => {
                query("DELETE FROM roles WHERE user_id = $1 AND role = $2")
                    .bind(user)
                    .bind(role)
            }
        }
        .execute(tx)
        .await?;
    }
    if let Some(update) = &c.delivery {
        let (event_id, plugin, attempts, state, error, retry_at) = match update {
            DeliveryUpdate::Done {
                event_id,
                plugin,
                attempts,
            } => (event_id, plugin, attempts, "done", None, None),
            DeliveryUpdate::Failed {
                event_id,
                plugin,
                attempts,
                error,
                give_up,
                retry_at_ms,
            } => (
                event_id,
                plugin,
                attempts,
                if *give_up { "failed" } else { "pending" },
                Some(crate::text::storable(error, crate::text::MAX_AUDIT_FIELD).into_owned()),
                *retry_at_ms,
            ),
        };
        let updated = query(
            "UPDATE event_deliveries SET attempts = attempts + 1, state = $1, \
             last_error = COALESCE($2, last_error), next_attempt_ms = $6 \
             WHERE event_id = $3 AND plugin = $4 AND state = 'pending' AND attempts = $5",
        )
        .bind(state)
        .bind(error)
        .bind(*event_id)
        .bind(plugin)
        .bind(*attempts)
        .bind(retry_at)
        .execute(tx)
        .await?;
        if updated == 0 {
            return Err(StoreError::Duplicate(format!(
                "event {event_id} for {plugin}"
            )));
        }
    }
    if rows == Rows::All {
        audit::insert(tx, &c.audit).await?;
    }
    Ok(Written { ids, stamp })
}
