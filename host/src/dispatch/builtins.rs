//! Commands the host answers itself: help, plugins and roles. They are
//! declared like plugin commands, so parsing, role checks, audit and the
//! transaction are the same for both.

use std::collections::BTreeMap;

use super::Dispatcher;
use super::args::{kind_name, usage};
use super::table::{CommandTable, Owner};
use crate::roles::{Held, RoleName};
use crate::runtime::bindings::{Arg, ArgKind, ArgSpec, CommandSpec, Value};
use crate::store::RoleChange;

/// What a built-in decided; committed like a plugin's effects.
#[derive(Debug, Default)]
pub struct BuiltinOutput {
    pub reply: String,
    pub roles: Vec<RoleChange>,
}

fn arg(name: &str, kind: ArgKind, optional: bool, summary: &str) -> ArgSpec {
    ArgSpec {
        name: name.into(),
        kind,
        optional,
        repeated: false,
        summary: summary.into(),
    }
}

fn command(name: &str, summary: &str, args: Vec<ArgSpec>, role: Option<&str>) -> CommandSpec {
    CommandSpec {
        name: name.into(),
        aliases: vec![],
        summary: summary.into(),
        args,
        options: vec![],
        role: role.map(str::to_owned),
    }
}

/// The built-in declarations.
pub fn specs() -> Vec<CommandSpec> {
    vec![
        command(
            "help",
            "the commands you may run, or the details of one",
            vec![arg(
                "command",
                ArgKind::Text,
                true,
                "a command name, e.g. points give",
            )],
            None,
        ),
        command(
            "plugins",
            "loaded plugins with their versions and state",
            vec![],
            None,
        ),
        command(
            "role grant",
            "give a user a role",
            vec![
                arg("user", ArgKind::User, false, "who"),
                arg("role", ArgKind::Word, false, "which role"),
            ],
            Some("admin"),
        ),
        command(
            "role revoke",
            "take a role granted in chat away from a user",
            vec![
                arg("user", ArgKind::User, false, "who"),
                arg("role", ArgKind::Word, false, "which role"),
            ],
            Some("admin"),
        ),
        command(
            "plugin reload",
            "load a plugin's .wasm again from disk, without a restart; lifts a quarantine",
            vec![arg(
                "name",
                ArgKind::Word,
                false,
                "the plugin's name, as !plugins shows it",
            )],
            Some("admin"),
        ),
        command(
            "audit",
            "the last audited actions: who, what, where, outcome",
            vec![arg(
                "n",
                ArgKind::Integer,
                true,
                "how many (default 10, at most 100)",
            )],
            Some("admin"),
        ),
        command(
            "schedules",
            "every durable schedule: plugin, id, when, next run in its zone, last outcome",
            vec![],
            Some("admin"),
        ),
        command(
            "jobs",
            "recent jobs with their state; with N, job N and the last lines of its output",
            vec![arg(
                "n",
                ArgKind::Integer,
                true,
                "a job number, as the list shows it",
            )],
            Some("ops"),
        ),
        command(
            "roles",
            "the roles of a user, or of everyone",
            vec![arg(
                "user",
                ArgKind::User,
                true,
                "whose roles (default: everyone's)",
            )],
            None,
        ),
    ]
}

fn text<'a>(args: &'a [Arg], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|a| a.name == name)
        .and_then(|a| match &a.value {
            Value::Text(t) => Some(t.as_str()),
            _ => None,
        })
}

impl Dispatcher {
    /// Runs built-in `name`; `Err` is a user mistake to reply with.
    pub(super) async fn builtin(
        &self,
        table: &CommandTable,
        name: &str,
        sender: &str,
        held: &Held,
        args: &[Arg],
    ) -> anyhow::Result<Result<BuiltinOutput, String>> {
        let reply = |reply: String| {
            Ok(Ok(BuiltinOutput {
                reply,
                roles: vec![],
            }))
        };
        match name {
            "help" => reply(match text(args, "command") {
                None => self.help_list(table, held),
                Some(cmd) => match self.help_one(table, cmd) {
                    Some(text) => text,
                    None => {
                        return Ok(Err(format!(
                            "there is no command {}; `{}help` lists them",
                            crate::text::quoted(&format!("{}{cmd}", self.prefix)),
                            self.prefix
                        )));
                    }
                },
            }),
            "plugins" => reply(self.plugins_text(table)),
            "role grant" | "role revoke" => {
                let (Some(user), Some(role)) = (text(args, "user"), text(args, "role")) else {
                    return Ok(Err("a user and a role are needed".into()));
                };
                self.role_change(name == "role grant", user, role, sender)
                    .await
            }
            "roles" => reply(self.roles_text(text(args, "user")).await?),
            "plugin reload" => {
                let name = text(args, "name").unwrap_or_default();
                Ok(match self.registry.reload_named(name).await {
                    Ok(r) => Ok(BuiltinOutput {
                        reply: match r.old_version {
                            Some(old) => format!("reloaded {} {old} → {}", r.name, r.new_version),
                            None => format!("loaded {} {}", r.name, r.new_version),
                        },
                        roles: vec![],
                    }),
                    Err(e) => Err(format!("reload failed; the old version keeps serving: {e}")),
                })
            }
            "audit" => {
                let n = args.iter().find_map(|a| match a.value {
                    Value::Integer(n) => Some(n),
                    _ => None,
                });
                match n.unwrap_or(10) {
                    n @ 1..=100 => reply(self.audit_text(n).await?),
                    n => Ok(Err(format!("n must be between 1 and 100, not {n}"))),
                }
            }
            "schedules" => reply(self.schedules_text(table).await?),
            "jobs" => {
                let now = self.clock.now_ms();
                let n = args.iter().find_map(|a| match a.value {
                    Value::Integer(n) => Some(n),
                    _ => None,
                });
                match n {
                    None => reply(crate::jobs::show::list(
                        &self.db.jobs_recent(20).await?,
                        now,
                    )),
                    Some(n) => match self.db.job(n).await? {
                        Some(job) => reply(crate::jobs::show::detail(&job, now)),
                        None => Ok(Err(format!(
                            "there is no job {n}; `{}jobs` lists the recent ones",
                            self.prefix
                        ))),
                    },
                }
            }
            other => Ok(Err(format!("built-in {other:?} is not implemented"))),
        }
    }

    fn help_list(&self, table: &CommandTable, held: &Held) -> String {
        let mut groups: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
        for e in table
            .commands()
            .filter(|e| held.satisfies(e.spec.role.as_deref()))
        {
            let owner = e.owner.name().to_owned();
            let key = (!matches!(e.owner, Owner::Builtin), owner);
            groups.entry(key).or_default().push(format!(
                "`{}` — {}",
                usage(&self.prefix, &e.spec),
                e.spec.summary
            ));
        }
        let mut out = String::from("**Commands you can run**");
        for ((_, owner), lines) in groups {
            out.push_str(&format!("\n\n**{owner}**\n{}", lines.join("\n")));
        }
        out.push_str(&format!(
            "\n\n`{}help <command>` shows the details of one.",
            self.prefix
        ));
        out
    }

    fn help_one(&self, table: &CommandTable, cmd: &str) -> Option<String> {
        let words: Vec<String> = cmd
            .trim_start_matches(&self.prefix)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let (entry, used) = table.lookup(&words)?;
        if used != words.len() {
            return None;
        }
        let spec = &entry.spec;
        let mut out = format!(
            "`{}` — {}\nfrom: {}",
            usage(&self.prefix, spec),
            spec.summary,
            entry.owner.name()
        );
        out.push_str(&format!(
            "\nrole: {}",
            spec.role.as_deref().unwrap_or("anyone")
        ));
        if !spec.aliases.is_empty() {
            let aliases: Vec<String> = spec
                .aliases
                .iter()
                .map(|a| format!("`{}{a}`", self.prefix))
                .collect();
            out.push_str(&format!("\naliases: {}", aliases.join(", ")));
        }
        for a in &spec.args {
            let opt = if a.optional { ", optional" } else { "" };
            out.push_str(&format!(
                "\n- `{}` ({}{opt}): {}",
                a.name,
                kind_name(a.kind),
                a.summary
            ));
        }
        for f in &spec.options {
            let kind = f.kind.map_or("switch", kind_name);
            out.push_str(&format!("\n- `--{}` ({kind}): {}", f.name, f.summary));
        }
        Some(out)
    }

    fn plugins_text(&self, table: &CommandTable) -> String {
        let mut lines: Vec<String> = table
            .plugins()
            .iter()
            .map(|p| {
                let state = if p.health.is_quarantined() {
                    format!(
                        "quarantined after {} failures in a row",
                        p.health.failures()
                    )
                } else {
                    "ok".to_owned()
                };
                let hooks: Vec<String> = p
                    .info
                    .webhooks
                    .iter()
                    .map(|h| {
                        let served = self
                            .config
                            .plugins
                            .get(&*p.name)
                            .is_some_and(|c| c.webhooks.contains_key(&h.name));
                        let how = if served {
                            "served"
                        } else {
                            "off until the config gives it a secret"
                        };
                        format!("{} ({how})", h.name)
                    })
                    .collect();
                let hooks = if hooks.is_empty() {
                    String::new()
                } else {
                    format!("; webhooks: {}", hooks.join(", "))
                };
                format!(
                    "- {} {} — {state} ({} commands{hooks})",
                    p.name,
                    p.info.version,
                    p.info.commands.len()
                )
            })
            .collect();
        // File names only: where the host keeps its files is for the
        // operator's log, not for the room.
        let folder = format!("{}/", self.config.plugins_dir().display());
        lines.extend(
            self.registry
                .failures()
                .iter()
                .map(|e| format!("- failed to load: {}", e.replace(&folder, ""))),
        );
        if lines.is_empty() {
            return "no plugins are loaded".into();
        }
        format!("**Plugins**\n{}", lines.join("\n"))
    }

    async fn role_change(
        &self,
        grant: bool,
        user: &str,
        role: &str,
        sender: &str,
    ) -> anyhow::Result<Result<BuiltinOutput, String>> {
        let known = &self.config.known_roles();
        let role = match RoleName::parse(role) {
            Ok(r) if known.contains(r.as_str()) => r,
            Ok(r) => {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                return Ok(Err(format!(
                    "{r} is not a role here; known roles: {} (define more under [roles] in the config)",
                    list.join(", ")
                )));
            }
            Err(e) => return Ok(Err(e)),
        };
        let role = role.to_string();
        let held = self.directory.held(user).await?;
        let from_config = self.directory.config_roles_of(user).contains(&role);
        let (change, reply) = match (grant, held.0.contains(&role)) {
            (true, true) => return Ok(Err(format!("{user} already has the role {role}"))),
            (false, false) => return Ok(Err(format!("{user} does not have the role {role}"))),
            (false, true) if from_config => {
                return Ok(Err(format!(
                    "{user} has {role} from the config file; remove them from [roles] {role} there"
                )));
            }
            (true, false) => (
                RoleChange::Grant {
                    user: user.into(),
                    role: role.clone(),
                    by: sender.into(),
                },
                format!("{user} now has the role {role}"),
            ),
            (false, true) => (
                RoleChange::Revoke {
                    user: user.into(),
                    role: role.clone(),
                },
                format!("{user} no longer has the role {role}"),
            ),
        };
        Ok(Ok(BuiltinOutput {
            reply,
            roles: vec![change],
        }))
    }

    async fn audit_text(&self, n: i64) -> anyhow::Result<String> {
        let rows = self.directory.db().audit_recent(n).await?;
        if rows.is_empty() {
            return Ok("the audit log is empty".into());
        }
        let lines: Vec<String> = rows
            .iter()
            .rev()
            .map(|e| {
                let when = chrono::DateTime::from_timestamp_millis(e.at_ms)
                    .map(|t| t.format("%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let plugin = match (&e.plugin, &e.plugin_version) {
                    (Some(p), Some(v)) => format!("{p} {v}"),
                    (Some(p), None) => p.clone(),
                    _ => "-".into(),
                };
                format!(
                    "{when} {} {} in {} — {plugin}, {} → **{}** ({:.1} ms)",
                    e.actor,
                    crate::text::quoted(&e.command),
                    e.room.as_deref().unwrap_or("-"),
                    e.decision,
                    e.outcome,
                    e.duration_us as f64 / 1000.0
                )
            })
            .collect();
        Ok(format!(
            "**Last {} audited actions**\n{}",
            rows.len(),
            lines.join("\n")
        ))
    }

    async fn schedules_text(&self, table: &CommandTable) -> anyhow::Result<String> {
        use crate::schedule::when::show;
        let rows = self.db.schedules_all().await?;
        if rows.is_empty() {
            return Ok("there are no schedules".into());
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let (when, zone) = match crate::schedule::when_of(r) {
                    Ok(w) => (w.describe(), w.zone()),
                    Err(e) => (format!("unreadable ({e})"), chrono_tz::Tz::UTC),
                };
                let next = r
                    .next_fire_ms
                    .map_or_else(|| "never".to_owned(), |n| show(n, zone));
                let state = match table.plugin(&r.plugin) {
                    None => " — **waiting: the plugin is not loaded**",
                    Some(p) if p.health.is_quarantined() => {
                        " — **waiting: the plugin is quarantined**"
                    }
                    Some(_) => "",
                };
                let last = match &r.last {
                    None => "not run yet".to_owned(),
                    Some(l) => format!(
                        "last {} → **{}**{}",
                        show(l.due_ms, zone),
                        l.outcome,
                        l.detail
                            .as_deref()
                            .map(|d| format!(" ({})", first_line(d)))
                            .unwrap_or_default()
                    ),
                };
                format!(
                    "- {}/`{}`{}: {when}; next **{next}**; {last}{state}",
                    r.plugin,
                    r.id,
                    if r.declared { " (declared)" } else { "" },
                )
            })
            .collect();
        let plural = if rows.len() == 1 { "" } else { "s" };
        Ok(format!(
            "**{} schedule{plural}**\n{}",
            rows.len(),
            lines.join("\n")
        ))
    }

    async fn roles_text(&self, user: Option<&str>) -> anyhow::Result<String> {
        let everyone = self.directory.everyone().await?;
        let mut by_user: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (u, role, source) in &everyone {
            if user.is_none_or(|wanted| wanted == u) {
                by_user
                    .entry(u)
                    .or_default()
                    .push(format!("{role} ({source})"));
            }
        }
        Ok(match (user, by_user.is_empty()) {
            (Some(u), true) => format!("{u} has no roles"),
            (None, true) => "nobody has a role yet".into(),
            _ => by_user
                .into_iter()
                .map(|(u, roles)| format!("{u}: {}", roles.join(", ")))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }
}

/// The first line of `text`, cut to a length that fits a list entry.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", line.get(..cut).unwrap_or(line)),
        None => line.to_owned(),
    }
}
