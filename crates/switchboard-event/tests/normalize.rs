//! Normalization over the Genesys example notifications in `tests/data/` and hand-made inputs.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchboard_event::{
    DedupKeyMode, EnvelopeDefaults, InputShape, NormalizeContext, NormalizeError, NormalizeOptions,
    Normalized, is_channel_metadata, normalize,
};
use time::macros::datetime;

const NEW_ID: &str = "11111111-1111-4111-8111-111111111111";
const ENVELOPE_KEYS: [&str; 9] = [
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ctx<'a>(delivery_id: Option<&'a str>) -> NormalizeContext<'a> {
    NormalizeContext {
        new_id: NEW_ID,
        delivery_id,
        received_at: datetime!(2025-03-04 14:05:10.190 UTC),
    }
}

fn run(body: Value) -> Result<Normalized, NormalizeError> {
    normalize(body, &ctx(None), &NormalizeOptions::default())
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Every notification file: expected detail-type per the data README's table.
const NOTIFICATIONS: [(&str, &str); 9] = [
    (
        "detail-customer-start.json",
        "v2.detail.events.conversation.{id}.customer.start",
    ),
    (
        "detail-acd-start.json",
        "v2.detail.events.conversation.{id}.acd.start",
    ),
    (
        "detail-user-start.json",
        "v2.detail.events.conversation.{id}.user.start",
    ),
    (
        "detail-acd-end.json",
        "v2.detail.events.conversation.{id}.acd.end",
    ),
    (
        "detail-customer-end.json",
        "v2.detail.events.conversation.{id}.customer.end",
    ),
    ("detail-acw.json", "v2.detail.events.conversation.{id}.acw"),
    (
        "queue-conversation-call.json",
        "v2.routing.queues.{id}.conversations.calls",
    ),
    ("user-presence.json", "v2.users.{id}.presence"),
    ("user-routing-status.json", "v2.users.{id}.routingStatus"),
];

#[test]
fn every_data_file_is_covered() {
    let mut seen: Vec<String> = NOTIFICATIONS.iter().map(|(f, _)| f.to_string()).collect();
    seen.extend(
        [
            "eventbridge-detail-customer-start.json",
            "system/heartbeat.json",
            "system/pong.json",
        ]
        .map(String::from),
    );
    let mut on_disk = Vec::new();
    for dir in ["", "system/"] {
        for entry in std::fs::read_dir(data_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                on_disk.push(format!("{dir}{name}"));
            }
        }
    }
    seen.sort();
    on_disk.sort();
    assert_eq!(seen, on_disk);
}

#[test]
fn notifications_are_wrapped_like_genesys_eventbridge() {
    for (file, template) in NOTIFICATIONS {
        let input = load(file);
        let out = run(input.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(out.shape, InputShape::Notification, "{file}");
        assert_eq!(out.detail_type, template, "{file}");
        assert_eq!(out.id, NEW_ID, "{file}");
        let env = &out.envelope;
        assert_eq!(keys(env), ENVELOPE_KEYS, "{file}");
        assert_eq!(env["version"], "0");
        assert_eq!(env["id"], NEW_ID);
        assert_eq!(env["detail-type"], template);
        assert_eq!(env["source"], "genesys.cloud");
        assert_eq!(env["account"], "000000000000");
        assert_eq!(env["time"], "2025-03-04T14:05:10Z");
        assert_eq!(env["region"], "local");
        assert_eq!(env["resources"], json!([]));
        // detail = the message, in Genesys' key order, plus `timestamp`.
        let mut expected = input.clone();
        expected["timestamp"] = json!("2025-03-04T14:05:10.190Z");
        assert_eq!(env["detail"], expected, "{file}");
        assert_eq!(
            keys(&env["detail"]),
            ["topicName", "version", "eventBody", "metadata", "timestamp"],
            "{file}"
        );
        let expected_key = format!(
            "corr:{}:{}",
            input["topicName"].as_str().unwrap(),
            input["metadata"]["CorrelationId"].as_str().unwrap()
        );
        assert_eq!(
            out.dedup_key.as_deref(),
            Some(expected_key.as_str()),
            "{file}"
        );
    }
}

#[test]
fn wrapped_customer_start_matches_the_eventbridge_example() {
    let reference = load("eventbridge-detail-customer-start.json");
    let opts = NormalizeOptions {
        defaults: EnvelopeDefaults {
            source: reference["source"].as_str().unwrap().to_owned(),
            account: reference["account"].as_str().unwrap().to_owned(),
            region: reference["region"].as_str().unwrap().to_owned(),
        },
        ..NormalizeOptions::default()
    };
    let out = normalize(load("detail-customer-start.json"), &ctx(None), &opts).unwrap();
    let ours = out.envelope.as_object().unwrap();
    let theirs = reference.as_object().unwrap();
    assert_eq!(
        keys(&out.envelope),
        keys(&reference),
        "same keys, same order"
    );
    for (key, value) in theirs {
        match key.as_str() {
            "id" | "time" => assert!(ours[key].is_string(), "{key}"),
            "detail" => {
                let (a, b) = (ours[key].as_object().unwrap(), value.as_object().unwrap());
                assert_eq!(
                    a.keys().collect::<Vec<_>>(),
                    b.keys().collect::<Vec<_>>(),
                    "detail keys"
                );
                for (k, v) in b {
                    if k != "timestamp" {
                        assert_eq!(&a[k], v, "detail.{k}");
                    }
                }
            }
            _ => assert_eq!(&ours[key], value, "{key}"),
        }
    }
    // With this receive time the two volatile fields also agree with the example.
    assert_eq!(ours["time"], theirs["time"]);
    assert_eq!(ours["detail"]["timestamp"], theirs["detail"]["timestamp"]);
}

#[test]
fn eventbridge_input_passes_through_unchanged() {
    let input = load("eventbridge-detail-customer-start.json");
    let out = run(input.clone()).unwrap();
    assert_eq!(out.shape, InputShape::EventBridge);
    assert_eq!(out.envelope, input);
    assert_eq!(keys(&out.envelope), keys(&input));
    assert_eq!(out.id, "3f0a9a52-7c1e-4b6e-9d8a-2b7c6e5d4f31");
    assert_eq!(
        out.detail_type,
        "v2.detail.events.conversation.{id}.customer.start"
    );
    // The same Genesys event over the WebSocket gets the same key: cross-path dedup.
    let ws = run(load("detail-customer-start.json")).unwrap();
    assert_eq!(out.dedup_key, ws.dedup_key);
    assert!(out.dedup_key.unwrap().starts_with("corr:"));
}

#[test]
fn channel_metadata_is_not_an_event() {
    for file in ["system/heartbeat.json", "system/pong.json"] {
        let body = load(file);
        assert!(is_channel_metadata(&body), "{file}");
        let err = run(body).unwrap_err();
        assert_eq!(err, NormalizeError::ChannelMetadata, "{file}");
        assert!(err.is_ignorable());
    }
    for (file, _) in NOTIFICATIONS {
        assert!(!is_channel_metadata(&load(file)), "{file}");
    }
    assert!(!is_channel_metadata(&json!("channel.metadata")));
}

#[test]
fn eventbridge_envelope_fills_and_normalizes() {
    let minimal = json!({"detail-type": "x", "detail": {"a": 1}, "replay-name": "r1"});
    let out = run(minimal).unwrap();
    assert_eq!(
        out.envelope,
        json!({"version": "0", "id": NEW_ID, "detail-type": "x", "source": "genesys.cloud",
               "account": "000000000000", "time": "2025-03-04T14:05:10Z", "region": "local",
               "resources": [], "detail": {"a": 1}, "replay-name": "r1"})
    );
    let mut ks = ENVELOPE_KEYS.to_vec();
    ks.push("replay-name");
    assert_eq!(keys(&out.envelope), ks);
    // Several extra keys keep their relative order.
    let extras = json!({"z": 1, "detail-type": "x", "y": 2, "detail": {}, "id": "i", "x": 3});
    let out = run(extras).unwrap();
    assert_eq!(&keys(&out.envelope)[9..], ["z", "y", "x"]);
    let notif = json!({"topicName": "t", "a": 1, "eventBody": {}, "timestamp": "T", "b": 2,
                       "version": "2"});
    let out = run(notif).unwrap();
    assert_eq!(
        keys(&out.envelope["detail"]),
        ["topicName", "version", "eventBody", "a", "b", "timestamp"]
    );
    assert_eq!(
        out.envelope["detail"]["timestamp"], "T",
        "an input timestamp is kept"
    );
    // No id in the input, no Genesys fields: nothing stable to dedup on.
    assert_eq!(out.dedup_key, None);

    for (time, expected) in [
        ("2025-03-04T14:05:10Z", "2025-03-04T14:05:10Z"),
        ("2025-03-04T14:05:10.999Z", "2025-03-04T14:05:10Z"),
        ("2025-03-04T16:05:10+02:00", "2025-03-04T14:05:10Z"),
        ("2025-03-04t14:05:10z", "2025-03-04T14:05:10Z"),
    ] {
        let out = run(json!({"detail-type": "x", "detail": {}, "time": time})).unwrap();
        assert_eq!(out.envelope["time"], expected, "{time}");
    }
}

#[test]
fn flat_seed_shape_is_wrapped_with_event_type() {
    let body = json!({"eventType": "agentCallConnected", "conversationId": "c-1",
                      "timestamp": "2024-01-15T10:30:00Z", "agentId": "a-1"});
    let out = run(body.clone()).unwrap();
    assert_eq!(out.shape, InputShape::Flat);
    assert_eq!(out.detail_type, "agentCallConnected");
    assert_eq!(out.envelope["detail"], body);
    assert_eq!(keys(&out.envelope), ENVELOPE_KEYS);
    assert_eq!(
        out.envelope["time"], "2025-03-04T14:05:10Z",
        "receive time by default"
    );
    assert_eq!(out.dedup_key, None, "auto mode never hashes a flat body");

    let opts = NormalizeOptions {
        time_path: Some("timestamp".into()),
        ..NormalizeOptions::default()
    };
    let out = normalize(body, &ctx(None), &opts).unwrap();
    assert_eq!(out.envelope["time"], "2024-01-15T10:30:00Z");
}

#[test]
fn time_path_accepts_epoch_millis_and_seconds_and_falls_back() {
    let check = |path: &str, body: Value, expected: &str| {
        let opts = NormalizeOptions {
            time_path: Some(path.into()),
            ..NormalizeOptions::default()
        };
        let out = normalize(body.clone(), &ctx(None), &opts).unwrap();
        assert_eq!(out.envelope["time"], expected, "{path} in {body}");
    };
    check(
        "eventBody.eventTime",
        load("detail-acd-end.json"),
        "2025-03-04T14:05:41Z",
    );
    check(
        "$.t",
        json!({"eventType": "e", "t": 1741097110}),
        "2025-03-04T14:05:10Z",
    );
    check(
        "t",
        json!({"eventType": "e", "t": 1741097110123_i64}),
        "2025-03-04T14:05:10Z",
    );
    check(
        "t",
        json!({"eventType": "e", "t": "not a time"}),
        "2025-03-04T14:05:10Z",
    );
    check("t", json!({"eventType": "e"}), "2025-03-04T14:05:10Z");
    check(
        "t",
        json!({"eventType": "e", "t": i64::MAX}),
        "2025-03-04T14:05:10Z",
    );
    check(
        "t[",
        json!({"eventType": "e", "t": 1}),
        "2025-03-04T14:05:10Z",
    );
}

#[test]
fn detail_type_path_overrides_and_rescues_unknown_shapes() {
    let opts = NormalizeOptions {
        detail_type_path: Some("$.meta.kind".into()),
        ..NormalizeOptions::default()
    };
    let custom = json!({"meta": {"kind": "order.created"}, "x": 1});
    let out = normalize(custom.clone(), &ctx(None), &opts).unwrap();
    assert_eq!(
        (out.shape, out.detail_type.as_str()),
        (InputShape::Flat, "order.created")
    );
    assert_eq!(out.envelope["detail"], custom);

    // Without the option the same body is refused, and the message says what to configure.
    let err = run(custom).unwrap_err();
    assert!(matches!(err, NormalizeError::UnknownShape { .. }));
    assert!(err.to_string().contains("detail_type_path"), "{err}");

    // With the option but a body lacking the field, the message names the path.
    let err = normalize(json!({"x": 1}), &ctx(None), &opts).unwrap_err();
    assert!(err.to_string().contains("$.meta.kind"), "{err}");

    // On a notification the override wins over the topic template; EventBridge ignores it.
    let mut n = load("user-presence.json");
    n["meta"] = json!({"kind": "presence"});
    assert_eq!(
        normalize(n, &ctx(None), &opts).unwrap().detail_type,
        "presence"
    );
    let eb = load("eventbridge-detail-customer-start.json");
    let out = normalize(eb.clone(), &ctx(None), &opts).unwrap();
    assert_eq!(out.envelope, eb);
}

#[test]
fn errors_name_the_field() {
    let check = |body: Value, expected: &str| {
        let err = run(body.clone()).unwrap_err();
        assert_eq!(err.to_string(), expected, "{body}");
    };
    check(json!([1]), "event must be a JSON object, got an array");
    check(json!("s"), "event must be a JSON object, got a string");
    check(json!(null), "event must be a JSON object, got null");
    check(json!(1.5), "event must be a JSON object, got a number");
    check(json!(true), "event must be a JSON object, got a boolean");
    check(
        json!({"detail-type": 1, "detail": {}}),
        "field `detail-type` must be a non-empty string",
    );
    check(
        json!({"detail-type": "", "detail": {}}),
        "field `detail-type` must be a non-empty string",
    );
    check(
        json!({"detail-type": "x"}),
        "field `detail` must be an object",
    );
    check(
        json!({"detail-type": "x", "detail": []}),
        "field `detail` must be an object",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "version": "1"}),
        "field `version` must be the string \"0\"",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "id": 7}),
        "field `id` must be a non-empty string",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "source": ""}),
        "field `source` must be a non-empty string",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "account": 1}),
        "field `account` must be a non-empty string",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "resources": "arn"}),
        "field `resources` must be an array of strings",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "resources": ["a", 2]}),
        "field `resources[1]` must be a string",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "time": 5}),
        "field `time` must be an RFC 3339 timestamp string",
    );
    check(
        json!({"detail-type": "x", "detail": {}, "time": "yesterday"}),
        "field `time` must be an RFC 3339 timestamp, got \"yesterday\"",
    );
    check(
        json!({"topicName": 3, "eventBody": {}}),
        "field `topicName` must be a non-empty string",
    );
    check(
        json!({"topicName": "v2.users.x.presence"}),
        "field `eventBody` must be present in a Genesys notification",
    );
    check(
        json!({"eventType": ""}),
        "field `eventType` must be a non-empty string",
    );
    check(
        json!({"eventType": {}}),
        "field `eventType` must be a non-empty string",
    );
    check(
        json!({"eventType": "x".repeat(129)}),
        "detail-type from `eventType` is 129 characters; the maximum is 128",
    );
    check(
        json!({}),
        "unrecognised event shape: expected an EventBridge envelope (`detail-type`), a Genesys \
         notification (`topicName`) or a flat event (`eventType`); configure `detail_type_path` \
         to name the field holding the event type",
    );
    // 128 characters (multi-byte) is still fine.
    assert!(run(json!({"eventType": "é".repeat(128)})).is_ok());
}

#[test]
fn received_time_outside_rfc3339_is_an_error_not_a_panic() {
    let c = NormalizeContext {
        received_at: datetime!(-0001-01-01 0:00 UTC),
        ..ctx(None)
    };
    let err = normalize(json!({"eventType": "e"}), &c, &NormalizeOptions::default()).unwrap_err();
    assert_eq!(err, NormalizeError::ReceivedAtOutOfRange);
}

fn key_with(body: Value, delivery: Option<&str>, mode: DedupKeyMode) -> Option<String> {
    let opts = NormalizeOptions {
        dedup_key: mode,
        ..NormalizeOptions::default()
    };
    normalize(body, &ctx(delivery), &opts).unwrap().dedup_key
}

#[test]
fn dedup_key_precedence() {
    let tpl = || DedupKeyMode::Template("{conversationId}:{eventType}:{timestamp}".into());
    let notif = load("detail-acw.json");
    let eb = load("eventbridge-detail-customer-start.json");
    let flat = json!({"eventType": "E", "conversationId": "c", "timestamp": "t"});
    let sha = {
        use sha2::{Digest, Sha256};
        format!("tpl:{}", hex::encode(Sha256::digest(b"c:E:t")))
    };
    let corr_acw = "corr:v2.detail.events.conversation.8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f.acw:\
                    c0a80101-0000-4000-8000-000000000006";
    let corr_eb = "corr:v2.detail.events.conversation.8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f.\
                   customer.start:c0a80101-0000-4000-8000-000000000001";
    let cases: Vec<(Value, Option<&str>, DedupKeyMode, Option<String>)> = vec![
        // 1. The provider delivery id beats everything.
        (notif.clone(), Some("msg_1"), tpl(), Some("wh:msg_1".into())),
        (
            eb.clone(),
            Some("msg_1"),
            DedupKeyMode::Auto,
            Some("wh:msg_1".into()),
        ),
        (flat.clone(), Some("msg_1"), tpl(), Some("wh:msg_1".into())),
        // An empty delivery id is no id.
        (
            notif.clone(),
            Some(""),
            DedupKeyMode::Auto,
            Some(corr_acw.into()),
        ),
        // 2. topicName + CorrelationId.
        (notif.clone(), None, tpl(), Some(corr_acw.into())),
        (
            notif.clone(),
            None,
            DedupKeyMode::BodyHash,
            Some(corr_acw.into()),
        ),
        (eb.clone(), None, DedupKeyMode::Auto, Some(corr_eb.into())),
        // EventBridge without Genesys metadata: its own id.
        (
            json!({"detail-type": "x", "id": "eb-1", "detail": {}}),
            None,
            DedupKeyMode::Auto,
            Some("eb:eb-1".into()),
        ),
        // 3. Template, only as a last resort.
        (flat.clone(), None, tpl(), Some(sha.clone())),
        // A missing placeholder gives no key rather than a colliding one.
        (
            json!({"eventType": "E", "conversationId": "c"}),
            None,
            tpl(),
            None,
        ),
        // Auto never hashes the body.
        (flat.clone(), None, DedupKeyMode::Auto, None),
        (
            json!({"topicName": "t", "eventBody": {}}),
            None,
            DedupKeyMode::Auto,
            None,
        ),
        // None disables even the delivery id.
        (notif.clone(), Some("msg_1"), DedupKeyMode::None, None),
        (eb.clone(), None, DedupKeyMode::None, None),
    ];
    for (i, (body, delivery, mode, expected)) in cases.into_iter().enumerate() {
        assert_eq!(key_with(body, delivery, mode), expected, "case {i}");
    }
}

#[test]
fn body_hash_only_when_configured_and_stable() {
    let body = json!({"eventType": "ping"});
    let a = key_with(body.clone(), None, DedupKeyMode::BodyHash).unwrap();
    let b = key_with(body, None, DedupKeyMode::BodyHash).unwrap();
    assert_eq!(a, b);
    assert!(
        a.starts_with("body:") && a.len() == "body:".len() + 64,
        "{a}"
    );
    let c = key_with(json!({"eventType": "pong"}), None, DedupKeyMode::BodyHash).unwrap();
    assert_ne!(a, c);
}

#[test]
fn long_or_ambiguous_key_material_is_hashed_and_kinds_never_collide() {
    let long = "x".repeat(300);
    let k = key_with(json!({"eventType": "e"}), Some(&long), DedupKeyMode::Auto).unwrap();
    assert!(
        k.starts_with("wh-sha256:") && k.len() == "wh-sha256:".len() + 64,
        "{k}"
    );

    let colon = |topic: &str, corr: &str| {
        key_with(
            json!({"topicName": topic, "eventBody": {}, "metadata": {"CorrelationId": corr}}),
            None,
            DedupKeyMode::Auto,
        )
        .unwrap()
    };
    let (a, b) = (colon("a:b", "c"), colon("a", "b:c"));
    assert!(a.starts_with("corr-sha256:"), "{a}");
    assert_ne!(a, b);

    // The same string as delivery id and as EventBridge id gives different keys.
    let wh = key_with(json!({"eventType": "e"}), Some("same"), DedupKeyMode::Auto).unwrap();
    let eb = key_with(
        json!({"detail-type": "e", "id": "same", "detail": {}}),
        None,
        DedupKeyMode::Auto,
    )
    .unwrap();
    assert_ne!(wh, eb);
}

#[test]
fn options_deserialize_from_toml_and_validate() {
    let opts: NormalizeOptions = toml::from_str("").unwrap();
    assert_eq!(opts, NormalizeOptions::default());
    assert_eq!(opts.defaults.source, "genesys.cloud");
    opts.validate().unwrap();

    let opts: NormalizeOptions = toml::from_str(
        r#"
        dedup_key = { template = "{conversationId}:{eventType}:{timestamp}" }
        detail_type_path = "$.kind"
        time_path = "/eventBody/eventTime"
        [defaults]
        source = "aws.partner/genesys.com/cloud/org/suffix"
        "#,
    )
    .unwrap();
    assert_eq!(
        opts.dedup_key,
        DedupKeyMode::Template("{conversationId}:{eventType}:{timestamp}".into())
    );
    assert_eq!(
        opts.defaults.account, "000000000000",
        "unset defaults keep their default"
    );
    opts.validate().unwrap();

    for (text, mode) in [
        (r#"dedup_key = "auto""#, DedupKeyMode::Auto),
        (r#"dedup_key = "none""#, DedupKeyMode::None),
        (r#"dedup_key = "body-hash""#, DedupKeyMode::BodyHash),
    ] {
        let o: NormalizeOptions = toml::from_str(text).unwrap();
        assert_eq!(o.dedup_key, mode, "{text}");
    }
    for bad in [
        "dedup_keys = \"auto\"",
        "dedup_key = \"sometimes\"",
        "[defaults]\nsorce = \"x\"",
    ] {
        assert!(toml::from_str::<NormalizeOptions>(bad).is_err(), "{bad}");
    }

    let invalid = |o: NormalizeOptions| o.validate().unwrap_err().to_string();
    let with = |f: fn(&mut NormalizeOptions)| {
        let mut o = NormalizeOptions::default();
        f(&mut o);
        o
    };
    assert_eq!(
        invalid(with(|o| o.detail_type_path = Some("a..b".into()))),
        "normalize option `detail_type_path`: path `a..b` has an empty segment"
    );
    assert_eq!(
        invalid(with(
            |o| o.dedup_key = DedupKeyMode::Template("static".into())
        )),
        "normalize option `dedup_key.template`: template `static` has no `{field}` placeholder; \
         every event would share one key"
    );
    assert!(invalid(with(|o| o.time_path = Some("$".into()))).contains("time_path"));
    assert!(invalid(with(|o| o.defaults.account = "12345".into())).contains("12 digits"));
    assert!(invalid(with(|o| o.defaults.source = String::new())).contains("defaults.source"));
    assert!(invalid(with(|o| o.defaults.region = String::new())).contains("defaults.region"));
}
