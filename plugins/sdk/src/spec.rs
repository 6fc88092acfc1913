//! Builders for the plugin's declaration, so `describe()` reads as a list of
//! commands rather than a wall of struct literals.

use crate::bindings::ikkyu::plugin::types::{ArgSpec, FlagSpec};
use crate::{ArgKind, CommandSpec, PluginInfo};

/// Builds a [`PluginInfo`].
#[derive(Debug)]
pub struct Info(PluginInfo);

impl Info {
    /// A plugin called `name` at `version` (use `env!("CARGO_PKG_VERSION")`).
    pub fn new(name: &str, version: &str) -> Self {
        Self(PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            commands: Vec::new(),
            subscriptions: Vec::new(),
            own_events: false,
            schedules: Vec::new(),
            webhooks: Vec::new(),
        })
    }

    /// Adds a command.
    pub fn command(mut self, command: Command) -> Self {
        self.0.commands.push(command.0);
        self
    }

    /// Subscribes to a topic (`release.finished`, or `release.*`).
    pub fn subscribe(mut self, topic: &str) -> Self {
        self.0.subscriptions.push(topic.to_owned());
        self
    }

    /// Also receive the events this plugin emits itself (off by default).
    pub fn own_events(mut self) -> Self {
        self.0.own_events = true;
        self
    }

    /// A schedule the plugin always has (see [`crate::schedule_spec`]);
    /// the host adds, updates and removes stored ones to match at load.
    pub fn schedule(mut self, spec: crate::ScheduleSpec) -> Self {
        self.0.schedules.push(spec);
        self
    }

    /// A webhook served at `POST /hooks/<plugin>/<name>` once the operator
    /// gives it a secret; deliveries arrive in [`crate::Plugin::handle_webhook`].
    pub fn webhook(mut self, name: &str, summary: &str) -> Self {
        self.0.webhooks.push(crate::WebhookSpec {
            name: name.to_owned(),
            summary: summary.to_owned(),
        });
        self
    }

    /// The finished declaration.
    pub fn build(self) -> PluginInfo {
        self.0
    }
}

/// Builds a [`CommandSpec`].
#[derive(Debug)]
pub struct Command(CommandSpec);

impl Command {
    /// A command named `name` (several words for a subcommand) with a
    /// one-line summary for `!help`.
    pub fn new(name: &str, summary: &str) -> Self {
        Self(CommandSpec {
            name: name.to_owned(),
            aliases: Vec::new(),
            summary: summary.to_owned(),
            args: Vec::new(),
            options: Vec::new(),
            role: None,
        })
    }

    /// Another name for the command.
    pub fn alias(mut self, alias: &str) -> Self {
        self.0.aliases.push(alias.to_owned());
        self
    }

    /// Only callers with `role` may run it.
    pub fn role(mut self, role: &str) -> Self {
        self.0.role = Some(role.to_owned());
        self
    }

    fn push_arg(mut self, name: &str, kind: ArgKind, summary: &str, opt: bool, rep: bool) -> Self {
        self.0.args.push(ArgSpec {
            name: name.to_owned(),
            kind,
            optional: opt,
            repeated: rep,
            summary: summary.to_owned(),
        });
        self
    }

    /// A required positional argument.
    pub fn arg(self, name: &str, kind: ArgKind, summary: &str) -> Self {
        self.push_arg(name, kind, summary, false, false)
    }

    /// An optional positional argument; only optional ones may follow it.
    pub fn optional(self, name: &str, kind: ArgKind, summary: &str) -> Self {
        self.push_arg(name, kind, summary, true, false)
    }

    /// One or more values of the same kind; must be the last argument.
    pub fn repeated(self, name: &str, kind: ArgKind, summary: &str) -> Self {
        self.push_arg(name, kind, summary, false, true)
    }

    /// A `--name value` option.
    pub fn flag(mut self, name: &str, kind: ArgKind, summary: &str) -> Self {
        self.0.options.push(FlagSpec {
            name: name.to_owned(),
            kind: Some(kind),
            repeated: false,
            summary: summary.to_owned(),
        });
        self
    }

    /// A `--name value` option that may be given more than once
    /// (`--service a --service b`); [`crate::Args::texts`] reads them all.
    pub fn repeated_flag(mut self, name: &str, kind: ArgKind, summary: &str) -> Self {
        self.0.options.push(FlagSpec {
            name: name.to_owned(),
            kind: Some(kind),
            repeated: true,
            summary: summary.to_owned(),
        });
        self
    }

    /// A `--name` switch.
    pub fn switch(mut self, name: &str, summary: &str) -> Self {
        self.0.options.push(FlagSpec {
            name: name.to_owned(),
            kind: None,
            repeated: false,
            summary: summary.to_owned(),
        });
        self
    }
}
