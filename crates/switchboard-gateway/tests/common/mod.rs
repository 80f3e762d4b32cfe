//! Test harness: the real gateway on 127.0.0.1:0 with a temp data dir, real HTTP target servers
//! that record what they receive and answer from a script, and signing helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use switchboard_gateway::config::Config;
use switchboard_gateway::{Gateway, Overrides};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Generous upper bound for anything the tests wait for; a pass never waits this long.
pub const WAIT: Duration = Duration::from_secs(20);

pub const SECRET: &str = "test-secret-1";

/// One request a target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub status: u16,
}

/// What a target answers: scripted statuses first (with optional extra headers), then `default`.
#[derive(Debug, Default)]
pub struct Script {
    pub queue: VecDeque<(u16, Vec<(String, String)>)>,
    pub default: u16,
    /// Delay before answering (a slow or hanging target).
    pub delay: Duration,
}

pub struct TargetServer {
    pub url: String,
    pub script: Arc<Mutex<Script>>,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl TargetServer {
    pub async fn start() -> Self {
        Self::start_with(Script {
            default: 200,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(script: Script) -> Self {
        let script = Arc::new(Mutex::new(script));
        let (tx, rx) = mpsc::unbounded_channel();
        let s2 = script.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let s2 = s2.clone();
            let tx = tx.clone();
            async move {
                let (status, extra, delay) = {
                    let mut s = s2.lock().unwrap();
                    let (st, ex) = s.queue.pop_front().unwrap_or((s.default, Vec::new()));
                    (st, ex, s.delay)
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = tx.send(Received {
                    headers,
                    body,
                    status,
                });
                let mut resp = axum::response::Response::new(axum::body::Body::from("{}"));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                for (k, v) in extra {
                    resp.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TargetServer {
            url: format!("http://{addr}/hook"),
            script,
            rx,
        }
    }

    /// The next request, failing the test if none comes within `WAIT`.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("target received nothing in time")
            .expect("target channel closed")
    }

    /// Requests until one answered 2xx.
    pub async fn next_success(&mut self) -> Received {
        loop {
            let r = self.next().await;
            if (200..300).contains(&r.status) {
                return r;
            }
        }
    }

    /// No further request arrives within `d` (used only to check the absence of a duplicate
    /// after the positive case was already observed).
    pub async fn nothing_within(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }
}

pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub base: String,
    pub data: PathBuf,
    pub client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

impl TestGateway {
    /// Starts a gateway from TOML text on 127.0.0.1:0 with a fresh data dir.
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut t = Self::start_in(toml, data).await;
        t._dir = Some(dir);
        t
    }

    /// Starts (or restarts) a gateway on an existing data dir.
    pub async fn start_in(toml: &str, data: PathBuf) -> Self {
        let loaded =
            Config::from_toml(toml, "test.toml", PathBuf::from(".")).expect("test config is valid");
        let gw = Gateway::start(
            loaded,
            Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                data_dir: Some(data.clone()),
            },
        )
        .await
        .expect("gateway starts");
        let base = format!("http://{}", gw.local_addr());
        TestGateway {
            gw: Some(gw),
            base,
            data,
            client: reqwest::Client::new(),
            _dir: None,
        }
    }

    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await.expect("clean shutdown");
        }
        self._dir.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `path` with the given headers.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// POSTs a hub-signature-256 signed body.
    pub async fn post_signed(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let h = sign(&switchboard_verify::Scheme::HubSignature256, SECRET, body);
        self.post(path, &h, body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

/// A cheap, cloneable handle for posting to a running gateway from many tasks.
#[derive(Clone)]
pub struct Poster {
    pub base: String,
    pub client: reqwest::Client,
}

impl Poster {
    pub async fn post_signed(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let h = sign(&switchboard_verify::Scheme::HubSignature256, SECRET, body);
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in &h {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

impl TestGateway {
    pub fn clone_handle(&self) -> Poster {
        Poster {
            base: self.base.clone(),
            client: self.client.clone(),
        }
    }
}

/// The complete lines of a file a target is writing. A reader can see a batch's write cut
/// mid-line, so a last line without its newline is not written yet and is left out.
pub fn written_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

pub fn sign(
    scheme: &switchboard_verify::Scheme,
    secret: &str,
    body: &str,
) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    switchboard_verify::sign(scheme, secret, body.as_bytes(), &id, now).unwrap()
}

/// A Genesys notification with a unique CorrelationId.
pub fn notification(n: usize) -> String {
    serde_json::json!({
        "topicName": "v2.detail.events.conversation.8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f.customer.start",
        "version": "2",
        "eventBody": {"eventTime": 1741097110123u64, "conversationId": "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "mediaType": "VOICE", "n": n},
        "metadata": {"CorrelationId": format!("corr-{n}-{}", uuid::Uuid::new_v4())}
    })
    .to_string()
}

/// A config with the default hub-signature-256 source (secret inline) and the given targets/rules.
pub fn config_with(rest: &str) -> String {
    format!(
        r#"
[[sources]]
name = "genesys"
path = "/webhooks/genesys"
auth = {{ scheme = "hub-signature-256", secrets = ["{SECRET}"] }}

{rest}
"#
    )
}

/// One http target `name` at `url` with a catch-all rule and a fast retry policy. Its 10 s
/// timeout is long enough that a loaded machine's slow reply is not retried (a duplicate would
/// break the tests that count arrivals); tests of the timeout itself use [`http_route_timeout`].
pub fn http_route(name: &str, url: &str, retries: u32) -> String {
    http_route_timeout(name, url, retries, 10)
}

/// [`http_route`] with the target's timeout in seconds.
pub fn http_route_timeout(name: &str, url: &str, retries: u32, timeout_secs: u32) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
type = "http"
url = "{url}"
timeout_secs = {timeout_secs}

[[rules]]
name = "to-{name}"
[[rules.targets]]
id = "{name}"
arn = "{name}"
retry_policy = {{ maximum_retry_attempts = {retries}, maximum_event_age_in_seconds = 3600, base_delay_ms = 10, max_delay_ms = 50 }}
"#
    )
}

/// Reads one response (headers and a `content-length` body) from a kept-alive connection.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        buf.extend_from_slice(&body);
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no response in time");
    String::from_utf8_lossy(&buf).into_owned()
}
