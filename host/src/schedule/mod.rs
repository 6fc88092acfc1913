//! Durable schedules: when they fire ([`when`]), how a plugin's
//! declaration becomes rows, and running them when due ([`runner`]).
//!
//! Schedules live only in the database (`schedules` table); nothing about
//! them is kept in memory between passes, so a restart, or later a second
//! replica, sees exactly what was committed.

pub mod runner;
pub mod when;

pub use runner::{Pass, Scheduler};
pub use when::{Cron, When, WhenError};

use crate::runtime::bindings::{CronSpec, ScheduleSpec, When as WitWhen};
use crate::store::ScheduleRow;

/// Longest schedule id a plugin may use.
pub const MAX_ID: usize = 200;
/// Largest payload, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Checks a plugin's timer definition.
pub fn parse(when: &WitWhen) -> Result<When, WhenError> {
    match when {
        WitWhen::Cron(c) => Cron::parse(&c.expression, &c.zone).map(|c| When::Cron(Box::new(c))),
        WitWhen::At(at) => Ok(When::At(*at)),
    }
}

/// Whether `id` can name a schedule: 1 to [`MAX_ID`] bytes, no spaces or
/// control characters.
pub fn is_schedule_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A plugin's schedule as a row due at its first run after `now_ms`.
pub fn row(
    plugin: &str,
    spec: &ScheduleSpec,
    declared: bool,
    now_ms: i64,
) -> Result<ScheduleRow, WhenError> {
    if !is_schedule_id(&spec.id) {
        return Err(WhenError(format!(
            "schedule id {:?} must be 1 to {MAX_ID} characters without spaces",
            spec.id
        )));
    }
    if spec.payload_json.len() > MAX_PAYLOAD {
        return Err(WhenError(format!(
            "the payload of {:?} is {} bytes; at most {MAX_PAYLOAD}",
            spec.id,
            spec.payload_json.len()
        )));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&spec.payload_json).is_err() {
        return Err(WhenError(format!(
            "the payload of {:?} is not JSON",
            spec.id
        )));
    }
    let when = parse(&spec.when)?;
    let next = when.next_after(now_ms);
    if next.is_none() {
        return Err(WhenError(format!(
            "{:?} would never fire: {} is in the past",
            spec.id,
            when.describe()
        )));
    }
    let (cron, zone, at_ms) = match &spec.when {
        WitWhen::Cron(c) => (Some(c.expression.clone()), Some(c.zone.clone()), None),
        WitWhen::At(at) => (None, None, Some(*at)),
    };
    Ok(ScheduleRow {
        plugin: plugin.to_owned(),
        id: spec.id.clone(),
        cron,
        zone,
        at_ms,
        payload: spec.payload_json.clone(),
        declared,
        next_fire_ms: next,
        last: None,
    })
}

/// How a stored row fires.
pub fn when_of(row: &ScheduleRow) -> Result<When, WhenError> {
    match (&row.cron, &row.zone, row.at_ms) {
        (Some(cron), Some(zone), _) => Cron::parse(cron, zone).map(|c| When::Cron(Box::new(c))),
        (_, _, Some(at)) => Ok(When::At(at)),
        _ => Err(WhenError(
            "the stored schedule has neither a cron nor a time".into(),
        )),
    }
}

/// A stored row as the plugin wrote it.
pub fn spec_of(row: &ScheduleRow) -> ScheduleSpec {
    let when = match (&row.cron, &row.zone, row.at_ms) {
        (Some(expression), Some(zone), _) => WitWhen::Cron(CronSpec {
            expression: expression.clone(),
            zone: zone.clone(),
        }),
        (_, _, at) => WitWhen::At(at.unwrap_or_default()),
    };
    ScheduleSpec {
        id: row.id.clone(),
        when,
        payload_json: row.payload.clone(),
    }
}
