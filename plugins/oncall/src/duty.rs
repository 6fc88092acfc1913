//! Who is on duty: a pure function of a rotation, its overrides and an
//! instant, so it is tested across handoffs, overrides, daylight-saving
//! changes and year ends without a host.
//!
//! Handoffs happen at a local wall-clock time in the rotation's zone
//! (`mon 10:00 Asia/Shanghai`), every `period_days` days from the first
//! one. Counting is done on local dates, so a handoff stays at 10:00 local
//! across a daylight-saving change. Slot `k` starts at handoff `k`; person
//! `k mod n` holds it. An override puts someone else on duty for
//! `[from, to)`; the latest override wins where they overlap.

use ikkyu_plugin_sdk::time::chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};
use ikkyu_plugin_sdk::time::{Tz, instant, local};
use serde::{Deserialize, Serialize};

/// A rotation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Lowercase name, e.g. `frontend`.
    pub name: String,
    /// User ids in rotation order.
    pub people: Vec<String>,
    /// Days between handoffs (7 for weekly).
    pub period_days: u32,
    /// Local time of day of a handoff, `HH:MM`.
    pub handoff_time: String,
    /// Weekday of the handoff for periods of whole weeks (`mon`), else none.
    pub handoff_day: Option<String>,
    /// IANA zone.
    pub zone: String,
    /// Local date of handoff 0, when `people[0]` took over.
    pub start: String,
    /// Someone else covering a period.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

/// Someone covering `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Who is on duty instead.
    pub user: String,
    /// Start, ms since the epoch.
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
    /// Who set it.
    pub by: String,
}

/// Who is on duty at an instant, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duty {
    /// The person.
    pub user: String,
    /// When the next change (handoff or override edge) happens.
    pub until_ms: i64,
    /// Set when an override put `user` there: who was scheduled.
    pub instead_of: Option<String>,
}

/// A rotation with its text fields read, ready to compute with.
#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    rotation: &'a Rotation,
    zone: Tz,
    time: NaiveTime,
    start: NaiveDate,
}

/// Parses `HH:MM`.
pub fn parse_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day like 10:00"))
}

/// Parses a weekday name (`mon`, `monday`).
pub fn parse_day(text: &str) -> Result<Weekday, String> {
    text.parse::<Weekday>()
        .map_err(|_| format!("{text:?} is not a weekday like mon or friday"))
}

impl<'a> Schedule<'a> {
    /// Reads `rotation`'s stored fields.
    pub fn new(rotation: &'a Rotation) -> Result<Self, String> {
        if rotation.people.is_empty() || rotation.period_days == 0 {
            return Err(format!("rotation {:?} has nobody in it", rotation.name));
        }
        Ok(Self {
            rotation,
            zone: ikkyu_plugin_sdk::time::zone(&rotation.zone)?,
            time: parse_time(&rotation.handoff_time)?,
            start: NaiveDate::parse_from_str(&rotation.start, "%Y-%m-%d")
                .map_err(|_| format!("rotation {:?} has a broken start date", rotation.name))?,
        })
    }

    /// The zone the rotation lives in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// When handoff `k` happens.
    pub fn handoff(&self, k: i64) -> i64 {
        let days = k * i64::from(self.rotation.period_days);
        let date = self.start + Duration::days(days);
        instant(self.zone, date.and_time(self.time))
    }

    /// The slot `at` falls in: the `k` with `handoff(k) <= at < handoff(k + 1)`.
    pub fn slot(&self, at: i64) -> i64 {
        let days = (local(at, self.zone).date() - self.start).num_days();
        let mut k = days.div_euclid(i64::from(self.rotation.period_days));
        while self.handoff(k) > at {
            k -= 1;
        }
        while self.handoff(k + 1) <= at {
            k += 1;
        }
        k
    }

    /// Who the rotation (without overrides) puts on duty at `at`.
    pub fn scheduled(&self, at: i64) -> &'a str {
        let n = self.rotation.people.len() as i64;
        let i = self.slot(at).rem_euclid(n) as usize;
        &self.rotation.people[i]
    }

    /// Whether a handoff happens exactly at `at`.
    pub fn is_handoff(&self, at: i64) -> bool {
        self.slot(at) != self.slot(at - 1)
    }

    /// Who is on duty at `at`, overrides included, and until when.
    pub fn duty(&self, at: i64) -> Duty {
        let next_handoff = self.handoff(self.slot(at) + 1);
        let active = self
            .rotation
            .overrides
            .iter()
            .rev()
            .find(|o| o.from_ms <= at && at < o.to_ms);
        let next_start = self
            .rotation
            .overrides
            .iter()
            .map(|o| o.from_ms)
            .filter(|&from| from > at)
            .min()
            .unwrap_or(i64::MAX);
        let scheduled = self.scheduled(at);
        match active {
            Some(o) => Duty {
                user: o.user.clone(),
                until_ms: o.to_ms.min(next_start),
                instead_of: (o.user != scheduled).then(|| scheduled.to_owned()),
            },
            None => Duty {
                user: scheduled.to_owned(),
                until_ms: next_handoff.min(next_start),
                instead_of: None,
            },
        }
    }

    /// Everyone on duty at some moment of `[from, to)`, overrides
    /// included, in the order they come: whose days an override over that
    /// period takes.
    pub fn on_duty_during(&self, from: i64, to: i64) -> Vec<String> {
        let mut people: Vec<String> = Vec::new();
        let mut at = from;
        // Each step moves to the next handoff or override edge; a bound
        // keeps a period of centuries from running long.
        for _ in 0..10_000 {
            if at >= to {
                break;
            }
            let d = self.duty(at);
            if !people.contains(&d.user) {
                people.push(d.user);
            }
            if d.until_ms <= at {
                break;
            }
            at = d.until_ms;
        }
        people
    }

    /// The handoff at or before `at`: where a rotation set at `at` starts.
    pub fn first_handoff(at: i64, zone: Tz, time: NaiveTime, day: Option<Weekday>) -> NaiveDate {
        let today = local(at, zone).date();
        let mut date = match day {
            Some(d) => {
                let back =
                    (7 + today.weekday().num_days_from_monday() - d.num_days_from_monday()) % 7;
                today - Duration::days(i64::from(back))
            }
            None => today,
        };
        if instant(zone, date.and_time(time)) > at {
            date -= Duration::days(if day.is_some() { 7 } else { 1 });
        }
        date
    }

    /// A cron expression matching every possible handoff (the plugin checks
    /// [`Schedule::is_handoff`] when it fires, for periods cron cannot say).
    pub fn cron(&self) -> String {
        use ikkyu_plugin_sdk::time::chrono::Timelike;
        let (m, h) = (self.time.minute(), self.time.hour());
        match (&self.rotation.handoff_day, self.rotation.period_days % 7) {
            (Some(day), 0) => format!("{m} {h} * * {day}"),
            _ => format!("{m} {h} * * *"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikkyu_plugin_sdk::time::chrono::NaiveDateTime;

    fn at(zone: &str, text: &str) -> i64 {
        let z = ikkyu_plugin_sdk::time::zone(zone).expect("zone");
        instant(
            z,
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("time"),
        )
    }

    fn weekly(zone: &str, start: &str) -> Rotation {
        Rotation {
            name: "frontend".into(),
            people: vec!["@a:x".into(), "@b:x".into(), "@c:x".into()],
            period_days: 7,
            handoff_time: "10:00".into(),
            handoff_day: Some("mon".into()),
            zone: zone.into(),
            start: start.into(),
            overrides: vec![],
        }
    }

    #[test]
    fn duty_changes_exactly_at_the_handoff() {
        let r = weekly("Asia/Shanghai", "2026-11-16");
        let s = Schedule::new(&r).expect("valid");
        let z = "Asia/Shanghai";
        assert_eq!(s.scheduled(at(z, "2026-11-16 10:00")), "@a:x");
        assert_eq!(s.scheduled(at(z, "2026-11-23 09:59")), "@a:x");
        assert_eq!(s.scheduled(at(z, "2026-11-23 10:00")), "@b:x");
        assert_eq!(s.scheduled(at(z, "2026-11-30 10:00")), "@c:x");
        assert_eq!(s.scheduled(at(z, "2026-12-07 10:00")), "@a:x");
        // Before the start the order runs backwards.
        assert_eq!(s.scheduled(at(z, "2026-11-16 09:59")), "@c:x");
        let d = s.duty(at(z, "2026-11-20 15:00"));
        assert_eq!(d.user, "@a:x");
        assert_eq!(d.until_ms, at(z, "2026-11-23 10:00"));
        assert!(s.is_handoff(at(z, "2026-11-23 10:00")));
        assert!(!s.is_handoff(at(z, "2026-11-24 10:00")));
    }

    #[test]
    fn a_period_names_everyone_on_duty_in_it() {
        let z = "Asia/Shanghai";
        let r = weekly(z, "2026-11-16");
        let s = Schedule::new(&r).expect("valid");
        // Within a's week: only a.
        assert_eq!(
            s.on_duty_during(at(z, "2026-11-18 00:00"), at(z, "2026-11-20 00:00")),
            vec!["@a:x"]
        );
        // Across the Monday handoff: a, then b, whose day it also takes.
        assert_eq!(
            s.on_duty_during(at(z, "2026-11-22 00:00"), at(z, "2026-11-24 00:00")),
            vec!["@a:x", "@b:x"]
        );
        // Ending exactly at the handoff does not take b's time.
        assert_eq!(
            s.on_duty_during(at(z, "2026-11-22 00:00"), at(z, "2026-11-23 10:00")),
            vec!["@a:x"]
        );
    }

    #[test]
    fn an_override_covers_its_period_and_ends_on_time() {
        let z = "Asia/Shanghai";
        let mut r = weekly(z, "2026-11-16");
        r.overrides.push(Override {
            user: "@d:x".into(),
            from_ms: at(z, "2026-11-18 00:00"),
            to_ms: at(z, "2026-11-19 00:00"),
            by: "@a:x".into(),
        });
        let s = Schedule::new(&r).expect("valid");
        let before = s.duty(at(z, "2026-11-17 12:00"));
        assert_eq!(
            (before.user.as_str(), before.until_ms),
            ("@a:x", at(z, "2026-11-18 00:00"))
        );
        let during = s.duty(at(z, "2026-11-18 12:00"));
        assert_eq!(during.user, "@d:x");
        assert_eq!(during.instead_of.as_deref(), Some("@a:x"));
        assert_eq!(during.until_ms, at(z, "2026-11-19 00:00"));
        assert_eq!(s.duty(at(z, "2026-11-19 00:00")).user, "@a:x");
    }

    #[test]
    fn the_latest_override_wins_where_they_overlap() {
        let z = "UTC";
        let mut r = weekly(z, "2026-11-16");
        for (user, from, to) in [
            ("@d:x", "2026-11-17 00:00", "2026-11-20 00:00"),
            ("@e:x", "2026-11-18 00:00", "2026-11-19 00:00"),
        ] {
            r.overrides.push(Override {
                user: user.into(),
                from_ms: at(z, from),
                to_ms: at(z, to),
                by: "@root:x".into(),
            });
        }
        let s = Schedule::new(&r).expect("valid");
        assert_eq!(s.duty(at(z, "2026-11-17 12:00")).user, "@d:x");
        assert_eq!(s.duty(at(z, "2026-11-18 12:00")).user, "@e:x");
        assert_eq!(s.duty(at(z, "2026-11-19 12:00")).user, "@d:x");
    }

    #[test]
    fn handoffs_stay_at_local_time_across_daylight_saving() {
        // Berlin: summer time ends 2026-10-25, starts 2027-03-28.
        let z = "Europe/Berlin";
        let r = weekly(z, "2026-10-19");
        let s = Schedule::new(&r).expect("valid");
        let h = at(z, "2026-10-26 10:00");
        assert_eq!(s.handoff(1), h);
        // 169 hours after the previous handoff: the night had 25 hours.
        assert_eq!(h - s.handoff(0), 169 * 3_600_000);
        assert_eq!(s.scheduled(h - 1), "@a:x");
        assert_eq!(s.scheduled(h), "@b:x");
        // Spring forward: a handoff at 02:30 local, which does not exist
        // that day, happens at 03:00 once.
        let mut night = weekly(z, "2027-03-21");
        night.handoff_day = Some("sun".into());
        night.handoff_time = "02:30".into();
        let s = Schedule::new(&night).expect("valid");
        assert_eq!(s.handoff(1), at(z, "2027-03-28 03:00"));
        assert!(s.is_handoff(at(z, "2027-03-28 03:00")));
        assert_eq!(s.scheduled(at(z, "2027-03-28 03:00")), "@b:x");
    }

    #[test]
    fn counting_goes_on_across_the_year_end() {
        let z = "UTC";
        let mut r = weekly(z, "2026-12-21");
        r.period_days = 1;
        r.handoff_day = None;
        let s = Schedule::new(&r).expect("valid");
        // 2026-12-21 + 11 days = 2027-01-01: slot 11, person 11 mod 3 = 2.
        assert_eq!(s.slot(at(z, "2027-01-01 12:00")), 11);
        assert_eq!(s.scheduled(at(z, "2027-01-01 12:00")), "@c:x");
        assert_eq!(s.scheduled(at(z, "2027-01-01 09:00")), "@b:x");
        // Weekly across a leap day and a year end.
        let w = weekly(z, "2027-12-27");
        let s = Schedule::new(&w).expect("valid");
        assert_eq!(s.handoff(9), at(z, "2028-02-28 10:00"));
        assert_eq!(s.handoff(10), at(z, "2028-03-06 10:00"));
    }

    #[test]
    fn a_new_rotation_starts_at_the_last_handoff() {
        let z = ikkyu_plugin_sdk::time::zone("Asia/Shanghai").expect("zone");
        let t = parse_time("10:00").expect("time");
        let wed = at("Asia/Shanghai", "2026-11-25 12:00");
        let mon = Weekday::Mon;
        assert_eq!(
            Schedule::first_handoff(wed, z, t, Some(mon)).to_string(),
            "2026-11-23"
        );
        let mon_early = at("Asia/Shanghai", "2026-11-23 09:00");
        assert_eq!(
            Schedule::first_handoff(mon_early, z, t, Some(mon)).to_string(),
            "2026-11-16"
        );
        assert_eq!(
            Schedule::first_handoff(mon_early, z, t, None).to_string(),
            "2026-11-22"
        );
    }

    #[test]
    fn the_cron_matches_the_handoffs() {
        let r = weekly("UTC", "2026-11-16");
        assert_eq!(Schedule::new(&r).expect("valid").cron(), "0 10 * * mon");
        let mut two = weekly("UTC", "2026-11-16");
        two.period_days = 3;
        assert_eq!(Schedule::new(&two).expect("valid").cron(), "0 10 * * *");
    }
}
