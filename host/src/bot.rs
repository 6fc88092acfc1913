//! The running bot: database, runtime, plugins and dispatcher put together,
//! and the delivery of what commits left behind (outbox messages and event
//! deliveries).
//!
//! Delivery happens only after a commit and is safe to repeat: a message
//! is marked delivered once the adapter accepted it, an event delivery is
//! marked done in the same transaction as its effects.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::Mutex;

use crate::attempt::{Attempts, Call, Ran};
use crate::chat::{ChatSink, Incoming, RoomKinds};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::directory::Directory;
use crate::dispatch::{Dispatcher, Handled, chat_text, detail_of, outcome_of};
use crate::outage::Outage;
use crate::registry::Registry;
use crate::runtime::{CallOutcome, CallState, LoadedPlugin, PluginError, Runtime};
use crate::schedule::{Pass, Scheduler};
use crate::store::{
    AuditRecord, Commit, Cutoffs, Db, Decision, DeliveryUpdate, OUTBOX_DUE_AT_MOST, OutMessage,
    Outcome, PendingMessage, Pruned, Target, Work, is_unavailable,
};

/// Events emitted by event handlers may cause further events; past this
/// depth they are dropped, so two plugins cannot ping-pong forever.
const MAX_EVENT_DEPTH: i64 = 8;
/// Events one chain (everything that descends from one command's or run's
/// event) may grow to: fan-out is bounded, not only depth.
const MAX_CHAIN_EVENTS: i64 = 1000;
/// A delivery that failed this many times is given up and left on record.
const MAX_DELIVERY_ATTEMPTS: i64 = 5;
/// A message the chat network failed to take this many times is given up,
/// kept on record and reported to the admins.
const MAX_SEND_ATTEMPTS: i64 = 10;
/// Longest wait before retrying a failed send or delivery.
const MAX_RETRY_DELAY_MS: i64 = 5 * 60 * 1000;
/// Rows fetched per delivery pass, and messages sent at once.
const BATCH: i64 = 100;
const PARALLEL_SENDS: usize = 8;
/// Longest sleep of the schedule and delivery loops between passes, so
/// work committed by other processes is seen.
const IDLE_PASS: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the schedule loop prunes records past their retention.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Everything the bot is made of.
pub struct Bot {
    /// The database, for callers that read state directly (CLI, tests).
    pub db: Db,
    config: Arc<Config>,
    dispatcher: Dispatcher,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    attempts: Arc<Attempts>,
    sink: Arc<dyn ChatSink>,
    clock: SharedClock,
    scheduler: Scheduler,
    /// Only one outbox pass at a time, so a message is not sent twice by
    /// two concurrent passes. Held only while delivering, never while a
    /// guest runs.
    flushing: Mutex<()>,
    /// Performs committed HTTP requests.
    sender: crate::http::sender::Sender,
    /// Runs the jobs plugins started.
    jobs: Arc<crate::jobs::Runner>,
    /// Whether the chat adapter is connected, as it last said.
    link: Arc<crate::chat::Link>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("db", &self.db.backend())
            .finish()
    }
}

impl Bot {
    /// Opens the database (migrating it; an unreachable database is waited
    /// for, not fatal), loads the plugins and gets ready to answer. Plugins
    /// that fail to load are reported and skipped.
    pub async fn start(
        config: &Config,
        sink: Arc<dyn ChatSink>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config.clone());
        let url = config.database_url()?;
        let mut outage = Outage::new("opening the database");
        let db = loop {
            match Db::open(&url).await {
                Ok(db) => break db,
                Err(e) if e.is_unavailable() => outage.wait(&e).await,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("opening the database {}", redact(&url)));
                }
            }
        };
        outage.over();
        let directory = Directory::new(db.clone(), config.roles.clone());
        let runtime = Arc::new(
            Runtime::new(&config, db.clone(), directory.clone(), clock.clone())?
                .with_rooms(RoomKinds::of(sink.clone())),
        );
        let registry = Arc::new(Registry::load(runtime.clone(), config.clone()).await?);
        let metrics = Arc::new(crate::metrics::Metrics::new()?);
        let attempts = Arc::new(Attempts::new(db.clone(), config.clone(), metrics));
        let dispatcher = Dispatcher::new(
            config.clone(),
            registry.clone(),
            runtime.clone(),
            directory,
            clock.clone(),
            attempts.clone(),
        );
        let scheduler = Scheduler::new(
            db.clone(),
            runtime.clone(),
            registry.clone(),
            clock.clone(),
            config.clone(),
            attempts.clone(),
        );
        let sender = crate::http::sender::Sender::new(
            db.clone(),
            attempts.clone(),
            registry.clone(),
            clock.clone(),
        );
        let jobs = Arc::new(crate::jobs::Runner::new(
            db.clone(),
            attempts.clone(),
            registry.clone(),
            clock.clone(),
            &config,
        )?);
        Ok(Self {
            db,
            config,
            dispatcher,
            runtime,
            registry,
            attempts,
            sink,
            clock,
            scheduler,
            flushing: Mutex::new(()),
            sender,
            jobs,
            link: Arc::default(),
        })
    }

    /// The one path from a plugin call to its commit, for callers outside
    /// the bot (webhooks).
    pub fn attempts(&self) -> &Arc<Attempts> {
        &self.attempts
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.attempts.metrics()
    }

    /// Whether the chat adapter is connected: the adapter sets it, the
    /// web entry point reads it.
    pub fn link(&self) -> &Arc<crate::chat::Link> {
        &self.link
    }

    /// The config the bot runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The wasm runtime, for calling plugins directly (benchmarks).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The plugins serving now; also how to reload one.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Names and versions of the loaded plugins.
    pub fn plugins(&self) -> Vec<(String, String)> {
        self.registry
            .current()
            .plugins()
            .iter()
            .map(|p| (p.name.to_string(), p.info.version.clone()))
            .collect()
    }

    /// Handles a message and delivers everything that resulted from it
    /// before returning: for the console and transcripts, where one person
    /// waits for each answer. A delivery that fails is logged and stays in
    /// the outbox; the answer is committed either way.
    pub async fn handle(&self, msg: &Incoming) -> anyhow::Result<Handled> {
        let handled = self.answer(msg).await?;
        self.flush_logged().await;
        Ok(handled)
    }

    /// Handles a message up to its commit and wakes the delivery loop
    /// ([`Bot::run_delivery`]), without waiting on any network send: for
    /// adapters where many rooms are answered at once. While the database
    /// is unavailable the commit is retried with growing pauses, so a
    /// command is answered late rather than lost or answered twice.
    pub async fn answer(&self, msg: &Incoming) -> anyhow::Result<Handled> {
        self.until_committed(|| self.dispatcher.handle(msg)).await
    }

    /// The bot's clock, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether `body` is addressed to the bot.
    pub fn addressed(&self, body: &str) -> bool {
        self.dispatcher.addressed(body)
    }

    /// Answers `msg` without running it (see [`Dispatcher::skip`]) and
    /// wakes the delivery loop.
    pub async fn skip(&self, msg: &Incoming, reply: String) -> anyhow::Result<Handled> {
        self.until_committed(|| self.dispatcher.skip(msg, reply.clone()))
            .await
    }

    /// Runs `commit` until it is not stopped by an unavailable database.
    async fn until_committed<F, Fut>(&self, commit: F) -> anyhow::Result<Handled>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Handled>>,
    {
        let mut outage = Outage::new("committing a command");
        loop {
            match commit().await {
                Ok(handled) => {
                    outage.over();
                    return Ok(handled);
                }
                Err(e) if e.chain().any(is_unavailable) => outage.wait(&*e).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs every schedule due now and delivers what the runs committed.
    /// The schedule loop calls this; tests call it after moving the clock.
    pub async fn run_due_schedules(&self) -> anyhow::Result<Pass> {
        let pass = self.scheduler.pass().await?;
        self.flush_logged().await;
        Ok(pass)
    }

    /// Runs schedules for as long as the bot runs: a pass whenever one is
    /// due, after any command (it may have added one), and at least every
    /// [`IDLE_PASS`] so changes by other processes are seen.
    pub async fn run_schedules(&self) {
        let mut outage = Outage::new("running schedules");
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                match self.prune().await {
                    Ok(()) => pruned = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!("pruning old records failed; trying again later: {e:#}")
                    }
                }
            }
            let wait = match backstop(self.scheduler.pass(), "a scheduler pass").await {
                Ok(pass) => {
                    outage.over();
                    if pass.busy > 0 {
                        std::time::Duration::from_secs(1)
                    } else {
                        let until = pass
                            .next_due_ms
                            .map_or(i64::MAX, |t| t - self.clock.now_ms());
                        std::time::Duration::from_millis(
                            u64::try_from(until.max(0)).unwrap_or(u64::MAX),
                        )
                        .min(IDLE_PASS)
                    }
                }
                Err(e) => outage.failed(&*e),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.db.rescheduled() => {}
                () = self.registry.swapped() => {}
            }
        }
    }

    /// Runs the jobs plugins start for as long as the bot runs (what they
    /// end with is delivered by the delivery loop, or by the next flush).
    pub async fn run_jobs(&self) {
        self.jobs.run().await;
    }

    /// Waits, at most `limit` in real time, until every job started so far
    /// (and any started by what their outcomes set off) has ended and its
    /// outcome was delivered: for transcripts, where the next line expects
    /// a rollout's results. Whether all ended in time.
    pub async fn settle_jobs(&self, limit: std::time::Duration) -> anyhow::Result<bool> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let all = self.jobs.settle(left).await?;
            self.flush().await?;
            if !all {
                return Ok(false);
            }
            if self.db.jobs_open().await? == 0 {
                return Ok(true);
            }
        }
    }

    /// Removes records older than `[retention]` allows.
    pub async fn prune(&self) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let r = &self.config.retention;
        let before = |d: std::time::Duration| {
            now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let pruned = self
            .db
            .prune(Cutoffs {
                audit_ms: before(r.audit),
                processed_ms: before(r.processed),
                outbox_ms: before(r.outbox),
                events_ms: before(r.events),
            })
            .await?;
        if pruned != Pruned::default() {
            tracing::info!(?pruned, "pruned records past their retention");
        }
        Ok(())
    }

    /// Delivers for as long as the bot runs: whenever a commit left
    /// something to deliver, when a retry is due, and at least every
    /// [`IDLE_PASS`]. Answering a command never waits on this.
    pub async fn run_delivery(&self) {
        tokio::join!(self.run_chat_delivery(), self.run_sends());
    }

    async fn run_chat_delivery(&self) {
        let mut outage = Outage::new("delivering messages and events");
        loop {
            let wait = match backstop(self.flush_chat(), "a delivery pass").await {
                Ok(()) => {
                    outage.over();
                    self.next_retry_in().await
                }
                Err(e) => outage.failed(&*e),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.db.deliverable() => {}
            }
        }
    }

    /// Sends committed HTTP requests beside the chat delivery, so a slow
    /// web service never holds up a message.
    async fn run_sends(&self) {
        let mut outage = Outage::new("sending HTTP requests");
        loop {
            let wait = match backstop(self.sender.pass(), "an HTTP send pass").await {
                Ok(_) => {
                    outage.over();
                    self.until(self.sender.next_due_ms().await)
                }
                Err(e) => outage.failed(&*e),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.db.sendable() => {}
            }
        }
    }

    /// When the earliest pending message, event delivery or HTTP send is
    /// due, ms since the epoch; none when nothing is pending.
    pub async fn next_effect_due_ms(&self) -> Option<i64> {
        let (chat, send) = tokio::join!(self.next_chat_due_ms(), self.sender.next_due_ms());
        chat.into_iter().chain(send).min()
    }

    async fn next_chat_due_ms(&self) -> Option<i64> {
        let (a, b) = tokio::join!(
            self.db.next_due(Work::Messages),
            self.db.next_due(Work::Deliveries)
        );
        [a.ok().flatten(), b.ok().flatten()]
            .into_iter()
            .flatten()
            .min()
    }

    /// How long until the earliest failed message or delivery is due again.
    async fn next_retry_in(&self) -> std::time::Duration {
        self.until(self.next_chat_due_ms().await)
    }

    /// The pause until `due` (ms since the epoch): at least 100 ms, at most
    /// [`IDLE_PASS`], which is also the pause when nothing is due.
    fn until(&self, due: Option<i64>) -> std::time::Duration {
        due.map_or(IDLE_PASS, |t| {
            let ms = u64::try_from((t - self.clock.now_ms()).max(100)).unwrap_or(0);
            std::time::Duration::from_millis(ms).min(IDLE_PASS)
        })
    }

    /// [`Bot::flush`], with a failure logged: what did not go out stays
    /// pending for the delivery loop or the next flush.
    pub async fn flush_logged(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!("delivering pending messages and events: {e:#}; they stay pending");
        }
    }

    /// Delivers pending messages and events and sends HTTP requests until
    /// nothing is left that can be done now (the console and transcripts
    /// wait for this); failures stay pending, with a time to try again.
    pub async fn flush(&self) -> anyhow::Result<()> {
        loop {
            self.flush_chat().await?;
            if !self.sender.pass().await? {
                return Ok(());
            }
        }
    }

    /// Delivers pending messages and events until nothing is left that can
    /// be delivered now.
    async fn flush_chat(&self) -> anyhow::Result<()> {
        loop {
            let sent = self.deliver_outbox().await?;
            let delivered = self.deliver_events().await?;
            if !sent && !delivered {
                return Ok(());
            }
        }
    }

    /// Sends every due message, each target's in order and a few targets
    /// at a time, until none is left: whether anything was sent.
    ///
    /// One pass at a time. A caller that finds a pass under way does not
    /// wait for it (waiting made concurrent commands take turns through
    /// every pass): the pass looks again after it lets go whenever a
    /// commit left messages since it began, so nothing is left behind.
    async fn deliver_outbox(&self) -> anyhow::Result<bool> {
        let mut progressed = false;
        loop {
            let Ok(guard) = self.flushing.try_lock() else {
                return Ok(progressed);
            };
            let Some(seen) = self.db.waiting(Work::Messages) else {
                return Ok(progressed);
            };
            progressed |= self.outbox_pass(seen).await?;
            drop(guard);
            if !matches!(self.db.waiting(Work::Messages), Some(now) if now != seen) {
                return Ok(progressed);
            }
        }
    }

    /// One pass of [`Bot::deliver_outbox`], from the mark `seen`.
    ///
    /// When a read was not cut short, every message it found went out and
    /// no commit left messages since the pass began, nothing can be due:
    /// the pass ends without reading again (the read that finds nothing
    /// was a database round trip per command on PostgreSQL).
    async fn outbox_pass(&self, seen: u64) -> anyhow::Result<bool> {
        use futures_util::StreamExt as _;
        let mut progressed = false;
        loop {
            let due = self.db.outbox_due(self.clock.now_ms()).await?;
            if due.is_empty() {
                self.db.none_due(Work::Messages, seen).await?;
                return Ok(progressed);
            }
            let (found, whole) = (due.len(), due.len() < OUTBOX_DUE_AT_MOST);
            let mut runs = futures_util::stream::iter(by_target(due))
                .map(|run| self.send_run(run))
                .buffer_unordered(PARALLEL_SENDS);
            let mut sent = 0;
            while let Some(n) = runs.next().await {
                sent += n?;
            }
            if sent == 0 {
                return Ok(progressed);
            }
            progressed = true;
            if whole && sent == found && self.db.waiting(Work::Messages) == Some(seen) {
                self.db.none_due(Work::Messages, seen).await?;
                return Ok(true);
            }
        }
    }

    /// Sends one target's due messages in order until one fails: how many
    /// went out. They are marked delivered together when the run ends
    /// (one writer turn for the run, not one each; a crash before that
    /// sends them again under the same keys, which the network drops), and
    /// an edit of a message sent earlier in the run takes its id from here.
    async fn send_run(&self, run: Vec<PendingMessage>) -> anyhow::Result<usize> {
        let mut sent: Vec<(i64, Option<String>)> = Vec::new();
        let mut remote_ids: Vec<(String, String)> = Vec::new();
        let mut failed = None;
        for p in run {
            let (id, handle) = (p.id, p.message.handle.clone());
            match self.send(p, &remote_ids).await {
                Ok(Some(remote_id)) => {
                    if let (Some(handle), Some(remote)) = (handle, &remote_id) {
                        remote_ids.push((handle, remote.clone()));
                    }
                    sent.push((id, remote_id));
                }
                // The rest of this target waits for it.
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !sent.is_empty() {
            self.db.outbox_delivered(self.clock.now_ms(), &sent).await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(sent.len()),
        }
    }

    /// Sends one message: its id on the network once it went out (marking
    /// it delivered is the caller's), none if it did not. A failure is
    /// retried with growing delays; a permanent one, or the last allowed,
    /// gives it up, on record and reported to the admins once.
    /// `sent_before`: handles and network ids of messages just sent.
    async fn send(
        &self,
        mut p: PendingMessage,
        sent_before: &[(String, String)],
    ) -> anyhow::Result<Option<Option<String>>> {
        let key = format!("ikkyu-{}-{}", p.id, p.created_ms);
        if let Some(edit) = &mut p.message.edit {
            // Its original went to the same target before it, delivered or
            // given up: an edit never overtakes what it edits.
            edit.remote_id = match sent_before.iter().find(|(h, _)| *h == edit.of) {
                Some((_, remote)) => Some(remote.clone()),
                None => self.db.outbox_remote_id(&edit.of).await?,
            };
        }
        let e = match self.sink.deliver(&key, &p.message).await {
            Ok(remote_id) => return Ok(Some(remote_id)),
            Err(e) => e,
        };
        let attempts = p.attempts + 1;
        let now = self.clock.now_ms();
        if !e.permanent && attempts < MAX_SEND_ATTEMPTS {
            tracing::warn!(attempts, "{e}; trying again later");
            let retry = now.saturating_add(retry_delay_ms(attempts));
            self.db
                .outbox_failed(p.id, &e.to_string(), now, Some(retry))
                .await?;
            return Ok(None);
        }
        tracing::error!(attempts, "giving up a message: {e}");
        self.db
            .outbox_failed(p.id, &e.to_string(), now, None)
            .await?;
        let audit = AuditRecord {
            at_ms: now,
            kind: "delivery",
            actor: "host".into(),
            room: None,
            command: format!("message {} to {}", p.id, e.target),
            plugin: None,
            plugin_version: None,
            decision: Decision::NotChecked,
            outcome: Outcome::Error,
            detail: Some(format!("given up after {attempts} attempts: {}", e.message)),
            duration_us: 0,
        };
        // A notice about a notice to an admin that cannot be reached would
        // only fail the same way.
        let to_admin = matches!(&p.message.target, Target::User(u) if self.config.admins().contains(u))
            && p.message.reply_to.is_none();
        let notices = if to_admin {
            Vec::new()
        } else {
            let body = format!(
                "a message to {} could not be delivered after {attempts} attempts and was given up: {}",
                e.target, e.message
            );
            OutMessage::host_notice(self.config.admins(), &body)
        };
        self.attempts
            .settle(&Commit::only_audit(None, audit, notices), &key)
            .await?;
        Ok(None)
    }

    /// One pass over pending event deliveries, subscriber by subscriber, so
    /// one that cannot run now never holds up another: whether any
    /// delivery succeeded.
    async fn deliver_events(&self) -> anyhow::Result<bool> {
        let Some(seen) = self.db.waiting(Work::Deliveries) else {
            return Ok(false);
        };
        let subscribers = self.db.delivery_subscribers().await?;
        if subscribers.is_empty() {
            self.db.none_pending(Work::Deliveries, seen);
            return Ok(false);
        }
        let mut progressed = false;
        let table = self.registry.current();
        for subscriber in subscribers {
            let now = self.clock.now_ms();
            let pending = self.db.deliveries_pending(&subscriber, now, BATCH).await?;
            let plugin = table.plugin(&subscriber).cloned();
            for d in &pending {
                let started = Instant::now();
                let Some(plugin) = &plugin else {
                    let error = "the plugin is not loaded".to_owned();
                    let commit = self.failed_delivery(d, None, Outcome::Error, error, started);
                    self.attempts.settle(&commit, &d.topic).await?;
                    continue;
                };
                if plugin.health.is_quarantined() {
                    // Kept pending; delivered once the plugin is reloaded.
                    break;
                }
                let chain = self.db.chain_size(d.root).await?;
                let call = DeliveryCall {
                    bot: self,
                    d,
                    plugin,
                    table: &table,
                    started,
                    room_in_chain: usize::try_from(MAX_CHAIN_EVENTS - chain).unwrap_or(0),
                };
                let salt = format!("event {} for {}", d.event_id, d.plugin);
                match self.attempts.run(plugin, &salt, &call).await? {
                    Ran::Committed(Outcome::Ok) => progressed = true,
                    Ran::Committed(_) | Ran::Duplicate => {}
                    // Busy, the database away, or contended: this
                    // subscriber waits for the next pass, the others go on.
                    Ran::NotNow(_) | Ran::Contended => break,
                }
            }
        }
        Ok(progressed)
    }

    fn failed_delivery(
        &self,
        d: &crate::store::PendingDelivery,
        plugin: Option<&Arc<LoadedPlugin>>,
        outcome: Outcome,
        error: String,
        started: Instant,
    ) -> Commit {
        let attempts = d.attempts + 1;
        let give_up = attempts >= MAX_DELIVERY_ATTEMPTS;
        let update = DeliveryUpdate::Failed {
            event_id: d.event_id,
            plugin: d.plugin.clone(),
            attempts: d.attempts,
            error: error.clone(),
            give_up,
            retry_at_ms: (!give_up)
                .then(|| self.clock.now_ms().saturating_add(retry_delay_ms(attempts))),
        };
        let audit = self.event_audit(d, plugin, outcome, Some(error), started);
        Commit {
            delivery: Some(update),
            ..Commit::only_audit(None, audit, vec![])
        }
    }

    fn event_audit(
        &self,
        d: &crate::store::PendingDelivery,
        plugin: Option<&Arc<LoadedPlugin>>,
        outcome: Outcome,
        detail: Option<String>,
        started: Instant,
    ) -> AuditRecord {
        AuditRecord {
            at_ms: self.clock.now_ms(),
            kind: "event",
            actor: format!("plugin:{}", d.source_plugin),
            room: None,
            command: d.topic.clone(),
            plugin: Some(d.plugin.clone()),
            plugin_version: plugin.map(|p| p.info.version.clone()),
            decision: Decision::NotChecked,
            outcome,
            detail,
            duration_us: AuditRecord::micros_since(started),
        }
    }

    /// Reloads the plugin in `path` (from the folder watcher) and records
    /// the outcome; a failure is sent to every admin in the config, since
    /// nobody asked for this reload in chat.
    pub async fn reload_file(&self, path: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        let (outcome, detail, messages) = match self.registry.reload_path(path).await {
            Ok(r) => (
                Outcome::Ok,
                format!("{} {} loaded from {path:?}", r.name, r.new_version),
                vec![],
            ),
            Err(e) => {
                let body = format!(
                    "a new version of a plugin failed to load; the old version keeps serving: {e}"
                );
                let messages = OutMessage::host_notice(self.config.admins(), &body);
                (Outcome::Error, e.to_string(), messages)
            }
        };
        let audit = AuditRecord {
            at_ms: self.clock.now_ms(),
            kind: "reload",
            actor: "watcher".into(),
            room: None,
            command: format!("reload {}", path.display()),
            plugin: None,
            plugin_version: None,
            decision: Decision::NotChecked,
            outcome,
            detail: Some(detail),
            duration_us: AuditRecord::micros_since(started),
        };
        self.db
            .commit(&Commit::only_audit(None, audit, messages))
            .await?;
        self.flush_logged().await;
        Ok(())
    }

    /// Closes the database; the bot is unusable afterwards.
    pub async fn shutdown(&self) {
        self.db.close().await;
    }
}

/// One event delivery, for [`Attempts::run`].
struct DeliveryCall<'a> {
    bot: &'a Bot,
    d: &'a crate::store::PendingDelivery,
    plugin: &'a Arc<LoadedPlugin>,
    table: &'a crate::dispatch::CommandTable,
    started: Instant,
    /// Events the chain of this delivery may still grow by.
    room_in_chain: usize,
}

impl Call for DeliveryCall<'_> {
    type Value = Result<(), String>;

    fn run(&self) -> impl std::future::Future<Output = CallOutcome<Self::Value>> + Send {
        self.bot.runtime.event(
            self.plugin,
            self.d.topic.clone(),
            self.d.payload.clone(),
            self.d.source_plugin.clone(),
        )
    }

    fn returned(&self, value: Self::Value, mut state: CallState) -> Commit {
        let (bot, d, plugin) = (self.bot, self.d, self.plugin);
        if let Err(message) = value {
            return bot.failed_delivery(d, Some(plugin), Outcome::Error, message, self.started);
        }
        let depth = d.depth + 1;
        if depth > MAX_EVENT_DEPTH && !state.events.is_empty() {
            tracing::warn!(plugin = %plugin.name, "dropping events past depth {MAX_EVENT_DEPTH}");
            state.events.clear();
        }
        if state.events.len() > self.room_in_chain {
            tracing::warn!(
                plugin = %plugin.name,
                "dropping {} events: the chain from event {} reached {MAX_CHAIN_EVENTS} events",
                state.events.len() - self.room_in_chain,
                d.root
            );
            state.events.truncate(self.room_in_chain);
        }
        let audit = bot.event_audit(d, Some(plugin), Outcome::Ok, None, self.started);
        Commit {
            delivery: Some(DeliveryUpdate::Done {
                event_id: d.event_id,
                plugin: d.plugin.clone(),
                attempts: d.attempts,
            }),
            ..crate::attempt::with_effects(
                state,
                self.table,
                (depth, Some(d.root)),
                None,
                audit,
                None,
            )
        }
    }

    fn failed(&self, e: &PluginError, notices: Vec<OutMessage>) -> Commit {
        let error = format!("{}; {}", chat_text(e), detail_of(e));
        let mut commit = self.bot.failed_delivery(
            self.d,
            Some(self.plugin),
            outcome_of(e),
            error,
            self.started,
        );
        commit.messages = notices;
        commit
    }
}

/// Runs one pass of a loop that must outlive any bug in it: a panic in the
/// pass becomes an error of that pass, logged and retried like any other.
async fn backstop<T>(
    pass: impl std::future::Future<Output = anyhow::Result<T>>,
    what: &str,
) -> anyhow::Result<T> {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(pass).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("{what} panicked; it is tried again");
            Err(anyhow::anyhow!("{what} panicked"))
        }
    }
}

/// The delay before retry `attempts` + 1 of a send or delivery: doubling
/// from a second, at most [`MAX_RETRY_DELAY_MS`].
pub(crate) fn retry_delay_ms(attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    (1000i64 << shift).min(MAX_RETRY_DELAY_MS)
}

/// A database URL without its password, for messages: neither the one
/// in `user:password@` nor a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_owned(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    match rest.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.clone(),
        },
        None => url.clone(),
    }
}

/// Due messages grouped by target, each group in the order given, the
/// groups in the order of their first message.
fn by_target(due: Vec<PendingMessage>) -> Vec<Vec<PendingMessage>> {
    let mut runs: Vec<Vec<PendingMessage>> = Vec::new();
    for p in due {
        match runs.iter_mut().find(|run| {
            run.first()
                .is_some_and(|q| q.message.target == p.message.target)
        }) {
            Some(run) => run.push(p),
            None => runs.push(vec![p]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(
            super::redact("postgres://h/db?user=u&password=hunter2&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
    }
}
