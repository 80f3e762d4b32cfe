//! Provisioning of the Amazon EventBridge integration against the fake Genesys.

mod fake;

use std::time::Duration;

use fake::{Fake, ORG_ID, Settings};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_genesys::provision::{self, ApplyOptions, AuditEntry, Change, EventBridgeSpec};
use switchboard_genesys::{Client, Error};

fn spec() -> EventBridgeSpec {
    EventBridgeSpec {
        name: "switchboard-cx".into(),
        aws_account_id: "123456789012".into(),
        aws_account_region: "us-east-1".into(),
        event_source_suffix: "cx-gateway-dev".into(),
        event_filter: vec![
            "v2.detail.events.conversation.{id}.customer.start".into(),
            "v2.users.{id}.presence".into(),
        ],
        notes: "managed by switchboard".into(),
        enabled: true,
    }
}

fn options() -> ApplyOptions {
    ApplyOptions {
        poll_interval: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
    }
}

async fn setup() -> (std::sync::Arc<Fake>, Client) {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    (fake, client)
}

fn writes(fake: &Fake) -> Vec<(String, String)> {
    fake.requests()
        .into_iter()
        .filter(|(m, _)| m != "GET")
        .collect()
}

async fn apply(
    client: &Client,
    spec: &EventBridgeSpec,
) -> (provision::ApplyReport, Vec<AuditEntry>) {
    let mut audit = Vec::new();
    let report = provision::apply(client, spec, &options(), &mut |e| audit.push(e))
        .await
        .unwrap();
    (report, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_nothing_and_lists_the_creation() {
    let (fake, client) = setup().await;
    let plan = provision::plan(&client, &spec()).await.unwrap();
    assert_eq!(plan.integration_id, None);
    assert_eq!(
        plan.changes.first(),
        Some(&Change::Create {
            name: "switchboard-cx".into()
        })
    );
    assert_eq!(
        plan.changes.last(),
        Some(&Change::IntendedState {
            from: None,
            to: "ENABLED".into()
        })
    );
    let text = plan.to_string();
    for needle in [
        "+ create integration \"switchboard-cx\"",
        "+ properties.awsAccountId = \"123456789012\"",
        "+ properties.eventFilter = [",
        "~ intendedState: (none) -> ENABLED",
        &format!("partner event source: aws.partner/genesys.com/cloud/{ORG_ID}/cx-gateway-dev"),
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(writes(&fake).is_empty(), "plan wrote: {:?}", writes(&fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_configures_enables_and_is_idempotent() {
    let (fake, client) = setup().await;
    let (report, audit) = apply(&client, &spec()).await;
    assert_eq!(report.reported_state.as_deref(), Some("ACTIVE"));
    assert_eq!(
        report.partner_event_source,
        format!("aws.partner/genesys.com/cloud/{ORG_ID}/cx-gateway-dev")
    );
    assert!(report.aws_next_steps.contains("create-event-bus"));
    let actions: Vec<&str> = audit.iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        [
            "genesys.integration.create",
            "genesys.integration.config",
            "genesys.integration.state"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|a| a.integration_id == report.integration_id)
    );
    let w: Vec<(String, String)> = writes(&fake);
    let id = &report.integration_id;
    assert_eq!(
        w,
        vec![
            ("POST".into(), "/api/v2/integrations".into()),
            (
                "PUT".into(),
                format!("/api/v2/integrations/{id}/config/current")
            ),
            ("PATCH".into(), format!("/api/v2/integrations/{id}")),
        ]
    );
    let cfg = fake.config_of(id).unwrap();
    assert_eq!(cfg["version"], 2);
    assert_eq!(
        cfg["properties"],
        json!({"awsAccountId":"123456789012","awsAccountRegion":"us-east-1","eventSourceSuffix":"cx-gateway-dev",
               "eventFilter":["v2.detail.events.conversation.{id}.customer.start","v2.users.{id}.presence"]})
    );
    assert_eq!(cfg["advanced"], json!({}));
    assert_eq!(cfg["credentials"], json!({}));
    assert_eq!(
        fake.integrations()[0]["integrationType"]["id"],
        "amazon-eventbridge-source"
    );

    // Second apply: nothing to change, no write calls, no audit entries.
    fake.clear_requests();
    let (again, audit) = apply(&client, &spec()).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(audit.is_empty());
    assert!(writes(&fake).is_empty(), "{:?}", writes(&fake));
    assert_eq!(again.integration_id, report.integration_id);
    assert!(
        provision::plan(&client, &spec())
            .await
            .unwrap()
            .to_string()
            .contains("no changes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_property_is_one_put_with_the_current_version() {
    let (fake, client) = setup().await;
    let (first, _) = apply(&client, &spec()).await;
    let mut s = spec();
    s.aws_account_region = "eu-west-1".into();
    // Filter order does not matter; only the region differs.
    s.event_filter.reverse();
    let plan = provision::plan(&client, &s).await.unwrap();
    assert_eq!(
        plan.changes,
        vec![Change::Config {
            field: "properties.awsAccountRegion".into(),
            from: Some(json!("us-east-1")),
            to: json!("eu-west-1")
        }]
    );
    fake.clear_requests();
    let (report, audit) = apply(&client, &s).await;
    assert_eq!(report.changes.len(), 1);
    assert_eq!(audit.len(), 1);
    assert_eq!(writes(&fake).len(), 1);
    let cfg = fake.config_of(&first.integration_id).unwrap();
    assert_eq!(
        (
            cfg["version"].as_i64(),
            cfg["properties"]["awsAccountRegion"].as_str()
        ),
        (Some(3), Some("eu-west-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_config_version_gets_409() {
    let (_fake, client) = setup().await;
    let (report, _) = apply(&client, &spec()).await;
    let path = format!(
        "/api/v2/integrations/{}/config/current",
        report.integration_id
    );
    let body =
        json!({"name":"x","version":1,"properties":{},"advanced":{},"notes":"","credentials":{}});
    let err = client
        .request(Method::PUT, &path, &[], Some(&body))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.api().unwrap().code.as_deref(), Some("conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edit_409_is_re_read_and_retried() {
    let (fake, client) = setup().await;
    let (first, _) = apply(&client, &spec()).await;
    let mut s = spec();
    s.event_source_suffix = "cx-gateway-prod".into();
    fake.concurrent_edit_before_next_put();
    fake.clear_requests();
    let (report, audit) = apply(&client, &s).await;
    let puts = writes(&fake)
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .count();
    assert_eq!(puts, 2, "one 409, one retry with the re-read version");
    assert_eq!(audit.len(), 1);
    assert!(report.partner_event_source.ends_with("/cx-gateway-prod"));
    let cfg = fake.config_of(&first.integration_id).unwrap();
    // Version 2 after the first apply, 3 after the other edit, 4 after ours.
    assert_eq!(cfg["version"], 4);
    assert_eq!(cfg["properties"]["eventSourceSuffix"], "cx-gateway-prod");
    assert_eq!(cfg["notes"], "managed by switchboard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_survives_a_429_storm() {
    let (fake, client) = setup().await;
    let mut cfg = fake.client_config();
    cfg.max_retries = 30;
    let client2 = Client::new(cfg).unwrap();
    drop(client);
    // Every other request of the run is throttled in bursts.
    fake.throttle_next(25);
    let (report, audit) = apply(&client2, &spec()).await;
    assert_eq!(fake.throttled(), 25);
    assert_eq!(report.reported_state.as_deref(), Some("ACTIVE"));
    assert_eq!(audit.len(), 3);
    assert_eq!(
        fake.integrations().len(),
        1,
        "a retried POST must not create twice"
    );
    // And a second run in a new storm still changes nothing.
    fake.throttle_next(10);
    fake.clear_requests();
    let (again, audit) = apply(&client2, &spec()).await;
    assert!(again.changes.is_empty() && audit.is_empty());
    assert!(writes(&fake).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_before_any_write() {
    let (fake, client) = setup().await;
    let mut s = spec();
    s.aws_account_id = "1234".into();
    s.event_source_suffix = "has space".into();
    s.event_filter = vec![
        "v2.users.{id}.nonsense".into(),
        "v2.analytics.queues.{id}.observations".into(),
    ];
    let err = provision::apply(&client, &s, &options(), &mut |_| {})
        .await
        .unwrap_err();
    let Error::Invalid(problems) = &err else {
        panic!("{err}")
    };
    let all = problems.join("\n");
    for needle in [
        "12 digits",
        "event_source_suffix",
        "not in /api/v2/notifications/availabletopics",
        "not available on EventBridge",
    ] {
        assert!(all.contains(needle), "{needle:?} not in {all}");
    }
    assert_eq!(problems.len(), 4, "{all}");
    assert!(writes(&fake).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_error_reports_genesys_message() {
    let (fake, client) = setup().await;
    fake.error_on_enable("Unable to create partner event source: invalid AWS account");
    let err = provision::apply(&client, &spec(), &options(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IntegrationState { .. }), "{err}");
    assert!(err.to_string().contains("invalid AWS account"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_spec_patches_to_disabled_and_does_not_wait() {
    let (fake, client) = setup().await;
    apply(&client, &spec()).await;
    let mut s = spec();
    s.enabled = false;
    let (report, audit) = apply(&client, &s).await;
    assert_eq!(
        report.changes,
        vec![Change::IntendedState {
            from: Some("ENABLED".into()),
            to: "DISABLED".into()
        }]
    );
    assert_eq!(audit[0].action, "genesys.integration.state");
    assert_eq!(report.reported_state, None);
    assert_eq!(fake.integrations()[0]["intendedState"], "DISABLED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_are_ambiguous() {
    let (_fake, client) = setup().await;
    for _ in 0..2 {
        let body = json!({"name": "switchboard-cx", "integrationType": {"id": "amazon-eventbridge-source"}});
        client
            .request(Method::POST, "/api/v2/integrations", &[], Some(&body))
            .await
            .unwrap();
    }
    let err = provision::plan(&client, &spec()).await.unwrap_err();
    assert!(matches!(err, Error::Ambiguous { count: 2, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_lists_transports_and_filters() {
    let (_fake, client) = setup().await;
    let check = |filter: Option<&'static str>, expected: Vec<&'static str>| {
        let client = client.clone();
        async move {
            let got = provision::topics(&client, filter).await.unwrap();
            let ids: Vec<&str> = got.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, expected, "filter {filter:?}");
            got
        }
    };
    let all = check(
        None,
        vec![
            "v2.analytics.queues.{id}.observations",
            "v2.detail.events.conversation.{id}.customer.start",
            "v2.routing.queues.{id}.conversations.calls",
            "v2.users.{id}.presence",
            "v2.users.{id}.routingStatus",
        ],
    )
    .await;
    assert_eq!(all[0].transports, vec!["Websocket".to_string()]);
    assert!(!all[0].eventbridge_eligible());
    assert!(all[3].eventbridge_eligible());
    check(
        Some("USERS"),
        vec!["v2.users.{id}.presence", "v2.users.{id}.routingStatus"],
    )
    .await;
    check(Some("nothing"), vec![]).await;
    let json: Value = serde_json::to_value(&all[1]).unwrap();
    assert_eq!(json["transports"], json!(["EventBridge"]));
}
