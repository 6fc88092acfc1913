//! The command table: every command name and alias, built-in or from a
//! plugin, mapped to its declaration and owner. Built once when plugins are
//! loaded and read-only afterwards.

use std::sync::Arc;

use crate::runtime::LoadedPlugin;
use crate::runtime::bindings::CommandSpec;
use crate::store::NewEvent;

/// Who answers a command.
#[derive(Debug, Clone)]
pub enum Owner {
    /// Answered by the host itself.
    Builtin,
    /// Answered by this plugin.
    Plugin(Arc<LoadedPlugin>),
}

impl Owner {
    /// The plugin's name, or `ikkyu` for built-ins.
    pub fn name(&self) -> &str {
        match self {
            Owner::Builtin => "ikkyu",
            Owner::Plugin(p) => &p.name,
        }
    }
}

/// One routable name.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The words this entry matches (the name or an alias).
    pub words: Vec<String>,
    pub spec: Arc<CommandSpec>,
    pub owner: Owner,
}

/// Every command the bot answers.
#[derive(Debug, Default)]
pub struct CommandTable {
    entries: Vec<Entry>,
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl CommandTable {
    /// Built-ins first, then plugins in load order. The plugins come through
    /// [`admit`], so no plugin command overlaps a built-in or another
    /// plugin's command and none can shadow `!help` or another plugin; a
    /// name already taken is still skipped with a warning, as a backstop.
    pub fn new(builtins: Vec<CommandSpec>, plugins: Vec<Arc<LoadedPlugin>>) -> Self {
        let mut table = Self {
            entries: Vec::new(),
            plugins: plugins.clone(),
        };
        for spec in builtins {
            table.add(Arc::new(spec), Owner::Builtin);
        }
        for plugin in plugins {
            for spec in &plugin.info.commands {
                table.add(Arc::new(spec.clone()), Owner::Plugin(plugin.clone()));
            }
        }
        table
    }

    fn add(&mut self, spec: Arc<CommandSpec>, owner: Owner) {
        for name in std::iter::once(&spec.name).chain(&spec.aliases) {
            let words: Vec<String> = name.split(' ').map(str::to_owned).collect();
            if let Some(taken) = self.entries.iter().find(|e| e.words == words) {
                tracing::warn!(
                    "command {name:?} of {} is ignored: {} already provides it",
                    owner.name(),
                    taken.owner.name()
                );
                continue;
            }
            self.entries.push(Entry {
                words,
                spec: spec.clone(),
                owner: owner.clone(),
            });
        }
    }

    /// The entry whose name matches the most leading words, and how many
    /// words the name took. Command words are matched case-insensitively.
    pub fn lookup(&self, words: &[String]) -> Option<(&Entry, usize)> {
        self.entries
            .iter()
            .filter(|e| {
                e.words.len() <= words.len()
                    && e.words
                        .iter()
                        .zip(words)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .max_by_key(|e| e.words.len())
            .map(|e| (e, e.words.len()))
    }

    /// Subcommands under `first` (for `!role` alone: `grant`, `revoke`).
    pub fn subcommands(&self, first: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                e.words.len() > 1
                    && e.words
                        .first()
                        .is_some_and(|w| w.eq_ignore_ascii_case(first))
            })
            .collect()
    }

    /// The closest known name to `word`, for "did you mean".
    pub fn closest(&self, word: &str) -> Option<String> {
        self.entries
            .iter()
            .map(|e| e.words.join(" "))
            .map(|name| (strsim::damerau_levenshtein(word, &name), name))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, name)| name)
    }

    /// Entries under their declared names (no aliases), in table order.
    pub fn commands(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.words.join(" ") == e.spec.name)
    }

    /// Loaded plugins, in load order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Plugins subscribed to `topic` (exact, or a `prefix.*` pattern).
    pub fn subscribers(&self, topic: &str, source: &str) -> Vec<String> {
        self.plugins
            .iter()
            // A plugin's own events reach it only if it asked for them.
            .filter(|p| *p.name != *source || p.info.own_events)
            .filter(|p| p.info.subscriptions.iter().any(|s| topic_matches(s, topic)))
            .map(|p| p.name.to_string())
            .collect()
    }

    /// Stores-ready events from what a call of `source` emitted, each with
    /// the plugins subscribed to its topic now.
    pub fn new_events(
        &self,
        emitted: Vec<(String, String)>,
        source: &str,
        depth: i64,
        root: Option<i64>,
    ) -> Vec<NewEvent> {
        emitted
            .into_iter()
            .map(|(topic, payload)| NewEvent {
                subscribers: self.subscribers(&topic, source),
                topic,
                payload,
                source_plugin: source.to_owned(),
                depth,
                root,
            })
            .collect()
    }

    /// The loaded plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| &*p.name == name)
    }
}

fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// The plugins that may serve, and those refused with the reason.
pub type Admitted = (Vec<Arc<LoadedPlugin>>, Vec<(Arc<LoadedPlugin>, String)>);

/// Which plugins may serve together: a plugin whose command or alias
/// overlaps a built-in's (`plugin reload points` would answer for
/// `!plugin reload`), or another plugin's (one is a word-for-word prefix of
/// the other), could answer commands meant for them, so it is refused.
/// Between two plugins the one named after the first word of the clash
/// keeps it (`points` keeps `points …`); otherwise the first by name does.
/// The same set always gives the same answer, at start and on reload.
pub fn admit(builtins: &[CommandSpec], mut plugins: Vec<Arc<LoadedPlugin>>) -> Admitted {
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let mut admitted: Vec<Arc<LoadedPlugin>> = Vec::new();
    let mut refused = Vec::new();
    'next: for p in plugins {
        for name in names(&p.info.commands) {
            for builtin in names(builtins) {
                if overlaps(&name, &builtin) {
                    let why = format!(
                        "its command `{}` overlaps the built-in `{}`; choose a name that does not begin with a built-in's",
                        name.join(" "),
                        builtin.join(" ")
                    );
                    refused.push((p, why));
                    continue 'next;
                }
            }
        }
        let mut evicted = Vec::new();
        for q in &admitted {
            let Some((first, mine, theirs)) = clash(&p.info.commands, &q.info.commands) else {
                continue;
            };
            let why = |loser: &str, l: &str, winner: &str, w: &str| {
                format!(
                    "its command `{l}` overlaps `{w}` of plugin {winner}, which would let one answer for the other; \
                     a plugin's commands may not begin with another plugin's (plugin {loser} is not served)"
                )
            };
            if *p.name == first && *q.name != first {
                evicted.push((q.clone(), why(&q.name, &theirs, &p.name, &mine)));
            } else {
                refused.push((p.clone(), why(&p.name, &mine, &q.name, &theirs)));
                continue 'next;
            }
        }
        admitted.retain(|q| !evicted.iter().any(|(e, _)| Arc::ptr_eq(e, q)));
        refused.extend(evicted);
        admitted.push(p);
    }
    (admitted, refused)
}

/// Every name and alias of `specs`, as words.
fn names(specs: &[CommandSpec]) -> Vec<Vec<String>> {
    specs
        .iter()
        .flat_map(|s| std::iter::once(&s.name).chain(&s.aliases))
        .map(|n| n.split(' ').map(str::to_ascii_lowercase).collect())
        .collect()
}

/// Whether one name is a word-for-word prefix of the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a.get(..n) == b.get(..n)
}

/// The first overlap between two plugins' commands: its first word and
/// both names.
fn clash(mine: &[CommandSpec], theirs: &[CommandSpec]) -> Option<(String, String, String)> {
    let theirs = names(theirs);
    names(mine).into_iter().find_map(|m| {
        let t = theirs.iter().find(|t| overlaps(&m, t))?;
        Some((m.first()?.clone(), m.join(" "), t.join(" ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, aliases: &[&str]) -> CommandSpec {
        CommandSpec {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            summary: String::new(),
            args: vec![],
            options: vec![],
            role: None,
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn longest_name_wins_and_aliases_route() {
        let t = CommandTable::new(
            vec![
                spec("points", &[]),
                spec("points give", &["reward"]),
                spec("help", &[]),
            ],
            vec![],
        );
        let (e, n) = t.lookup(&words("points give @a:x 5 r")).expect("give");
        assert_eq!((e.spec.name.as_str(), n), ("points give", 2));
        let (e, n) = t.lookup(&words("Points @a:x")).expect("points");
        assert_eq!((e.spec.name.as_str(), n), ("points", 1));
        let (e, _) = t.lookup(&words("reward @a:x")).expect("alias");
        assert_eq!(e.spec.name, "points give");
        assert!(t.lookup(&words("pints")).is_none());
        assert_eq!(t.closest("pints").as_deref(), Some("points"));
    }

    #[test]
    fn first_owner_keeps_a_name() {
        let t = CommandTable::new(vec![spec("help", &[]), spec("help", &["x"])], vec![]);
        assert_eq!(t.commands().count(), 1);
    }

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("release.*", "release.finished"));
        assert!(topic_matches("release.finished", "release.finished"));
        assert!(!topic_matches("release.*", "deploy.finished"));
        assert!(!topic_matches("release.finished", "release.finished.late"));
    }
}
