//! A build: which services it looks at in one environment, and where each
//! one stands, from "checking for changes" to green or red. Pure: the
//! glue in `commands` reads and writes kv and starts the jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What set a build off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `command`, `push`, `cron` or `follow-up`.
    pub kind: String,
    /// Who or what: a user id, the pusher, the schedule, the build it follows.
    pub by: String,
}

/// One build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Its number.
    pub id: u64,
    /// The environment.
    pub env: String,
    /// What set it off.
    pub trigger: Trigger,
    /// Whether its services were named (built whether or not they changed).
    #[serde(default)]
    pub named: bool,
    /// When, ms since the epoch.
    pub created_ms: i64,
    /// The handle of its message in the environment's room.
    pub message: Option<String>,
    /// The services it looks at, by name.
    pub units: BTreeMap<String, Unit>,
    /// When its last service ended.
    pub ended_ms: Option<i64>,
}

/// One service within a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Where it stands.
    pub state: State,
    /// Why it is built (or not), in words.
    pub why: String,
}

/// Where a service stands in a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// Its repository is being checked for changes since `since` (its
    /// last green commit, or empty when it has none).
    Checking {
        /// The commit asked about.
        since: String,
    },
    /// The check could not be made; it was not built.
    CheckFailed,
    /// Nothing of it changed since its green commit.
    Unchanged {
        /// That commit.
        since: String,
    },
    /// Another build is building it; the newer commit follows in one
    /// build after that one.
    Coalesced {
        /// The build building it.
        into: u64,
    },
    /// Its build job runs.
    Building {
        /// The job's handle.
        job: String,
        /// The commit.
        commit: String,
        /// Its author.
        author: String,
        /// When it started.
        started_ms: i64,
    },
    /// Built green.
    Succeeded {
        /// The commit.
        commit: String,
        /// Its author.
        author: String,
        /// How long it took.
        duration_ms: i64,
    },
    /// Built red (or timed out, was cancelled, or lost with the host).
    Failed {
        /// The commit.
        commit: String,
        /// Its author.
        author: String,
        /// How long it took.
        duration_ms: i64,
        /// `failed`, `timed-out`, `cancelled` or `lost`.
        outcome: String,
        /// The last lines of its output.
        tail: String,
    },
}

impl State {
    /// Whether nothing more will happen to it in this build.
    pub fn is_settled(&self) -> bool {
        !matches!(self, State::Checking { .. } | State::Building { .. })
    }
}

impl Build {
    /// A new build of `services` in `env`, each being checked since its
    /// green commit (`since`, empty when none).
    pub fn new(
        id: u64,
        env: &str,
        trigger: Trigger,
        now_ms: i64,
        services: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let units = services
            .into_iter()
            .map(|(name, since)| {
                let unit = Unit {
                    state: State::Checking { since },
                    why: String::new(),
                };
                (name, unit)
            })
            .collect();
        Self {
            id,
            env: env.to_owned(),
            trigger,
            named: false,
            created_ms: now_ms,
            message: None,
            units,
            ended_ms: None,
        }
    }

    /// Whether every service is settled.
    pub fn is_done(&self) -> bool {
        self.units.values().all(|u| u.state.is_settled())
    }

    /// Whether any service was (or is being) built.
    pub fn built_any(&self) -> bool {
        self.units.values().any(|u| {
            matches!(
                u.state,
                State::Building { .. } | State::Succeeded { .. } | State::Failed { .. }
            )
        })
    }

    /// How many services built green and red.
    pub fn tally(&self) -> (usize, usize) {
        self.units
            .values()
            .fold((0, 0), |(ok, bad), u| match u.state {
                State::Succeeded { .. } => (ok + 1, bad),
                State::Failed { .. } => (ok, bad + 1),
                _ => (ok, bad),
            })
    }

    /// Marks the build ended if every service is settled; whether it just
    /// ended.
    pub fn settle(&mut self, now_ms: i64) -> bool {
        if self.ended_ms.is_none() && self.is_done() {
            self.ended_ms = Some(now_ms);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Trigger {
        Trigger {
            kind: "command".into(),
            by: "@ann:x".into(),
        }
    }

    #[test]
    fn a_build_ends_when_every_service_settled_and_counts_them() {
        let mut b = Build::new(
            1,
            "dev",
            trigger(),
            0,
            [
                ("api".to_owned(), String::new()),
                ("web".to_owned(), "abc".to_owned()),
            ],
        );
        assert!(!b.is_done());
        assert!(!b.settle(5));
        b.units.insert(
            "api".into(),
            Unit {
                state: State::Succeeded {
                    commit: "c".into(),
                    author: "a".into(),
                    duration_ms: 1,
                },
                why: String::new(),
            },
        );
        b.units.insert(
            "web".into(),
            Unit {
                state: State::Unchanged {
                    since: "abc".into(),
                },
                why: String::new(),
            },
        );
        assert!(b.settle(9));
        assert_eq!(b.ended_ms, Some(9));
        assert!(!b.settle(10), "ends once");
        assert_eq!(b.tally(), (1, 0));
        assert!(b.built_any());
    }
}
