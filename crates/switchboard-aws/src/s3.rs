//! S3: the `s3` target (one object per event, or one NDJSON object per delivery window) and the
//! claim-check blob store.

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use crate::template::{RenderContext, Template};
use crate::{AwsError, Message, Outcome, classify_sdk_error, in_order};

/// How events become objects.
#[derive(Debug, Clone)]
pub enum S3Layout {
    /// One object per event at the rendered key.
    Object(Template),
    /// One NDJSON object per batch (a delivery window), at `<rendered prefix>/<first id>.ndjson`.
    Ndjson(Template),
}

/// Settings of one S3 target.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Bucket.
    pub bucket: String,
    /// Layout and key template.
    pub layout: S3Layout,
    /// PutObject calls in flight.
    pub concurrency: usize,
}

/// Writes to one bucket.
#[derive(Debug, Clone)]
pub struct S3Sender {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

impl S3Sender {
    /// A sender for one bucket.
    pub fn new(client: aws_sdk_s3::Client, settings: S3Settings) -> Self {
        S3Sender { client, settings }
    }

    /// Writes; one outcome per item, in order. Keys are deterministic for a given event and
    /// batch, so a retry overwrites the same object rather than adding a second one.
    pub async fn send(&self, items: &[Message<'_>]) -> Vec<Outcome> {
        let now = time::OffsetDateTime::now_utc();
        match &self.settings.layout {
            S3Layout::Object(t) => {
                let key = |it: &Message<'_>| {
                    let ev: Value = serde_json::from_str(it.body).unwrap_or(Value::Null);
                    t.render(&RenderContext {
                        event: &ev,
                        id: it.id,
                        now,
                    })
                };
                in_order(items, self.settings.concurrency, |it| {
                    self.put(key(it), it.body.as_bytes().to_vec())
                })
                .await
            }
            S3Layout::Ndjson(t) => {
                let Some(first) = items.first() else {
                    return Vec::new();
                };
                let ev: Value = serde_json::from_str(first.body).unwrap_or(Value::Null);
                let prefix = t.render(&RenderContext {
                    event: &ev,
                    id: first.id,
                    now,
                });
                let key = format!("{}/{}.ndjson", prefix.trim_end_matches('/'), first.id);
                let mut body = Vec::with_capacity(items.iter().map(|i| i.body.len() + 1).sum());
                for it in items {
                    body.extend_from_slice(it.body.as_bytes());
                    body.push(b'\n');
                }
                let o = self.put(key, body).await;
                vec![o; items.len()]
            }
        }
    }

    async fn put(&self, key: String, body: Vec<u8>) -> Outcome {
        let res = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await;
        match res {
            Ok(_) => Outcome::Delivered,
            Err(e) => classify_sdk_error(&e),
        }
    }
}

pub use switchboard_event::{ClaimCheck, sha256_hex};

/// Stores a blob under `prefix<sha256>.json`: content-addressed, so storing the same event twice
/// (a retried delivery) writes the same object.
pub async fn put_blob(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    bytes: &[u8],
) -> Result<ClaimCheck, AwsError> {
    let sha = sha256_hex(bytes);
    let key = format!("{prefix}{sha}.json");
    client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(bytes.to_vec()))
        .send()
        .await
        .map_err(|e| AwsError::call("PutObject", &e))?;
    Ok(ClaimCheck {
        uri: format!("s3://{bucket}/{key}"),
        sha256: sha,
        size: bytes.len() as u64,
    })
}

/// Splits `s3://bucket/key`.
pub fn parse_s3_uri(uri: &str) -> Result<(&str, &str), AwsError> {
    uri.strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| AwsError::Invalid(format!("{uri:?} is not an s3://bucket/key URI")))
}

/// Fetches an `s3://` blob.
pub async fn get_blob(client: &aws_sdk_s3::Client, uri: &str) -> Result<Vec<u8>, AwsError> {
    let (bucket, key) = parse_s3_uri(uri)?;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| AwsError::call("GetObject", &e))?;
    let data = out.body.collect().await.map_err(|e| AwsError::Call {
        operation: "GetObject",
        code: "READ_ERROR".into(),
        message: e.to_string(),
        retryable: true,
    })?;
    Ok(data.into_bytes().to_vec())
}
