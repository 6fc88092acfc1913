//! The operator's settings for deploys (`[plugins.deploy.config]`): the
//! services, their hosts by datacenter, canary, batch step, jobs per
//! phase, rollback plan and deploy windows; how long a confirmation may
//! take and how many deploys run at once (the seed's 15).
//!
//! Only parsing, checking and defaults live here; nothing talks to the
//! host except reading the clock's zone rules for windows.

use std::collections::BTreeMap;

use ikkyu_plugin_sdk::Span;
use serde::Deserialize;

use crate::flow::{Expiry, Plan};

/// Everything the plugin reads from its config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Deploys rolling out at once (static files to done); more wait.
    pub concurrency: usize,
    /// How long a confirmation may take, unless a service says otherwise.
    pub countdown: Span,
    /// How often the countdown message is edited with the time left.
    pub tick: Span,
    /// The services, by name.
    pub services: BTreeMap<String, Service>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 15,
            countdown: Span(160),
            tick: Span(20),
            services: BTreeMap::new(),
        }
    }
}

/// One service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Datacenters in rollout order.
    pub datacenters: Vec<Datacenter>,
    /// The host deployed alone first.
    #[serde(default)]
    pub canary: Option<String>,
    /// Hosts per batch.
    #[serde(default = "one")]
    pub step: usize,
    /// Whether it has static files, deployed before the canary.
    #[serde(default)]
    pub static_files: bool,
    /// Services whose static files it waits for (an earlier task of one of
    /// them must be past its static files).
    #[serde(default)]
    pub static_after: Vec<String>,
    /// The operator's jobs for each phase.
    pub jobs: PhaseJobs,
    /// Named groups of hosts, for the rollback plan.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// The rollback plan, in order.
    #[serde(default)]
    pub rollback: Vec<RollbackStep>,
    /// Ask again before each datacenter after the first.
    #[serde(default)]
    pub confirm_between_datacenters: bool,
    /// This service's countdown.
    #[serde(default)]
    pub countdown: Option<Span>,
    /// What an unconfirmed countdown means: `cancel` (the default) or
    /// `continue`.
    #[serde(default = "cancel")]
    pub on_expiry: Expiry,
    /// When deploys are allowed; outside, only ops with `--force`.
    #[serde(default)]
    pub window: Option<Window>,
}

fn one() -> usize {
    1
}

fn cancel() -> Expiry {
    Expiry::Cancel
}

/// A datacenter and its hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    /// Its name.
    pub name: String,
    /// Its hosts, in rollout order.
    pub hosts: Vec<String>,
}

/// The operator's job for each phase. Each is started with the
/// parameters `service`, `version`, `phase` and, for hosts, `host` and
/// `datacenter`; a job declares the ones it uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseJobs {
    /// Static files (needed if `static_files`).
    #[serde(default, rename = "static")]
    pub static_files: Option<String>,
    /// The canary host (default: `batch`).
    #[serde(default)]
    pub canary: Option<String>,
    /// Each host of a batch.
    pub batch: String,
}

/// One step of the rollback plan: a job over a group of hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackStep {
    /// The operator's job.
    pub job: String,
    /// `all`, `canary`, a datacenter's name or a group's.
    pub hosts: String,
}

/// Days and hours in a zone when deploys may start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// An IANA zone.
    pub zone: String,
    /// `mon` … `sun`.
    pub days: Vec<String>,
    /// `HH:MM-HH:MM`, local time.
    pub hours: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Words that are subcommands, so no service may be called them.
pub const RESERVED: &[&str] = &["queue", "status", "confirm", "cancel", "rollback"];

impl Settings {
    /// Every problem with the settings, in words for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        for (name, s) in &self.services {
            let bad = |what: String| Err(format!("service {name}: {what}"));
            if RESERVED.contains(&name.as_str()) {
                return bad(format!(
                    "`{name}` is a deploy subcommand; rename the service"
                ));
            }
            if s.step == 0 {
                return bad("step must be at least 1".into());
            }
            if s.datacenters.is_empty() {
                return bad("needs at least one datacenter with hosts".into());
            }
            let hosts = s.hosts();
            if let Some(c) = &s.canary
                && !hosts.contains(c)
            {
                return bad(format!("the canary {c} is not one of its hosts"));
            }
            if s.static_files && s.jobs.static_files.is_none() {
                return bad("has static files but no jobs.static".into());
            }
            for step in &s.rollback {
                if s.group(&step.hosts).is_none() {
                    return bad(format!(
                        "rollback hosts {:?} is not all, canary, a datacenter or a group",
                        step.hosts
                    ));
                }
            }
            for (group, members) in &s.groups {
                if let Some(h) = members.iter().find(|h| !hosts.contains(h)) {
                    return bad(format!(
                        "group {group} names {h}, which is not one of its hosts"
                    ));
                }
            }
            if let Some(w) = &s.window {
                w.check()
                    .map_err(|e| format!("service {name}: window: {e}"))?;
            }
        }
        Ok(())
    }

    /// The plan of service `name`.
    pub fn plan(&self, name: &str) -> Option<Plan> {
        let s = self.services.get(name)?;
        Some(Plan {
            static_files: s.static_files,
            canary: s.canary.clone(),
            canary_datacenter: s
                .datacenters
                .iter()
                .find(|d| s.canary.as_ref().is_some_and(|c| d.hosts.contains(c)))
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            datacenters: s
                .datacenters
                .iter()
                .map(|dc| {
                    let hosts: Vec<String> = dc
                        .hosts
                        .iter()
                        .filter(|h| Some(*h) != s.canary.as_ref())
                        .cloned()
                        .collect();
                    (
                        dc.name.clone(),
                        hosts
                            .chunks(s.step.max(1))
                            .map(<[String]>::to_vec)
                            .collect(),
                    )
                })
                .collect(),
            confirm_between: s.confirm_between_datacenters,
            countdown_ms: s.countdown.unwrap_or(self.countdown).ms(),
            on_expiry: s.on_expiry,
            rollback: s
                .rollback
                .iter()
                .map(|r| (r.job.clone(), s.group(&r.hosts).unwrap_or_default()))
                .collect(),
        })
    }
}

impl Service {
    /// Every host, in rollout order.
    pub fn hosts(&self) -> Vec<String> {
        self.datacenters
            .iter()
            .flat_map(|d| d.hosts.clone())
            .collect()
    }

    /// The hosts a rollback step's `hosts` names.
    fn group(&self, name: &str) -> Option<Vec<String>> {
        match name {
            "all" => Some(self.hosts()),
            "canary" => self.canary.clone().map(|c| vec![c]),
            other => self
                .datacenters
                .iter()
                .find(|d| d.name == other)
                .map(|d| d.hosts.clone())
                .or_else(|| self.groups.get(other).cloned()),
        }
    }

    /// The operator's job for `phase` (`static`, `canary`, `batch`).
    pub fn job(&self, phase: &str) -> Option<&str> {
        match phase {
            "static" => self.jobs.static_files.as_deref(),
            "canary" => Some(self.jobs.canary.as_deref().unwrap_or(&self.jobs.batch)),
            _ => Some(&self.jobs.batch),
        }
    }
}

impl Window {
    fn check(&self) -> Result<(), String> {
        self.span()?;
        if let Some(d) = self.days.iter().find(|d| !DAYS.contains(&d.as_str())) {
            return Err(format!("{d:?} is not a day; write mon, tue, … sun"));
        }
        ikkyu_plugin_sdk::time::zone(&self.zone).map(drop)
    }

    /// Minutes after midnight of the start and the end.
    fn span(&self) -> Result<(u32, u32), String> {
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (from, to) = self
            .hours
            .split_once('-')
            .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
            .ok_or_else(|| format!("{:?} is not hours like 10:00-18:00", self.hours))?;
        if from >= to {
            return Err(format!(
                "{:?}: the end must come after the start",
                self.hours
            ));
        }
        Ok((from, to))
    }

    /// Whether `now_ms` is inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        use ikkyu_plugin_sdk::time::chrono::{Datelike, Timelike};
        let (Ok(zone), Ok((from, to))) = (ikkyu_plugin_sdk::time::zone(&self.zone), self.span())
        else {
            return false;
        };
        let local = ikkyu_plugin_sdk::time::local(now_ms, zone);
        let day = DAYS
            .get(local.weekday().num_days_from_monday() as usize)
            .copied()
            .unwrap_or("");
        let minute = local.hour() * 60 + local.minute();
        self.days.iter().any(|d| d == day) && (from..to).contains(&minute)
    }

    /// How it reads: `mon–fri 10:00-18:00 Europe/Moscow`.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.days.join(","), self.hours, self.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: serde_json::Value) -> Result<Settings, String> {
        let s: Settings = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.check().map(|()| s)
    }

    fn web() -> serde_json::Value {
        serde_json::json!({
            "services": {"web": {
                "datacenters": [
                    {"name": "dc1", "hosts": ["w1", "w2", "w3", "w4"]},
                    {"name": "dc2", "hosts": ["w5", "w6", "w7"]}
                ],
                "canary": "w1", "step": 2,
                "jobs": {"batch": "deploy-host"},
                "groups": {"queue": ["w2", "w5"]},
                "rollback": [{"job": "undo-config", "hosts": "all"}, {"job": "undo-code", "hosts": "queue"}]
            }}
        })
    }

    #[test]
    fn a_plan_has_batches_of_step_without_the_canary() {
        let s = settings(web()).expect("valid");
        let p = s.plan("web").expect("web");
        assert_eq!(p.countdown_ms, 160_000, "the seed's 2:40");
        assert_eq!(
            p.datacenters[0].1,
            vec![
                vec!["w2".to_owned(), "w3".to_owned()],
                vec!["w4".to_owned()]
            ]
        );
        assert_eq!(p.datacenters[1].1.len(), 2);
        assert_eq!(
            p.rollback[1],
            (
                "undo-code".to_owned(),
                vec!["w2".to_owned(), "w5".to_owned()]
            )
        );
        assert_eq!(s.concurrency, 15);
        assert_eq!(s.services["web"].job("canary"), Some("deploy-host"));
    }

    #[test]
    fn mistakes_are_named() {
        let mut v = web();
        v["services"]["web"]["canary"] = "nope".into();
        assert!(
            settings(v)
                .expect_err("refused")
                .contains("canary nope is not one of its hosts")
        );
        let mut v = web();
        v["services"]["web"]["rollback"][0]["hosts"] = "front".into();
        assert!(settings(v).expect_err("refused").contains("rollback hosts"));
        let mut v = web();
        v["services"]["web"]["static_files"] = true.into();
        assert!(settings(v).expect_err("refused").contains("jobs.static"));
        let mut v = web();
        v["services"]["queue"] = v["services"]["web"].clone();
        assert!(settings(v).expect_err("refused").contains("subcommand"));
        let mut v = web();
        v["services"]["web"]["window"] =
            serde_json::json!({"zone": "Mars/Base", "days": ["mon"], "hours": "10:00-18:00"});
        assert!(settings(v).is_err());
        let mut v = web();
        v["services"]["web"]["window"] =
            serde_json::json!({"zone": "UTC", "days": ["mon"], "hours": "18:00-10:00"});
        assert!(
            settings(v)
                .expect_err("refused")
                .contains("end must come after")
        );
    }

    #[test]
    fn windows_are_read_in_their_zone() {
        let w = Window {
            zone: "Europe/Moscow".into(),
            days: vec!["mon".into(), "tue".into()],
            hours: "10:00-18:00".into(),
        };
        // 2026-11-30 is a Monday. 07:00 UTC is 10:00 in Moscow.
        let monday_7_utc = 1_796_022_000_000;
        assert!(w.contains(monday_7_utc));
        assert!(!w.contains(monday_7_utc - 60_000), "09:59 there");
        assert!(!w.contains(monday_7_utc + 8 * 3_600_000), "18:00 there");
        assert!(!w.contains(monday_7_utc + 5 * 86_400_000), "saturday");
    }
}
