//! Zero-config start, health, metrics, admin access and the audit log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard_gateway::config::Config;
use switchboard_gateway::{Gateway, Overrides};

async fn start_builtin(data: &std::path::Path) -> Gateway {
    Gateway::start(
        Config::builtin(),
        Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.to_path_buf()),
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn zero_config_generates_a_secret_once_and_writes_events_jsonl() {
    if std::env::var_os("SWITCHBOARD_WEBHOOK_SECRET").is_some() {
        // The zero-config source prefers the environment; this test is about the generated secret.
        eprintln!("SWITCHBOARD_WEBHOOK_SECRET is set; checking the environment path instead");
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = start_builtin(dir.path()).await;
    let secret = match std::env::var("SWITCHBOARD_WEBHOOK_SECRET") {
        Ok(s) => s,
        Err(_) => {
            assert_eq!(gw.generated_secrets.len(), 1);
            let g = &gw.generated_secrets[0];
            assert_eq!(g.path, "/webhooks/genesys");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&g.file).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
            }
            g.secret.clone()
        }
    };
    assert_eq!(gw.local_addr().ip().to_string(), "127.0.0.1");
    let base = format!("http://{}", gw.local_addr());
    let body = notification(1);
    let h = sign(&switchboard_verify::Scheme::HubSignature256, &secret, &body);
    let mut req = reqwest::Client::new()
        .post(format!("{base}/webhooks/genesys"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in h {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The catch-all rule writes the envelope to <data>/events.jsonl.
    let file = dir.path().join("events.jsonl");
    let deadline = Instant::now() + WAIT;
    let line = loop {
        if let Some(l) = written_lines(&file).into_iter().next() {
            break l;
        }
        assert!(Instant::now() < deadline, "events.jsonl never got a line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let env: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(env["id"], id.as_str());
    assert_eq!(env["source"], "genesys.cloud");
    gw.shutdown().await.unwrap();

    // A restart reuses the stored secret and prints nothing new.
    let gw = start_builtin(dir.path()).await;
    assert!(gw.generated_secrets.is_empty());
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_ready_metrics() {
    let gw = TestGateway::start(&config_with("")).await;
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_eq!(gw.get("/readyz").await.0, 200);
    assert_eq!(
        gw.post_signed("/webhooks/genesys", &notification(1))
            .await
            .0,
        202
    );
    assert_eq!(
        gw.post("/webhooks/genesys", &[], notification(2)).await.0,
        401
    );
    let resp = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("switchboard_ingest_requests_total"), "{text}");
    assert!(text.contains("outcome=\"accepted\""), "{text}");
    assert!(text.contains("outcome=\"unauthorized\""), "{text}");
    // The accepted event waited for the store's answer, and that wait is on record.
    let waits = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_store_ingest_wait_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(waits.is_some_and(|n| n >= 1.0), "{text}");
    // Unknown paths get a JSON 404.
    let (s, v) = gw.get("/nope").await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "not_found");
    gw.stop().await;
}

#[tokio::test]
async fn admin_needs_the_token_when_one_is_set() {
    let gw = TestGateway::start(&config_with(
        "[admin]\ntoken = \"s3cret\"\n[[targets]]\nname = \"out\"\ntype = \"stdout\"\n",
    ))
    .await;
    assert_eq!(gw.get("/admin/targets").await.0, 401);
    let resp = gw
        .client
        .get(gw.url("/admin/targets"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = gw
        .client
        .get(gw.url("/admin/targets"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["targets"][0]["name"], "out");
    gw.stop().await;
}

#[tokio::test]
async fn audit_log_pages() {
    // Every start records the configuration it runs with; five starts, pages of two.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with("");
    for _ in 0..4 {
        TestGateway::start_in(&cfg, dir.path().to_path_buf())
            .await
            .stop()
            .await;
    }
    let gw = TestGateway::start_in(&cfg, dir.path().to_path_buf()).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/admin/audit?limit=2&page_token={t}"),
            None => "/admin/audit?limit=2".to_string(),
        };
        let (s, v) = gw.get(&path).await;
        assert_eq!(s, 200, "{v}");
        let items = v["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["seq"].as_i64().unwrap()));
        pages += 1;
        match v["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(pages >= 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "no entry twice: {seen:?}");
    let (s, v) = gw.get("/admin/audit?page_token=garbage").await;
    assert_eq!(s, 400, "{v}");
    gw.stop().await;
}
