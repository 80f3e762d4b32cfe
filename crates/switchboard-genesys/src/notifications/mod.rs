//! The Notification API WebSocket source.
//!
//! # Shape
//! [`NotificationSource::spawn`] starts one supervisor task. It expands the configured topics
//! (templates over all users or queues), shards them over channels of at most 1,000 topics,
//! and runs one *shard task* per channel-worth of topics. A shard task owns the channel
//! lifecycle: create (`POST /api/v2/notifications/channels`), subscribe (`PUT …/subscriptions`),
//! connect, reconnect, replace, roll over. Each WebSocket is read by its own *connection task*,
//! which answers nothing but pings, watches heartbeats, and forwards every event into one
//! bounded queue. One *delivery task* drains that queue into the gateway's [`EventSink`].
//! Every `refresh_topics_every` the supervisor re-expands the templates and re-spreads the
//! topics with minimal churn ([`reshard`]); a shard whose list changed rolls over to a new
//! channel, with the same overlap as an expiry rollover.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//!
//! use futures::future::BoxFuture;
//! use switchboard_genesys::notifications::{
//!     EventSink, NotificationConfig, NotificationSource, SinkError,
//! };
//! use switchboard_genesys::{Client, ClientConfig};
//!
//! struct Print;
//!
//! impl EventSink for Print {
//!     fn accept(&self, message: serde_json::Value) -> BoxFuture<'_, Result<(), SinkError>> {
//!         // A real sink returns only once the message is durable.
//!         Box::pin(async move {
//!             println!("{message}");
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # async fn run() -> switchboard_genesys::Result<()> {
//! let client = Client::new(ClientConfig::new("eu_west_1", "client-id", "client-secret"))?;
//! let config = NotificationConfig::new(vec!["v2.users.{user}.presence".into()]);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let handle = NotificationSource::spawn(client, config, Arc::new(Print), cancel.clone());
//! // ... `handle.gaps()`, `handle.channels()`, `handle.stats()` for status pages ...
//! cancel.cancel();
//! handle.join().await
//! # }
//! ```
//!
//! # Layout
//! - `config`: [`NotificationConfig`] (serde, `deny_unknown_fields`, durations as `"30s"`).
//! - `topics`: template expansion ([`expand_topics`]) and sharding ([`shard_topics`]).
//! - `shard`: one task per shard; channel lifecycle, rollover, gap accounting.
//! - `conn`: one task per WebSocket; frame classification, ping and heartbeat watchdog.
//! - `deliver`: the bounded queue into the [`EventSink`], retries, loss accounting.
//!
//! # Topic syntax
//! A configured topic is either concrete (`v2.users.<uuid>.presence`) or a template with one
//! placeholder that is expanded over a paged listing:
//! - `{user}`: every user (`GET /api/v2/users`), for example `v2.users.{user}.presence`;
//! - `{queue}`: every queue (`GET /api/v2/routing/queues`), for example
//!   `v2.routing.queues.{queue}.conversations.calls`;
//! - `{id}` is accepted where the prefix says which: `v2.users.{id}.…` means users,
//!   `v2.routing.queues.{id}.…` and `v2.analytics.queues.{id}.…` mean queues. Anything else
//!   (conversation detail events, audits) cannot be enumerated: use the EventBridge integration.
//!
//! # Guarantees
//! - An event counts as taken only once [`EventSink::accept`] returned `Ok`. Transient sink
//!   errors are retried with backoff (bounded by `sink_retry_limit`); an event that still could
//!   not be accepted is counted as lost (stats, metric, log) because the WebSocket has no
//!   redelivery. Memory is bounded by `buffer` queued events: a slow sink stops the reading
//!   of the sockets rather than growing memory.
//! - Rollover overlaps: the new channel is subscribed and connected before the old socket is
//!   closed, so the overlap may deliver duplicates (the gateway deduplicates on `topicName` +
//!   `metadata.CorrelationId`) but no hole.
//! - A *gap* is time during which a shard had no live socket after having had one. Every gap
//!   is recorded with its start (the last frame received on the lost socket, so it errs on
//!   the side of too long) and end (the next socket up), available from
//!   [`SourceView::gaps`] and as metrics. Losses separated by less than
//!   `reconnect_backoff_max` of live time are merged into one gap. The one loss that is not a
//!   gap: a socket that announced `v2.system.socket_closing` and closes while its replacement
//!   on the same channel is opening (Genesys closes it *because* the replacement connects).
//! - Rejected topics (`state: Rejected` in the subscription answer) are not gaps: they are
//!   reported by [`SourceView::rejected_topics`] and never delivered.
//! - `channel.metadata` (heartbeat, pong) and `v2.system.*` messages never reach the sink.
//!
//! # Metrics
//! `switchboard_genesys_events_total`, `switchboard_genesys_events_lost_total`,
//! `switchboard_genesys_gaps_total{shard}`, `switchboard_genesys_gap_open{shard}` (gauge, 1
//! while open), `switchboard_genesys_gap_seconds` (histogram),
//! `switchboard_genesys_gap_seconds_total`, `switchboard_genesys_sockets_live{shard}`,
//! `switchboard_genesys_channels_created_total`, `switchboard_genesys_topics_rejected_total`;
//! the client adds `switchboard_genesys_api_responses_total{status}`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::{Error, Result};

mod config;
mod conn;
mod deliver;
mod shard;
mod topics;

pub use config::NotificationConfig;
pub use topics::{expand_topics, reshard, shard_topics};

use shard::Shard;

/// Genesys' limit on topics per channel.
pub const MAX_TOPICS_PER_CHANNEL: usize = 1_000;
/// Genesys' limit on channels per OAuth client (user + app).
pub const MAX_CHANNELS: usize = 20;

/// Where notification messages go. The gateway implements it with its ingest pipeline.
pub trait EventSink: Send + Sync + 'static {
    /// Persist one notification message (the JSON object as received). Returns only once it is durable.
    fn accept(&self, message: Value) -> BoxFuture<'_, std::result::Result<(), SinkError>>;
}

/// Why the sink did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// `true`: try again later (store full, shutting down a writer). `false`: it will never be
    /// accepted (for example invalid), so it is counted as lost at once.
    pub transient: bool,
    /// What happened.
    pub message: String,
}

/// A topic Genesys refused on subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedTopic {
    /// The topic.
    pub topic: String,
    /// `rejectionReason`, when given.
    pub reason: Option<String>,
    /// `missingPermissions`, when given.
    pub missing_permissions: Vec<String>,
}

/// A time without a live socket for a shard's topics. Losses separated by less than
/// `reconnect_backoff_max` of live time are merged into one gap.
#[derive(Clone, Serialize)]
pub struct Gap {
    /// Shard index (see [`ChannelInfo::shard`]).
    pub shard: usize,
    /// Topics affected.
    #[serde(skip)]
    pub topics: Arc<[String]>,
    /// Number of topics affected.
    pub topic_count: usize,
    /// Last frame received on the socket that was lost: nothing is known after this instant.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// When the loss was noticed.
    #[serde(with = "time::serde::rfc3339")]
    pub detected: OffsetDateTime,
    /// When a socket was live again; `None` while the gap is open.
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// Why the last socket went away.
    pub reason: String,
}

impl std::fmt::Debug for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gap")
            .field("shard", &self.shard)
            .field("topic_count", &self.topic_count)
            .field("start", &self.start)
            .field("detected", &self.detected)
            .field("end", &self.end)
            .field("reason", &self.reason)
            .finish()
    }
}

/// One channel the source holds.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// Shard index.
    pub shard: usize,
    /// Channel id.
    pub channel_id: String,
    /// `connectUri`.
    pub connect_uri: String,
    /// Channel expiry as Genesys reported it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// Topics subscribed.
    pub topics: usize,
    /// Topics Genesys accepted (`Permitted`).
    pub permitted: usize,
    /// Topics Genesys refused (`Rejected`).
    pub rejected: usize,
    /// Whether a WebSocket is open on it.
    pub connected: bool,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStats {
    /// Events the sink accepted.
    pub delivered: u64,
    /// Events that could not be accepted (non-transient error or retry limit spent).
    pub lost: u64,
    /// Transient sink errors retried.
    pub sink_retries: u64,
    /// Channels created.
    pub channels_created: u64,
    /// Channels rolled over before expiry.
    pub rollovers: u64,
    /// WebSocket connections opened.
    pub connections: u64,
    /// `v2.system.*` messages seen.
    pub system_messages: u64,
    /// Text frames that were not JSON objects.
    pub malformed: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    lost: AtomicU64,
    sink_retries: AtomicU64,
    channels_created: AtomicU64,
    rollovers: AtomicU64,
    connections: AtomicU64,
    system_messages: AtomicU64,
    malformed: AtomicU64,
}

/// An event read from a socket that the sink never accepted. The WebSocket cannot redeliver
/// it: backfill from the Analytics API if it matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// `topicName` of the event.
    pub topic: String,
    /// `metadata.CorrelationId` of the event (empty when absent).
    pub correlation_id: String,
    /// When it was given up.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The sink's last error.
    pub error: String,
}

/// Losses kept in memory (the counter in [`SourceStats::lost`] counts them all).
const MAX_LOSSES: usize = 1_000;

/// Gaps kept in memory; the oldest closed gaps are dropped beyond this.
const MAX_GAPS: usize = 10_000;

#[derive(Default)]
struct Shared {
    counters: Counters,
    gaps: Mutex<VecDeque<Gap>>,
    losses: Mutex<VecDeque<Loss>>,
    channels: Mutex<Vec<Vec<ChannelInfo>>>,
    rejected: Mutex<Vec<Vec<RejectedTopic>>>,
    failure: Mutex<Option<String>>,
    shards: Mutex<usize>,
    version: Option<watch::Sender<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of plain data; the data
    // is still the best we have.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn record_loss(&self, loss: Loss) {
        let mut losses = lock(&self.losses);
        if losses.len() == MAX_LOSSES {
            losses.pop_front();
        }
        losses.push_back(loss);
        drop(losses);
        self.bump();
    }

    fn bump(&self) {
        if let Some(v) = &self.version {
            v.send_modify(|n| *n += 1);
        }
    }

    fn open_gap(
        &self,
        shard: usize,
        topics: &Arc<[String]>,
        start: OffsetDateTime,
        reason: String,
        merge_within: Duration,
    ) {
        let now = OffsetDateTime::now_utc();
        let mut gaps = lock(&self.gaps);
        // A socket that was up only briefly between two losses (a flapping server) did not
        // end the outage in any useful sense: reopen the previous gap instead of starting a
        // new one, so `gaps` shows one outage with its true extent.
        if let Some(prev) = gaps.iter_mut().rev().find(|g| g.shard == shard)
            && prev.end.is_some_and(|end| now - end < merge_within)
        {
            tracing::warn!(shard, %reason, "Genesys notifications: gap reopened");
            prev.end = None;
            prev.reason = reason;
            drop(gaps);
            metrics::gauge!("switchboard_genesys_gap_open", "shard" => shard.to_string()).set(1.0);
            self.bump();
            return;
        }
        tracing::warn!(shard, topics = topics.len(), %reason, "Genesys notifications: gap opened");
        gaps.push_back(Gap {
            shard,
            topics: topics.clone(),
            topic_count: topics.len(),
            start,
            detected: now,
            end: None,
            reason,
        });
        while gaps.len() > MAX_GAPS {
            match gaps.iter().position(|g| g.end.is_some()) {
                Some(i) => {
                    gaps.remove(i);
                }
                None => break,
            }
        }
        drop(gaps);
        metrics::counter!("switchboard_genesys_gaps_total", "shard" => shard.to_string())
            .increment(1);
        metrics::gauge!("switchboard_genesys_gap_open", "shard" => shard.to_string()).set(1.0);
        self.bump();
    }

    fn close_gap(&self, shard: usize) {
        let now = OffsetDateTime::now_utc();
        let mut closed = None;
        for g in lock(&self.gaps).iter_mut().rev() {
            if g.shard == shard && g.end.is_none() {
                g.end = Some(now);
                closed = Some((now - g.start).as_seconds_f64());
            }
        }
        if let Some(secs) = closed {
            tracing::info!(shard, seconds = secs, "Genesys notifications: gap closed");
            metrics::gauge!("switchboard_genesys_gap_open", "shard" => shard.to_string()).set(0.0);
            metrics::histogram!("switchboard_genesys_gap_seconds").record(secs);
            metrics::counter!("switchboard_genesys_gap_seconds_total")
                .increment(secs.ceil() as u64);
            self.bump();
        }
    }
}

/// A channel as Genesys lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteChannel {
    /// Channel id.
    pub id: String,
    /// `connectUri`, when listed.
    #[serde(default)]
    pub connect_uri: Option<String>,
    /// Expiry as Genesys wrote it (RFC 3339), when listed.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Every channel Genesys holds for this OAuth client, over all its tokens
/// (`GET /api/v2/notifications/channels?includechannels=oauthclient`). For
/// `switchboard genesys channels` when no source is running in this process, and to see how
/// close the client is to the 20-channel limit.
pub async fn list_channels(client: &Client) -> Result<Vec<RemoteChannel>> {
    #[derive(serde::Deserialize)]
    struct Listing {
        #[serde(default)]
        entities: Vec<RemoteChannel>,
    }
    let listing: Listing = client
        .get(
            "/api/v2/notifications/channels",
            &[("includechannels", "oauthclient".to_string())],
        )
        .await?;
    Ok(listing.entities)
}

/// Entry point; see the module docs.
pub struct NotificationSource;

impl NotificationSource {
    /// Starts the source in the background and returns at once. Expansion or sharding errors
    /// (for example [`Error::TooManyTopics`]) end the source; read them from [`SourceView::failure`]
    /// or [`Handle::join`]. Call [`expand_topics`] + [`shard_topics`] first to fail early.
    pub fn spawn(
        client: Client,
        config: NotificationConfig,
        sink: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Handle {
        let (version_tx, version_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            version: Some(version_tx),
            ..Shared::default()
        });
        let task = tokio::spawn(supervise(client, config, sink, cancel, shared.clone()));
        Handle {
            view: SourceView {
                shared,
                version: version_rx,
            },
            task: Some(task),
        }
    }
}

/// A running source: its [`SourceView`] (through `Deref`) plus [`Handle::join`].
pub struct Handle {
    view: SourceView,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl std::ops::Deref for Handle {
    type Target = SourceView;

    fn deref(&self) -> &SourceView {
        &self.view
    }
}

impl std::ops::DerefMut for Handle {
    fn deref_mut(&mut self) -> &mut SourceView {
        &mut self.view
    }
}

impl Handle {
    /// A cheap, cloneable read-only view for status pages (admin API, `switchboard genesys
    /// gaps|channels`) while the handle itself waits in shutdown code.
    pub fn view(&self) -> SourceView {
        self.view.clone()
    }

    /// Waits for the source to finish (after cancellation, or a startup failure).
    pub async fn join(mut self) -> Result<()> {
        match self.task.take() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(Error::Config(format!("notification source task: {e}")))),
            None => Ok(()),
        }
    }
}

/// Read-only state of a running source.
#[derive(Clone)]
pub struct SourceView {
    shared: Arc<Shared>,
    version: watch::Receiver<u64>,
}

impl SourceView {
    /// Every recorded gap, oldest first (open ones have `end == None`).
    pub fn gaps(&self) -> Vec<Gap> {
        lock(&self.shared.gaps).iter().cloned().collect()
    }

    /// The most recent events the sink never accepted (at most 1,000), oldest first.
    pub fn losses(&self) -> Vec<Loss> {
        lock(&self.shared.losses).iter().cloned().collect()
    }

    /// Channels held now, by shard.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        lock(&self.shared.channels)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Number of shards (0 until topics are expanded).
    pub fn shard_count(&self) -> usize {
        *lock(&self.shared.shards)
    }

    /// Topics Genesys refused, over all shards.
    pub fn rejected_topics(&self) -> Vec<RejectedTopic> {
        lock(&self.shared.rejected)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Counters since start.
    pub fn stats(&self) -> SourceStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SourceStats {
            delivered: get(&c.delivered),
            lost: get(&c.lost),
            sink_retries: get(&c.sink_retries),
            channels_created: get(&c.channels_created),
            rollovers: get(&c.rollovers),
            connections: get(&c.connections),
            system_messages: get(&c.system_messages),
            malformed: get(&c.malformed),
        }
    }

    /// Why the source stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Waits until `predicate` holds (checked at every state change), or `timeout` passes.
    /// Returns whether it held. For status pages and tests.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut predicate: impl FnMut(&SourceView) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if predicate(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return predicate(self),
                Err(_) => return predicate(self),
            }
        }
    }
}

async fn supervise(
    client: Client,
    config: NotificationConfig,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
    shared: Arc<Shared>,
) -> Result<()> {
    let result = run(client, config, sink, cancel, shared.clone()).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "Genesys notification source stopped");
        *lock(&shared.failure) = Some(e.to_string());
        shared.bump();
    }
    result
}

async fn run(
    client: Client,
    config: NotificationConfig,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
    shared: Arc<Shared>,
) -> Result<()> {
    config.validate()?;
    let topics = tokio::select! {
        t = expand_topics(&client, &config.topics, config.page_size) => t?,
        () = cancel.cancelled() => return Ok(()),
    };
    let shards = shard_topics(&topics, &config)?;
    tracing::info!(
        topics = topics.len(),
        channels = shards.len(),
        "Genesys notifications: topics expanded"
    );
    *lock(&shared.shards) = shards.len();
    *lock(&shared.channels) = vec![Vec::new(); shards.len()];
    *lock(&shared.rejected) = vec![Vec::new(); shards.len()];
    shared.bump();

    let config = Arc::new(config);
    let (events_tx, events_rx) = mpsc::channel::<Value>(config.buffer);
    let delivery = tokio::spawn(deliver::deliver(
        events_rx,
        sink,
        config.clone(),
        shared.clone(),
        cancel.clone(),
    ));
    let rollover_gate = Arc::new(Semaphore::new(1));
    let mut tasks = Vec::new();
    let mut senders: Vec<watch::Sender<Arc<[String]>>> = Vec::new();
    let spawn_shard = |index: usize, topics: Vec<String>| {
        let topics: Arc<[String]> = topics.into();
        let (tx, rx) = watch::channel(topics.clone());
        let shard = Shard {
            index,
            topics,
            topics_rx: rx,
            client: client.clone(),
            config: config.clone(),
            shared: shared.clone(),
            events: events_tx.clone(),
            cancel: cancel.clone(),
            rollover_gate: rollover_gate.clone(),
        };
        (tx, tokio::spawn(shard.run()))
    };
    let mut current = shards.clone();
    for (index, topics) in shards.into_iter().enumerate() {
        let (tx, task) = spawn_shard(index, topics);
        senders.push(tx);
        tasks.push(task);
    }
    let templated = config.topics.iter().any(|t| t.contains('{'));
    if templated && !config.refresh_topics_every.is_zero() {
        let mut tick = tokio::time::interval(config.refresh_topics_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let topics = tokio::select! {
                t = expand_topics(&client, &config.topics, config.page_size) => t,
                () = cancel.cancelled() => break,
            };
            let next = match topics.and_then(|t| reshard(&current, &t, &config)) {
                Ok(next) => next,
                Err(e) => {
                    // Keep the current subscriptions: a failed refresh is not an outage.
                    tracing::warn!(error = %e, "Genesys topic refresh failed; keeping the current topics");
                    continue;
                }
            };
            for (index, topics) in next.iter().enumerate() {
                if current.get(index) == Some(topics) {
                    continue;
                }
                if let Some(tx) = senders.get(index) {
                    tx.send_replace(topics.clone().into());
                } else {
                    lock(&shared.channels).push(Vec::new());
                    lock(&shared.rejected).push(Vec::new());
                    *lock(&shared.shards) = index + 1;
                    let (tx, task) = spawn_shard(index, topics.clone());
                    senders.push(tx);
                    tasks.push(task);
                }
            }
            current = next;
        }
    }
    // The delivery task ends when the last sender is gone: the shards' and their sockets'.
    drop(events_tx);
    for t in tasks {
        let _ = t.await;
    }
    let _ = delivery.await;
    Ok(())
}

impl std::fmt::Debug for SourceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceView")
            .field("channels", &self.channels().len())
            .field("gaps", &self.gaps().len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}
