//! AWS adapters: the EventBridge, SQS and S3 senders, the DynamoDB dedup table, the SQS source's
//! queue operations, the S3 claim-check blob store and `aws plan/apply` provisioning.
//!
//! Everything talks through the official AWS SDK for Rust with the standard credential chain; an
//! optional endpoint URL per service points the same code at an emulator (moto in our tests).
//! Nothing here knows it may be talking to an emulator.
//!
//! The senders return one [`Outcome`] per input item, in order, and never decide retries
//! themselves: the gateway's delivery policy does that, so every target kind retries, backs off
//! and dead-letters the same way.

pub mod dynamo;
pub mod eventbridge;
mod outcome;
pub mod provision;
pub mod s3;
pub mod sqs;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

pub use outcome::{Outcome, classify_sdk_error, is_retryable_code};
// Key templates are part of the event model (pure, validated at config load).
pub use switchboard_event::template;
// Re-exported so users name the SDK types through us, at the versions we build with.
pub use {aws_sdk_dynamodb, aws_sdk_eventbridge, aws_sdk_s3, aws_sdk_sqs};

/// How to reach AWS. Every field is optional: the standard chain (environment, profile, IMDS…)
/// fills in region and credentials.
#[derive(Clone, Default)]
pub struct AwsSettings {
    /// Region; `None` = the standard chain's.
    pub region: Option<String>,
    /// One endpoint for every service (an emulator).
    pub endpoint_url: Option<String>,
    /// Per-service endpoint overrides, keyed `eventbridge`, `sqs`, `s3`, `dynamodb`.
    pub endpoints: std::collections::BTreeMap<String, String>,
    /// Static credentials; `None` = the standard chain.
    pub static_credentials: Option<(String, String)>,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Attempts the SDK makes itself before an error reaches the caller (1 = no SDK retries).
    pub sdk_max_attempts: u32,
}

impl std::fmt::Debug for AwsSettings {
    // The secret key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("endpoints", &self.endpoints)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|(id, _)| id),
            )
            .field("attempt_timeout", &self.attempt_timeout)
            .field("sdk_max_attempts", &self.sdk_max_attempts)
            .finish()
    }
}

impl AwsSettings {
    /// Defaults: 10 s per attempt, 2 SDK attempts (our own policy retries after that).
    pub fn new() -> Self {
        AwsSettings {
            attempt_timeout: Duration::from_secs(10),
            sdk_max_attempts: 2,
            ..AwsSettings::default()
        }
    }

    fn endpoint_for(&self, service: &str) -> Option<&str> {
        self.endpoints
            .get(service)
            .or(self.endpoint_url.as_ref())
            .map(String::as_str)
    }
}

/// Clients for the four services, sharing one loaded configuration.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// EventBridge.
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// S3 (path-style addressing when an endpoint override is set, as emulators need).
    pub s3: aws_sdk_s3::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The region the clients use (for ARNs).
    pub region: Option<String>,
}

impl AwsClients {
    /// Loads the configuration (the standard chain plus `settings`) and builds the clients.
    /// No network call is made here: credentials are resolved on first use.
    pub async fn new(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard().with_max_attempts(settings.sdk_max_attempts.max(1)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.attempt_timeout.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            );
        if let Some(r) = &settings.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some((id, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "switchboard-config",
            ));
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string());

        let mut eb = aws_sdk_eventbridge::config::Builder::from(&shared);
        if let Some(u) = settings.endpoint_for("eventbridge") {
            eb = eb.endpoint_url(u);
        }
        let mut sqs = aws_sdk_sqs::config::Builder::from(&shared);
        if let Some(u) = settings.endpoint_for("sqs") {
            sqs = sqs.endpoint_url(u);
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(u) = settings.endpoint_for("s3") {
            s3 = s3.endpoint_url(u).force_path_style(true);
        }
        let mut ddb = aws_sdk_dynamodb::config::Builder::from(&shared);
        if let Some(u) = settings.endpoint_for("dynamodb") {
            ddb = ddb.endpoint_url(u);
        }
        AwsClients {
            eventbridge: aws_sdk_eventbridge::Client::from_conf(eb.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(ddb.build()),
            region,
        }
    }
}

/// Errors of the AWS adapters outside the per-item [`Outcome`]s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// An AWS call failed.
    #[error("{operation}: {code}: {message}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The AWS error code, or a transport error kind.
        code: String,
        /// Detail.
        message: String,
        /// Whether retrying can succeed.
        retryable: bool,
    },
    /// A URI, ARN or setting we cannot use.
    #[error("{0}")]
    Invalid(String),
    /// Stored data did not match its claim-check digest.
    #[error("claim-check {uri}: sha256 mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        /// The URI.
        uri: String,
        /// From the claim-check.
        expected: String,
        /// Of the bytes fetched.
        actual: String,
    },
}

impl AwsError {
    pub(crate) fn call<E>(operation: &'static str, e: &aws_sdk_sqs::error::SdkError<E>) -> Self
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let o = classify_sdk_error(e);
        let retryable = matches!(o, Outcome::Retryable { .. });
        let (code, message) = o.code_message();
        AwsError::Call {
            operation,
            code,
            message,
            retryable,
        }
    }

    /// The AWS error code of a failed call.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Call { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One event to send to SQS or S3: the payload and its envelope id (the FIFO deduplication id,
/// the `{$id}` of key templates).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Payload.
    pub body: &'a str,
    /// Envelope id.
    pub id: &'a str,
}

/// Runs `call` on each item with at most `limit` (at least 1) calls in flight, and returns the
/// outputs in input order: the sliding window every sender uses for its `concurrency`.
pub(crate) async fn in_order<T, F, Fut>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    mut call: F,
) -> Vec<Fut::Output>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future,
{
    use futures::StreamExt;
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut rest = items.into_iter();
    for it in rest.by_ref().take(limit.max(1)) {
        in_flight.push_back(call(it));
    }
    let mut out = Vec::new();
    while let Some(o) = in_flight.next().await {
        out.push(o);
        if let Some(it) = rest.next() {
            in_flight.push_back(call(it));
        }
    }
    out
}

/// Groups items, in order, into calls of at most `max_count` whose sizes sum to at most
/// `max_bytes` (PutEvents and SendMessageBatch have the same two limits). An item larger than
/// `max_bytes` gets a call of its own; the caller refuses it before sending.
pub fn plan_batches(
    sizes: &[usize],
    max_count: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && (i - start == max_count || bytes.saturating_add(s) > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(s);
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Splits an ARN `arn:partition:service:region:account:resource` into its parts.
pub fn parse_arn(arn: &str) -> Option<Arn<'_>> {
    let mut it = arn.splitn(6, ':');
    if it.next()? != "arn" {
        return None;
    }
    let partition = it.next()?;
    let service = it.next()?;
    let region = it.next()?;
    let account = it.next()?;
    let resource = it.next()?;
    Some(Arn {
        partition,
        service,
        region,
        account,
        resource,
    })
}

/// The parts of an ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, …
    pub partition: &'a str,
    /// `sqs`, `events`, …
    pub service: &'a str,
    /// Region.
    pub region: &'a str,
    /// Account id.
    pub account: &'a str,
    /// Everything after the account.
    pub resource: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_split_into_parts() {
        let a = parse_arn("arn:aws:sqs:us-east-1:123456789012:my-dlq").unwrap();
        assert_eq!(a.service, "sqs");
        assert_eq!(a.resource, "my-dlq");
        let b = parse_arn("arn:aws:events:eu-west-1:123456789012:event-bus/a:b").unwrap();
        assert_eq!(b.resource, "event-bus/a:b");
        assert!(parse_arn("https://sqs.us-east-1.amazonaws.com/1/q").is_none());
        assert!(parse_arn("arn:aws:sqs").is_none());
    }
}
