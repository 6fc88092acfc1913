//! Times in IANA zones, for plugins that show or read local times (enable
//! the `time` feature). The host hands plugins instants in ms since the
//! epoch; people read and type local times, so the conversions live here
//! once.

pub use chrono;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
pub use chrono_tz::Tz;

/// An IANA zone by name, or a message that says how to write one.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "{name:?} is not an IANA time zone like \"Europe/Moscow\", \"Asia/Shanghai\" or \"UTC\""
        )
    })
}

/// `ms` as people in `zone` read it: `Mon 2026-11-23 10:00 CST`.
pub fn show(ms: i64, zone: Tz) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&zone)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string(),
        None => format!("{ms} ms"),
    }
}

/// The instant a local wall-clock time means in `zone`: the earlier one
/// when a daylight-saving change repeats it, the first existing minute
/// after it when a change skips it.
pub fn instant(zone: Tz, local: NaiveDateTime) -> i64 {
    (0..=24 * 60)
        .find_map(|m| {
            zone.from_local_datetime(&(local + chrono::Duration::minutes(m)))
                .earliest()
        })
        .map_or(0, |t| t.timestamp_millis())
}

/// The local date-time of `ms` in `zone`.
pub fn local(ms: i64, zone: Tz) -> NaiveDateTime {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&zone)
        .naive_local()
}

/// A time as the host's `time` argument delivers it (`YYYY-MM-DD` or
/// `YYYY-MM-DDTHH:MM`), read in `zone`; a bare date means its midnight,
/// or with `end_of_day` the next midnight (so a date used as an end
/// includes that day).
pub fn parse_local(text: &str, zone: Tz, end_of_day: bool) -> Result<i64, String> {
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M") {
        return Ok(instant(zone, t));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a time like 2026-11-23 or 2026-11-23T10:00"))?;
    let date = if end_of_day {
        date.succ_opt().ok_or("that date is too far away")?
    } else {
        date
    };
    Ok(instant(zone, date.and_time(chrono::NaiveTime::MIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_read_in_the_zone() {
        let z = zone("Asia/Shanghai").expect("zone");
        let start = parse_local("2026-11-24", z, false).expect("date");
        assert_eq!(show(start, z), "Tue 2026-11-24 00:00 CST");
        let end = parse_local("2026-11-24", z, true).expect("date");
        assert_eq!(end - start, 86_400_000);
        let t = parse_local("2026-11-24T10:30", z, false).expect("time");
        assert_eq!(show(t, z), "Tue 2026-11-24 10:30 CST");
        assert!(parse_local("24.11.2026", z, false).is_err());
        assert!(
            zone("Mars/Olympus")
                .expect_err("no such zone")
                .contains("IANA")
        );
    }
}
