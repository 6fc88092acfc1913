//! From a chat message to a committed answer: recognise, split, route,
//! check the role, bind arguments, run, commit.
//!
//! The role check happens before any plugin code runs. Every path ends in
//! exactly one commit that carries the processed-message marker and the
//! audit record, so each message is answered once and is always on record.
//! Nothing is delivered from here: replies go to the outbox.

mod args;
mod builtins;
#[cfg(test)]
mod fuzz;
mod parse;
mod table;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub use args::usage;
pub use table::{CommandTable, Owner, admit};

use crate::attempt::{Attempts, Call, Ran};
use crate::chat::Incoming;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::directory::Directory;
use crate::registry::Registry;
use crate::roles::Held;
use crate::runtime::bindings::{Arg, CommandError, CommandSpec, Invocation};
use crate::runtime::{CallOutcome, CallState, LoadedPlugin, PluginError, Runtime};
use crate::store::{AuditRecord, Commit, Db, Decision, OutMessage, Outcome, Target};

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
    attempts: Arc<Attempts>,
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
    /// The plugin (`ikkyu` for built-ins) and the declared command name,
    /// once routed: what the metrics count it under.
    routed: Option<(String, String)>,
}

impl Dispatcher {
    /// A dispatcher over the registry's plugins.
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        directory: Directory,
        clock: SharedClock,
        attempts: Arc<Attempts>,
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
            attempts,
        }
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
            routed: None,
        };
        let handled = self
            .refuse(&req, None, Decision::NotChecked, Outcome::Skipped, reply)
            .await?;
        Ok(self.counted(&req, handled))
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
        let mut req = Request {
            msg,
            line: line.to_owned(),
            started: Instant::now(),
            table: self.registry.current(),
            routed: None,
        };
        let handled = self.answer(&mut req, line).await?;
        Ok(self.counted(&req, handled))
    }

    /// A command answered, counted under its route.
    fn counted(&self, req: &Request<'_>, handled: Handled) -> Handled {
        if let Handled::Answered(outcome) = handled {
            let routed = req.routed.as_ref().map(|(p, c)| (p.as_str(), c.as_str()));
            self.attempts
                .metrics()
                .command(routed, outcome, req.started.elapsed());
        }
        handled
    }

    /// Everything after recognising `line` in `req`'s message, up to and
    /// including the commit.
    async fn answer(&self, req: &mut Request<'_>, line: &str) -> anyhow::Result<Handled> {
        let msg = req.msg;
        if let Some(reason) = unfit(msg, line) {
            tracing::info!(event = %crate::text::one_line(&msg.id), "refused a message: {reason}");
            return self
                .refuse(req, None, Decision::NotChecked, Outcome::Error, reason)
                .await;
        }
        let mut words = parse::Words::new(line);
        let head: Vec<String> = words
            .plain(MAX_NAME_WORDS)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let Some((entry, used)) = req.table.lookup(&head) else {
            let reply = self.unknown_reply(&req.table, &head);
            return self
                .refuse(req, None, Decision::NotChecked, Outcome::Unknown, reply)
                .await;
        };
        words.skip_plain(used);
        let spec = entry.spec.clone();
        let owner = entry.owner.clone();
        let plugin = match &owner {
            Owner::Builtin => "ikkyu".to_owned(),
            Owner::Plugin(p) => p.name.to_string(),
        };
        req.routed = Some((plugin, spec.name.clone()));
        let req = &*req;
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
                .refuse(req, Some(&owner), Decision::Denied, Outcome::Denied, reply)
                .await;
        }
        let args = match args::bind(&spec, words, &msg.room) {
            Ok(args) => args,
            Err(e) => {
                let reply = format!("{e}\nusage: `{}`", usage(&self.prefix, &spec));
                return self
                    .refuse(req, Some(&owner), Decision::Allowed, Outcome::Error, reply)
                    .await;
            }
        };
        match &owner {
            Owner::Builtin => self.run_builtin(req, &spec, &held, &args).await,
            Owner::Plugin(plugin) => self.run_plugin(req, plugin, &spec, &held, args).await,
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
            "unknown command {}.{hint} `{}help` lists the commands.",
            crate::text::quoted(&format!("{}{first}", self.prefix)),
            self.prefix
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
            reply_to: Some(req.msg.id.clone()),
            thread_root: req.msg.thread_root.clone(),
            ..OutMessage::to(Target::Room(req.msg.room.clone()), body)
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
            Some(marker(&req.msg.id)),
            self.audit(req, owner, decision, outcome, detail),
            vec![self.reply(req, reply)],
        );
        self.finish(commit).await
    }

    /// Commits an answer that carries no plugin reads.
    async fn finish(&self, commit: Commit) -> anyhow::Result<Handled> {
        let ran = self.attempts.settle(&commit, &commit.audit.command).await?;
        Ok(handled(ran))
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
                    Some(marker(&req.msg.id)),
                    self.audit(req, Some(&owner), Decision::Allowed, Outcome::Ok, None),
                    vec![self.reply(req, out.reply)],
                );
                commit.roles = out.roles;
                self.finish(commit).await
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
        let call = CommandCall {
            dispatcher: self,
            req,
            plugin,
            owner: owner.clone(),
            spec,
            held,
            args,
        };
        let reply = match self.attempts.run(plugin, &req.msg.id, &call).await? {
            ran @ (Ran::Committed(_) | Ran::Duplicate) => return Ok(handled(ran)),
            Ran::NotNow(e) => format!("`{}{}`: {e}", self.prefix, spec.name),
            Ran::Contended => {
                "too many changes to the same data at once; please try again".to_owned()
            }
        };
        self.refuse(req, Some(&owner), Decision::Allowed, Outcome::Error, reply)
            .await
    }

    fn effects_commit(
        &self,
        req: &Request<'_>,
        owner: &Owner,
        reply: String,
        state: CallState,
    ) -> Commit {
        crate::attempt::with_effects(
            state,
            &req.table,
            (0, None),
            Some(marker(&req.msg.id)),
            self.audit(req, Some(owner), Decision::Allowed, Outcome::Ok, None),
            Some(self.reply(req, reply)),
        )
    }
}

/// A plugin command, for [`Attempts::run`].
struct CommandCall<'a> {
    dispatcher: &'a Dispatcher,
    req: &'a Request<'a>,
    plugin: &'a Arc<LoadedPlugin>,
    owner: Owner,
    spec: &'a CommandSpec,
    held: &'a Held,
    args: Vec<Arg>,
}

impl Call for CommandCall<'_> {
    type Value = Result<String, CommandError>;

    fn run(&self) -> impl Future<Output = CallOutcome<Self::Value>> + Send {
        let d = self.dispatcher;
        let invocation = Invocation {
            message_id: self.req.msg.id.clone(),
            sender: self.req.msg.sender.clone(),
            room: self.req.msg.room.clone(),
            roles: self.held.to_vec(),
            now_ms: d.clock.now_ms(),
        };
        d.runtime.command(
            self.plugin,
            invocation,
            self.spec.name.clone(),
            self.args.clone(),
        )
    }

    fn returned(&self, value: Self::Value, state: CallState) -> Commit {
        let d = self.dispatcher;
        let (reply, outcome) = match value {
            Ok(reply) => return d.effects_commit(self.req, &self.owner, reply, state),
            Err(CommandError::Usage(m)) => (
                format!("{m}\nusage: `{}`", usage(&d.prefix, self.spec)),
                Outcome::Error,
            ),
            Err(CommandError::Denied(m)) => (m, Outcome::Denied),
            Err(CommandError::Failed(m)) => (m, Outcome::Error),
        };
        let audit = d.audit(
            self.req,
            Some(&self.owner),
            Decision::Allowed,
            outcome,
            Some(reply.clone()),
        );
        Commit::only_audit(
            Some(marker(&self.req.msg.id)),
            audit,
            vec![d.reply(self.req, reply)],
        )
    }

    fn failed(&self, e: &PluginError, notices: Vec<OutMessage>) -> Commit {
        let d = self.dispatcher;
        let chat = format!("`{}{}` failed: {}", d.prefix, self.spec.name, chat_text(e));
        let mut messages = vec![d.reply(self.req, chat)];
        messages.extend(notices);
        let audit = d.audit(
            self.req,
            Some(&self.owner),
            Decision::Allowed,
            outcome_of(e),
            Some(detail_of(e)),
        );
        Commit::only_audit(Some(marker(&self.req.msg.id)), audit, messages)
    }
}

/// Why a message cannot be taken as it came, checked before anything
/// reads it: a control character or a paste too long, or a sender or room
/// id outside the Matrix grammar (only a broken or hostile server sends
/// those).
fn unfit(msg: &Incoming, line: &str) -> Option<String> {
    if let Some(reason) = crate::text::refusal(line) {
        return Some(reason);
    }
    if !crate::roles::is_user_id(&msg.sender) {
        return Some(
            "I cannot take commands from this account: its user id is not a valid Matrix user id."
                .into(),
        );
    }
    if !crate::roles::is_room(&msg.room) {
        return Some(
            "I cannot take commands in this room: its id is not a valid Matrix room id.".into(),
        );
    }
    None
}

/// What a message's commit means to the adapter.
fn handled(ran: Ran) -> Handled {
    match ran {
        Ran::Committed(outcome) => Handled::Answered(outcome),
        Ran::Duplicate => Handled::Duplicate,
        // A refusal carries no optimistic reads, so only a database that
        // keeps failing serialization gets here; say it was answered
        // rather than loop.
        Ran::NotNow(_) | Ran::Contended => Handled::Answered(Outcome::Error),
    }
}

/// The processed-message marker of a message id: the id itself, or its
/// digest when a hostile server made it too long or odd to index.
pub fn marker(id: &str) -> String {
    if crate::text::is_id(id) {
        return id.to_owned();
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
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
        PluginError::Busy | PluginError::Unavailable(_) => Outcome::Error,
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
