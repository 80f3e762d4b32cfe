//! The HTTP listener: a bounded accept loop instead of `axum::serve`.
//!
//! `axum::serve` accepts without limit and sets no header timeout, so a client that opens many
//! connections, or trickles its headers (slowloris), holds server resources for as long as it
//! likes. Here every connection takes a permit from a semaphore (`server.max_connections`; when
//! none is left the loop stops accepting and the kernel backlog absorbs the rest), headers must
//! arrive within `server.header_timeout_secs` (hyper's timer closes the connection otherwise; the
//! same timer bounds how long an idle keep-alive connection is kept), and the whole request is
//! bounded by `request_timeout_secs` in the router.
//!
//! Shutdown: when the token fires the loop stops accepting, every open connection is told to
//! finish its in-flight request and close, and [`serve`] returns once they all have.

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers (and for an idle keep-alive connection).
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `cancel` fires, then drains connections.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ListenerLimits,
    cancel: CancellationToken,
) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = cancel.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => {
                    accept_backoff = Duration::from_millis(5);
                    s
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning (mini-redis does the same).
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(
                app.map_request(|req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new)),
            );
            // HTTP/1.1 only: senders of webhooks and API-destination calls speak it, and the
            // auto (h1/h2) builder waits for a version preface without any timeout, which would let
            // a silent connection hold its permit forever.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.await {
                        tracing::trace!(error = %e, "connection ended with an error during shutdown");
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
