//! Pattern and event from one input (split at the first newline). The
//! many-rule matcher must agree with the single-pattern API on the raw bytes,
//! the byte path must agree with the `serde_json::Value` path on canonical
//! JSON, and both must agree with the reference interpreter of the tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_pattern::{Limits, Matcher, Pattern};

#[allow(dead_code)]
#[path = "../../crates/switchboard-pattern/tests/common/mod.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (pattern_bytes, event) = (&data[..split], &data[split + 1..]);
    let Ok(pattern_text) = std::str::from_utf8(pattern_bytes) else {
        return;
    };
    let Ok(pattern) = Pattern::parse(pattern_text, &Limits::default()) else {
        return;
    };
    let decoy = Pattern::parse(r#"{"zz":[{"exists":true}]}"#, &Limits::default()).unwrap();
    let mut m = Matcher::new();
    m.add_rule("decoy", &decoy);
    m.add_rule("p", &pattern);

    // Validation of skipped subtrees is structural and depends on the paths
    // rules mention, so on malformed input the two may fail differently (or
    // one may not fail); on input serde_json accepts both must succeed.
    let parsed = serde_json::from_slice::<Value>(event).ok();
    let single = pattern.matches_json(event);
    let many = m.matches_json(event);
    match (&single, &many) {
        (Ok(s), Ok(names)) => assert_eq!(*s, names.contains(&"p")),
        _ if matches!(parsed, Some(Value::Object(_))) => {
            panic!("valid event rejected: single {single:?} vs matcher {many:?}")
        }
        _ => {}
    }

    let Some(value @ Value::Object(_)) = parsed else {
        return;
    };
    let by_value = m.matches_value(&value).contains(&"p");
    let canonical = serde_json::to_vec(&value).unwrap();
    let by_bytes = m.matches_json(&canonical).unwrap().contains(&"p");
    assert_eq!(by_value, by_bytes, "value vs canonical bytes");
    // The brute-force reference is exponential in wildcard stars and array
    // sizes; keep it to inputs where it finishes quickly.
    if pattern_text.matches('*').count() <= 4 && event.len() <= 512 {
        let pattern_value: Value = serde_json::from_str(pattern_text).unwrap();
        assert_eq!(
            reference::matches(&pattern_value, &value),
            by_value,
            "reference interpreter"
        );
    }
});
