//! How the queue reads in chat: `queue`, `show N`, `log`, and times.
//! Pure, so the wording is tested without a host.

use chrono::{DateTime, Utc};

use crate::flow::{Freeze, State};
use crate::record::Record;
use crate::signs::Outcome;

/// `ms` as `2026-12-03 17:40 UTC`.
pub fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// A length of time as people say it: `35 min`, `2 h 5 min`, `3 d 4 h`.
pub fn span(ms: i64) -> String {
    let min = ms.max(0) / 60_000;
    match min {
        0 => "under a minute".to_owned(),
        1..=59 => format!("{min} min"),
        60..=1439 if min % 60 == 0 => format!("{} h", min / 60),
        60..=1439 => format!("{} h {} min", min / 60, min % 60),
        _ if min % 1440 / 60 == 0 => format!("{} d", min / 1440),
        _ => format!("{} d {} h", min / 1440, min % 1440 / 60),
    }
}

/// `#3 REL-7 (billing)`, the way a request is named in messages.
pub fn name(r: &Record) -> String {
    format!("#{} {} ({})", r.request.n, r.link, r.request.component)
}

fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "✅",
        Outcome::Fail => "❌",
        Outcome::Unknown => "❔",
    }
}

/// The signs, one line each.
pub fn signs(r: &Record) -> Vec<String> {
    r.signs
        .iter()
        .map(|e| format!("{} {}: {}", mark(e.outcome), e.sign, e.reason))
        .collect()
}

/// One line of `!release queue`: number, ticket, initiator, component,
/// state, who holds it and why it waits.
pub fn queue_line(r: &Record, waits: Option<String>) -> String {
    let q = &r.request;
    let mut line = format!(
        "#{} {} · {} · {} · **{}**",
        q.n, r.link, q.component, q.initiator, q.state
    );
    if let Some(a) = &q.approver {
        line.push_str(&format!(" · accepted by {a}"));
    }
    if let Some(a) = &q.admin {
        line.push_str(&format!(" · admin {a}"));
    } else if q.needs_admin && q.state != State::Started {
        line.push_str(" · needs an admin");
    }
    if let Some(w) = waits {
        line.push_str(&format!(" · waits for {w}"));
    }
    line
}

/// A freeze as a line: `billing frozen until … by @olga: reason`.
pub fn freeze_line(f: &Freeze) -> String {
    format!(
        "🧊 {} frozen until {} by {}: {}",
        f.component,
        time(f.until_ms),
        f.by,
        f.reason
    )
}

/// `!release show N`.
pub fn show(r: &Record) -> String {
    let q = &r.request;
    let mut out = vec![format!(
        "**{}** — {} by {}{}",
        name(r),
        q.state,
        q.initiator,
        if q.needs_admin {
            ""
        } else {
            " (no admin needed)"
        }
    )];
    if let Some(d) = &r.docs {
        out.push(format!("docs: {d}"));
    }
    if let Some(d) = &r.rollback {
        out.push(format!("rollback plan: {d}"));
    }
    if !r.signs.is_empty() {
        out.push("Signs when requested:".to_owned());
        out.extend(signs(r).into_iter().map(|l| format!("- {l}")));
    }
    out.push("History:".to_owned());
    out.extend(r.history.iter().map(|e| {
        let mut line = format!("- {} {} by {}", time(e.at_ms), e.what, e.by);
        if let Some(n) = &e.note {
            line.push_str(&format!(" ({n})"));
        }
        line
    }));
    if !r.updates.is_empty() {
        out.push("Tracker:".to_owned());
        out.extend(
            r.updates
                .iter()
                .map(|u| format!("- {}: {}", u.what, u.outcome)),
        );
    }
    out.join("\n")
}

/// One line of `!release log`: who did what, when.
pub fn log_line(r: &Record) -> String {
    let steps: Vec<String> = r
        .history
        .iter()
        .map(|e| format!("{} by {} {}", e.what, e.by, time(e.at_ms)))
        .collect();
    format!(
        "#{} {} ({}): {}",
        r.request.n,
        r.link,
        r.request.component,
        steps.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Request;
    use crate::record::Entry;

    fn record() -> Record {
        Record {
            request: Request {
                n: 3,
                ticket: "REL-7".into(),
                component: "billing".into(),
                initiator: "@alice:x".into(),
                needs_admin: true,
                admin: None,
                approver: Some("@bob:x".into()),
                state: State::Accepted,
            },
            link: "[REL-7](https://jira.x/browse/REL-7)".into(),
            keys: vec!["REL-7".into()],
            docs: None,
            rollback: None,
            signs: vec![],
            history: vec![Entry {
                at_ms: 1_764_780_000_000,
                by: "@alice:x".into(),
                what: "requested".into(),
                from: None,
                note: None,
            }],
            updates: vec![],
        }
    }

    #[test]
    fn times_and_spans() {
        assert_eq!(time(0), "1970-01-01 00:00 UTC");
        assert_eq!(span(35 * 60_000), "35 min");
        assert_eq!(span(125 * 60_000), "2 h 5 min");
        assert_eq!(span(120 * 60_000), "2 h");
        assert_eq!(span((3 * 1440 + 240) * 60_000), "3 d 4 h");
        assert_eq!(span(-5), "under a minute");
    }

    #[test]
    fn queue_lines_say_who_and_why() {
        let line = queue_line(&record(), Some("an admin".into()));
        assert!(
            line.contains("#3 [REL-7](https://jira.x/browse/REL-7) · billing · @alice:x"),
            "{line}"
        );
        assert!(
            line.contains(
                "**accepted** · accepted by @bob:x · needs an admin · waits for an admin"
            ),
            "{line}"
        );
        let shown = show(&record());
        assert!(
            shown.contains("2025-12-03 16:40 UTC requested by @alice:x"),
            "{shown}"
        );
        assert!(log_line(&record()).starts_with("#3 [REL-7]"));
    }
}
