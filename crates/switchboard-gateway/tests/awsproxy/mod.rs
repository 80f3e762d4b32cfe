//! A fault-injecting, measuring HTTP proxy between the gateway and moto, for EventBridge
//! `PutEvents`. moto never throttles, so the partial failures and broken calls AWS can produce
//! are made here:
//! - entries whose `Detail` carries `"fault": "throttle-once:<n>"` / `"internal-once:<n>"` fail
//!   the first time with `ThrottlingException` / `InternalFailure` (retryable), then pass;
//! - entries with `"fault": "malformed"` always fail with `MalformedDetail` (not retryable);
//! - chosen calls (by number) answer 500, or hang past the client's timeout without reaching
//!   moto, or reach moto and then hang (the response is lost: AWS has the events, we resend).
//!
//! It can also serialize every other call (`serialize`): moto evaluates a DynamoDB conditional
//! write and applies it without holding a lock across the two, so under concurrency two
//! `attribute_not_exists` puts of one key can both succeed (measured: 4 of 300 concurrent pairs).
//! Real DynamoDB applies a conditional write atomically; serializing the calls restores that, so
//! the replica test checks our claim protocol and not moto's thread safety.
//!
//! Failed entries are removed from the request forwarded to moto and spliced back into its
//! response at their positions, exactly as a real partial failure looks. Every PutEvents call is
//! measured independently of the gateway: entries, and bytes by AWS's entry-size formula.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What to do to one whole call.
#[derive(Debug, Clone, Copy)]
pub enum CallFault {
    /// Answer 500 without forwarding.
    Http500,
    /// Hang this long without forwarding.
    Hang(Duration),
    /// Forward, then hang this long before answering (response lost).
    ForwardThenHang(Duration),
}

/// Counters of PutEvents calls that reached the proxy.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// PutEvents calls (including faulted ones).
    pub calls: u64,
    /// Entries in them.
    pub entries: u64,
    /// Largest request by the entry-size formula.
    pub max_request_bytes: usize,
    /// Largest number of entries in one call.
    pub max_entries: usize,
    /// Entries failed by the proxy, by code.
    pub injected: HashMap<String, u64>,
}

#[derive(Debug, Default)]
struct State {
    stats: Stats,
    seen_once: HashSet<String>,
    call_faults: HashMap<u64, CallFault>,
    open: bool,
}

/// The running proxy.
#[derive(Clone)]
pub struct Proxy {
    /// Base URL to give the gateway as its AWS endpoint.
    pub url: String,
    state: Arc<Mutex<State>>,
    gate: Arc<tokio::sync::Notify>,
}

/// One call at a time to the upstream, when serializing.
type Serial = Option<Arc<tokio::sync::Mutex<()>>>;

fn entry_size(e: &Value) -> usize {
    let s = |k: &str| e.get(k).and_then(Value::as_str).map_or(0, str::len);
    let time = if e.get("Time").is_some() { 14 } else { 0 };
    let resources: usize = e
        .get("Resources")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::len).sum())
        .unwrap_or(0);
    time + s("Source") + s("DetailType") + s("Detail") + resources
}

fn fault_marker(e: &Value) -> Option<String> {
    let detail: Value = serde_json::from_str(e.get("Detail")?.as_str()?).ok()?;
    let find = |v: &Value| {
        v.get("eventBody")
            .and_then(|b| b.get("fault"))
            .or_else(|| v.get("fault"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    find(&detail)
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (moto). `open = false` holds every PutEvents call
    /// until [`Proxy::open`] (to build a backlog).
    pub async fn start(upstream: String, open: bool) -> Self {
        Self::start_with(upstream, open, false).await
    }

    /// A proxy that forwards non-PutEvents calls one at a time (see the module docs).
    pub async fn serializing(upstream: String) -> Self {
        Self::start_with(upstream, true, true).await
    }

    async fn start_with(upstream: String, open: bool, serialize: bool) -> Self {
        let serial: Serial = serialize.then(|| Arc::new(tokio::sync::Mutex::new(())));
        let state = Arc::new(Mutex::new(State {
            open,
            ..State::default()
        }));
        let gate = Arc::new(tokio::sync::Notify::new());
        let client = reqwest::Client::new();
        let (st, g) = (state.clone(), gate.clone());
        let app =
            axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let (st, g, client, upstream, serial) = (
                        st.clone(),
                        g.clone(),
                        client.clone(),
                        upstream.clone(),
                        serial.clone(),
                    );
                    async move {
                        handle(st, g, client, upstream, serial, method, uri, headers, body).await
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { url, state, gate }
    }

    /// Lets held calls through, and all later ones.
    pub fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.gate.notify_waiters();
    }

    /// Faults call number `n` (1-based, counting PutEvents calls).
    pub fn fault_call(&self, n: u64, f: CallFault) {
        self.state.lock().unwrap().call_faults.insert(n, f);
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap().stats.clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    st: Arc<Mutex<State>>,
    gate: Arc<tokio::sync::Notify>,
    client: reqwest::Client,
    upstream: String,
    serial: Serial,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_put_events = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.ends_with(".PutEvents"));
    if !is_put_events {
        let _one_at_a_time = match &serial {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        return forward(&client, &upstream, method, &uri, &headers, body.to_vec())
            .await
            .0;
    }
    loop {
        let notified = gate.notified();
        if st.lock().unwrap().open {
            break;
        }
        notified.await;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "proxy: bad json").into_response(),
    };
    let entries = req
        .get("Entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Decide per-entry failures and the call fault under the lock, then act without it.
    let (call_fault, failed) = {
        let mut s = st.lock().unwrap();
        s.stats.calls += 1;
        s.stats.entries += entries.len() as u64;
        let bytes: usize = entries.iter().map(entry_size).sum();
        s.stats.max_request_bytes = s.stats.max_request_bytes.max(bytes);
        s.stats.max_entries = s.stats.max_entries.max(entries.len());
        let n = s.stats.calls;
        let call_fault = s.call_faults.get(&n).copied();
        let mut failed: Vec<Option<(&'static str, &'static str)>> = vec![None; entries.len()];
        // A call that fails as a whole has no per-entry results; one whose response is lost
        // still had its entries judged by "AWS".
        if matches!(call_fault, None | Some(CallFault::ForwardThenHang(_))) {
            for (i, e) in entries.iter().enumerate() {
                let Some(m) = fault_marker(e) else { continue };
                let f = if m == "malformed" {
                    Some(("MalformedDetail", "Detail is malformed."))
                } else if m.starts_with("throttle-once:") && s.seen_once.insert(m.clone()) {
                    Some(("ThrottlingException", "Rate exceeded."))
                } else if m.starts_with("internal-once:") && s.seen_once.insert(m.clone()) {
                    Some(("InternalFailure", "Internal failure."))
                } else {
                    None
                };
                if let Some((code, _)) = f {
                    *s.stats.injected.entry(code.to_owned()).or_default() += 1;
                }
                failed[i] = f;
            }
        }
        (call_fault, failed)
    };
    match call_fault {
        Some(CallFault::Http500) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/x-amz-json-1.1")],
                r#"{"__type":"InternalException","message":"injected"}"#,
            )
                .into_response();
        }
        Some(CallFault::Hang(d)) => {
            tokio::time::sleep(d).await;
            return (StatusCode::INTERNAL_SERVER_ERROR, "late").into_response();
        }
        _ => {}
    }
    let keep: Vec<Value> = entries
        .iter()
        .zip(&failed)
        .filter(|(_, f)| f.is_none())
        .map(|(e, _)| e.clone())
        .collect();
    let mut upstream_results: std::vec::IntoIter<Value> = Vec::new().into_iter();
    if !keep.is_empty() {
        let mut fwd = req.clone();
        fwd["Entries"] = Value::Array(keep);
        let body = serde_json::to_vec(&fwd).unwrap();
        let (resp, status, text) = forward(&client, &upstream, method, &uri, &headers, body).await;
        if status != 200 {
            return resp;
        }
        let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        upstream_results = v
            .get("Entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter();
    }
    let mut results = Vec::with_capacity(entries.len());
    let mut failed_count = 0;
    for f in &failed {
        match f {
            Some((code, msg)) => {
                failed_count += 1;
                results.push(json!({"ErrorCode": code, "ErrorMessage": msg}));
            }
            None => {
                let r = upstream_results.next().unwrap_or(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "proxy: missing upstream result"}));
                if r.get("ErrorCode").is_some() {
                    failed_count += 1;
                }
                results.push(r);
            }
        }
    }
    if let Some(CallFault::ForwardThenHang(d)) = call_fault {
        tokio::time::sleep(d).await;
    }
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"FailedEntryCount": failed_count, "Entries": results}).to_string(),
    )
        .into_response()
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> (Response, u16, Bytes) {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = client.request(method, format!("{upstream}{path}"));
    for (k, v) in headers {
        if k == "host" || k == "content-length" {
            continue;
        }
        req = req.header(k, v);
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let r = (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
            return (r, 502, Bytes::new());
        }
    };
    let status = resp.status().as_u16();
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out_headers.insert(k.clone(), v.clone());
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        bytes.clone(),
    )
        .into_response();
    r.headers_mut().extend(out_headers);
    (r, status, bytes)
}
