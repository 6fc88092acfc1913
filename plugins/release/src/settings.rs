//! The operator's settings for the release queue (`[plugins.release.config]`),
//! with the defaults that make a fresh install follow `seeds/003`: the
//! seed's five signs of done work, reminders after 30 minutes, an overdue
//! ping after 2 hours.
//!
//! Only parsing and defaults live here; nothing talks to the host.

use ikkyu_plugin_sdk::Span;
use serde::Deserialize;

use crate::signs::Sign;

/// Everything the plugin reads from its config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The release room: every state change is posted there.
    pub room: Option<String>,
    /// An approver may accept their own request.
    pub self_accept: bool,
    /// Components of which only one release runs at a time.
    pub critical: Vec<String>,
    /// A request not accepted after this long is re-announced to the
    /// approvers…
    pub remind_after: Span,
    /// …and again every this long until it is accepted or cancelled.
    pub remind_every: Span,
    /// A started release not finished after this long pings its initiator
    /// and admin (and again every this long).
    pub overdue_after: Span,
    /// Where tickets live; none means requests are not checked.
    pub tracker: Option<Tracker>,
    /// The signs of done work; the seed's list when absent.
    pub signs: Option<Vec<Sign>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            room: None,
            self_accept: false,
            critical: Vec::new(),
            remind_after: Span(30 * 60),
            remind_every: Span(30 * 60),
            overdue_after: Span(2 * 3600),
            tracker: None,
            signs: None,
        }
    }
}

impl Settings {
    /// The signs that are switched on.
    pub fn active_signs(&self) -> Vec<Sign> {
        let all = match &self.signs {
            Some(signs) => signs.clone(),
            None => crate::signs::defaults(),
        };
        all.into_iter().filter(|s| s.enabled).collect()
    }
}

/// Which tracker, where, and how the ticket is moved after a release.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracker {
    /// `jira` or `gitlab`.
    pub kind: TrackerKind,
    /// The tracker's base URL, e.g. `https://jira.example.org`; must be
    /// one of the plugin's `http` origins.
    pub url: String,
    /// The `Authorization` (Jira) or `PRIVATE-TOKEN` (GitLab) header value,
    /// naming a secret: `Bearer {secret:tracker}`. None sends no token.
    pub auth: Option<String>,
    /// GitLab: the project (`group/name` or its numeric id) whose issue
    /// numbers `#12` mean.
    pub project: Option<String>,
    /// Jira's REST API version, 2 or 3 (3 writes comments as documents).
    #[serde(default = "two")]
    pub api: u8,
    /// After `finish`: where the ticket goes.
    #[serde(default)]
    pub done: Move,
    /// After `cancel`: where the ticket goes back to ("in development").
    #[serde(default)]
    pub cancelled: Move,
}

fn two() -> u8 {
    2
}

/// Which tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    /// Jira, REST v2 or v3.
    Jira,
    /// GitLab, REST v4.
    Gitlab,
}

/// How a ticket is moved: a Jira transition, or GitLab labels and state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Move {
    /// Jira: the id of the transition to apply.
    pub transition: Option<String>,
    /// GitLab: labels to add.
    pub add_labels: Vec<String>,
    /// GitLab: labels to remove.
    pub remove_labels: Vec<String>,
    /// GitLab: `close` or `reopen`.
    pub state_event: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let s: Settings = serde_json::from_str("{}").expect("empty config");
        assert_eq!(s.remind_after, Span(1800));
        assert_eq!(s.overdue_after, Span(7200));
        assert_eq!(s.active_signs().len(), 5);
    }

    #[test]
    fn spans_and_tracker() {
        let s: Settings = serde_json::from_value(serde_json::json!({
            "room": "!r:x",
            "remind_after": "10m",
            "remind_every": 120,
            "critical": ["billing"],
            "tracker": {"kind": "gitlab", "url": "https://git.x", "project": "a/b",
                        "done": {"add_labels": ["released"], "state_event": "close"}},
        }))
        .expect("config");
        assert_eq!(s.remind_after, Span(600));
        assert_eq!(s.remind_every, Span(120));
        assert_eq!(s.critical, vec!["billing".to_owned()]);
        let t = s.tracker.expect("tracker");
        assert_eq!(t.kind, TrackerKind::Gitlab);
        assert_eq!(t.done.state_event.as_deref(), Some("close"));
        assert!(t.cancelled.add_labels.is_empty() && t.cancelled.transition.is_none());
        let typo = serde_json::from_value::<Settings>(serde_json::json!({"remind": "1h"}));
        assert!(typo.is_err(), "unknown keys are errors");
    }
}
