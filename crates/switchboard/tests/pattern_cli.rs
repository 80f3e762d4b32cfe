//! End-to-end tests of `test-pattern`, `transform` and `match`.

use std::io::Write as _;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("run switchboard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn test_pattern_prints_the_aws_cli_response() {
    let cases = [
        (
            r#"{"source":["aws.ec2"]}"#,
            r#"{"source":"aws.ec2","detail":{}}"#,
            "true",
        ),
        (
            r#"{"source":["aws.s3"]}"#,
            r#"{"source":"aws.ec2","detail":{}}"#,
            "false",
        ),
        (
            r#"{"detail":{"n":[{"numeric":[">",1]}]}}"#,
            r#"{"detail":{"n":2}}"#,
            "true",
        ),
    ];
    for (pattern, event, want) in cases {
        let o = run(&["test-pattern", "--event-pattern", pattern, "--event", event]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("{{\n    \"Result\": {want}\n}}\n"));
    }
}

#[test]
fn test_pattern_reads_files_and_rejects_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    let e = dir.path().join("e.json");
    std::fs::write(&p, r#"{"a":[{"prefix":"x"}]}"#).unwrap();
    std::fs::write(&e, r#"{"a":"xyz"}"#).unwrap();
    let o = run(&[
        "test-pattern",
        "--event-pattern",
        &format!("@{}", p.display()),
        "--event",
        &format!("@{}", e.display()),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("\"Result\": true"));

    let o = run(&[
        "test-pattern",
        "--event-pattern",
        r#"{"a":[{"prefix":1}]}"#,
        "--event",
        "{}",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("InvalidEventPatternException: a: \"prefix\" must be a string"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "test-pattern",
        "--event-pattern",
        r#"{"a":["x"]}"#,
        "--event",
        "{nope",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("InvalidEventPatternException:"),
        "{}",
        stderr(&o)
    );
    // Broken only after the last key the pattern uses: the matcher stops
    // before it, the command still refuses the event.
    let o = run(&[
        "test-pattern",
        "--event-pattern",
        r#"{"a":["x"]}"#,
        "--event",
        r#"{"a":"x","b":[1,2}"#,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).starts_with("InvalidEventPatternException: Event is not valid"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn transform_variants() {
    let event = r#"{"time":"2025-01-01T00:00:00Z","detail":{"instance":"i-1","state":"RUNNING"}}"#;
    let o = run(&[
        "transform",
        "--event",
        event,
        "--input-transformer",
        r#"{"InputPathsMap":{"i":"$.detail.instance","s":"$.detail.state"},"InputTemplate":"{\"msg\": \"<i> is <s>\", \"at\": <aws.events.event.ingestion-time>}"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"msg\":\"i-1 is RUNNING\",\"at\":\"2025-01-01T00:00:00Z\"}\n"
    );

    let o = run(&[
        "transform",
        "--event",
        event,
        "--input-path",
        "$.detail.state",
    ]);
    assert_eq!(stdout(&o), "\"RUNNING\"\n");
    let o = run(&["transform", "--event", event, "--input", r#"{"k":1}"#]);
    assert_eq!(stdout(&o), "{\"k\":1}\n");
    let o = run(&[
        "transform",
        "--event",
        event,
        "--input-transformer",
        r#"{"InputTemplate":"<unknown>"}"#,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown variable"), "{}", stderr(&o));
    // Exactly one of the three is required.
    let o = run(&["transform", "--event", event]);
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn match_counts_every_rule_and_survives_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"voice": {"detail":{"mediaType":["VOICE"]}}, "chat": "{\"detail\":{\"mediaType\":[\"CHAT\"]}}", "none": {"x":["y"]}}"#,
    )
    .unwrap();
    let events = dir.path().join("events.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&events).unwrap(),
        flate2::Compression::default(),
    );
    for line in [
        r#"{"detail":{"mediaType":"VOICE"}}"#,
        r#"{"detail":{"mediaType":"CHAT"}}"#,
        "not json",
        "",
        r#"{"detail":{"mediaType":"VOICE"}}"#,
    ] {
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
    let o = run(&[
        "match",
        "--rules",
        rules.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let counts: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        counts,
        serde_json::json!({"voice": 2, "chat": 1, "none": 0})
    );
    assert!(
        stderr(&o).contains("4 events (1 invalid)"),
        "{}",
        stderr(&o)
    );

    let arr = dir.path().join("arr.json");
    std::fs::write(&arr, r#"[{"a":[1]}, {"a":[2]}]"#).unwrap();
    let plain = dir.path().join("e.jsonl");
    std::fs::write(&plain, "{\"a\":1}\n{\"a\":[1,2]}\n").unwrap();
    let o = run(&[
        "match",
        "--rules",
        arr.to_str().unwrap(),
        "--events",
        plain.to_str().unwrap(),
    ]);
    let counts: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(counts, serde_json::json!({"0": 2, "1": 1}));

    std::fs::write(&arr, r#"[{"a":[]}]"#).unwrap();
    let o = run(&[
        "match",
        "--rules",
        arr.to_str().unwrap(),
        "--events",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("InvalidEventPatternException"),
        "{}",
        stderr(&o)
    );
}
