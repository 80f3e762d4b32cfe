//! AWS at scale, against moto: PutEvents partial failures and broken calls injected by a proxy,
//! two replicas sharing one DynamoDB dedup table, the owner-token re-claim, and the batching
//! efficiency of the EventBridge target with a 10,000-event backlog.
#![cfg(feature = "aws")]

mod awsproxy;
mod common;
#[path = "../../switchboard-aws/tests/moto/mod.rs"]
mod moto;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use awsproxy::{CallFault, Proxy};
use common::{TestGateway, WAIT, config_with};
use futures::StreamExt;
use serde_json::Value;
use switchboard_aws::AwsClients;
use switchboard_aws::dynamo::{Claim, DynamoDedup};

fn aws_toml(endpoint: &str, timeout_secs: u64, sdk_attempts: u32) -> String {
    format!(
        "[aws]\nregion = \"{}\"\nendpoint_url = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\ntimeout_secs = {timeout_secs}\nsdk_max_attempts = {sdk_attempts}\n",
        moto::REGION
    )
}

fn event(n: usize, fault: Option<String>) -> String {
    let mut v: Value = serde_json::from_str(&common::notification(n)).unwrap();
    if let Some(f) = fault {
        v["eventBody"]["fault"] = Value::String(f);
    }
    v.to_string()
}

fn correlation(v: &Value) -> Option<String> {
    v["detail"]["metadata"]["CorrelationId"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn putevents_faults_lose_nothing_and_only_non_retryable_entries_are_dead_lettered() {
    let c = moto::clients().await;
    let (bus, qurl) = moto::bus_to_queue(&c).await;
    let proxy = Proxy::start(moto::url(), true).await;
    proxy.fault_call(2, CallFault::Http500);
    proxy.fault_call(3, CallFault::Hang(Duration::from_secs(3)));
    proxy.fault_call(5, CallFault::ForwardThenHang(Duration::from_secs(3)));
    let cfg = format!(
        "{}\n{}",
        // A 2 s attempt timeout: the 3 s hangs still time out, and a moto slowed by the test
        // running alongside does not add a whole-call timeout the retry count below forbids.
        aws_toml(&proxy.url, 2, 1),
        config_with(&format!(
            r#"
[[targets]]
name = "bus"
type = "eventbridge"
arn = "{bus}"
batch_size = 20
concurrency = 2

[[rules]]
name = "all"
[[rules.targets]]
id = "bus"
arn = "bus"
retry_policy = {{ maximum_retry_attempts = 20, maximum_event_age_in_seconds = 3600, base_delay_ms = 20, max_delay_ms = 300 }}
"#
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let mut expected = HashSet::new();
    let mut malformed = HashSet::new();
    for n in 0..60 {
        let fault = match n % 10 {
            1 => Some(format!("throttle-once:{n}")),
            2 => Some(format!("internal-once:{n}")),
            3 => Some("malformed".to_owned()),
            _ => None,
        };
        let body = event(n, fault);
        let corr = serde_json::from_str::<Value>(&body).unwrap()["metadata"]["CorrelationId"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, resp) = gw.post_signed("/webhooks/genesys", &body).await;
        assert_eq!(status, 202, "{resp}");
        if n % 10 == 3 {
            malformed.insert(resp["id"].as_str().unwrap().to_owned());
        } else {
            expected.insert(corr);
        }
    }

    // Everything retryable arrives (some twice: a call whose response was lost is resent)...
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < expected.len() && Instant::now() < deadline {
        for m in moto::drain(&c, &qurl).await {
            let v: Value = serde_json::from_str(m.body().unwrap_or("")).unwrap();
            *seen.entry(correlation(&v).unwrap()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        got, expected,
        "nothing retryable is lost, nothing else arrives"
    );
    // ...and the non-retryable entries are in the DLQ, at once, with their code.
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let (_, dlq) = gw.get("/admin/dlq?limit=100").await;
        let items = dlq["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= malformed.len() || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead: HashSet<String> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        dead, malformed,
        "exactly the malformed entries were dead-lettered"
    );
    for l in &letters {
        assert_eq!(l["error_code"], "MalformedDetail", "{l}");
        // Dead-lettered on the code, not by running out of retries (an entry may have been in
        // a call that failed as a whole first: those 3 faults are its only retries).
        assert!(l["exhausted_condition"].is_null(), "{l}");
        assert!(l["retry_attempts"].as_u64().unwrap() <= 3, "{l}");
    }
    let stats = proxy.stats();
    assert!(stats.injected["ThrottlingException"] >= 6, "{stats:?}");
    assert!(stats.injected["InternalFailure"] >= 6, "{stats:?}");
    let dups: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "faults: {} PutEvents calls, injected {:?}, {} duplicate deliveries on the bus (lost responses)",
        stats.calls, stats.injected, dups
    );
    gw.stop().await;
}

async fn dedup_table(c: &AwsClients) -> String {
    use switchboard_aws::aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let table = moto::unique("dedup");
    c.dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable");
    table
}

#[tokio::test]
async fn a_replica_that_crashed_after_claiming_reclaims_its_own_key() {
    let c = moto::clients().await;
    let table = dedup_table(&c).await;
    let lease = Duration::from_secs(1);
    let a = DynamoDedup::new(c.dynamodb.clone(), &table, "replica-a", lease);
    let b = DynamoDedup::new(c.dynamodb.clone(), &table, "replica-b", lease);
    assert_eq!(a.claim("k1", "id-1").await.unwrap(), Claim::New);
    // `a` crashes here. B must not drop the event as a duplicate: it is told to retry.
    assert_eq!(b.claim("k1", "id-2").await.unwrap(), Claim::Busy);
    // `a` restarts (same owner token) and gets its own pending key back.
    let a2 = DynamoDedup::new(c.dynamodb.clone(), &table, "replica-a", lease);
    assert_eq!(a2.claim("k1", "id-1").await.unwrap(), Claim::New);
    assert!(
        a2.commit("k1", "id-1", Duration::from_secs(3600))
            .await
            .unwrap()
    );
    assert_eq!(
        b.claim("k1", "id-3").await.unwrap(),
        Claim::Duplicate {
            original_id: "id-1".into()
        }
    );
    assert_eq!(
        a2.claim("k1", "id-4").await.unwrap(),
        Claim::Duplicate {
            original_id: "id-1".into()
        },
        "a committed key is a duplicate for its owner too"
    );
    // A replica that never comes back: its lease runs out and the key is free again. The lease
    // is compared with `expires_at` in whole seconds, so wait until it is strictly in the past.
    assert_eq!(a.claim("k2", "id-5").await.unwrap(), Claim::New);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match b.claim("k2", "id-6").await.unwrap() {
            Claim::New => break,
            Claim::Busy if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Releasing a pending claim (the store refused the event) frees it at once.
    assert_eq!(a.claim("k3", "id-7").await.unwrap(), Claim::New);
    a.release("k3").await.unwrap();
    assert_eq!(b.claim("k3", "id-8").await.unwrap(), Claim::New);
}

#[tokio::test]
async fn two_replicas_sharing_dynamodb_deliver_each_of_1000_events_exactly_once() {
    let c = moto::clients().await;
    let table = dedup_table(&c).await;
    let serial = Proxy::serializing(moto::url()).await;
    let cfg = format!(
        "{}[aws.endpoints]\ndynamodb = \"{}\"\n{}",
        aws_toml(&moto::url(), 5, 2),
        serial.url,
        config_with(&format!(
            r#"
[dedup]
backend = "dynamodb"
table = "{table}"
lease_secs = 30

[[targets]]
name = "out"
type = "file"
path = "out.jsonl"

[[rules]]
name = "all"
[[rules.targets]]
id = "out"
arn = "out"
"#
        ))
    );
    let r1 = TestGateway::start(&cfg).await;
    let r2 = TestGateway::start(&cfg).await;
    let owners: HashSet<String> = [&r1, &r2]
        .iter()
        .map(|g| std::fs::read_to_string(g.data.join("replica-id")).unwrap())
        .collect();
    assert_eq!(owners.len(), 2, "each replica has its own owner token");

    const N: usize = 1000;
    let bodies: Vec<String> = (0..N).map(common::notification).collect();
    // Each event to both replicas at once; a 503 (the other replica holds the claim) is retried
    // as Genesys would.
    let results: Vec<(u16, u16)> = futures::stream::iter(bodies.iter())
        .map(|b| async {
            let send = |g: &TestGateway| {
                let b = b.clone();
                let g = g.clone_handle();
                async move {
                    for _ in 0..200 {
                        let (s, _) = g.post_signed("/webhooks/genesys", &b).await;
                        if s != 503 {
                            return s;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    503
                }
            };
            tokio::join!(send(&r1), send(&r2))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut firsts = 0;
    for (a, b) in &results {
        let mut pair = [*a, *b];
        pair.sort();
        assert_eq!(
            pair,
            [200, 202],
            "one replica stored it, the other saw a duplicate"
        );
        firsts += 1;
    }
    assert_eq!(firsts, N);

    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = loop {
        let mut ids = Vec::new();
        for g in [&r1, &r2] {
            for l in common::written_lines(&g.data.join("out.jsonl")) {
                let v: Value = serde_json::from_str(&l).unwrap();
                ids.push(
                    v["detail"]["metadata"]["CorrelationId"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        if ids.len() >= N || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), N, "delivered exactly N times in total");
    assert_eq!(unique.len(), N, "each event once");
    r1.stop().await;
    r2.stop().await;
}

/// Builds a backlog of `bodies` behind a closed proxy, opens it, waits until the target's queue
/// is empty, and returns what the proxy measured.
async fn drain_backlog(
    bodies: Vec<String>,
    max_request_bytes: usize,
    batch_size: usize,
) -> awsproxy::Stats {
    let c = moto::clients().await;
    let bus = moto::unique("bbus");
    c.eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();
    // Held closed until the backlog is built.
    let proxy = Proxy::start(moto::url(), false).await;
    let cfg = format!(
        "{}\n{}",
        aws_toml(&proxy.url, 30, 2),
        config_with(&format!(
            r#"
[store]
queue_capacity = 20000

[[targets]]
name = "bus"
type = "eventbridge"
arn = "{bus}"
max_request_bytes = {max_request_bytes}
batch_size = {batch_size}
concurrency = 4

[[rules]]
name = "all"
[[rules.targets]]
id = "bus"
arn = "bus"
"#
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let n = bodies.len();
    let statuses: Vec<u16> = futures::stream::iter(bodies)
        .map(|b| {
            let g = gw.clone_handle();
            async move { g.post_signed("/webhooks/genesys", &b).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 202));
    let depth = |v: &Value| v["targets"][0]["queue_depth"].as_u64().unwrap_or(0);
    let (_, t) = gw.get("/admin/targets").await;
    assert!(depth(&t) as usize > n * 9 / 10, "a backlog built up: {t}");
    proxy.open();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, t) = gw.get("/admin/targets").await;
        if depth(&t) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backlog not drained: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
    let s = proxy.stats();
    eprintln!(
        "batching: {} entries in {} PutEvents calls = {:.2} entries/call; largest request {} bytes (limit {max_request_bytes}), most entries in a call {}",
        s.entries,
        s.calls,
        s.entries as f64 / s.calls as f64,
        s.max_request_bytes,
        s.max_entries
    );
    assert_eq!(s.entries, n as u64, "each event sent once (no faults here)");
    s
}

#[tokio::test]
async fn eventbridge_batches_average_at_least_9_5_entries_per_call_from_a_10000_backlog() {
    let bodies = (0..10_000).map(|n| event(n, None)).collect();
    let s = drain_backlog(bodies, 1024 * 1024, 500).await;
    let avg = s.entries as f64 / s.calls as f64;
    assert!(avg >= 9.5, "average {avg:.2} entries per call");
    assert!(s.max_entries <= 10);
    assert!(s.max_request_bytes <= 1024 * 1024);
}

#[tokio::test]
async fn eventbridge_requests_stay_under_a_256kb_limit_with_large_events() {
    let bodies = (0..300)
        .map(|n| {
            let mut v: Value = serde_json::from_str(&event(n, None)).unwrap();
            v["eventBody"]["notes"] = Value::String("n".repeat(40_000));
            v.to_string()
        })
        .collect();
    let s = drain_backlog(bodies, 262_144, 300).await;
    assert!(s.max_request_bytes <= 262_144, "{s:?}");
    // ~40.5 KB entries: 6 fit under 256 KiB, 7 do not; calls are as full as the limit allows.
    assert_eq!(s.max_entries, 6, "{s:?}");
    assert!(s.entries as f64 / s.calls as f64 >= 5.5, "{s:?}");
}
