//! The HTTP listener: a bounded, two-stage accept loop instead of `axum::serve`.
//!
//! `axum::serve` accepts without limit and sets no header timeout, so a client that opens many
//! connections, or trickles its headers (slowloris), holds server resources for as long as it
//! likes. Here a connection goes through two stages:
//!
//! 1. **Waiting for its first byte.** It holds a cheap *pending* permit (`max_pending_connections`)
//!    and no HTTP state at all: just the socket and a small task. If nothing arrives within
//!    `header_timeout` it is closed. When the pending stage is full, new connections are closed at
//!    once, so the accept queue keeps moving.
//! 2. **Being served.** Once bytes arrive it waits for a *serving* permit (`max_connections`) and
//!    is handed to hyper, whose timer closes it if the headers are not complete within
//!    `header_timeout` (and when it idles between keep-alive requests for that long).
//!
//! So thousands of silent connections cost a socket each and never delay a client that speaks,
//! while the number of connections with HTTP buffers is bounded.
//!
//! Shutdown: when the token fires the loop stops accepting, every open connection is told to
//! finish its in-flight request and close, and [`serve`] returns once they all have.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections being served (with HTTP state) at once.
    pub max_connections: usize,
    /// Connections accepted but silent so far.
    pub max_pending_connections: usize,
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
    let serving = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let served = Arc::new(Served::default());
    let pending = Arc::new(Semaphore::new(limits.max_pending_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _peer)) => {
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
        let Ok(pending_permit) = pending.clone().try_acquire_owned() else {
            // Full of silent connections: refuse this one now rather than queue without bound.
            metrics::counter!("switchboard_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let cancel = cancel.clone();
        let serving = serving.clone();
        let served = served.clone();
        tracker.spawn(async move {
            // `peek` (not `readable`, whose readiness can be spurious) waits for a real byte.
            let mut probe = [0u8; 1];
            let first_byte = tokio::select! {
                r = tokio::time::timeout(limits.header_timeout, stream.peek(&mut probe)) => r,
                _ = cancel.cancelled() => return,
            };
            if !matches!(first_byte, Ok(Ok(n)) if n > 0) {
                return;
            }
            drop(pending_permit);
            let serving_permit = match serving.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Every slot is taken, most likely by keep-alive connections sitting idle
                    // until their timeout: ask the longest-served one to finish its request
                    // and close, so a waiting sender is not stalled for a whole idle timeout.
                    served.reclaim_oldest();
                    tokio::select! {
                        p = serving.acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        _ = cancel.cancelled() => return,
                    }
                }
            };
            let (id, yield_slot) = served.register();
            serve_connection(stream, app, limits.header_timeout, cancel, &yield_slot).await;
            served.unregister(id);
            drop(serving_permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Connections holding a serving slot, oldest first, each with the signal that asks it to close.
#[derive(Default)]
struct Served {
    next_id: std::sync::atomic::AtomicU64,
    conns: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
}

impl Served {
    fn register(&self) -> (u64, Arc<tokio::sync::Notify>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = Arc::new(tokio::sync::Notify::new());
        self.lock().push_back((id, n.clone()));
        (id, n)
    }

    fn unregister(&self, id: u64) {
        let mut q = self.lock();
        if let Some(i) = q.iter().position(|(x, _)| *x == id) {
            q.remove(i);
        }
    }

    fn reclaim_oldest(&self) {
        if let Some((_, n)) = self.lock().pop_front() {
            metrics::counter!("switchboard_connections_reclaimed_total").increment(1);
            n.notify_one();
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>
    {
        // The queue holds no invariant a panicking holder could break.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    header_timeout: Duration,
    cancel: CancellationToken,
    yield_slot: &tokio::sync::Notify,
) {
    let service = TowerToHyperService::new(
        app.map_request(|req: hyper::Request<hyper::body::Incoming>| {
            req.map(axum::body::Body::new)
        }),
    );
    // HTTP/1.1 only: senders of webhooks and API-destination calls speak it, and an h1/h2
    // auto-detecting connection waits for a version preface without any timeout.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
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
        _ = async {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = yield_slot.notified() => {}
            }
        } => {
            // Idle: closes now. Mid-request: answers it (with `connection: close`), then closes.
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}
