//! `switchboard genesys plan|apply|whoami|topics` against the fake Genesys server.

#[path = "../../switchboard-genesys/tests/fake/mod.rs"]
mod fake;

use std::process::Command;

fn run(args: &[&str], cfg: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("GENESYS_CLIENT_SECRET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_apply_apply_is_idempotent_and_audited() {
    let fake = fake::Fake::start(fake::Settings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
data_dir = "{data}"

[genesys]
api_base_url = "{base}"
login_base_url = "{base}"
client_id = "{id}"
client_secret = "{secret}"

[genesys.eventbridge]
name = "switchboard-cx"
aws_account_id = "123456789012"
aws_account_region = "us-east-1"
event_source_suffix = "cx-gateway-dev"
event_filter = ["v2.detail.events.conversation.{{id}}.customer.start", "v2.users.{{id}}.presence"]
"#,
            data = dir.path().join("data").display(),
            base = fake.base_url(),
            id = fake::CLIENT_ID,
            secret = fake::CLIENT_SECRET,
        ),
    )
    .unwrap();
    let cfg2 = cfg.clone();
    let run = move |args: &'static [&'static str]| {
        let cfg = cfg2.clone();
        tokio::task::spawn_blocking(move || run(args, &cfg))
    };

    let (ok, out, err) = run(&["genesys", "whoami"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains(fake::ORG_ID), "{out}");

    let (ok, out, err) = run(&["genesys", "plan"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty());
    assert!(fake.integrations().is_empty(), "plan changes nothing");

    let (ok, out, err) = run(&["genesys", "apply"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("aws.partner/genesys.com/cloud/"), "{out}");
    assert!(out.contains("changed:"), "{out}");
    assert_eq!(fake.integrations().len(), 1);

    let (ok, out, err) = run(&["genesys", "apply"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("no changes"),
        "second apply changes nothing: {out}"
    );

    // The first apply's changes are in the audit log of the data dir.
    let store = switchboard_store::Store::open(
        &dir.path().join("data"),
        switchboard_store::StoreOptions::default(),
    )
    .unwrap();
    let page = store.list_audit(None, 100).await.unwrap();
    let actions: Vec<&str> = page.items.iter().map(|a| a.action.as_str()).collect();
    assert!(
        actions.contains(&"genesys.integration.create"),
        "{actions:?}"
    );
    store.close().await.unwrap();

    let (ok, out, _) = run(&["genesys", "topics"]).await.unwrap();
    assert!(ok);
    assert!(out.contains("presence"), "{out}");
}
