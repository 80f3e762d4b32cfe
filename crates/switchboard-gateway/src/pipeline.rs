//! The ingest pipeline shared by every source: normalize → route → dedup + persist.
//!
//! A source authenticates and parses (that part differs: HTTP signatures, a WebSocket session,
//! an SQS message), then hands the JSON object here. [`accept`] returns only when the event, its
//! dedup key and its deliveries are durable, so a source may acknowledge as soon as it returns Ok.
//!
//! Architecture Invariant: there is no other path from a source to the targets.

use switchboard_event::{NormalizeContext, NormalizeOptions};
use switchboard_store::{DedupClaim, IngestOutcome, NewEvent, StoreError};

use crate::AppState;
use crate::delivery::{now_ms, wake};
use crate::error::ApiError;
use crate::telemetry;

/// Per-source settings the pipeline uses.
#[derive(Debug, Clone)]
pub struct PipelineSource {
    /// Source name (store, metrics).
    pub name: String,
    /// Normalizer settings.
    pub normalize: NormalizeOptions,
    /// Dedup window in milliseconds.
    pub dedup_ttl_ms: i64,
}

impl PipelineSource {
    /// The pipeline settings of a configured source.
    pub fn from_config(s: &crate::config::SourceConfig, default_window_secs: u64) -> Self {
        PipelineSource {
            name: s.name.clone(),
            normalize: s.normalize.clone(),
            dedup_ttl_ms: secs_to_ms(s.dedup_window_secs.unwrap_or(default_window_secs)),
        }
    }
}

/// Seconds from the configuration as milliseconds, saturating instead of overflowing.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// An event the pipeline took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Envelope id (the original one for a duplicate).
    pub id: String,
    /// Whether it was a duplicate within the window (stored nowhere).
    pub duplicate: bool,
}

/// Why the pipeline did not take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The input is not an event the normalizer understands (sender's fault).
    #[error("{0}")]
    NotAnEvent(#[from] switchboard_event::NormalizeError),
    /// The event with its deliveries is larger than a journal record may be (sender's fault:
    /// retrying cannot help).
    #[error("{0}")]
    TooLarge(String),
    /// The store's queue is full: try again shortly.
    #[error("too many events in flight; retry later")]
    Busy,
    /// Shutting down: try again (elsewhere or later).
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The store refuses writes (fail-stop after an I/O error).
    #[error("the event store is unavailable: {0}")]
    StoreUnavailable(String),
    /// Another replica holds a pending claim on this event's dedup key: retry shortly, by which
    /// time it is either persisted (then a duplicate) or released.
    #[error("another replica is processing this event; retry later")]
    ClaimedElsewhere,
    /// The shared dedup table cannot be reached: without it duplicates cannot be ruled out.
    #[error("the shared dedup table is unavailable: {0}")]
    DedupUnavailable(String),
    /// A bug or an impossible clock.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Rejection {
    /// True when retrying the same input can succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Rejection::NotAnEvent(_) | Rejection::TooLarge(_))
    }

    /// The HTTP answer for this rejection (DESIGN.md's ack table).
    pub fn into_api_error(self, retry_after: u64) -> ApiError {
        match self {
            Rejection::NotAnEvent(e) => ApiError::bad_request("not_an_event", e.to_string()),
            Rejection::TooLarge(m) => ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                m,
            ),
            Rejection::Busy => ApiError::unavailable("store_busy", self.to_string(), retry_after),
            Rejection::ShuttingDown => {
                ApiError::unavailable("shutting_down", self.to_string(), retry_after)
            }
            // A store that failed an fsync refuses all writes until restarted; the sender must keep
            // the event and retry, so this is a 503, never a 2xx.
            Rejection::StoreUnavailable(_) => ApiError::unavailable(
                "store_unavailable",
                "the event store is unavailable",
                retry_after,
            ),
            Rejection::ClaimedElsewhere => {
                ApiError::unavailable("in_progress", self.to_string(), retry_after)
            }
            Rejection::DedupUnavailable(_) => ApiError::unavailable(
                "dedup_unavailable",
                "the shared dedup table is unavailable",
                retry_after,
            ),
            Rejection::Internal(e) => ApiError::internal(e),
        }
    }
}

/// The parts of an event the gateway supplies: its id (if the input brings none) and when it
/// was received.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// A fresh UUID v7 (time-ordered, so the journal and id indexes grow at the end).
    pub id: String,
    /// Receive time, Unix milliseconds.
    pub received_ms: i64,
    received_at: time::OffsetDateTime,
}

impl Stamp {
    /// Now, with a new id.
    pub fn now() -> Result<Stamp, Rejection> {
        let received_ms = now_ms();
        let received_at =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(received_ms) * 1_000_000)
                .map_err(|e| Rejection::Internal(e.to_string()))?;
        Ok(Stamp {
            id: uuid::Uuid::now_v7().to_string(),
            received_ms,
            received_at,
        })
    }

    /// The receive time in RFC 3339 (`<aws.events.event.ingestion-time>`). Formatting fails
    /// only for a year outside 0..=9999, which a clock-derived time never has; the Unix seconds
    /// stand in rather than a panic.
    pub fn ingestion_time(&self) -> String {
        self.received_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.received_at.unix_timestamp().to_string())
    }

    /// The normalizer's view of it.
    pub fn context<'a>(&'a self, delivery_id: Option<&'a str>) -> NormalizeContext<'a> {
        NormalizeContext {
            new_id: &self.id,
            delivery_id,
            received_at: self.received_at,
        }
    }
}

/// An event as a source hands it over.
#[derive(Debug)]
pub enum Body {
    /// Parsed JSON (WebSocket and SQS sources; HTTP bodies the text normalizer passed on).
    Value(serde_json::Value),
    /// Already normalized from the request text ([`switchboard_event::normalize_text`], with
    /// the same [`Stamp`]).
    Normalized(switchboard_event::NormalizedText),
}

/// Normalizes, routes and durably stores one event.
pub async fn accept(
    app: &AppState,
    source: &PipelineSource,
    value: serde_json::Value,
    delivery_id: Option<&str>,
) -> Result<Accepted, Rejection> {
    let stamp = Stamp::now()?;
    accept_with(app, source, &stamp, Body::Value(value), delivery_id).await
}

/// [`accept`] for a body that may already be normalized; `stamp` must be the one it was
/// normalized with.
pub async fn accept_with(
    app: &AppState,
    source: &PipelineSource,
    stamp: &Stamp,
    body: Body,
    delivery_id: Option<&str>,
) -> Result<Accepted, Rejection> {
    if app.shutdown.is_cancelled() {
        return Err(Rejection::ShuttingDown);
    }
    let received = stamp.received_ms;
    let (normalized, tree) = match body {
        Body::Normalized(t) => (t, None),
        Body::Value(value) => {
            let n = switchboard_event::normalize(
                value,
                &stamp.context(delivery_id),
                &source.normalize,
            )?;
            let envelope = serde_json::to_string(&n.envelope)
                .map_err(|e| Rejection::Internal(e.to_string()))?;
            let text = switchboard_event::NormalizedText {
                envelope,
                id: n.id,
                dedup_key: n.dedup_key,
                shape: n.shape,
                detail_type: n.detail_type,
            };
            (text, Some(n.envelope))
        }
    };
    // A retry of an event committed moments ago: answer before routing it.
    // The shared table is not consulted: this replica stored the event, and committed its
    // shared claim when it did (a failed shared commit is logged there and the lease expires).
    if let Some(key) = &normalized.dedup_key
        && let Some(original_id) = app.store.cached_duplicate(key, received)
    {
        return Ok(Accepted {
            id: original_id,
            duplicate: true,
        });
    }

    let (deliveries, failures) = app.router.route(&normalized.envelope, tree.as_ref(), &|| {
        stamp.ingestion_time()
    });
    drop(tree);
    for f in &failures {
        telemetry::route_failure(&f.target);
        tracing::warn!(rule = %f.rule, target = %f.target, error = %f.message, "input transformation failed; no delivery for this target");
    }
    let targets: Vec<String> = deliveries.iter().map(|d| d.target.clone()).collect();
    #[cfg(feature = "aws")]
    let shared = match (&app.shared_dedup, &normalized.dedup_key) {
        (Some(sd), Some(key)) => {
            use switchboard_aws::dynamo::Claim;
            // Boxed: an SDK call's future is kilobytes, and inline it would make every request's
            // future that large (and copied when the handler is boxed), shared dedup or not.
            match Box::pin(sd.table.claim(key, &normalized.id)).await {
                Ok(Claim::New) => Some((sd, key.clone())),
                Ok(Claim::Duplicate { original_id }) => {
                    return Ok(Accepted {
                        id: original_id,
                        duplicate: true,
                    });
                }
                Ok(Claim::Busy) => return Err(Rejection::ClaimedElsewhere),
                Err(e) => {
                    tracing::error!(error = %e, "shared dedup claim failed");
                    return Err(Rejection::DedupUnavailable(e.to_string()));
                }
            }
        }
        _ => None,
    };
    // An id the sender chose (a relayed EventBridge envelope) is claimed too, so that the same
    // envelope sent again is a duplicate even without a dedup key; ours never repeat.
    let identity_ttl_ms = (normalized.id != stamp.id).then_some(source.dedup_ttl_ms);
    let event = NewEvent {
        id: normalized.id.clone(),
        source: source.name.clone(),
        received_at_ms: received,
        dedup: normalized.dedup_key.map(|key| DedupClaim {
            key,
            ttl_ms: source.dedup_ttl_ms,
        }),
        identity_ttl_ms,
        envelope: normalized.envelope,
        deliveries,
    };
    // The cache was asked above, before routing; asking it again here would find the same.
    let result = app.store.ingest_uncached(event).await;
    #[cfg(feature = "aws")]
    if let Some((sd, key)) = shared {
        Box::pin(settle_shared_claim(
            sd,
            &key,
            &normalized.id,
            &result,
            source.dedup_ttl_ms,
        ))
        .await;
    }
    match result {
        Ok(IngestOutcome::Stored) => {
            wake(&app.targets, targets.iter().map(String::as_str));
            Ok(Accepted {
                id: normalized.id,
                duplicate: false,
            })
        }
        Ok(IngestOutcome::Duplicate { original_id }) => Ok(Accepted {
            id: original_id,
            duplicate: true,
        }),
        Err(e) => Err(store_rejection(e)),
    }
}

/// Why the store did not take an event, as the sender should hear it: retry on a full queue or
/// a shutdown, give up on a record too large, and retry elsewhere or later on a store that
/// refuses writes.
fn store_rejection(e: StoreError) -> Rejection {
    match e {
        StoreError::Busy => Rejection::Busy,
        e @ StoreError::RecordTooLarge { .. } => Rejection::TooLarge(e.to_string()),
        StoreError::ShuttingDown => Rejection::ShuttingDown,
        e => {
            tracing::error!(error = %e, "store refused the event");
            Rejection::StoreUnavailable(e.to_string())
        }
    }
}

/// Commits the shared claim once the event is durable here (or was already), releases it when
/// the store refused the event so the sender's retry is not answered "busy" for a whole lease.
#[cfg(feature = "aws")]
async fn settle_shared_claim(
    sd: &crate::aws_rt::SharedDedup,
    key: &str,
    event_id: &str,
    result: &Result<IngestOutcome, StoreError>,
    ttl_ms: i64,
) {
    let window = std::time::Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
    let id = match result {
        Ok(IngestOutcome::Stored) => event_id,
        Ok(IngestOutcome::Duplicate { original_id }) => original_id.as_str(),
        Err(_) => {
            if let Err(e) = sd.table.release(key).await {
                tracing::warn!(error = %e, "releasing a shared dedup claim failed; it expires with its lease");
            }
            return;
        }
    };
    match sd.table.commit(key, id, window).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            key,
            "another replica took this dedup key over after our lease ran out; both copies are persisted"
        ),
        // The event is durable: acknowledge it. The pending claim expires with its lease, after
        // which a redelivery to another replica is persisted there too (a duplicate, not a loss).
        Err(e) => tracing::error!(error = %e, "committing a shared dedup claim failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn a_record_too_large_is_the_senders_fault_and_the_rest_is_transient() {
        let too_large = store_rejection(StoreError::RecordTooLarge {
            bytes: 300 << 20,
            max: 256 << 20,
        });
        assert!(!too_large.is_transient());
        let api = too_large.into_api_error(1);
        assert_eq!(api.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(api.code, "event_too_large");
        assert!(api.message.contains("314572800"), "{}", api.message);
        assert_eq!(api.retry_after, None);

        for (e, code) in [
            (StoreError::Busy, "store_busy"),
            (StoreError::ShuttingDown, "shutting_down"),
            // Fail-stop after an I/O error: never a 2xx, never a 4xx the sender would drop.
            (StoreError::Failed("fsync: EIO".into()), "store_unavailable"),
        ] {
            let r = store_rejection(e);
            assert!(r.is_transient());
            let api = r.into_api_error(3);
            assert_eq!(
                (api.status, api.code, api.retry_after),
                (StatusCode::SERVICE_UNAVAILABLE, code, Some(3))
            );
        }
    }
}
