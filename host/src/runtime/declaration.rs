//! Checks a plugin's `describe()` once at load, so the argument parser can
//! rely on well-formed declarations and a bad one is refused with a reason.

use std::collections::BTreeSet;

use super::bindings::{ArgKind, CommandSpec, PluginInfo};
use crate::roles::RoleName;

/// Ok when the declaration is usable; otherwise what is wrong with it.
pub fn check(info: &PluginInfo) -> Result<(), String> {
    if RoleName::parse(&info.name).is_err() {
        return Err(format!(
            "plugin name {:?} must be lowercase letters, digits and dashes",
            info.name
        ));
    }
    let mut seen = BTreeSet::new();
    for cmd in &info.commands {
        for name in std::iter::once(&cmd.name).chain(&cmd.aliases) {
            if !is_command_name(name) {
                return Err(format!("command name {name:?} must be lowercase words"));
            }
            if !seen.insert(name.clone()) {
                return Err(format!("command name {name:?} is declared twice"));
            }
        }
        check_command(cmd).map_err(|e| format!("command {:?}: {e}", cmd.name))?;
    }
    for pattern in &info.subscriptions {
        if !is_subscription(pattern) {
            return Err(format!(
                "subscription {pattern:?} must be a topic (`release.finished`) or a prefix of one \
                 ending in `.*` (`release.*`); a bare `*` would receive every event"
            ));
        }
    }
    let mut hooks = BTreeSet::new();
    for hook in &info.webhooks {
        if RoleName::parse(&hook.name).is_err() {
            return Err(format!(
                "webhook name {:?} must be lowercase letters, digits and dashes",
                hook.name
            ));
        }
        if !hooks.insert(hook.name.as_str()) {
            return Err(format!("webhook {:?} is declared twice", hook.name));
        }
    }
    let mut ids = BTreeSet::new();
    for spec in &info.schedules {
        if !ids.insert(spec.id.as_str()) {
            return Err(format!("schedule {:?} is declared twice", spec.id));
        }
        if let crate::runtime::bindings::When::Cron(_) = spec.when {
            // A declared one-shot in the past is only skipped; a bad cron
            // expression or zone is a broken plugin.
            crate::schedule::row(&info.name, spec, true, 0)
                .map_err(|e| format!("declared schedule {:?}: {e}", spec.id))?;
        }
    }
    Ok(())
}

/// A topic, or a topic prefix ending in `.*`, in the characters topics
/// use; never `*` alone.
fn is_subscription(pattern: &str) -> bool {
    let topic = pattern.strip_suffix(".*").unwrap_or(pattern);
    !topic.is_empty()
        && pattern.len() <= 128
        && topic
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

fn is_command_name(name: &str) -> bool {
    !name.is_empty()
        && name.split(' ').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn check_command(cmd: &CommandSpec) -> Result<(), String> {
    if let Some(role) = &cmd.role {
        RoleName::parse(role)?;
    }
    let mut optional_seen = false;
    for (i, arg) in cmd.args.iter().enumerate() {
        let last = i + 1 == cmd.args.len();
        if (arg.repeated || arg.kind == ArgKind::Text) && !last {
            return Err(format!(
                "argument {:?} takes the rest of the line, so it must be last",
                arg.name
            ));
        }
        if optional_seen && !arg.optional {
            return Err(format!(
                "required argument {:?} follows an optional one",
                arg.name
            ));
        }
        optional_seen |= arg.optional;
    }
    let mut names = BTreeSet::new();
    for name in cmd
        .args
        .iter()
        .map(|a| &a.name)
        .chain(cmd.options.iter().map(|f| &f.name))
    {
        if !names.insert(name) {
            return Err(format!("argument or flag {name:?} is declared twice"));
        }
    }
    Ok(())
}
