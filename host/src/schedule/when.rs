//! When a schedule fires: a crontab expression read in an IANA zone, or one
//! instant. Parsing is the `cron` crate's; what this module adds is what a
//! person who writes crontab lines expects and the crate does differently:
//! five fields, Sunday as 0 or 7, and a daylight-saving change that neither
//! skips a run (local time jumped over it: run at the first instant after
//! the jump) nor repeats one (local time fell back over it: run once).

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A checked schedule time.
#[derive(Debug, Clone)]
pub enum When {
    /// Every match of a cron expression in a zone (boxed: the parsed
    /// expression is large beside an instant).
    Cron(Box<Cron>),
    /// Once, at ms since the epoch.
    At(i64),
}

/// A parsed five-field cron expression and its zone.
#[derive(Debug, Clone)]
pub struct Cron {
    /// As the user wrote it, for showing back.
    pub expression: String,
    /// The IANA zone it is read in.
    pub zone: Tz,
    schedule: cron::Schedule,
}

/// Why an expression or zone was refused, in words fit for a chat reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WhenError(pub String);

/// Candidates looked at before giving up on finding the next run; only an
/// expression that can never match (Feb 30) gets that far.
const MAX_CANDIDATES: usize = 100_000;
/// How far back, in local time, the search for the next run starts: a
/// local time repeated by a daylight-saving change lies up to this much
/// before the local reading of the instant searched from.
const FOLD: Duration = Duration::hours(3);

/// Longest zone name and cron expression looked at: checked before any
/// work, so a plugin cannot make the host parse megabytes.
const MAX_ZONE: usize = 64;
const MAX_EXPRESSION: usize = 256;

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const USAGE: &str = "write five fields, minute hour day-of-month month day-of-week, \
                     e.g. \"0 10 * * mon\" (every Monday at 10:00) or \"*/15 9-18 * * 1-5\"";

impl Cron {
    /// Parses a crontab line (five fields) and an IANA zone name.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, WhenError> {
        if expression.len() > MAX_EXPRESSION {
            return Err(WhenError(format!(
                "a cron expression is at most {MAX_EXPRESSION} bytes; {USAGE}"
            )));
        }
        let zone = parse_zone(zone)?;
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(WhenError(format!(
                "{expression:?} has {} fields; {USAGE}",
                fields.len()
            )));
        };
        if dom != "*" && dow != "*" {
            return Err(WhenError(format!(
                "{expression:?} restricts both the day of the month and the day of the week; \
                 crontab would run on either, which is rarely meant: restrict only one"
            )));
        }
        let dow = days_of_week(dow)?;
        let crate_form = format!("0 {minute} {hour} {dom} {month} {dow}");
        let schedule = cron::Schedule::from_str(&crate_form).map_err(|e| {
            WhenError(format!(
                "{expression:?} is not a cron expression ({e}); {USAGE}"
            ))
        })?;
        let cron = Self {
            expression: expression.split_whitespace().collect::<Vec<_>>().join(" "),
            zone,
            schedule,
        };
        if cron.next_after(0).is_none() {
            return Err(WhenError(format!(
                "{expression:?} never matches a real date"
            )));
        }
        Ok(cron)
    }

    /// The first run strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Times chrono cannot hold (a plugin may ask about any i64) have
        // no next run; nothing here may panic on them.
        let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
        // Walk the wall-clock matches (a naive local time stands in for
        // UTC), mapping each to the instant it means in the zone.
        let local = after
            .naive_utc()
            .checked_add_offset(self.zone.offset_from_utc_datetime(&after.naive_utc()).fix())?
            .checked_sub_signed(FOLD)?;
        let start = Utc.from_utc_datetime(&local);
        self.schedule
            .after(&start)
            .take(MAX_CANDIDATES)
            .map(|wall| instant(&self.zone, wall.naive_utc()))
            .find(|&ms| ms > after_ms)
    }

    /// The last run in `(from_ms, to_ms]`, if there is one.
    pub fn last_in(&self, from_ms: i64, to_ms: i64) -> Option<i64> {
        let mut last = None;
        let mut at = from_ms;
        while let Some(next) = self.next_after(at) {
            if next > to_ms {
                break;
            }
            last = Some(next);
            at = next;
        }
        last
    }
}

impl When {
    /// The first run strictly after `after_ms`; none for a one-shot in the
    /// past.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            When::Cron(c) => c.next_after(after_ms),
            When::At(at) => (*at > after_ms).then_some(*at),
        }
    }

    /// The last run in `(from_ms, to_ms]`.
    pub fn last_in(&self, from_ms: i64, to_ms: i64) -> Option<i64> {
        match self {
            When::Cron(c) => c.last_in(from_ms, to_ms),
            When::At(at) => (*at > from_ms && *at <= to_ms).then_some(*at),
        }
    }

    /// The zone its times are best shown in.
    pub fn zone(&self) -> Tz {
        match self {
            When::Cron(c) => c.zone,
            When::At(_) => Tz::UTC,
        }
    }

    /// How it reads in `!schedules`.
    pub fn describe(&self) -> String {
        match self {
            When::Cron(c) => format!("cron \"{}\" {}", c.expression, c.zone.name()),
            When::At(at) => format!("once at {}", show(*at, Tz::UTC)),
        }
    }
}

/// An IANA zone by name, with a hint when it is not one.
pub fn parse_zone(zone: &str) -> Result<Tz, WhenError> {
    if zone.len() > MAX_ZONE {
        return Err(WhenError(format!(
            "a time zone name is at most {MAX_ZONE} bytes, like \"Europe/Moscow\" or \"Asia/Shanghai\""
        )));
    }
    Tz::from_str(zone).map_err(|_| {
        let hint = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|z| z.name())
            .filter(|name| strsim::jaro_winkler(&name.to_lowercase(), &zone.to_lowercase()) > 0.85)
            .take(3)
            .collect::<Vec<_>>();
        let hint = if hint.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", hint.join(", "))
        };
        WhenError(format!(
            "{zone:?} is not an IANA time zone like \"Europe/Moscow\", \"Asia/Shanghai\" or \"UTC\"{hint}"
        ))
    })
}

/// `ms` as local time in `zone`, with the zone's abbreviation.
pub fn show(ms: i64, zone: Tz) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&zone)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string(),
        None => format!("{ms} ms"),
    }
}

/// The instant a wall-clock time means in `zone`: the earlier of two when
/// a change repeats it, the first instant after the gap when a change
/// skips it.
fn instant(zone: &Tz, wall: NaiveDateTime) -> i64 {
    if let Some(t) = zone.from_local_datetime(&wall).earliest() {
        return t.timestamp_millis();
    }
    // Inside a gap: the first whole minute that exists is where the gap
    // ends (gaps are whole minutes in every zone in use).
    (1..=24 * 60)
        .find_map(|m| {
            zone.from_local_datetime(&wall.checked_add_signed(Duration::minutes(m))?)
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&wall).timestamp_millis(),
            |t| t.timestamp_millis(),
        )
}

/// Crontab's day-of-week field (0 or 7 = Sunday, names, ranges, steps) in
/// the `cron` crate's form (names only, where 1 is Sunday).
fn days_of_week(field: &str) -> Result<String, WhenError> {
    let bad = |why: &str| {
        WhenError(format!(
            "day of week {field:?}: {why}; use 0-7 (0 and 7 are Sunday) or sun..sat, \
             with ranges (1-5), lists (mon,wed) and steps (*/2)"
        ))
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| bad("the step is not a number"))?,
            ),
            None => (item, 1),
        };
        if step == 0 {
            return Err(bad("a step of 0"));
        }
        let (first, last) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (
                    day(a).ok_or_else(|| bad("unknown day"))?,
                    day(b).ok_or_else(|| bad("unknown day"))?,
                ),
                None => {
                    let d = day(r).ok_or_else(|| bad("unknown day"))?;
                    (d, if step > 1 { 6 } else { d })
                }
            },
        };
        if first > last {
            return Err(bad("a range must go from the earlier day to the later"));
        }
        for d in (first..=last).step_by(step) {
            if let Some(day) = days.get_mut(d % 7) {
                *day = true;
            }
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    Ok(DAYS
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// A day number 0..=7 or a name.
fn day(text: &str) -> Option<usize> {
    if let Ok(n) = text.parse::<usize>() {
        return (n <= 7).then_some(n);
    }
    // By characters, not bytes: `mié` and `пн` are not days here, and
    // must not cut a character in two.
    let lower = text.to_ascii_lowercase();
    let first3 = lower.get(..3).filter(|p| p.chars().count() == 3)?;
    DAYS.iter().position(|d| *d == first3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .expect("a real time")
            .timestamp_millis()
    }

    #[test]
    fn monday_is_one_as_in_crontab() {
        let c = Cron::parse("0 10 * * 1", "Asia/Shanghai").expect("parses");
        let sat = ms(c.zone, 2026, 11, 21, 12, 0);
        assert_eq!(c.next_after(sat), Some(ms(c.zone, 2026, 11, 23, 10, 0)));
        let sun = Cron::parse("0 10 * * 7", "UTC").expect("parses");
        assert_eq!(
            sun.next_after(ms(Tz::UTC, 2026, 11, 21, 12, 0)),
            Some(ms(Tz::UTC, 2026, 11, 22, 10, 0))
        );
        let weekdays = Cron::parse("0 9 * * mon-fri", "UTC").expect("parses");
        assert_eq!(
            weekdays.next_after(ms(Tz::UTC, 2026, 11, 20, 10, 0)),
            Some(ms(Tz::UTC, 2026, 11, 23, 9, 0))
        );
    }

    #[test]
    fn zones_shift_the_instant() {
        let shanghai = Cron::parse("0 10 * * *", "Asia/Shanghai").expect("parses");
        let start = ms(Tz::UTC, 2026, 11, 22, 0, 0);
        assert_eq!(
            shanghai.next_after(start),
            Some(ms(Tz::UTC, 2026, 11, 22, 2, 0))
        );
    }

    #[test]
    fn a_skipped_local_time_runs_once_right_after_the_gap() {
        // Berlin jumps from 02:00 to 03:00 on 2026-03-29.
        let c = Cron::parse("30 2 * * *", "Europe/Berlin").expect("parses");
        let z = c.zone;
        let before = ms(z, 2026, 3, 28, 12, 0);
        let gap_day = c.next_after(before).expect("runs");
        assert_eq!(gap_day, ms(z, 2026, 3, 29, 3, 0));
        assert_eq!(c.next_after(gap_day), Some(ms(z, 2026, 3, 30, 2, 30)));
        // Every 15 minutes through the gap: 01:45, then 03:00 once, 03:15.
        let q = Cron::parse("*/15 * * * *", "Europe/Berlin").expect("parses");
        let t = ms(z, 2026, 3, 29, 1, 45);
        let after_gap = q.next_after(t).expect("runs");
        assert_eq!(after_gap, ms(z, 2026, 3, 29, 3, 0));
        assert_eq!(q.next_after(after_gap), Some(ms(z, 2026, 3, 29, 3, 15)));
    }

    #[test]
    fn a_repeated_local_time_runs_once() {
        // Berlin goes from 03:00 back to 02:00 on 2026-10-25.
        let c = Cron::parse("30 2 * * *", "Europe/Berlin").expect("parses");
        let z = c.zone;
        let first = c.next_after(ms(z, 2026, 10, 24, 12, 0)).expect("runs");
        assert_eq!(first, ms(z, 2026, 10, 25, 2, 30));
        let second = c.next_after(first).expect("runs");
        assert_eq!(second, ms(z, 2026, 10, 26, 2, 30));
        // Hourly on the day of the change, which has 25 hours.
        let h = Cron::parse("0 * * * *", "Europe/Berlin").expect("parses");
        let (from, to) = (ms(z, 2026, 10, 25, 0, 0) - 1, ms(z, 2026, 10, 26, 0, 0) - 1);
        let mut n = 0;
        let mut at = from;
        while let Some(next) = h.next_after(at).filter(|&t| t <= to) {
            n += 1;
            at = next;
        }
        // 02:00 local happens twice but runs once: 24 runs in 25 hours.
        assert_eq!(n, 24);
    }

    #[test]
    fn year_ends_and_leap_days() {
        let c = Cron::parse("0 0 29 2 *", "UTC").expect("parses");
        assert_eq!(
            c.next_after(ms(Tz::UTC, 2026, 12, 31, 23, 0)),
            Some(ms(Tz::UTC, 2028, 2, 29, 0, 0))
        );
        let ny = Cron::parse("0 0 1 1 *", "Asia/Tokyo").expect("parses");
        assert_eq!(
            ny.next_after(ms(Tz::UTC, 2026, 12, 31, 14, 59)),
            Some(ms(Tz::UTC, 2026, 12, 31, 15, 0))
        );
    }

    #[test]
    fn last_in_finds_the_latest_missed_run() {
        let c = Cron::parse("*/10 * * * *", "UTC").expect("parses");
        let now = ms(Tz::UTC, 2026, 11, 22, 12, 35);
        assert_eq!(
            c.last_in(now - 3_600_000, now),
            Some(ms(Tz::UTC, 2026, 11, 22, 12, 30))
        );
        assert_eq!(c.last_in(now - 60_000, now), None);
    }

    #[test]
    fn non_ascii_days_and_extreme_times_are_errors_not_panics() {
        for dow in ["mié", "пн", "日", "mo\u{301}n", "🚀🚀🚀"] {
            let err = Cron::parse(&format!("0 9 * * {dow}"), "UTC").expect_err(dow);
            assert!(err.0.contains("unknown day"), "{dow}: {err}");
        }
        let c = Cron::parse("* * * * *", "Pacific/Kiritimati").expect("parses");
        for ms in [
            i64::MIN,
            i64::MIN + 1,
            -8_334_632_851_200_001,
            i64::MAX,
            i64::MAX - 1,
        ] {
            let _ = c.next_after(ms);
            let _ = c.last_in(ms, ms.saturating_add(120_000));
        }
        assert!(parse_zone(&"Europe/".repeat(100_000)).is_err());
        assert!(Cron::parse(&"* ".repeat(100_000), "UTC").is_err());
    }

    #[test]
    fn bad_input_says_how_to_write_it() {
        let e = Cron::parse("0 10 * *", "UTC").expect_err("four fields");
        assert!(e.0.contains("five fields"), "{e}");
        let e = Cron::parse("0 10 * * mon", "Asia/Shangai").expect_err("bad zone");
        assert!(e.0.contains("Asia/Shanghai"), "suggests the zone: {e}");
        let e = Cron::parse("0 10 1 * mon", "UTC").expect_err("both days");
        assert!(e.0.contains("only one"), "{e}");
        let e = Cron::parse("0 25 * * *", "UTC").expect_err("hour 25");
        assert!(e.0.contains("not a cron expression"), "{e}");
        let e = Cron::parse("0 0 30 2 *", "UTC").expect_err("Feb 30");
        assert!(e.0.contains("never"), "{e}");
        let e = Cron::parse("0 0 * * funday", "UTC").expect_err("unknown day");
        assert!(e.0.contains("sun..sat"), "{e}");
    }
}
