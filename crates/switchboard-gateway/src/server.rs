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
//! When every serving slot is taken and a connection that spoke is waiting, one slot is handed
//! over: the connection idle (between requests) for longest closes, at once if it has been quiet
//! for 250 ms and its socket holds no unread bytes, else after its next response; with none
//! idle, the oldest busy one answers its current request with `connection: close` and ends.
//! Under load (and after any stall) a request can sit unread in the socket of a connection the
//! server sees as idle; closing that connection would fail a request the sender already wrote,
//! so the socket is peeked first (through a second descriptor taken when the connection is
//! served). The waiter asks again every 250 ms until it has a slot; it keeps its pending permit
//! while it waits (so waiters are bounded too), and one still waiting after `header_timeout` is
//! answered `503` with `Retry-After` and closed.
//!
//! When `accept` runs out of file descriptors, the oldest silent connections are closed (64 at a
//! time) rather than left to hold every descriptor while clients that would speak wait in the
//! backlog behind them.
//!
//! The listen backlog is 4,096 (the kernel caps it at `net.core.somaxconn`), not the 128 of tokio
//! and std: a sender that opens connections in a burst while the server is busy would otherwise
//! have its SYNs dropped and wait a second or more for the retransmit.
//!
//! Shutdown: when the token fires the loop stops accepting, every open connection is told to
//! finish its in-flight request and close, and [`serve`] returns once they all have.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections being served (with HTTP state) at once.
    pub max_connections: usize,
    /// Connections accepted but silent so far.
    pub max_pending_connections: usize,
    /// Time allowed for a request's headers (and for an idle keep-alive connection), and for a
    /// connection that spoke to find a serving slot.
    pub header_timeout: Duration,
    /// `Retry-After` seconds for a connection refused because no slot came free.
    pub retry_after_secs: u64,
}

/// Listen backlog asked of the kernel (which caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`]; must be called inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix: a restarted gateway can bind while old sockets linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `cancel` fires, then drains connections.
pub async fn serve(
    listener: TcpListener,
    app: crate::HttpApp,
    limits: ListenerLimits,
    cancel: CancellationToken,
) {
    let serving = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let served = Arc::new(Served::default());
    let pending = Arc::new(Semaphore::new(limits.max_pending_connections.max(1)));
    let silent = Arc::new(Silent::default());
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
                    if is_out_of_descriptors(&e) {
                        // Silent connections may be what used the descriptors up: close the
                        // oldest of them, so that a client that speaks, queued behind them in
                        // the backlog, can still be accepted.
                        let shed = silent.shed_oldest(SHED_ON_EMFILE);
                        if shed > 0 {
                            metrics::counter!("switchboard_connections_shed_total")
                                .increment(shed as u64);
                            tracing::warn!(error = %e, shed, "out of descriptors: closed the oldest silent connections");
                            // Let them close before accepting again.
                            tokio::task::yield_now().await;
                            continue;
                        }
                    }
                    // Back off instead of spinning (mini-redis does the same).
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
        let quiet = SilentGuard::new(&silent);
        tracker.spawn(async move {
            // `peek` (not `readable`, whose readiness can be spurious) waits for a real byte.
            let mut probe = [0u8; 1];
            let first_byte = tokio::select! {
                r = tokio::time::timeout(limits.header_timeout, stream.peek(&mut probe)) => r,
                _ = quiet.shed.notified() => return,
                _ = cancel.cancelled() => return,
            };
            if !matches!(first_byte, Ok(Ok(n)) if n > 0) {
                return;
            }
            drop(quiet);
            // The pending permit is kept until a serving slot is had: a connection waiting for
            // one is still bounded by `max_pending_connections`.
            let serving_permit = match serving.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Every slot is taken, most likely by keep-alive connections sitting idle
                    // until their timeout: have one hand its slot over (module docs), so a
                    // waiting sender is not stalled for a whole idle timeout. A sender still
                    // waiting after `header_timeout` is told to come back (503) rather than
                    // left to its own timeout, which may be longer than its retry budget.
                    let deadline = tokio::time::Instant::now() + limits.header_timeout;
                    let waited = tokio::time::sleep_until(deadline);
                    tokio::pin!(waited);
                    loop {
                        served.reclaim();
                        tokio::select! {
                            p = serving.clone().acquire_owned() => match p {
                                Ok(p) => break p,
                                Err(_) => return,
                            },
                            _ = tokio::time::sleep(IDLE_CLOSE_AFTER) => {}
                            _ = &mut waited => {
                                metrics::counter!("switchboard_connections_busy_refused_total")
                                    .increment(1);
                                refuse_busy(stream, limits).await;
                                return;
                            }
                            _ = cancel.cancelled() => return,
                        }
                    }
                }
            };
            drop(pending_permit);
            // A second descriptor for the same socket, to look for unread requests before the
            // slot hand-over closes this connection; without one, it is never closed as idle.
            let peek = socket2::SockRef::from(&stream).try_clone().ok();
            let (id, conn) = served.register(peek);
            serve_connection(stream, app, limits.header_timeout, cancel, &served, &conn).await;
            served.unregister(id);
            drop(serving_permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers a connection that found no serving slot in time: one `503` with `Retry-After` and
/// `connection: close`, through hyper (so the request is parsed as any other, and a client
/// that trickles its headers is cut off by the same timeout), with none of the app behind it.
async fn refuse_busy(stream: TcpStream, limits: ListenerLimits) {
    let retry_after = limits.retry_after_secs;
    let service = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let mut resp =
            axum::response::IntoResponse::into_response(crate::error::ApiError::unavailable(
                "server_busy",
                "every connection slot is taken; retry later",
                retry_after,
            ));
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        std::future::ready(Ok::<_, std::convert::Infallible>(resp))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    // Bounded by the header timeout; after the answer hyper closes the connection itself.
    if let Err(e) = tokio::time::timeout(limits.header_timeout * 2, conn).await {
        tracing::trace!(error = %e, "refusing a connection timed out");
    }
}

/// A served connection quiet for this long may be closed at once to free its slot; one quiet
/// for less ends after its next response instead.
const IDLE_CLOSE_AFTER: Duration = Duration::from_millis(250);

/// Silent connections closed per `EMFILE`/`ENFILE` from `accept`.
const SHED_ON_EMFILE: usize = 64;

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide) on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Accepted connections that have not sent a byte yet, oldest first (ids grow).
#[derive(Default)]
struct Silent {
    next_id: AtomicU64,
    conns: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>>,
}

impl Silent {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>> {
        // The map holds no invariant a panicking holder could break.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks up to `n` of the oldest silent connections to close; returns how many were asked.
    fn shed_oldest(&self, n: usize) -> usize {
        let mut conns = self.lock();
        let mut shed = 0;
        while shed < n {
            let Some((_, notify)) = conns.pop_first() else {
                break;
            };
            // `notify_one` keeps the wake-up for a task that is not waiting yet.
            notify.notify_one();
            shed += 1;
        }
        shed
    }
}

/// A connection's place in [`Silent`], left when it speaks or ends.
struct SilentGuard {
    id: u64,
    shed: Arc<tokio::sync::Notify>,
    silent: Arc<Silent>,
}

impl SilentGuard {
    fn new(silent: &Arc<Silent>) -> Self {
        let id = silent.next_id.fetch_add(1, Ordering::Relaxed);
        let shed = Arc::new(tokio::sync::Notify::new());
        silent.lock().insert(id, shed.clone());
        SilentGuard {
            id,
            shed,
            silent: silent.clone(),
        }
    }
}

impl Drop for SilentGuard {
    fn drop(&mut self) {
        self.silent.lock().remove(&self.id);
    }
}

/// One served connection, as the slot hand-over sees it.
struct ConnState {
    /// Closes the connection now (idle) or after its current request (busy).
    yield_slot: tokio::sync::Notify,
    /// A request is being handled (HTTP/1.1 handles one at a time per connection).
    busy: AtomicBool,
    /// The next response says `connection: close`, and the connection ends after it.
    close_after_response: AtomicBool,
    /// Microseconds since `Served::epoch` when the last request ended (or the connection began).
    idle_since_us: AtomicU64,
    /// The socket, to check for bytes hyper has not read yet.
    peek: Option<socket2::Socket>,
}

impl ConnState {
    /// Whether the socket may hold an unread request. A closed or failed socket holds none.
    fn may_have_unread(&self) -> bool {
        let Some(sock) = &self.peek else {
            return true;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking (tokio made it so): an empty one answers `WouldBlock`.
        match sock.peek(&mut probe) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
        }
    }
}

/// Connections holding a serving slot, oldest first.
struct Served {
    next_id: AtomicU64,
    epoch: Instant,
    conns: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<ConnState>)>>,
}

impl Default for Served {
    fn default() -> Self {
        Served {
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            conns: Default::default(),
        }
    }
}

impl Served {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn register(&self, peek: Option<socket2::Socket>) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            yield_slot: tokio::sync::Notify::new(),
            busy: AtomicBool::new(false),
            peek,
            close_after_response: AtomicBool::new(false),
            idle_since_us: AtomicU64::new(self.now_us()),
        });
        self.lock().push_back((id, conn.clone()));
        (id, conn)
    }

    fn unregister(&self, id: u64) {
        let mut q = self.lock();
        if let Some(i) = q.iter().position(|(x, _)| *x == id) {
            q.remove(i);
        }
    }

    /// Works towards one free slot for a waiting connection, which calls this again every
    /// [`IDLE_CLOSE_AFTER`] until it has one. The connection idle the longest closes now if it
    /// has been quiet for [`IDLE_CLOSE_AFTER`] and has nothing unread, and is told to end after
    /// its next response if not; with none idle, the oldest busy one not told yet ends after its
    /// current response.
    fn reclaim(&self) {
        let mut q = self.lock();
        let now = self.now_us();
        let idle = q
            .iter()
            .enumerate()
            .filter(|(_, (_, c))| !c.busy.load(Ordering::Acquire))
            .min_by_key(|(_, (_, c))| c.idle_since_us.load(Ordering::Relaxed))
            .map(|(i, (_, c))| (i, c.clone()));
        if let Some((i, conn)) = idle {
            // Set first: if the connection turned busy since the scan, this response is its
            // last. Closing at once is only safe after a quiet spell with nothing unread: "idle"
            // means no request is being handled, and under load one may sit in the socket.
            conn.close_after_response.store(true, Ordering::Release);
            let quiet = now.saturating_sub(conn.idle_since_us.load(Ordering::Relaxed));
            if quiet >= IDLE_CLOSE_AFTER.as_micros() as u64 && !conn.may_have_unread() {
                q.remove(i);
                drop(q);
                metrics::counter!("switchboard_connections_reclaimed_total").increment(1);
                conn.yield_slot.notify_one();
            }
            return;
        }
        if let Some((_, conn)) = q
            .iter()
            .find(|(_, c)| !c.close_after_response.load(Ordering::Acquire))
        {
            conn.close_after_response.store(true, Ordering::Release);
            metrics::counter!("switchboard_connections_reclaimed_total").increment(1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Arc<ConnState>)>> {
        // The queue holds no invariant a panicking holder could break.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a connection busy while its request is handled; idle again when dropped (also when
/// the request is abandoned).
struct BusyGuard {
    conn: Arc<ConnState>,
    served: Arc<Served>,
}

impl BusyGuard {
    fn new(conn: Arc<ConnState>, served: Arc<Served>) -> Self {
        conn.busy.store(true, Ordering::Release);
        BusyGuard { conn, served }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn
            .idle_since_us
            .store(self.served.now_us(), Ordering::Relaxed);
        self.conn.busy.store(false, Ordering::Release);
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: crate::HttpApp,
    header_timeout: Duration,
    cancel: CancellationToken,
    served: &Arc<Served>,
    slot: &Arc<ConnState>,
) {
    let (state, served_by) = (slot.clone(), served.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = BusyGuard::new(state.clone(), served_by.clone());
        let response = app.clone().call(req);
        async move {
            let mut resp = response.await;
            if busy.conn.close_after_response.load(Ordering::Acquire) {
                // hyper reads this header and ends the connection once the response is out;
                // the client knows not to send another request on it.
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            drop(busy);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
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
                _ = slot.yield_slot.notified() => {}
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
