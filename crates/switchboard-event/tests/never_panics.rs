//! `normalize` takes arbitrary JSON without panicking, and what it accepts is a valid envelope.

use proptest::prelude::*;
use serde_json::{Map, Value};
use switchboard_event::{
    DedupKeyMode, MAX_DETAIL_TYPE_CHARS, NormalizeContext, NormalizeOptions, normalize,
    put_events_entry_size,
};
use time::OffsetDateTime;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("detail-type".to_owned()),
        Just("detail".to_owned()),
        Just("source".to_owned()),
        Just("version".to_owned()),
        Just("id".to_owned()),
        Just("time".to_owned()),
        Just("resources".to_owned()),
        Just("topicName".to_owned()),
        Just("eventBody".to_owned()),
        Just("metadata".to_owned()),
        Just("CorrelationId".to_owned()),
        Just("eventType".to_owned()),
        Just("timestamp".to_owned()),
        "[a-z.{}:]{0,6}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from("0")),
        Just(Value::from("channel.metadata")),
        Just(Value::from("2025-03-04T14:05:10.5+01:00")),
        Just(Value::from(
            "v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f.presence"
        )),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_mode() -> impl Strategy<Value = DedupKeyMode> {
    prop_oneof![
        Just(DedupKeyMode::Auto),
        Just(DedupKeyMode::None),
        Just(DedupKeyMode::BodyHash),
        Just(DedupKeyMode::Template("{eventType}:{detail.id}".into())),
        "\\PC{0,10}".prop_map(DedupKeyMode::Template),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn normalize_never_panics(
        body in arb_json(),
        mode in arb_mode(),
        dt_path in proptest::option::of("[a-zA-Z.$/\\[\\]0-9~]{0,10}"),
        time_path in proptest::option::of("[a-zA-Z.$/\\[\\]0-9~]{0,10}"),
        delivery in proptest::option::of("\\PC{0,8}"),
        secs in -300_000_000_000i64..253_000_000_000,
    ) {
        let opts = NormalizeOptions { dedup_key: mode, detail_type_path: dt_path, time_path, ..NormalizeOptions::default() };
        let received_at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let ctx = NormalizeContext { new_id: "new", delivery_id: delivery.as_deref(), received_at };
        if let Ok(out) = normalize(body, &ctx, &opts) {
            let env = out.envelope.as_object().unwrap();
            let keys: Vec<&str> = env.keys().map(String::as_str).take(9).collect();
            prop_assert_eq!(keys, ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]);
            prop_assert_eq!(&env["version"], "0");
            prop_assert_eq!(env["id"].as_str(), Some(out.id.as_str()));
            prop_assert_eq!(env["detail-type"].as_str(), Some(out.detail_type.as_str()));
            prop_assert!(!out.detail_type.is_empty() && out.detail_type.chars().count() <= MAX_DETAIL_TYPE_CHARS);
            prop_assert!(env["detail"].is_object());
            prop_assert!(env["time"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')));
            let detail = serde_json::to_string(&env["detail"]).unwrap();
            let source = env["source"].as_str().unwrap();
            prop_assert!(put_events_entry_size(true, source, &out.detail_type, &detail, &[]) > 0);
        }
    }
}

/// Guards the property above against a generator that never reaches the interesting paths.
#[test]
fn generator_reaches_every_shape() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use switchboard_event::InputShape;

    let mut runner = TestRunner::deterministic();
    let strategy = arb_json();
    let received_at = OffsetDateTime::from_unix_timestamp(1_741_097_110).unwrap();
    let ctx = NormalizeContext {
        new_id: "new",
        delivery_id: None,
        received_at,
    };
    let mut seen = std::collections::HashSet::new();
    let mut errors = 0;
    for _ in 0..5000 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        match normalize(body, &ctx, &NormalizeOptions::default()) {
            Ok(out) => {
                seen.insert(out.shape);
            }
            Err(_) => errors += 1,
        }
    }
    for shape in [
        InputShape::EventBridge,
        InputShape::Notification,
        InputShape::Flat,
    ] {
        assert!(seen.contains(&shape), "{shape:?} never produced");
    }
    assert!(errors > 0, "error paths never exercised");
}
