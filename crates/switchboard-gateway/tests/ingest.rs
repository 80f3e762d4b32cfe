//! Ingest over real HTTP: every row of the ack table, every auth scheme, dedup.

mod common;

use common::*;
use switchboard_verify::{Encoding, Scheme};

#[tokio::test]
async fn ack_table() {
    let mut target = TargetServer::start().await;
    let gw = TestGateway::start(&config_with(&format!(
        "[server]\nmax_body_bytes = 2048\nmax_json_depth = 16\n{}",
        http_route("t", &target.url, 3)
    )))
    .await;
    let path = "/webhooks/genesys";

    // 202 new, then 200 duplicate with the original id.
    let body = notification(1);
    let (s, v) = gw.post_signed(path, &body).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["duplicate"], false);
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = gw.post_signed(path, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["id"], id.as_str());

    // The target got it once, with the envelope and the idempotency key.
    let r = target.next_success().await;
    assert_eq!(
        r.headers.get("idempotency-key").unwrap().to_str().unwrap(),
        id
    );
    let env: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(env["id"], id.as_str());
    assert_eq!(
        env["detail-type"],
        "v2.detail.events.conversation.{id}.customer.start"
    );
    assert_eq!(
        env["detail"]["topicName"],
        "v2.detail.events.conversation.8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f.customer.start"
    );

    // 401: no signature, wrong signature.
    let (s, v) = gw.post(path, &[], body.clone()).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]["message"].is_string());
    let bad = vec![("x-hub-signature-256".to_string(), "sha256=AAAA".to_string())];
    assert_eq!(gw.post(path, &bad, body.clone()).await.0, 401);

    // 400: not JSON, not an object, too deep, invalid UTF-8, not an event.
    for (what, b) in [
        ("not json", b"{nope".to_vec()),
        ("array", b"[1,2]".to_vec()),
        (
            "deep",
            format!("{}{}", "[".repeat(40), "]".repeat(40)).into_bytes(),
        ),
        ("utf8", b"{\"a\":\"\xff\xfe\"}".to_vec()),
    ] {
        let h = sign_bytes(&b);
        let (s, v) = gw.post(path, &h, b).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
    }

    // 413: over the limit, declared or streamed.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    let (s, v) = gw.post_signed(path, &big).await;
    assert_eq!(s, 413, "{v}");

    // 415: wrong content type.
    let h = sign(&Scheme::HubSignature256, SECRET, &body);
    let mut req = gw
        .client
        .post(gw.url(path))
        .header("content-type", "text/plain")
        .body(body.clone());
    for (k, v) in &h {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 415);

    // Nothing but the one event reached the target.
    assert!(
        target
            .nothing_within(std::time::Duration::from_millis(300))
            .await
    );
    gw.stop().await;
}

fn sign_bytes(b: &[u8]) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    switchboard_verify::sign(&Scheme::HubSignature256, SECRET, b, "m1", now).unwrap()
}

#[tokio::test]
async fn every_auth_scheme_with_rotation() {
    let whsec_old = switchboard_verify::encode_whsec(&[7u8; 32]);
    let whsec_new = switchboard_verify::encode_whsec(&[9u8; 32]);
    let cfg = format!(
        r#"
[[sources]]
name = "hub"
path = "/hub"
auth = {{ scheme = "hub-signature-256", secrets = ["old", "new"] }}
[[sources]]
name = "sw"
path = "/sw"
auth = {{ scheme = "standard-webhooks", secrets = ["{whsec_old}", "{whsec_new}"] }}
[[sources]]
name = "hmac"
path = "/hmac"
auth = {{ scheme = "hmac-header", secrets = ["old", "new"] }}
[[sources]]
name = "key"
path = "/key"
auth = {{ scheme = "api-key", header = "x-api-key", secrets = ["k-old", "k-new"] }}
[[sources]]
name = "basic"
path = "/basic"
auth = {{ scheme = "basic", secrets = ["eb:pw-old", "eb:pw-new"] }}
[[sources]]
name = "open"
path = "/open"
auth = {{ scheme = "none" }}
"#
    );
    let gw = TestGateway::start(&cfg).await;
    let hmac = Scheme::HmacHeader {
        header: "X-Genesys-Webhook-Signature".into(),
        prefix: String::new(),
        encoding: Encoding::Base64,
    };
    let cases: Vec<(&str, Scheme, &str, &str)> = vec![
        ("/hub", Scheme::HubSignature256, "old", "wrong"),
        ("/hub", Scheme::HubSignature256, "new", "wrong"),
        (
            "/sw",
            Scheme::StandardWebhooks {
                tolerance_secs: 300,
            },
            &whsec_old,
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        (
            "/sw",
            Scheme::StandardWebhooks {
                tolerance_secs: 300,
            },
            &whsec_new,
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("/hmac", hmac.clone(), "new", "wrong"),
        (
            "/key",
            Scheme::ApiKey {
                header: "x-api-key".into(),
            },
            "k-new",
            "k-wrong",
        ),
        ("/basic", Scheme::Basic, "eb:pw-old", "eb:nope"),
    ];
    for (i, (path, scheme, good, bad)) in cases.into_iter().enumerate() {
        let body = notification(100 + i);
        let (s, v) = gw
            .post(path, &sign(&scheme, good, &body), body.clone())
            .await;
        assert_eq!(s, 202, "{path} with a valid secret: {v}");
        let body = notification(200 + i);
        let (s, v) = gw
            .post(path, &sign(&scheme, bad, &body), body.clone())
            .await;
        assert_eq!(s, 401, "{path} with a wrong secret: {v}");
        let (s, _) = gw.post(path, &[], body.clone()).await;
        assert_eq!(s, 401, "{path} without credentials");
    }
    let body = notification(300);
    assert_eq!(gw.post("/open", &[], body).await.0, 202);

    // Truncated and stale standard-webhooks signatures.
    let body = notification(400);
    let mut h = sign(
        &Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        &whsec_new,
        &body,
    );
    for (k, v) in h.iter_mut() {
        if k.eq_ignore_ascii_case("webhook-signature") {
            v.truncate(10);
        }
    }
    assert_eq!(
        gw.post("/sw", &h, body.clone()).await.0,
        401,
        "truncated signature"
    );
    let stale = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    let h = switchboard_verify::sign(
        &Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        &whsec_new,
        body.as_bytes(),
        "msg_stale",
        stale,
    )
    .unwrap();
    let (s, v) = gw.post("/sw", &h, body.clone()).await;
    assert_eq!(s, 401, "stale timestamp: {v}");

    // Truncated hub signature.
    let mut h = sign(&Scheme::HubSignature256, "new", &body);
    h[0].1.truncate(20);
    assert_eq!(
        gw.post("/hub", &h, body).await.0,
        401,
        "truncated hub signature"
    );
    gw.stop().await;
}

#[tokio::test]
async fn standard_webhooks_dedup_uses_webhook_id() {
    let secret = switchboard_verify::encode_whsec(&[1u8; 32]);
    let cfg = format!(
        "[[sources]]\nname = \"sw\"\npath = \"/sw\"\nauth = {{ scheme = \"standard-webhooks\", secrets = [\"{secret}\"] }}\n"
    );
    let gw = TestGateway::start(&cfg).await;
    let scheme = Scheme::StandardWebhooks {
        tolerance_secs: 300,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Same delivery id, different bodies (a redelivery): the second is a duplicate.
    let b1 = notification(1);
    let b2 = notification(2);
    let h1 = switchboard_verify::sign(&scheme, &secret, b1.as_bytes(), "msg_same", now).unwrap();
    let h2 = switchboard_verify::sign(&scheme, &secret, b2.as_bytes(), "msg_same", now).unwrap();
    let (s1, v1) = gw.post("/sw", &h1, b1).await;
    let (s2, v2) = gw.post("/sw", &h2, b2).await;
    assert_eq!((s1, s2), (202, 200), "{v1} {v2}");
    assert_eq!(v1["id"], v2["id"]);
    gw.stop().await;
}

#[tokio::test]
async fn an_event_not_persisted_within_the_request_timeout_is_a_503_not_a_408() {
    // The body arrived; the store did not commit in time (a stalled disk). Senders retry 5xx
    // and drop 4xx (EventBridge API destinations do not retry 408), so the answer must be a
    // 503 with Retry-After; the event, queued meanwhile, is persisted once the store moves,
    // and the retry is answered as its duplicate.
    let gw = TestGateway::start(&config_with("[server]\nrequest_timeout_secs = 1\n")).await;
    let store = gw.gw.as_ref().unwrap().state().store.clone();
    let pause = store.test_pause_writer().await.unwrap();
    let body = notification(1);
    let mut req = gw
        .client
        .post(gw.url("/webhooks/genesys"))
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in sign(&Scheme::HubSignature256, SECRET, &body) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "store_timeout", "{v}");

    drop(pause);
    let (s, v) = gw.post_signed("/webhooks/genesys", &body).await;
    assert_eq!(
        (s, &v["duplicate"]),
        (200, &serde_json::Value::Bool(true)),
        "{v}"
    );
    assert_eq!(
        store.table_counts().await.unwrap().get("events").copied(),
        Some(1)
    );
    gw.stop().await;
}

#[tokio::test]
async fn store_full_then_store_failed_answer_503() {
    let gw = TestGateway::start(&config_with("[store]\nqueue_capacity = 2\n")).await;
    let store = gw.gw.as_ref().unwrap().state().store.clone();
    let pause = store.test_pause_writer().await.unwrap();

    // Ten concurrent requests against a stalled writer with room for two: eight are refused at
    // once with 503 + Retry-After, the two queued ones are acknowledged once the writer resumes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..10 {
        let body = notification(n);
        let h = sign(&Scheme::HubSignature256, SECRET, &body);
        let mut req = gw
            .client
            .post(gw.url("/webhooks/genesys"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in h {
            req = req.header(k, v);
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            tx.send((resp.status().as_u16(), retry_after)).unwrap();
        });
    }
    for _ in 0..8 {
        let (status, retry_after) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    drop(pause);
    for _ in 0..2 {
        let (status, _) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 202);
    }

    // A failed commit (fsync error) makes the store fail-stop: 503, never 2xx, and not ready.
    store.test_fail_next_commit();
    let (s, v) = gw.post_signed("/webhooks/genesys", &notification(50)).await;
    assert_eq!(s, 503, "{v}");
    let (s, _) = gw.post_signed("/webhooks/genesys", &notification(51)).await;
    assert_eq!(s, 503);
    assert_eq!(gw.get("/readyz").await.0, 503);
}
