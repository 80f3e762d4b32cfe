//! The two timestamp forms of the envelope: `time` (whole seconds) and `detail.timestamp` (ms).

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// RFC 3339 has four-digit years only; `time` would happily write `-0001` or `+10000`.
fn rfc3339_range(t: OffsetDateTime) -> Option<OffsetDateTime> {
    let utc = t.checked_to_offset(UtcOffset::UTC)?;
    (0..=9999).contains(&utc.year()).then_some(utc)
}

/// `2025-03-04T14:05:10Z`: EventBridge `time` has whole-second precision.
pub(crate) fn format_seconds(t: OffsetDateTime) -> Option<String> {
    rfc3339_range(t)?
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .ok()
}

/// `2025-03-04T14:05:10.190Z`: Genesys' `detail.timestamp`.
pub(crate) fn format_millis(t: OffsetDateTime) -> Option<String> {
    rfc3339_range(t)?
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .ok()
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Epoch numbers below 10^11 are seconds (10^11 ms is March 1973; 10^11 s is year 5138).
const SECONDS_BELOW: i128 = 100_000_000_000;

/// A configured time field: RFC 3339 string, or epoch seconds/milliseconds.
pub(crate) fn parse_time_value(v: &Value) -> Option<OffsetDateTime> {
    match v {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => {
            let raw = i128::from(n.as_i64()?);
            let nanos = if raw.abs() < SECONDS_BELOW {
                raw * 1_000_000_000
            } else {
                raw * 1_000_000
            };
            OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
        }
        _ => None,
    }
}
