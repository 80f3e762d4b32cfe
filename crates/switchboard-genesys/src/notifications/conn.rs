//! One WebSocket: read, classify, forward events, answer nothing but pings, watch heartbeats.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::shard::{CloseReason, ConnEvent};
use super::{NotificationConfig, Shared};

pub(super) struct ConnTask {
    pub(super) id: u64,
    pub(super) uri: String,
    pub(super) config: Arc<NotificationConfig>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: mpsc::Sender<Value>,
    pub(super) notify: mpsc::UnboundedSender<ConnEvent>,
    pub(super) cancel: CancellationToken,
}

/// What one text frame means.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Event(Value),
    Metadata,
    SocketClosing,
    Lost(String),
    OtherSystem(String),
    NotFound,
    Malformed,
}

fn classify(text: &str) -> Frame {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
        return Frame::Malformed;
    };
    if obj.get("result").is_some_and(|r| r == "404" || r == 404) {
        return Frame::NotFound;
    }
    let topic = obj.get("topicName").and_then(Value::as_str).unwrap_or("");
    if topic == "channel.metadata" {
        return Frame::Metadata;
    }
    if let Some(kind) = topic.strip_prefix("v2.system.") {
        let body_type = obj
            .get("eventBody")
            .and_then(|b| b.get("systemTopicType"))
            .and_then(Value::as_str);
        let kind = body_type.unwrap_or(kind);
        return match kind {
            "socket_closing" => Frame::SocketClosing,
            "no_longer_subscribed" | "token_revoked" => Frame::Lost(kind.to_string()),
            other => Frame::OtherSystem(other.to_string()),
        };
    }
    if topic.is_empty() {
        return Frame::Malformed;
    }
    Frame::Event(Value::Object(obj))
}

impl ConnTask {
    /// Closing handshake: after our Close, keep reading until the server's Close so that
    /// events it sent before seeing ours are still forwarded (the overlap's duplicates are
    /// cheap, a hole is not).
    async fn close_and_drain<S>(&self, ws: &mut tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if ws.close(None).await.is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
            match msg {
                Message::Text(t) => {
                    if let Frame::Event(v) = classify(t.as_str())
                        && self.events.send(v).await.is_err()
                    {
                        return;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    }

    pub(super) async fn run(self) {
        let mut last_rx = OffsetDateTime::now_utc();
        let reason = self.session(&mut last_rx).await;
        let _ = self.notify.send(ConnEvent::Closed {
            conn: self.id,
            reason,
            last_rx,
        });
    }

    async fn session(&self, last_rx_utc: &mut OffsetDateTime) -> CloseReason {
        let connect = tokio::time::timeout(
            self.config.connect_timeout,
            tokio_tungstenite::connect_async(&self.uri),
        );
        let ws = tokio::select! {
            r = connect => r,
            () = self.cancel.cancelled() => return CloseReason::Cancelled,
        };
        let mut ws = match ws {
            Err(_) => return CloseReason::ConnectFailed("timeout".into()),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp)))
                if resp.status().as_u16() == 404 =>
            {
                return CloseReason::NotFound;
            }
            Ok(Err(e)) => return CloseReason::ConnectFailed(e.to_string()),
            Ok(Ok((ws, _))) => ws,
        };
        *last_rx_utc = OffsetDateTime::now_utc();
        let _ = self.notify.send(ConnEvent::Connected { conn: self.id });
        let mut last_rx = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            let ping_due = last_rx + self.config.ping_after_silence;
            let dead_at = ping_sent.map(|p| p + self.config.pong_timeout);
            let wake = dead_at.unwrap_or(ping_due);
            // Biased, the socket before the timer: a frame that arrived while this task waited
            // for the CPU proves the socket alive, and a late wake-up must not call it dead.
            let msg = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    self.close_and_drain(&mut ws).await;
                    return CloseReason::Cancelled;
                }
                m = ws.next() => m,
                () = tokio::time::sleep_until(wake) => {
                    if dead_at.is_some() {
                        return CloseReason::Watchdog;
                    }
                    if let Err(e) = ws.send(Message::text(r#"{"message":"ping"}"#)).await {
                        return CloseReason::Dropped(e.to_string());
                    }
                    ping_sent = Some(Instant::now());
                    continue;
                }
            };
            let text = match msg {
                None => return CloseReason::Dropped("end of stream".into()),
                Some(Err(e)) => return CloseReason::Dropped(e.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return CloseReason::Dropped(match frame {
                        Some(f) => format!("closed by server ({} {})", u16::from(f.code), f.reason),
                        None => "closed by server".into(),
                    });
                }
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => {
                    // Any frame proves the socket alive, not only our pong.
                    last_rx = Instant::now();
                    *last_rx_utc = OffsetDateTime::now_utc();
                    ping_sent = None;
                    continue;
                }
            };
            last_rx = Instant::now();
            *last_rx_utc = OffsetDateTime::now_utc();
            ping_sent = None;
            match classify(text.as_str()) {
                Frame::Event(v) => {
                    // Waiting here is the backpressure: a slow sink stops the reading.
                    if self.events.send(v).await.is_err() {
                        return CloseReason::Cancelled;
                    }
                }
                Frame::Metadata => {}
                Frame::SocketClosing => {
                    self.shared
                        .counters
                        .system_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(uri = %self.uri, "Genesys socket_closing; reconnecting to the same channel");
                    let _ = self.notify.send(ConnEvent::Closing { conn: self.id });
                }
                Frame::Lost(kind) => {
                    self.shared
                        .counters
                        .system_messages
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = ws.close(None).await;
                    return CloseReason::NoLongerSubscribed(kind);
                }
                Frame::OtherSystem(kind) => {
                    self.shared
                        .counters
                        .system_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(kind, "Genesys system message");
                }
                Frame::NotFound => return CloseReason::NotFound,
                Frame::Malformed => {
                    self.shared
                        .counters
                        .malformed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(uri = %self.uri, "ignoring a WebSocket frame that is not a notification");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pong that is already in the socket when the task wakes after its pong deadline keeps
    /// the socket alive. The runtime's only thread is blocked from the moment the server has the
    /// ping until well past the deadline, with the pong sent meanwhile; an unbiased `select!`
    /// would then pick the expired timer in one wake-up of three, and twelve rounds make that
    /// all but certain to show.
    #[test]
    fn a_pong_read_late_beats_an_expired_pong_timer() {
        const ROUNDS: usize = 12;
        let pong_timeout = Duration::from_millis(100);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        // Server → client runtime: "a ping arrived". Client → server: "blocked now, answer".
        // Server → client: "the pong is sent".
        let (got_ping_tx, mut got_ping_rx) = mpsc::unbounded_channel::<()>();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<()>();
        let (answered_tx, answered_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let mut pings = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.to_text().is_ok_and(|t| t.contains("ping")) {
                        pings += 1;
                        if got_ping_tx.send(()).is_err() || answer_rx.recv().is_err() {
                            break;
                        }
                        let pong = include_str!("../../tests/data/pong.json");
                        ws.send(Message::text(pong)).await.unwrap();
                        if answered_tx.send(()).is_err() {
                            break;
                        }
                    }
                }
                pings
            })
        });

        let config = NotificationConfig {
            ping_after_silence: Duration::from_millis(50),
            pong_timeout,
            ..NotificationConfig::new(Vec::new())
        };
        let (events, _events_rx) = mpsc::channel(8);
        let (notify, mut notify_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = ConnTask {
            id: 1,
            uri: format!("ws://{addr}/"),
            config: Arc::new(config),
            shared: Arc::new(Shared::default()),
            events,
            notify,
            cancel: cancel.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::spawn(task.run());
            for round in 0..ROUNDS {
                tokio::select! {
                    got = got_ping_rx.recv() => assert!(got.is_some(), "server gone"),
                    ev = notify_rx.recv() => match ev {
                        Some(ConnEvent::Connected { .. }) => {
                            // Not a round: wait for the ping again.
                            got_ping_rx.recv().await.expect("server gone");
                        }
                        Some(ConnEvent::Closed { reason, .. }) => {
                            panic!("socket called dead in round {round}: {reason:?}")
                        }
                        _ => panic!("unexpected connection event in round {round}"),
                    },
                }
                // The ping is out, so its deadline is at most `pong_timeout` from now. Block this
                // runtime's thread (the task cannot run) until the pong is in our socket and the
                // deadline has passed: the task then wakes with both ready.
                answer_tx.send(()).unwrap();
                answered_rx.recv().unwrap();
                std::thread::sleep(pong_timeout + Duration::from_millis(50));
            }
            // Every round's pong was taken: the socket is still open, nothing was closed.
            assert!(
                !matches!(notify_rx.try_recv(), Ok(ConnEvent::Closed { .. })),
                "socket closed after the last round"
            );
            cancel.cancel();
        });
        // The socket closes with the runtime, which ends the server's loop.
        drop(rt);
        assert!(server.join().unwrap() >= ROUNDS);
    }

    #[test]
    fn frames() {
        let check = |text: &str, expected: Frame| assert_eq!(classify(text), expected, "{text}");
        check(
            include_str!("../../tests/data/heartbeat.json"),
            Frame::Metadata,
        );
        check(include_str!("../../tests/data/pong.json"), Frame::Metadata);
        let routing = include_str!("../../tests/data/user-routing-status.json");
        check(
            routing,
            Frame::Event(serde_json::from_str(routing).unwrap()),
        );
        let presence = include_str!("../../tests/data/user-presence.json");
        check(
            presence,
            Frame::Event(serde_json::from_str(presence).unwrap()),
        );
        check(
            r#"{"topicName":"v2.system.socket_closing","eventBody":{"message":"bye"}}"#,
            Frame::SocketClosing,
        );
        check(
            r#"{"topicName":"v2.system.x","eventBody":{"systemTopicType":"no_longer_subscribed","reason":"another_channel_subscribed"}}"#,
            Frame::Lost("no_longer_subscribed".into()),
        );
        check(
            r#"{"topicName":"v2.system.token_revoked","eventBody":{}}"#,
            Frame::Lost("token_revoked".into()),
        );
        check(
            r#"{"topicName":"v2.system.subscription_changed","eventBody":{}}"#,
            Frame::OtherSystem("subscription_changed".into()),
        );
        check(
            r#"{"result":"404","message":"channel not found"}"#,
            Frame::NotFound,
        );
        check("not json", Frame::Malformed);
        check("[1,2]", Frame::Malformed);
        check(r#"{"eventBody":{}}"#, Frame::Malformed);
    }
}
