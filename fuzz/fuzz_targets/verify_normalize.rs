//! One webhook request end to end through the pure crates: verify the raw bytes, pre-scan the
//! depth, parse, normalize. Nothing may panic, and:
//! - a request `sign` produced verifies with every scheme (rotation included), and a changed
//!   body or a stale timestamp does not;
//! - verify errors have a public reason, never contain the expected MAC and do not depend on
//!   the secrets;
//! - a body that passes `check_json_depth(_, 64)` parses no deeper than 64 levels;
//! - an accepted event is an envelope with `version`, `id`, `detail-type` (1 to 128 chars),
//!   `source`, `time` (`YYYY-MM-DDTHH:MM:SSZ`), an object `detail`, and a bounded dedup key;
//! - whenever the text fast path (`normalize_text`) takes a body, `normalize` accepts it too and
//!   both give the same envelope (same JSON value, same member order), id, key and detail-type,
//!   and the text envelope is one line of JSON.
//!
//! Input layout (the seeds in `corpus/verify_normalize/seed-*` follow it):
//! ```text
//! byte 0   flags: bit 0 clear = sign the body ourselves and assert the round trip;
//!                 bits 1-2 pick the NormalizeOptions (0 and 3: default)
//! byte 1   scheme: % 6 picks the variant, / 6 its parameters (header, prefix, encoding,
//!          tolerance)
//! then lines: secrets (comma-separated) \n now_unix \n msg_id \n
//!             `name: value` header lines \n (empty line) \n body (the rest, raw bytes)
//! ```
//! Headers are used as given only when bit 0 is set; otherwise `sign`'s headers are used.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_event::{
    DedupKeyMode, MAX_DETAIL_TYPE_CHARS, NormalizeContext, NormalizeOptions, check_json_depth,
    normalize, normalize_text,
};
use switchboard_verify::{
    ConfigError, DEFAULT_HMAC_HEADER, Encoding, Scheme, Verifier, VerifyError, sign,
};
use time::OffsetDateTime;

const MAX_DEPTH: usize = 64;
const DEFAULT_NOW: i64 = 1_700_000_000;
const NEW_ID: &str = "00000000-0000-4000-8000-000000000000";

fn scheme(selector: u8) -> Scheme {
    let sub = selector / 6;
    match selector % 6 {
        0 => Scheme::HubSignature256,
        1 => Scheme::StandardWebhooks {
            tolerance_secs: [300, 0, u64::MAX, 1 << 63][usize::from(sub % 4)],
        },
        2 => Scheme::HmacHeader {
            header: if sub & 1 == 0 {
                DEFAULT_HMAC_HEADER
            } else {
                "X-Sig"
            }
            .to_owned(),
            prefix: if sub & 2 == 0 { "" } else { "sha256=" }.to_owned(),
            encoding: if sub & 4 == 0 {
                Encoding::Base64
            } else {
                Encoding::Hex
            },
        },
        3 => Scheme::ApiKey {
            header: if sub & 1 == 0 {
                "X-Api-Key"
            } else {
                "Authorization"
            }
            .to_owned(),
        },
        4 => Scheme::Basic,
        _ => Scheme::None,
    }
}

fn options(selector: u8) -> &'static NormalizeOptions {
    static OPTIONS: OnceLock<[NormalizeOptions; 3]> = OnceLock::new();
    let all = OPTIONS.get_or_init(|| {
        let all = [
            NormalizeOptions::default(),
            NormalizeOptions {
                dedup_key: DedupKeyMode::BodyHash,
                time_path: Some("eventBody.eventTime".to_owned()),
                ..NormalizeOptions::default()
            },
            NormalizeOptions {
                dedup_key: DedupKeyMode::Template(
                    "{conversationId}:{eventType}:{timestamp}".to_owned(),
                ),
                detail_type_path: Some("$.kind".to_owned()),
                time_path: Some("timestamp".to_owned()),
                ..NormalizeOptions::default()
            },
        ];
        for o in &all {
            assert_eq!(o.validate(), Ok(()), "fuzz options must be valid: {o:?}");
        }
        all
    });
    match selector {
        1 => &all[1],
        2 => &all[2],
        _ => &all[0],
    }
}

/// Splits off the next line (without its `\n`); the whole rest when there is none.
fn next_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    match rest.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let line = &rest[..i];
            *rest = &rest[i + 1..];
            line
        }
        None => std::mem::take(rest),
    }
}

struct Request {
    round_trip: bool,
    options: u8,
    scheme: Scheme,
    secrets: Vec<String>,
    now: i64,
    msg_id: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn decode(data: &[u8]) -> Option<Request> {
    let (&flags, rest) = data.split_first()?;
    let (&selector, mut rest) = rest.split_first()?;
    let secrets = String::from_utf8_lossy(next_line(&mut rest));
    let now = String::from_utf8_lossy(next_line(&mut rest))
        .trim()
        .parse()
        .unwrap_or(DEFAULT_NOW);
    let msg_id = String::from_utf8_lossy(next_line(&mut rest)).into_owned();
    let mut headers = Vec::new();
    while !rest.is_empty() {
        let line = next_line(&mut rest);
        if line.is_empty() {
            break;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        headers.push((
            String::from_utf8_lossy(name).trim().to_owned(),
            value.to_vec(),
        ));
    }
    let scheme = scheme(selector);
    let secrets = if secrets.is_empty() {
        Vec::new()
    } else {
        secrets.split(',').map(str::to_owned).collect()
    };
    Some(Request {
        round_trip: flags & 1 == 0,
        options: (flags >> 1) & 3,
        scheme,
        secrets,
        now,
        msg_id,
        headers,
        body: rest.to_vec(),
    })
}

/// A valid secret for `scheme` that no seed uses.
fn other_secret(scheme: &Scheme) -> Option<&'static str> {
    match scheme {
        Scheme::None => None,
        Scheme::StandardWebhooks { .. } => {
            Some("whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
        }
        Scheme::Basic => Some("fuzz:other-password"),
        _ => Some("other-secret"),
    }
}

fn is_hmac(scheme: &Scheme) -> bool {
    matches!(
        scheme,
        Scheme::HubSignature256 | Scheme::HmacHeader { .. } | Scheme::StandardWebhooks { .. }
    )
}

/// Signs with the last secret, verifies with all of them; returns the delivery id.
fn round_trip(req: &Request) -> Option<String> {
    let secrets = if matches!(req.scheme, Scheme::None) {
        Vec::new()
    } else {
        req.secrets.clone()
    };
    let verifier = Verifier::new(req.scheme.clone(), secrets.clone());
    let signing = secrets.last().map(String::as_str).unwrap_or("");
    let headers = match sign(&req.scheme, signing, &req.body, &req.msg_id, req.now) {
        Ok(headers) => headers,
        Err(e) => {
            // `sign` validates the secret as `Verifier::new` does, so with a verifier that
            // accepted every secret only the message id or the timestamp can be refused.
            if verifier.is_ok() {
                assert!(
                    matches!(
                        e,
                        ConfigError::InvalidMessageId | ConfigError::NegativeTimestamp(_)
                    ),
                    "verifier accepted the secrets but sign refused: {e}"
                );
            }
            return None;
        }
    };
    let verifier = verifier.ok()?;
    let verified = match verifier.verify(&headers, &req.body, req.now) {
        Ok(v) => v,
        Err(e) => panic!(
            "signed request refused: {e} (scheme {:?}, msg_id {:?}, now {}, headers {headers:?})",
            req.scheme, req.msg_id, req.now
        ),
    };
    match &req.scheme {
        Scheme::StandardWebhooks { tolerance_secs } => {
            assert_eq!(verified.delivery_id.as_deref(), Some(req.msg_id.as_str()));
            let late = i64::try_from(*tolerance_secs)
                .ok()
                .and_then(|t| req.now.checked_add(t))
                .and_then(|t| t.checked_add(1));
            if let Some(late) = late {
                assert!(
                    matches!(
                        verifier.verify(&headers, &req.body, late),
                        Err(VerifyError::TimestampOutsideTolerance { .. })
                    ),
                    "accepted a timestamp past the tolerance"
                );
            }
        }
        _ => assert_eq!(verified.delivery_id, None),
    }
    if is_hmac(&req.scheme) {
        let mut tampered = req.body.clone();
        tampered.push(b'\0');
        assert_eq!(
            verifier.verify(&headers, &tampered, req.now),
            Err(VerifyError::SignatureMismatch),
            "a changed body verified"
        );
    }
    verified.delivery_id
}

/// Verifies the headers as given; returns the delivery id when the request verifies.
fn as_given(req: &Request) -> Option<String> {
    let verifier = Verifier::new(req.scheme.clone(), req.secrets.clone()).ok()?;
    match verifier.verify(&req.headers, &req.body, req.now) {
        Ok(v) => {
            if let Some(id) = &v.delivery_id {
                assert!(
                    !id.is_empty() && !id.contains('.'),
                    "bad delivery id {id:?}"
                );
            }
            v.delivery_id
        }
        Err(e) => {
            assert!(!e.public_reason().is_empty());
            let shown = format!("{e} {e:?}");
            // Nor a secret: with other secrets the same request fails with the same message.
            if let Some(other) = other_secret(&req.scheme) {
                let other = Verifier::new(req.scheme.clone(), vec![other.to_owned()]);
                if let Ok(Err(e2)) = other.map(|o| o.verify(&req.headers, &req.body, req.now)) {
                    assert_eq!(e.to_string(), e2.to_string(), "error depends on the secret");
                }
            }
            // Errors never reveal the expected MAC (body-MAC schemes: it is what `sign` writes).
            if matches!(
                req.scheme,
                Scheme::HubSignature256 | Scheme::HmacHeader { .. }
            ) {
                for secret in &req.secrets {
                    if let Ok(signed) = sign(&req.scheme, secret, &req.body, "x", 0) {
                        for (_, value) in signed {
                            let tag = value.trim_start_matches("sha256=");
                            assert!(!shown.contains(tag), "error reveals the MAC: {shown}");
                        }
                    }
                }
            }
            None
        }
    }
}

fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn is_canonical_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

fn check_normalize(req: &Request, delivery_id: Option<&str>) {
    if let Err(e) = check_json_depth(&req.body, MAX_DEPTH) {
        let switchboard_event::DepthError::TooDeep { offset, .. } = e else {
            return;
        };
        assert!(
            matches!(req.body.get(offset), Some(b'[' | b'{')),
            "depth error points at a non-bracket"
        );
        return;
    }
    let value: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            assert!(
                !e.to_string().contains("recursion limit"),
                "the depth pre-scan let serde_json hit its recursion limit"
            );
            return;
        }
    };
    assert!(
        value_depth(&value) <= MAX_DEPTH,
        "check_json_depth passed a body nested deeper than {MAX_DEPTH}"
    );
    if !value.is_object() {
        return;
    }
    let opts = options(req.options);
    let received_at =
        OffsetDateTime::from_unix_timestamp(req.now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let ctx = NormalizeContext {
        new_id: NEW_ID,
        delivery_id,
        received_at,
    };
    // The fast path reads the same bytes the gateway would hand it (after the depth pre-scan).
    let fast = std::str::from_utf8(&req.body)
        .ok()
        .and_then(|text| normalize_text(text, &ctx, opts));
    let n = match normalize(value, &ctx, opts) {
        Ok(n) => n,
        Err(e) => {
            assert!(
                fast.is_none(),
                "normalize_text accepted what normalize refuses ({e}): {:?}",
                fast.map(|f| f.envelope)
            );
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if let Some(f) = &fast {
        assert!(!f.envelope.contains('\n'), "text envelope spans lines");
        let v: Value = serde_json::from_str(&f.envelope).expect("text envelope is not JSON");
        assert_eq!(v, n.envelope, "text and value envelopes differ");
        assert_eq!(
            serde_json::to_string(&v).unwrap_or_default(),
            serde_json::to_string(&n.envelope).unwrap_or_default(),
            "member order differs"
        );
        assert_eq!(
            (&f.id, &f.dedup_key, f.shape, &f.detail_type),
            (&n.id, &n.dedup_key, n.shape, &n.detail_type)
        );
    }
    let Some(env) = n.envelope.as_object() else {
        panic!("envelope is not an object: {}", n.envelope);
    };
    for key in ["version", "id", "detail-type", "source", "time", "detail"] {
        assert!(
            env.contains_key(key),
            "envelope lacks `{key}`: {}",
            n.envelope
        );
    }
    assert_eq!(env["version"], "0");
    assert_eq!(env["id"].as_str(), Some(n.id.as_str()));
    assert!(!n.id.is_empty());
    let dt = env["detail-type"].as_str();
    assert_eq!(dt, Some(n.detail_type.as_str()));
    let dt_chars = n.detail_type.chars().count();
    assert!(
        (1..=MAX_DETAIL_TYPE_CHARS).contains(&dt_chars),
        "detail-type of {dt_chars} chars"
    );
    assert!(env["source"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(env["detail"].is_object(), "detail is not an object");
    let time = env["time"].as_str().unwrap_or("");
    assert!(
        is_canonical_time(time),
        "time {time:?} is not YYYY-MM-DDTHH:MM:SSZ"
    );
    if let Some(key) = &n.dedup_key {
        assert!(key.len() <= 300, "dedup key of {} bytes", key.len());
        if let Some(d) = delivery_id.filter(|d| !d.is_empty()) {
            assert!(
                key.starts_with("wh"),
                "delivery id {d:?} ignored for key {key:?}"
            );
        }
    }
    // The envelope is stored and sent as JSON: it must serialize and read back unchanged.
    let bytes = serde_json::to_vec(&n.envelope).unwrap_or_default();
    let back: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(
        back, n.envelope,
        "envelope does not survive a JSON round trip"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = decode(data) else {
        return;
    };
    let delivery_id = if req.round_trip {
        round_trip(&req)
    } else {
        as_given(&req)
    };
    check_normalize(&req, delivery_id.as_deref());
});
