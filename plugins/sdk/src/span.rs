//! A length of time as people write it in a plugin's config.

use serde::Deserialize;

/// A length of time written as people write it in the config: `90s`,
/// `30m`, `2h`, `1d`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub u64);

impl Span {
    /// In milliseconds.
    pub fn ms(self) -> i64 {
        i64::try_from(self.0.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Span(s)),
            Raw::Text(t) => parse_span(&t).map(Span).map_err(serde::de::Error::custom),
        }
    }
}

/// Seconds in `30m`, `2h`, …; zero is refused (a reminder every 0 s is a
/// storm, not a reminder).
pub fn parse_span(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 2h or 1d"))?;
    let unit_s = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 90s, 30m, 2h or 1d"
            ));
        }
    };
    match n.checked_mul(unit_s) {
        Some(0) => Err(format!("{text:?} must be longer than zero")),
        Some(s) => Ok(s),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(parse_span("90s"), Ok(90));
        assert_eq!(parse_span("2h"), Ok(7200));
        assert_eq!(
            serde_json::from_str::<Span>("160").map(|s| s.0).ok(),
            Some(160)
        );
        assert!(parse_span("0m").is_err());
        assert!(parse_span("5 parsecs").is_err());
        assert!(parse_span("99999999999999999999d").is_err());
    }
}
