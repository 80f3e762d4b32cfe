//! The delivery task: queue to sink, with retries and loss accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{EventSink, Loss, NotificationConfig, Shared};

/// Drains the event queue into the sink; see the module docs for the retry and loss rules.
pub(super) async fn deliver(
    rx: mpsc::Receiver<Value>,
    sink: Arc<dyn EventSink>,
    config: Arc<NotificationConfig>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    stream
        .for_each_concurrent(config.sink_concurrency, |message| {
            let (sink, config, shared, cancel) = (sink.clone(), config.clone(), shared.clone(), cancel.clone());
            async move {
                let started = Instant::now();
                let mut backoff = Duration::from_millis(50);
                loop {
                    match sink.accept(message.clone()).await {
                        Ok(()) => {
                            shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("switchboard_genesys_events_total").increment(1);
                            return;
                        }
                        Err(e) => {
                            // On shutdown, keep trying only briefly: the process is going away.
                            let limit = if cancel.is_cancelled() {
                                config.sink_retry_limit.min(Duration::from_secs(5))
                            } else {
                                config.sink_retry_limit
                            };
                            if e.transient && started.elapsed() + backoff <= limit {
                                shared.counters.sink_retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                            shared.counters.lost.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("switchboard_genesys_events_lost_total").increment(1);
                            let topic = message.get("topicName").and_then(Value::as_str).unwrap_or("");
                            let correlation_id =
                                message.pointer("/metadata/CorrelationId").and_then(Value::as_str).unwrap_or("");
                            tracing::error!(
                                topic,
                                correlation_id,
                                transient = e.transient,
                                error = %e.message,
                                "Genesys notification LOST: the sink did not accept it and the WebSocket cannot redeliver"
                            );
                            shared.record_loss(Loss {
                                topic: topic.to_string(),
                                correlation_id: correlation_id.to_string(),
                                at: time::OffsetDateTime::now_utc(),
                                error: e.message.clone(),
                            });
                            return;
                        }
                    }
                }
            }
        })
        .await;
}
