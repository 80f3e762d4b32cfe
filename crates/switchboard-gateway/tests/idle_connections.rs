//! 10,000 idle connections against one real client. A test binary of its own: it runs this
//! process at its open-files limit on purpose, and a test running alongside in the same process
//! would find no descriptor left (EMFILE) and fail for a reason that is not its own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn ten_thousand_idle_connections_do_not_starve_a_real_client() {
    let gw = TestGateway::start(&config_with(
        "[server]\nmax_connections = 16\nheader_timeout_secs = 30\n",
    ))
    .await;
    // 10,000 connections that never send a byte (opened concurrently, 2,000 at a time).
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(10_000);
    let opening = Instant::now();
    // The client ends need 10,000 descriptors in this process; the server's accepted ends share
    // the same limit, and when it runs out its accept loop backs off (EMFILE) while the kernel
    // backlog holds the rest: part of the drill. With a lower limit, use what it allows.
    let total = idle_budget();
    // The real client's socket is taken now: a client in another process does not compete with
    // the server for this process's descriptors, and taken later it could lose that race
    // (EMFILE from `socket`) while the server fills every freed slot from its backlog.
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    const BATCH: usize = 2000;
    for _ in 0..total.div_ceil(BATCH) {
        let batch: Vec<_> = (0..BATCH.min(total - idle.len()))
            .map(|_| tokio::spawn(TcpStream::connect(addr.clone())))
            .collect();
        for b in batch {
            idle.push(b.await.unwrap().unwrap());
        }
    }
    eprintln!(
        "opened {} idle connections in {:?}",
        idle.len(),
        opening.elapsed()
    );
    // A client that speaks is served at once although the header timeout is 30 s: silent
    // connections never take a serving slot.
    let t0 = Instant::now();
    let mut client = tokio::time::timeout(WAIT, client.connect(addr.parse().unwrap()))
        .await
        .expect("server unresponsive")
        .unwrap();
    for _ in 0..20 {
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let resp = read_response(&mut client).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "20 requests took {took:?} behind 10,000 idle connections"
    );
    eprintln!(
        "20 requests answered in {took:?} behind {} idle connections",
        idle.len()
    );
    // Both ends live in this process: when they need more descriptors than it may have, the
    // server must have closed its oldest silent connections to let the real client in.
    client
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let text = read_response(&mut client).await;
    let shed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_connections_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    eprintln!("silent connections shed for lack of descriptors: {shed}");
    if 2 * idle.len() + 64 > fd_limit() {
        assert!(shed > 0, "out of descriptors, yet nothing was shed");
    }
    drop(idle);
    gw.stop().await;
}

/// How many idle client connections this process can open: 10,000, or fewer when the open-files
/// limit does not allow it.
fn idle_budget() -> usize {
    let limit = fd_limit();
    let budget = 10_000.min(limit.saturating_sub(1024));
    if budget < 10_000 {
        eprintln!(
            "open-files limit {limit}: testing with {budget} idle connections instead of 10,000"
        );
    }
    budget
}

/// This process's open-files limit (`usize::MAX` when unknown).
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(usize::MAX)
}
