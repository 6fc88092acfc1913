//! How builds read in chat: the one message each build edits as its
//! services finish, and `!build status`.

use crate::flow::{Build, State};

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// `1m 05s`, `12s`, `1h 02m`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Who set it off, in words.
fn trigger(b: &Build) -> String {
    match b.trigger.kind.as_str() {
        "command" => format!("asked by {}", b.trigger.by),
        "push" => format!("push by {}", b.trigger.by),
        "cron" => "on schedule".to_owned(),
        "follow-up" => format!("follow-up of {}", b.trigger.by),
        other => format!("{other} {}", b.trigger.by),
    }
}

/// The headline: number, environment, trigger, state.
fn headline(b: &Build) -> String {
    let (ok, bad) = b.tally();
    let state = if !b.is_done() {
        let total = b.units.len();
        let settled = b.units.values().filter(|u| u.state.is_settled()).count();
        format!("running, {settled} of {total} settled")
    } else if !b.built_any() {
        "nothing to build".to_owned()
    } else if bad == 0 {
        format!("done: {ok} green")
    } else {
        format!("done: {ok} green, {bad} failed")
    };
    format!("**Build {} in {}** ({}) — {state}", b.id, b.env, trigger(b))
}

/// One service's line (and its output tail when it failed).
fn line(name: &str, state: &State, why: &str, now_ms: i64) -> String {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    match state {
        State::Checking { .. } => format!("- {name}: checking for changes"),
        State::CheckFailed => format!("- {name}: not built, could not check for changes{why}"),
        State::Unchanged { since } => {
            format!(
                "- {name}: up to date, nothing changed since `{}`",
                short(since)
            )
        }
        State::Coalesced { into } => format!(
            "- {name}: already building in build {into}; the newer commit builds right after it{why}"
        ),
        State::Building {
            commit,
            author,
            started_ms,
            ..
        } => format!(
            "- {name}: building `{}` by {author}, {} so far{why}",
            short(commit),
            duration(now_ms - started_ms)
        ),
        State::Succeeded {
            commit,
            author,
            duration_ms,
        } => format!(
            "- {name}: ✅ green `{}` by {author} in {}{why}",
            short(commit),
            duration(*duration_ms)
        ),
        State::Failed {
            commit,
            author,
            duration_ms,
            outcome,
            tail,
        } => {
            let tail = tail.trim_end().replace("```", "'''");
            let mut text = format!(
                "- {name}: ❌ {outcome} `{}` by {author} after {}{why}",
                short(commit),
                duration(*duration_ms)
            );
            if !tail.is_empty() {
                text.push_str(&format!("\n  ```\n{tail}\n  ```"));
            }
            text
        }
    }
}

/// The build's message.
pub fn build(b: &Build, now_ms: i64) -> String {
    let mut lines = vec![headline(b)];
    lines.extend(
        b.units
            .iter()
            .map(|(name, u)| line(name, &u.state, &u.why, now_ms)),
    );
    lines.join("\n")
}

/// One line per build, for `!build status`.
pub fn brief(b: &Build) -> String {
    headline(b).replacen("**", "", 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Trigger, Unit};

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(65_000), "1m 05s");
        assert_eq!(duration(3_720_000), "1h 02m");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn a_finished_build_says_what_built_what_failed_and_why() {
        let mut b = Build::new(
            7,
            "dev",
            Trigger {
                kind: "push".into(),
                by: "Дмитрий".into(),
            },
            0,
            std::iter::empty(),
        );
        b.units.insert(
            "api".into(),
            Unit {
                state: State::Succeeded {
                    commit: "0123456789abcdef".into(),
                    author: "Ann".into(),
                    duration_ms: 80_000,
                },
                why: "changed: api/main.rs".into(),
            },
        );
        b.units.insert(
            "web".into(),
            Unit {
                state: State::Failed {
                    commit: "0123456789abcdef".into(),
                    author: "Ann".into(),
                    duration_ms: 3_000,
                    outcome: "failed".into(),
                    tail: "error: ``` boom".into(),
                },
                why: "shared file changed: Cargo.lock".into(),
            },
        );
        b.units.insert(
            "worker".into(),
            Unit {
                state: State::Unchanged {
                    since: "fedcba9876543210".into(),
                },
                why: String::new(),
            },
        );
        let text = build(&b, 0);
        assert!(
            text.starts_with("**Build 7 in dev** (push by Дмитрий) — done: 1 green, 1 failed"),
            "{text}"
        );
        assert!(
            text.contains("- api: ✅ green `0123456789` by Ann in 1m 20s (changed: api/main.rs)"),
            "{text}"
        );
        assert!(
            text.contains("- web: ❌ failed `0123456789` by Ann after 3s"),
            "{text}"
        );
        assert!(
            text.contains("error: ''' boom"),
            "a fence in the output cannot end ours: {text}"
        );
        assert!(
            text.contains("- worker: up to date, nothing changed since `fedcba9876`"),
            "{text}"
        );
    }
}
