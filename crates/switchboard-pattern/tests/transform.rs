//! Input transformation: AWS documentation examples plus edge cases.

use serde_json::{Value, json};
use switchboard_pattern::{InputTransformerSpec, TargetInput, TransformContext, TransformError};

const CTX: TransformContext<'static> = TransformContext {
    rule_name: "my-rule",
    rule_arn: "arn:aws:events:us-east-1:123456789012:rule/my-rule",
    ingestion_time: "2025-03-04T14:05:10Z",
};

fn ec2_event() -> Value {
    json!({
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2015-11-11T21:29:54Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
        "detail": {"instance-id": "i-0123456789", "state": "RUNNING", "tags": {"k": "v"}, "list": [1, 2, 3]}
    })
}

fn spec(paths: &[(&str, &str)], template: &str) -> InputTransformerSpec {
    InputTransformerSpec {
        input_paths_map: paths
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        input_template: template.to_owned(),
    }
}

#[track_caller]
fn check(paths: &[(&str, &str)], template: &str, want: &str) {
    let t = TargetInput::from_aws(None, None, Some(&spec(paths, template)))
        .unwrap_or_else(|e| panic!("{template}: {e}"));
    assert_eq!(t.apply(&ec2_event(), &CTX).unwrap(), want, "{template}");
}

const EC2: &[(&str, &str)] = &[
    ("instance", "$.detail.instance-id"),
    ("state", "$.detail.state"),
];

#[test]
fn aws_doc_examples() {
    // eb-transform-target-input: unquoted string variables become JSON strings.
    check(
        EC2,
        r#"{"instance": <instance>, "state": <state>}"#,
        r#"{"instance":"i-0123456789","state":"RUNNING"}"#,
    );
    // A JSON string template with variables inside it.
    check(
        EC2,
        r#""instance <instance> is in <state>""#,
        r#""instance i-0123456789 is in RUNNING""#,
    );
    check(
        EC2,
        r#""instance \"<instance>\" is in <state>""#,
        r#""instance \"i-0123456789\" is in RUNNING""#,
    );
    // API reference: a plain text template.
    check(
        EC2,
        "<instance> is in state <state>",
        "i-0123456789 is in state RUNNING",
    );
    // API reference: JSON with variables quoted and unquoted.
    check(
        EC2,
        r#"{"myInstance": <instance>,"myStatus": "<instance> is in state \"<state>\""}"#,
        r#"{"myInstance":"i-0123456789","myStatus":"i-0123456789 is in state \"RUNNING\""}"#,
    );
}

#[test]
fn values_and_reserved_variables() {
    check(
        &[
            ("tags", "$.detail.tags"),
            ("list", "$.detail.list"),
            ("first", "$.detail.list[0]"),
        ],
        r#"{"t": <tags>, "l": <list>, "f": <first>, "s": "<tags>"}"#,
        r#"{"t":{"k":"v"},"l":[1,2,3],"f":1,"s":"{\"k\":\"v\"}"}"#,
    );
    check(
        &[],
        r#"{"name": <aws.events.rule-name>, "arn": "<aws.events.rule-arn>", "at": <aws.events.event.ingestion-time>}"#,
        r#"{"name":"my-rule","arn":"arn:aws:events:us-east-1:123456789012:rule/my-rule","at":"2025-03-04T14:05:10Z"}"#,
    );
    let t = TargetInput::from_aws(None, None, Some(&spec(&[], r#"{"e": <aws.events.event>}"#)))
        .unwrap();
    let out: Value = serde_json::from_str(&t.apply(&ec2_event(), &CTX).unwrap()).unwrap();
    assert_eq!(out["e"]["source"], "aws.ec2");
    assert!(out["e"].get("detail").is_none());
    let t = TargetInput::from_aws(
        None,
        None,
        Some(&spec(&[], r#"{"e": <aws.events.event.json>}"#)),
    )
    .unwrap();
    let out: Value = serde_json::from_str(&t.apply(&ec2_event(), &CTX).unwrap()).unwrap();
    assert_eq!(out["e"], ec2_event());
    // Wildcards collect everything selected.
    check(
        &[("all", "$.detail.list[*]")],
        r#"{"a": <all>}"#,
        r#"{"a":[1,2,3]}"#,
    );
    check(
        &[("v", "$.detail.tags.*")],
        r#"{"a": <v>}"#,
        r#"{"a":["v"]}"#,
    );
}

#[test]
fn missing_paths_and_escaping() {
    check(
        &[("nope", "$.detail.missing")],
        r#"{"a": <nope>, "b": "x<nope>y"}"#,
        r#"{"a":null,"b":"xy"}"#,
    );
    check(
        &[("nope", "$.detail.missing")],
        "value: <nope>.",
        "value: .",
    );
    let ev = json!({"detail": {"msg": "say \"hi\"\n\\"}});
    let t = TargetInput::from_aws(
        None,
        None,
        Some(&spec(
            &[("m", "$.detail.msg")],
            r#"{"quoted": "<m>", "raw": <m>}"#,
        )),
    )
    .unwrap();
    let out = t.apply(&ev, &CTX).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["quoted"], "say \"hi\"\n\\");
    assert_eq!(v["raw"], "say \"hi\"\n\\");
}

#[test]
fn validation() {
    let bad = |paths: &[(&str, &str)], template: &str| {
        TargetInput::from_aws(None, None, Some(&spec(paths, template))).unwrap_err()
    };
    assert!(matches!(
        bad(&[], r#"{"a": <x>}"#),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(
        bad(EC2, r#"{<instance>: 1}"#),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(
        bad(EC2, r#"{"<instance>": 1}"#),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(
        bad(&[], r#"{"e": "<aws.events.event>"}"#),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(
        bad(&[], "text <aws.events.event.json>"),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(bad(&[], ""), TransformError::InvalidTemplate(_)));
    assert!(matches!(
        bad(&[], &"x".repeat(8193)),
        TransformError::InvalidTemplate(_)
    ));
    assert!(matches!(
        bad(&[("AWS.x", "$.a")], "<AWS.x>"),
        TransformError::InvalidKey { .. }
    ));
    assert!(matches!(
        bad(&[("a b", "$.a")], "x"),
        TransformError::InvalidKey { .. }
    ));
    assert!(matches!(
        bad(&[("a", "detail")], "x"),
        TransformError::InvalidPath { .. }
    ));
    assert!(matches!(
        bad(&[("a", "$.a[x]")], "x"),
        TransformError::InvalidPath { .. }
    ));
    let long = format!("$.{}", "a".repeat(255));
    assert!(matches!(
        bad(&[("a", &long)], "x"),
        TransformError::InvalidPath { .. }
    ));
    let many: Vec<(String, String)> = (0..101)
        .map(|i| (format!("k{i}"), "$.a".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert!(matches!(bad(&many, "x"), TransformError::TooManyPaths(101)));
    // A `<` that is not a placeholder is text.
    check(EC2, "a < b and <state>", "a < b and RUNNING");
}

#[test]
fn input_and_input_path() {
    let ev = ec2_event();
    let t = TargetInput::from_aws(Some(r#"{"fixed": true}"#), None, None).unwrap();
    assert_eq!(t.apply(&ev, &CTX).unwrap(), r#"{"fixed": true}"#);
    assert!(TargetInput::from_aws(Some("{nope"), None, None).is_err());
    assert!(TargetInput::from_aws(Some(&format!("\"{}\"", "x".repeat(8191))), None, None).is_err());
    assert_eq!(
        TargetInput::from_aws(Some("{}"), Some("$.detail"), None).unwrap_err(),
        TransformError::Conflicting
    );
    let cases = [
        ("$.detail.state", r#""RUNNING""#),
        (
            "$.detail",
            r#"{"instance-id":"i-0123456789","state":"RUNNING","tags":{"k":"v"},"list":[1,2,3]}"#,
        ),
        ("$['detail']['instance-id']", r#""i-0123456789""#),
        ("$.detail.list[2]", "3"),
        (
            "$.resources[0]",
            r#""arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111""#,
        ),
        ("$.detail.missing", "null"),
        ("$.detail.list[9]", "null"),
    ];
    for (path, want) in cases {
        let t = TargetInput::from_aws(None, Some(path), None).unwrap();
        assert_eq!(t.apply(&ev, &CTX).unwrap(), want, "{path}");
    }
    let t = TargetInput::from_aws(None, Some("$"), None).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&t.apply(&ev, &CTX).unwrap()).unwrap(),
        ev
    );
    let t = TargetInput::from_aws(None, None, None).unwrap();
    assert_eq!(t, TargetInput::MatchedEvent);
    assert_eq!(
        serde_json::from_str::<Value>(&t.apply(&ev, &CTX).unwrap()).unwrap(),
        ev
    );
}

#[test]
fn spec_deserializes_from_aws_json() {
    let s: InputTransformerSpec =
        serde_json::from_str(r#"{"InputPathsMap": {"a": "$.detail.a"}, "InputTemplate": "<a>"}"#)
            .unwrap();
    assert_eq!(s.input_paths_map["a"], "$.detail.a");
    let s: InputTransformerSpec = serde_json::from_str(r#"{"InputTemplate": "\"x\""}"#).unwrap();
    assert!(s.input_paths_map.is_empty());
}
