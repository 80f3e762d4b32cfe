//! Shared by every test that talks to AWS: where moto is, unique resource names, clients, and the
//! `[aws]` configuration text pointing at it.
//!
//! moto is started by `scripts/test.sh` (or `eval "$(scripts/moto.sh start)"`), which exports
//! `SWITCHBOARD_MOTO_URL`. A test run without it fails with that instruction instead of skipping:
//! an AWS test that silently passes without AWS would prove nothing.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// moto's base URL.
pub fn url() -> String {
    match std::env::var("SWITCHBOARD_MOTO_URL") {
        Ok(u) if u.starts_with("http://127.0.0.1:") || u.starts_with("http://[::1]:") => u,
        Ok(u) => panic!("SWITCHBOARD_MOTO_URL={u}: tests only talk to loopback"),
        Err(_) => panic!(
            "SWITCHBOARD_MOTO_URL is not set: run scripts/test.sh, or start moto with \
             `eval \"$(scripts/moto.sh start)\"` first"
        ),
    }
}

/// A resource name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Region used against moto.
pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// SDK settings for moto (static test credentials, so nothing is read from the environment).
pub fn settings() -> switchboard_aws::AwsSettings {
    let mut s = switchboard_aws::AwsSettings::new();
    s.region = Some(REGION.into());
    s.endpoint_url = Some(url());
    s.static_credentials = Some(("testing".into(), "testing".into()));
    s.attempt_timeout = std::time::Duration::from_secs(10);
    s
}

/// Clients for moto.
pub async fn clients() -> switchboard_aws::AwsClients {
    switchboard_aws::AwsClients::new(&settings()).await
}

/// The `[aws]` table for a gateway configuration (endpoint overridable, e.g. through a proxy).
pub fn aws_toml(endpoint: &str) -> String {
    format!(
        "[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\ntimeout_secs = 5\n"
    )
}

/// Creates a standard queue and returns (url, arn).
pub async fn queue(c: &switchboard_aws::AwsClients, name: &str) -> (String, String) {
    let out = c
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("CreateQueue");
    let url = out.queue_url().expect("queue url").to_owned();
    (url, format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"))
}

/// One ReceiveMessage (up to 10, every message and system attribute, waiting up to
/// `wait_secs`), deleting what it got.
pub async fn receive_and_delete(
    c: &switchboard_aws::AwsClients,
    url: &str,
    wait_secs: i32,
) -> Vec<switchboard_aws::aws_sdk_sqs::types::Message> {
    let r = c
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_secs)
        .message_attribute_names("All")
        .message_system_attribute_names(
            switchboard_aws::aws_sdk_sqs::types::MessageSystemAttributeName::All,
        )
        .send()
        .await
        .expect("ReceiveMessage");
    for m in r.messages() {
        c.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .send()
            .await
            .expect("DeleteMessage");
    }
    r.messages().to_vec()
}

/// Receives every message currently in a queue (loops until an empty receive).
pub async fn drain(
    c: &switchboard_aws::AwsClients,
    url: &str,
) -> Vec<switchboard_aws::aws_sdk_sqs::types::Message> {
    let mut out = Vec::new();
    loop {
        let msgs = receive_and_delete(c, url, 0).await;
        if msgs.is_empty() {
            return out;
        }
        out.extend(msgs);
    }
}

/// A new bus with a rule sending everything from `genesys.cloud` to a new queue; (bus, queue url).
pub async fn bus_to_queue(c: &switchboard_aws::AwsClients) -> (String, String) {
    let bus = unique("bus");
    c.eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("CreateEventBus");
    let (qurl, qarn) = queue(c, &unique("busq")).await;
    c.eventbridge
        .put_rule()
        .name("all-genesys")
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["genesys.cloud"]}"#)
        .send()
        .await
        .expect("PutRule");
    c.eventbridge
        .put_targets()
        .rule("all-genesys")
        .event_bus_name(&bus)
        .targets(
            switchboard_aws::aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(qarn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
    (bus, qurl)
}
