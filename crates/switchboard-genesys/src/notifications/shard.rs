//! One shard: the lifecycle of its channels (create, subscribe, connect, reconnect,
//! replace, roll over) and its gap accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::ConnTask;
use super::{ChannelInfo, NotificationConfig, RejectedTopic, Shared, lock};
use crate::client::Client;
use crate::error::{Error, Result};

/// One channel as created by Genesys.
#[derive(Debug)]
pub(super) struct Channel {
    /// The topic list it was subscribed with.
    pub(super) topics: Arc<[String]>,
    pub(super) id: String,
    pub(super) connect_uri: String,
    pub(super) expires: Option<OffsetDateTime>,
    /// When to roll over: before the channel's or its token's expiry, whichever is first.
    pub(super) roll_at: Instant,
    pub(super) permitted: usize,
    pub(super) rejected: Vec<RejectedTopic>,
}

/// Why a connection task ended (or is about to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// We closed it (rollover done, superseded, shutdown).
    Cancelled,
    /// `{"result":"404"}` or HTTP 404: the channel is gone.
    NotFound,
    /// `v2.system.no_longer_subscribed` / `token_revoked`.
    NoLongerSubscribed(String),
    /// No heartbeat or pong in time.
    Watchdog,
    /// The socket closed or failed.
    Dropped(String),
    /// Could not open the socket.
    ConnectFailed(String),
}

impl CloseReason {
    fn describe(&self) -> String {
        match self {
            CloseReason::Cancelled => "closed by us".into(),
            CloseReason::NotFound => "channel not found (404)".into(),
            CloseReason::NoLongerSubscribed(t) => format!("system message {t}"),
            CloseReason::Watchdog => "no heartbeat or pong".into(),
            CloseReason::Dropped(s) => format!("socket dropped: {s}"),
            CloseReason::ConnectFailed(s) => format!("connect failed: {s}"),
        }
    }
}

pub(super) enum ConnEvent {
    Connected {
        conn: u64,
    },
    /// `v2.system.socket_closing`: the socket still works for now.
    Closing {
        conn: u64,
    },
    Closed {
        conn: u64,
        reason: CloseReason,
        last_rx: OffsetDateTime,
    },
}

pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) channel: Arc<Channel>,
    pub(super) cancel: CancellationToken,
    /// When the socket opened.
    pub(super) connected_at: Option<Instant>,
    /// Genesys sent `v2.system.socket_closing` on it.
    pub(super) closing: bool,
    pub(super) connected: bool,
}

pub(super) struct Shard {
    pub(super) index: usize,
    /// The topics this shard should have; replaced when templates are re-expanded.
    pub(super) topics: Arc<[String]>,
    /// New topic lists from the supervisor.
    pub(super) topics_rx: watch::Receiver<Arc<[String]>>,
    pub(super) client: Client,
    pub(super) config: Arc<NotificationConfig>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: mpsc::Sender<Value>,
    pub(super) cancel: CancellationToken,
    /// One rollover at a time across shards, so at most one extra channel exists at once.
    pub(super) rollover_gate: Arc<Semaphore>,
}

impl Shard {
    /// `reconnect_backoff_min × 2^(failures-1)`, capped, with up to 20 % taken off as jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .config
            .reconnect_backoff_min
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
        let capped = base.min(self.config.reconnect_backoff_max);
        capped.mul_f64(rand::random_range(0.8..=1.0))
    }

    pub(super) async fn run(mut self) {
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<ConnEvent>();
        let mut conns: Vec<Conn> = Vec::new();
        let mut current: Option<Arc<Channel>> = None;
        let mut next_conn_id = 0u64;
        let mut live = 0usize;
        let mut ever_live = false;
        // Failures since the last stable connection (one that stayed up at least
        // `reconnect_backoff_max`), for backoff. A socket that opens and drops at once does
        // not reset it, so a flapping server is not hammered.
        let mut failures = 0u32;
        // Same-URI reconnects since the last stable connection or the last new channel.
        let mut same_uri_tries = 0u32;
        let mut new_channel_at: Option<Instant> = Some(Instant::now());
        let mut reconnect_at: Option<Instant> = None;
        let mut rollover_permit: Option<(u64, OwnedSemaphorePermit)> = None;
        // Start and reason of a socket loss that is not yet a gap because a newer socket is
        // still being opened.
        let mut deferred_gap: Option<(OffsetDateTime, String)> = None;
        let mut roll_retry_at: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);

        loop {
            let roll_at = match (&current, &rollover_permit) {
                // A channel subscribed to an outdated topic list is rolled over now.
                (Some(ch), None) if !Arc::ptr_eq(&ch.topics, &self.topics) => {
                    roll_retry_at.unwrap_or_else(Instant::now)
                }
                (Some(ch), None) => roll_retry_at.unwrap_or(ch.roll_at),
                _ => far,
            };
            tokio::select! {
                () = self.cancel.cancelled() => break,
                Ok(()) = self.topics_rx.changed() => {
                    self.topics = self.topics_rx.borrow_and_update().clone();
                    tracing::info!(shard = self.index, topics = self.topics.len(), "Genesys topic list changed");
                }
                () = tokio::time::sleep_until(new_channel_at.unwrap_or(far)), if new_channel_at.is_some() => {
                    new_channel_at = None;
                    let established = tokio::select! {
                        r = self.establish() => r,
                        () = self.cancel.cancelled() => break,
                    };
                    match established {
                        Ok(ch) => {
                            roll_retry_at = None;
                            current = Some(ch.clone());
                            next_conn_id += 1;
                            same_uri_tries = 0;
                            conns.push(self.connect(next_conn_id, ch, conn_tx.clone()));
                        }
                        Err(e) => {
                            failures += 1;
                            let wait = self.backoff(failures);
                            tracing::warn!(shard = self.index, error = %e, ?wait, "Genesys channel setup failed");
                            new_channel_at = Some(Instant::now() + wait);
                        }
                    }
                    self.publish(&conns, current.as_deref());
                }
                () = tokio::time::sleep_until(reconnect_at.unwrap_or(far)), if reconnect_at.is_some() => {
                    reconnect_at = None;
                    if let Some(ch) = &current {
                        next_conn_id += 1;
                        conns.push(self.connect(next_conn_id, ch.clone(), conn_tx.clone()));
                    }
                }
                () = tokio::time::sleep_until(roll_at), if roll_at < far => {
                    roll_retry_at = None;
                    let permit = tokio::select! {
                        p = self.rollover_gate.clone().acquire_owned() => p,
                        () = self.cancel.cancelled() => break,
                    };
                    let Ok(permit) = permit else { break };
                    tracing::info!(shard = self.index, "Genesys channel rollover starting");
                    let established = tokio::select! {
                        r = self.establish() => r,
                        () = self.cancel.cancelled() => break,
                    };
                    match established {
                        Ok(ch) => {
                            self.shared.counters.rollovers.fetch_add(1, Ordering::Relaxed);
                            current = Some(ch.clone());
                            next_conn_id += 1;
                            same_uri_tries = 0;
                            reconnect_at = None;
                            conns.push(self.connect(next_conn_id, ch, conn_tx.clone()));
                            rollover_permit = Some((next_conn_id, permit));
                        }
                        Err(e) => {
                            failures += 1;
                            let wait = self.backoff(failures);
                            tracing::warn!(shard = self.index, error = %e, ?wait, "Genesys rollover failed; the old channel stays");
                            roll_retry_at = Some(Instant::now() + wait);
                        }
                    }
                    self.publish(&conns, current.as_deref());
                }
                Some(ev) = conn_rx.recv() => {
                    match ev {
                        ConnEvent::Connected { conn } => {
                            if let Some(c) = conns.iter_mut().find(|c| c.id == conn) {
                                c.connected = true;
                                c.connected_at = Some(Instant::now());
                            }
                            live += 1;
                            ever_live = true;
                            deferred_gap = None;
                            self.shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                            self.shared.close_gap(self.index);
                            // The newest socket is up: everything older (the rolled-over channel,
                            // or the socket that got socket_closing) can go. A late handshake of
                            // an older socket, after a newer one is up, closes itself.
                            for c in conns.iter().filter(|c| c.id < conn) {
                                c.cancel.cancel();
                            }
                            if conns.iter().any(|c| c.id > conn && c.connected)
                                && let Some(c) = conns.iter().find(|c| c.id == conn)
                            {
                                c.cancel.cancel();
                            }
                            if rollover_permit.as_ref().is_some_and(|(id, _)| *id == conn) {
                                rollover_permit = None;
                            }
                        }
                        ConnEvent::Closing { conn } => {
                            // Genesys will close this socket soon: open a new one on the same
                            // channel now; when it is up, the old one is closed by us.
                            let on_current = conns.iter().any(|c| {
                                c.id == conn && current.as_ref().is_some_and(|cur| Arc::ptr_eq(&c.channel, cur))
                            });
                            let newest = conns.iter().map(|c| c.id).max() == Some(conn);
                            if let Some(c) = conns.iter_mut().find(|c| c.id == conn) {
                                c.closing = true;
                            }
                            if on_current && newest && let Some(ch) = &current {
                                next_conn_id += 1;
                                conns.push(self.connect(next_conn_id, ch.clone(), conn_tx.clone()));
                            }
                        }
                        ConnEvent::Closed { conn, reason, last_rx } => {
                            let Some(pos) = conns.iter().position(|c| c.id == conn) else { continue };
                            let closed = conns.remove(pos);
                            if closed.connected {
                                live = live.saturating_sub(1);
                            }
                            if rollover_permit.as_ref().is_some_and(|(id, _)| *id == conn) {
                                // The rollover's socket failed before it was up; let the
                                // normal recovery below handle the (now current) channel.
                                rollover_permit = None;
                            }
                            if live == 0 && ever_live && !self.cancel.is_cancelled() {
                                let pending_other = conns.iter().any(|c| !c.connected);
                                if closed.connected && closed.closing && pending_other {
                                    // Genesys announced this close (socket_closing) and its
                                    // replacement is being opened on the same channel, which is
                                    // what makes Genesys close this one: only a gap if the
                                    // replacement fails.
                                    deferred_gap = Some((last_rx, reason.describe()));
                                } else if closed.connected || (!pending_other && deferred_gap.is_some()) {
                                    let (start, why) = deferred_gap.take().unwrap_or((last_rx, reason.describe()));
                                    self.shared.open_gap(self.index, &self.topics, start, why, self.config.reconnect_backoff_max);
                                }
                            }
                            let on_current = current.as_ref().is_some_and(|cur| Arc::ptr_eq(&closed.channel, cur));
                            let others_on_current = conns.iter().any(|c| {
                                current.as_ref().is_some_and(|cur| Arc::ptr_eq(&c.channel, cur))
                            });
                            if on_current && !others_on_current && !self.cancel.is_cancelled() {
                                match &reason {
                                    CloseReason::Cancelled => {}
                                    CloseReason::NotFound | CloseReason::NoLongerSubscribed(_) => {
                                        tracing::warn!(shard = self.index, reason = %reason.describe(), "Genesys channel lost; creating a new one");
                                        current = None;
                                        new_channel_at = Some(Instant::now());
                                    }
                                    CloseReason::Watchdog | CloseReason::Dropped(_) | CloseReason::ConnectFailed(_) => {
                                        if closed.connected_at.is_some_and(|t| t.elapsed() >= self.config.reconnect_backoff_max) {
                                            failures = 0;
                                            same_uri_tries = 0;
                                        }
                                        failures += 1;
                                        same_uri_tries += 1;
                                        if same_uri_tries > self.config.same_uri_attempts {
                                            tracing::warn!(shard = self.index, "Genesys channel unreachable; creating a new one");
                                            current = None;
                                            new_channel_at = Some(Instant::now() + self.backoff(failures));
                                        } else {
                                            // The first reconnect after a stable connection is
                                            // immediate: a dropped socket on a healthy channel is
                                            // the common case.
                                            let wait = if failures == 1 { Duration::ZERO } else { self.backoff(failures - 1) };
                                            reconnect_at = Some(Instant::now() + wait);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    self.publish(&conns, current.as_deref());
                }
            }
        }
        for c in &conns {
            c.cancel.cancel();
        }
        // Wait for the sockets to finish forwarding what they already read.
        while !conns.is_empty() {
            match conn_rx.recv().await {
                Some(ConnEvent::Closed { conn, .. }) => conns.retain(|c| c.id != conn),
                Some(_) => {}
                None => break,
            }
        }
        self.publish(&conns, None);
    }

    /// Updates the `channels()` view.
    fn publish(&self, conns: &[Conn], current: Option<&Channel>) {
        let mut infos: Vec<ChannelInfo> = Vec::new();
        let mut add = |ch: &Channel, connected: bool| {
            if let Some(i) = infos.iter_mut().find(|i| i.channel_id == ch.id) {
                i.connected |= connected;
            } else {
                infos.push(ChannelInfo {
                    shard: self.index,
                    channel_id: ch.id.clone(),
                    connect_uri: ch.connect_uri.clone(),
                    expires: ch.expires,
                    topics: ch.topics.len(),
                    permitted: ch.permitted,
                    rejected: ch.rejected.len(),
                    connected,
                });
            }
        };
        for c in conns {
            add(&c.channel, c.connected);
        }
        if let Some(ch) = current {
            add(ch, false);
        }
        if let Some(slot) = lock(&self.shared.channels).get_mut(self.index) {
            *slot = infos;
        }
        if let (Some(ch), Some(slot)) = (current, lock(&self.shared.rejected).get_mut(self.index)) {
            slot.clone_from(&ch.rejected);
        }
        let live = conns.iter().filter(|c| c.connected).count();
        metrics::gauge!("switchboard_genesys_sockets_live", "shard" => self.index.to_string())
            .set(live as f64);
        self.shared.bump();
    }

    /// Creates a channel and subscribes the shard's topics to it.
    async fn establish(&self) -> Result<Arc<Channel>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            id: String,
            connect_uri: String,
            #[serde(default)]
            expires: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Topic {
            id: String,
            #[serde(default)]
            state: Option<String>,
            #[serde(default)]
            rejection_reason: Option<String>,
            #[serde(default)]
            missing_permissions: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            entities: Vec<Topic>,
        }
        // A channel dies with the token that created it: make sure that token outlives the
        // channel's first rollover point by a margin.
        let token = self
            .client
            .token_valid_for(self.config.rollover_before_expiry * 2)
            .await?;
        let created: Created = self
            .client
            .request_as(Method::POST, "/api/v2/notifications/channels", &[], None)
            .await?;
        self.shared
            .counters
            .channels_created
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchboard_genesys_channels_created_total").increment(1);
        let topics = self.topics.clone();
        let body = Value::Array(topics.iter().map(|t| json!({"id": t})).collect());
        let path = format!(
            "/api/v2/notifications/channels/{}/subscriptions",
            created.id
        );
        let answer = self
            .client
            .request(
                Method::PUT,
                &path,
                &[("ignoreErrors", "true".to_string())],
                Some(&body),
            )
            .await?;
        let listing: Listing = if answer.is_null() {
            Listing {
                entities: Vec::new(),
            }
        } else {
            serde_json::from_value(answer).map_err(|e| Error::Decode {
                path: path.clone(),
                message: e.to_string(),
            })?
        };
        let rejected: Vec<RejectedTopic> = listing
            .entities
            .iter()
            .filter(|t| t.state.as_deref() == Some("Rejected"))
            .map(|t| RejectedTopic {
                topic: t.id.clone(),
                reason: t.rejection_reason.clone(),
                missing_permissions: t.missing_permissions.clone(),
            })
            .collect();
        for r in &rejected {
            tracing::warn!(
                shard = self.index, topic = %r.topic, reason = ?r.reason, missing = ?r.missing_permissions,
                "Genesys rejected a notification topic"
            );
        }
        if !rejected.is_empty() {
            metrics::counter!("switchboard_genesys_topics_rejected_total")
                .increment(rejected.len() as u64);
        }
        let expires = created.expires.as_deref().and_then(|e| {
            OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
        });
        let now_utc = OffsetDateTime::now_utc();
        let channel_left = expires
            .map(|e| Duration::try_from(e - now_utc).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(86_400));
        let life = channel_left.min(token.remaining());
        // With short-lived tokens (Genesys allows 5 minutes) the configured margin could
        // exceed the life itself and make every channel roll over at once; never roll
        // before half-life.
        let margin = self.config.rollover_before_expiry.min(life / 2);
        let roll_in = life - margin;
        tracing::info!(shard = self.index, channel = %created.id, topics = self.topics.len(),
            rejected = rejected.len(), ?roll_in, "Genesys channel ready");
        Ok(Arc::new(Channel {
            id: created.id,
            connect_uri: created.connect_uri,
            expires,
            roll_at: Instant::now() + roll_in,
            permitted: topics.len() - rejected.len().min(topics.len()),
            topics,
            rejected,
        }))
    }

    fn connect(
        &self,
        id: u64,
        channel: Arc<Channel>,
        events: mpsc::UnboundedSender<ConnEvent>,
    ) -> Conn {
        let cancel = self.cancel.child_token();
        let task = ConnTask {
            id,
            uri: channel.connect_uri.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            events: self.events.clone(),
            notify: events,
            cancel: cancel.clone(),
        };
        tokio::spawn(task.run());
        Conn {
            id,
            channel,
            cancel,
            connected: false,
            connected_at: None,
            closing: false,
        }
    }
}
