//! The envelope as JSON text, written straight from the request body.
//!
//! [`normalize`](crate::normalize) parses the body into a `serde_json::Value`, rebuilds it as
//! the envelope and leaves the caller to serialize it: three trees' worth of allocation for an
//! event that is then only stored and forwarded. For the shape Genesys sends most (a
//! Notification API message, with the default options) [`normalize_text`] instead reads the
//! top-level members as borrowed raw JSON and writes the envelope text around them, copying
//! each member once (minified, so an envelope is always one line).
//!
//! It is a fast path, not a second normalizer: whenever the input is not the plain case (another
//! shape, a configured field path or key template, a duplicate member, anything invalid) it
//! returns `None` and the caller uses [`normalize`](crate::normalize), which also produces every
//! error message. The two agree on every envelope it does produce, as JSON values and in member
//! order (a property test checks it); the text may differ where JSON allows (escapes, number
//! spelling, whitespace), and large integers keep their exact digits.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::normalize::{
    InputShape, MAX_DETAIL_TYPE_CHARS, NormalizeContext, correlation_key_of, raw_key,
};
use crate::options::{DedupKeyMode, NormalizeOptions};
use crate::timefmt::{format_millis, format_seconds};
use crate::topic::{CHANNEL_METADATA_TOPIC, topic_template};

/// The result of [`normalize_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedText {
    /// The envelope, compact JSON (one line).
    pub envelope: String,
    /// The envelope's `id`.
    pub id: String,
    /// As [`Normalized::dedup_key`](crate::Normalized::dedup_key).
    pub dedup_key: Option<String>,
    /// The recognised input shape.
    pub shape: InputShape,
    /// The envelope's `detail-type`.
    pub detail_type: String,
}

/// A member name or string value, borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object's members in input order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(8);
                while let Some((k, v)) = m.next_entry::<Text<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    /// The member's value; `Err` when the name occurs twice (the general normalizer decides).
    fn get(&self, name: &str) -> Result<Option<&'a RawValue>, ()> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return Err(());
                }
                found = Some(*v);
            }
        }
        Ok(found)
    }
}

fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Text<'_>>(raw.get())
        .ok()
        .map(|t| t.0)
}

/// Whether valid JSON text holds any whitespace. In valid JSON the only bytes at or below
/// `b' '` are the four whitespace characters (a raw control character inside a string is
/// invalid), so one comparison per byte decides, over 32-byte blocks the compiler vectorizes.
fn has_whitespace(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &c| any | (c <= b' ')) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&c| c <= b' ')
}

/// Whether valid JSON text holds whitespace between its tokens (whitespace inside a string is
/// content and does not count).
///
/// Compact JSON still has spaces inside its strings (names, messages: 40 % of the simulator's
/// events), and [`has_whitespace`] cannot tell those from a pretty printer's. This skips string
/// contents with a search for the only two bytes that matter inside a string and looks at the
/// few bytes between strings one by one: a call per string, so it runs only after
/// [`has_whitespace`] found something (on short strings the calls cost more than the bytes).
fn has_structural_whitespace(b: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'"' {
            i += 1;
            loop {
                let Some(rest) = b.get(i..) else { return false };
                match memchr::memchr2(b'"', b'\\', rest) {
                    // Unterminated: not valid JSON, and nothing after it is between tokens.
                    None => return false,
                    Some(at) if rest[at] == b'\\' => i += at + 2,
                    Some(at) => {
                        i += at + 1;
                        break;
                    }
                }
            }
        } else if c <= b' ' {
            return true;
        } else {
            i += 1;
        }
    }
    false
}

/// Appends `raw` (valid JSON) without the whitespace between its tokens.
fn push_minified(out: &mut String, raw: &str) {
    let b = raw.as_bytes();
    if !has_whitespace(b) || !has_structural_whitespace(b) {
        out.push_str(raw);
        return;
    }
    push_minified_bytewise(out, raw);
}

/// The minifier proper: tracks strings byte by byte and drops whitespace outside them.
fn push_minified_bytewise(out: &mut String, raw: &str) {
    let b = raw.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            // Whitespace is ASCII, so these slice bounds are char boundaries.
            out.push_str(&raw[start..i]);
            start = i + 1;
        }
    }
    out.push_str(&raw[start..]);
}

fn push_json_str(out: &mut String, s: &str) {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // The usual case (ids, topics, config values): nothing to escape, nothing to allocate.
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        // Serializing a str into a String cannot fail.
        out.push_str(&quoted);
    }
}

/// `metadata.CorrelationId` when it is a string; `Err` when the general normalizer must decide
/// (a duplicate member).
fn correlation_id<'a>(metadata: Option<&'a RawValue>) -> Result<Option<Cow<'a, str>>, ()> {
    let Some(m) = metadata else { return Ok(None) };
    if !m.get().starts_with('{') {
        return Ok(None);
    }
    let members: Members<'a> = serde_json::from_str(m.get()).map_err(|_| ())?;
    Ok(members.get("CorrelationId")?.and_then(string))
}

/// The envelope of a Genesys Notification API message, or `None` when the general normalizer
/// must handle the body. `body` must be the whole request body, already checked for depth.
pub fn normalize_text(
    body: &str,
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
) -> Option<NormalizedText> {
    if opts.detail_type_path.is_some() || opts.time_path.is_some() {
        return None;
    }
    let members: Members<'_> = serde_json::from_str(body).ok()?;
    for (i, (k, _)) in members.0.iter().enumerate() {
        if members.0[..i].iter().any(|(other, _)| other == k) {
            return None;
        }
    }
    if members.get("detail-type").ok()?.is_some() {
        return None;
    }
    let topic_raw = members.get("topicName").ok()??;
    let topic = string(topic_raw)?;
    if topic.is_empty() || topic == CHANNEL_METADATA_TOPIC {
        return None;
    }
    members.get("eventBody").ok()??;
    let detail_type = topic_template(&topic);
    if detail_type.chars().count() > MAX_DETAIL_TYPE_CHARS {
        return None;
    }
    let metadata = members.get("metadata").ok()?;
    let dedup_key = match &opts.dedup_key {
        DedupKeyMode::None => None,
        mode => {
            let key = match ctx.delivery_id.filter(|d| !d.is_empty()) {
                Some(d) => Some(raw_key("wh", d)),
                None => correlation_id(metadata)
                    .ok()?
                    .and_then(|c| correlation_key_of(&topic, &c)),
            };
            if key.is_none() && !matches!(mode, DedupKeyMode::Auto) {
                // A last resort over the whole body: the general normalizer computes it.
                return None;
            }
            key
        }
    };
    let time = format_seconds(ctx.received_at)?;
    let timestamp = members.get("timestamp").ok()?;
    let keep_timestamp = timestamp.filter(|t| t.get().starts_with('"') && t.get() != "\"\"");
    let received_ms = match keep_timestamp {
        Some(_) => None,
        None => Some(format_millis(ctx.received_at)?),
    };

    let d = &opts.defaults;
    let mut out = String::with_capacity(body.len() + 320);
    out.push_str("{\"version\":\"0\",\"id\":");
    push_json_str(&mut out, ctx.new_id);
    out.push_str(",\"detail-type\":");
    push_json_str(&mut out, &detail_type);
    out.push_str(",\"source\":");
    push_json_str(&mut out, &d.source);
    out.push_str(",\"account\":");
    push_json_str(&mut out, &d.account);
    out.push_str(",\"time\":");
    push_json_str(&mut out, &time);
    out.push_str(",\"region\":");
    push_json_str(&mut out, &d.region);
    out.push_str(",\"resources\":[],\"detail\":{");
    let mut first = true;
    let mut member = |out: &mut String, name: &str, raw: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(out, name);
        out.push(':');
        push_minified(out, raw);
    };
    const LEADING: [&str; 4] = ["topicName", "version", "eventBody", "metadata"];
    for name in LEADING {
        if let Some(raw) = members.get(name).ok()? {
            member(&mut out, name, raw.get());
        }
    }
    for (name, raw) in &members.0 {
        if !LEADING.contains(&name.as_ref()) && name != "timestamp" {
            member(&mut out, name, raw.get());
        }
    }
    match (keep_timestamp, &received_ms) {
        (Some(t), _) => member(&mut out, "timestamp", t.get()),
        (None, Some(ms)) => {
            // Digits, `-`, `:`, `.`, `T` and `Z`: nothing to escape.
            let quoted = format!("\"{ms}\"");
            member(&mut out, "timestamp", &quoted);
        }
        (None, None) => return None,
    }
    out.push_str("}}");
    Some(NormalizedText {
        envelope: out,
        id: ctx.new_id.to_owned(),
        dedup_key,
        shape: InputShape::Notification,
        detail_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;
    use proptest::prelude::*;
    use serde_json::Value;

    fn ctx(delivery: Option<&str>) -> NormalizeContext<'_> {
        NormalizeContext {
            new_id: "0192d4c3-7a1b-7cde-8f00-112233445566",
            delivery_id: delivery,
            received_at: time::macros::datetime!(2026-11-30 12:34:56.789 UTC),
        }
    }

    /// The fast path's answer must be the general normalizer's: same value, same member order
    /// at every level, same id, key and detail-type.
    fn agree(
        body: &str,
        delivery: Option<&str>,
        opts: &NormalizeOptions,
    ) -> Option<NormalizedText> {
        let fast = normalize_text(body, &ctx(delivery), opts)?;
        let slow = normalize(
            serde_json::from_str(body).expect("fast path accepted invalid JSON"),
            &ctx(delivery),
            opts,
        )
        .expect("fast path accepted what the normalizer refuses");
        let fast_value: Value = serde_json::from_str(&fast.envelope).expect("envelope is JSON");
        assert_eq!(fast_value, slow.envelope, "{body}");
        assert_eq!(
            serde_json::to_string(&fast_value).unwrap(),
            serde_json::to_string(&slow.envelope).unwrap(),
            "member order: {body}"
        );
        assert!(!fast.envelope.contains('\n'));
        assert_eq!(
            (&fast.id, &fast.dedup_key, fast.shape, &fast.detail_type),
            (&slow.id, &slow.dedup_key, slow.shape, &slow.detail_type)
        );
        Some(fast)
    }

    /// The byte-by-byte answer, for comparison: minifying changes the text exactly when it has
    /// whitespace between tokens.
    fn structural_whitespace_naive(b: &[u8]) -> bool {
        let text = std::str::from_utf8(b).unwrap();
        let mut out = String::new();
        push_minified_bytewise(&mut out, text);
        out.len() != text.len()
    }

    #[test]
    fn whitespace_is_found_in_every_position_of_a_block() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let plain = "a".repeat(len);
            assert!(!has_whitespace(plain.as_bytes()), "{len}");
            for at in 0..len {
                for ws in [b' ', b'\n', b'\r', b'\t'] {
                    let mut b = plain.clone().into_bytes();
                    b[at] = ws;
                    assert!(has_whitespace(&b), "{len} {at} {ws}");
                }
            }
        }
        // Multi-byte UTF-8 is all above b' '.
        assert!(!has_whitespace("é€😀\"x\"".as_bytes()));
    }

    #[test]
    fn whitespace_counts_only_between_tokens() {
        assert!(!has_structural_whitespace(
            br#"{"a":"b c\n","d":[1,"\" x"]}"#
        ));
        assert!(has_structural_whitespace(br#"{"a":"b c", "d":1}"#));
        assert!(has_structural_whitespace(b"[1,\n2]"));
        assert!(
            has_structural_whitespace(br#"{"a\\": 1}"#),
            "escaped backslash ends nothing"
        );
        assert!(
            !has_structural_whitespace(br#"{"a\" ":1}"#),
            "escaped quote ends nothing"
        );
        // Multi-byte UTF-8 is all above b' '.
        assert!(!has_structural_whitespace("{\"é€\":\"😀 \"}".as_bytes()));
        // Truncated input (never valid JSON) must not panic.
        for s in [&b"\""[..], b"\"\\", b"\"ab\\", b"[\"a"] {
            assert!(!has_structural_whitespace(s));
        }
    }

    #[test]
    fn genesys_samples_take_the_fast_path_and_agree() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let mut taken = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let bodies: Vec<String> = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(items)) => items.iter().map(Value::to_string).collect(),
                Ok(v) => vec![v.to_string(), text.clone()],
                Err(_) => text.lines().map(str::to_owned).collect(),
            };
            for body in bodies {
                if agree(&body, None, &NormalizeOptions::default()).is_some() {
                    taken += 1;
                }
                let _ = agree(&body, Some("wh-1"), &NormalizeOptions::default());
            }
        }
        assert!(taken > 0, "no sample took the fast path");
    }

    #[test]
    fn unusual_inputs_agree_or_fall_back() {
        let cases = [
            r#"{"topicName":"v2.users.abc.presence","version":"2","eventBody":{"a":1},"metadata":{"CorrelationId":"c1"}}"#,
            // Whitespace, escapes, a kept timestamp, extra members in input order.
            "{ \"x\" : [1, 2 ,\n3], \"topicName\" : \"v2.users.a\\u0062c.presence\", \"eventBody\": { \"s\": \"a b\\\"c\" },\n \"timestamp\": \"2026-01-01T00:00:00.000Z\", \"z\": null }",
            // Empty timestamp is replaced; non-string timestamp too.
            r#"{"topicName":"t.x","eventBody":{},"timestamp":""}"#,
            r#"{"topicName":"t.x","eventBody":{},"timestamp":17}"#,
            // Metadata that is not an object, or has no string id.
            r#"{"topicName":"t.x","eventBody":[],"metadata":"m"}"#,
            r#"{"topicName":"t.x","eventBody":[],"metadata":{"CorrelationId":5}}"#,
            // A topic with a colon: the hashed key form.
            r#"{"topicName":"a:b","eventBody":1,"metadata":{"CorrelationId":"c"}}"#,
            // Big integers keep their digits in the text (the values still agree as f64).
            r#"{"topicName":"t.x","eventBody":{"n":1.5e3}}"#,
            // Fallbacks: duplicates, other shapes, heartbeats, missing body, not an object.
            r#"{"topicName":"t.x","topicName":"t.y","eventBody":{}}"#,
            r#"{"topicName":"t.x","eventBody":{},"metadata":{"CorrelationId":"a","CorrelationId":"b"}}"#,
            r#"{"detail-type":"x","detail":{},"topicName":"t"}"#,
            r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#,
            r#"{"topicName":"t.x"}"#,
            r#"{"topicName":"","eventBody":{}}"#,
            r#"{"eventType":"x"}"#,
            r#"[1]"#,
        ];
        let taken: Vec<bool> = cases
            .iter()
            .map(|c| agree(c, None, &NormalizeOptions::default()).is_some())
            .collect();
        assert_eq!(
            taken,
            [
                true, true, true, true, true, true, true, true, false, false, false, false, false,
                false, false, false
            ]
        );
        let opts = NormalizeOptions {
            dedup_key: DedupKeyMode::BodyHash,
            ..NormalizeOptions::default()
        };
        assert!(
            agree(cases[0], None, &opts).is_some(),
            "a Genesys key needs no last resort"
        );
        assert!(
            agree(cases[2], None, &opts).is_none(),
            "body hash is the general path's"
        );
        let none = NormalizeOptions {
            dedup_key: DedupKeyMode::None,
            ..NormalizeOptions::default()
        };
        assert_eq!(agree(cases[0], None, &none).unwrap().dedup_key, None);
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~é\"\\\\\n]{0,12}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-zA-Z]{1,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn structural_whitespace_matches_a_byte_scan(
            v in json_value(),
            pretty in any::<bool>(),
        ) {
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            prop_assert_eq!(
                has_structural_whitespace(text.as_bytes()),
                structural_whitespace_naive(text.as_bytes()),
                "{}", text
            );
        }

        #[test]
        fn random_notifications_agree(
            body in json_value(),
            extra in proptest::collection::vec(("[a-z]{1,5}", json_value()), 0..3),
            with_meta in any::<bool>(),
            corr in "[a-z0-9-]{0,10}",
            pretty in any::<bool>(),
        ) {
            let mut m = serde_json::Map::new();
            for (k, v) in extra {
                m.insert(k, v);
            }
            m.insert("topicName".into(), Value::from("v2.routing.queues.q1.conversations.calls"));
            m.insert("eventBody".into(), body);
            if with_meta {
                m.insert("metadata".into(), serde_json::json!({"CorrelationId": corr}));
            }
            let v = Value::Object(m);
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            prop_assert!(agree(&text, None, &NormalizeOptions::default()).is_some());
        }
    }
}
