//! Genesys topic names: concrete topic → template, and the WebSocket's non-event messages.

use serde_json::Value;

/// The topic of WebSocket heartbeats and pongs. They are channel health, not events.
pub const CHANNEL_METADATA_TOPIC: &str = "channel.metadata";

/// Turns a concrete Genesys topic into the template Genesys' EventBridge integration puts in
/// `detail-type`: every id segment becomes a literal `{id}`.
///
/// A segment is an id when it is a UUID (8-4-4-4-12 hex digits, any case, or the same 32 hex
/// digits without hyphens), or when it follows `entitytype` / `entityid` in an audit topic
/// (`v2.audits.entitytype.{id}.entityid.{id}`: the entity type is a word such as `USER`, yet
/// Genesys' template names it `{id}`). Anything else is kept, so plain words such as
/// `customer`, `presence` or `routingStatus` are never replaced.
///
/// ```
/// use switchboard_event::topic_template;
/// assert_eq!(
///     topic_template("v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f.presence"),
///     "v2.users.{id}.presence"
/// );
/// ```
pub fn topic_template(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    let mut previous = "";
    for (i, segment) in topic.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        let positional = (previous == "entitytype" || previous == "entityid")
            && topic.starts_with("v2.audits.")
            && !segment.is_empty();
        if positional || is_uuid(segment) || is_compact_uuid(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
        previous = segment;
    }
    out
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_compact_uuid(s: &str) -> bool {
    // Requiring a digit keeps a 32-letter word spelled only with a-f untouched.
    s.len() == 32
        && s.bytes().all(|c| c.is_ascii_hexdigit())
        && s.bytes().any(|c| c.is_ascii_digit())
}

/// True for WebSocket heartbeats and pongs (`"topicName": "channel.metadata"`), which are not
/// events: the gateway should count them as liveness and drop them.
pub fn is_channel_metadata(body: &Value) -> bool {
    body.get("topicName").and_then(Value::as_str) == Some(CHANNEL_METADATA_TOPIC)
}
