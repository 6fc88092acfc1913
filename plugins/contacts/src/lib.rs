//! The `contacts` plugin: who to ask about which module.
//!
//! A module has an ordered list of contacts; the first is the primary. The
//! seed's team kept this in a wiki page nobody found in an incident; here
//! it is one command away in the room where the question is asked.
//!
//! State in kv: `module/<name>` → the list of user ids.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod names;

use ikkyu_plugin_sdk::{
    ArgKind, Args, Command, CommandError, Info, Invocation, Plugin, PluginInfo, export_plugin,
    failed, kv, usage,
};

struct Contacts;

impl Plugin for Contacts {
    fn describe() -> PluginInfo {
        Info::new("contacts", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new(
                    "contacts",
                    "every module with its contacts, or one module's",
                )
                .optional(
                    "module",
                    ArgKind::Word,
                    "the module (default: all of them)",
                ),
            )
            .command(
                Command::new(
                    "contacts set",
                    "set a module's contacts; the first is the primary",
                )
                .arg(
                    "module",
                    ArgKind::Word,
                    "the module, e.g. frontend or billing-api",
                )
                .repeated("users", ArgKind::User, "its contacts, primary first")
                .role("admin"),
            )
            .command(
                Command::new("contacts rm", "remove a module and its contacts")
                    .arg("module", ArgKind::Word, "the module")
                    .role("admin"),
            )
            .build()
    }

    fn handle_command(_inv: Invocation, command: &str, args: Args) -> Result<String, CommandError> {
        let module = args.text("module").map(str::to_lowercase);
        match (command, module) {
            ("contacts", None) => list_all(),
            ("contacts", Some(m)) => show(&m),
            ("contacts set", Some(m)) => set(&m, &args.texts("users")),
            ("contacts rm", Some(m)) => remove(&m),
            (other, _) => Err(failed(format!("contacts has no command {other:?}"))),
        }
    }
}

export_plugin!(Contacts);

fn key(module: &str) -> String {
    format!("module/{module}")
}

fn modules() -> Result<Vec<(String, Vec<String>)>, CommandError> {
    Ok(kv::list::<Vec<String>>("module/")
        .map_err(failed)?
        .into_iter()
        .map(|(k, users)| (k.trim_start_matches("module/").to_owned(), users))
        .collect())
}

fn line(module: &str, users: &[String]) -> String {
    let mut people = users.iter();
    let primary = people
        .next()
        .map(|u| format!("{u} (primary)"))
        .unwrap_or_default();
    let rest: Vec<&str> = people.map(String::as_str).collect();
    if rest.is_empty() {
        format!("**{module}**: {primary}")
    } else {
        format!("**{module}**: {primary}, {}", rest.join(", "))
    }
}

fn list_all() -> Result<String, CommandError> {
    let all = modules()?;
    if all.is_empty() {
        return Ok(
            "no modules yet; an admin adds one with `contacts set <module> <@user> ...`".into(),
        );
    }
    let lines: Vec<String> = all
        .iter()
        .map(|(m, u)| format!("- {}", line(m, u)))
        .collect();
    let plural = if all.len() == 1 { "" } else { "s" };
    Ok(format!(
        "**Contacts of {} module{plural}**\n{}",
        all.len(),
        lines.join("\n")
    ))
}

fn show(module: &str) -> Result<String, CommandError> {
    if let Some(users) = kv::get::<Vec<String>>(&key(module)).map_err(failed)? {
        return Ok(line(module, &users));
    }
    let all = modules()?;
    let known: Vec<&str> = all.iter().map(|(m, _)| m.as_str()).collect();
    Err(usage(names::unknown("module", module, &known, "contacts")))
}

fn set(module: &str, users: &[&str]) -> Result<String, CommandError> {
    if !names::valid(module) {
        return Err(usage(format!(
            "{module:?} is not a module name: use letters, digits, `-`, `_`, `.` or `/`, at most {} characters",
            names::MAX
        )));
    }
    let mut unique: Vec<String> = Vec::new();
    for u in users {
        if !unique.iter().any(|x| x == u) {
            unique.push((*u).to_owned());
        }
    }
    if unique.is_empty() {
        return Err(usage("give at least one contact"));
    }
    let before = kv::get::<Vec<String>>(&key(module)).map_err(failed)?;
    kv::set(&key(module), &unique).map_err(failed)?;
    Ok(format!(
        "{} {}",
        if before.is_some() { "updated" } else { "added" },
        line(module, &unique)
    ))
}

fn remove(module: &str) -> Result<String, CommandError> {
    match kv::get::<Vec<String>>(&key(module)).map_err(failed)? {
        Some(users) => {
            kv::delete(&key(module));
            Ok(format!("removed **{module}** (was {})", users.join(", ")))
        }
        None => {
            let all = modules()?;
            let known: Vec<&str> = all.iter().map(|(m, _)| m.as_str()).collect();
            Err(usage(names::unknown("module", module, &known, "contacts")))
        }
    }
}
