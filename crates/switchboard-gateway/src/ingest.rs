//! HTTP ingest: one request is one pass through verify → [`crate::pipeline`] → ack.
//!
//! The order of checks is chosen so that the cheapest refusal comes first and nothing is parsed
//! before it is authenticated: declared size (413), content type (415), body read under the limit
//! (413), signature over the raw bytes (401), JSON depth and parse (400), normalization (400).
//! Only then is the event routed and handed to the store, and the answer waits for the fsync.
//! Status codes follow DESIGN.md's ack table: a 4xx stops the sender's retries, a 5xx asks for one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchboard_verify::{HeaderLookup, Verifier};

use crate::AppState;
use crate::delivery::now_ms;
use crate::error::ApiError;
use crate::pipeline::{self, PipelineSource};
use crate::telemetry;

/// A configured HTTP source at run time.
#[derive(Debug)]
pub struct SourceRuntime {
    /// Name (metrics, store).
    pub name: String,
    /// URL path.
    pub path: String,
    /// Scheme name for listings.
    pub scheme: &'static str,
    /// Signature / credential check.
    pub verifier: Verifier,
    /// What the pipeline needs to know about the source.
    pub pipeline: PipelineSource,
    /// Per-request metric handles.
    pub metrics: telemetry::SourceMetrics,
}

struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_bytes())
    }
}

/// The handler for one source, with hyper's body as the listener hands it over (see
/// [`crate::HttpApp`]). It answers within `server.request_timeout_secs` (see [`ingest`] for
/// which answer a timeout gets).
pub async fn handle(
    app: Arc<AppState>,
    source: Arc<SourceRuntime>,
    headers: HeaderMap,
    body: Incoming,
) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started)
        + Duration::from_secs(app.config.config.server.request_timeout_secs);
    let (outcome, resp) = match ingest(&app, &source, &headers, body, deadline).await {
        Ok(Ack { id, duplicate }) => {
            let status = if duplicate {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            // Written directly: the answer every sender waits for, on every request.
            let body = format!(
                r#"{{"id":{},"duplicate":{duplicate}}}"#,
                serde_json::Value::from(id)
            );
            (
                if duplicate { "duplicate" } else { "accepted" },
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
            )
        }
        Err(e) => (e.code, e.into_response()),
    };
    source.metrics.record(outcome, started.elapsed());
    resp
}

struct Ack {
    id: String,
    duplicate: bool,
}

/// Both waits of a request end at `deadline`, with different answers. A body that has not
/// arrived by then is the sender's problem: 408. An event that is complete but not persisted by
/// then (a stalled disk) is ours, and the answer must make the sender retry, which senders do on
/// 5xx and not on 408 (EventBridge API destinations retry 429 and 5xx only): 503 with
/// `Retry-After`. If the store persists it after all, the retry is answered as a duplicate.
async fn ingest(
    app: &AppState,
    source: &SourceRuntime,
    headers: &HeaderMap,
    body: Incoming,
    deadline: tokio::time::Instant,
) -> Result<Ack, ApiError> {
    let limit = app.config.config.server.max_body_bytes;
    if app.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the gateway is shutting down",
            app.retry_after,
        ));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    check_content_type(headers)?;
    // A timer is registered only if the body is not complete on the first poll.
    let read = tokio::time::timeout_at(
        deadline,
        http_body_util::Limited::new(body, limit).collect(),
    );
    let bytes = match read.await.map_err(|_| ApiError::request_timeout())? {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit)),
        Err(e) => {
            return Err(ApiError::bad_request(
                "body_read_failed",
                format!("could not read the body: {e}"),
            ));
        }
    };

    let verified = source
        .verifier
        .verify(&Headers(headers), &bytes, now_ms() / 1000)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.public_reason()))?;

    switchboard_event::check_json_depth(&bytes, app.config.config.server.max_json_depth)
        .map_err(|e| ApiError::bad_request("json_too_deep", e.to_string()))?;
    let retry_after = app.retry_after;
    let delivery_id = verified.delivery_id.as_deref();
    let stamp = pipeline::Stamp::now().map_err(|r| r.into_api_error(retry_after))?;
    // Genesys notifications are normalized straight from the text; anything else (and every
    // malformed body, so that errors come from one place) is parsed first.
    let fast = std::str::from_utf8(&bytes).ok().and_then(|text| {
        switchboard_event::normalize_text(
            text,
            &stamp.context(delivery_id),
            &source.pipeline.normalize,
        )
    });
    let body = match fast {
        Some(n) => pipeline::Body::Normalized(n),
        None => {
            let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "not_an_object",
                    "body must be a JSON object",
                ));
            }
            pipeline::Body::Value(value)
        }
    };
    let persist = pipeline::accept_with(app, &source.pipeline, &stamp, body, delivery_id);
    let accepted = tokio::time::timeout_at(deadline, persist)
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "store_timeout",
                "the event was not persisted within server.request_timeout_secs; retry",
                retry_after,
            )
        })?
        .map_err(|r| r.into_api_error(retry_after))?;
    Ok(Ack {
        id: accepted.id,
        duplicate: accepted.duplicate,
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body exceeds {limit} bytes"),
    )
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {ct:?}"),
        ))
    }
}
