//! AWS' PutEvents entry-size formula, so the gateway can batch and claim-check before AWS refuses.

use serde_json::Value;

/// Bytes AWS counts for `Time` when an entry sets it, whatever its value.
pub const PUT_EVENTS_TIME_BYTES: usize = 14;

/// Size of one `PutEventsRequestEntry` as EventBridge computes it
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/calculate-putevents-entry-size.html>):
/// 14 bytes if `Time` is set, plus the UTF-8 bytes of `Source`, `DetailType`, `Detail` and each
/// `Resources` item. Nothing else counts; the delivered event is always larger.
pub fn put_events_entry_size(
    time_set: bool,
    source: &str,
    detail_type: &str,
    detail: &str,
    resources: &[String],
) -> usize {
    let time = if time_set { PUT_EVENTS_TIME_BYTES } else { 0 };
    time + source.len()
        + detail_type.len()
        + detail.len()
        + resources.iter().map(String::len).sum::<usize>()
}

/// [`put_events_entry_size`] of an envelope as the gateway would forward it: `Time` set,
/// `Detail` serialized compactly. Missing or mistyped fields count as empty, so this never fails.
pub fn envelope_entry_size(envelope: &Value) -> usize {
    let text = |key: &str| envelope.get(key).and_then(Value::as_str).unwrap_or("");
    let detail = envelope
        .get("detail")
        .map(|d| serde_json::to_string(d).unwrap_or_default())
        .unwrap_or_default();
    let resources: Vec<String> = envelope
        .get("resources")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    put_events_entry_size(
        envelope.get("time").is_some(),
        text("source"),
        text("detail-type"),
        &detail,
        &resources,
    )
}
