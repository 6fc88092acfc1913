//! The running bot: database, runtime, plugins and dispatcher put together,
//! and the delivery of what commits left behind (outbox messages and event
//! deliveries).
//!
//! Delivery happens only after a commit and is safe to repeat: a message
//! is marked delivered once the adapter accepted it, an event delivery is
//! marked done in the same transaction as its effects.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::Mutex;

use crate::chat::{ChatSink, Incoming};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::directory::Directory;
use crate::dispatch::{Dispatcher, Handled, chat_text, detail_of, outcome_of};
use crate::registry::Registry;
use crate::runtime::{LoadedPlugin, Runtime};
use crate::schedule::{Pass, Scheduler};
use crate::store::{
    AuditRecord, Commit, Db, Decision, DeliveryUpdate, OutMessage, Outcome, StoreError,
};

/// Events emitted by event handlers may cause further events; past this
/// depth they are dropped, so two plugins cannot ping-pong forever.
const MAX_EVENT_DEPTH: i64 = 8;
/// A delivery that failed this many times is given up and left on record.
const MAX_DELIVERY_ATTEMPTS: i64 = 5;
/// Rows fetched per delivery pass.
const BATCH: i64 = 100;
/// Longest sleep of the schedule loop between passes.
const IDLE_PASS: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything the bot is made of.
pub struct Bot {
    /// The database, for callers that read state directly (CLI, tests).
    pub db: Db,
    config: Arc<Config>,
    dispatcher: Dispatcher,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    sink: Arc<dyn ChatSink>,
    clock: SharedClock,
    scheduler: Scheduler,
    /// Wakes the schedule loop early: a command or reload may have added
    /// or changed a schedule.
    poke: tokio::sync::Notify,
    /// Only one outbox flush at a time, so a message is not sent twice by
    /// two concurrent flushes. Held only while delivering, never while a
    /// guest runs.
    flushing: Mutex<()>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("db", &self.db.backend())
            .finish()
    }
}

impl Bot {
    /// Opens the database (migrating it), loads the plugins and gets ready
    /// to answer. Plugins that fail to load are reported and skipped.
    pub async fn start(
        config: &Config,
        sink: Arc<dyn ChatSink>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config.clone());
        let url = config.database_url()?;
        let db = Db::open(&url)
            .await
            .with_context(|| format!("opening the database {}", redact(&url)))?;
        let directory = Directory::new(db.clone(), config.roles.clone());
        let runtime = Arc::new(Runtime::new(
            &config,
            db.clone(),
            directory.clone(),
            clock.clone(),
        )?);
        let registry = Arc::new(Registry::load(runtime.clone(), config.clone()).await?);
        let dispatcher = Dispatcher::new(
            config.clone(),
            registry.clone(),
            runtime.clone(),
            directory,
            clock.clone(),
        );
        let scheduler = Scheduler::new(
            db.clone(),
            runtime.clone(),
            registry.clone(),
            clock.clone(),
            config.clone(),
        );
        Ok(Self {
            db,
            config,
            dispatcher,
            runtime,
            registry,
            sink,
            clock,
            scheduler,
            poke: tokio::sync::Notify::new(),
            flushing: Mutex::new(()),
        })
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

    /// Handles a message and delivers everything that resulted from it.
    pub async fn handle(&self, msg: &Incoming) -> anyhow::Result<Handled> {
        let handled = self.dispatcher.handle(msg).await?;
        self.deliver_answer(handled).await
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
    /// delivers the answer.
    pub async fn skip(&self, msg: &Incoming, reply: String) -> anyhow::Result<Handled> {
        let handled = self.dispatcher.skip(msg, reply).await?;
        self.deliver_answer(handled).await
    }

    /// Delivers what an answer committed; a duplicate committed nothing.
    async fn deliver_answer(&self, handled: Handled) -> anyhow::Result<Handled> {
        if matches!(handled, Handled::Answered(_)) {
            self.poke.notify_one();
            self.flush().await?;
        }
        Ok(handled)
    }

    /// Runs every schedule due now and delivers what the runs committed.
    /// The schedule loop calls this; tests call it after moving the clock.
    pub async fn run_due_schedules(&self) -> anyhow::Result<Pass> {
        let pass = self.scheduler.pass().await?;
        self.flush().await?;
        Ok(pass)
    }

    /// Runs schedules for as long as the bot runs: a pass whenever one is
    /// due, after any command (it may have added one), and at least every
    /// [`IDLE_PASS`] so changes by other processes are seen.
    pub async fn run_schedules(&self) {
        let mut failing_since: Option<Instant> = None;
        loop {
            let wait = match self.run_due_schedules().await {
                Ok(pass) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!("schedules run again after {:?}", since.elapsed());
                    }
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
                Err(e) => {
                    tracing::error!("running schedules failed, trying again in 5s: {e:#}");
                    failing_since.get_or_insert_with(Instant::now);
                    std::time::Duration::from_secs(5)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.poke.notified() => {}
            }
        }
    }

    /// Delivers pending messages and events until nothing is left that can
    /// be delivered now; failures stay pending for the next flush.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.deliver_outbox().await?;
        let hint = &self.dispatcher.events_hint;
        while hint.swap(false, Ordering::SeqCst) {
            let (progressed, unfinished) = self.deliver_events().await?;
            if unfinished {
                // Failed deliveries stay pending: look again at the next flush.
                hint.store(true, Ordering::SeqCst);
            }
            self.deliver_outbox().await?;
            if !progressed {
                break;
            }
            hint.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn deliver_outbox(&self) -> anyhow::Result<()> {
        let _guard = self.flushing.lock().await;
        loop {
            let pending = self.db.outbox_pending(BATCH).await?;
            let more = pending.len() as i64 == BATCH;
            for p in &pending {
                let key = format!("ikkyu-{}-{}", p.id, p.created_ms);
                if let Err(e) = self.sink.deliver(&key, &p.message).await {
                    if e.permanent {
                        tracing::error!(attempts = p.attempts + 1, "giving up a message: {e}");
                        let now = self.clock.now_ms();
                        self.db
                            .outbox_failed(p.id, &e.to_string(), Some(now))
                            .await?;
                        continue;
                    }
                    // Keep order: stop at the first failure and retry later.
                    tracing::warn!(attempts = p.attempts + 1, "{e}");
                    self.db.outbox_failed(p.id, &e.to_string(), None).await?;
                    return Ok(());
                }
                self.db.outbox_delivered(p.id, self.clock.now_ms()).await?;
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// One pass over pending event deliveries: whether any succeeded, and
    /// whether any is still pending afterwards.
    async fn deliver_events(&self) -> anyhow::Result<(bool, bool)> {
        let mut progressed = false;
        let mut unfinished = false;
        let table = self.registry.current();
        let pending = self.db.deliveries_pending(BATCH).await?;
        unfinished |= pending.len() as i64 == BATCH;
        for d in pending {
            let started = Instant::now();
            let Some(plugin) = table.plugin(&d.plugin).cloned() else {
                let error = "the plugin is not loaded".to_owned();
                let commit = self.failed_delivery(&d, None, Outcome::Error, error, started);
                self.db.commit_once(&commit).await?;
                continue;
            };
            for _ in 0..5 {
                if plugin.health.is_quarantined() {
                    // Kept pending; delivered once the plugin is reloaded.
                    unfinished = true;
                    break;
                }
                let out = self
                    .runtime
                    .event(&plugin, d.topic.clone(), d.payload.clone())
                    .await;
                let commit = match out.result {
                    Err(crate::runtime::PluginError::Busy) => {
                        unfinished = true;
                        break;
                    }
                    Ok(Ok(())) => {
                        plugin.health.succeeded();
                        let state = out.state;
                        let depth = d.depth + 1;
                        let events = if depth > MAX_EVENT_DEPTH {
                            if !state.events.is_empty() {
                                tracing::warn!(plugin = %plugin.name, "dropping events past depth {MAX_EVENT_DEPTH}");
                            }
                            Vec::new()
                        } else {
                            table.new_events(state.events, &plugin.name, depth)
                        };
                        Commit {
                            processed: None,
                            audit: self.event_audit(&d, Some(&plugin), Outcome::Ok, None, started),
                            kv: Some(state.kv),
                            messages: state.messages,
                            events,
                            roles: Vec::new(),
                            delivery: Some(DeliveryUpdate::Done {
                                event_id: d.event_id,
                                plugin: d.plugin.clone(),
                                attempts: d.attempts,
                            }),
                            schedules: state.schedules,
                            fired: None,
                        }
                    }
                    Ok(Err(message)) => {
                        self.failed_delivery(&d, Some(&plugin), Outcome::Error, message, started)
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %plugin.name, topic = %d.topic, "event handler failed: {}", detail_of(&e));
                        if plugin.health.failed(self.config.runtime.quarantine_after) {
                            tracing::error!(plugin = %plugin.name, "quarantined after {} failures in a row", plugin.health.failures());
                        }
                        let error = format!("{}; {}", chat_text(&e), detail_of(&e));
                        self.failed_delivery(&d, Some(&plugin), outcome_of(&e), error, started)
                    }
                };
                let ok = commit.kv.is_some();
                match self.db.commit(&commit).await {
                    Ok(()) => {
                        progressed |= ok;
                        unfinished |= !ok;
                        break;
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(StoreError::Duplicate(_)) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok((progressed, unfinished))
    }

    fn failed_delivery(
        &self,
        d: &crate::store::PendingDelivery,
        plugin: Option<&Arc<LoadedPlugin>>,
        outcome: Outcome,
        error: String,
        started: Instant,
    ) -> Commit {
        let update = DeliveryUpdate::Failed {
            event_id: d.event_id,
            plugin: d.plugin.clone(),
            attempts: d.attempts,
            error: error.clone(),
            give_up: d.attempts + 1 >= MAX_DELIVERY_ATTEMPTS,
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
                let messages = OutMessage::direct_to_each(self.config.admins(), &body);
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
        self.poke.notify_one();
        self.flush().await
    }

    /// Closes the database; the bot is unusable afterwards.
    pub async fn shutdown(&self) {
        self.db.close().await;
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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
    }
}
