//! The SQS source: long-polls a queue (typically fed by an EventBridge rule on the Genesys
//! partner bus), hands each message to the pipeline, and deletes it only once the pipeline
//! returned, i.e. once the event is durable here.
//!
//! A message that can never become an event (not JSON, not an object, not normalizable) is a
//! poison message: it goes to the configured dead-letter queue with `ERROR_CODE` and
//! `ERROR_MESSAGE` attributes and is deleted; without a dead-letter queue it is left for the
//! queue's own redrive policy. A transient refusal (store busy, shutting down) leaves the message
//! in the queue: it becomes visible again after a short delay and is retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::aws_rt::AwsRuntime;
use crate::config::SqsSourceConfig;
use crate::pipeline::{self, PipelineSource, Rejection};
use crate::telemetry;

/// What became of one message.
enum Handling {
    /// Durable here (or a duplicate): delete it.
    Taken,
    /// Refused for now: leave it, visible again soon.
    Transient,
    /// Can never become an event: the dead-letter queue.
    Poison(&'static str, String),
}

/// How soon a message refused for a transient reason is offered again.
const TRANSIENT_RETRY: Duration = Duration::from_secs(2);

/// Runs one SQS source until `cancel` fires; the batch in hand is finished first.
pub async fn run(
    app: Arc<AppState>,
    aws: Arc<AwsRuntime>,
    source: PipelineSource,
    cfg: SqsSourceConfig,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let (queue_url, dlq_url) = loop {
        let q = aws.queue_url(&cfg.queue).await;
        let d = match &cfg.dead_letter_queue {
            Some(d) => aws.queue_url(d).await.map(Some),
            None => Ok(None),
        };
        match (q, d) {
            (Ok(q), Ok(d)) => break (q, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(source = %source.name, error = %e, "resolving the SQS queue failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let visibility = Duration::from_secs(cfg.visibility_timeout_secs);
    let wait = Duration::from_secs(cfg.wait_time_secs);
    let sqs = aws.clients.sqs.clone();
    backoff = Duration::from_millis(200);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let received = tokio::select! {
            r = switchboard_aws::sqs::receive(&sqs, &queue_url, cfg.max_messages, wait, visibility) => r,
            _ = cancel.cancelled() => break,
        };
        let msgs = match received {
            Ok(m) => {
                backoff = Duration::from_millis(200);
                m
            }
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "ReceiveMessage failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if msgs.is_empty() {
            continue;
        }
        // Keep the batch invisible while it is processed: extend at half the timeout.
        let heartbeat = {
            let sqs = sqs.clone();
            let url = queue_url.clone();
            let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(visibility / 2).await;
                    let h: Vec<&str> = handles.iter().map(String::as_str).collect();
                    if let Err(e) =
                        switchboard_aws::sqs::extend_visibility(&sqs, &url, &h, visibility).await
                    {
                        tracing::warn!(error = %e, "extending message visibility failed");
                    }
                }
            })
        };
        // The batch goes to the pipeline concurrently, so one group commit (one fsync) can
        // take all of it.
        let handled = futures::future::join_all(msgs.iter().map(|m| {
            let (app, source) = (&app, &source);
            async move {
                let started = Instant::now();
                let h = match serde_json::from_str::<serde_json::Value>(&m.body) {
                    Err(e) => Handling::Poison("InvalidJson", e.to_string()),
                    Ok(v) => match pipeline::accept(app, source, v, None).await {
                        Ok(a) => {
                            telemetry::ingest(
                                &source.name,
                                if a.duplicate { "duplicate" } else { "accepted" },
                                started.elapsed(),
                            );
                            Handling::Taken
                        }
                        Err(Rejection::NotAnEvent(e)) => {
                            Handling::Poison("NotAnEvent", e.to_string())
                        }
                        Err(Rejection::TooLarge(e)) => Handling::Poison("EventTooLarge", e),
                        Err(r) => {
                            telemetry::ingest(&source.name, "unavailable", started.elapsed());
                            tracing::warn!(source = %source.name, error = %r, "event refused for now; the message stays in the queue");
                            Handling::Transient
                        }
                    },
                };
                (started, h)
            }
        }))
        .await;
        let mut done = Vec::new();
        let mut retry_soon = Vec::new();
        for (m, (started, h)) in msgs.iter().zip(handled) {
            let outcome = match h {
                Handling::Taken => Ok(()),
                Handling::Transient => {
                    retry_soon.push(m.receipt_handle.as_str());
                    continue;
                }
                Handling::Poison(code, message) => Err((code, message)),
            };
            match outcome {
                Ok(()) => done.push(m.receipt_handle.as_str()),
                Err((code, message)) => {
                    telemetry::ingest(&source.name, "poison", started.elapsed());
                    let Some(dlq) = &dlq_url else {
                        tracing::warn!(source = %source.name, message_id = %m.message_id, code, %message, "poison message left for the queue's redrive policy");
                        continue;
                    };
                    let attrs = switchboard_aws::sqs::DeadLetterAttributes {
                        rule_arn: "",
                        target_arn: &queue_url,
                        error_code: code,
                        error_message: &message,
                        exhausted_retry_condition: None,
                        retry_attempts: m.receive_count.saturating_sub(1),
                    };
                    match switchboard_aws::sqs::send_dead_letter(&sqs, dlq, &m.body, &attrs).await {
                        Ok(()) => {
                            tracing::warn!(source = %source.name, message_id = %m.message_id, code, %message, "poison message moved to the dead-letter queue");
                            done.push(m.receipt_handle.as_str());
                        }
                        Err(e) => {
                            tracing::error!(source = %source.name, error = %e, "sending a poison message to the dead-letter queue failed; it stays in the queue")
                        }
                    }
                }
            }
        }
        heartbeat.abort();
        if !retry_soon.is_empty()
            && let Err(e) = switchboard_aws::sqs::extend_visibility(
                &sqs,
                &queue_url,
                &retry_soon,
                TRANSIENT_RETRY,
            )
            .await
        {
            tracing::warn!(error = %e, "shortening visibility failed; the messages return after the timeout");
        }
        if !done.is_empty() {
            match switchboard_aws::sqs::delete(&sqs, &queue_url, &done).await {
                Ok(failed) if failed.is_empty() => {}
                // Undeleted messages come back and are absorbed by dedup: a duplicate, not a loss.
                Ok(failed) => {
                    tracing::warn!(source = %source.name, count = failed.len(), "some messages were not deleted; they will be seen again")
                }
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, "DeleteMessageBatch failed; the messages will be seen again")
                }
            }
        }
    }
}
