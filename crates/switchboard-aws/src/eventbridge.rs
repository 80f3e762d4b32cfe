//! The EventBridge target: `PutEvents` with up to 10 entries per call, each call under the
//! request size limit computed with AWS's entry-size formula.
//!
//! Classic `PutEvents` has no idempotency token and no way to set the event id: every call
//! creates new events with new ids. So a call that timed out after AWS accepted it is sent again
//! and the bus holds the event twice, with two different `id`s. Consumers of the bus deduplicate
//! on what the payload carries: `detail.metadata.CorrelationId` for Genesys events (what Genesys'
//! own EventBridge integration gives them too), or a field an input transformer adds. Our other
//! targets (HTTP, SQS, S3, files) receive the envelope with its stable `id`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_eventbridge::primitives::{DateTime, DateTimeFormat};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

use crate::in_order;
use crate::outcome::{Outcome, classify_sdk_error, is_retryable_code};

/// Entries per `PutEvents` call (the API maximum).
pub const MAX_ENTRIES: usize = 10;

/// AWS's current request limit (raised from 256 KB on 2026-01-29).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The previous limit, still selectable for accounts or regions that enforce it.
pub const LEGACY_MAX_REQUEST_BYTES: usize = 256 * 1024;

/// An entry ready to send, with its size by AWS's formula.
#[derive(Debug, Clone)]
pub struct PreparedEntry {
    source: String,
    detail_type: String,
    detail: String,
    time: Option<DateTime>,
    resources: Vec<String>,
    /// Size by <https://docs.aws.amazon.com/eventbridge/latest/userguide/calculate-putevents-entry-size.html>.
    pub size: usize,
}

/// Settings of one EventBridge target.
#[derive(Debug, Clone)]
pub struct EventBridgeSettings {
    /// Bus name or ARN (`EventBusName` accepts both).
    pub bus: String,
    /// Request limit; an entry larger than this alone cannot be sent.
    pub max_request_bytes: usize,
    /// `PutEvents` calls in flight at once.
    pub concurrency: usize,
    /// `Source` for payloads that are not EventBridge events (after an input transformer).
    pub source: String,
    /// `DetailType` for such payloads.
    pub detail_type: String,
}

/// Counters for the batching benchmark and `/metrics`.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// `PutEvents` calls made.
    pub calls: AtomicU64,
    /// Entries sent in them.
    pub entries: AtomicU64,
    /// The largest request by the size formula.
    pub max_request_bytes: AtomicU64,
}

/// Sends events to one bus.
#[derive(Debug, Clone)]
pub struct EventBridgeSender {
    client: aws_sdk_eventbridge::Client,
    settings: EventBridgeSettings,
    /// Shared counters.
    pub stats: Arc<BatchStats>,
}

/// Turns a payload into an entry. A payload shaped like an EventBridge event (`source`,
/// `detail-type`, object `detail`) keeps its fields; any other JSON object becomes the `Detail`
/// of an entry with the target's `source` and `detail_type`.
pub fn prepare(payload: &str, settings: &EventBridgeSettings) -> Result<PreparedEntry, Outcome> {
    let value: Value = serde_json::from_str(payload)
        .map_err(|e| Outcome::fatal("MalformedDetail", format!("payload is not JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(Outcome::fatal(
            "MalformedDetail",
            "payload is not a JSON object; EventBridge Detail must be one",
        ));
    };
    let text = |k: &str| map.get(k).and_then(Value::as_str);
    let (source, detail_type, detail, time, resources) =
        match (text("source"), text("detail-type"), map.get("detail")) {
            (Some(s), Some(dt), Some(d @ Value::Object(_))) => {
                let time = match text("time") {
                    Some(t) => Some(DateTime::from_str(t, DateTimeFormat::DateTime).map_err(
                        |e| Outcome::fatal("InvalidArgument", format!("time {t:?}: {e}")),
                    )?),
                    None => None,
                };
                let resources = map
                    .get("resources")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                (s.to_owned(), dt.to_owned(), d.to_string(), time, resources)
            }
            _ => (
                settings.source.clone(),
                settings.detail_type.clone(),
                payload.to_owned(),
                None,
                Vec::new(),
            ),
        };
    let size = switchboard_event::put_events_entry_size(
        time.is_some(),
        &source,
        &detail_type,
        &detail,
        &resources,
    );
    Ok(PreparedEntry {
        source,
        detail_type,
        detail,
        time,
        resources,
        size,
    })
}

/// Groups entries into calls of at most [`MAX_ENTRIES`] and `max_bytes`.
pub fn plan_batches(sizes: &[usize], max_bytes: usize) -> Vec<Range<usize>> {
    crate::plan_batches(sizes, MAX_ENTRIES, max_bytes)
}

impl EventBridgeSender {
    /// A sender for one bus.
    pub fn new(client: aws_sdk_eventbridge::Client, settings: EventBridgeSettings) -> Self {
        EventBridgeSender {
            client,
            settings,
            stats: Arc::new(BatchStats::default()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &EventBridgeSettings {
        &self.settings
    }

    /// Sends the payloads; one outcome per payload, in order. Calls run `concurrency` at a time.
    pub async fn send(&self, payloads: &[&str]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; payloads.len()];
        // Index into `payloads` of each sendable entry.
        let mut entries = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            match prepare(p, &self.settings) {
                Ok(e) if e.size > self.settings.max_request_bytes => {
                    outcomes[i] = Some(Outcome::fatal(
                        "EntryTooLarge",
                        format!(
                            "entry is {} bytes by the PutEvents size formula; the limit is {}",
                            e.size, self.settings.max_request_bytes
                        ),
                    ));
                }
                Ok(e) => entries.push((i, e)),
                Err(o) => outcomes[i] = Some(o),
            }
        }
        let sizes: Vec<usize> = entries.iter().map(|(_, e)| e.size).collect();
        let batches = plan_batches(&sizes, self.settings.max_request_bytes);
        let sent = in_order(batches, self.settings.concurrency, |r| {
            self.put(&entries[r.clone()], r)
        })
        .await;
        for (range, results) in sent {
            for ((i, _), o) in entries[range].iter().zip(results) {
                outcomes[*i] = Some(o);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retryable("INTERNAL", "entry was not sent")))
            .collect()
    }

    async fn put(
        &self,
        batch: &[(usize, PreparedEntry)],
        range: Range<usize>,
    ) -> (Range<usize>, Vec<Outcome>) {
        let bytes: usize = batch.iter().map(|(_, e)| e.size).sum();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .entries
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .max_request_bytes
            .fetch_max(bytes as u64, Ordering::Relaxed);
        let req_entries: Vec<PutEventsRequestEntry> = batch
            .iter()
            .map(|(_, e)| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.settings.bus)
                    .source(&e.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .set_time(e.time)
                    .set_resources((!e.resources.is_empty()).then(|| e.resources.clone()))
                    .build()
            })
            .collect();
        let res = self
            .client
            .put_events()
            .set_entries(Some(req_entries))
            .send()
            .await;
        let outcomes = match res {
            Ok(out) => {
                let results = out.entries();
                if results.len() != batch.len() {
                    // The API promises one result per entry in order; without that we cannot
                    // tell which were taken, and resending all is the lossless choice.
                    vec![
                        Outcome::retryable(
                            "BAD_RESPONSE",
                            format!(
                                "PutEvents answered {} results for {} entries",
                                results.len(),
                                batch.len()
                            )
                        );
                        batch.len()
                    ]
                } else {
                    results
                        .iter()
                        .map(|r| match r.error_code() {
                            None => Outcome::Delivered,
                            Some(code) => {
                                let message = r.error_message().unwrap_or("").to_owned();
                                if is_retryable_code(code) {
                                    Outcome::Retryable {
                                        code: code.to_owned(),
                                        message,
                                    }
                                } else {
                                    Outcome::Fatal {
                                        code: code.to_owned(),
                                        message,
                                    }
                                }
                            }
                        })
                        .collect()
                }
            }
            Err(e) => vec![classify_sdk_error(&e); batch.len()],
        };
        (range, outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EventBridgeSettings {
        EventBridgeSettings {
            bus: "b".into(),
            max_request_bytes: 1000,
            concurrency: 2,
            source: "switchboard".into(),
            detail_type: "transformed".into(),
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries_and_the_byte_limit() {
        assert_eq!(plan_batches(&[1; 25], 1000), vec![0..10, 10..20, 20..25]);
        assert_eq!(plan_batches(&[400, 400, 400, 100], 1000), vec![0..2, 2..4]);
        // An oversized entry alone, neighbours unaffected.
        assert_eq!(plan_batches(&[10, 5000, 10], 1000), vec![0..1, 1..2, 2..3]);
        assert_eq!(plan_batches(&[], 1000), Vec::<Range<usize>>::new());
        // Exactly at the limit fits.
        assert_eq!(plan_batches(&[500, 500, 1], 1000), vec![0..2, 2..3]);
    }

    #[test]
    fn envelopes_keep_their_fields_and_sizes_follow_the_formula() {
        let p = r#"{"version":"0","id":"x","detail-type":"v2.users.{id}.presence","source":"genesys.cloud","account":"1","time":"2026-11-23T10:00:00Z","region":"us-east-1","resources":["arn:a"],"detail":{"a":1}}"#;
        let e = prepare(p, &settings()).unwrap();
        assert_eq!(e.source, "genesys.cloud");
        assert_eq!(e.detail, r#"{"a":1}"#);
        assert_eq!(
            e.size,
            14 + "genesys.cloud".len() + "v2.users.{id}.presence".len() + 7 + 5
        );
        let t = prepare(r#"{"conversationId":"c"}"#, &settings()).unwrap();
        assert_eq!(t.detail_type, "transformed");
        assert_eq!(t.detail, r#"{"conversationId":"c"}"#);
        assert!(matches!(
            prepare("[1]", &settings()),
            Err(Outcome::Fatal { code, .. }) if code == "MalformedDetail"
        ));
    }
}
