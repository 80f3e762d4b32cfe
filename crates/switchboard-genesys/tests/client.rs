//! The Platform API client against the fake Genesys: OAuth, token cache, 401, 429, 5xx,
//! pagination, rate limiting, whoami.

mod fake;

use std::time::Duration;

use fake::{Fake, ORG_ID, Settings};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_genesys::{Client, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_for_many_concurrent_callers() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    let calls = (0..20).map(|_| {
        let c = client.clone();
        async move { c.get::<Value>("/api/v2/organizations/me", &[]).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap()["id"], ORG_ID);
    }
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(client.tokens_fetched(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_an_auth_error() {
    let fake = Fake::start(Settings::default()).await;
    let mut cfg = fake.client_config();
    cfg.client_secret = "wrong".into();
    let err = Client::new(cfg)
        .unwrap()
        .get::<Value>("/api/v2/organizations/me", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Auth(ref e) if e.status == 401),
        "{err}"
    );
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refreshed_once_and_the_call_retried() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    client
        .get::<Value>("/api/v2/organizations/me", &[])
        .await
        .unwrap();
    fake.revoke_tokens();
    fake.clear_requests();
    let me: Value = client.get("/api/v2/organizations/me", &[]).await.unwrap();
    assert_eq!(me["id"], ORG_ID);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.requests().len(), 2, "one 401, one retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_ahead_of_expiry() {
    // 3 s tokens, refreshed 1.5 s ahead: after 1.6 s the next call fetches a new one first. (The
    // margins are wide so that a loaded machine's slow first call still leaves the token fresh.)
    let fake = Fake::start(Settings {
        token_lifetime_secs: 3,
        ..Settings::default()
    })
    .await;
    let mut cfg = fake.client_config();
    cfg.token_refresh_ahead = Duration::from_millis(1500);
    let client = Client::new(cfg).unwrap();
    client
        .get::<Value>("/api/v2/organizations/me", &[])
        .await
        .unwrap();
    let first = client.cached_token().await.unwrap();
    assert!(first.remaining() > Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(1600)).await; // Passage of time is what is tested.
    client
        .get::<Value>("/api/v2/organizations/me", &[])
        .await
        .unwrap();
    assert_eq!(fake.token_requests(), 2);
    assert!(
        fake.requests().len() == 2,
        "no 401 was needed: {:?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_429_then_succeeds() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    fake.throttle_next(3);
    // A POST is retried too: a 429 means Genesys did not process it.
    let ch: Value = client
        .request_as(Method::POST, "/api/v2/notifications/channels", &[], None)
        .await
        .unwrap();
    assert!(
        ch["connectUri"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1:")
    );
    assert_eq!(fake.throttled(), 3);
    assert_eq!(fake.channels_created(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_on_429_with_genesys_code_and_correlation_id() {
    let fake = Fake::start(Settings::default()).await;
    let mut cfg = fake.client_config();
    cfg.max_retries = 2;
    let client = Client::new(cfg).unwrap();
    fake.throttle_next(10);
    let err = client.get::<Value>("/api/v2/users", &[]).await.unwrap_err();
    let Error::RateLimited {
        attempts,
        retry_after,
        error,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*attempts, 3);
    assert_eq!(*retry_after, Duration::from_secs(1));
    assert_eq!(error.code.as_deref(), Some("too.many.requests.retry.after"));
    assert!(error.correlation_id.is_some());
    assert!(error.message.contains("Rate limit exceeded"));
    assert_eq!(fake.throttled(), 3);
    assert!(err.to_string().contains("ININ-Correlation-Id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_503_for_get_but_not_for_post() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    fake.fail_next_503(2);
    let me: Value = client.get("/api/v2/organizations/me", &[]).await.unwrap();
    assert_eq!(me["id"], ORG_ID);
    fake.fail_next_503(1);
    let err = client
        .request(Method::POST, "/api/v2/notifications/channels", &[], None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        err.api().unwrap().code.as_deref(),
        Some("service.unavailable")
    );
    assert_eq!(fake.channels_created(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_code_message_and_correlation_id() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    let err = client
        .get::<Value>("/api/v2/integrations/nope", &[])
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!((api.status, api.code.as_deref()), (404, Some("not.found")));
    assert_eq!(api.message, "integration not found");
    assert!(api.correlation_id.is_some());
    assert_eq!(fake.requests().len(), 1, "404 is never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_listings() {
    let fake = Fake::start(Settings {
        users: 250,
        queues: 0,
        ..Settings::default()
    })
    .await;
    let client = Client::new(fake.client_config()).unwrap();
    let check = |page_size: u32, pages: usize| {
        let (client, fake) = (client.clone(), fake.clone());
        async move {
            fake.clear_requests();
            let users: Vec<Value> = client
                .get_all_pages("/api/v2/users", &[], page_size)
                .await
                .unwrap();
            let ids: Vec<String> = users
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids, fake.users(), "page size {page_size}");
            assert_eq!(fake.requests().len(), pages, "page size {page_size}");
        }
    };
    check(100, 3).await;
    check(250, 1).await;
    check(249, 2).await;
    check(1, 250).await;
    fake.clear_requests();
    let queues: Vec<Value> = client
        .get_all_pages("/api/v2/routing/queues", &[], 100)
        .await
        .unwrap();
    assert!(queues.is_empty());
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_rate_limit_spaces_requests() {
    let fake = Fake::start(Settings::default()).await;
    let mut cfg = fake.client_config();
    cfg.rate_limit = 3;
    cfg.rate_limit_window = Duration::from_millis(400);
    let client = Client::new(cfg).unwrap();
    let start = tokio::time::Instant::now();
    for _ in 0..7 {
        client
            .get::<Value>("/api/v2/organizations/me", &[])
            .await
            .unwrap();
    }
    // 7 requests at 3 per 400 ms need at least two full windows.
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_reports_org_and_token_expiry() {
    let fake = Fake::start(Settings {
        token_lifetime_secs: 3600,
        ..Settings::default()
    })
    .await;
    let client = Client::new(fake.client_config()).unwrap();
    let me = client.whoami().await.unwrap();
    assert_eq!(
        (me.org_id.as_str(), me.org_name.as_str()),
        (ORG_ID, "Fake Org")
    );
    assert_eq!(me.api_base_url, fake.base_url());
    let left = me.token_expires_at - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(59) && left <= time::Duration::minutes(60),
        "{left}"
    );
    let json = serde_json::to_value(&me).unwrap();
    assert_eq!(json["org_id"], json!(ORG_ID));
}
