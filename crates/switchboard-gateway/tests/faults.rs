//! Fault suite at the TCP level: targets that reset connections, time out, or are down and come
//! back. Nothing acknowledged is lost, nothing reaches the DLQ before the retry policy is spent.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How the raw target treats the n-th connection (0-based).
#[derive(Clone, Copy)]
enum Fault {
    /// Close with RST right after accepting.
    Reset,
    /// Read the request and never answer (the client times out).
    Hang,
    /// Answer 200.
    Ok,
}

/// A target speaking raw HTTP/1.1 (one request per connection) with a fault plan; sends each
/// body it answered 200 to on the channel.
async fn raw_target(plan: Vec<Fault>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let fault = plan.get(n).copied().unwrap_or(Fault::Ok);
            n += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                match fault {
                    Fault::Reset => {
                        // A zero linger sends RST on drop and cannot block (nothing to flush).
                        #[allow(deprecated)]
                        let _ = s.set_linger(Some(Duration::ZERO));
                        drop(s);
                    }
                    Fault::Hang => {
                        let mut buf = vec![0u8; 65536];
                        let _ = s.read(&mut buf).await;
                        // Hold the connection open until the client gives up.
                        let _ = s.read(&mut buf).await;
                    }
                    Fault::Ok => {
                        let body = read_request_body(&mut s).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        let _ = tx.send(body);
                    }
                }
            });
        }
    });
    (url, rx)
}

async fn read_request_body(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            }
        }
    }
    String::new()
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[tokio::test]
async fn resets_and_timeouts_are_retried_until_delivered() {
    let (url, mut rx) = raw_target(vec![Fault::Reset, Fault::Hang, Fault::Reset]).await;
    // A 2 s timeout: the hang costs one timeout.
    let gw = TestGateway::start(&config_with(&http_route_timeout("flaky", &url, 10, 2))).await;
    let (s, v) = gw.post_signed("/webhooks/genesys", &notification(1)).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["id"], id.as_str());
    let (_, dlq) = gw.get("/admin/dlq").await;
    assert_eq!(
        dlq["items"],
        serde_json::json!([]),
        "nothing dead-lettered while retries remain"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_target_down_then_back_gets_everything() {
    // The port is bound but not listening at first: connection refused on every attempt, and
    // no other test can be given it in the meantime.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let url = format!("http://{addr}/hook");
    let gw = TestGateway::start(&config_with(&http_route("down", &url, 185))).await;
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..10 {
        let (s, v) = gw.post_signed("/webhooks/genesys", &notification(n)).await;
        assert_eq!(s, 202);
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    // The target comes up on the same socket; everything queued arrives.
    sock.listen(128).unwrap();
    sock.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std::net::TcpListener::from(sock)).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let body = read_request_body(&mut s).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send(body);
            });
        }
    });
    let mut got = std::collections::BTreeSet::new();
    while got.len() < ids.len() {
        let body = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("queued events arrive")
            .unwrap();
        let env: serde_json::Value = serde_json::from_str(&body).unwrap();
        got.insert(env["id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ids);
    let (_, dlq) = gw.get("/admin/dlq").await;
    assert_eq!(dlq["items"], serde_json::json!([]));
    gw.stop().await;
}
