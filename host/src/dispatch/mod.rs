//! From a chat message to a committed answer: recognise, split, route,
//! check the role, bind arguments, run, commit.
//!
//! The role check happens before any plugin code runs. Every path ends in
//! exactly one commit that carries the processed-message marker and the
//! audit record, so each message is answered once and is always on record.
//! Nothing is delivered from here: replies go to the outbox.

mod args;
mod builtins;
mod parse;
mod table;

use std::sync::Arc;
use std::time::Instant;

pub use args::usage;
pub use table::{CommandTable, Owner};

use crate::chat::Incoming;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::directory::Directory;
use crate::registry::Registry;
use crate::roles::Held;
use crate::runtime::bindings::{Arg, CommandError, CommandSpec, Invocation};
use crate::runtime::{CallState, LoadedPlugin, PluginError, Runtime};
use crate::store::{AuditRecord, Commit, Db, Decision, OutMessage, Outcome, StoreError, Target};

/// How many times a call whose reads went stale is re-run before giving up.
/// Each retry waits a random, growing moment so contenders spread out.
const CONFLICT_RETRIES: u32 = 32;
/// After this many conflicts a call queues in its plugin's retry lane.
const LANE_AFTER: u32 = 2;
/// Command names have at most this many words (`role grant`).
const MAX_NAME_WORDS: usize = 4;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Not addressed to the bot.
    Ignored,
    /// Already processed before; nothing was done.
    Duplicate,
    /// Answered and committed.
    Answered(Outcome),
}

/// Routes commands; shared by every adapter.
pub struct Dispatcher {
    pub(crate) prefix: String,
    bot_user: String,
    pub(crate) registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    db: Db,
    pub(crate) directory: Directory,
    clock: SharedClock,
    pub(crate) config: Arc<Config>,
    /// Per plugin: calls that already lost two commits to concurrent
    /// changes retry one at a time, so a hot key cannot starve anyone.
    /// First attempts never wait here; it is the contention fallback of
    /// optimistic concurrency, not a lock around plugin calls.
    /// Set when a commit stored events, so the bot looks for deliveries
    /// only when there can be some.
    pub(crate) events_hint: Arc<std::sync::atomic::AtomicBool>,
    retry_lanes: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The facts of one command, for its audit record and reply.
struct Request<'a> {
    msg: &'a Incoming,
    line: String,
    started: Instant,
    /// The plugins as they were when the command arrived; a reload while
    /// it runs does not change what it sees.
    table: Arc<CommandTable>,
}

impl Dispatcher {
    /// A dispatcher over the registry's plugins.
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        directory: Directory,
        clock: SharedClock,
    ) -> Self {
        Self {
            prefix: config.bot.prefix.clone(),
            bot_user: config.bot.user_id.clone(),
            registry,
            runtime,
            db: directory.db().clone(),
            directory,
            clock,
            config,
            events_hint: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            retry_lanes: std::sync::Mutex::default(),
        }
    }

    fn retry_lane(&self, plugin: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lanes = self
            .retry_lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes.entry(plugin.to_owned()).or_default().clone()
    }

    /// Whether `body` is addressed to the bot (prefix or mention), so an
    /// adapter knows if a message it must not run deserves an answer.
    pub fn addressed(&self, body: &str) -> bool {
        parse::recognise(body, &self.prefix, &self.bot_user).is_some()
    }

    /// Answers `msg` with `reply` without running it (a command too old to
    /// run, a message the adapter could not read), on record as skipped and
    /// marked processed like any answer, so it is said once.
    pub async fn skip(&self, msg: &Incoming, reply: String) -> anyhow::Result<Handled> {
        let line = parse::recognise(&msg.body, &self.prefix, &self.bot_user)
            .unwrap_or(&msg.body)
            .to_owned();
        let req = Request {
            msg,
            line,
            started: Instant::now(),
            table: self.registry.current(),
        };
        self.refuse(&req, None, Decision::NotChecked, Outcome::Skipped, reply)
            .await
    }

    /// The built-in command declarations.
    pub fn builtin_specs() -> Vec<CommandSpec> {
        builtins::specs()
    }

    /// Handles one message completely, up to and including the commit.
    pub async fn handle(&self, msg: &Incoming) -> anyhow::Result<Handled> {
        let Some(line) = parse::recognise(&msg.body, &self.prefix, &self.bot_user) else {
            return Ok(Handled::Ignored);
        };
        if msg.sender == self.bot_user {
            return Ok(Handled::Ignored);
        }
        // No "already processed?" query here: the marker is inserted in the
        // commit, which refuses a duplicate, and a plugin call has no
        // effect before its commit. That saves a round trip per command.
        let req = Request {
            msg,
            line: line.to_owned(),
            started: Instant::now(),
            table: self.registry.current(),
        };
        let mut words = parse::Words::new(line);
        let head: Vec<String> = match words.clone().take(MAX_NAME_WORDS).collect() {
            Ok(head) => head,
            Err(e) => {
                return self
                    .refuse(&req, None, Decision::NotChecked, Outcome::Error, e)
                    .await;
            }
        };
        let Some((entry, used)) = req.table.lookup(&head) else {
            let reply = self.unknown_reply(&req.table, &head);
            return self
                .refuse(&req, None, Decision::NotChecked, Outcome::Unknown, reply)
                .await;
        };
        words.by_ref().take(used).for_each(drop);
        let spec = entry.spec.clone();
        let owner = entry.owner.clone();
        let held = self.directory.held(&msg.sender).await?;
        if !held.satisfies(spec.role.as_deref()) {
            let reply = format!(
                "{}, you do not have permission to run `{}{}`: it needs the role `{}`. An admin can grant it with `{}role grant {} {}`.",
                msg.sender,
                self.prefix,
                spec.name,
                spec.role.as_deref().unwrap_or_default(),
                self.prefix,
                msg.sender,
                spec.role.as_deref().unwrap_or_default(),
            );
            return self
                .refuse(&req, Some(&owner), Decision::Denied, Outcome::Denied, reply)
                .await;
        }
        let args = match args::bind(&spec, words, &msg.room) {
            Ok(args) => args,
            Err(e) => {
                let reply = format!("{e}\nusage: `{}`", usage(&self.prefix, &spec));
                return self
                    .refuse(&req, Some(&owner), Decision::Allowed, Outcome::Error, reply)
                    .await;
            }
        };
        match &owner {
            Owner::Builtin => self.run_builtin(&req, &spec, &held, &args).await,
            Owner::Plugin(plugin) => self.run_plugin(&req, plugin, &spec, &held, args).await,
        }
    }

    fn unknown_reply(&self, table: &CommandTable, words: &[String]) -> String {
        let first = words.first().map(String::as_str).unwrap_or_default();
        let subs = table.subcommands(first);
        if !subs.is_empty() {
            let names: Vec<String> = subs
                .iter()
                .map(|e| format!("`{}{}`", self.prefix, e.words.join(" ")))
                .collect();
            return format!(
                "`{}{first}` needs a subcommand: {}",
                self.prefix,
                names.join(", ")
            );
        }
        let hint = match table.closest(first) {
            Some(name) => format!(" Did you mean `{}{name}`?", self.prefix),
            None => String::new(),
        };
        format!(
            "unknown command `{}{first}`.{hint} `{}help` lists the commands.",
            self.prefix, self.prefix
        )
    }

    fn audit(
        &self,
        req: &Request<'_>,
        owner: Option<&Owner>,
        decision: Decision,
        outcome: Outcome,
        detail: Option<String>,
    ) -> AuditRecord {
        let (plugin, version) = match owner {
            Some(Owner::Plugin(p)) => (Some(p.name.to_string()), Some(p.info.version.clone())),
            Some(Owner::Builtin) => (
                Some("ikkyu".to_owned()),
                Some(env!("CARGO_PKG_VERSION").to_owned()),
            ),
            None => (None, None),
        };
        AuditRecord {
            at_ms: self.clock.now_ms(),
            kind: "command",
            actor: req.msg.sender.clone(),
            room: Some(req.msg.room.clone()),
            command: req.line.clone(),
            plugin,
            plugin_version: version,
            decision,
            outcome,
            detail,
            duration_us: AuditRecord::micros_since(req.started),
        }
    }

    fn reply(&self, req: &Request<'_>, body: String) -> OutMessage {
        OutMessage {
            target: Target::Room(req.msg.room.clone()),
            body,
            reply_to: Some(req.msg.id.clone()),
            thread_root: req.msg.thread_root.clone(),
        }
    }

    /// Commits an answer that changes nothing but the audit log.
    async fn refuse(
        &self,
        req: &Request<'_>,
        owner: Option<&Owner>,
        decision: Decision,
        outcome: Outcome,
        reply: String,
    ) -> anyhow::Result<Handled> {
        let detail = (outcome != Outcome::Ok).then(|| reply.clone());
        let commit = Commit::only_audit(
            Some(req.msg.id.clone()),
            self.audit(req, owner, decision, outcome, detail),
            vec![self.reply(req, reply)],
        );
        self.finish(commit, outcome).await
    }

    /// Commits an answer that carries no plugin reads. A serialization
    /// conflict (PostgreSQL under concurrent commits) is retried: the same
    /// commit is still right, since nothing it contains was read optimistically.
    async fn finish(&self, commit: Commit, outcome: Outcome) -> anyhow::Result<Handled> {
        let mut attempt = 0;
        loop {
            match self.db.commit(&commit).await {
                Ok(()) => return Ok(Handled::Answered(outcome)),
                Err(StoreError::Duplicate(_)) => return Ok(Handled::Duplicate),
                Err(StoreError::Conflict) if attempt + 1 < CONFLICT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt, &commit.audit.command)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn run_builtin(
        &self,
        req: &Request<'_>,
        spec: &CommandSpec,
        held: &Held,
        args: &[Arg],
    ) -> anyhow::Result<Handled> {
        let owner = Owner::Builtin;
        match self
            .builtin(&req.table, &spec.name, &req.msg.sender, held, args)
            .await?
        {
            Err(e) => {
                self.refuse(req, Some(&owner), Decision::Allowed, Outcome::Error, e)
                    .await
            }
            Ok(out) => {
                let mut commit = Commit::only_audit(
                    Some(req.msg.id.clone()),
                    self.audit(req, Some(&owner), Decision::Allowed, Outcome::Ok, None),
                    vec![self.reply(req, out.reply)],
                );
                commit.roles = out.roles;
                self.finish(commit, Outcome::Ok).await
            }
        }
    }

    async fn run_plugin(
        &self,
        req: &Request<'_>,
        plugin: &Arc<LoadedPlugin>,
        spec: &CommandSpec,
        held: &Held,
        args: Vec<Arg>,
    ) -> anyhow::Result<Handled> {
        let owner = Owner::Plugin(plugin.clone());
        if plugin.health.is_quarantined() {
            let reply = format!(
                "plugin {} is quarantined after {} failures in a row; an admin can lift it with `{}plugin reload {}`",
                plugin.name,
                plugin.health.failures(),
                self.prefix,
                plugin.name
            );
            return self
                .refuse(req, Some(&owner), Decision::Allowed, Outcome::Error, reply)
                .await;
        }
        let mut lane = None;
        for attempt in 0..CONFLICT_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt, &req.msg.id)).await;
            }
            if attempt == LANE_AFTER {
                lane = Some(self.retry_lane(&plugin.name).lock_owned().await);
            }
            let invocation = Invocation {
                message_id: req.msg.id.clone(),
                sender: req.msg.sender.clone(),
                room: req.msg.room.clone(),
                roles: held.to_vec(),
                now_ms: self.clock.now_ms(),
            };
            let outcome = self
                .runtime
                .command(plugin, invocation, spec.name.clone(), args.clone())
                .await;
            let mut fault = None;
            let (reply, outcome_kind, detail) = match outcome.result {
                Ok(Ok(reply)) => {
                    plugin.health.succeeded();
                    let commit = self.effects_commit(req, &owner, reply, outcome.state);
                    match self.db.commit(&commit).await {
                        Ok(()) => {
                            if !commit.events.is_empty() {
                                self.events_hint
                                    .store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            return Ok(Handled::Answered(Outcome::Ok));
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(StoreError::Duplicate(_)) => return Ok(Handled::Duplicate),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Err(e)) => {
                    plugin.health.succeeded();
                    match e {
                        CommandError::Usage(m) => (
                            format!("{m}\nusage: `{}`", usage(&self.prefix, spec)),
                            Outcome::Error,
                            None,
                        ),
                        CommandError::Denied(m) => (m, Outcome::Denied, None),
                        CommandError::Failed(m) => (m, Outcome::Error, None),
                    }
                }
                Err(e) => {
                    tracing::warn!(plugin = %plugin.name, command = %req.line, "plugin call failed: {e:#}");
                    let kind = outcome_of(&e);
                    if !matches!(e, PluginError::Busy) {
                        fault = Some(match &e {
                            PluginError::Trap { cause, .. } => format!("crashed ({cause})"),
                            other => other.to_string(),
                        });
                    }
                    let chat = format!("`{}{}` failed: {}", self.prefix, spec.name, chat_text(&e));
                    (chat, kind, Some(detail_of(&e)))
                }
            };
            let detail = detail.or_else(|| Some(reply.clone()));
            let mut messages = vec![self.reply(req, reply)];
            if let Some(cause) = &fault
                && plugin.health.failed(self.config.runtime.quarantine_after)
            {
                messages.extend(self.quarantine_notice(plugin, cause));
            }
            let commit = Commit::only_audit(
                Some(req.msg.id.clone()),
                self.audit(req, Some(&owner), Decision::Allowed, outcome_kind, detail),
                messages,
            );
            return self.finish(commit, outcome_kind).await;
        }
        drop(lane);
        let reply = "too many changes to the same data at once; please try again".to_owned();
        self.refuse(req, Some(&owner), Decision::Allowed, Outcome::Error, reply)
            .await
    }

    /// Direct messages telling every admin (from the config) that a plugin
    /// was quarantined, why, and how to lift it.
    fn quarantine_notice(&self, plugin: &LoadedPlugin, last_error: &str) -> Vec<OutMessage> {
        tracing::error!(plugin = %plugin.name, "quarantined after {} failures in a row: {last_error}", plugin.health.failures());
        let body = format!(
            "plugin {} {} is quarantined after {} failures in a row; the last: {last_error}. `{}plugin reload {}` lifts it.",
            plugin.name,
            plugin.info.version,
            plugin.health.failures(),
            self.prefix,
            plugin.name
        );
        OutMessage::direct_to_each(self.config.admins(), &body)
    }

    fn effects_commit(
        &self,
        req: &Request<'_>,
        owner: &Owner,
        reply: String,
        state: CallState,
    ) -> Commit {
        let mut messages = vec![self.reply(req, reply)];
        messages.extend(state.messages);
        let events = req.table.new_events(state.events, &state.plugin, 0);
        Commit {
            processed: Some(req.msg.id.clone()),
            audit: self.audit(req, Some(owner), Decision::Allowed, Outcome::Ok, None),
            kv: Some(state.kv),
            messages,
            events,
            roles: Vec::new(),
            delivery: None,
            schedules: state.schedules,
            fired: None,
        }
    }
}

/// A jittered, exponentially growing pause before retry `attempt` (at
/// most ~64 ms), different for each message so contenders do not collide
/// again in lockstep.
fn backoff(attempt: u32, salt: &str) -> std::time::Duration {
    use std::hash::{BuildHasher, RandomState};
    let ceiling_us = 500u64 << attempt.min(6);
    let jitter = RandomState::new().hash_one((salt, attempt)) % ceiling_us;
    std::time::Duration::from_micros(ceiling_us / 2 + jitter / 2)
}

/// What chat is told about a failed call: short, and nothing from inside
/// the plugin that could leak data. The full error is in the audit log.
pub fn chat_text(e: &PluginError) -> String {
    match e {
        PluginError::Trap { .. } => "the plugin crashed; the details are in the audit log".into(),
        other => other.to_string(),
    }
}

/// The audit outcome of a failed call: a timeout, a crash (traps and
/// memory), or an error for load (`Busy`), which is not the plugin's fault.
pub fn outcome_of(e: &PluginError) -> Outcome {
    match e {
        PluginError::Timeout(_) => Outcome::Timeout,
        PluginError::Busy => Outcome::Error,
        PluginError::Trap { .. } | PluginError::OutOfMemory { .. } => Outcome::Trap,
    }
}

/// What the audit log keeps about a failed call.
pub fn detail_of(e: &PluginError) -> String {
    match e {
        PluginError::Trap { detail, .. } => format!("the plugin crashed: {detail}"),
        PluginError::OutOfMemory { detail, .. } => format!("{e}: {detail}"),
        other => other.to_string(),
    }
}
