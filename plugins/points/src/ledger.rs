//! Pure logic of the points plugin: ranking, and turning events into point
//! changes. Nothing here touches the host, so it is unit-tested natively.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Points per event topic, from `[plugins.points.config.awards]`.
pub type Awards = BTreeMap<String, i64>;

/// The plugin's config section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_awards")]
    pub awards: Awards,
    /// Per topic family (`release`, `deploy`: the topic up to its first
    /// dot), the plugins whose events of that family award points, from
    /// `[plugins.points.config.sources]`.
    #[serde(default = "default_sources")]
    pub sources: Sources,
}

/// Plugin names trusted per topic family.
pub type Sources = BTreeMap<String, Vec<String>>;

/// `release.*` from the release plugin, `deploy.*` from the deploy plugin.
pub fn default_sources() -> Sources {
    [("release", "release"), ("deploy", "deploy")]
        .into_iter()
        .map(|(family, plugin)| (family.to_owned(), vec![plugin.to_owned()]))
        .collect()
}

/// Whether `source` may award points with `topic`.
pub fn trusted(sources: &Sources, topic: &str, source: &str) -> bool {
    let family = topic.split('.').next().unwrap_or_default();
    sources
        .get(family)
        .is_some_and(|plugins| plugins.iter().any(|p| p == source))
}

/// The amounts used when the operator configures none.
pub fn default_awards() -> Awards {
    [
        ("release.finished", 10),
        ("release.rolled-back", -5),
        ("release.cancelled", -3),
        ("deploy.finished", 5),
        ("deploy.rolled-back", -5),
        ("deploy.cancelled", -2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One change of a balance, as kept in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub user: String,
    pub delta: i64,
    pub reason: String,
    pub source: String,
    pub at_ms: i64,
}

impl Change {
    /// One line for `!points log`.
    pub fn describe(&self) -> String {
        let when = if self.at_ms > 0 {
            format_day(self.at_ms)
        } else {
            String::new()
        };
        format!(
            "{when}{} {:+} — {} ({})",
            self.user, self.delta, self.reason, self.source
        )
    }
}

fn format_day(ms: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm); the
    // plugin has no clock or time-zone library and needs none for a date.
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} ")
}

/// The change an event causes, if any: the topic must have an award, the
/// payload must name the person (`initiator`), and a cancellation costs
/// points only once the work was approved.
pub fn change_for_event(
    awards: &Awards,
    topic: &str,
    payload: &serde_json::Value,
) -> Option<Change> {
    let delta = *awards.get(topic)?;
    let user = payload.get("initiator")?.as_str()?.to_owned();
    if topic.ends_with(".cancelled")
        && payload.get("approved").and_then(|v| v.as_bool()) == Some(false)
    {
        return None;
    }
    let what = ["ticket", "service", "id"].iter().find_map(|k| {
        payload
            .get(*k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    });
    let reason = match what {
        Some(what) => format!("{topic} {what}"),
        None => topic.to_owned(),
    };
    Some(Change {
        user,
        delta,
        reason,
        source: format!("event {topic}"),
        at_ms: 0,
    })
}

/// The 1-based rank of `user` (ties share a rank), or none if the user has
/// no balance.
pub fn rank_of(all: &[(String, i64)], user: &str) -> Option<usize> {
    let mine = all.iter().find(|(u, _)| u == user)?.1;
    Some(1 + all.iter().filter(|(_, n)| *n > mine).count())
}

/// The first `n` places, highest first; ties share a rank and are ordered
/// by user id so the output is stable.
pub fn top(all: &[(String, i64)], n: usize) -> Vec<(usize, String, i64)> {
    let mut sorted: Vec<&(String, i64)> = all.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted
        .into_iter()
        .take(n)
        .map(|(user, points)| (rank_of(all, user).unwrap_or(0), user.clone(), *points))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Vec<(String, i64)> {
        vec![
            ("@a:x".into(), 5),
            ("@b:x".into(), 9),
            ("@c:x".into(), 5),
            ("@d:x".into(), -2),
        ]
    }

    #[test]
    fn ties_share_a_rank() {
        let all = table();
        assert_eq!(rank_of(&all, "@b:x"), Some(1));
        assert_eq!(rank_of(&all, "@a:x"), Some(2));
        assert_eq!(rank_of(&all, "@c:x"), Some(2));
        assert_eq!(rank_of(&all, "@d:x"), Some(4));
        assert_eq!(rank_of(&all, "@nobody:x"), None);
    }

    #[test]
    fn top_is_sorted_and_stable() {
        let got = top(&table(), 3);
        assert_eq!(
            got,
            vec![
                (1, "@b:x".into(), 9),
                (2, "@a:x".into(), 5),
                (2, "@c:x".into(), 5)
            ]
        );
    }

    #[test]
    fn only_configured_sources_are_trusted() {
        let s = default_sources();
        assert!(trusted(&s, "release.finished", "release"));
        assert!(trusted(&s, "deploy.rolled-back", "deploy"));
        assert!(!trusted(&s, "release.finished", "emitter"));
        assert!(!trusted(&s, "deploy.finished", "release"));
        assert!(!trusted(&s, "other.thing", "release"));
    }

    #[test]
    fn release_finished_awards_the_initiator() {
        let c = change_for_event(
            &default_awards(),
            "release.finished",
            &json!({"initiator": "@bob:x", "ticket": "REL-7"}),
        )
        .expect("a change");
        assert_eq!((c.user.as_str(), c.delta), ("@bob:x", 10));
        assert_eq!(c.reason, "release.finished REL-7");
    }

    #[test]
    fn cancellation_before_approval_costs_nothing() {
        let awards = default_awards();
        let before = json!({"initiator": "@bob:x", "approved": false});
        let after = json!({"initiator": "@bob:x", "approved": true});
        assert_eq!(
            change_for_event(&awards, "release.cancelled", &before),
            None
        );
        assert_eq!(
            change_for_event(&awards, "release.cancelled", &after).map(|c| c.delta),
            Some(-3)
        );
    }

    #[test]
    fn unknown_topics_and_anonymous_events_change_nothing() {
        let awards = default_awards();
        assert_eq!(
            change_for_event(&awards, "release.started", &json!({"initiator": "@b:x"})),
            None
        );
        assert_eq!(
            change_for_event(&awards, "release.finished", &json!({})),
            None
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(format_day(0), "1970-01-01 ");
        assert_eq!(format_day(1_795_000_000_000), "2026-11-18 ");
        assert_eq!(format_day(951_782_400_000), "2000-02-29 ");
    }
}
