//! An InputTransformer spec and an event (split at the first newline): the
//! transformer never panics, and JSON templates always yield valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_pattern::{InputTransformerSpec, JsonPath, TargetInput, TransformContext};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((spec_text, event_text)) = text.split_once('\n') else {
        // A lone line is tried as a JSONPath.
        if let Ok(p) = JsonPath::parse(text) {
            let _ = p.select(&serde_json::json!({"a": [1, {"b": 2}], "c": {"d": null}}));
        }
        return;
    };
    let Ok(event) = serde_json::from_str::<Value>(event_text) else {
        return;
    };
    let ctx = TransformContext {
        rule_name: "r\"ule",
        rule_arn: "arn:aws:events:us-east-1:123456789012:rule/r",
        ingestion_time: "2025-01-01T00:00:00Z",
    };
    let target = match serde_json::from_str::<InputTransformerSpec>(spec_text) {
        Ok(spec) => TargetInput::from_aws(None, None, Some(&spec)),
        Err(_) => TargetInput::from_aws(None, Some(spec_text), None),
    };
    let Ok(target) = target else {
        return;
    };
    if let Ok(out) = target.apply(&event, &ctx) {
        let template_is_json = match &target {
            TargetInput::Transformer(_) => None,
            _ => Some(true),
        };
        if template_is_json == Some(true) {
            assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
        }
    }
});
