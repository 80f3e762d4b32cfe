//! `plan` / `apply` against moto: creation from nothing, convergence (a second apply does
//! nothing), targeted updates, target removal, TTL repair and refusal of an incompatible table.

#[path = "moto/mod.rs"]
mod moto;

use std::collections::BTreeMap;

use switchboard_aws::AwsClients;
use switchboard_aws::aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveStatus,
};
use switchboard_aws::aws_sdk_sqs::types::QueueAttributeName;
use switchboard_aws::provision::{
    self, Action, BusSpec, Change, ProvisionSpec, ResourceKind, RuleSpec, TargetSpec,
    TransformerSpec,
};

fn sqs_arn(name: &str) -> String {
    format!("arn:aws:sqs:{}:{}:{name}", moto::REGION, moto::ACCOUNT)
}

fn target(id: &str, queue: &str) -> TargetSpec {
    TargetSpec {
        id: id.into(),
        arn: sqs_arn(queue),
        input: None,
        input_path: None,
        input_transformer: None,
        retry_policy: Some((3, 600)),
        dead_letter_arn: None,
    }
}

struct Names {
    bus: String,
    queue: String,
    fifo: String,
    dlq: String,
    bucket: String,
    table: String,
}

fn names() -> Names {
    Names {
        bus: moto::unique("sb-bus"),
        queue: moto::unique("sb-q"),
        fifo: format!("{}.fifo", moto::unique("sb-f")),
        dlq: moto::unique("sb-dlq"),
        bucket: moto::unique("sb-bucket"),
        table: moto::unique("sb-dedup"),
    }
}

fn full_spec(n: &Names) -> ProvisionSpec {
    let mut t1 = target("t1", &n.queue);
    t1.dead_letter_arn = Some(sqs_arn(&n.dlq));
    let mut t2 = target("t2", &n.queue);
    t2.input_transformer = Some(TransformerSpec {
        paths_map: BTreeMap::from([("conv".into(), "$.detail.eventBody.conversationId".into())]),
        template: r#"{"conversation": <conv>}"#.into(),
    });
    let mut t3 = target("t3", &n.queue);
    t3.input_path = Some("$.detail".into());
    ProvisionSpec {
        bus: Some(BusSpec {
            name: n.bus.clone(),
            event_source_name: None,
        }),
        rules: vec![
            RuleSpec {
                name: "conversations".into(),
                description: Some("conversation events".into()),
                state_enabled: true,
                event_pattern_json: r#"{"source":[{"prefix":"aws.partner/genesys.com"}],"detail-type":["v2.detail.events.conversation.{id}.customer.end"]}"#.into(),
                targets: vec![t1, t2],
            },
            RuleSpec {
                name: "users".into(),
                description: None,
                state_enabled: false,
                event_pattern_json: r#"{"detail-type":[{"prefix":"v2.users."}]}"#.into(),
                targets: vec![t3],
            },
        ],
        dedup_table: Some(n.table.clone()),
        queues: vec![n.queue.clone(), n.fifo.clone()],
        buckets: vec![n.bucket.clone()],
    }
}

/// `(kind, name, action, reasons)` of every change, for whole-plan assertions.
fn summary(changes: &[Change]) -> Vec<(ResourceKind, String, Action, Vec<String>)> {
    changes
        .iter()
        .map(|c| (c.kind, c.name.clone(), c.action, c.reasons.clone()))
        .collect()
}

#[tokio::test]
async fn apply_creates_everything_then_converges_and_updates_only_what_changed() {
    let c = moto::clients().await;
    let n = names();
    let mut spec = full_spec(&n);
    let rule1 = format!("{}/conversations", n.bus);
    let rule2 = format!("{}/users", n.bus);

    let plan = provision::plan(&c, &spec).await.unwrap();
    let created = |kind, name: &str| (kind, name.to_owned(), Action::Create, Vec::<String>::new());
    assert_eq!(
        summary(&plan.changes),
        vec![
            created(ResourceKind::Queue, &n.queue),
            created(ResourceKind::Queue, &n.fifo),
            created(ResourceKind::Queue, &n.dlq),
            created(ResourceKind::Bucket, &n.bucket),
            created(ResourceKind::Table, &n.table),
            created(ResourceKind::Bus, &n.bus),
            created(ResourceKind::Rule, &rule1),
            created(ResourceKind::Rule, &rule2),
        ]
    );
    // Planning wrote nothing.
    assert!(
        c.sqs
            .get_queue_url()
            .queue_name(&n.queue)
            .send()
            .await
            .is_err()
    );

    let done = provision::apply(&c, &spec).await.unwrap();
    assert_eq!(summary(&done), summary(&plan.changes));

    let plan = provision::plan(&c, &spec).await.unwrap();
    assert!(!plan.has_changes(), "{plan}");
    assert_eq!(plan.changes.len(), 8);
    assert!(plan.changes.iter().all(|c| c.action == Action::Unchanged));
    assert!(provision::apply(&c, &spec).await.unwrap().is_empty());

    verify(&c, &n, &spec).await;

    // One pattern and one retry policy change: exactly those two updates.
    spec.rules[0].event_pattern_json =
        r#"{"source":[{"prefix":"aws.partner/genesys.com"}],"detail-type":["v2.detail.events.conversation.{id}.acd.start"]}"#.into();
    spec.rules[1].targets[0].retry_policy = Some((10, 3600));
    let plan = provision::plan(&c, &spec).await.unwrap();
    let pending: Vec<_> = plan.pending().cloned().collect();
    assert_eq!(
        summary(&pending),
        vec![
            (
                ResourceKind::Rule,
                rule1.clone(),
                Action::Update,
                vec!["event pattern differs".to_owned()]
            ),
            (
                ResourceKind::Rule,
                rule2.clone(),
                Action::Update,
                vec!["target t3 retry policy differs".to_owned()]
            ),
        ]
    );
    let text = plan.to_string();
    assert!(
        text.contains(&format!("~ update rule {rule1}: event pattern differs")),
        "{text}"
    );
    assert!(text.ends_with("2 of 8 resources to change"), "{text}");

    let done = provision::apply(&c, &spec).await.unwrap();
    assert_eq!(summary(&done), summary(&pending));
    assert!(!provision::plan(&c, &spec).await.unwrap().has_changes());
    verify(&c, &n, &spec).await;
}

/// Reads the live state back and compares it with the spec.
async fn verify(c: &AwsClients, n: &Names, spec: &ProvisionSpec) {
    c.eventbridge
        .describe_event_bus()
        .name(&n.bus)
        .send()
        .await
        .expect("bus exists");
    for r in &spec.rules {
        let live = c
            .eventbridge
            .describe_rule()
            .name(&r.name)
            .event_bus_name(&n.bus)
            .send()
            .await
            .unwrap();
        let have: serde_json::Value = serde_json::from_str(live.event_pattern().unwrap()).unwrap();
        let want: serde_json::Value = serde_json::from_str(&r.event_pattern_json).unwrap();
        assert_eq!(have, want);
        assert_eq!(
            live.state().map(|s| s.as_str()),
            Some(if r.state_enabled {
                "ENABLED"
            } else {
                "DISABLED"
            })
        );
        let targets = c
            .eventbridge
            .list_targets_by_rule()
            .rule(&r.name)
            .event_bus_name(&n.bus)
            .send()
            .await
            .unwrap();
        let mut ids: Vec<_> = targets
            .targets()
            .iter()
            .map(|t| t.id().to_owned())
            .collect();
        ids.sort();
        let mut want_ids: Vec<_> = r.targets.iter().map(|t| t.id.clone()).collect();
        want_ids.sort();
        assert_eq!(ids, want_ids);
        for want in &r.targets {
            let t = targets
                .targets()
                .iter()
                .find(|t| t.id() == want.id)
                .unwrap();
            assert_eq!(t.arn(), want.arn);
            let rp = t.retry_policy().expect("retry policy stored");
            let (attempts, age) = want.retry_policy.unwrap();
            assert_eq!(rp.maximum_retry_attempts(), Some(attempts as i32));
            assert_eq!(rp.maximum_event_age_in_seconds(), Some(age as i32));
            assert_eq!(
                t.dead_letter_config().and_then(|d| d.arn()),
                want.dead_letter_arn.as_deref()
            );
            assert_eq!(t.input_path(), want.input_path.as_deref());
            assert_eq!(
                t.input_transformer().map(|i| i.input_template()),
                want.input_transformer.as_ref().map(|i| i.template.as_str())
            );
        }
    }
    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(&n.table)
        .send()
        .await
        .unwrap();
    let d = ttl.time_to_live_description().unwrap();
    assert_eq!(d.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(d.attribute_name(), Some("expires_at"));
    for q in [&n.queue, &n.dlq, &n.fifo] {
        let url = c.sqs.get_queue_url().queue_name(q).send().await.unwrap();
        let attrs = c
            .sqs
            .get_queue_attributes()
            .queue_url(url.queue_url().unwrap())
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let fifo = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::FifoQueue))
            .map(String::as_str);
        assert_eq!(fifo == Some("true"), q.ends_with(".fifo"), "{q}: {fifo:?}");
    }
    c.s3.head_bucket()
        .bucket(&n.bucket)
        .send()
        .await
        .expect("bucket exists");

    // EventBridge may send to the target queue and the dead-letter queue.
    for (q, rules) in [
        (&n.queue, vec!["conversations", "users"]),
        (&n.dlq, vec!["conversations"]),
    ] {
        let statement = our_statement(c, q).await.expect("policy statement");
        let want: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "arn:aws:events:{}:{}:rule/{}/{r}",
                    moto::REGION,
                    moto::ACCOUNT,
                    n.bus
                )
            })
            .collect();
        let have = &statement["Condition"]["ArnEquals"]["aws:SourceArn"];
        let have: Vec<String> = match have {
            serde_json::Value::String(s) => vec![s.clone()],
            v => serde_json::from_value(v.clone()).unwrap(),
        };
        assert_eq!(have, want, "{q}");
        assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    }
}

async fn policy(c: &AwsClients, queue: &str) -> Option<serde_json::Value> {
    let url = c
        .sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .unwrap();
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(url.queue_url().unwrap())
        .attribute_names(QueueAttributeName::Policy)
        .send()
        .await
        .unwrap();
    let p = attrs.attributes()?.get(&QueueAttributeName::Policy)?;
    Some(serde_json::from_str(p).unwrap())
}

async fn our_statement(c: &AwsClients, queue: &str) -> Option<serde_json::Value> {
    let p = policy(c, queue).await?;
    p["Statement"]
        .as_array()?
        .iter()
        .find(|s| s["Sid"] == provision::POLICY_SID)
        .cloned()
}

#[tokio::test]
async fn a_queue_policy_gains_our_statement_and_keeps_the_others() {
    let c = moto::clients().await;
    let name = moto::unique("sb-policy");
    let (url, arn) = moto::queue(&c, &name).await;
    let foreign = serde_json::json!({
        "Sid": "someone-else",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{}:root", moto::ACCOUNT)},
        "Action": "sqs:ReceiveMessage",
        "Resource": arn,
    });
    c.sqs
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(
            QueueAttributeName::Policy,
            serde_json::json!({"Version": "2012-10-17", "Statement": [foreign]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let rule = moto::unique("sb-rule");
    let spec = ProvisionSpec {
        queues: vec![name.clone()],
        rules: vec![RuleSpec {
            name: rule.clone(),
            description: None,
            state_enabled: true,
            event_pattern_json: r#"{"source":["genesys.cloud"]}"#.into(),
            targets: vec![target("t", &name)],
        }],
        ..ProvisionSpec::default()
    };
    let plan = provision::plan(&c, &spec).await.unwrap();
    assert_eq!(
        summary(&plan.changes)[0],
        (
            ResourceKind::Queue,
            name.clone(),
            Action::Update,
            vec!["policy does not let the EventBridge rules send".to_owned()]
        )
    );
    provision::apply(&c, &spec).await.unwrap();
    let p = policy(&c, &name).await.unwrap();
    let statements = p["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{p}");
    assert_eq!(statements[0], foreign);
    assert!(!provision::plan(&c, &spec).await.unwrap().has_changes());
}

#[tokio::test]
async fn targets_the_rule_no_longer_lists_are_removed() {
    let c = moto::clients().await;
    let n = names();
    let spec = ProvisionSpec {
        rules: vec![RuleSpec {
            name: moto::unique("sb-rule"),
            description: None,
            state_enabled: true,
            event_pattern_json: r#"{"source":["genesys.cloud"]}"#.into(),
            targets: vec![target("keep", &n.queue), target("drop", &n.queue)],
        }],
        ..ProvisionSpec::default()
    };
    provision::apply(&c, &spec).await.unwrap();
    let mut smaller = spec.clone();
    smaller.rules[0].targets.retain(|t| t.id == "keep");
    let plan = provision::plan(&c, &smaller).await.unwrap();
    let pending: Vec<_> = plan.pending().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].name, format!("default/{}", spec.rules[0].name));
    assert_eq!(
        pending[0].reasons,
        vec!["target drop no longer listed (removed)"]
    );

    provision::apply(&c, &smaller).await.unwrap();
    let live = c
        .eventbridge
        .list_targets_by_rule()
        .rule(&spec.rules[0].name)
        .send()
        .await
        .unwrap();
    let ids: Vec<_> = live.targets().iter().map(|t| t.id()).collect();
    assert_eq!(ids, vec!["keep"]);
    assert!(!provision::plan(&c, &smaller).await.unwrap().has_changes());
}

async fn create_table(c: &AwsClients, name: &str, key: &str) {
    c.dynamodb
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn an_existing_table_without_ttl_gets_it_and_a_wrong_key_is_refused() {
    let c = moto::clients().await;
    let table = moto::unique("sb-nottl");
    create_table(&c, &table, "pk").await;
    let spec = ProvisionSpec {
        dedup_table: Some(table.clone()),
        ..ProvisionSpec::default()
    };
    let plan = provision::plan(&c, &spec).await.unwrap();
    assert_eq!(
        summary(&plan.changes),
        vec![(
            ResourceKind::Table,
            table.clone(),
            Action::Update,
            vec!["TTL on expires_at disabled".to_owned()]
        )]
    );
    provision::apply(&c, &spec).await.unwrap();
    assert!(!provision::plan(&c, &spec).await.unwrap().has_changes());

    let wrong = moto::unique("sb-wrongkey");
    create_table(&c, &wrong, "id").await;
    let e = provision::plan(
        &c,
        &ProvisionSpec {
            dedup_table: Some(wrong),
            ..ProvisionSpec::default()
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("another key schema"), "{e}");
}
