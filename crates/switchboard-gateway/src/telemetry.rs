//! Metrics: every name and label the gateway exports, in one place.
//!
//! Label values are bounded sets (source and target names from the configuration, fixed outcome
//! words), so the Prometheus series count cannot grow with traffic.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle. Several gateways in
/// one process (tests) share it; if another recorder was installed first, `/metrics` is empty.
pub fn init() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0, 300.0,
                    ],
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// Handles for one source's per-request metrics, registered once: building a labelled key costs
/// an allocation and a registry lookup, which on the ingest path is paid by every request.
/// Create them after [`init`]: a handle made before the recorder exists records nothing.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    source: String,
    accepted: metrics::Counter,
    duplicate: metrics::Counter,
    duplicates: metrics::Counter,
    ack: metrics::Histogram,
}

impl SourceMetrics {
    /// Registers the handles of `source`.
    pub fn new(source: &str) -> SourceMetrics {
        let s = || source.to_string();
        SourceMetrics {
            source: source.to_string(),
            accepted: metrics::counter!("switchboard_ingest_requests_total", "source" => s(), "outcome" => "accepted"),
            duplicate: metrics::counter!("switchboard_ingest_requests_total", "source" => s(), "outcome" => "duplicate"),
            duplicates: metrics::counter!("switchboard_ingest_duplicates_total", "source" => s()),
            ack: metrics::histogram!("switchboard_ingest_ack_seconds", "source" => s()),
        }
    }

    /// [`ingest`] through the registered handles (the other outcomes are rare: looked up).
    pub fn record(&self, outcome: &'static str, elapsed: Duration) {
        match outcome {
            "accepted" => self.accepted.increment(1),
            "duplicate" => {
                self.duplicate.increment(1);
                self.duplicates.increment(1);
            }
            other => {
                metrics::counter!("switchboard_ingest_requests_total", "source" => self.source.clone(), "outcome" => other).increment(1);
            }
        }
        self.ack.record(elapsed.as_secs_f64());
    }
}

/// A batch's delivery attempts by outcome (the `outcome` label of
/// `switchboard_deliveries_total`): counted per batch, recorded once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcomes {
    /// `delivered`
    pub delivered: u64,
    /// `retryable_error`
    pub retryable: u64,
    /// `fatal_error`
    pub fatal: u64,
}

/// Handles for one target's per-delivery metrics, registered once (see [`SourceMetrics`]).
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    delivered: metrics::Counter,
    retryable: metrics::Counter,
    fatal: metrics::Counter,
    attempt: metrics::Histogram,
    latency: metrics::Histogram,
}

impl TargetMetrics {
    /// Registers the handles of `target`.
    pub fn new(target: &str) -> TargetMetrics {
        let t = || target.to_string();
        TargetMetrics {
            delivered: metrics::counter!("switchboard_deliveries_total", "target" => t(), "outcome" => "delivered"),
            retryable: metrics::counter!("switchboard_deliveries_total", "target" => t(), "outcome" => "retryable_error"),
            fatal: metrics::counter!("switchboard_deliveries_total", "target" => t(), "outcome" => "fatal_error"),
            attempt: metrics::histogram!("switchboard_delivery_attempt_seconds", "target" => t()),
            latency: metrics::histogram!("switchboard_delivery_latency_seconds", "target" => t()),
        }
    }

    /// One batch's attempts, counted by outcome, the batch taking `elapsed`.
    pub fn attempts(&self, o: &Outcomes, elapsed: Duration) {
        for (counter, n) in [
            (&self.delivered, o.delivered),
            (&self.retryable, o.retryable),
            (&self.fatal, o.fatal),
        ] {
            counter.increment(n);
        }
        let n = o.delivered + o.retryable + o.fatal;
        self.attempt.record_many(
            elapsed.as_secs_f64(),
            usize::try_from(n).unwrap_or(usize::MAX),
        );
    }

    /// A delivery succeeded `ms` after its event was enqueued (end-to-end latency).
    pub fn latency(&self, ms: i64) {
        self.latency.record(ms.max(0) as f64 / 1000.0);
    }
}

/// One ingest request finished with `outcome` (`accepted`, `duplicate`, `unauthorized`, …).
pub fn ingest(source: &str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!("switchboard_ingest_requests_total", "source" => source.to_string(), "outcome" => outcome).increment(1);
    metrics::histogram!("switchboard_ingest_ack_seconds", "source" => source.to_string())
        .record(elapsed.as_secs_f64());
    if outcome == "duplicate" {
        metrics::counter!("switchboard_ingest_duplicates_total", "source" => source.to_string())
            .increment(1);
    }
}

/// A transformation failed while routing.
pub fn route_failure(target: &str) {
    metrics::counter!("switchboard_route_failures_total", "target" => target.to_string())
        .increment(1);
}

/// A delivery went to the dead-letter queue.
pub fn dead_lettered(target: &str) {
    metrics::counter!("switchboard_dead_lettered_total", "target" => target.to_string())
        .increment(1);
}

/// Current queue and DLQ depths.
pub fn depths(
    queue: &std::collections::BTreeMap<String, u64>,
    dlq: &std::collections::BTreeMap<String, u64>,
    targets: &[String],
) {
    for t in targets {
        metrics::gauge!("switchboard_queue_depth", "target" => t.clone())
            .set(queue.get(t).copied().unwrap_or(0) as f64);
        metrics::gauge!("switchboard_dlq_depth", "target" => t.clone())
            .set(dlq.get(t).copied().unwrap_or(0) as f64);
    }
}

/// Batched AWS calls made by a target (`PutEvents`) and the entries they carried: their ratio is
/// the batching efficiency.
pub fn aws_batches(target: &str, calls: u64, entries: u64) {
    metrics::counter!("switchboard_aws_batch_calls_total", "target" => target.to_string())
        .increment(calls);
    metrics::counter!("switchboard_aws_batch_entries_total", "target" => target.to_string())
        .increment(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch's attempts are counted once each, in the counter and in the histogram, however
    /// they are handed over.
    #[test]
    fn a_batch_of_attempts_counts_each_attempt() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = TargetMetrics::new("t");
            let batch = Outcomes {
                delivered: 1000,
                retryable: 2,
                fatal: 0,
            };
            m.attempts(&batch, Duration::from_millis(3));
        });
        let text = handle.render();
        assert!(
            text.contains(r#"switchboard_delivery_attempt_seconds_count{target="t"} 1002"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchboard_deliveries_total{target="t",outcome="delivered"} 1000"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"switchboard_deliveries_total{target="t",outcome="retryable_error"} 2"#
            ),
            "{text}"
        );
    }
}
