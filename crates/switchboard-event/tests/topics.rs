//! Topic templates, nesting-depth check and the PutEvents size formula.

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_event::{
    DepthError, PUT_EVENTS_TIME_BYTES, check_json_depth, envelope_entry_size,
    put_events_entry_size, topic_template,
};

#[test]
fn topic_templates() {
    let conv = "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    let queue = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
    let user = "0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f";
    let check = |topic: String, expected: &str| assert_eq!(topic_template(&topic), expected);
    // The nine topics of the example data.
    for suffix in [
        "customer.start",
        "acd.start",
        "user.start",
        "acd.end",
        "customer.end",
        "acw",
    ] {
        check(
            format!("v2.detail.events.conversation.{conv}.{suffix}"),
            &format!("v2.detail.events.conversation.{{id}}.{suffix}"),
        );
    }
    check(
        format!("v2.routing.queues.{queue}.conversations.calls"),
        "v2.routing.queues.{id}.conversations.calls",
    );
    check(
        format!("v2.users.{user}.presence"),
        "v2.users.{id}.presence",
    );
    check(
        format!("v2.users.{user}.routingStatus"),
        "v2.users.{id}.routingStatus",
    );
    // Other forms the reference names.
    check(
        format!("v2.audits.entitytype.USER.entityid.{user}"),
        "v2.audits.entitytype.{id}.entityid.{id}",
    );
    check(
        format!("v2.conversations.{conv}.transcription"),
        "v2.conversations.{id}.transcription",
    );
    check(
        format!("v2.analytics.queues.{}.observations", queue.to_uppercase()),
        "v2.analytics.queues.{id}.observations",
    );
    check(
        "v2.users.0f1e2d3c4b5a496887765a4b3c2d1e0f.presence".into(),
        "v2.users.{id}.presence",
    );
    // Already templates, plain words, near-UUIDs and odd input are left alone.
    for unchanged in [
        "v2.users.{id}.presence",
        "channel.metadata",
        "v2.system.socket_closing",
        "v2.detail.events.conversation.deadbeef.customer.start",
        "v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0.presence",
        "v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0g.presence",
        "v2.users.0f1e2d3c_4b5a_4968_8776_5a4b3c2d1e0f.presence",
        "v2.users.abcdefabcdefabcdefabcdefabcdefab.presence",
        "entitytype.USER",
        "",
        "..",
        "v2.audits.entitytype.",
    ] {
        check(unchanged.into(), unchanged);
    }
}

#[test]
fn depth_check_cases() {
    let check = |input: &str, max: usize, expected: Result<(), usize>| {
        let got = check_json_depth(input.as_bytes(), max).map_err(|e| match e {
            DepthError::TooDeep { offset, max_depth } => {
                assert_eq!(max_depth, max);
                offset
            }
            _ => unreachable!(),
        });
        assert_eq!(got, expected, "{input:?} max {max}");
    };
    check("1", 0, Ok(()));
    check("{}", 0, Err(0));
    check("{}", 1, Ok(()));
    check(r#"{"a":[1,{"b":2}]}"#, 3, Ok(()));
    check(r#"{"a":[1,{"b":2}]}"#, 2, Err(8));
    // Brackets inside strings do not count, including after escaped quotes and backslashes.
    check(r#"{"a":"[[[[{{{{"}"#, 1, Ok(()));
    check(r#"{"a\"[[[":"\\"}"#, 1, Ok(()));
    check(r#"["\\",[]]"#, 1, Err(6));
    check(r#"["\"]", []]"#, 1, Err(8));
    check(r#"["\u005b[[["]"#, 1, Ok(()));
    // Siblings do not add up; closing resets.
    check("[[],[],[[]]]", 3, Ok(()));
    check("[[],[],[[]]]", 2, Err(8));
    // Stray closers cannot hide openers.
    check("]]]]][[", 1, Err(6));
    // An unterminated string swallows the rest: the parser rejects it later anyway.
    check(r#"["[[[["#, 1, Ok(()));
}

#[test]
fn depth_check_refuses_100k_deep_input_cheaply() {
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    assert_eq!(
        check_json_depth(deep.as_bytes(), 64),
        Err(DepthError::TooDeep {
            max_depth: 64,
            offset: 64
        })
    );
    let objects = "{\"a\":".repeat(100_000);
    assert!(check_json_depth(objects.as_bytes(), 1000).is_err());
    assert!(check_json_depth(deep.as_bytes(), 100_000).is_ok());
    let msg = check_json_depth(b"[[", 1).unwrap_err().to_string();
    assert_eq!(msg, "JSON nesting exceeds 1 levels (at byte 1)");
}

fn reference_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(reference_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(reference_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Strings full of brackets, quotes and backslashes: what fools a naive scanner.
        "[\\[\\]{}\"\\\\a-z\\u{e9}]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[\\[\\]{}\"\\\\a-z]{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn depth_check_agrees_with_recursive_reference(v in arb_json(), max in 0usize..14, pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
        let depth = reference_depth(&v);
        prop_assert_eq!(check_json_depth(text.as_bytes(), max).is_ok(), depth <= max, "depth {} text {}", depth, text);
    }
}

#[test]
fn put_events_size_follows_the_aws_formula() {
    // Hand-computed per the AWS page: 14 (Time) + 13 + 22 + 10 + (30 + 3).
    let resources = vec!["arn:aws:s3:::bucket/key-ä.txt".to_owned(), "abc".to_owned()];
    assert_eq!(resources[0].len(), 30, "ä is two UTF-8 bytes");
    assert_eq!(r#"{"a":"é"}"#.len(), 10, "é is two UTF-8 bytes");
    assert_eq!(
        put_events_entry_size(
            true,
            "genesys.cloud",
            "v2.users.{id}.presence",
            r#"{"a":"é"}"#,
            &resources
        ),
        14 + 13 + 22 + 10 + 30 + 3
    );
    assert_eq!(put_events_entry_size(false, "s", "d", "{}", &[]), 4);
    assert_eq!(PUT_EVENTS_TIME_BYTES, 14);

    let env = json!({"version": "0", "id": "x", "detail-type": "dt", "source": "src",
                     "time": "2025-03-04T14:05:10Z", "resources": ["r1"], "detail": {"k": [1, 2]}});
    assert_eq!(
        envelope_entry_size(&env),
        14 + 3 + 2 + r#"{"k":[1,2]}"#.len() + 2
    );
    assert_eq!(envelope_entry_size(&json!(null)), 0);
}
