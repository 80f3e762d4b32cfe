//! The Genesys Notification WebSocket source through the real pipeline, against the fake Genesys
//! server of `switchboard-genesys` (real endpoints and shapes, channels that expire quickly).

mod common;
#[path = "../../switchboard-genesys/tests/fake/mod.rs"]
mod fake;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn websocket_events_are_persisted_deduplicated_and_delivered_across_rollovers() {
    let fake = fake::Fake::start(fake::Settings {
        users: 5,
        channel_lifetime: Duration::from_millis(1500),
        connect_delay: Duration::from_millis(50),
        ..fake::Settings::default()
    })
    .await;
    let mut target = TargetServer::start().await;
    let cfg = format!(
        r#"
[genesys]
api_base_url = "{base}"
login_base_url = "{base}"
client_id = "{id}"
client_secret = "{secret}"

[[sources]]
name = "genesys-ws"
type = "genesys-notifications"
notifications = {{ topics = ["v2.users.{{user}}.presence"], rollover_before_expiry = "700ms", reconnect_backoff_min = "50ms", reconnect_backoff_max = "200ms", connect_timeout = "2s", ping_after_silence = "2s", pong_timeout = "1s" }}

{route}
"#,
        base = fake.base_url(),
        id = fake::CLIENT_ID,
        secret = fake::CLIENT_SECRET,
        route = http_route("crm", &target.url, 185),
    );
    let gw = TestGateway::start(&cfg).await;

    // Wait until every user's topic is live.
    let deadline = Instant::now() + WAIT;
    while fake.topic_counts().iter().sum::<usize>() < 5 {
        assert!(Instant::now() < deadline, "source never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // ~3 s of events while channels (1.5 s lifetime, rolled 0.7 s early) roll over; during the
    // overlap an event reaches two sockets and must still be delivered once.
    let users = fake.users();
    let mut sent = Vec::new();
    let mut fanned_out = 0;
    for i in 0..300 {
        let topic = format!("v2.users.{}.presence", users[i % users.len()]);
        let (corr, n) = fake.publish(&topic, serde_json::json!({"source": "PURECLOUD", "i": i}));
        if n > 1 {
            fanned_out += 1;
        }
        if n > 0 {
            // Every tenth event arrives twice (as in a rollover overlap): dedup must absorb it.
            if i % 10 == 0 {
                fake.publish_with(
                    &topic,
                    serde_json::json!({"source": "PURECLOUD", "i": i}),
                    corr.clone(),
                );
            }
            sent.push(corr);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    while sent.iter().any(|c| !got.contains_key(c)) {
        let r = target.next_success().await;
        let env: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(env["detail-type"], "v2.users.{id}.presence");
        let corr = env["detail"]["metadata"]["CorrelationId"]
            .as_str()
            .unwrap()
            .to_string();
        *got.entry(corr).or_default() += 1;
    }
    // Let any straggler duplicate arrive, then check none did.
    assert!(
        target.nothing_within(Duration::from_millis(300)).await,
        "an overlap duplicate was delivered"
    );
    assert!(
        got.values().all(|&n| n == 1),
        "duplicates delivered: {got:?}"
    );
    eprintln!(
        "{} events, {fanned_out} reached two sockets during rollover overlap",
        sent.len()
    );

    // The admin API shows the live source.
    let (s, v) = gw.get("/admin/genesys").await;
    assert_eq!(s, 200);
    assert_eq!(v["sources"][0]["source"], "genesys-ws");
    assert!(
        v["sources"][0]["stats"]["rollovers"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert_eq!(v["sources"][0]["stats"]["lost"], 0, "{v}");
    gw.stop().await;
}

#[tokio::test]
async fn genesys_source_config_is_validated() {
    use switchboard_gateway::config::Config;
    let e = Config::from_toml(
        "[[sources]]\nname = \"g\"\ntype = \"genesys-notifications\"\nnotifications = { topics = [\"v2.users.{user}.presence\"] }\n",
        "t.toml",
        ".".into(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("t.toml:1:") && e.contains("[genesys]"), "{e}");
    let e = Config::from_toml(
        "[genesys]\nclient_id = \"x\"\n[[sources]]\nname = \"g\"\ntype = \"genesys-notifications\"\npath = \"/x\"\nnotifications = { topics = [\"a\"] }\n",
        "t.toml",
        ".".into(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sources[0].path"), "{e}");
}
