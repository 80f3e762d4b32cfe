//! Durations in configuration: an integer number of seconds, or a string with a unit
//! (`"250ms"`, `"30s"`, `"5m"`, `"23h"`). Tests use sub-second values, operators use minutes.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m` or `h` (a bare number means seconds).
pub fn parse(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = value * factor;
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Serde `deserialize_with` for a [`Duration`] field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse(&t).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid duration {t:?}: use for example \"500ms\", \"30s\", \"5m\" or \"23h\""
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases: &[(&str, Option<u64>)] = &[
            ("250ms", Some(250)),
            ("30s", Some(30_000)),
            ("30", Some(30_000)),
            ("1.5s", Some(1_500)),
            ("5m", Some(300_000)),
            ("23h", Some(82_800_000)),
            ("", None),
            ("s", None),
            ("10 parsecs", None),
            ("-1s", None),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text).map(|d| d.as_millis() as u64), *ms, "{text:?}");
        }
    }
}
