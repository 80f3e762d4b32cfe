//! Input shape detection and wrapping into the EventBridge envelope.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::options::{Compiled, DedupKeyMode, NormalizeOptions};
use crate::timefmt::{format_millis, format_seconds, parse_rfc3339, parse_time_value};
use crate::topic::{CHANNEL_METADATA_TOPIC, topic_template};

/// AWS' limit on `DetailType` (characters).
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;

/// Raw key values longer than this are replaced by their SHA-256, so a huge header or topic
/// cannot make a huge dedup key.
const MAX_RAW_KEY_BYTES: usize = 256;

/// What the gateway knows about the request, beyond its body.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeContext<'a> {
    /// The UUID the gateway generated for this event; used as `id` unless the input is an
    /// EventBridge envelope with its own.
    pub new_id: &'a str,
    /// The sender's delivery id (Standard Webhooks `webhook-id`), stable across retries.
    pub delivery_id: Option<&'a str>,
    /// When the gateway received the request; becomes `time` and `detail.timestamp`.
    pub received_at: OffsetDateTime,
}

/// Which input shape was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputShape {
    /// Already an EventBridge envelope (has `detail-type`); passed through.
    EventBridge,
    /// A Genesys Notification API message (has `topicName`); wrapped like Genesys does.
    Notification,
    /// Any other object, wrapped whole as `detail`: the seeds' flat webhooks (`eventType`) and
    /// objects whose detail-type comes from `detail_type_path`.
    Flat,
}

/// The result of [`normalize`].
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The envelope, a JSON object with keys in EventBridge order (`version`, `id`,
    /// `detail-type`, `source`, `account`, `time`, `region`, `resources`, `detail`, then any
    /// extra keys an EventBridge input carried, such as `replay-name`).
    pub envelope: Value,
    /// The envelope's `id`.
    pub id: String,
    /// Namespaced dedup key (`wh:`, `corr:`, `eb:`, `tpl:`, `body:`, or a `-sha256:` form of
    /// the first three for long values), or `None` when the event must not be deduplicated.
    pub dedup_key: Option<String>,
    /// The recognised input shape.
    pub shape: InputShape,
    /// The envelope's `detail-type`.
    pub detail_type: String,
}

/// Why a body cannot become an event. Every variant except [`ChannelMetadata`] is a client
/// error (HTTP 400); the message names the field and what was expected.
///
/// [`ChannelMetadata`]: NormalizeError::ChannelMetadata
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The body is JSON but not an object.
    #[error("event must be a JSON object, got {found}")]
    NotAnObject {
        /// JSON type found (`array`, `string`, ...).
        found: &'static str,
    },
    /// A WebSocket heartbeat or pong (`topicName` `channel.metadata`): not an event, ignore it.
    #[error("channel.metadata message (heartbeat or pong) is not an event")]
    ChannelMetadata,
    /// The object matches no known shape and no `detail_type_path` is configured (or it did not
    /// resolve to a string).
    #[error(
        "unrecognised event shape: expected an EventBridge envelope (`detail-type`), a Genesys \
         notification (`topicName`) or a flat event (`eventType`){hint}"
    )]
    UnknownShape {
        /// Says which `detail_type_path` was tried, or how to configure one.
        hint: String,
    },
    /// A field has the wrong type or value.
    #[error("field `{path}` must be {expected}")]
    InvalidField {
        /// Where the field is in the input (`detail-type`, `resources[2]`, `eventType`, ...).
        path: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The detail-type is longer than AWS accepts.
    #[error(
        "detail-type from `{path}` is {len} characters; the maximum is {MAX_DETAIL_TYPE_CHARS}"
    )]
    DetailTypeTooLong {
        /// The field it came from.
        path: String,
        /// Its length in characters.
        len: usize,
    },
    /// `time` of an EventBridge input is not an RFC 3339 timestamp.
    #[error("field `time` must be an RFC 3339 timestamp, got {value:?}")]
    InvalidTime {
        /// The value found (truncated to 64 characters).
        value: String,
    },
    /// The receive time cannot be written as RFC 3339 (a year outside 0..=9999).
    #[error("receive time is outside the RFC 3339 range")]
    ReceivedAtOutOfRange,
}

impl NormalizeError {
    /// True when the message should be dropped silently rather than answered as an error.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, Self::ChannelMetadata)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid(path: &str, expected: &'static str) -> NormalizeError {
    NormalizeError::InvalidField {
        path: path.to_owned(),
        expected,
    }
}

/// Turns one request body into the envelope Genesys' EventBridge integration produces.
///
/// Shapes, checked in this order:
/// 1. **EventBridge envelope** (has `detail-type`): passed through. `detail-type` must be a
///    non-empty string and `detail` an object; `id` is kept (generated if absent); missing
///    `version`/`source`/`account`/`time`/`region`/`resources` are filled from config and
///    `received_at`; `time` is rewritten only when it is not already `YYYY-MM-DDTHH:MM:SSZ`
///    (for example fractional seconds or an offset), to that form in UTC.
/// 2. **`channel.metadata`** heartbeats/pongs: [`NormalizeError::ChannelMetadata`].
/// 3. **Notification** (has `topicName`): wrapped as Genesys does, `detail-type` = the topic
///    template, `detail` = the message plus `timestamp` (kept if the input has one).
/// 4. **Flat** (`detail_type_path` resolves, or has `eventType`): the body becomes `detail`.
/// 5. Anything else: [`NormalizeError::UnknownShape`]. A generic detail-type was rejected on
///    purpose: such events would be acknowledged and then match no rule, which hides a
///    misconfigured sender; a 400 naming `detail_type_path` surfaces it at the first request.
///
/// `detail_type_path` and `time_path` apply to shapes 3–4 only; an EventBridge envelope already
/// has both. The dedup key follows [`DedupKeyMode`]: delivery id, then Genesys' `topicName` +
/// `metadata.CorrelationId` (from `detail` for EventBridge input, so one Genesys event that
/// arrives both over a WebSocket and over EventBridge gets one key), then the EventBridge `id`,
/// then the mode's last resort.
pub fn normalize(
    body: Value,
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
) -> Result<Normalized, NormalizeError> {
    let compiled = opts.compile_lenient();
    let map = match body {
        Value::Object(map) => map,
        other => {
            return Err(NormalizeError::NotAnObject {
                found: type_name(&other),
            });
        }
    };
    if map.contains_key("detail-type") {
        eventbridge(map, ctx, opts, &compiled)
    } else if map.get("topicName").and_then(Value::as_str) == Some(CHANNEL_METADATA_TOPIC) {
        Err(NormalizeError::ChannelMetadata)
    } else if map.contains_key("topicName") {
        notification(map, ctx, opts, &compiled)
    } else {
        flat(map, ctx, opts, &compiled)
    }
}

fn eventbridge(
    mut map: Map<String, Value>,
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
    compiled: &Compiled,
) -> Result<Normalized, NormalizeError> {
    let detail_type = match map.get("detail-type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("detail-type", "a non-empty string")),
    };
    check_detail_type_len("detail-type", &detail_type)?;
    let Some(Value::Object(detail)) = map.get("detail") else {
        return Err(invalid("detail", "an object"));
    };
    match map.get("version") {
        None => {}
        Some(Value::String(v)) if v == "0" => {}
        Some(_) => return Err(invalid("version", "the string \"0\"")),
    }
    let input_id = match map.get("id") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(invalid("id", "a non-empty string")),
    };
    for key in ["source", "account", "region"] {
        match map.get(key) {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(invalid(key, "a non-empty string")),
        }
    }
    match map.get("resources") {
        None => {}
        Some(Value::Array(items)) => {
            if let Some(i) = items.iter().position(|v| !v.is_string()) {
                return Err(NormalizeError::InvalidField {
                    path: format!("resources[{i}]"),
                    expected: "a string",
                });
            }
        }
        Some(_) => return Err(invalid("resources", "an array of strings")),
    }
    let time = match map.get("time") {
        None => received_seconds(ctx)?,
        Some(Value::String(s)) => canonical_time(s)?,
        Some(_) => return Err(invalid("time", "an RFC 3339 timestamp string")),
    };
    let correlation =
        correlation_key(detail).or_else(|| input_id.as_deref().map(|id| raw_key("eb", id)));
    let dedup_key = dedup_key(ctx, opts, compiled, &map, correlation);

    let id = input_id.unwrap_or_else(|| ctx.new_id.to_owned());
    let mut env = Map::new();
    let mut put = |key: &str, value: Value| {
        env.insert(key.to_owned(), value);
    };
    put("version", Value::from("0"));
    put("id", Value::from(id.clone()));
    put("detail-type", Value::from(detail_type.clone()));
    let d = &opts.defaults;
    put(
        "source",
        map.shift_remove("source")
            .unwrap_or_else(|| Value::from(d.source.clone())),
    );
    put(
        "account",
        map.shift_remove("account")
            .unwrap_or_else(|| Value::from(d.account.clone())),
    );
    put("time", Value::from(time));
    put(
        "region",
        map.shift_remove("region")
            .unwrap_or_else(|| Value::from(d.region.clone())),
    );
    put(
        "resources",
        map.shift_remove("resources")
            .unwrap_or_else(|| Value::Array(Vec::new())),
    );
    put(
        "detail",
        map.shift_remove("detail")
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    for key in ["version", "id", "detail-type", "time"] {
        map.shift_remove(key);
    }
    // Extra keys (e.g. `replay-name`) are kept, after the standard ones, in input order.
    env.extend(map);
    Ok(Normalized {
        envelope: Value::Object(env),
        id,
        dedup_key,
        shape: InputShape::EventBridge,
        detail_type,
    })
}

fn notification(
    mut map: Map<String, Value>,
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
    compiled: &Compiled,
) -> Result<Normalized, NormalizeError> {
    let topic = match map.get("topicName") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("topicName", "a non-empty string")),
    };
    if !map.contains_key("eventBody") {
        return Err(invalid("eventBody", "present in a Genesys notification"));
    }
    let (detail_type, dt_path) = match override_detail_type(compiled, &map) {
        Some(dt) => (dt, opts.detail_type_path.clone().unwrap_or_default()),
        None => (topic_template(&topic), "topicName".to_owned()),
    };
    check_detail_type_len(&dt_path, &detail_type)?;
    let time = event_time(compiled, &map, ctx)?;
    let dedup_key = dedup_key(ctx, opts, compiled, &map, correlation_key(&map));

    let timestamp = match map.shift_remove("timestamp") {
        Some(Value::String(s)) if !s.is_empty() => Value::String(s),
        _ => {
            Value::from(format_millis(ctx.received_at).ok_or(NormalizeError::ReceivedAtOutOfRange)?)
        }
    };
    let mut detail = Map::new();
    for key in ["topicName", "version", "eventBody", "metadata"] {
        if let Some(v) = map.shift_remove(key) {
            detail.insert(key.to_owned(), v);
        }
    }
    detail.extend(map);
    detail.insert("timestamp".into(), timestamp);
    Ok(wrap(
        ctx,
        opts,
        detail,
        detail_type,
        time,
        dedup_key,
        InputShape::Notification,
    ))
}

fn flat(
    map: Map<String, Value>,
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
    compiled: &Compiled,
) -> Result<Normalized, NormalizeError> {
    let (detail_type, dt_path) = match override_detail_type(compiled, &map) {
        Some(dt) => (dt, opts.detail_type_path.clone().unwrap_or_default()),
        None => match map.get("eventType") {
            Some(Value::String(s)) if !s.is_empty() => (s.clone(), "eventType".to_owned()),
            Some(_) => return Err(invalid("eventType", "a non-empty string")),
            None => {
                let hint = match &opts.detail_type_path {
                    Some(p) => {
                        format!("; `detail_type_path` `{p}` did not resolve to a non-empty string")
                    }
                    None => "; configure `detail_type_path` to name the field holding the event \
                             type"
                        .to_owned(),
                };
                return Err(NormalizeError::UnknownShape { hint });
            }
        },
    };
    check_detail_type_len(&dt_path, &detail_type)?;
    let time = event_time(compiled, &map, ctx)?;
    let dedup_key = dedup_key(ctx, opts, compiled, &map, None);
    Ok(wrap(
        ctx,
        opts,
        map,
        detail_type,
        time,
        dedup_key,
        InputShape::Flat,
    ))
}

fn wrap(
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
    detail: Map<String, Value>,
    detail_type: String,
    time: String,
    dedup_key: Option<String>,
    shape: InputShape,
) -> Normalized {
    let d = &opts.defaults;
    let mut env = Map::new();
    env.insert("version".into(), Value::from("0"));
    env.insert("id".into(), Value::from(ctx.new_id));
    env.insert("detail-type".into(), Value::from(detail_type.clone()));
    env.insert("source".into(), Value::from(d.source.clone()));
    env.insert("account".into(), Value::from(d.account.clone()));
    env.insert("time".into(), Value::from(time));
    env.insert("region".into(), Value::from(d.region.clone()));
    env.insert("resources".into(), Value::Array(Vec::new()));
    env.insert("detail".into(), Value::Object(detail));
    Normalized {
        envelope: Value::Object(env),
        id: ctx.new_id.to_owned(),
        dedup_key,
        shape,
        detail_type,
    }
}

fn check_detail_type_len(path: &str, detail_type: &str) -> Result<(), NormalizeError> {
    let len = detail_type.chars().count();
    if len > MAX_DETAIL_TYPE_CHARS {
        return Err(NormalizeError::DetailTypeTooLong {
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

fn override_detail_type(compiled: &Compiled, input: &Map<String, Value>) -> Option<String> {
    match compiled.detail_type_path.as_ref()?.lookup_in(input)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn received_seconds(ctx: &NormalizeContext<'_>) -> Result<String, NormalizeError> {
    format_seconds(ctx.received_at).ok_or(NormalizeError::ReceivedAtOutOfRange)
}

fn event_time(
    compiled: &Compiled,
    input: &Map<String, Value>,
    ctx: &NormalizeContext<'_>,
) -> Result<String, NormalizeError> {
    let configured = compiled
        .time_path
        .as_ref()
        .and_then(|p| p.lookup_in(input))
        .and_then(parse_time_value)
        .and_then(format_seconds);
    match configured {
        Some(t) => Ok(t),
        None => received_seconds(ctx),
    }
}

/// Keeps an already canonical `time` byte for byte; rewrites other RFC 3339 forms.
fn canonical_time(s: &str) -> Result<String, NormalizeError> {
    parse_rfc3339(s)
        .and_then(format_seconds)
        .ok_or_else(|| NormalizeError::InvalidTime {
            value: s.chars().take(64).collect(),
        })
}

fn dedup_key(
    ctx: &NormalizeContext<'_>,
    opts: &NormalizeOptions,
    compiled: &Compiled,
    input: &Map<String, Value>,
    genesys: Option<String>,
) -> Option<String> {
    if matches!(opts.dedup_key, DedupKeyMode::None) {
        return None;
    }
    ctx.delivery_id
        .filter(|d| !d.is_empty())
        .map(|d| raw_key("wh", d))
        .or(genesys)
        .or_else(|| last_resort(&opts.dedup_key, compiled, input))
}

/// `corr:<topicName>:<CorrelationId>` from a Notification message or an EventBridge `detail`.
fn correlation_key(message: &Map<String, Value>) -> Option<String> {
    let topic = message.get("topicName")?.as_str()?;
    let corr = message.get("metadata")?.get("CorrelationId")?.as_str()?;
    correlation_key_of(topic, corr)
}

/// The `corr:` key of a topic and correlation id (shared with the text normalizer).
pub(crate) fn correlation_key_of(topic: &str, corr: &str) -> Option<String> {
    if topic.is_empty() || corr.is_empty() {
        return None;
    }
    // The raw form is unambiguous only when the topic has no `:`; otherwise hash with a length
    // prefix so that ("a:b", "c") and ("a", "b:c") stay distinct.
    if !topic.contains(':') && topic.len() + corr.len() < MAX_RAW_KEY_BYTES {
        return Some(format!("corr:{topic}:{corr}"));
    }
    let mut h = Sha256::new();
    h.update((topic.len() as u64).to_be_bytes());
    h.update(topic.as_bytes());
    h.update(corr.as_bytes());
    Some(format!("corr-sha256:{}", hex::encode(h.finalize())))
}

pub(crate) fn raw_key(kind: &str, value: &str) -> String {
    if value.len() <= MAX_RAW_KEY_BYTES {
        format!("{kind}:{value}")
    } else {
        format!(
            "{kind}-sha256:{}",
            hex::encode(Sha256::digest(value.as_bytes()))
        )
    }
}

fn last_resort(
    mode: &DedupKeyMode,
    compiled: &Compiled,
    input: &Map<String, Value>,
) -> Option<String> {
    match mode {
        DedupKeyMode::Template(_) => {
            let rendered = compiled.template.as_ref()?.render(input)?;
            Some(format!(
                "tpl:{}",
                hex::encode(Sha256::digest(rendered.as_bytes()))
            ))
        }
        DedupKeyMode::BodyHash => {
            let bytes = serde_json::to_vec(input).ok()?;
            Some(format!("body:{}", hex::encode(Sha256::digest(&bytes))))
        }
        _ => None,
    }
}
