//! What `/metrics` tells an operator's Prometheus: counters kept in memory
//! as work is committed, and gauges read from the database when scraped.
//!
//! Counters follow the audit log: an action is counted when its record is
//! committed, by the code that committed it ([`crate::attempt::Attempts`]
//! for every plugin call and its commit, the dispatcher for commands,
//! which alone knows the declared command name). So a duplicate that
//! committed nothing is not counted, and a count never runs ahead of the
//! record. They restart from zero with the process, as Prometheus expects.
//! Gauges of waiting work (outbox, event deliveries, jobs) are read from
//! the database at each scrape, so they are right across restarts and for
//! work other processes committed.
//!
//! Label values are names the host or the operator chose (plugins,
//! declared commands, outcomes), never text from chat, so the number of
//! series stays bounded whatever people type.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::runtime::PluginError;
use crate::store::{AuditRecord, Backlog, Outcome};

/// Why the metrics could not be set up or written; a bug, never input.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The process's counters and the gauges filled at each scrape.
pub struct Metrics {
    registry: Registry,
    commands: IntCounterVec,
    command_seconds: HistogramVec,
    plugin_calls: IntCounterVec,
    quarantines: IntCounterVec,
    event_deliveries: IntCounterVec,
    outbox_given_up: IntCounter,
    schedule_runs: IntCounterVec,
    schedules_missed: IntCounterVec,
    http_effects: IntCounterVec,
    jobs_finished: IntCounterVec,
    webhooks: IntCounterVec,
    database_up: IntGauge,
    outbox_pending: IntGauge,
    deliveries_pending: IntGauge,
    jobs: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Command latency buckets, in seconds: a command answers in
/// milliseconds, a slow plugin in seconds, and the call timeout bounds it.
const COMMAND_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The states of a job not ended yet, each always written so that none
/// reads as missing when it has no jobs.
const OPEN_JOB_STATES: [&str; 2] = ["queued", "running"];

impl Metrics {
    /// Every metric, registered, with `ikkyu_build_info` set.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help)?);
        let command_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ikkyu_command_duration_seconds",
                    "Time from a command's arrival to its committed answer.",
                )
                .buckets(COMMAND_BUCKETS.to_vec()),
                &["plugin"],
            )?,
        )?;
        let outbox_given_up = registered(
            &registry,
            IntCounter::new(
                "ikkyu_outbox_given_up_total",
                "Chat messages given up after the chat network refused them too often.",
            )?,
        )?;
        let jobs = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "ikkyu_jobs",
                    "Jobs not ended yet, by state (queued, running).",
                ),
                &["state"],
            )?,
        )?;
        let build_info = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new("ikkyu_build_info", "The running ikkyu's version; always 1."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Self {
            commands: counter(
                "ikkyu_commands_total",
                "Commands answered, by plugin (ikkyu for built-ins, none when unknown), declared command and outcome.",
                &["plugin", "command", "outcome"],
            )?,
            command_seconds,
            plugin_calls: counter(
                "ikkyu_plugin_calls_total",
                "Plugin calls, by plugin and result: returned, trap, timeout, out_of_memory, busy, unavailable.",
                &["plugin", "result"],
            )?,
            quarantines: counter(
                "ikkyu_plugin_quarantines_total",
                "Times a plugin was quarantined after failing too often in a row.",
                &["plugin"],
            )?,
            event_deliveries: counter(
                "ikkyu_event_deliveries_total",
                "Events handed to subscribing plugins, by plugin and outcome.",
                &["plugin", "outcome"],
            )?,
            outbox_given_up,
            schedule_runs: counter(
                "ikkyu_schedule_runs_total",
                "Schedule runs, by plugin and outcome (skipped: missed by more than the grace).",
                &["plugin", "outcome"],
            )?,
            schedules_missed: counter(
                "ikkyu_schedule_missed_total",
                "Schedule runs skipped for being later than the grace.",
                &["plugin"],
            )?,
            http_effects: counter(
                "ikkyu_http_effects_total",
                "Tries of HTTP requests plugins sent after their commits, by plugin and outcome.",
                &["plugin", "outcome"],
            )?,
            jobs_finished: counter(
                "ikkyu_jobs_finished_total",
                "Jobs that ended, by plugin and outcome (ok: succeeded; error: failed, timed out, cancelled or lost).",
                &["plugin", "outcome"],
            )?,
            webhooks: counter(
                "ikkyu_webhook_requests_total",
                "Webhook deliveries, by plugin, webhook and outcome.",
                &["plugin", "hook", "outcome"],
            )?,
            database_up: gauge(
                "ikkyu_database_up",
                "Whether the database answered this scrape (1) or not (0).",
            )?,
            outbox_pending: gauge(
                "ikkyu_outbox_pending",
                "Chat messages committed and not yet delivered.",
            )?,
            deliveries_pending: gauge(
                "ikkyu_event_deliveries_pending",
                "Event deliveries to plugins not yet done.",
            )?,
            jobs,
            registry,
        })
    }

    /// A command answered: `routed` is its plugin and declared name when
    /// it was recognised.
    pub fn command(&self, routed: Option<(&str, &str)>, outcome: Outcome, took: Duration) {
        let (plugin, command) = routed.unwrap_or(("none", "none"));
        self.commands
            .with_label_values(&[plugin, command, outcome.as_str()])
            .inc();
        self.command_seconds
            .with_label_values(&[plugin])
            .observe(took.as_secs_f64());
    }

    /// One plugin call ended, returned or not.
    pub fn call(&self, plugin: &str, result: Result<(), &PluginError>) {
        let result = match result {
            Ok(()) => "returned",
            Err(PluginError::Trap { .. }) => "trap",
            Err(PluginError::Timeout(_)) => "timeout",
            Err(PluginError::OutOfMemory { .. }) => "out_of_memory",
            Err(PluginError::Busy) => "busy",
            Err(PluginError::Unavailable(_)) => "unavailable",
        };
        self.plugin_calls.with_label_values(&[plugin, result]).inc();
    }

    /// `plugin` was quarantined.
    pub fn quarantined(&self, plugin: &str) {
        self.quarantines.with_label_values(&[plugin]).inc();
    }

    /// A record was committed: counts the kinds of work that are counted
    /// by their record (commands are counted by the dispatcher).
    pub fn committed(&self, audit: &AuditRecord) {
        let plugin = audit.plugin.as_deref().unwrap_or("none");
        let outcome = audit.outcome.as_str();
        match audit.kind {
            "schedule" => {
                self.schedule_runs
                    .with_label_values(&[plugin, outcome])
                    .inc();
                if audit.outcome == Outcome::Skipped {
                    self.schedules_missed.with_label_values(&[plugin]).inc();
                }
            }
            "event" => self
                .event_deliveries
                .with_label_values(&[plugin, outcome])
                .inc(),
            "http" => self
                .http_effects
                .with_label_values(&[plugin, outcome])
                .inc(),
            "job" => self
                .jobs_finished
                .with_label_values(&[plugin, outcome])
                .inc(),
            // The outbox records a delivery only when it gives one up.
            "delivery" => self.outbox_given_up.inc(),
            _ => {}
        }
    }

    /// A webhook request ended with `outcome` (`ok`, `unsigned`, `forged`,
    /// `replayed`, `too_large`, …).
    pub fn webhook(&self, plugin: &str, hook: &str, outcome: &str) {
        self.webhooks
            .with_label_values(&[plugin, hook, outcome])
            .inc();
    }

    /// The text Prometheus scrapes, with the database's gauges from
    /// `backlog` (none when the database did not answer).
    pub fn render(&self, backlog: Option<&Backlog>) -> Result<String, MetricsError> {
        self.database_up.set(i64::from(backlog.is_some()));
        if let Some(w) = backlog {
            self.outbox_pending.set(w.outbox);
            self.deliveries_pending.set(w.deliveries);
            for state in OPEN_JOB_STATES {
                let n = w.jobs.get(state).copied().unwrap_or(0);
                self.jobs.with_label_values(&[state]).set(n);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// `metric`, registered in `registry` (which keeps a handle to it).
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(kind: &'static str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            at_ms: 0,
            kind,
            actor: "host".into(),
            room: None,
            command: "x".into(),
            plugin: Some("announce".into()),
            plugin_version: None,
            decision: crate::store::Decision::NotChecked,
            outcome,
            detail: None,
            duration_us: 0,
        }
    }

    #[test]
    fn records_count_by_kind_and_missed_runs_count_twice() {
        let m = Metrics::new().expect("metrics");
        m.committed(&audit("schedule", Outcome::Ok));
        m.committed(&audit("schedule", Outcome::Skipped));
        m.committed(&audit("delivery", Outcome::Error));
        m.committed(&audit("command", Outcome::Ok));
        let text = m.render(None).expect("text");
        assert!(
            text.contains(r#"ikkyu_schedule_runs_total{outcome="ok",plugin="announce"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ikkyu_schedule_missed_total{plugin="announce"} 1"#),
            "{text}"
        );
        assert!(text.contains("ikkyu_outbox_given_up_total 1"), "{text}");
        assert!(text.contains("ikkyu_database_up 0"), "{text}");
        // Commands are the dispatcher's to count, with their names.
        assert!(!text.contains("ikkyu_commands_total{"), "{text}");
        assert!(
            text.contains(&format!(
                r#"ikkyu_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
