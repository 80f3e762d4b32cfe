//! The Notification WebSocket source against the fake Genesys: sharding, rollover, token
//! expiry, dropped and closing sockets, rejected topics, sink retries, gaps.

mod fake;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake::{Fake, Settings};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchboard_genesys::notifications::{
    EventSink, Handle, NotificationConfig, NotificationSource, SinkError, SourceStats,
    expand_topics, list_channels, shard_topics,
};
use switchboard_genesys::{Client, Error};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Records every accepted message; can fail the first N calls.
#[derive(Default)]
struct Sink {
    got: Mutex<Vec<Value>>,
    changed: Notify,
    fail_transient: AtomicU32,
    fail_permanent: AtomicU32,
}

impl EventSink for Sink {
    fn accept(&self, message: Value) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if self.fail_transient.load(Ordering::SeqCst) > 0 {
                self.fail_transient.fetch_sub(1, Ordering::SeqCst);
                return Err(SinkError {
                    transient: true,
                    message: "store full".into(),
                });
            }
            if self.fail_permanent.load(Ordering::SeqCst) > 0 {
                self.fail_permanent.fetch_sub(1, Ordering::SeqCst);
                return Err(SinkError {
                    transient: false,
                    message: "invalid".into(),
                });
            }
            self.got.lock().unwrap().push(message);
            self.changed.notify_waiters();
            Ok(())
        })
    }
}

impl Sink {
    fn correlation_ids(&self) -> HashSet<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m.pointer("/metadata/CorrelationId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    /// Waits until every id in `want` was accepted.
    async fn wait_all(&self, want: &HashSet<String>, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if want.is_subset(&self.correlation_ids()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return want.is_subset(&self.correlation_ids());
            }
        }
    }
}

/// Waits until the source's counters satisfy `want`, then returns them. The sink records an
/// event before the source counts it, and a count does not signal the view's version (that
/// would be a wake-up per event), so a test that saw the sink get everything polls the counters.
async fn counted(handle: &Handle, want: impl Fn(&SourceStats) -> bool) -> SourceStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = handle.stats();
        if want(&stats) || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn config(topics: &[&str]) -> NotificationConfig {
    let mut c = NotificationConfig::new(topics.iter().map(|t| t.to_string()).collect());
    c.rollover_before_expiry = Duration::from_millis(700);
    c.ping_after_silence = Duration::from_secs(2);
    c.pong_timeout = Duration::from_secs(1);
    c.reconnect_backoff_min = Duration::from_millis(50);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c.sink_retry_limit = Duration::from_secs(5);
    c
}

struct Running {
    fake: Arc<Fake>,
    sink: Arc<Sink>,
    handle: Handle,
    cancel: CancellationToken,
}

async fn start(settings: Settings, cfg: NotificationConfig) -> Running {
    let fake = Fake::start(settings).await;
    let client = Client::new(fake.client_config()).unwrap();
    let sink = Arc::new(Sink::default());
    let cancel = CancellationToken::new();
    let handle = NotificationSource::spawn(client, cfg, sink.clone(), cancel.clone());
    Running {
        fake,
        sink,
        handle,
        cancel,
    }
}

impl Running {
    /// Waits until every shard has a connected channel.
    async fn wait_connected(&mut self) {
        let ok = self
            .handle
            .wait_for(WAIT, |h| {
                let n = h.shard_count();
                n > 0
                    && h.channels()
                        .iter()
                        .filter(|c| c.connected)
                        .map(|c| c.shard)
                        .collect::<HashSet<_>>()
                        .len()
                        == n
            })
            .await;
        assert!(
            ok,
            "not connected: {:?} failure {:?}",
            self.handle.channels(),
            self.handle.failure()
        );
    }

    /// Publishes `n` events round-robin over `topics`, `every` apart; returns their ids and
    /// asserts each reached at least one socket (no hole on the server side).
    async fn stream(&self, topics: &[String], n: usize, every: Duration) -> HashSet<String> {
        let mut ids = HashSet::new();
        let mut tick = tokio::time::interval(every);
        for i in 0..n {
            tick.tick().await;
            let (id, sockets) = self
                .fake
                .publish(&topics[i % topics.len()], json!({"seq": i}));
            assert!(
                sockets >= 1,
                "event {i} had no socket to go to: a gap on the server side"
            );
            ids.insert(id);
        }
        ids
    }

    async fn stop(self) -> (Arc<Fake>, Arc<Sink>) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.handle.join())
            .await
            .expect("source stops")
            .unwrap();
        (self.fake, self.sink)
    }
}

fn presence(users: &[String]) -> Vec<String> {
    users
        .iter()
        .map(|u| format!("v2.users.{u}.presence"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_2500_topics_over_3_channels() {
    let settings = Settings {
        users: 1250,
        ..Settings::default()
    };
    let mut r = start(
        settings,
        config(&["v2.users.{user}.presence", "v2.users.{id}.routingStatus"]),
    )
    .await;
    r.wait_connected().await;
    assert_eq!(r.fake.topic_counts(), [500, 1000, 1000]);
    assert_eq!(r.handle.shard_count(), 3);
    assert_eq!(
        r.handle.channels().iter().map(|c| c.topics).sum::<usize>(),
        2500
    );
    let users = r.fake.users();
    // One event on the first, middle and last topic reaches the sink from whichever channel.
    let topics = vec![
        format!("v2.users.{}.presence", users[0]),
        format!("v2.users.{}.routingStatus", users[600]),
        format!("v2.users.{}.routingStatus", users[1249]),
    ];
    let ids = r.stream(&topics, 3, Duration::from_millis(1)).await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    let (_, sink) = r.stop().await;
    assert_eq!(sink.got.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_under_steady_stream_loses_nothing() {
    let settings = Settings {
        users: 10,
        channel_lifetime: Duration::from_millis(2500),
        connect_delay: Duration::from_millis(50),
        ..Settings::default()
    };
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.max_topics_per_channel = 5; // two shards, so rollovers also take turns
    // 1.2 s for both shards' turns (token, POST, PUT, connect) before the old channels expire,
    // which a loaded machine needs: at 0.7 s the second shard's turn could come too late.
    cfg.rollover_before_expiry = Duration::from_millis(1200);
    let mut r = start(settings, cfg).await;
    r.wait_connected().await;
    let topics = presence(&r.fake.users());
    // ≥ 5 s of events: each channel lives 2.5 s and rolls 1.2 s early, so ~3 rollovers each.
    let ids = r.stream(&topics, 1000, Duration::from_millis(5)).await;
    assert!(
        r.sink.wait_all(&ids, WAIT).await,
        "missing {} events",
        ids.difference(&r.sink.correlation_ids()).count()
    );
    let stats = counted(&r.handle, |s| s.delivered >= 1000).await;
    assert!(stats.rollovers >= 4, "{stats:?}");
    assert_eq!(stats.lost, 0);
    assert!(r.handle.gaps().is_empty(), "{:?}", r.handle.gaps());
    // Overlap duplicates are allowed (the gateway dedups); loss is not.
    assert!(stats.delivered >= 1000, "{stats:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_stream_rolls_to_a_new_token() {
    // Tokens live 4 s; channels would live a day but die with their token. Each channel rolls
    // 1.5 s before its token ends (a margin a loaded machine's token + POST + PUT + connect
    // fits in), so ≥ 6 s of events see two rollovers and three tokens.
    let settings = Settings {
        users: 4,
        token_lifetime_secs: 4,
        ..Settings::default()
    };
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.rollover_before_expiry = Duration::from_millis(1500);
    let mut r = start(settings, cfg).await;
    r.wait_connected().await;
    let topics = presence(&r.fake.users());
    let ids = r.stream(&topics, 600, Duration::from_millis(10)).await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    assert!(
        r.fake.token_requests() >= 3,
        "tokens fetched: {}",
        r.fake.token_requests()
    );
    let stats = r.handle.stats();
    assert!(stats.rollovers >= 2, "{stats:?}");
    assert!(r.handle.gaps().is_empty(), "{:?}", r.handle.gaps());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_users_are_picked_up_without_losing_events() {
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.max_topics_per_channel = 12;
    cfg.refresh_topics_every = Duration::from_millis(200);
    let mut r = start(
        Settings {
            connect_delay: Duration::from_millis(20),
            ..Settings::default()
        },
        cfg,
    )
    .await;
    r.wait_connected().await;
    assert_eq!(r.handle.shard_count(), 1);
    let old_topics = presence(&r.fake.users());
    let added = r.fake.add_users(5);
    r.fake.remove_user(&r.fake.users()[0]);
    // Events keep flowing on the old topics while the shards are re-spread.
    let streaming = r.stream(&old_topics[1..], 150, Duration::from_millis(4));
    let ok = async {
        r.handle
            .view()
            .wait_for(WAIT, |h| {
                h.shard_count() == 2 && h.channels().iter().filter(|c| c.connected).count() == 2
            })
            .await
    };
    let (ids, ok) = tokio::join!(streaming, ok);
    assert!(ok, "{:?}", r.handle.channels());
    r.wait_connected().await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    // "2 shards, 2 connected" can hold while shard 0 still rolls (its old channel counts too), so
    // wait for the fake to have dropped the old socket rather than trust the stream outlasting it.
    assert!(
        r.fake.wait_for(WAIT, |f| f.topic_counts() == [2, 12]).await,
        "14 users over channels of 12, the stayers kept in place: {:?}",
        r.fake.topic_counts()
    );
    let ids = r
        .stream(&presence(&added), 5, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    assert_eq!(
        r.fake.publish(&old_topics[0], json!({})).1,
        0,
        "a removed user is unsubscribed"
    );
    assert!(r.handle.gaps().is_empty(), "{:?}", r.handle.gaps());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_socket_records_a_gap_and_reconnects_within_backoff() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    let created = r.fake.channels_created();
    r.fake.drop_sockets();
    assert!(
        r.handle
            .wait_for(WAIT, |h| h.gaps().iter().any(|g| g.end.is_some()))
            .await,
        "{:?}",
        r.handle.gaps()
    );
    let gaps = r.handle.gaps();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert!(gap.reason.contains("dropped"), "{}", gap.reason);
    assert_eq!(gap.topic_count, 10);
    let end = gap.end.unwrap();
    assert!(gap.start <= gap.detected && gap.detected <= end);
    // The first reconnect is immediate; allow the backoff maximum plus a loaded machine's slack
    // (still far below the production default ceiling the config would otherwise give).
    assert!(
        end - gap.detected < time::Duration::milliseconds(3000),
        "{gap:?}"
    );
    // Same channel, new socket.
    assert_eq!(r.fake.channels_created(), created);
    r.wait_connected().await;
    let ids = r
        .stream(&presence(&r.fake.users()), 5, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_sockets_back_off_then_move_to_a_new_channel() {
    let mut cfg = config(&["v2.users.{user}.presence"]);
    // The backoff ceiling is also how long a socket must stay up to count as stable (and end the
    // gap): at 200 ms a loaded machine's slow Connected→Closed would pass for a stable socket.
    cfg.reconnect_backoff_max = Duration::from_secs(1);
    let mut r = start(Settings::default(), cfg).await;
    r.wait_connected().await;
    let created = r.fake.channels_created();
    let opened = r.fake.connections_opened();
    // The current socket drops, then its next 4 replacements drop right after opening:
    // after 3 same-URI attempts the source gives up on the channel and makes a new one.
    r.fake.drop_next_connections(4);
    let start = tokio::time::Instant::now();
    r.fake.drop_sockets();
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.connections_opened() == opened + 5)
            .await
    );
    r.wait_connected().await;
    assert!(
        r.handle
            .wait_for(WAIT, |h| h.gaps().iter().all(|g| g.end.is_some()))
            .await
    );
    assert!(
        r.fake.channels_created() > created,
        "a new channel after repeated failures"
    );
    // Backoff between the failing attempts: 0 + 50 + 100 + 200 + 400 ms (minus up to 20 % jitter).
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    let gaps = r.handle.gaps();
    assert_eq!(
        gaps.len(),
        1,
        "one gap from the first drop to the stable socket: {gaps:?}"
    );
    let ids = r
        .stream(&presence(&r.fake.users()), 5, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closing_reconnects_to_the_same_uri_without_a_gap() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    let (created, opened) = (r.fake.channels_created(), r.fake.connections_opened());
    r.fake.send_socket_closing();
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.connections_opened() == opened + 1)
            .await
    );
    assert!(
        r.handle
            .wait_for(WAIT, |h| h.stats().connections == 2)
            .await,
        "{:?}",
        r.handle.stats()
    );
    r.wait_connected().await;
    assert_eq!(
        r.fake.channels_created(),
        created,
        "socket_closing must reuse the channel"
    );
    let ids = r
        .stream(&presence(&r.fake.users()), 20, Duration::from_millis(2))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    assert!(r.handle.gaps().is_empty(), "{:?}", r.handle.gaps());
    assert_eq!(r.handle.stats().system_messages, 1);
    // The system message never reaches the sink.
    let (_, sink) = r.stop().await;
    assert!(
        sink.got
            .lock()
            .unwrap()
            .iter()
            .all(|m| !m["topicName"].as_str().unwrap().starts_with("v2.system"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_longer_subscribed_creates_a_new_channel_and_resubscribes() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    let created = r.fake.channels_created();
    r.fake.send_no_longer_subscribed();
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.channels_created() == created + 1)
            .await
    );
    assert!(
        r.handle
            .wait_for(WAIT, |h| h.gaps().iter().any(|g| g.end.is_some()))
            .await
    );
    r.wait_connected().await;
    // The client closes the old socket without waiting for the server, so the fake may still
    // list it for a moment while the new channel is already up.
    assert!(
        r.fake.wait_for(WAIT, |f| f.topic_counts() == [10]).await,
        "{:?}",
        r.fake.topic_counts()
    );
    let gaps = r.handle.gaps();
    assert!(gaps[0].reason.contains("no_longer_subscribed"), "{gaps:?}");
    let ids = r
        .stream(&presence(&r.fake.users()), 10, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_is_caught_by_the_ping_watchdog() {
    let settings = Settings {
        heartbeat: Some(Duration::from_millis(100)),
        ..Settings::default()
    };
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.ping_after_silence = Duration::from_millis(300);
    cfg.pong_timeout = Duration::from_millis(300);
    let mut r = start(settings, cfg).await;
    r.wait_connected().await;
    r.fake.freeze_sockets();
    assert!(
        r.handle
            .wait_for(WAIT, |h| h.gaps().iter().any(|g| g.end.is_some()))
            .await,
        "{:?}",
        r.handle.gaps()
    );
    let gap = &r.handle.gaps()[0];
    assert!(gap.reason.contains("heartbeat"), "{gap:?}");
    r.wait_connected().await;
    let ids = r
        .stream(&presence(&r.fake.users()), 5, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_socket_answering_pings_is_kept() {
    // No heartbeats at all: the source pings after 150 ms of silence and the pongs keep it.
    let settings = Settings {
        heartbeat: None,
        ..Settings::default()
    };
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.ping_after_silence = Duration::from_millis(150);
    // Generous, so a loaded machine's late wake-up is not a dead socket: a client that ignored
    // pongs still fails, as it would never reach 4 pings on one connection.
    cfg.pong_timeout = Duration::from_secs(3);
    let mut r = start(settings, cfg).await;
    r.wait_connected().await;
    assert!(r.fake.wait_for(WAIT, |f| f.pings() >= 4).await);
    assert_eq!(r.handle.stats().connections, 1, "{:?}", r.handle.stats());
    assert!(r.handle.gaps().is_empty());
    let (_, sink) = r.stop().await;
    assert!(
        sink.got.lock().unwrap().is_empty(),
        "pongs never reach the sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_gets_a_new_token_and_a_new_channel() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    let (created, tokens) = (r.fake.channels_created(), r.fake.token_requests());
    r.fake.revoke_tokens_and_notify();
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.channels_created() == created + 1)
            .await
    );
    r.wait_connected().await;
    assert_eq!(
        r.fake.token_requests(),
        tokens + 1,
        "one refresh after the 401"
    );
    assert!(
        r.handle.gaps()[0].reason.contains("token_revoked"),
        "{:?}",
        r.handle.gaps()
    );
    let ids = r
        .stream(&presence(&r.fake.users()), 5, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_through_a_429_storm() {
    let fake = Fake::start(Settings {
        users: 1200,
        ..Settings::default()
    })
    .await;
    fake.throttle_next(15);
    let mut cfg = fake.client_config();
    cfg.max_retries = 20;
    let client = Client::new(cfg).unwrap();
    let sink = Arc::new(Sink::default());
    let cancel = CancellationToken::new();
    let mut handle = NotificationSource::spawn(
        client,
        config(&["v2.users.{user}.presence"]),
        sink,
        cancel.clone(),
    );
    let ok = handle
        .wait_for(WAIT, |h| {
            h.shard_count() == 2 && h.channels().iter().filter(|c| c.connected).count() == 2
        })
        .await;
    assert!(ok, "{:?} {:?}", handle.channels(), handle.failure());
    assert_eq!(fake.throttled(), 15);
    cancel.cancel();
    handle.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_topics_are_reported_and_the_rest_flow() {
    let fake_settings = Settings {
        queues: 2,
        ..Settings::default()
    };
    let fake = Fake::start(fake_settings).await;
    let queues = fake.queues();
    let bad = format!("v2.analytics.queues.{}.observations", queues[0]);
    fake.reject_topic(&bad);
    let client = Client::new(fake.client_config()).unwrap();
    let sink = Arc::new(Sink::default());
    let cancel = CancellationToken::new();
    let cfg = config(&[
        "v2.analytics.queues.{id}.observations",
        "v2.routing.queues.{queue}.conversations.calls",
    ]);
    let mut handle = NotificationSource::spawn(client, cfg, sink.clone(), cancel.clone());
    assert!(
        handle
            .wait_for(WAIT, |h| h.channels().iter().any(|c| c.connected))
            .await
    );
    let rejected = handle.rejected_topics();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].topic, bad);
    assert_eq!(
        rejected[0].missing_permissions,
        vec!["analytics:queueObservation:view".to_string()]
    );
    let ch = &handle.channels()[0];
    assert_eq!((ch.topics, ch.permitted, ch.rejected), (4, 3, 1));
    let call = include_str!("data/queue-conversation-call.json");
    let body: Value = serde_json::from_str::<Value>(call).unwrap()["eventBody"].clone();
    let (id, n) = fake.publish(
        &format!("v2.routing.queues.{}.conversations.calls", queues[1]),
        body,
    );
    assert_eq!(n, 1);
    assert!(sink.wait_all(&HashSet::from([id]), WAIT).await);
    assert_eq!(
        fake.publish(&bad, json!({})).1,
        0,
        "a rejected topic is not subscribed"
    );
    cancel.cancel();
    handle.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_sink_errors_are_retried_permanent_ones_counted_lost() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    r.sink.fail_transient.store(3, Ordering::SeqCst);
    let topics = presence(&r.fake.users());
    let ids = r.stream(&topics[..1], 1, Duration::from_millis(1)).await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    assert_eq!(r.handle.stats().sink_retries, 3);
    r.sink.fail_permanent.store(1, Ordering::SeqCst);
    r.stream(&topics[..1], 1, Duration::from_millis(1)).await;
    assert!(
        // The loss is recorded after it is counted: wait for the record.
        r.handle
            .wait_for(WAIT, |h| h.losses().len() == 1 && h.stats().lost == 1)
            .await,
        "{:?}",
        r.handle.stats()
    );
    let stats = counted(&r.handle, |s| s.delivered == 1).await;
    assert_eq!((stats.delivered, stats.lost), (1, 1));
    let losses = r.handle.losses();
    assert_eq!(losses.len(), 1);
    assert_eq!(
        (losses[0].topic.as_str(), losses[0].error.as_str()),
        (topics[0].as_str(), "invalid")
    );
    assert_eq!(losses[0].correlation_id.len(), 36);
    r.stop().await;
}

/// A sink that holds every `accept` until the test opens the gate.
struct GatedSink {
    gate: tokio::sync::Semaphore,
    waiting: AtomicU32,
    inner: Sink,
}

impl EventSink for GatedSink {
    fn accept(&self, message: Value) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            self.inner.changed.notify_waiters();
            let permit = self.gate.acquire().await.unwrap();
            permit.forget();
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.inner.accept(message).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_applies_backpressure_and_loses_nothing() {
    let fake = Fake::start(Settings::default()).await;
    let client = Client::new(fake.client_config()).unwrap();
    let sink = Arc::new(GatedSink {
        gate: tokio::sync::Semaphore::new(0),
        waiting: AtomicU32::new(0),
        inner: Sink::default(),
    });
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.buffer = 8;
    cfg.sink_concurrency = 2;
    let cancel = CancellationToken::new();
    let mut handle = NotificationSource::spawn(client, cfg, sink.clone(), cancel.clone());
    assert!(
        handle
            .wait_for(WAIT, |h| h.channels().iter().any(|c| c.connected))
            .await
    );
    let topics = presence(&fake.users());
    let mut ids = HashSet::new();
    for i in 0..500 {
        let (id, n) = fake.publish(&topics[i % topics.len()], json!({"seq": i}));
        assert_eq!(n, 1);
        ids.insert(id);
    }
    // Exactly `sink_concurrency` calls are in flight and nothing is accepted or dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Created before the check, so a wake-up in between is not missed.
        let notified = sink.inner.changed.notified();
        if sink.waiting.load(Ordering::SeqCst) >= 2 {
            break;
        }
        assert!(tokio::time::timeout_at(deadline, notified).await.is_ok());
    }
    assert_eq!(sink.waiting.load(Ordering::SeqCst), 2);
    assert_eq!(handle.stats().delivered, 0);
    // Open the gate: everything arrives, in full.
    sink.gate.add_permits(10_000);
    assert!(sink.inner.wait_all(&ids, WAIT).await);
    // CI once read 499 here: the sink had the 500th event, its count was a moment behind.
    let stats = counted(&handle, |s| s.delivered >= 500).await;
    assert_eq!((stats.delivered, stats.lost), (500, 0));
    assert!(handle.gaps().is_empty());
    cancel.cancel();
    handle.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_topics_is_a_clear_error() {
    let fake = Fake::start(Settings {
        users: 2000,
        ..Settings::default()
    })
    .await;
    let client = Client::new(fake.client_config()).unwrap();
    let mut cfg = config(&["v2.users.{user}.presence"]);
    cfg.max_topics_per_channel = 100;
    let topics = expand_topics(&client, &cfg.topics, 100).await.unwrap();
    assert_eq!(topics.len(), 2000);
    let err = shard_topics(&topics, &cfg).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyTopics {
                topics: 2000,
                needed: 20,
                max_channels: 19,
                ..
            }
        ),
        "{err}"
    );
    // The running source reports the same error and stops.
    let handle = NotificationSource::spawn(
        client,
        cfg,
        Arc::new(Sink::default()),
        CancellationToken::new(),
    );
    let err = tokio::time::timeout(WAIT, handle.join())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("EventBridge"), "{err}");
    assert_eq!(fake.channels_created(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_view_matches_what_genesys_lists() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    let ours = r.handle.channels();
    assert_eq!(ours.len(), 1);
    let ch = &ours[0];
    assert!(ch.connected && ch.topics == 10 && ch.permitted == 10 && ch.rejected == 0);
    assert!(ch.expires.unwrap() > time::OffsetDateTime::now_utc() + time::Duration::hours(23));
    let client = Client::new(r.fake.client_config()).unwrap();
    let listed = list_channels(&client).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ch.channel_id);
    assert_eq!(
        listed[0].connect_uri.as_deref(),
        Some(ch.connect_uri.as_str())
    );
    let json = serde_json::to_value(&ours).unwrap();
    assert_eq!(json[0]["topics"], 10);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_by_the_20_channel_rule_prefers_idle_channels() {
    let mut r = start(Settings::default(), config(&["v2.users.{user}.presence"])).await;
    r.wait_connected().await;
    // Someone else on the same OAuth client creates 20 idle channels: the 21st creation
    // evicts an idle one, never our connected one.
    let client = Client::new(r.fake.client_config()).unwrap();
    for _ in 0..20 {
        client
            .request(
                reqwest::Method::POST,
                "/api/v2/notifications/channels",
                &[],
                None,
            )
            .await
            .unwrap();
    }
    assert_eq!(r.fake.evicted(), 1);
    assert_eq!(r.fake.connected_channels().len(), 1);
    let ids = r
        .stream(&presence(&r.fake.users()), 3, Duration::from_millis(1))
        .await;
    assert!(r.sink.wait_all(&ids, WAIT).await);
    assert!(r.handle.gaps().is_empty());
    r.stop().await;
}
