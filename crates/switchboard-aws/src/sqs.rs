//! SQS: the `sqs` target (SendMessageBatch), the dead-letter queue writer with EventBridge's
//! message attributes, and the queue operations of the SQS source.

use std::ops::Range;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use serde_json::Value;

use crate::template::{RenderContext, Template};
use crate::{AwsError, Message, Outcome, classify_sdk_error, in_order, parse_arn};

/// Messages per SendMessageBatch / DeleteMessageBatch call (the API maximum).
pub const MAX_BATCH: usize = 10;

/// The SQS message and batch payload limit (1 MiB since 2026-01-29; moto enforces it too).
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Settings of one SQS target.
#[derive(Debug, Clone)]
pub struct SqsSettings {
    /// Queue URL.
    pub queue_url: String,
    /// FIFO queue (URL ends in `.fifo`): message group template.
    pub message_group: Option<Template>,
    /// Largest message body and batch.
    pub max_bytes: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
}

impl SqsSettings {
    /// Whether the queue is FIFO.
    pub fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }
}

/// Sends to one queue.
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: aws_sdk_sqs::Client,
    settings: SqsSettings,
}

/// Groups messages into SendMessageBatch calls of ≤ 10 and ≤ `max_bytes` in total.
fn plan(sizes: &[usize], max_bytes: usize) -> Vec<Range<usize>> {
    crate::plan_batches(sizes, MAX_BATCH, max_bytes)
}

impl SqsSender {
    /// A sender for one queue.
    pub fn new(client: aws_sdk_sqs::Client, settings: SqsSettings) -> Self {
        SqsSender { client, settings }
    }

    /// Sends; one outcome per message, in order.
    pub async fn send(&self, msgs: &[Message<'_>]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; msgs.len()];
        let mut ok = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.body.len() > self.settings.max_bytes {
                outcomes[i] = Some(Outcome::fatal(
                    "MessageTooLong",
                    format!(
                        "message is {} bytes; the queue limit is {}",
                        m.body.len(),
                        self.settings.max_bytes
                    ),
                ));
            } else {
                ok.push(i);
            }
        }
        let sizes: Vec<usize> = ok.iter().map(|&i| msgs[i].body.len()).collect();
        let batches = plan(&sizes, self.settings.max_bytes);
        let sent = in_order(batches, self.settings.concurrency, |r| {
            self.batch(msgs, ok[r].to_vec())
        })
        .await;
        for (ids, res) in sent {
            for (i, o) in ids.into_iter().zip(res) {
                outcomes[i] = Some(o);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retryable("INTERNAL", "message was not sent")))
            .collect()
    }

    async fn batch(&self, msgs: &[Message<'_>], ids: Vec<usize>) -> (Vec<usize>, Vec<Outcome>) {
        let now = time::OffsetDateTime::now_utc();
        let mut entries = Vec::with_capacity(ids.len());
        for (n, &i) in ids.iter().enumerate() {
            let m = msgs[i];
            let mut b = SendMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .message_body(m.body);
            if self.settings.is_fifo() {
                let group = match &self.settings.message_group {
                    Some(t) => {
                        let ev: Value = serde_json::from_str(m.body).unwrap_or(Value::Null);
                        t.render(&RenderContext {
                            event: &ev,
                            id: m.id,
                            now,
                        })
                    }
                    None => "switchboard".to_owned(),
                };
                // FIFO ids allow 128 characters.
                let group: String = group.chars().take(128).collect();
                b = b.message_group_id(group).message_deduplication_id(m.id);
            }
            match b.build() {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let fail = Outcome::fatal("REQUEST_INVALID", e.to_string());
                    return (ids.clone(), vec![fail; ids.len()]);
                }
            }
        }
        let res = self
            .client
            .send_message_batch()
            .queue_url(&self.settings.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let outcomes = match res {
            Ok(out) => {
                let mut o = vec![Outcome::Delivered; ids.len()];
                let mut answered = vec![false; ids.len()];
                for s in out.successful() {
                    if let Ok(n) = s.id().parse::<usize>()
                        && n < ids.len()
                    {
                        answered[n] = true;
                    }
                }
                for f in out.failed() {
                    if let Ok(n) = f.id().parse::<usize>()
                        && n < ids.len()
                    {
                        answered[n] = true;
                        let message = f.message().unwrap_or("").to_owned();
                        o[n] = if f.sender_fault() {
                            Outcome::fatal(f.code(), message)
                        } else {
                            Outcome::retryable(f.code(), message)
                        };
                    }
                }
                for (n, a) in answered.into_iter().enumerate() {
                    if !a {
                        o[n] = Outcome::retryable("BAD_RESPONSE", "no result for this entry");
                    }
                }
                o
            }
            Err(e) => vec![classify_sdk_error(&e); ids.len()],
        };
        (ids, outcomes)
    }
}

/// Resolves a queue given as a URL or an ARN to its URL (`GetQueueUrl` for ARNs).
pub async fn queue_url(client: &aws_sdk_sqs::Client, queue: &str) -> Result<String, AwsError> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Ok(queue.to_owned());
    }
    let (name, owner) = match parse_arn(queue) {
        Some(a) if a.service == "sqs" => (a.resource, Some(a.account)),
        Some(_) => {
            return Err(AwsError::Invalid(format!(
                "{queue:?} is not an SQS queue ARN"
            )));
        }
        None => (queue, None),
    };
    let out = client
        .get_queue_url()
        .queue_name(name)
        .set_queue_owner_aws_account_id(owner.filter(|o| !o.is_empty()).map(str::to_owned))
        .send()
        .await
        .map_err(|e| AwsError::call("GetQueueUrl", &e))?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| AwsError::Invalid(format!("GetQueueUrl returned no URL for {queue:?}")))
}

/// The attributes EventBridge puts on a dead-lettered message.
#[derive(Debug, Clone)]
pub struct DeadLetterAttributes<'a> {
    /// `RULE_ARN`.
    pub rule_arn: &'a str,
    /// `TARGET_ARN`.
    pub target_arn: &'a str,
    /// `ERROR_CODE`.
    pub error_code: &'a str,
    /// `ERROR_MESSAGE`.
    pub error_message: &'a str,
    /// `EXHAUSTED_RETRY_CONDITION`, only when a retry limit ended delivery.
    pub exhausted_retry_condition: Option<&'a str>,
    /// `RETRY_ATTEMPTS`.
    pub retry_attempts: u32,
}

fn string_attr(v: &str) -> Result<MessageAttributeValue, AwsError> {
    MessageAttributeValue::builder()
        .data_type("String")
        // SQS refuses empty attribute values.
        .string_value(if v.is_empty() { "-" } else { v })
        .build()
        .map_err(|e| AwsError::Invalid(e.to_string()))
}

/// Sends one dead letter: the body is the event, the attributes are EventBridge's.
pub async fn send_dead_letter(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    body: &str,
    attrs: &DeadLetterAttributes<'_>,
) -> Result<(), AwsError> {
    // SQS caps an attribute value with the body at the message limit; an error message can be
    // long (a target's response body), so keep it to a readable size.
    let message: String = attrs.error_message.chars().take(1024).collect();
    let mut req = client
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .message_attributes("RULE_ARN", string_attr(attrs.rule_arn)?)
        .message_attributes("TARGET_ARN", string_attr(attrs.target_arn)?)
        .message_attributes("ERROR_CODE", string_attr(attrs.error_code)?)
        .message_attributes("ERROR_MESSAGE", string_attr(&message)?)
        .message_attributes(
            "RETRY_ATTEMPTS",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(attrs.retry_attempts.to_string())
                .build()
                .map_err(|e| AwsError::Invalid(e.to_string()))?,
        );
    if let Some(c) = attrs.exhausted_retry_condition {
        req = req.message_attributes("EXHAUSTED_RETRY_CONDITION", string_attr(c)?);
    }
    req.send()
        .await
        .map_err(|e| AwsError::call("SendMessage", &e))?;
    Ok(())
}

/// A message received by the SQS source.
#[derive(Debug, Clone)]
pub struct Received {
    /// Message id.
    pub message_id: String,
    /// Handle for delete / visibility changes.
    pub receipt_handle: String,
    /// Body.
    pub body: String,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
}

/// Long-polls up to `max` messages.
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: i32,
    wait: Duration,
    visibility: Duration,
) -> Result<Vec<Received>, AwsError> {
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max.clamp(1, 10))
        .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20).clamp(0, 20))
        .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap_or(30))
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(|e| AwsError::call("ReceiveMessage", &e))?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            Some(Received {
                message_id: m.message_id()?.to_owned(),
                receipt_handle: m.receipt_handle()?.to_owned(),
                body: m.body().unwrap_or("").to_owned(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
        })
        .collect())
}

/// Deletes messages (≤ 10 per call); returns the receipt handles that failed.
pub async fn delete(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handles: &[&str],
) -> Result<Vec<String>, AwsError> {
    let mut failed = Vec::new();
    for chunk in handles.chunks(MAX_BATCH) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(n, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(*h)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| AwsError::call("DeleteMessageBatch", &e))?;
        for f in out.failed() {
            if let Some(h) = f.id().parse::<usize>().ok().and_then(|n| chunk.get(n)) {
                failed.push((*h).to_owned());
            }
        }
    }
    Ok(failed)
}

/// Sets the visibility timeout of messages still being processed (≤ 10 per call).
pub async fn extend_visibility(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handles: &[&str],
    visibility: Duration,
) -> Result<(), AwsError> {
    let secs = i32::try_from(visibility.as_secs())
        .unwrap_or(43_200)
        .min(43_200);
    for chunk in handles.chunks(MAX_BATCH) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(n, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(*h)
                    .visibility_timeout(secs)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        client
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| AwsError::call("ChangeMessageVisibilityBatch", &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_count_and_bytes() {
        assert_eq!(plan(&[1; 21], 100), vec![0..10, 10..20, 20..21]);
        assert_eq!(plan(&[60, 60, 30], 100), vec![0..1, 1..3]);
    }
}
