//! Hostile input over raw TCP: huge declared and streamed bodies, deep nesting, slow headers and
//! bodies.
//! Each gets its documented answer and nothing is stored.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes or `WAIT` passes; returns what arrived.
async fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `error.code` of a raw HTTP response's JSON body.
fn error_code(resp: &str) -> String {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

async fn assert_nothing_stored(gw: &TestGateway) {
    let store = gw.gw.as_ref().unwrap().state().store.clone();
    assert_eq!(
        store.table_counts().await.unwrap().get("events").copied(),
        Some(0)
    );
}

#[tokio::test]
async fn a_gigabyte_declared_body_is_refused_without_reading_it() {
    let gw = TestGateway::start(&config_with("")).await;
    let mut s = raw(&gw).await;
    let head = "POST /webhooks/genesys HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n{\"a\":";
    s.write_all(head.as_bytes()).await.unwrap();
    // The answer comes although we never send the body.
    let resp = read_all(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("body_too_large"), "{resp}");
    gw.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_off() {
    let gw = TestGateway::start(&config_with("[server]\nmax_body_bytes = 65536\n")).await;
    let mut s = raw(&gw).await;
    let head = "POST /webhooks/genesys HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16384, "x".repeat(16384));
    // Send up to 1 MiB; the server answers once it has seen 64 KiB, and may close early.
    for _ in 0..64 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let resp = read_all(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    gw.stop().await;
}

#[tokio::test]
async fn deep_nesting_is_refused_before_parsing() {
    let gw = TestGateway::start(&config_with("")).await;
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let h = sign(&switchboard_verify::Scheme::HubSignature256, SECRET, &body);
    let (s, v) = gw.post("/webhooks/genesys", &h, body).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "json_too_deep");
    let body = format!(
        "{{\"a\":{}1{}}}",
        "{\"b\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let h = sign(&switchboard_verify::Scheme::HubSignature256, SECRET, &body);
    let (s, _) = gw.post("/webhooks/genesys", &h, body).await;
    assert_eq!(s, 400);
    assert_nothing_stored(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = TestGateway::start(&config_with("[server]\nheader_timeout_secs = 1\n")).await;
    let mut s = raw(&gw).await;
    s.write_all(b"POST /webhooks/genesys HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    // Never finish the headers: the server must close the connection on its own.
    let _ = read_all(&mut s).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "connection held for {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
    // The server still answers others.
    assert_eq!(gw.get("/healthz").await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_never_completes_is_answered_408_after_the_request_timeout() {
    // Slowloris on the body: the headers are complete (so the header timeout does not apply)
    // and the body trickles in, then stops short of its declared length. The request timeout
    // ends it with a JSON 408, the connection closes, and nothing is stored.
    let gw = TestGateway::start(&config_with(
        "[server]\nheader_timeout_secs = 30\nrequest_timeout_secs = 1\n",
    ))
    .await;
    let mut s = raw(&gw).await;
    let body = r#"{"topicName":"v2.users.u1.presence","eventBody":{}}"#;
    let h = sign(&switchboard_verify::Scheme::HubSignature256, SECRET, body);
    let mut head = format!(
        "POST /webhooks/genesys HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in &h {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    // All of the body but its last byte, one byte at a time.
    for b in body.as_bytes()[..body.len() - 1].chunks(1) {
        s.write_all(b).await.unwrap();
    }
    let resp = read_response(&mut s).await;
    let took = t0.elapsed();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert_eq!(error_code(&resp), "request_timeout", "{resp}");
    assert!(
        took >= Duration::from_millis(900),
        "answered before the timeout: {took:?}"
    );
    // The connection is not left open for the rest of the body: end of stream (or a reset).
    let mut more = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut more))
        .await
        .expect("connection still open")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&more[..n]));
    assert_eq!(gw.get("/healthz").await.0, 200);
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Counted (the recorder is the process's: other tests of this binary never time out).
    assert!(
        metrics.contains(
            r#"switchboard_ingest_requests_total{source="genesys",outcome="request_timeout"} 1"#
        ),
        "{metrics}"
    );
    assert_nothing_stored(&gw).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_source_path_takes_only_post() {
    let gw = TestGateway::start(&config_with("")).await;
    let mut s = raw(&gw).await;
    s.write_all(b"GET /webhooks/genesys HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_all(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("allow: post\r\n"),
        "{resp}"
    );
    assert_eq!(error_code(&resp), "method_not_allowed", "{resp}");
    gw.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_give_up_their_slots_to_waiting_clients() {
    // Two serving slots, a 30 s idle timeout: two clients that each made a request and keep
    // their connection open would otherwise hold both slots for 30 s.
    let gw = TestGateway::start(&config_with(
        "[server]\nmax_connections = 2\nheader_timeout_secs = 30\n",
    ))
    .await;
    let holders: Vec<reqwest::Client> = (0..2).map(|_| reqwest::Client::new()).collect();
    for c in &holders {
        assert_eq!(
            c.get(gw.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
    // A third client (a new connection each time) is served well within the idle timeout.
    let t0 = Instant::now();
    for _ in 0..5 {
        let fresh = reqwest::Client::new();
        let resp = tokio::time::timeout(WAIT, fresh.get(gw.url("/healthz")).send())
            .await
            .expect("a waiting client was starved by idle keep-alive connections")
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "5 requests took {took:?}");
    // The reclaimed clients reconnect transparently.
    for c in &holders {
        assert_eq!(
            c.get(gw.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
    gw.stop().await;
}

/// A connection whose request is being handled: its handler is reading a body that has 5 of
/// its 7 bytes; `1}` completes it (an unsigned body: 401).
async fn mid_request(gw: &TestGateway) -> TcpStream {
    let mut busy = raw(gw).await;
    busy.write_all(
        b"POST /webhooks/genesys HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 7\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // hyper sends `100 Continue` when the handler first polls the body: it is running now.
    let cont = read_response(&mut busy).await;
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
    busy.write_all(b"{\"a\":").await.unwrap();
    busy
}

#[tokio::test]
async fn a_waiting_client_takes_the_slot_of_an_idle_connection_never_of_a_busy_one() {
    // Two serving slots, both taken: `busy` is in the middle of a request (its handler reads
    // the body), `idle` finished one and keeps its connection. A third client must get the
    // idle one's slot; the busy one must finish its request and stay usable.
    let gw = TestGateway::start(&config_with(
        "[server]\nmax_connections = 2\nheader_timeout_secs = 30\n",
    ))
    .await;
    let mut busy = mid_request(&gw).await;

    let mut idle = raw(&gw).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let fresh = reqwest::Client::new();
    let resp = tokio::time::timeout(WAIT, fresh.get(gw.url("/healthz")).send())
        .await
        .expect("the waiting client was not given a slot")
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The idle connection was the one closed (end of stream, not a timeout).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection was not closed: {closed:?} {rest:?}"
    );

    // The busy one completes its request (an unsigned body: 401) and keeps its connection.
    busy.write_all(b"1}").await.unwrap();
    let answer = read_response(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "the busy connection was told to close: {answer}"
    );
    busy.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let again = read_response(&mut busy).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_finds_no_slot_in_time_is_told_to_retry() {
    // The only serving slot is held by a request whose body never completes. A client that
    // spoke must not wait behind it for as long as that request may take (60 s here): after the
    // header timeout it is answered 503 with `Retry-After` and closed, and nothing is stored.
    let gw = TestGateway::start(&config_with(
        "[server]\nmax_connections = 1\nheader_timeout_secs = 1\nrequest_timeout_secs = 60\nretry_after_secs = 7\n",
    ))
    .await;
    let mut busy = mid_request(&gw).await;

    let mut waiter = raw(&gw).await;
    let t0 = Instant::now();
    waiter
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let resp = read_all(&mut waiter).await;
    let took = t0.elapsed();
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 7\r\n"), "{resp}");
    assert!(lower.contains("connection: close\r\n"), "{resp}");
    assert_eq!(error_code(&resp), "server_busy", "{resp}");
    assert!(
        took >= Duration::from_millis(900),
        "refused before the header timeout: {took:?}"
    );

    // The busy request still completes (unsigned: 401); it was asked to hand its slot over.
    busy.write_all(b"1}").await.unwrap();
    let answer = read_response(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(gw.get("/healthz").await.0, 200);
    assert_nothing_stored(&gw).await;
    gw.stop().await;
}
