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
//!   is recorded with its start (the last frame received on the lost socket) and end (the next
//!   socket up), available from [`Handle::gaps`] and as metrics.
//! - `channel.metadata` (heartbeat, pong) and `v2.system.*` messages never reach the sink.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::{Error, Result};

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

/// Configuration of one `genesys-notifications` source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Concrete topics and templates (see the module docs for `{user}`, `{queue}`, `{id}`).
    pub topics: Vec<String>,
    /// Topics per channel, at most 1,000 (Genesys' limit).
    #[serde(default = "defaults::per_channel")]
    pub max_topics_per_channel: usize,
    /// Channels this source may hold, at most 20 (Genesys' per-OAuth-client limit). One is
    /// kept free so a rollover never evicts a live channel.
    #[serde(default = "defaults::max_channels")]
    pub max_channels: usize,
    /// Roll a channel over this long before it (or the token it was created with) expires.
    #[serde(default = "defaults::rollover", with = "dur")]
    pub rollover_before_expiry: Duration,
    /// Send `{"message":"ping"}` after this much silence (Genesys heartbeats every ~30 s).
    #[serde(default = "defaults::ping_after", with = "dur")]
    pub ping_after_silence: Duration,
    /// Declare the socket dead when nothing arrives this long after a ping.
    #[serde(default = "defaults::pong_timeout", with = "dur")]
    pub pong_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt up to `reconnect_backoff_max`.
    #[serde(default = "defaults::backoff_min", with = "dur")]
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    #[serde(default = "defaults::backoff_max", with = "dur")]
    pub reconnect_backoff_max: Duration,
    /// Reconnects to the same `connectUri` before giving up on the channel and creating a new one.
    #[serde(default = "defaults::same_uri_attempts")]
    pub same_uri_attempts: u32,
    /// Keep retrying a transient sink error this long before counting the event as lost.
    #[serde(default = "defaults::sink_retry_limit", with = "dur")]
    pub sink_retry_limit: Duration,
    /// Events read from the sockets but not yet accepted by the sink; bounds memory.
    #[serde(default = "defaults::buffer")]
    pub buffer: usize,
    /// Concurrent `accept` calls (lets a group-committing store batch them).
    #[serde(default = "defaults::sink_concurrency")]
    pub sink_concurrency: usize,
    /// Page size for the users/queues listings.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// Timeout for opening a WebSocket.
    #[serde(default = "defaults::connect_timeout", with = "dur")]
    pub connect_timeout: Duration,
}

mod dur {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        crate::duration::deserialize(d)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

mod defaults {
    use std::time::Duration;
    pub fn per_channel() -> usize {
        super::MAX_TOPICS_PER_CHANNEL
    }
    pub fn max_channels() -> usize {
        super::MAX_CHANNELS
    }
    pub fn rollover() -> Duration {
        Duration::from_secs(600)
    }
    pub fn ping_after() -> Duration {
        Duration::from_secs(60)
    }
    pub fn pong_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn backoff_min() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn same_uri_attempts() -> u32 {
        3
    }
    pub fn sink_retry_limit() -> Duration {
        Duration::from_secs(600)
    }
    pub fn buffer() -> usize {
        1024
    }
    pub fn sink_concurrency() -> usize {
        16
    }
    pub fn page_size() -> u32 {
        100
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(15)
    }
}

impl NotificationConfig {
    /// A config for `topics` with every default.
    pub fn new(topics: Vec<String>) -> Self {
        NotificationConfig {
            topics,
            max_topics_per_channel: defaults::per_channel(),
            max_channels: defaults::max_channels(),
            rollover_before_expiry: defaults::rollover(),
            ping_after_silence: defaults::ping_after(),
            pong_timeout: defaults::pong_timeout(),
            reconnect_backoff_min: defaults::backoff_min(),
            reconnect_backoff_max: defaults::backoff_max(),
            same_uri_attempts: defaults::same_uri_attempts(),
            sink_retry_limit: defaults::sink_retry_limit(),
            buffer: defaults::buffer(),
            sink_concurrency: defaults::sink_concurrency(),
            page_size: defaults::page_size(),
            connect_timeout: defaults::connect_timeout(),
        }
    }

    /// Checks the limits; does not call Genesys.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.topics.is_empty() {
            problems.push("topics must not be empty".to_string());
        }
        if !(1..=MAX_TOPICS_PER_CHANNEL).contains(&self.max_topics_per_channel) {
            problems.push(format!(
                "max_topics_per_channel must be 1..={MAX_TOPICS_PER_CHANNEL}"
            ));
        }
        if !(2..=MAX_CHANNELS).contains(&self.max_channels) {
            problems.push(format!(
                "max_channels must be 2..={MAX_CHANNELS} (one is kept free for rollover)"
            ));
        }
        if self.buffer == 0 || self.sink_concurrency == 0 || self.page_size == 0 {
            problems.push("buffer, sink_concurrency and page_size must be positive".to_string());
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_max < self.reconnect_backoff_min
        {
            problems.push(
                "reconnect_backoff_min must be positive and at most reconnect_backoff_max"
                    .to_string(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

/// What a template placeholder expands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expand {
    Users,
    Queues,
}

/// Splits a configured topic into (prefix, expansion, suffix), or `None` when concrete.
fn template(topic: &str) -> Result<Option<(&str, Expand, &str)>> {
    let bad = |message: String| Error::Topic {
        topic: topic.to_string(),
        message,
    };
    let Some(open) = topic.find('{') else {
        if topic.contains('}') {
            return Err(bad("unbalanced '}'".into()));
        }
        return Ok(None);
    };
    let close = topic[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| bad("unbalanced '{'".into()))?;
    let (prefix, name, suffix) = (&topic[..open], &topic[open + 1..close], &topic[close + 1..]);
    if suffix.contains(['{', '}']) {
        return Err(bad("only one placeholder is supported per topic".into()));
    }
    let kind = match name {
        "user" => Expand::Users,
        "queue" => Expand::Queues,
        "id" if prefix == "v2.users." => Expand::Users,
        "id" if prefix == "v2.routing.queues." || prefix == "v2.analytics.queues." => {
            Expand::Queues
        }
        "id" => {
            return Err(bad(
                "WebSocket topics need concrete ids and this {id} cannot be enumerated; \
                 use {user} or {queue}, or the EventBridge integration for org-wide topics"
                    .into(),
            ));
        }
        other => {
            return Err(bad(format!(
                "unknown placeholder {{{other}}}; use {{user}} or {{queue}}"
            )));
        }
    };
    Ok(Some((prefix, kind, suffix)))
}

/// Expands templates into concrete topics (sorted, deduplicated).
pub async fn expand_topics(
    client: &Client,
    topics: &[String],
    page_size: u32,
) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Entity {
        id: String,
    }
    let mut users: Option<Vec<String>> = None;
    let mut queues: Option<Vec<String>> = None;
    let mut out = BTreeSet::new();
    for topic in topics {
        let topic = topic.trim();
        match template(topic)? {
            None => {
                out.insert(topic.to_string());
            }
            Some((prefix, kind, suffix)) => {
                let (slot, path) = match kind {
                    Expand::Users => (&mut users, "/api/v2/users"),
                    Expand::Queues => (&mut queues, "/api/v2/routing/queues"),
                };
                if slot.is_none() {
                    let all: Vec<Entity> = client.get_all_pages(path, &[], page_size).await?;
                    *slot = Some(all.into_iter().map(|e| e.id).collect());
                }
                for id in slot.iter().flatten() {
                    out.insert(format!("{prefix}{id}{suffix}"));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Splits concrete topics over channels, or explains why they do not fit.
pub fn shard_topics(topics: &[String], config: &NotificationConfig) -> Result<Vec<Vec<String>>> {
    config.validate()?;
    let per_channel = config.max_topics_per_channel;
    let needed = topics.len().div_ceil(per_channel);
    // One channel stays free: a rollover creates the new channel before leaving the old one,
    // and a 21st channel would evict one of ours.
    let max_channels = config.max_channels - 1;
    if needed > max_channels {
        return Err(Error::TooManyTopics {
            topics: topics.len(),
            needed,
            per_channel,
            max_channels,
        });
    }
    if topics.is_empty() {
        return Err(Error::Config(
            "the topic templates expanded to no topics".into(),
        ));
    }
    Ok(topics.chunks(per_channel).map(<[String]>::to_vec).collect())
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

/// A time without a live socket for a shard's topics.
#[derive(Debug, Clone, Serialize)]
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

/// Gaps kept in memory; the oldest closed gaps are dropped beyond this.
const MAX_GAPS: usize = 10_000;

#[derive(Default)]
struct Shared {
    counters: Counters,
    gaps: Mutex<VecDeque<Gap>>,
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
    ) {
        tracing::warn!(shard, topics = topics.len(), %reason, "Genesys notifications: gap opened");
        let mut gaps = lock(&self.gaps);
        gaps.push_back(Gap {
            shard,
            topics: topics.clone(),
            topic_count: topics.len(),
            start,
            detected: OffsetDateTime::now_utc(),
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

/// Entry point; see the module docs.
pub struct NotificationSource;

impl NotificationSource {
    /// Starts the source in the background and returns at once. Expansion or sharding errors
    /// (for example [`Error::TooManyTopics`]) end the source; read them from [`Handle::failure`]
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
            shared,
            version: version_rx,
            task: Some(task),
        }
    }
}

/// A running source.
pub struct Handle {
    shared: Arc<Shared>,
    version: watch::Receiver<u64>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Handle {
    /// Every recorded gap, oldest first (open ones have `end == None`).
    pub fn gaps(&self) -> Vec<Gap> {
        lock(&self.shared.gaps).iter().cloned().collect()
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
        mut predicate: impl FnMut(&Handle) -> bool,
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
    let delivery = tokio::spawn(deliver(
        events_rx,
        sink,
        config.clone(),
        shared.clone(),
        cancel.clone(),
    ));
    let rollover_gate = Arc::new(Semaphore::new(1));
    let mut tasks = Vec::new();
    for (index, topics) in shards.into_iter().enumerate() {
        let shard = Shard {
            index,
            topics: topics.into(),
            client: client.clone(),
            config: config.clone(),
            shared: shared.clone(),
            events: events_tx.clone(),
            cancel: cancel.clone(),
            rollover_gate: rollover_gate.clone(),
        };
        tasks.push(tokio::spawn(shard.run()));
    }
    // The delivery task ends when the last sender is gone: the shards' and their sockets'.
    drop(events_tx);
    for t in tasks {
        let _ = t.await;
    }
    let _ = delivery.await;
    Ok(())
}

/// Drains the event queue into the sink; see the module docs for the retry and loss rules.
async fn deliver(
    rx: mpsc::Receiver<Value>,
    sink: Arc<dyn EventSink>,
    config: Arc<NotificationConfig>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    stream
        .for_each_concurrent(config.sink_concurrency, |message| {
            let (sink, config, shared, cancel) = (sink.clone(), config.clone(), shared.clone(), cancel.clone());
            async move {
                let started = Instant::now();
                let mut backoff = Duration::from_millis(50);
                loop {
                    match sink.accept(message.clone()).await {
                        Ok(()) => {
                            shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("switchboard_genesys_events_total").increment(1);
                            return;
                        }
                        Err(e) => {
                            // On shutdown, keep trying only briefly: the process is going away.
                            let limit = if cancel.is_cancelled() {
                                config.sink_retry_limit.min(Duration::from_secs(5))
                            } else {
                                config.sink_retry_limit
                            };
                            if e.transient && started.elapsed() + backoff <= limit {
                                shared.counters.sink_retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                            shared.counters.lost.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("switchboard_genesys_events_lost_total").increment(1);
                            let topic = message.get("topicName").and_then(Value::as_str).unwrap_or("");
                            let correlation_id =
                                message.pointer("/metadata/CorrelationId").and_then(Value::as_str).unwrap_or("");
                            tracing::error!(
                                topic,
                                correlation_id,
                                transient = e.transient,
                                error = %e.message,
                                "Genesys notification LOST: the sink did not accept it and the WebSocket cannot redeliver"
                            );
                            shared.bump();
                            return;
                        }
                    }
                }
            }
        })
        .await;
}

/// One channel as created by Genesys.
#[derive(Debug)]
struct Channel {
    id: String,
    connect_uri: String,
    expires: Option<OffsetDateTime>,
    /// When to roll over: before the channel's or its token's expiry, whichever is first.
    roll_at: Instant,
    permitted: usize,
    rejected: Vec<RejectedTopic>,
}

/// Why a connection task ended (or is about to).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloseReason {
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

enum ConnEvent {
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

struct Conn {
    id: u64,
    channel: Arc<Channel>,
    cancel: CancellationToken,
    connected: bool,
}

struct Shard {
    index: usize,
    topics: Arc<[String]>,
    client: Client,
    config: Arc<NotificationConfig>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Value>,
    cancel: CancellationToken,
    /// One rollover at a time across shards, so at most one extra channel exists at once.
    rollover_gate: Arc<Semaphore>,
}

impl Shard {
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .config
            .reconnect_backoff_min
            .saturating_mul(2u32.saturating_pow(failures.min(16)));
        let capped = base.min(self.config.reconnect_backoff_max);
        capped.mul_f64(rand::random_range(0.8..=1.0))
    }

    async fn run(self) {
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<ConnEvent>();
        let mut conns: Vec<Conn> = Vec::new();
        let mut current: Option<Arc<Channel>> = None;
        let mut next_conn_id = 0u64;
        let mut live = 0usize;
        let mut ever_live = false;
        // Failures since the last successful connection, for backoff.
        let mut failures = 0u32;
        // Same-URI reconnects since the last successful connection.
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
                (Some(ch), None) => roll_retry_at.unwrap_or(ch.roll_at),
                _ => far,
            };
            tokio::select! {
                () = self.cancel.cancelled() => break,
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
                            failures = 0;
                            let mut newest_channel = None;
                            if let Some(c) = conns.iter_mut().find(|c| c.id == conn) {
                                c.connected = true;
                                newest_channel = Some(c.channel.clone());
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
                                same_uri_tries = 0;
                            }
                            if let (Some(ch), Some(cur)) = (newest_channel, &current)
                                && Arc::ptr_eq(&ch, cur)
                            {
                                same_uri_tries = 0;
                            }
                        }
                        ConnEvent::Closing { conn } => {
                            // Genesys will close this socket soon: open a new one on the same
                            // channel now; when it is up, the old one is closed by us.
                            let on_current = conns.iter().any(|c| {
                                c.id == conn && current.as_ref().is_some_and(|cur| Arc::ptr_eq(&c.channel, cur))
                            });
                            let newest = conns.iter().map(|c| c.id).max() == Some(conn);
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
                                if closed.connected && pending_other {
                                    // A newer socket is being opened (socket_closing): only a
                                    // gap if it fails.
                                    deferred_gap = Some((last_rx, reason.describe()));
                                } else if closed.connected || (!pending_other && deferred_gap.is_some()) {
                                    let (start, why) = deferred_gap.take().unwrap_or((last_rx, reason.describe()));
                                    self.shared.open_gap(self.index, &self.topics, start, why);
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
                                        failures += 1;
                                        same_uri_tries += 1;
                                        if same_uri_tries > self.config.same_uri_attempts {
                                            tracing::warn!(shard = self.index, "Genesys channel unreachable; creating a new one");
                                            current = None;
                                            new_channel_at = Some(Instant::now() + self.backoff(failures));
                                        } else {
                                            // The first reconnect is immediate: a dropped socket
                                            // on a healthy channel is the common case.
                                            let wait = if same_uri_tries == 1 { Duration::ZERO } else { self.backoff(failures) };
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
                    topics: self.topics.len(),
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
        let body = Value::Array(self.topics.iter().map(|t| json!({"id": t})).collect());
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
            permitted: self.topics.len() - rejected.len().min(self.topics.len()),
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
        }
    }
}

struct ConnTask {
    id: u64,
    uri: String,
    config: Arc<NotificationConfig>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Value>,
    notify: mpsc::UnboundedSender<ConnEvent>,
    cancel: CancellationToken,
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

    async fn run(self) {
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
            let msg = tokio::select! {
                () = self.cancel.cancelled() => {
                    self.close_and_drain(&mut ws).await;
                    return CloseReason::Cancelled;
                }
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
                m = ws.next() => m,
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
                    last_rx = Instant::now();
                    *last_rx_utc = OffsetDateTime::now_utc();
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

    #[test]
    fn templates() {
        let check = |t: &str, expect: std::result::Result<Option<(&str, Expand, &str)>, &str>| {
            let got = template(t);
            match (got, expect) {
                (Ok(g), Ok(e)) => assert_eq!(g, e, "{t}"),
                (Err(g), Err(e)) => assert!(g.to_string().contains(e), "{t}: {g}"),
                (g, e) => panic!("{t}: got {g:?}, expected {e:?}"),
            }
        };
        check("v2.users.abc.presence", Ok(None));
        check(
            "v2.users.{user}.presence",
            Ok(Some(("v2.users.", Expand::Users, ".presence"))),
        );
        check(
            "v2.users.{id}.routingStatus",
            Ok(Some(("v2.users.", Expand::Users, ".routingStatus"))),
        );
        check(
            "v2.routing.queues.{queue}.conversations.calls",
            Ok(Some((
                "v2.routing.queues.",
                Expand::Queues,
                ".conversations.calls",
            ))),
        );
        check(
            "v2.routing.queues.{id}.users",
            Ok(Some(("v2.routing.queues.", Expand::Queues, ".users"))),
        );
        check(
            "v2.analytics.queues.{id}.observations",
            Ok(Some((
                "v2.analytics.queues.",
                Expand::Queues,
                ".observations",
            ))),
        );
        check(
            "v2.detail.events.conversation.{id}.customer.start",
            Err("EventBridge"),
        );
        check("v2.users.{conversation}.x", Err("unknown placeholder"));
        check("v2.users.{user}.{queue}", Err("only one"));
        check("v2.users.{user.x", Err("unbalanced"));
        check("v2.users.user}.x", Err("unbalanced"));
    }

    #[test]
    fn frames() {
        let check = |text: &str, expected: Frame| assert_eq!(classify(text), expected, "{text}");
        check(
            include_str!("../tests/data/heartbeat.json"),
            Frame::Metadata,
        );
        check(include_str!("../tests/data/pong.json"), Frame::Metadata);
        let presence = include_str!("../tests/data/user-presence.json");
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

    #[test]
    fn sharding_limits() {
        let topics: Vec<String> = (0..2500)
            .map(|i| format!("v2.users.{i}.presence"))
            .collect();
        let cfg = NotificationConfig::new(vec!["x".into()]);
        let shards = shard_topics(&topics, &cfg).unwrap();
        assert_eq!(
            shards.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let many: Vec<String> = (0..19_001).map(|i| format!("t{i}")).collect();
        let err = shard_topics(&many, &cfg).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyTopics {
                    needed: 20,
                    max_channels: 19,
                    ..
                }
            ),
            "{err}"
        );
        assert!(shard_topics(&many[..19_000], &cfg).is_ok());
        let mut small = cfg.clone();
        small.max_topics_per_channel = 1001;
        assert!(shard_topics(&topics, &small).is_err());
        small.max_topics_per_channel = 10;
        small.max_channels = 3;
        assert!(matches!(
            shard_topics(&topics[..21], &small),
            Err(Error::TooManyTopics { needed: 3, .. })
        ));
        assert_eq!(shard_topics(&topics[..20], &small).unwrap().len(), 2);
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_keys() {
        let c: NotificationConfig = serde_json::from_value(json!({
            "topics": ["v2.users.{user}.presence"], "rollover_before_expiry": "500ms"
        }))
        .unwrap();
        assert_eq!(c.rollover_before_expiry, Duration::from_millis(500));
        assert_eq!(c.max_topics_per_channel, 1000);
        assert!(
            serde_json::from_value::<NotificationConfig>(json!({"topics": [], "topic": 1}))
                .is_err()
        );
    }
}
