//! Claim-checks in the event model: the pointer that replaces an event too large for its
//! target, and the small event that carries it. Pure: where the blob is stored is the caller's
//! business.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Where a claim-checked event is, and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimCheck {
    /// `s3://bucket/key` or `file:///path`.
    pub uri: String,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Stored size in bytes.
    pub size: u64,
}

/// Hex SHA-256, the digest a [`ClaimCheck`] carries (and the blob's content address).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The small event that replaces `original`: every top-level field but `detail`, and a `detail`
/// holding the summary fields and the `claimCheck` pointer. A payload that is not an envelope
/// (after an input transformer) keeps its summary fields at the top instead.
pub fn claim_check_stub(original: &Value, summary_fields: &[String], check: &ClaimCheck) -> Value {
    let pointer = serde_json::to_value(check).unwrap_or(Value::Null);
    let Value::Object(map) = original else {
        return serde_json::json!({ "claimCheck": pointer });
    };
    let (source, mut out) = match map.get("detail") {
        Some(d @ Value::Object(_)) => {
            let mut top = Map::new();
            for (k, v) in map {
                if k != "detail" {
                    top.insert(k.clone(), v.clone());
                }
            }
            (d, Some(top))
        }
        _ => (original, None),
    };
    let mut detail = Map::new();
    for path in summary_fields {
        let segs: Vec<&str> = path.split('.').collect();
        let mut v = source;
        let mut found = true;
        for s in &segs {
            match v.get(s) {
                Some(x) => v = x,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            insert_path(&mut detail, &segs, v.clone());
        }
    }
    detail.insert("claimCheck".into(), pointer);
    match out.as_mut() {
        Some(top) => {
            top.insert("detail".into(), Value::Object(detail));
            Value::Object(out.unwrap_or_default())
        }
        None => Value::Object(detail),
    }
}

fn insert_path(map: &mut Map<String, Value>, segs: &[&str], value: Value) {
    match segs {
        [] => {}
        [last] => {
            map.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let child = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = child {
                insert_path(m, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stub_keeps_envelope_and_summary_and_points_at_the_blob() {
        let ev = json!({"version":"0","id":"e1","detail-type":"t","source":"genesys.cloud",
            "detail":{"topicName":"v2.x","eventBody":{"conversationId":"c1","big":"…"}}});
        let c = ClaimCheck {
            uri: "file:///x/ab.json".into(),
            sha256: "ab".into(),
            size: 9,
        };
        let s = claim_check_stub(
            &ev,
            &[
                "topicName".into(),
                "eventBody.conversationId".into(),
                "missing.x".into(),
            ],
            &c,
        );
        assert_eq!(
            s,
            json!({"version":"0","id":"e1","detail-type":"t","source":"genesys.cloud",
                "detail":{"topicName":"v2.x","eventBody":{"conversationId":"c1"},
                    "claimCheck":{"uri":"file:///x/ab.json","sha256":"ab","size":9}}})
        );
    }
}
