//! The AWS parts of the configuration: `[aws]`, the `eventbridge`/`sqs`/`s3` target kinds, the
//! `sqs` source, claim-checks, SQS dead-letter queues and the DynamoDB dedup backend.
//!
//! These parse and validate in every build; a build without the `aws` feature refuses them at
//! validation with a message saying so, instead of failing later at run time.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[aws]`: how to reach AWS (all optional: the standard chain fills in region and credentials),
/// plus what `switchboard aws plan|apply` provisions on the AWS side.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// Region (default: the standard chain's, e.g. `AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// One endpoint for every service, e.g. an emulator on loopback.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Per-service endpoints: `eventbridge`, `sqs`, `s3`, `dynamodb`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// Static credentials (prefer the standard chain; meant for emulators).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static secret key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Environment variable holding the static secret key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Timeout of one AWS HTTP attempt.
    #[serde(default = "default_aws_timeout")]
    pub timeout_secs: u64,
    /// Attempts the SDK makes before our retry policy takes over.
    #[serde(default = "default_sdk_attempts")]
    pub sdk_max_attempts: u32,
    /// The custom event bus `aws apply` creates.
    #[serde(default)]
    pub bus: Option<AwsBusConfig>,
    /// Rules `aws apply` puts on that bus, in the `PutRule` + `PutTargets` shape (targets are ARNs).
    #[serde(default)]
    pub rules: Vec<crate::config::RuleConfig>,
    /// Extra SQS queues `aws apply` creates (names; `.fifo` suffix for FIFO).
    #[serde(default)]
    pub queues: Vec<String>,
    /// Extra S3 buckets `aws apply` creates.
    #[serde(default)]
    pub buckets: Vec<String>,
}

impl std::fmt::Debug for AwsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSection")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("endpoints", &self.endpoints)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "redacted"),
            )
            .field("bus", &self.bus)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

fn default_aws_timeout() -> u64 {
    10
}

fn default_sdk_attempts() -> u32 {
    2
}

/// `[aws.bus]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsBusConfig {
    /// Bus name. For a Genesys partner bus this must equal `event_source_name`.
    pub name: String,
    /// The partner event source to associate (`aws.partner/genesys.com/cloud/<org>/<name>`).
    #[serde(default)]
    pub event_source_name: Option<String>,
}

/// `[dedup].backend`
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DedupBackend {
    /// The embedded store (one machine).
    #[default]
    Local,
    /// A DynamoDB table shared by every replica.
    Dynamodb,
}

/// `type = "eventbridge"` target settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeTargetConfig {
    /// Event bus name or ARN.
    #[serde(alias = "Arn")]
    pub arn: String,
    /// Request limit by the PutEvents size formula: 1 MiB (AWS's current quota) or 262144.
    #[serde(default = "default_eb_max_request")]
    pub max_request_bytes: usize,
    /// `Source` for payloads that are not EventBridge events (after an input transformer).
    #[serde(default = "default_eb_source")]
    pub source: String,
    /// `DetailType` for such payloads.
    #[serde(default = "default_eb_detail_type")]
    pub detail_type: String,
}

fn default_eb_max_request() -> usize {
    1024 * 1024
}

fn default_eb_source() -> String {
    "switchboard".into()
}

fn default_eb_detail_type() -> String {
    "switchboard.transformed".into()
}

/// `type = "sqs"` target settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsTargetConfig {
    /// Queue URL or ARN.
    pub queue: String,
    /// FIFO queues: message group template (`{detail.eventBody.conversationId}`); default one group.
    #[serde(default)]
    pub message_group_template: Option<String>,
    /// Largest message (1 MiB, AWS's current quota).
    #[serde(default = "default_sqs_max")]
    pub max_message_bytes: usize,
}

fn default_sqs_max() -> usize {
    1024 * 1024
}

/// `type = "s3"` target settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3TargetConfig {
    /// Bucket.
    pub bucket: String,
    /// `object` (one per event) or `ndjson` (one per delivery window).
    #[serde(default = "default_s3_layout")]
    pub layout: String,
    /// Key template (`object`) or key prefix template (`ndjson`).
    #[serde(default = "default_s3_key")]
    pub key_template: String,
    /// `ndjson`: how long events are gathered into one object (at most `batch_size` events).
    #[serde(default = "default_s3_window")]
    pub window_secs: u64,
}

fn default_s3_layout() -> String {
    "object".into()
}

fn default_s3_key() -> String {
    "genesys/{detail-type}/{$yyyy}/{$mm}/{$dd}/{$id}.json".into()
}

fn default_s3_window() -> u64 {
    60
}

/// A target's claim-check: events larger than `max_bytes` are stored aside and replaced by a
/// small event that points at them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheckConfig {
    /// Size above which an event is claim-checked (default: the target's limit).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// `s3://bucket/prefix/`, or a directory (relative to the data dir).
    #[serde(default = "default_claim_store")]
    pub store: String,
    /// Dotted paths inside `detail` kept in the small event.
    #[serde(default = "default_summary_fields")]
    pub summary_fields: Vec<String>,
}

fn default_claim_store() -> String {
    "claim-checks".into()
}

fn default_summary_fields() -> Vec<String> {
    vec![
        "topicName".into(),
        "version".into(),
        "eventBody.id".into(),
        "eventBody.conversationId".into(),
    ]
}

/// A rule target's `DeadLetterConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// SQS queue ARN (or URL). Standard queues only, as EventBridge requires.
    #[serde(alias = "Arn")]
    pub arn: String,
}

/// `type = "sqs"` source settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// Queue URL or ARN.
    pub queue: String,
    /// Long-poll wait (0–20 s).
    #[serde(default = "default_wait")]
    pub wait_time_secs: u64,
    /// Messages per receive (1–10).
    #[serde(default = "default_max_messages")]
    pub max_messages: i32,
    /// Visibility timeout while a batch is processed; extended while it still is.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_secs: u64,
    /// Where poison messages go (queue URL or ARN), with `ERROR_CODE`/`ERROR_MESSAGE`
    /// attributes. Without it they are left for the queue's own redrive policy.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
}

fn default_wait() -> u64 {
    20
}

fn default_max_messages() -> i32 {
    10
}

fn default_visibility() -> u64 {
    60
}

/// Whether this build has the AWS adapters.
pub const AWS_BUILT_IN: bool = cfg!(feature = "aws");

/// The error for AWS settings in a build without them.
pub(crate) fn not_built(what: &str) -> String {
    format!("{what} needs AWS support, and this binary was built without the `aws` feature")
}
