//! Hostile input over raw TCP: huge declared and streamed bodies, deep nesting, slow headers.
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
    let store = gw.gw.as_ref().unwrap().state().store.clone();
    assert_eq!(
        store.table_counts().await.unwrap().get("events").copied(),
        Some(0)
    );
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
async fn connections_beyond_the_limit_wait_and_idle_ones_are_reaped() {
    let gw = TestGateway::start(&config_with(
        "[server]\nmax_connections = 20\nheader_timeout_secs = 1\n",
    ))
    .await;
    // 100 idle connections: five times the limit.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(raw(&gw).await);
    }
    // A real client gets through once idle connections are closed by the header timeout.
    let t0 = Instant::now();
    let resp = tokio::time::timeout(WAIT, gw.client.get(gw.url("/healthz")).send()).await;
    let resp = resp.expect("server stayed unresponsive").unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    eprintln!(
        "answered after {:?} behind 100 idle connections",
        t0.elapsed()
    );
    drop(idle);
    gw.stop().await;
}
