//! The admin API under `/admin`: targets, rules, sources, the dead-letter queue and its redrive,
//! stored events and the audit log.
//!
//! Access: with a token configured (`[admin].token` or `SWITCHBOARD_ADMIN_TOKEN`) every request
//! needs `Authorization: Bearer <token>`; without one the API answers only when the listener is on
//! loopback, so a gateway exposed on a network never has an open admin API by accident.
//! Every redrive is written to the audit log with who asked (the token's presence) and what moved.

use std::sync::Arc;

use axum::Router as AxumRouter;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use switchboard_store::{DlqFilter, RedriveSelector};

use crate::AppState;
use crate::delivery::{now_ms, wake};
use crate::error::ApiError;

/// Largest page a listing returns.
const MAX_PAGE: usize = 500;

/// The `/admin` routes.
pub fn router(state: Arc<AppState>) -> AxumRouter<Arc<AppState>> {
    AxumRouter::new()
        .route("/admin/targets", get(targets))
        .route("/admin/rules", get(rules))
        .route("/admin/sources", get(sources))
        .route("/admin/dlq", get(list_dlq))
        .route("/admin/dlq/redrive", post(redrive))
        .route("/admin/replay", post(replay))
        .route("/admin/dlq/{id}", get(get_dlq))
        .route("/admin/events/{id}", get(get_event))
        .route("/admin/audit", get(audit))
        .route("/admin/genesys", get(genesys_sources))
        .layer(axum::middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match &app.admin_token {
        Some(token) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "admin API needs Authorization: Bearer <token>",
                )
                .into_response();
            }
        }
        None if app.listen_is_loopback => {}
        None => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is off on a non-loopback listener until admin.token (or SWITCHBOARD_ADMIN_TOKEN) is set",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn targets(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let depths = app.store.queue_depths().await.map_err(ApiError::internal)?;
    let dlq = app.store.dlq_depths().await.map_err(ApiError::internal)?;
    let mut out: Vec<_> = app
        .targets
        .values()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "type": t.kind,
                "concurrency": t.concurrency,
                "queue_depth": depths.get(&t.name).copied().unwrap_or(0),
                "dlq_depth": dlq.get(&t.name).copied().unwrap_or(0),
            })
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(axum::Json(serde_json::json!({ "targets": out })).into_response())
}

async fn rules(State(app): State<Arc<AppState>>) -> Response {
    let out: Vec<_> = app
        .router
        .rules()
        .iter()
        .map(|r| {
            let pattern: serde_json::Value =
                serde_json::from_str(&r.pattern_json).unwrap_or(serde_json::Value::Null);
            serde_json::json!({
                "Name": r.name,
                "State": if r.enabled { "ENABLED" } else { "DISABLED" },
                "EventPattern": pattern,
                "Targets": r.targets.iter().map(|t| serde_json::json!({
                    "Id": t.id,
                    "Arn": t.target,
                    "RetryPolicy": {
                        "MaximumRetryAttempts": t.retry.maximum_retry_attempts,
                        "MaximumEventAgeInSeconds": t.retry.maximum_event_age_in_seconds,
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "rules": out })).into_response()
}

async fn sources(State(app): State<Arc<AppState>>) -> Response {
    let out: Vec<_> = app
        .sources
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "path": s.path, "scheme": s.scheme, "dedup_window_secs": s.pipeline.dedup_ttl_ms / 1000}))
        .collect();
    axum::Json(serde_json::json!({ "sources": out })).into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}

async fn list_dlq(
    State(app): State<Arc<AppState>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let filter = DlqFilter {
        target: q.target,
        ..DlqFilter::default()
    };
    let page = app
        .store
        .list_dlq(filter, q.page_token, page_limit(q.limit))
        .await
        .map_err(store_error)?;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|d| dead_letter_view(&app, d))
        .collect();
    Ok(
        axum::Json(serde_json::json!({"items": items, "next_page_token": page.next_page_token}))
            .into_response(),
    )
}

async fn get_dlq(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    match app.store.get_dlq(id).await.map_err(store_error)? {
        Some(d) => Ok(axum::Json(dead_letter_view(&app, &d)).into_response()),
        None => Err(ApiError::not_found(format!("no dead letter {id}"))),
    }
}

async fn get_event(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match app.store.get_event(&id).await.map_err(store_error)? {
        Some(e) => Ok(axum::Json(e).into_response()),
        None => Err(ApiError::not_found(format!("no stored event {id}"))),
    }
}

/// Body of `POST /admin/dlq/redrive`: exactly one of `ids`, `all`, or a `from`/`to` range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    #[serde(default)]
    ids: Option<Vec<i64>>,
    #[serde(default)]
    all: bool,
    /// RFC 3339, inclusive.
    #[serde(default)]
    from: Option<String>,
    /// RFC 3339, exclusive.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_time",
                format!("{field}: {s:?} is not RFC 3339: {e}"),
            )
        })?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}

async fn redrive(
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: RedriveRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let selector = match (&req.ids, req.all, &req.from, &req.to) {
        (Some(ids), false, None, None) if !ids.is_empty() => RedriveSelector::Ids(ids.clone()),
        (None, true, None, None) => RedriveSelector::All {
            target: req.target.clone(),
        },
        (None, false, from, to) if from.is_some() || to.is_some() => RedriveSelector::TimeRange {
            from_ms: from
                .as_deref()
                .map(|s| parse_time("from", s))
                .transpose()?
                .unwrap_or(0),
            to_ms: to
                .as_deref()
                .map(|s| parse_time("to", s))
                .transpose()?
                .unwrap_or(i64::MAX),
            target: req.target.clone(),
        },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of: \"ids\": [..], \"all\": true, or \"from\"/\"to\" (RFC 3339)",
            ));
        }
    };
    let detail = serde_json::json!({
        "ids": req.ids, "all": req.all, "from": req.from, "to": req.to, "target": req.target,
    });
    let report = app
        .store
        .redrive(selector, now_ms())
        .await
        .map_err(store_error)?;
    wake(&app.targets, report.per_target.keys().map(String::as_str));
    let mut audit_detail = detail;
    audit_detail["redriven"] = serde_json::json!(report.moved);
    audit_detail["missing"] = serde_json::json!(report.missing);
    app.store
        .append_audit(actor(&app), "dlq.redrive".into(), audit_detail)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(serde_json::json!({
        "redriven": report.moved,
        "targets": report.per_target,
        "missing": report.missing,
    }))
    .into_response())
}

async fn audit(
    State(app): State<Arc<AppState>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = app
        .store
        .list_audit(q.page_token, page_limit(q.limit))
        .await
        .map_err(store_error)?;
    Ok(axum::Json(page).into_response())
}

/// A dead letter as stored, plus the message attributes EventBridge puts on its DLQ messages, so
/// tooling written for an SQS dead-letter queue finds the same names.
fn dead_letter_view(app: &AppState, d: &switchboard_store::DeadLetter) -> serde_json::Value {
    let mut v = serde_json::to_value(d).unwrap_or(serde_json::Value::Null);
    let mut attrs = serde_json::json!({
        "RULE_ARN": app.router.rule_arn(&d.rule),
        "TARGET_ARN": d.target,
        "ERROR_CODE": d.error_code,
        "ERROR_MESSAGE": d.error_message,
        "RETRY_ATTEMPTS": d.retry_attempts,
    });
    if let Some(c) = &d.exhausted_condition {
        attrs["EXHAUSTED_RETRY_CONDITION"] = serde_json::json!(c);
    }
    v["attributes"] = attrs;
    v
}

/// Live state of every Genesys notification source: channels, gaps (time without a live channel
/// for a topic), losses and counters.
async fn genesys_sources(State(app): State<Arc<AppState>>) -> Response {
    let sources: Vec<_> = app
        .genesys_sources
        .get()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|(name, view)| {
            serde_json::json!({
                "source": name,
                "channels": view.channels(),
                "gaps": view.gaps(),
                "losses": view.losses(),
                "stats": view.stats(),
                "failure": view.failure(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "sources": sources })).into_response()
}

/// Body of `POST /admin/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// RFC 3339, inclusive.
    from: String,
    /// RFC 3339, exclusive.
    to: String,
    /// Only these rules (default: every rule).
    #[serde(default)]
    rules: Vec<String>,
    /// Only these targets (default: every target).
    #[serde(default)]
    targets: Vec<String>,
    /// Added to each replayed event as `replay-name`, as EventBridge does.
    #[serde(default)]
    name: Option<String>,
    /// Most events replayed by this call (default 100,000). When more remain the answer has
    /// `next_from`: the receive time of the first event not replayed (events received in that
    /// same millisecond before it are replayed again by a call starting there).
    #[serde(default)]
    limit: Option<usize>,
}

/// Events read per page while replaying: bounds memory and the size of each write.
const REPLAY_PAGE: usize = 500;

/// Replays stored events of a time range through the current rules: the ingest log is the
/// archive. Deliveries are new (attempts from zero) and the events carry `replay-name`.
async fn replay(
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ReplayRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let from_ms = parse_time("from", &req.from)?;
    let to_ms = parse_time("to", &req.to)?;
    if from_ms >= to_ms {
        return Err(ApiError::bad_request(
            "invalid_request",
            "from must be before to",
        ));
    }
    for r in &req.rules {
        if !app.router.rules().iter().any(|x| &x.name == r) {
            return Err(ApiError::bad_request(
                "unknown_rule",
                format!("no rule named {r:?}"),
            ));
        }
    }
    for t in &req.targets {
        if !app.targets.contains_key(t) {
            return Err(ApiError::bad_request(
                "unknown_target",
                format!("no target named {t:?}"),
            ));
        }
    }
    let limit = req.limit.unwrap_or(100_000).clamp(1, 1_000_000);
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("replay-{}", uuid::Uuid::new_v4()));
    let now = now_ms();
    let ingestion_time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(ApiError::internal)?;
    let (mut events, mut deliveries) = (0usize, 0usize);
    let mut per_target: std::collections::BTreeMap<String, u64> = Default::default();
    let mut after = None;
    let mut next_from = None;
    while next_from.is_none() {
        let page = app
            .store
            .events_between(from_ms, to_ms, after, REPLAY_PAGE)
            .await
            .map_err(store_error)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let mut batch = Vec::new();
        for e in page {
            if events == limit {
                next_from = Some(e.received_at_ms);
                break;
            }
            events += 1;
            let mut envelope = match serde_json::from_str::<serde_json::Value>(&e.envelope) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => {
                    tracing::warn!(event = %e.id, "stored envelope is not a JSON object; not replayed");
                    continue;
                }
            };
            if let Some(obj) = envelope.as_object_mut() {
                obj.insert(
                    "replay-name".into(),
                    serde_json::Value::String(name.clone()),
                );
            }
            let json = envelope.to_string();
            let (routed, failures) = app
                .router
                .route(&json, Some(&envelope), &|| ingestion_time.clone());
            for f in &failures {
                crate::telemetry::route_failure(&f.target);
                tracing::warn!(event = %e.id, rule = %f.rule, target = %f.target, error = %f.message, "input transformation failed; not replayed to this target");
            }
            for mut d in routed {
                if (req.rules.is_empty() || req.rules.contains(&d.rule))
                    && (req.targets.is_empty() || req.targets.contains(&d.target))
                {
                    // A replayed delivery is a row of its own: it carries its payload.
                    d.payload.get_or_insert_with(|| json.clone());
                    *per_target.entry(d.target.clone()).or_default() += 1;
                    batch.push((e.id.clone(), d));
                }
            }
        }
        deliveries += batch.len();
        app.store.enqueue(batch, now).await.map_err(store_error)?;
    }
    wake(&app.targets, per_target.keys().map(String::as_str));
    let detail = serde_json::json!({
        "from": req.from, "to": req.to, "rules": req.rules, "targets": req.targets,
        "name": name, "events": events, "deliveries": deliveries,
    });
    app.store
        .append_audit(actor(&app), "events.replay".into(), detail)
        .await
        .map_err(store_error)?;
    let next = next_from.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    });
    Ok(axum::Json(serde_json::json!({
        "replay_name": name,
        "events": events,
        "deliveries": deliveries,
        "targets": per_target,
        "truncated": next.is_some(),
        "next_from": next,
    }))
    .into_response())
}

fn actor(app: &AppState) -> String {
    if app.admin_token.is_some() {
        "admin-token".into()
    } else {
        "loopback".into()
    }
}

fn store_error(e: switchboard_store::StoreError) -> ApiError {
    match e {
        switchboard_store::StoreError::BadPageToken => {
            ApiError::bad_request("invalid_page_token", "page_token is not valid")
        }
        switchboard_store::StoreError::Busy => {
            ApiError::unavailable("store_busy", "store busy; retry", 1)
        }
        other => ApiError::internal(other),
    }
}
