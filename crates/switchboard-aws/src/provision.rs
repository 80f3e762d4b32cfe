//! `switchboard aws plan|apply`: the AWS side of a deployment as code.
//!
//! A [`ProvisionSpec`] is the desired state, as plain data: SQS queues, S3 buckets, the DynamoDB
//! dedup table, a custom event bus and the rules on it with their targets. [`plan`] reads the live
//! state and says, per resource, whether it would be created, updated (and why) or left alone;
//! [`apply`] makes a fresh plan and performs exactly its steps, so running it twice changes nothing
//! the second time.
//!
//! Queues that rules send to (as a target or a dead-letter queue) get a queue-policy statement
//! (Sid [`POLICY_SID`]) letting exactly those rules send; other statements are kept.
//!
//! Nothing is ever deleted, with one exception: targets of a managed rule whose ids the rule no
//! longer lists are removed, because a rule's target list is only meaningful as a whole. Queues,
//! buckets, tables, buses and rules that the spec stops naming are left in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_eventbridge::types::{
    DeadLetterConfig, InputTransformer, RetryPolicy, RuleState, Target,
};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use crate::dynamo::{ATTR_EXPIRES_AT, ATTR_PK};
use crate::{AwsClients, AwsError, parse_arn};

/// How long `apply` waits for a new DynamoDB table to become ACTIVE before enabling its TTL.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// The desired AWS state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionSpec {
    /// The custom event bus the rules live on; `None` = the account's `default` bus.
    pub bus: Option<BusSpec>,
    /// Rules on that bus.
    pub rules: Vec<RuleSpec>,
    /// DynamoDB dedup table (hash key `pk`, TTL on `expires_at`).
    pub dedup_table: Option<String>,
    /// SQS queue names; a `.fifo` suffix makes a FIFO queue. Dead-letter queues named by rule
    /// targets are added to these automatically.
    pub queues: Vec<String>,
    /// S3 bucket names.
    pub buckets: Vec<String>,
}

/// A custom event bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusSpec {
    /// Bus name. For a partner bus it must equal `event_source_name`.
    pub name: String,
    /// Partner event source to associate at creation (Genesys:
    /// `aws.partner/genesys.com/cloud/<org>/<name>`).
    pub event_source_name: Option<String>,
}

/// One rule, in the shape of `PutRule` + `PutTargets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Rule name.
    pub name: String,
    /// Free text (`None` = none).
    pub description: Option<String>,
    /// `ENABLED` when true, `DISABLED` otherwise.
    pub state_enabled: bool,
    /// The event pattern as JSON text; compared with the live one as parsed JSON.
    pub event_pattern_json: String,
    /// Targets (at most five).
    pub targets: Vec<TargetSpec>,
}

/// One rule target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Id unique within the rule.
    pub id: String,
    /// Target ARN.
    pub arn: String,
    /// Constant JSON sent instead of the event.
    pub input: Option<String>,
    /// JSONPath selecting part of the event.
    pub input_path: Option<String>,
    /// Input transformer.
    pub input_transformer: Option<TransformerSpec>,
    /// `(MaximumRetryAttempts, MaximumEventAgeInSeconds)`; `None` = AWS's defaults, not compared.
    pub retry_policy: Option<(u32, u32)>,
    /// SQS dead-letter queue ARN (standard queue).
    pub dead_letter_arn: Option<String>,
}

/// `InputTransformer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformerSpec {
    /// `InputPathsMap`: variable → JSONPath.
    pub paths_map: BTreeMap<String, String>,
    /// `InputTemplate`.
    pub template: String,
}

/// The kind of a planned resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// SQS queue.
    Queue,
    /// S3 bucket.
    Bucket,
    /// DynamoDB dedup table.
    Table,
    /// EventBridge event bus.
    Bus,
    /// EventBridge rule, with its targets.
    Rule,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Bucket => "bucket",
            ResourceKind::Table => "table",
            ResourceKind::Bus => "event bus",
            ResourceKind::Rule => "rule",
        })
    }
}

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Missing: created.
    Create,
    /// Present but different: updated (see the change's reasons).
    Update,
    /// As desired.
    Unchanged,
}

/// One step `apply` takes; private so a [`Change`] can only come from [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    CreateQueue { fifo: bool, policy: Option<String> },
    SetQueuePolicy { policy: String },
    CreateBucket,
    CreateTable,
    EnableTtl,
    CreateBus { event_source_name: Option<String> },
    PutRule,
    PutTargets { ids: Vec<String> },
    RemoveTargets { ids: Vec<String> },
}

/// One resource of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Kind of resource.
    pub kind: ResourceKind,
    /// Its name (`bus/rule` for rules).
    pub name: String,
    /// What happens to it.
    pub action: Action,
    /// Why, for updates (e.g. `event pattern differs`, `target t1 retry policy differs`).
    pub reasons: Vec<String>,
    steps: Vec<Step>,
}

impl Change {
    fn new(kind: ResourceKind, name: impl Into<String>) -> Self {
        Change {
            kind,
            name: name.into(),
            action: Action::Unchanged,
            reasons: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn create(mut self, step: Step) -> Self {
        self.action = Action::Create;
        self.steps.push(step);
        self
    }

    fn update(&mut self, reason: impl Into<String>, step: Step) {
        if self.action == Action::Unchanged {
            self.action = Action::Update;
        }
        self.reasons.push(reason.into());
        if !self.steps.contains(&step) {
            self.steps.push(step);
        }
    }

    /// Whether `apply` would do something to this resource.
    pub fn is_pending(&self) -> bool {
        self.action != Action::Unchanged
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Create => write!(f, "+ create {} {}", self.kind, self.name),
            Action::Update => write!(
                f,
                "~ update {} {}: {}",
                self.kind,
                self.name,
                self.reasons.join("; ")
            ),
            Action::Unchanged => write!(f, "= {} {}", self.kind, self.name),
        }
    }
}

/// Every managed resource and what `apply` would do to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In apply order: queues, buckets, table, bus, rules.
    pub changes: Vec<Change>,
}

impl Plan {
    /// The changes `apply` would make.
    pub fn pending(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.is_pending())
    }

    /// Whether `apply` would change anything.
    pub fn has_changes(&self) -> bool {
        self.pending().next().is_some()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            writeln!(f, "  {c}")?;
        }
        let n = self.pending().count();
        if n == 0 {
            write!(f, "no changes: {} resources up to date", self.changes.len())
        } else {
            write!(f, "{n} of {} resources to change", self.changes.len())
        }
    }
}

impl ProvisionSpec {
    /// The bus the rules live on.
    pub fn bus_name(&self) -> &str {
        self.bus.as_ref().map_or("default", |b| b.name.as_str())
    }

    /// Every queue to ensure: the listed ones, then the dead-letter queues rule targets name,
    /// without duplicates.
    pub fn all_queues(&self) -> Result<Vec<(String, bool)>, AwsError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for q in &self.queues {
            let name = queue_name(q)?;
            if seen.insert(name.clone()) {
                let fifo = name.ends_with(".fifo");
                out.push((name, fifo));
            }
        }
        for t in self.rules.iter().flat_map(|r| &r.targets) {
            let Some(dlq) = &t.dead_letter_arn else {
                continue;
            };
            let name = queue_name(dlq)?;
            if name.ends_with(".fifo") {
                return Err(AwsError::Invalid(format!(
                    "target {}: dead-letter queue {dlq:?} is FIFO; EventBridge needs a standard queue",
                    t.id
                )));
            }
            if seen.insert(name.clone()) {
                out.push((name, false));
            }
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), AwsError> {
        if let Some(b) = &self.bus {
            if b.name == "default" && b.event_source_name.is_some() {
                return Err(AwsError::Invalid(
                    "the default bus cannot be associated with a partner event source".into(),
                ));
            }
            if let Some(src) = &b.event_source_name
                && src != &b.name
            {
                return Err(AwsError::Invalid(format!(
                    "bus {:?}: a partner event bus must be named like its event source {src:?}",
                    b.name
                )));
            }
        }
        let mut names = BTreeSet::new();
        for r in &self.rules {
            if !names.insert(r.name.as_str()) {
                return Err(AwsError::Invalid(format!("duplicate rule {:?}", r.name)));
            }
            parse_pattern(&r.name, &r.event_pattern_json)?;
            let mut ids = BTreeSet::new();
            for t in &r.targets {
                if !ids.insert(t.id.as_str()) {
                    return Err(AwsError::Invalid(format!(
                        "rule {}: duplicate target id {:?}",
                        r.name, t.id
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Sid of the queue-policy statement `apply` owns; other statements are left alone.
pub const POLICY_SID: &str = "switchboard-eventbridge";

impl ProvisionSpec {
    /// The ARN of a rule of this spec, in the region and account of `like` (an ARN).
    fn rule_arn(&self, rule: &str, like: &crate::Arn<'_>) -> String {
        let path = match self.bus_name() {
            "default" => rule.to_owned(),
            bus => format!("{bus}/{rule}"),
        };
        format!(
            "arn:{}:events:{}:{}:rule/{path}",
            like.partition, like.region, like.account
        )
    }

    /// Queue name → (queue ARN, ARNs of the rules that send to it as a target or dead-letter
    /// queue). EventBridge can only deliver there when the queue policy allows those rules.
    pub fn queue_senders(&self) -> BTreeMap<String, (String, BTreeSet<String>)> {
        let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
        for r in &self.rules {
            for t in &r.targets {
                for arn in std::iter::once(&t.arn).chain(&t.dead_letter_arn) {
                    let Some(a) = parse_arn(arn).filter(|a| a.service == "sqs") else {
                        continue;
                    };
                    out.entry(a.resource.to_owned())
                        .or_insert_with(|| (arn.clone(), BTreeSet::new()))
                        .1
                        .insert(self.rule_arn(&r.name, &a));
                }
            }
        }
        out
    }
}

fn policy_statement(queue_arn: &str, rules: &BTreeSet<String>) -> Value {
    serde_json::json!({
        "Sid": POLICY_SID,
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rules.iter().collect::<Vec<_>>()}},
    })
}

/// IAM answers a one-element list as the bare element; compare in that form.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 1 => normalize(&a[0]),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        v => v.clone(),
    }
}

/// The live policy with our statement put in, and why it had to change (`None` = it did not).
/// A live policy that is not a JSON object is refused rather than overwritten.
fn merge_policy(live: Option<&str>, want: &Value) -> Result<(String, Option<String>), String> {
    let mut doc = match live.filter(|p| !p.trim().is_empty()) {
        None => serde_json::json!({"Version": "2012-10-17", "Statement": []}),
        Some(p) => serde_json::from_str::<Value>(p)
            .ok()
            .filter(Value::is_object)
            .ok_or("the live queue policy is not a JSON object")?,
    };
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    };
    let ours = statements
        .iter()
        .position(|s| s.get("Sid").and_then(Value::as_str) == Some(POLICY_SID));
    let reason = match ours {
        Some(i) if normalize(&statements[i]) == normalize(want) => None,
        Some(_) => Some("policy statement for EventBridge rules differs".to_owned()),
        None => Some("policy does not let the EventBridge rules send".to_owned()),
    };
    let mut statements: Vec<Value> = statements
        .into_iter()
        .filter(|s| s.get("Sid").and_then(Value::as_str) != Some(POLICY_SID))
        .collect();
    statements.push(want.clone());
    if let Some(o) = doc.as_object_mut() {
        o.insert("Statement".into(), Value::Array(statements));
    }
    Ok((doc.to_string(), reason))
}

/// The queue name in a queue name, ARN or URL.
pub fn queue_name(queue: &str) -> Result<String, AwsError> {
    let name = if queue.starts_with("https://") || queue.starts_with("http://") {
        queue.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    } else if queue.starts_with("arn:") {
        match parse_arn(queue) {
            Some(a) if a.service == "sqs" => a.resource,
            _ => "",
        }
    } else {
        queue
    };
    if name.is_empty() || name.contains(['/', ':']) {
        return Err(AwsError::Invalid(format!(
            "{queue:?} is not an SQS queue name, ARN or URL"
        )));
    }
    Ok(name.to_owned())
}

fn parse_pattern(rule: &str, json: &str) -> Result<Value, AwsError> {
    serde_json::from_str(json)
        .map_err(|e| AwsError::Invalid(format!("rule {rule}: event pattern is not JSON: {e}")))
}

fn is_code<E>(e: &aws_sdk_sqs::error::SdkError<E>, codes: &[&str]) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| codes.contains(&c))
}

/// Reads the live state and compares it with `spec`. Makes only read calls.
pub async fn plan(c: &AwsClients, spec: &ProvisionSpec) -> Result<Plan, AwsError> {
    spec.validate()?;
    let mut changes = Vec::new();
    let senders = spec.queue_senders();
    for (name, fifo) in spec.all_queues()? {
        let want = senders.get(&name);
        changes.push(plan_queue(c, &name, fifo, want).await?);
    }
    let mut buckets = BTreeSet::new();
    for b in &spec.buckets {
        if buckets.insert(b.as_str()) {
            changes.push(plan_bucket(c, b).await?);
        }
    }
    if let Some(t) = &spec.dedup_table {
        changes.push(plan_table(c, t).await?);
    }
    let mut bus_exists = true;
    if let Some(b) = &spec.bus
        && b.name != "default"
    {
        let ch = plan_bus(c, b).await?;
        bus_exists = ch.action != Action::Create;
        changes.push(ch);
    }
    for r in &spec.rules {
        changes.push(plan_rule(c, spec.bus_name(), r, bus_exists).await?);
    }
    Ok(Plan { changes })
}

async fn plan_queue(
    c: &AwsClients,
    name: &str,
    fifo: bool,
    senders: Option<&(String, BTreeSet<String>)>,
) -> Result<Change, AwsError> {
    let mut ch = Change::new(ResourceKind::Queue, name);
    let want = senders.map(|(arn, rules)| policy_statement(arn, rules));
    match c.sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => {
            let Some(want) = want else {
                return Ok(ch);
            };
            let url = out.queue_url().unwrap_or_default();
            let attrs = c
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::Policy)
                .send()
                .await
                .map_err(|e| AwsError::call("GetQueueAttributes", &e))?;
            let live = attrs
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::Policy))
                .map(String::as_str);
            let (merged, reason) = merge_policy(live, &want)
                .map_err(|e| AwsError::Invalid(format!("queue {name}: {e}")))?;
            if let Some(reason) = reason {
                ch.update(reason, Step::SetQueuePolicy { policy: merged });
            }
            Ok(ch)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist())
                || is_code(
                    &e,
                    &[
                        "AWS.SimpleQueueService.NonExistentQueue",
                        "QueueDoesNotExist",
                    ],
                ) =>
        {
            let policy = match want {
                Some(w) => Some(merge_policy(None, &w).map_err(AwsError::Invalid)?.0),
                None => None,
            };
            Ok(ch.create(Step::CreateQueue { fifo, policy }))
        }
        Err(e) => Err(AwsError::call("GetQueueUrl", &e)),
    }
}

async fn plan_bucket(c: &AwsClients, name: &str) -> Result<Change, AwsError> {
    let ch = Change::new(ResourceKind::Bucket, name);
    match c.s3.head_bucket().bucket(name).send().await {
        Ok(_) => Ok(ch),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
            Ok(ch.create(Step::CreateBucket))
        }
        // HeadBucket has no body, so a 404 may come without the modelled error.
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            Ok(ch.create(Step::CreateBucket))
        }
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
            Err(AwsError::Invalid(format!(
                "bucket {name:?} exists but is not accessible to these credentials (another account's?)"
            )))
        }
        Err(e) => Err(AwsError::call("HeadBucket", &e)),
    }
}

async fn plan_table(c: &AwsClients, name: &str) -> Result<Change, AwsError> {
    let ch = Change::new(ResourceKind::Table, name);
    let desc = match c.dynamodb.describe_table().table_name(name).send().await {
        Ok(d) => d,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            let mut ch = ch.create(Step::CreateTable);
            ch.steps.push(Step::EnableTtl);
            return Ok(ch);
        }
        Err(e) => return Err(AwsError::call("DescribeTable", &e)),
    };
    let keys_ok = desc.table().is_some_and(|t| {
        let hash = t
            .key_schema()
            .iter()
            .find(|k| k.key_type() == &KeyType::Hash)
            .map(|k| k.attribute_name());
        let pk_type = t
            .attribute_definitions()
            .iter()
            .find(|a| a.attribute_name() == ATTR_PK)
            .map(|a| a.attribute_type());
        hash == Some(ATTR_PK)
            && t.key_schema().len() == 1
            && pk_type == Some(&ScalarAttributeType::S)
    });
    if !keys_ok {
        return Err(AwsError::Invalid(format!(
            "table {name:?} exists with another key schema; the dedup table needs only a hash key \
             {ATTR_PK:?} of type S (a key schema cannot be changed: use another table name)"
        )));
    }
    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeTimeToLive", &e))?;
    let d = ttl.time_to_live_description();
    let status = d.and_then(|d| d.time_to_live_status());
    let attr = d.and_then(|d| d.attribute_name());
    let mut ch = ch;
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            if attr.is_some_and(|a| a != ATTR_EXPIRES_AT) {
                return Err(AwsError::Invalid(format!(
                    "table {name:?} has TTL on {:?}; the dedup table needs it on {ATTR_EXPIRES_AT:?} \
                     (disable it first: AWS allows one TTL change per hour)",
                    attr.unwrap_or_default()
                )));
            }
        }
        Some(TimeToLiveStatus::Disabling) => {
            return Err(AwsError::Invalid(format!(
                "table {name:?}: TTL is being disabled; retry when that is done"
            )));
        }
        _ => ch.update(
            format!("TTL on {ATTR_EXPIRES_AT} disabled"),
            Step::EnableTtl,
        ),
    }
    Ok(ch)
}

async fn plan_bus(c: &AwsClients, b: &BusSpec) -> Result<Change, AwsError> {
    let ch = Change::new(ResourceKind::Bus, &b.name);
    match c
        .eventbridge
        .describe_event_bus()
        .name(&b.name)
        .send()
        .await
    {
        // DescribeEventBus does not say which event source a bus was created from, and that
        // cannot change after creation anyway: existing is all there is to compare.
        Ok(_) => Ok(ch),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(ch.create(Step::CreateBus {
                event_source_name: b.event_source_name.clone(),
            }))
        }
        Err(e) => Err(AwsError::call("DescribeEventBus", &e)),
    }
}

async fn plan_rule(
    c: &AwsClients,
    bus: &str,
    r: &RuleSpec,
    bus_exists: bool,
) -> Result<Change, AwsError> {
    let ch = Change::new(ResourceKind::Rule, format!("{bus}/{}", r.name));
    let all_ids = || r.targets.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let create = |ch: Change| {
        let mut ch = ch.create(Step::PutRule);
        if !r.targets.is_empty() {
            ch.steps.push(Step::PutTargets { ids: all_ids() });
        }
        ch
    };
    if !bus_exists {
        return Ok(create(ch));
    }
    let live = match c
        .eventbridge
        .describe_rule()
        .name(&r.name)
        .event_bus_name(bus)
        .send()
        .await
    {
        Ok(d) => d,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(create(ch));
        }
        Err(e) => return Err(AwsError::call("DescribeRule", &e)),
    };
    let mut ch = ch;
    let want = parse_pattern(&r.name, &r.event_pattern_json)?;
    let have = live
        .event_pattern()
        .and_then(|p| serde_json::from_str::<Value>(p).ok());
    if have.as_ref() != Some(&want) {
        ch.update("event pattern differs", Step::PutRule);
    }
    let enabled = live.state() == Some(&RuleState::Enabled);
    if enabled != r.state_enabled {
        ch.update(
            format!(
                "state {} -> {}",
                live.state().map_or("(none)", |s| s.as_str()),
                if r.state_enabled {
                    "ENABLED"
                } else {
                    "DISABLED"
                }
            ),
            Step::PutRule,
        );
    }
    if live.description().unwrap_or("") != r.description.as_deref().unwrap_or("") {
        ch.update("description differs", Step::PutRule);
    }

    let live_targets = list_targets(c, bus, &r.name).await?;
    let mut put = Vec::new();
    for t in &r.targets {
        match live_targets.get(&t.id) {
            None => {
                ch.reasons.push(format!("target {} missing", t.id));
                put.push(t.id.clone());
            }
            Some(l) => {
                let diffs = target_diffs(t, l);
                if !diffs.is_empty() {
                    for d in diffs {
                        ch.reasons.push(format!("target {} {d} differs", t.id));
                    }
                    put.push(t.id.clone());
                }
            }
        }
    }
    let mut remove: Vec<String> = live_targets
        .keys()
        .filter(|id| !r.targets.iter().any(|t| &t.id == *id))
        .cloned()
        .collect();
    remove.sort();
    for id in &remove {
        ch.reasons
            .push(format!("target {id} no longer listed (removed)"));
    }
    if !put.is_empty() {
        ch.action = Action::Update;
        ch.steps.push(Step::PutTargets { ids: put });
    }
    if !remove.is_empty() {
        ch.action = Action::Update;
        ch.steps.push(Step::RemoveTargets { ids: remove });
    }
    Ok(ch)
}

async fn list_targets(
    c: &AwsClients,
    bus: &str,
    rule: &str,
) -> Result<HashMap<String, Target>, AwsError> {
    let mut out = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = c
            .eventbridge
            .list_targets_by_rule()
            .rule(rule)
            .event_bus_name(bus)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::call("ListTargetsByRule", &e))?;
        for t in page.targets() {
            out.insert(t.id().to_owned(), t.clone());
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// The fields of a live target that differ from the desired one.
fn target_diffs(want: &TargetSpec, have: &Target) -> Vec<&'static str> {
    let mut d = Vec::new();
    if have.arn() != want.arn {
        d.push("arn");
    }
    if have.input().unwrap_or("") != want.input.as_deref().unwrap_or("") {
        d.push("input");
    }
    if have.input_path().unwrap_or("") != want.input_path.as_deref().unwrap_or("") {
        d.push("input path");
    }
    let have_tr = have.input_transformer().map(|t| TransformerSpec {
        paths_map: t
            .input_paths_map()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        template: t.input_template().to_owned(),
    });
    if have_tr != want.input_transformer {
        d.push("input transformer");
    }
    if let Some((attempts, age)) = want.retry_policy {
        let rp = have.retry_policy();
        let have_rp = rp.map(|p| (p.maximum_retry_attempts(), p.maximum_event_age_in_seconds()));
        if have_rp != Some((i32::try_from(attempts).ok(), i32::try_from(age).ok())) {
            d.push("retry policy");
        }
    }
    if have.dead_letter_config().and_then(|c| c.arn()) != want.dead_letter_arn.as_deref() {
        d.push("dead-letter config");
    }
    d
}

/// Plans, then performs the plan's steps. Returns the changes made (empty when up to date).
pub async fn apply(c: &AwsClients, spec: &ProvisionSpec) -> Result<Vec<Change>, AwsError> {
    let plan = plan(c, spec).await?;
    let mut done = Vec::new();
    for ch in plan.changes.into_iter().filter(Change::is_pending) {
        for step in &ch.steps {
            run_step(c, spec, &ch, step).await?;
        }
        done.push(ch);
    }
    Ok(done)
}

fn rule_spec<'a>(spec: &'a ProvisionSpec, ch: &Change) -> Result<&'a RuleSpec, AwsError> {
    let name = ch
        .name
        .rsplit_once('/')
        .map_or(ch.name.as_str(), |(_, n)| n);
    spec.rules
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| AwsError::Invalid(format!("rule {name:?} is not in the spec")))
}

async fn run_step(
    c: &AwsClients,
    spec: &ProvisionSpec,
    ch: &Change,
    step: &Step,
) -> Result<(), AwsError> {
    let name = ch.name.as_str();
    match step {
        Step::CreateQueue { fifo, policy } => {
            let mut req = c.sqs.create_queue().queue_name(name);
            if *fifo {
                req = req.attributes(QueueAttributeName::FifoQueue, "true");
            }
            if let Some(p) = policy {
                req = req.attributes(QueueAttributeName::Policy, p);
            }
            req.send()
                .await
                .map_err(|e| AwsError::call("CreateQueue", &e))?;
        }
        Step::SetQueuePolicy { policy } => {
            let url = crate::sqs::queue_url(&c.sqs, name).await?;
            c.sqs
                .set_queue_attributes()
                .queue_url(url)
                .attributes(QueueAttributeName::Policy, policy)
                .send()
                .await
                .map_err(|e| AwsError::call("SetQueueAttributes", &e))?;
        }
        Step::CreateBucket => {
            let mut req = c.s3.create_bucket().bucket(name);
            // us-east-1 refuses a LocationConstraint naming itself; every other region needs one.
            if let Some(region) = c.region.as_deref().filter(|r| *r != "us-east-1") {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region))
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
                Err(e) => return Err(AwsError::call("CreateBucket", &e)),
            }
        }
        Step::CreateTable => {
            let invalid = |e: aws_sdk_dynamodb::error::BuildError| AwsError::Invalid(e.to_string());
            c.dynamodb
                .create_table()
                .table_name(name)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(ATTR_PK)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(invalid)?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(ATTR_PK)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(invalid)?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
                .map_err(|e| AwsError::call("CreateTable", &e))?;
            // UpdateTimeToLive is refused while the table is CREATING.
            c.dynamodb
                .wait_until_table_exists()
                .table_name(name)
                .wait(TABLE_ACTIVE_TIMEOUT)
                .await
                .map_err(|e| AwsError::Call {
                    operation: "DescribeTable",
                    code: "TABLE_NOT_ACTIVE".into(),
                    message: format!("waiting for table {name} to become ACTIVE: {e}"),
                    retryable: true,
                })?;
        }
        Step::EnableTtl => {
            c.dynamodb
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(ATTR_EXPIRES_AT)
                        .build()
                        .map_err(|e| AwsError::Invalid(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| AwsError::call("UpdateTimeToLive", &e))?;
        }
        Step::CreateBus { event_source_name } => {
            c.eventbridge
                .create_event_bus()
                .name(name)
                .set_event_source_name(event_source_name.clone())
                .send()
                .await
                .map_err(|e| AwsError::call("CreateEventBus", &e))?;
        }
        Step::PutRule => {
            let r = rule_spec(spec, ch)?;
            c.eventbridge
                .put_rule()
                .name(&r.name)
                .event_bus_name(spec.bus_name())
                .event_pattern(&r.event_pattern_json)
                .state(if r.state_enabled {
                    RuleState::Enabled
                } else {
                    RuleState::Disabled
                })
                .set_description(r.description.clone())
                .send()
                .await
                .map_err(|e| AwsError::call("PutRule", &e))?;
        }
        Step::PutTargets { ids } => {
            let r = rule_spec(spec, ch)?;
            let mut req = c
                .eventbridge
                .put_targets()
                .rule(&r.name)
                .event_bus_name(spec.bus_name());
            for t in r.targets.iter().filter(|t| ids.contains(&t.id)) {
                req = req.targets(to_target(t)?);
            }
            let out = req
                .send()
                .await
                .map_err(|e| AwsError::call("PutTargets", &e))?;
            if let Some(f) = out.failed_entries().first() {
                return Err(failed_target(
                    "PutTargets",
                    &r.name,
                    f.error_code(),
                    f.target_id(),
                    f.error_message(),
                ));
            }
        }
        Step::RemoveTargets { ids } => {
            let r = rule_spec(spec, ch)?;
            let out = c
                .eventbridge
                .remove_targets()
                .rule(&r.name)
                .event_bus_name(spec.bus_name())
                .set_ids(Some(ids.clone()))
                .send()
                .await
                .map_err(|e| AwsError::call("RemoveTargets", &e))?;
            if let Some(f) = out.failed_entries().first() {
                return Err(failed_target(
                    "RemoveTargets",
                    &r.name,
                    f.error_code(),
                    f.target_id(),
                    f.error_message(),
                ));
            }
        }
    }
    Ok(())
}

fn to_target(t: &TargetSpec) -> Result<Target, AwsError> {
    let mut b = Target::builder()
        .id(&t.id)
        .arn(&t.arn)
        .set_input(t.input.clone())
        .set_input_path(t.input_path.clone());
    if let Some(tr) = &t.input_transformer {
        b = b.input_transformer(
            InputTransformer::builder()
                .set_input_paths_map(
                    (!tr.paths_map.is_empty()).then(|| tr.paths_map.clone().into_iter().collect()),
                )
                .input_template(&tr.template)
                .build()
                .map_err(|e| AwsError::Invalid(e.to_string()))?,
        );
    }
    if let Some((attempts, age)) = t.retry_policy {
        let int = |v: u32, what: &str| {
            i32::try_from(v)
                .map_err(|_| AwsError::Invalid(format!("target {}: {what} too large", t.id)))
        };
        b = b.retry_policy(
            RetryPolicy::builder()
                .maximum_retry_attempts(int(attempts, "maximum_retry_attempts")?)
                .maximum_event_age_in_seconds(int(age, "maximum_event_age_in_seconds")?)
                .build(),
        );
    }
    if let Some(dlq) = &t.dead_letter_arn {
        b = b.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
    }
    b.build().map_err(|e| AwsError::Invalid(e.to_string()))
}

/// A `PutTargets`/`RemoveTargets` entry that failed (the two SDK result types differ).
fn failed_target(
    operation: &'static str,
    rule: &str,
    code: Option<&str>,
    target: Option<&str>,
    message: Option<&str>,
) -> AwsError {
    AwsError::Call {
        operation,
        code: code.unwrap_or("FailedEntry").to_owned(),
        message: format!(
            "rule {rule} target {}: {}",
            target.unwrap_or("?"),
            message.unwrap_or("")
        ),
        retryable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_come_from_names_arns_and_urls() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(queue_name(input).ok().as_deref(), expected, "{input}");
        };
        check("orders", Some("orders"));
        check("orders.fifo", Some("orders.fifo"));
        check("arn:aws:sqs:us-east-1:123456789012:dlq", Some("dlq"));
        check(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/q1",
            Some("q1"),
        );
        check("http://127.0.0.1:5000/123456789012/q2/", Some("q2"));
        check("arn:aws:sns:us-east-1:123456789012:topic", None);
        check("", None);
        check("a/b", None);
    }

    fn target(id: &str, dlq: Option<&str>) -> TargetSpec {
        TargetSpec {
            id: id.into(),
            arn: "arn:aws:sqs:us-east-1:123456789012:t".into(),
            input: None,
            input_path: None,
            input_transformer: None,
            retry_policy: Some((3, 600)),
            dead_letter_arn: dlq.map(str::to_owned),
        }
    }

    fn rule(name: &str, targets: Vec<TargetSpec>) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            description: None,
            state_enabled: true,
            event_pattern_json: r#"{"source":["genesys.cloud"]}"#.into(),
            targets,
        }
    }

    #[test]
    fn dead_letter_queues_join_the_queue_list_once() {
        let spec = ProvisionSpec {
            queues: vec!["a".into(), "b.fifo".into(), "a".into()],
            rules: vec![rule(
                "r",
                vec![
                    target("t1", Some("arn:aws:sqs:us-east-1:123456789012:dlq")),
                    target("t2", Some("arn:aws:sqs:us-east-1:123456789012:dlq")),
                    target("t3", Some("arn:aws:sqs:us-east-1:123456789012:a")),
                ],
            )],
            ..ProvisionSpec::default()
        };
        assert_eq!(
            spec.all_queues().unwrap(),
            vec![
                ("a".into(), false),
                ("b.fifo".into(), true),
                ("dlq".into(), false)
            ]
        );
    }

    #[test]
    fn invalid_specs_are_refused_before_any_call() {
        let check = |spec: ProvisionSpec, needle: &str| {
            let e = spec
                .validate()
                .and_then(|()| spec.all_queues().map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        };
        check(
            ProvisionSpec {
                rules: vec![rule(
                    "r",
                    vec![target("t", Some("arn:aws:sqs:us-east-1:1:d.fifo"))],
                )],
                ..ProvisionSpec::default()
            },
            "standard queue",
        );
        check(
            ProvisionSpec {
                rules: vec![rule("r", vec![]), rule("r", vec![])],
                ..ProvisionSpec::default()
            },
            "duplicate rule",
        );
        check(
            ProvisionSpec {
                rules: vec![rule("r", vec![target("t", None), target("t", None)])],
                ..ProvisionSpec::default()
            },
            "duplicate target id",
        );
        let mut bad = rule("r", vec![]);
        bad.event_pattern_json = "{".into();
        check(
            ProvisionSpec {
                rules: vec![bad],
                ..ProvisionSpec::default()
            },
            "not JSON",
        );
        check(
            ProvisionSpec {
                bus: Some(BusSpec {
                    name: "mine".into(),
                    event_source_name: Some("aws.partner/genesys.com/cloud/o/x".into()),
                }),
                ..ProvisionSpec::default()
            },
            "named like its event source",
        );
    }

    #[test]
    fn target_differences_are_named() {
        let want = target("t1", Some("arn:aws:sqs:us-east-1:123456789012:dlq"));
        let live = to_target(&want).unwrap();
        assert!(target_diffs(&want, &live).is_empty());
        let check = |edit: &dyn Fn(&mut TargetSpec), expected: &[&str]| {
            let mut w = want.clone();
            edit(&mut w);
            assert_eq!(target_diffs(&w, &live), expected);
        };
        check(&|w| w.retry_policy = Some((4, 600)), &["retry policy"]);
        check(&|w| w.retry_policy = None, &[]);
        check(&|w| w.dead_letter_arn = None, &["dead-letter config"]);
        check(&|w| w.arn.push('x'), &["arn"]);
        check(&|w| w.input = Some("{}".into()), &["input"]);
        check(&|w| w.input_path = Some("$.detail".into()), &["input path"]);
        check(
            &|w| {
                w.input_transformer = Some(TransformerSpec {
                    paths_map: BTreeMap::from([("id".into(), "$.id".into())]),
                    template: r#"{"id":<id>}"#.into(),
                })
            },
            &["input transformer"],
        );
    }

    #[test]
    fn queue_policies_keep_foreign_statements_and_name_every_rule() {
        let spec = ProvisionSpec {
            bus: Some(BusSpec {
                name: "b".into(),
                event_source_name: None,
            }),
            rules: vec![
                rule(
                    "r1",
                    vec![target("t", Some("arn:aws:sqs:us-east-1:123456789012:dlq"))],
                ),
                rule("r2", vec![target("t", None)]),
            ],
            ..ProvisionSpec::default()
        };
        let senders = spec.queue_senders();
        let (arn, rules) = &senders["t"];
        assert_eq!(arn, "arn:aws:sqs:us-east-1:123456789012:t");
        assert_eq!(
            rules.iter().collect::<Vec<_>>(),
            [
                "arn:aws:events:us-east-1:123456789012:rule/b/r1",
                "arn:aws:events:us-east-1:123456789012:rule/b/r2"
            ]
        );
        assert_eq!(senders["dlq"].1.len(), 1);

        let want = policy_statement(arn, rules);
        let (fresh, why) = merge_policy(None, &want).unwrap();
        assert!(why.is_some());
        assert_eq!(merge_policy(Some(&fresh), &want).unwrap().1, None);

        let foreign = serde_json::json!({"Sid": "mine", "Effect": "Deny"});
        let live = serde_json::json!({"Version": "2012-10-17", "Statement": foreign}).to_string();
        let (merged, why) = merge_policy(Some(&live), &want).unwrap();
        assert_eq!(
            why.as_deref(),
            Some("policy does not let the EventBridge rules send")
        );
        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged["Statement"], serde_json::json!([foreign, want]));

        // IAM's collapsed one-element lists compare equal.
        let one = policy_statement(arn, &BTreeSet::from(["arn:x".to_owned()]));
        let mut collapsed = one.clone();
        collapsed["Condition"]["ArnEquals"]["aws:SourceArn"] = "arn:x".into();
        let live = serde_json::json!({"Statement": [collapsed]}).to_string();
        assert_eq!(merge_policy(Some(&live), &one).unwrap().1, None);
        let (_, why) = merge_policy(Some(&live), &want).unwrap();
        assert_eq!(
            why.as_deref(),
            Some("policy statement for EventBridge rules differs")
        );
        assert!(merge_policy(Some("not json"), &want).is_err());
        assert!(merge_policy(Some("[]"), &want).is_err());
    }

    #[test]
    fn plans_print_one_line_per_resource() {
        let mut upd = Change::new(ResourceKind::Rule, "bus/r");
        upd.update("event pattern differs", Step::PutRule);
        upd.update("state ENABLED -> DISABLED", Step::PutRule);
        let plan = Plan {
            changes: vec![
                Change::new(ResourceKind::Queue, "q").create(Step::CreateQueue {
                    fifo: false,
                    policy: None,
                }),
                upd,
                Change::new(ResourceKind::Bucket, "b"),
            ],
        };
        assert_eq!(
            plan.to_string(),
            "  + create queue q\n  ~ update rule bus/r: event pattern differs; state ENABLED -> DISABLED\n  = bucket b\n2 of 3 resources to change"
        );
        assert_eq!(plan.changes[1].steps, vec![Step::PutRule]);
        assert!(plan.has_changes());
    }
}
