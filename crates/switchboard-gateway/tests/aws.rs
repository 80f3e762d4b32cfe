//! The AWS targets and sources end to end against moto (a real AWS SDK, a real emulator on
//! loopback): EventBridge → AWS rule → SQS, SQS and S3 targets, claim-checks, SQS dead-letter
//! queues, the SQS source with poison messages, and EventBridge API-destination calls.
#![cfg(feature = "aws")]

mod common;
#[path = "../../switchboard-aws/tests/moto/mod.rs"]
mod moto;

use std::time::{Duration, Instant};

use common::{SECRET, TestGateway, WAIT, config_with, notification, written_lines};
use serde_json::{Value, json};
use switchboard_aws::AwsClients;

/// Polls a queue until `n` messages arrived (or the deadline), deleting what it reads.
async fn receive_n(
    c: &AwsClients,
    url: &str,
    n: usize,
) -> Vec<switchboard_aws::aws_sdk_sqs::types::Message> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(moto::receive_and_delete(c, url, 1).await);
    }
    out
}

fn body(m: &switchboard_aws::aws_sdk_sqs::types::Message) -> Value {
    serde_json::from_str(m.body().unwrap_or("")).expect("message body is JSON")
}

fn attr(m: &switchboard_aws::aws_sdk_sqs::types::Message, k: &str) -> Option<String> {
    m.message_attributes()
        .and_then(|a| a.get(k))
        .and_then(|v| v.string_value())
        .map(str::to_owned)
}

fn catch_all(target: &str) -> String {
    format!(
        r#"
[[rules]]
name = "all-to-{target}"
[[rules.targets]]
id = "{target}"
arn = "{target}"
retry_policy = {{ maximum_retry_attempts = 5, maximum_event_age_in_seconds = 3600, base_delay_ms = 20, max_delay_ms = 200 }}
"#
    )
}

#[tokio::test]
async fn webhook_to_eventbridge_bus_to_aws_rule_to_sqs_arrives_as_sent() {
    let c = moto::clients().await;
    let (bus, qurl) = moto::bus_to_queue(&c).await;
    let cfg = format!(
        "{}\n{}",
        moto::aws_toml(&moto::url()),
        config_with(&format!(
            "[[targets]]\nname = \"bus\"\ntype = \"eventbridge\"\narn = \"{bus}\"\n{}",
            catch_all("bus")
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        let b = notification(n);
        let (status, resp) = gw.post_signed("/webhooks/genesys", &b).await;
        assert_eq!(status, 202, "{resp}");
        sent.push((resp["id"].as_str().unwrap().to_owned(), b));
    }
    let msgs = receive_n(&c, &qurl, 5).await;
    assert_eq!(
        msgs.len(),
        5,
        "every event reached the queue through the AWS rule"
    );
    for (id, raw) in &sent {
        let (_, stored) = gw.get(&format!("/admin/events/{id}")).await;
        let envelope: Value = match &stored["envelope"] {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            v => v.clone(),
        };
        let raw: Value = serde_json::from_str(raw).unwrap();
        let got = msgs
            .iter()
            .map(body)
            .find(|m| m["detail"]["metadata"]["CorrelationId"] == raw["metadata"]["CorrelationId"])
            .expect("the event is in the queue");
        // What AWS delivered is what we sent: same detail-type, source, time and detail.
        assert_eq!(got["detail-type"], envelope["detail-type"]);
        assert_eq!(got["source"], "genesys.cloud");
        assert_eq!(got["time"], envelope["time"]);
        assert_eq!(got["detail"], envelope["detail"]);
        assert_eq!(got["detail"]["eventBody"], raw["eventBody"]);
        assert_eq!(
            got["detail-type"],
            "v2.detail.events.conversation.{id}.customer.start"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn sqs_targets_standard_and_fifo_carry_the_envelope_and_ids() {
    let c = moto::clients().await;
    let (std_url, std_arn) = moto::queue(&c, &moto::unique("std")).await;
    let fifo_name = format!("{}.fifo", moto::unique("fifo"));
    let fifo_url = c
        .sqs
        .create_queue()
        .queue_name(&fifo_name)
        .attributes(
            switchboard_aws::aws_sdk_sqs::types::QueueAttributeName::FifoQueue,
            "true",
        )
        .send()
        .await
        .expect("CreateQueue fifo")
        .queue_url()
        .unwrap()
        .to_owned();
    let cfg = format!(
        "{}\n{}",
        moto::aws_toml(&moto::url()),
        config_with(&format!(
            r#"
[[targets]]
name = "std"
type = "sqs"
queue = "{std_arn}"

[[targets]]
name = "fifo"
type = "sqs"
queue = "{fifo_url}"
message_group_template = "{{detail.eventBody.conversationId}}"
{}
[[rules.targets]]
id = "fifo"
arn = "fifo"
"#,
            catch_all("std")
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let (status, resp) = gw.post_signed("/webhooks/genesys", &notification(n)).await;
        assert_eq!(status, 202);
        ids.push(resp["id"].as_str().unwrap().to_owned());
    }
    for (url, fifo) in [(&std_url, false), (&fifo_url, true)] {
        let msgs = receive_n(&c, url, 4).await;
        assert_eq!(msgs.len(), 4, "fifo={fifo}");
        let mut got: Vec<String> = msgs
            .iter()
            .map(|m| body(m)["id"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "the envelopes, each once (fifo={fifo})");
        if fifo {
            for m in &msgs {
                let attrs = m.attributes().unwrap();
                use switchboard_aws::aws_sdk_sqs::types::MessageSystemAttributeName as A;
                assert_eq!(
                    attrs.get(&A::MessageGroupId).map(String::as_str),
                    Some("8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"),
                    "group = the conversation id from the template"
                );
                assert_eq!(
                    attrs.get(&A::MessageDeduplicationId).map(String::as_str),
                    body(m)["id"].as_str(),
                    "deduplication id = envelope id"
                );
            }
        }
    }
    gw.stop().await;
}

async fn list_keys(c: &AwsClients, bucket: &str) -> Vec<String> {
    let out =
        c.s3.list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("ListObjectsV2");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

async fn get_text(c: &AwsClients, bucket: &str, key: &str) -> String {
    let o =
        c.s3.get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("GetObject");
    String::from_utf8(o.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn s3_targets_write_one_object_per_event_or_ndjson_windows() {
    let c = moto::clients().await;
    let bucket = moto::unique("bkt");
    c.s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    let cfg = format!(
        "{}\n{}",
        moto::aws_toml(&moto::url()),
        config_with(&format!(
            r#"
[[targets]]
name = "objects"
type = "s3"
bucket = "{bucket}"
key_template = "one/{{detail.eventBody.conversationId}}/{{$id}}.json"

[[targets]]
name = "windows"
type = "s3"
bucket = "{bucket}"
layout = "ndjson"
key_template = "win/{{$yyyy}}/{{$mm}}/{{$dd}}"
window_secs = 1
batch_size = 100
{}
[[rules.targets]]
id = "windows"
arn = "windows"
"#,
            catch_all("objects")
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, resp) = gw.post_signed("/webhooks/genesys", &notification(n)).await;
        assert_eq!(status, 202);
        ids.push(resp["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + WAIT;
    let (mut one, mut win) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let keys = list_keys(&c, &bucket).await;
        one = keys
            .iter()
            .filter(|k| k.starts_with("one/"))
            .cloned()
            .collect();
        win = keys
            .iter()
            .filter(|k| k.starts_with("win/"))
            .cloned()
            .collect();
        let mut lines = 0;
        for k in &win {
            lines += get_text(&c, &bucket, k).await.lines().count();
        }
        if one.len() == 3 && lines == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(one.len(), 3, "{one:?}");
    for id in &ids {
        let key = format!("one/8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f/{id}.json");
        assert!(one.contains(&key), "{key} in {one:?}");
        let v: Value = serde_json::from_str(&get_text(&c, &bucket, &key).await).unwrap();
        assert_eq!(v["id"], id.as_str());
    }
    let mut lines = Vec::new();
    for k in &win {
        assert!(k.ends_with(".ndjson"), "{k}");
        for l in get_text(&c, &bucket, k).await.lines() {
            lines.push(
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    lines.sort();
    ids.sort();
    assert_eq!(lines, ids, "every event in exactly one window object");
    gw.stop().await;
}

#[tokio::test]
async fn events_over_the_limit_are_claim_checked_to_s3_and_fetched_back_intact() {
    let c = moto::clients().await;
    let (bus, qurl) = moto::bus_to_queue(&c).await;
    let bucket = moto::unique("cc");
    c.s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    let cfg = format!(
        "{}\n{}",
        moto::aws_toml(&moto::url()),
        config_with(&format!(
            r#"
[[targets]]
name = "bus"
type = "eventbridge"
arn = "{bus}"
max_request_bytes = 8192
claim_check = {{ store = "s3://{bucket}/large/", summary_fields = ["topicName", "eventBody.conversationId"] }}
{}"#,
            catch_all("bus")
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let mut big: Value = serde_json::from_str(&notification(1)).unwrap();
    big["eventBody"]["transcript"] = Value::String("x".repeat(20_000));
    let big = big.to_string();
    let (status, resp) = gw.post_signed("/webhooks/genesys", &big).await;
    assert_eq!(status, 202);
    let big_id = resp["id"].as_str().unwrap().to_owned();
    let small = notification(2);
    let (status, _) = gw.post_signed("/webhooks/genesys", &small).await;
    assert_eq!(status, 202);

    let msgs = receive_n(&c, &qurl, 2).await;
    assert_eq!(msgs.len(), 2);
    // PutEvents gives every event a new id on the bus, so the stub is found by its pointer.
    let stub = msgs
        .iter()
        .map(body)
        .find(|m| m["detail"].get("claimCheck").is_some())
        .expect("the stub of the large event");
    let other = msgs
        .iter()
        .map(body)
        .find(|m| m["detail"].get("claimCheck").is_none())
        .unwrap();
    assert!(other["detail"]["eventBody"]["mediaType"].is_string());

    let cc = &stub["detail"]["claimCheck"];
    let uri = cc["uri"].as_str().unwrap();
    assert!(uri.starts_with(&format!("s3://{bucket}/large/")), "{uri}");
    assert_eq!(
        stub["detail"]["eventBody"],
        json!({"conversationId": "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}),
        "only the summary fields stay"
    );
    assert!(stub["detail"]["topicName"].is_string());
    assert!(stub.to_string().len() < 2048, "the stub is small");

    let fetched = switchboard_gateway::claim_check::fetch(uri, cc["sha256"].as_str(), Some(&c))
        .await
        .expect("fetch + sha256 verify");
    assert_eq!(fetched.len() as u64, cc["size"].as_u64().unwrap());
    let full: Value = serde_json::from_slice(&fetched).unwrap();
    let raw: Value = serde_json::from_str(&big).unwrap();
    assert_eq!(full["id"], big_id.as_str());
    assert_eq!(
        full["detail"]["eventBody"], raw["eventBody"],
        "the whole event, intact"
    );
    let bad = switchboard_gateway::claim_check::fetch(uri, Some(&"0".repeat(64)), Some(&c)).await;
    assert!(bad.unwrap_err().contains("sha256 mismatch"));
    gw.stop().await;
}

#[tokio::test]
async fn dead_letters_go_to_an_sqs_queue_with_eventbridge_attributes() {
    let c = moto::clients().await;
    let (dlq_url, dlq_arn) = moto::queue(&c, &moto::unique("dlq")).await;
    let fatal = common::TargetServer::start_with(common::Script {
        default: 400,
        ..Default::default()
    })
    .await;
    let flaky = common::TargetServer::start_with(common::Script {
        default: 503,
        ..Default::default()
    })
    .await;
    let cfg = format!(
        "{}\n{}",
        moto::aws_toml(&moto::url()),
        config_with(&format!(
            r#"
[[targets]]
name = "fatal"
type = "http"
url = "{}"

[[targets]]
name = "flaky"
type = "http"
url = "{}"

[[rules]]
name = "r"
[[rules.targets]]
Id = "fatal"
Arn = "fatal"
DeadLetterConfig = {{ Arn = "{dlq_arn}" }}
[[rules.targets]]
Id = "flaky"
Arn = "flaky"
RetryPolicy = {{ MaximumRetryAttempts = 1, MaximumEventAgeInSeconds = 3600 }}
DeadLetterConfig = {{ Arn = "{dlq_url}" }}
"#,
            fatal.url, flaky.url
        ))
    );
    let gw = TestGateway::start(&cfg).await;
    let (status, resp) = gw.post_signed("/webhooks/genesys", &notification(7)).await;
    assert_eq!(status, 202);
    let id = resp["id"].as_str().unwrap();
    let msgs = receive_n(&c, &dlq_url, 2).await;
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert_eq!(body(m)["id"], id, "the body is the event");
        assert_eq!(
            attr(m, "RULE_ARN").as_deref(),
            Some("arn:switchboard:events:local:000000000000:rule/r")
        );
        match attr(m, "TARGET_ARN").as_deref() {
            Some("fatal") => {
                assert_eq!(attr(m, "ERROR_CODE").as_deref(), Some("HTTP_400"));
                assert_eq!(attr(m, "RETRY_ATTEMPTS").as_deref(), Some("0"));
                assert_eq!(attr(m, "EXHAUSTED_RETRY_CONDITION"), None);
            }
            Some("flaky") => {
                assert_eq!(attr(m, "ERROR_CODE").as_deref(), Some("HTTP_503"));
                assert_eq!(attr(m, "RETRY_ATTEMPTS").as_deref(), Some("1"));
                assert_eq!(
                    attr(m, "EXHAUSTED_RETRY_CONDITION").as_deref(),
                    Some("MaximumRetryAttempts")
                );
            }
            other => panic!("unexpected TARGET_ARN {other:?}"),
        }
        assert!(attr(m, "ERROR_MESSAGE").is_some());
    }
    let (_, local) = gw.get("/admin/dlq").await;
    assert_eq!(
        local["items"].as_array().map(Vec::len),
        Some(0),
        "nothing left in the embedded DLQ: {local}"
    );
    gw.stop().await;
}

fn eventbridge_event(n: usize) -> Value {
    let mut ev: Value = serde_json::from_str(include_str!(
        "../../switchboard/assets/events/eventbridge-detail-customer-start.json"
    ))
    .unwrap();
    ev["id"] = Value::String(uuid::Uuid::new_v4().to_string());
    ev["detail"]["eventBody"]["n"] = json!(n);
    ev["detail"]["metadata"]["CorrelationId"] = Value::String(uuid::Uuid::new_v4().to_string());
    ev
}

#[tokio::test]
async fn sqs_source_persists_then_deletes_and_sends_poison_to_its_dlq() {
    let c = moto::clients().await;
    let (src_url, src_arn) = moto::queue(&c, &moto::unique("src")).await;
    let (dlq_url, _) = moto::queue(&c, &moto::unique("srcdlq")).await;
    let mut sent = Vec::new();
    for n in 0..15 {
        let ev = eventbridge_event(n);
        sent.push(ev["id"].as_str().unwrap().to_owned());
        c.sqs
            .send_message()
            .queue_url(&src_url)
            .message_body(ev.to_string())
            .send()
            .await
            .unwrap();
        if n == 3 {
            // EventBridge delivers at least once: the same event twice is absorbed by dedup.
            c.sqs
                .send_message()
                .queue_url(&src_url)
                .message_body(ev.to_string())
                .send()
                .await
                .unwrap();
        }
    }
    for poison in ["not json at all", "[1, 2, 3]"] {
        c.sqs
            .send_message()
            .queue_url(&src_url)
            .message_body(poison)
            .send()
            .await
            .unwrap();
    }
    let cfg = format!(
        r#"{}
[[sources]]
name = "partner-bus"
type = "sqs"
sqs = {{ queue = "{src_arn}", wait_time_secs = 1, dead_letter_queue = "{dlq_url}" }}

[[targets]]
name = "out"
type = "file"
path = "out.jsonl"
{}"#,
        moto::aws_toml(&moto::url()),
        catch_all("out")
    );
    let gw = TestGateway::start(&cfg).await;
    let out = gw.data.join("out.jsonl");
    let deadline = Instant::now() + WAIT;
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = written_lines(&out);
        if lines.len() >= 15 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        lines.len(),
        15,
        "each event once (the resent one deduplicated)"
    );
    let mut got: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(
        got, sent,
        "EventBridge events keep their id through the gateway"
    );

    let poison = receive_n(&c, &dlq_url, 2).await;
    assert_eq!(poison.len(), 2);
    let mut codes: Vec<String> = poison
        .iter()
        .filter_map(|m| attr(m, "ERROR_CODE"))
        .collect();
    codes.sort();
    assert_eq!(codes, ["InvalidJson", "NotAnEvent"]);
    // Everything was deleted from the source queue once persisted (or dead-lettered).
    let deadline = Instant::now() + WAIT;
    loop {
        let a = c
            .sqs
            .get_queue_attributes()
            .queue_url(&src_url)
            .attribute_names(switchboard_aws::aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let count = |k| {
            a.attributes()
                .and_then(|m| m.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        use switchboard_aws::aws_sdk_sqs::types::QueueAttributeName as Q;
        let (visible, in_flight) = (
            count(Q::ApproximateNumberOfMessages),
            count(Q::ApproximateNumberOfMessagesNotVisible),
        );
        if visible == 0 && in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue not emptied: {visible} visible, {in_flight} in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn eventbridge_api_destination_calls_are_accepted_with_api_key_and_basic_auth() {
    // The request an API destination sends: POST, the event as the JSON body, the connection's
    // auth header, EventBridge's user agent.
    let cfg = format!(
        r#"
[[sources]]
name = "apidest-key"
path = "/eventbridge/key"
auth = {{ scheme = "api-key", header = "x-switchboard-key", secrets = ["k-123"] }}

[[sources]]
name = "apidest-basic"
path = "/eventbridge/basic"
auth = {{ scheme = "basic", secrets = ["eventbridge:p@ss"] }}

[[targets]]
name = "out"
type = "file"
path = "out.jsonl"
{}"#,
        catch_all("out")
    );
    let gw = TestGateway::start(&cfg).await;
    let ua = (
        "user-agent".to_owned(),
        "Amazon/EventBridge/ApiDestinations".to_owned(),
    );
    let ct = (
        "content-type".to_owned(),
        "application/json; charset=utf-8".to_owned(),
    );
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("eventbridge:p@ss")
    );
    type Case<'a> = (&'a str, Vec<(String, String)>, u16);
    let cases: Vec<Case> = vec![
        (
            "/eventbridge/key",
            vec![("x-switchboard-key".into(), "k-123".into())],
            202,
        ),
        (
            "/eventbridge/key",
            vec![("x-switchboard-key".into(), "wrong".into())],
            401,
        ),
        ("/eventbridge/key", vec![], 401),
        (
            "/eventbridge/basic",
            vec![("authorization".into(), basic.clone())],
            202,
        ),
        (
            "/eventbridge/basic",
            vec![("authorization".into(), "Basic Zm9vOmJhcg==".into())],
            401,
        ),
    ];
    let mut accepted = Vec::new();
    for (path, auth, want) in cases {
        let ev = eventbridge_event(accepted.len());
        let mut headers = auth.clone();
        headers.push(ua.clone());
        headers.push(ct.clone());
        let (status, resp) = gw.post(path, &headers, ev.to_string()).await;
        assert_eq!(status, want, "{path} {auth:?}: {resp}");
        if want == 202 {
            assert_eq!(resp["id"], ev["id"], "the EventBridge id is kept");
            // EventBridge retries on timeouts: the same call again is a duplicate.
            let (again, resp2) = gw.post(path, &headers, ev.to_string()).await;
            assert_eq!(again, 200, "{resp2}");
            assert_eq!(resp2["duplicate"], true);
            accepted.push(ev);
        } else {
            assert!(
                resp["error"].is_object() || resp["error"].is_string(),
                "JSON error body: {resp}"
            );
        }
    }
    let out = gw.data.join("out.jsonl");
    let deadline = Instant::now() + WAIT;
    loop {
        let n = written_lines(&out).len();
        if n >= accepted.len() {
            assert_eq!(n, accepted.len());
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = SECRET;
    gw.stop().await;
}

#[tokio::test]
async fn sqs_source_keeps_a_slow_batch_invisible_until_it_is_persisted() {
    use switchboard_aws::aws_sdk_sqs::types::QueueAttributeName as Q;
    let c = moto::clients().await;
    let (src_url, _) = moto::queue(&c, &moto::unique("slow")).await;
    let cfg = format!(
        r#"{}
[[sources]]
name = "slow"
type = "sqs"
sqs = {{ queue = "{src_url}", wait_time_secs = 1, visibility_timeout_secs = 4 }}

[[targets]]
name = "out"
type = "file"
path = "out.jsonl"
{}"#,
        moto::aws_toml(&moto::url()),
        catch_all("out")
    );
    let gw = TestGateway::start(&cfg).await;
    // The store stalls (a slow disk): the batch in hand takes longer than its visibility timeout.
    let pause = gw
        .gw
        .as_ref()
        .unwrap()
        .state()
        .store
        .test_pause_writer()
        .await
        .unwrap();
    c.sqs
        .send_message()
        .queue_url(&src_url)
        .message_body(eventbridge_event(1).to_string())
        .send()
        .await
        .unwrap();
    let counts = || async {
        let a = c
            .sqs
            .get_queue_attributes()
            .queue_url(&src_url)
            .attribute_names(Q::All)
            .send()
            .await
            .unwrap();
        let get = |k: Q| {
            a.attributes()
                .and_then(|m| m.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (
            get(Q::ApproximateNumberOfMessages),
            get(Q::ApproximateNumberOfMessagesNotVisible),
        )
    };
    let deadline = Instant::now() + WAIT;
    while counts().await != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "the source never received the message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 2.5 visibility timeouts pass while it is being processed: the heartbeat keeps it hidden,
    // so no other consumer (or replica) gets it meanwhile. (4 s, not 2: the heartbeat extends at
    // half the timeout, and moto, shared by the tests running alongside, must answer within the
    // other half even on a loaded machine.)
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(counts().await, (0, 1), "the message must stay in flight");
    }
    drop(pause);
    let out = gw.data.join("out.jsonl");
    let deadline = Instant::now() + WAIT;
    while written_lines(&out).is_empty() || counts().await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "not persisted and deleted: {:?}",
            counts().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written_lines(&out).len(), 1);
    gw.stop().await;
}
