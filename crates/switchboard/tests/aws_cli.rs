//! `switchboard aws plan|apply` against moto, and `switchboard claim-check get`.

#[path = "../../switchboard-aws/tests/moto/mod.rs"]
mod moto;

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn with_config(args: &[&str], cfg: &Path) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let cfg = cfg.to_str().unwrap();
    all.extend(["--config", cfg]);
    run(&all)
}

#[test]
fn apply_twice_then_plan_reports_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let bus = moto::unique("sb-cli-bus");
    let queue = moto::unique("sb-cli-q");
    let dlq = moto::unique("sb-cli-dlq");
    let table = moto::unique("sb-cli-dedup");
    let cfg = dir.path().join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
data_dir = "{data}"

[dedup]
backend = "dynamodb"
table = "{table}"

{aws}
[aws.bus]
name = "{bus}"

[[aws.rules]]
name = "conversations"
description = "conversation ends to SQS"
event_pattern = {{ source = [{{ prefix = "aws.partner/genesys.com" }}], detail-type = ["v2.detail.events.conversation.{{id}}.customer.end"] }}
[[aws.rules.targets]]
id = "to-sqs"
arn = "arn:aws:sqs:{region}:{account}:{queue}"
retry_policy = {{ maximum_retry_attempts = 5, maximum_event_age_in_seconds = 900 }}
dead_letter_config = {{ arn = "arn:aws:sqs:{region}:{account}:{dlq}" }}
"#,
            data = dir.path().join("data").display(),
            aws = moto::aws_toml(&moto::url()),
            region = moto::REGION,
            account = moto::ACCOUNT,
        ),
    )
    .unwrap();

    let out = with_config(&["aws", "plan", "--detailed-exitcode"], &cfg);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for line in [
        format!("+ create queue {queue}"),
        format!("+ create queue {dlq}"),
        format!("+ create table {table}"),
        format!("+ create event bus {bus}"),
        format!("+ create rule {bus}/conversations"),
    ] {
        assert!(plan.contains(&line), "{line:?} missing from:\n{plan}");
    }

    let out = with_config(&["aws", "apply"], &cfg);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let applied = text(&out.stdout);
    assert_eq!(applied.lines().count(), 5, "{applied}");
    assert!(
        applied.lines().all(|l| l.starts_with("changed: + create ")),
        "{applied}"
    );

    let out = with_config(&["aws", "apply"], &cfg);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "no changes: AWS resources are up to date"
    );

    let out = with_config(&["aws", "plan", "--detailed-exitcode"], &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("no changes: 5 resources up to date"),
        "{plan}"
    );
    assert!(
        !plan.contains("+ create") && !plan.contains("~ update"),
        "{plan}"
    );
}

#[test]
fn claim_check_get_reads_files_and_checks_digests() {
    let dir = tempfile::tempdir().unwrap();
    let body = br#"{"detail-type":"big","detail":{"x":1}}"#;
    let path = dir.path().join("blob.json");
    std::fs::write(&path, body).unwrap();
    let uri = format!("file://{}", path.display());
    let good = switchboard_aws::s3::sha256_hex(body);
    let bad = "0".repeat(64);

    let check = |args: &[&str], ok: bool, stdout: &[u8], stderr_has: &str| {
        let out = run(args);
        assert_eq!(out.status.success(), ok, "{args:?}: {}", text(&out.stderr));
        assert_eq!(out.stdout, stdout, "{args:?}");
        assert!(
            text(&out.stderr).contains(stderr_has),
            "{args:?}: {}",
            text(&out.stderr)
        );
    };
    check(&["claim-check", "get", &uri], true, body, "");
    check(
        &["claim-check", "get", &uri, "--sha256", &good],
        true,
        body,
        "",
    );
    check(
        &["claim-check", "get", &uri, "--sha256", &good.to_uppercase()],
        true,
        body,
        "",
    );
    check(
        &["claim-check", "get", &uri, "--sha256", &bad],
        false,
        b"",
        "sha256 mismatch",
    );
    check(
        &["claim-check", "get", "ftp://x/y"],
        false,
        b"",
        "expected an s3:// or file:// URI",
    );
    let missing = format!("file://{}", dir.path().join("nope.json").display());
    check(&["claim-check", "get", &missing], false, b"", "nope.json");

    let copy = dir.path().join("copy.json");
    let out = run(&[
        "claim-check",
        "get",
        &uri,
        "--sha256",
        &good,
        "-o",
        copy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&copy).unwrap(), body);
}

#[tokio::test]
async fn claim_check_get_reads_s3_through_the_config() {
    let c = moto::clients().await;
    let bucket = moto::unique("sb-cli-claims");
    c.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = br#"{"detail":{"big":true}}"#;
    let check = switchboard_aws::s3::put_blob(&c.s3, &bucket, "claims/", body)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\n\n{}",
            dir.path().join("data").display(),
            moto::aws_toml(&moto::url())
        ),
    )
    .unwrap();
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        with_config(
            &["claim-check", "get", &check.uri, "--sha256", &check.sha256],
            &cfg2,
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, body);
}
