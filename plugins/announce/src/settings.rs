//! The operator's settings: `[plugins.announce.config]`.
//!
//! ```toml
//! [plugins.announce.config]
//! default_zone = "Asia/Shanghai"
//!
//! [[plugins.announce.config.announcements]]
//! name = "standup"                 # its id; keep it when editing the rest
//! cron = "0 10 * * mon-fri"
//! zone = "Asia/Shanghai"           # optional, else default_zone
//! room = "!abc:example.org"
//! text = "Stand-up in 5 minutes"
//! ```

use serde::Deserialize;

/// The whole section; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Zone for schedules that name none.
    #[serde(default = "utc")]
    pub default_zone: String,
    /// Announcements that always exist.
    #[serde(default)]
    pub announcements: Vec<Declared>,
}

/// One announcement from the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    /// Stable name; the schedule's id is `config:<name>`.
    pub name: String,
    /// Five-field cron expression.
    pub cron: String,
    /// IANA zone; `default_zone` when absent.
    #[serde(default)]
    pub zone: Option<String>,
    /// Room id to post in.
    pub room: String,
    /// Markdown to post.
    pub text: String,
}

fn utc() -> String {
    "UTC".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_means_no_announcements_in_utc() {
        let s: Settings = serde_json::from_str("{}").expect("defaults");
        assert_eq!(s.default_zone, "UTC");
        assert!(s.announcements.is_empty());
        let e = serde_json::from_str::<Settings>(r#"{"announcements":[{"name":"x"}]}"#)
            .expect_err("missing fields");
        assert!(e.to_string().contains("cron"), "{e}");
    }
}
