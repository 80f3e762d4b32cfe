//! The Genesys Notification WebSocket source, wired to the pipeline.
//!
//! `switchboard-genesys` owns the channels and sockets; this module only adapts its
//! [`EventSink`] to [`pipeline::accept`], so a WebSocket event is "taken" exactly when it is
//! durable, and duplicates from channel rollover overlap are absorbed by the same dedup
//! (`topicName` + `CorrelationId`) as everything else.

use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use switchboard_genesys::notifications::{EventSink, SinkError};

use crate::AppState;
use crate::pipeline::{self, PipelineSource};
use crate::telemetry;

/// Hands notification messages to the pipeline.
pub struct PipelineSink {
    /// Gateway state (store, router, targets).
    pub app: Arc<AppState>,
    /// The source's pipeline settings.
    pub source: PipelineSource,
}

impl EventSink for PipelineSink {
    fn accept(&self, message: serde_json::Value) -> BoxFuture<'_, Result<(), SinkError>> {
        async move {
            let started = std::time::Instant::now();
            let result = pipeline::accept(&self.app, &self.source, message, None).await;
            let outcome = match &result {
                Ok(a) if a.duplicate => "duplicate",
                Ok(_) => "accepted",
                Err(r) if r.is_transient() => "unavailable",
                Err(_) => "not_an_event",
            };
            telemetry::ingest(&self.source.name, outcome, started.elapsed());
            result.map(|_| ()).map_err(|r| SinkError {
                transient: r.is_transient(),
                message: r.to_string(),
            })
        }
        .boxed()
    }
}
