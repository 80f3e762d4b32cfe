//! Delivery over real HTTP: retries, dead letters, redrive, restart, isolation, auth, file target.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn retry_then_dead_letter_then_redrive() {
    // Two failures then success would be delivered; with one retry allowed the event dead-letters.
    let mut target = TargetServer::start_with(Script {
        default: 500,
        ..Default::default()
    })
    .await;
    let gw = TestGateway::start(&config_with(&http_route("crm", &target.url, 1))).await;
    let (s, v) = gw.post_signed("/webhooks/genesys", &notification(1)).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // First attempt and one retry, both 500.
    assert_eq!(target.next().await.status, 500);
    assert_eq!(target.next().await.status, 500);

    // The dead letter carries EventBridge's attributes.
    let dl = wait_for_dlq(&gw, 1).await;
    let item = &dl[0];
    assert_eq!(item["event_id"], id.as_str());
    assert_eq!(item["rule"], "to-crm");
    assert_eq!(item["target"], "crm");
    assert_eq!(item["error_code"], "HTTP_500");
    assert_eq!(item["exhausted_condition"], "MaximumRetryAttempts");
    assert_eq!(item["retry_attempts"], 1);
    let attrs = &item["attributes"];
    assert_eq!(
        attrs["RULE_ARN"],
        "arn:switchboard:events:local:000000000000:rule/to-crm"
    );
    assert_eq!(attrs["TARGET_ARN"], "crm");
    assert_eq!(attrs["ERROR_CODE"], "HTTP_500");
    assert_eq!(attrs["EXHAUSTED_RETRY_CONDITION"], "MaximumRetryAttempts");
    assert_eq!(attrs["RETRY_ATTEMPTS"], 1);
    let dlq_id = item["id"].as_i64().unwrap();
    let (s, one) = gw.get(&format!("/admin/dlq/{dlq_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(one["event_id"], id.as_str());

    // Target healthy again; redrive by id delivers it, and the redrive is audited.
    target.script.lock().unwrap().default = 200;
    let resp = gw
        .client
        .post(gw.url("/admin/dlq/redrive"))
        .json(&serde_json::json!({"ids": [dlq_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["redriven"], 1);
    let r = target.next_success().await;
    assert_eq!(
        r.headers.get("idempotency-key").unwrap().to_str().unwrap(),
        id
    );
    assert!(wait_for_dlq(&gw, 0).await.is_empty());
    let (_, audit) = gw.get("/admin/audit?limit=100").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(actions.contains(&"dlq.redrive"), "{audit}");
    gw.stop().await;
}

/// Polls the admin API until the DLQ has `n` items (the deliverer runs concurrently).
async fn wait_for_dlq(gw: &TestGateway, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, v) = gw.get("/admin/dlq").await;
        assert_eq!(s, 200, "{v}");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() == n {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "DLQ has {} items, expected {n}: {v}",
            items.len()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn client_errors_dead_letter_at_once_and_retry_after_is_honoured() {
    let mut target = TargetServer::start_with(Script {
        default: 200,
        queue: [
            (429, vec![("retry-after".to_string(), "1".to_string())]),
            (400, vec![]),
        ]
        .into(),
        ..Default::default()
    })
    .await;
    let gw = TestGateway::start(&config_with(&http_route("crm", &target.url, 5))).await;
    assert_eq!(
        gw.post_signed("/webhooks/genesys", &notification(1))
            .await
            .0,
        202
    );
    let first = target.next().await;
    assert_eq!(first.status, 429);
    let t0 = Instant::now();
    // The retry waits for Retry-After (1 s) although the policy's backoff is at most 50 ms.
    let second = target.next().await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "retried after {:?}",
        t0.elapsed()
    );
    assert_eq!(second.status, 400);
    let dl = wait_for_dlq(&gw, 1).await;
    assert_eq!(dl[0]["error_code"], "HTTP_400");
    assert!(dl[0]["exhausted_condition"].is_null(), "{}", dl[0]);
    assert_eq!(dl[0]["retry_attempts"], 1);
    gw.stop().await;
}

#[tokio::test]
async fn queued_deliveries_survive_a_restart() {
    // The target is down (500) during the first run; everything acked must arrive after restart.
    let mut target = TargetServer::start_with(Script {
        default: 500,
        ..Default::default()
    })
    .await;
    let cfg = config_with(&http_route("crm", &target.url, 185));
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in(&cfg, dir.path().to_path_buf()).await;
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..20 {
        let (s, v) = gw.post_signed("/webhooks/genesys", &notification(n)).await;
        assert_eq!(s, 202);
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(target.next().await.status, 500);
    gw.stop().await;

    target.script.lock().unwrap().default = 200;
    let gw = TestGateway::start_in(&cfg, dir.path().to_path_buf()).await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < ids.len() {
        let r = target.next_success().await;
        got.insert(
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(got, ids);
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_target_does_not_delay_a_healthy_one() {
    // "slow" hangs past its timeout on every request; "fast" must still get each event promptly.
    let slow = TargetServer::start_with(Script {
        default: 200,
        delay: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let mut fast = TargetServer::start().await;
    let cfg = config_with(&format!(
        "{}\n{}",
        http_route("slow", &slow.url, 185),
        http_route("fast", &fast.url, 185)
    ));
    let gw = TestGateway::start(&cfg).await;
    for n in 0..10 {
        assert_eq!(
            gw.post_signed("/webhooks/genesys", &notification(n))
                .await
                .0,
            202
        );
    }
    let t0 = Instant::now();
    for _ in 0..10 {
        fast.next_success().await;
    }
    // The slow target's timeout is 10 s; the fast one finished well before a single slow attempt.
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "fast target took {:?}",
        t0.elapsed()
    );
    drop(slow);
    gw.stop().await;
}

#[tokio::test]
async fn oauth2_client_credentials_cached_and_refreshed_on_401() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Token server: issues tok-1, tok-2, ...; counts calls; requires Basic client auth.
    let issued = Arc::new(AtomicUsize::new(0));
    let issued2 = issued.clone();
    let token_app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let issued = issued2.clone();
            async move {
                assert!(body.contains("grant_type=client_credentials"), "{body}");
                let auth = headers.get("authorization").unwrap().to_str().unwrap().to_string();
                assert!(auth.starts_with("Basic "), "{auth}");
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(serde_json::json!({"access_token": format!("tok-{n}"), "token_type": "bearer", "expires_in": 3600}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, token_app).await });

    // The target rejects tok-1 once (revoked server-side) and accepts anything else.
    let mut target = TargetServer::start().await;
    let cfg = config_with(&format!(
        r#"
[[targets]]
name = "crm"
type = "http"
url = "{}"
auth = {{ type = "oauth2", token_url = "{token_url}", client_id = "cid", client_secret = "csecret" }}
concurrency = 1
[[rules]]
name = "all"
[[rules.targets]]
id = "crm"
arn = "crm"
"#,
        target.url
    ));
    let gw = TestGateway::start(&cfg).await;
    for n in 0..3 {
        assert_eq!(
            gw.post_signed("/webhooks/genesys", &notification(n))
                .await
                .0,
            202
        );
        let r = target.next_success().await;
        assert_eq!(
            r.headers.get("authorization").unwrap().to_str().unwrap(),
            "Bearer tok-1"
        );
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "token is cached across deliveries"
    );
    target.script.lock().unwrap().queue.push_back((401, vec![]));
    assert_eq!(
        gw.post_signed("/webhooks/genesys", &notification(9))
            .await
            .0,
        202
    );
    assert_eq!(target.next().await.status, 401);
    let r = target.next().await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("authorization").unwrap().to_str().unwrap(),
        "Bearer tok-2"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    gw.stop().await;
}

#[tokio::test]
async fn input_transformer_shapes_the_payload() {
    let mut target = TargetServer::start().await;
    let cfg = config_with(&format!(
        r#"
[[targets]]
name = "crm"
type = "http"
url = "{}"
[[rules]]
Name = "voice-calls"
EventPattern = '{{"detail": {{"eventBody": {{"mediaType": ["VOICE"]}}}}}}'
[[rules.Targets]]
Id = "crm"
Arn = "crm"
InputTransformer = {{ InputPathsMap = {{ conv = "$.detail.eventBody.conversationId" }}, InputTemplate = '{{"conversation": <conv>, "rule": "<aws.events.rule-name>"}}' }}
"#,
        target.url
    ));
    let gw = TestGateway::start(&cfg).await;
    assert_eq!(
        gw.post_signed("/webhooks/genesys", &notification(1))
            .await
            .0,
        202
    );
    let r = target.next_success().await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"conversation": "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "rule": "voice-calls"})
    );
    // A non-matching event reaches nobody.
    let other = serde_json::json!({"topicName": "v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f.presence", "version": "2",
        "eventBody": {"source": "PURECLOUD"}, "metadata": {"CorrelationId": "c-x"}}).to_string();
    assert_eq!(gw.post_signed("/webhooks/genesys", &other).await.0, 202);
    assert!(target.nothing_within(Duration::from_millis(300)).await);
    gw.stop().await;
}

#[tokio::test]
async fn static_auth_kinds_and_extra_headers_are_sent() {
    let mut basic = TargetServer::start().await;
    let mut key = TargetServer::start().await;
    let mut bearer = TargetServer::start().await;
    let target = |name: &str, url: &str, auth: &str| {
        format!(
            "[[targets]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}\"\nheaders = {{ \"X-Source\" = \"switchboard\" }}\nauth = {auth}\n"
        )
    };
    let cfg = config_with(&format!(
        "{}{}{}\n[[rules]]\nname = \"all\"\n[[rules.targets]]\nid = \"b\"\narn = \"basic\"\n[[rules.targets]]\nid = \"k\"\narn = \"key\"\n[[rules.targets]]\nid = \"t\"\narn = \"bearer\"\n",
        target(
            "basic",
            &basic.url,
            "{ type = \"basic\", username = \"eb\", password = \"pw\" }"
        ),
        target(
            "key",
            &key.url,
            "{ type = \"api-key\", header = \"x-api-key\", value = \"k-1\" }"
        ),
        target(
            "bearer",
            &bearer.url,
            "{ type = \"bearer\", token = \"jwt.token.here\" }"
        ),
    ));
    let gw = TestGateway::start(&cfg).await;
    assert_eq!(
        gw.post_signed("/webhooks/genesys", &notification(1))
            .await
            .0,
        202
    );
    let header = |r: &Received, h: &str| r.headers.get(h).map(|v| v.to_str().unwrap().to_string());
    let r = basic.next_success().await;
    // base64("eb:pw") = "ZWI6cHc="
    assert_eq!(
        header(&r, "authorization").as_deref(),
        Some("Basic ZWI6cHc=")
    );
    assert_eq!(header(&r, "x-source").as_deref(), Some("switchboard"));
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let r = key.next_success().await;
    assert_eq!(header(&r, "x-api-key").as_deref(), Some("k-1"));
    let r = bearer.next_success().await;
    assert_eq!(
        header(&r, "authorization").as_deref(),
        Some("Bearer jwt.token.here")
    );
    gw.stop().await;
}

#[tokio::test]
async fn large_events_are_claim_checked_to_a_local_directory_and_fetched_back() {
    // The embedded default: no cloud account, blobs in the data dir.
    let target = TargetServer::start().await;
    let cfg = config_with(&format!(
        r#"
[[targets]]
name = "crm"
type = "http"
url = "{}"
claim_check = {{ store = "claim-checks", max_bytes = 4096 }}

[[rules]]
name = "all"
[[rules.targets]]
id = "crm"
arn = "crm"
"#,
        target.url
    ));
    let gw = TestGateway::start(&cfg).await;
    let mut target = target;
    let mut big: serde_json::Value = serde_json::from_str(&notification(1)).unwrap();
    big["eventBody"]["transcript"] = serde_json::Value::String("t".repeat(10_000));
    let (status, resp) = gw.post_signed("/webhooks/genesys", &big.to_string()).await;
    assert_eq!(status, 202);
    let got: serde_json::Value = serde_json::from_str(&target.next_success().await.body).unwrap();
    assert_eq!(got["id"], resp["id"], "the envelope fields stay");
    let cc = &got["detail"]["claimCheck"];
    let uri = cc["uri"].as_str().unwrap();
    assert!(uri.starts_with("file://"), "{uri}");
    assert!(
        uri.contains("claim-checks"),
        "under the data dir's claim-checks: {uri}"
    );
    assert!(got["detail"]["eventBody"].get("transcript").is_none());
    #[cfg(feature = "aws")]
    let fetched = switchboard_gateway::claim_check::fetch(uri, cc["sha256"].as_str(), None).await;
    #[cfg(not(feature = "aws"))]
    let fetched = switchboard_gateway::claim_check::fetch(uri, cc["sha256"].as_str()).await;
    let full: serde_json::Value = serde_json::from_slice(&fetched.unwrap()).unwrap();
    assert_eq!(
        full["detail"]["eventBody"], big["eventBody"],
        "the whole event, intact"
    );
    // A small event is sent as is.
    let (status, _) = gw.post_signed("/webhooks/genesys", &notification(2)).await;
    assert_eq!(status, 202);
    let small: serde_json::Value = serde_json::from_str(&target.next_success().await.body).unwrap();
    assert!(small["detail"].get("claimCheck").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn stored_events_are_replayed_through_the_current_rules() {
    let cfg = config_with(
        r#"
[[targets]]
name = "a"
type = "file"
path = "a.jsonl"

[[targets]]
name = "b"
type = "file"
path = "b.jsonl"

[[rules]]
name = "to-a"
[[rules.targets]]
id = "a"
arn = "a"

[[rules]]
name = "to-b"
[[rules.targets]]
id = "b"
arn = "b"
"#,
    );
    let gw = TestGateway::start(&cfg).await;
    let lines = |f: &str| -> Vec<serde_json::Value> {
        written_lines(&gw.data.join(f))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let wait_lines = |f: &'static str, n: usize| {
        let deadline = Instant::now() + WAIT;
        async move {
            while lines(f).len() < n {
                assert!(Instant::now() < deadline, "{f}: fewer than {n} lines");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let from = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, resp) = gw.post_signed("/webhooks/genesys", &notification(n)).await;
        assert_eq!(status, 202);
        ids.push(resp["id"].as_str().unwrap().to_owned());
    }
    wait_lines("a.jsonl", 3).await;
    wait_lines("b.jsonl", 3).await;
    let to = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };

    // Only target b, named: three new deliveries, each event carrying `replay-name`.
    let (status, resp) = gw
        .post(
            "/admin/replay",
            &[],
            serde_json::json!({"from": rfc(from), "to": rfc(to), "targets": ["b"], "name": "fix-1"})
                .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["events"], 3);
    assert_eq!(resp["deliveries"], 3);
    assert_eq!(resp["truncated"], false);
    wait_lines("b.jsonl", 6).await;
    let replayed: Vec<_> = lines("b.jsonl")
        .into_iter()
        .filter(|v| v["replay-name"] == "fix-1")
        .collect();
    let mut got: Vec<String> = replayed
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "the same events (same ids), once each");
    assert_eq!(lines("a.jsonl").len(), 3, "target a was not replayed");

    // A limit reports where to go on.
    let (_, part) = gw
        .post(
            "/admin/replay",
            &[],
            serde_json::json!({"from": rfc(from), "to": rfc(to), "rules": ["to-a"], "limit": 2})
                .to_string(),
        )
        .await;
    assert_eq!(
        (part["events"].as_u64(), part["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(part["next_from"].is_string());
    wait_lines("a.jsonl", 5).await;

    // Bad requests are 400 with a JSON error, and nothing is enqueued.
    for bad in [
        serde_json::json!({"from": rfc(from), "to": rfc(to), "targets": ["nope"]}),
        serde_json::json!({"from": rfc(from), "to": rfc(to), "rules": ["nope"]}),
        serde_json::json!({"from": rfc(to), "to": rfc(from)}),
        serde_json::json!({"from": "yesterday", "to": rfc(to)}),
    ] {
        let (status, resp) = gw.post("/admin/replay", &[], bad.to_string()).await;
        assert_eq!(status, 400, "{bad}: {resp}");
        assert!(resp["error"]["code"].is_string(), "{resp}");
    }
    let (_, audit) = gw.get("/admin/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "events.replay").count(), 2);
    gw.stop().await;
}
