//! Delivery: one worker task per target drains that target's durable queue.
//!
//! Architecture Invariant: a target's worker only ever touches its own queue, so a target that
//! is slow or failing delays nothing but itself. A delivery leaves the queue only after the target
//! took it (file: written and fsync'd; http: 2xx), or when the policy moves it to the dead-letter
//! queue; so delivery is at-least-once, and every payload carries the envelope id as an
//! idempotency key for consumers to deduplicate.

pub mod http;
pub mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_store::{DeadLetterInfo, Delivery, QueuePoll, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "aws")]
use crate::aws_rt::AwsRuntime;
use crate::claim_check::{BlobStore, ClaimChecker};
use crate::config::{TargetConfig, TargetKind};
use crate::routing::Router;
use crate::telemetry;
use policy::{Attempt, Decision};

/// The longest a worker sleeps without looking at its queue; a safety net, since wake-ups come
/// from ingest and redrive notifications and from the next scheduled retry.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How a target takes deliveries.
#[derive(Debug)]
pub enum Sender {
    /// POST to a URL.
    Http(http::HttpSender),
    /// Append lines to a file.
    File(FileSink),
    /// Print lines.
    Stdout,
    /// EventBridge `PutEvents`.
    #[cfg(feature = "aws")]
    EventBridge(switchboard_aws::eventbridge::EventBridgeSender),
    /// SQS `SendMessageBatch`.
    #[cfg(feature = "aws")]
    Sqs(switchboard_aws::sqs::SqsSender),
    /// S3 objects.
    #[cfg(feature = "aws")]
    S3(switchboard_aws::s3::S3Sender),
}

/// An append-only JSONL file.
#[derive(Debug)]
pub struct FileSink {
    path: Arc<PathBuf>,
    /// Only the target's one worker writes, so the lock is never contended; it exists because
    /// the state moves into the blocking task that writes.
    state: Arc<std::sync::Mutex<FileState>>,
}

/// The open file and the buffer a batch is assembled in.
#[derive(Debug, Default)]
struct FileState {
    file: Option<std::fs::File>,
    /// Kept between batches: a fresh buffer of a large batch is fresh memory, and the kernel's
    /// copy out of it then takes a page fault per page (measured: `write` 4 × slower per event
    /// at 1,000-event batches; BENCHMARKS.md).
    buf: Vec<u8>,
}

/// A buffer larger than this after a batch is not kept (one outsized event must not pin its
/// size for the life of the process).
const FILE_BUF_KEEP: usize = 4 << 20;

impl FileSink {
    fn new(path: PathBuf) -> FileSink {
        FileSink {
            path: Arc::new(path),
            state: Arc::default(),
        }
    }

    async fn write_batch(&self, items: &[Delivery]) -> Attempt {
        // The kept buffer is taken, not shared: were two batches ever written at once, each
        // would fill its own (the second a new one) and neither could write the other's lines.
        let mut buf = std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).buf);
        buf.clear();
        buf.reserve(items.iter().map(|d| d.payload.len() + 1).sum());
        for d in items {
            buf.extend_from_slice(d.payload.as_bytes());
            buf.push(b'\n');
        }
        let (path, state) = (self.path.clone(), self.state.clone());
        // Open, write and sync in one blocking task: with `tokio::fs` each of them is its own
        // trip to the blocking pool, and those trips cost more than the write itself.
        let res = tokio::task::spawn_blocking(move || append_synced(&path, &state, buf)).await;
        match res {
            Ok(Ok(())) => Attempt::Delivered,
            Ok(Err(e)) => io_failure(&self.path, &e),
            Err(e) => io_failure(&self.path, &std::io::Error::other(e.to_string())),
        }
    }
}

/// Appends the assembled batch and syncs it, then keeps `buf` for the next batch. The
/// deliveries are completed only after `sync_data` returns, so a crash can repeat lines
/// (at-least-once) but never lose one.
fn append_synced(
    path: &std::path::Path,
    state: &std::sync::Mutex<FileState>,
    buf: Vec<u8>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let st = &mut *guard;
    if st.file.is_none() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        st.file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        );
    }
    let Some(f) = st.file.as_mut() else {
        return Err(std::io::Error::other("file not open"));
    };
    let res = f.write_all(&buf).and_then(|()| f.sync_data());
    if res.is_ok() {
        drop_cached(f);
    }
    if res.is_err() {
        // Reopen next time: the handle may be in a bad state.
        st.file = None;
    }
    if buf.capacity() <= FILE_BUF_KEEP && buf.capacity() > st.buf.capacity() {
        st.buf = buf;
    }
    res
}

/// Tells the kernel the synced lines need not stay in the page cache.
///
/// The gateway never reads the file back, and a reader that tails it reads each line once. Left
/// cached, the file takes a fresh page for every 4 KiB written until memory pressure evicts
/// something (perhaps something more useful); dropped, the next batch reuses the pages just
/// freed. On the benchmark's VM the fresh pages were the difference: the copy into the page
/// cache took 11 % of the server's CPU with them, 0.5 % without (BENCHMARKS.md). Advice only:
/// an error changes nothing that matters.
#[cfg(target_os = "linux")]
fn drop_cached(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` keeps the descriptor open for the call, which reads no memory of ours.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_: &std::fs::File) {}

fn io_failure(path: &std::path::Path, e: &std::io::Error) -> Attempt {
    Attempt::Retryable {
        code: "IO_ERROR".into(),
        message: format!("{}: {e}", path.display()),
        retry_after: None,
    }
}

/// A target and the handle that wakes its worker.
#[derive(Debug)]
pub struct TargetRuntime {
    /// Target name.
    pub name: String,
    /// Kind (`http`, `file`, `stdout`) for listings.
    pub kind: &'static str,
    /// Where it sends.
    pub sender: Sender,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries fetched per round.
    pub batch_size: usize,
    /// Woken when new deliveries are enqueued.
    pub notify: Notify,
    /// How long to wait for a partial batch to fill.
    pub linger: Duration,
    /// Large events are stored aside and replaced by a pointer.
    pub claim_check: Option<ClaimChecker>,
    /// For SQS dead-letter queues.
    #[cfg(feature = "aws")]
    pub aws: Option<Arc<AwsRuntime>>,
    /// Per-delivery metric handles.
    pub metrics: telemetry::TargetMetrics,
}

#[cfg(feature = "aws")]
fn from_outcome(o: switchboard_aws::Outcome) -> Attempt {
    match o {
        switchboard_aws::Outcome::Delivered => Attempt::Delivered,
        switchboard_aws::Outcome::Retryable { code, message } => Attempt::Retryable {
            code,
            message,
            retry_after: None,
        },
        switchboard_aws::Outcome::Fatal { code, message } => Attempt::Fatal { code, message },
    }
}

impl TargetRuntime {
    /// Builds a target from its configuration; relative file paths are under `data_dir`.
    /// AWS targets need `aws` (and resolve queue ARNs to URLs here, once).
    pub async fn build(
        cfg: &TargetConfig,
        data_dir: &std::path::Path,
        #[cfg(feature = "aws")] aws: Option<Arc<AwsRuntime>>,
    ) -> Result<Self, String> {
        #[cfg(feature = "aws")]
        let aws_clients = aws.as_ref().map(|a| &a.clients);
        let (sender, kind, default_linger, limit) = match &cfg.kind {
            #[cfg(feature = "aws")]
            TargetKind::Eventbridge(e) => {
                let a = aws.as_ref().ok_or("no AWS clients")?;
                let settings = switchboard_aws::eventbridge::EventBridgeSettings {
                    bus: e.arn.clone(),
                    max_request_bytes: e.max_request_bytes,
                    concurrency: cfg.concurrency,
                    source: e.source.clone(),
                    detail_type: e.detail_type.clone(),
                };
                (
                    Sender::EventBridge(switchboard_aws::eventbridge::EventBridgeSender::new(
                        a.clients.eventbridge.clone(),
                        settings,
                    )),
                    "eventbridge",
                    Duration::from_millis(20),
                    Some(e.max_request_bytes),
                )
            }
            #[cfg(feature = "aws")]
            TargetKind::Sqs(q) => {
                let a = aws.as_ref().ok_or("no AWS clients")?;
                let queue_url = a.queue_url(&q.queue).await?;
                let message_group = q
                    .message_group_template
                    .as_deref()
                    .map(switchboard_event::template::Template::parse)
                    .transpose()?;
                let settings = switchboard_aws::sqs::SqsSettings {
                    queue_url,
                    message_group,
                    max_bytes: q.max_message_bytes,
                    concurrency: cfg.concurrency,
                };
                (
                    Sender::Sqs(switchboard_aws::sqs::SqsSender::new(
                        a.clients.sqs.clone(),
                        settings,
                    )),
                    "sqs",
                    Duration::from_millis(20),
                    Some(q.max_message_bytes),
                )
            }
            #[cfg(feature = "aws")]
            TargetKind::S3(b) => {
                let a = aws.as_ref().ok_or("no AWS clients")?;
                let t = switchboard_event::template::Template::parse(&b.key_template)?;
                let (layout, linger) = if b.layout == "ndjson" {
                    (
                        switchboard_aws::s3::S3Layout::Ndjson(t),
                        Duration::from_secs(b.window_secs),
                    )
                } else {
                    (switchboard_aws::s3::S3Layout::Object(t), Duration::ZERO)
                };
                let settings = switchboard_aws::s3::S3Settings {
                    bucket: b.bucket.clone(),
                    layout,
                    concurrency: cfg.concurrency,
                };
                (
                    Sender::S3(switchboard_aws::s3::S3Sender::new(
                        a.clients.s3.clone(),
                        settings,
                    )),
                    "s3",
                    linger,
                    None,
                )
            }
            #[cfg(not(feature = "aws"))]
            TargetKind::Eventbridge(_) | TargetKind::Sqs(_) | TargetKind::S3(_) => {
                return Err("this binary was built without the aws feature".into());
            }
            other => {
                let (sender, kind) = Self::local_sender(other, data_dir)?;
                // A file target syncs each batch it writes. The journal already holds its
                // deliveries durably, so waiting 10 ms for company costs nothing but that
                // latency and saves most of those fsyncs under load (BENCHMARKS.md).
                let linger = if kind == "file" {
                    Duration::from_millis(10)
                } else {
                    Duration::ZERO
                };
                (sender, kind, linger, None)
            }
        };
        let claim_check = match &cfg.claim_check {
            None => None,
            Some(cc) => {
                let store = BlobStore::from_setting(
                    &cc.store,
                    data_dir,
                    #[cfg(feature = "aws")]
                    aws_clients,
                )?;
                let max_bytes = cc
                    .max_bytes
                    .or(limit)
                    .ok_or("claim_check.max_bytes is required for targets without a size limit")?;
                Some(ClaimChecker {
                    max_bytes,
                    store,
                    summary_fields: cc.summary_fields.clone(),
                })
            }
        };
        Ok(TargetRuntime {
            name: cfg.name.clone(),
            kind,
            sender,
            concurrency: cfg.concurrency,
            batch_size: cfg.batch_size(),
            notify: Notify::new(),
            linger: cfg
                .linger_ms
                .map(Duration::from_millis)
                .unwrap_or(default_linger),
            claim_check,
            #[cfg(feature = "aws")]
            aws,
            metrics: telemetry::TargetMetrics::new(&cfg.name),
        })
    }

    fn local_sender(
        kind: &TargetKind,
        data_dir: &std::path::Path,
    ) -> Result<(Sender, &'static str), String> {
        Ok(match kind {
            TargetKind::Http(h) => (Sender::Http(http::HttpSender::new(h)?), "http"),
            TargetKind::File { path } => (Sender::File(FileSink::new(data_dir.join(path))), "file"),
            TargetKind::Stdout => (Sender::Stdout, "stdout"),
            _ => return Err("not a local target kind".into()),
        })
    }

    /// The size a claim-check compares with `limit`: the PutEvents entry size for EventBridge,
    /// the payload bytes otherwise.
    fn measure(&self, payload: &str, limit: usize) -> usize {
        #[cfg(feature = "aws")]
        if let Sender::EventBridge(eb) = &self.sender {
            // An entry is never larger than its payload plus the target's default source and
            // detail-type and the 14 bytes of `Time` (its other fields are substrings of the
            // payload, escaped there), so most events need no parse here; `send` parses anyway.
            let s = eb.settings();
            let bound = payload.len()
                + s.source.len()
                + s.detail_type.len()
                + switchboard_event::PUT_EVENTS_TIME_BYTES;
            if bound <= limit {
                return bound;
            }
            if let Ok(e) = switchboard_aws::eventbridge::prepare(payload, s) {
                return e.size;
            }
        }
        let _ = limit;
        payload.len()
    }

    /// Claim-checks what is too large, then sends; one attempt per item, in order.
    async fn attempt_batch(&self, items: &[Delivery]) -> Vec<Attempt> {
        let Some(cc) = &self.claim_check else {
            return self.send_batch(items).await;
        };
        let mut pre: Vec<Option<Attempt>> = vec![None; items.len()];
        let mut replaced: Vec<Option<String>> = vec![None; items.len()];
        for (i, d) in items.iter().enumerate() {
            match cc
                .check(&d.payload, self.measure(&d.payload, cc.max_bytes))
                .await
            {
                Ok(r) => replaced[i] = r,
                Err(e) => {
                    pre[i] = Some(Attempt::Retryable {
                        code: "CLAIM_CHECK_FAILED".into(),
                        message: e,
                        retry_after: None,
                    })
                }
            }
        }
        if pre.iter().all(Option::is_none) && replaced.iter().all(Option::is_none) {
            return self.send_batch(items).await;
        }
        let mut send: Vec<Delivery> = Vec::new();
        for (i, d) in items.iter().enumerate() {
            if pre[i].is_none() {
                let mut d = d.clone();
                if let Some(p) = replaced[i].take() {
                    d.payload = p;
                }
                send.push(d);
            }
        }
        let mut sent = self.send_batch(&send).await.into_iter();
        pre.into_iter()
            .map(|p| match p {
                Some(a) => a,
                None => sent.next().unwrap_or(Attempt::Retryable {
                    code: "INTERNAL".into(),
                    message: "no attempt result".into(),
                    retry_after: None,
                }),
            })
            .collect()
    }

    async fn send_batch(&self, items: &[Delivery]) -> Vec<Attempt> {
        if items.is_empty() {
            return Vec::new();
        }
        match &self.sender {
            #[cfg(feature = "aws")]
            Sender::EventBridge(eb) => {
                use std::sync::atomic::Ordering::Relaxed;
                let payloads: Vec<&str> = items.iter().map(|d| d.payload.as_str()).collect();
                let (calls, entries) =
                    (eb.stats.calls.load(Relaxed), eb.stats.entries.load(Relaxed));
                let out = eb.send(&payloads).await;
                telemetry::aws_batches(
                    &self.name,
                    eb.stats.calls.load(Relaxed).saturating_sub(calls),
                    eb.stats.entries.load(Relaxed).saturating_sub(entries),
                );
                out.into_iter().map(from_outcome).collect()
            }
            #[cfg(feature = "aws")]
            Sender::Sqs(q) => {
                let out = q.send(&messages(items)).await;
                out.into_iter().map(from_outcome).collect()
            }
            #[cfg(feature = "aws")]
            Sender::S3(b) => {
                let out = b.send(&messages(items)).await;
                out.into_iter().map(from_outcome).collect()
            }
            Sender::File(f) => {
                let a = f.write_batch(items).await;
                vec![a; items.len()]
            }
            Sender::Stdout => {
                let mut out = String::new();
                for d in items {
                    out.push_str(&d.payload);
                    out.push('\n');
                }
                let mut stdout = tokio::io::stdout();
                let res = async {
                    stdout.write_all(out.as_bytes()).await?;
                    stdout.flush().await
                }
                .await;
                let a = match res {
                    Ok(()) => Attempt::Delivered,
                    Err(e) => io_failure(std::path::Path::new("<stdout>"), &e),
                };
                vec![a; items.len()]
            }
            Sender::Http(h) => {
                // A sliding window of `concurrency` requests, results in input order. (Written
                // without a closure: `stream::iter(..).map(|d| h.send(d))` trips the compiler's
                // higher-ranked lifetime check once the worker future is spawned.)
                let mut in_flight = futures::stream::FuturesOrdered::new();
                let mut rest = items.iter();
                for d in rest.by_ref().take(self.concurrency.max(1)) {
                    in_flight.push_back(h.send(d));
                }
                let mut out = Vec::with_capacity(items.len());
                while let Some(a) = in_flight.next().await {
                    out.push(a);
                    if let Some(d) = rest.next() {
                        in_flight.push_back(h.send(d));
                    }
                }
                out
            }
        }
    }
}

#[cfg(feature = "aws")]
fn messages(items: &[Delivery]) -> Vec<switchboard_aws::Message<'_>> {
    items
        .iter()
        .map(|d| switchboard_aws::Message {
            body: &d.payload,
            id: &d.event_id,
        })
        .collect()
}

/// All targets by name.
pub type Targets = Arc<HashMap<String, Arc<TargetRuntime>>>;

/// Wakes the workers of these targets.
pub fn wake<'a>(targets: &Targets, names: impl IntoIterator<Item = &'a str>) {
    for n in names {
        if let Some(t) = targets.get(n) {
            t.notify.notify_one();
        }
    }
}

/// Runs one target's worker until `cancel` fires; the batch in hand is finished first.
///
/// Each look at the queue is one read that also says when the next not-yet-due delivery falls
/// due. After a batch that did not fill up, the worker goes straight to waiting: whatever was
/// ingested meanwhile left a `notify` permit, a retry it scheduled is in the batch's answer, so
/// a second read would only find the queue empty. On a quiet queue that saves two of the
/// batch's trips to the read pool, which at a few events per batch cost more than the batch.
pub async fn run_worker(
    target: Arc<TargetRuntime>,
    store: Store,
    router: Arc<Router>,
    cancel: CancellationToken,
) {
    let mut store_backoff = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let poll = match store
            .poll_queue(&target.name, now_ms(), target.batch_size)
            .await
        {
            Ok(p) => {
                store_backoff = Duration::from_millis(100);
                p
            }
            Err(e) => {
                tracing::error!(target = %target.name, error = %e, "reading the delivery queue failed");
                tokio::select! {
                    _ = tokio::time::sleep(store_backoff) => {}
                    _ = cancel.cancelled() => break,
                }
                store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // A partial batch waits `linger` once for more, so AWS calls carry full batches.
        let poll = if !poll.due.is_empty() && !poll.more_due && !target.linger.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(target.linger) => {}
                _ = cancel.cancelled() => {}
            }
            match store
                .poll_queue(&target.name, now_ms(), target.batch_size)
                .await
            {
                Ok(more) if more.due.len() >= poll.due.len() => more,
                _ => poll,
            }
        } else {
            poll
        };
        let QueuePoll {
            due,
            more_due,
            next_due_at,
        } = poll;
        let look_again_at = if due.is_empty() {
            next_due_at
        } else {
            let retry_at = process_batch(&target, &store, &router, due).await;
            if more_due {
                continue;
            }
            match (next_due_at, retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let wait = look_again_at.map_or(MAX_IDLE, |at| {
            Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(MAX_IDLE)
        });
        tokio::select! {
            _ = target.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
}

/// Sends one batch and records every outcome. Returns the earliest time a delivery of the batch
/// is due again: its retry, or now when recording an outcome failed and the row stayed due.
async fn process_batch(
    target: &TargetRuntime,
    store: &Store,
    router: &Router,
    due: Vec<Delivery>,
) -> Option<i64> {
    let now = now_ms();
    let mut again: Option<i64> = None;
    let mut due_again = |at: i64| again = Some(again.map_or(at, |a| a.min(at)));
    let mut send = Vec::with_capacity(due.len());
    for d in due {
        let policy = router.retry_policy(&d.rule, &d.target);
        if policy::expired(&policy, d.enqueued_at_ms, now) {
            let info = DeadLetterInfo {
                error_code: "EVENT_EXPIRED".into(),
                error_message: "event is older than MaximumEventAgeInSeconds".into(),
                exhausted_condition: Some("MaximumEventAgeInSeconds".into()),
                retry_attempts: d.attempts.saturating_sub(1),
            };
            if !dead_letter(store, router, target, &d, info).await {
                due_again(now);
            }
        } else {
            send.push(d);
        }
    }
    if send.is_empty() {
        return again;
    }
    let started = Instant::now();
    let attempts = target.attempt_batch(&send).await;
    let elapsed = started.elapsed();
    let now = now_ms();
    // Decide everything first: the thread-local RNG must not be held across an await.
    // Outcomes are counted per batch: a file target's batch is a thousand deliveries.
    let mut outcomes = telemetry::Outcomes::default();
    let decisions: Vec<Decision> = {
        let mut rng = rand::rng();
        send.iter()
            .zip(attempts)
            .map(|(d, attempt)| {
                match &attempt {
                    Attempt::Delivered => outcomes.delivered += 1,
                    Attempt::Retryable { .. } => outcomes.retryable += 1,
                    Attempt::Fatal { .. } => outcomes.fatal += 1,
                }
                let policy = router.retry_policy(&d.rule, &d.target);
                policy::decide(
                    &policy,
                    attempt,
                    d.attempts,
                    d.enqueued_at_ms,
                    now,
                    &mut rng,
                )
            })
            .collect()
    };
    target.metrics.attempts(&outcomes, elapsed);
    let mut done = Vec::new();
    for (d, decision) in send.iter().zip(decisions) {
        match decision {
            Decision::Complete => {
                target.metrics.latency(now - d.enqueued_at_ms);
                done.push(d.id);
            }
            Decision::Retry { at_ms, error } => {
                tracing::debug!(target = %target.name, event = %d.event_id, %error, "delivery failed, will retry");
                match store.reschedule(d, d.attempts + 1, at_ms, error).await {
                    Ok(()) => due_again(at_ms),
                    Err(e) => {
                        tracing::error!(target = %target.name, error = %e, "rescheduling failed; the delivery stays due");
                        due_again(now);
                    }
                }
            }
            Decision::DeadLetter {
                code,
                message,
                exhausted,
                retry_attempts,
            } => {
                let info = DeadLetterInfo {
                    error_code: code,
                    error_message: message,
                    exhausted_condition: exhausted.map(String::from),
                    retry_attempts,
                };
                if !dead_letter(store, router, target, d, info).await {
                    due_again(now);
                }
            }
        }
    }
    if !done.is_empty()
        && let Err(e) = store.complete(&target.name, done).await
    {
        // Left in the queue, the deliveries will be sent again: a duplicate, never a loss.
        tracing::error!(target = %target.name, error = %e, "completing deliveries failed");
        due_again(now);
    }
    again
}

/// Moves a delivery to a dead-letter queue. False when that failed and the row stayed due.
async fn dead_letter(
    store: &Store,
    router: &Router,
    target: &TargetRuntime,
    d: &Delivery,
    info: DeadLetterInfo,
) -> bool {
    #[cfg(feature = "aws")]
    let info = match (router.dead_letter_queue(&d.rule, &d.target), &target.aws) {
        (Some(queue), Some(aws)) => {
            match send_sqs_dead_letter(aws, router, queue, d, &info).await {
                Ok(()) => {
                    tracing::warn!(
                        target = %target.name, rule = %d.rule, event = %d.event_id,
                        code = %info.error_code, queue = %queue,
                        "delivery sent to the SQS dead-letter queue"
                    );
                    telemetry::dead_lettered(&target.name);
                    if let Err(e) = store.complete(&target.name, vec![d.id]).await {
                        tracing::error!(target = %target.name, error = %e, "completing a dead-lettered delivery failed; it may be dead-lettered twice");
                        return false;
                    }
                    return true;
                }
                // The SQS DLQ is unreachable: keep the letter in the embedded DLQ rather than
                // lose it, and say why in its message.
                Err(e) => DeadLetterInfo {
                    error_message: format!(
                        "{} (the SQS dead-letter queue failed: {e})",
                        info.error_message
                    ),
                    ..info
                },
            }
        }
        _ => info,
    };
    #[cfg(not(feature = "aws"))]
    let _ = router;
    tracing::warn!(
        target = %target.name, rule = %d.rule, event = %d.event_id,
        code = %info.error_code, exhausted = ?info.exhausted_condition,
        "delivery moved to the dead-letter queue"
    );
    telemetry::dead_lettered(&target.name);
    if let Err(e) = store.dead_letter(d, info).await {
        tracing::error!(target = %target.name, error = %e, "dead-lettering failed; the delivery stays due");
        return false;
    }
    true
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(feature = "aws")]
async fn send_sqs_dead_letter(
    aws: &AwsRuntime,
    router: &Router,
    queue: &str,
    d: &Delivery,
    info: &DeadLetterInfo,
) -> Result<(), String> {
    let url = aws.queue_url(queue).await?;
    let rule_arn = router.rule_arn(&d.rule);
    let attrs = switchboard_aws::sqs::DeadLetterAttributes {
        rule_arn: &rule_arn,
        target_arn: &d.target,
        error_code: &info.error_code,
        error_message: &info.error_message,
        exhausted_retry_condition: info.exhausted_condition.as_deref(),
        retry_attempts: info.retry_attempts,
    };
    switchboard_aws::sqs::send_dead_letter(&aws.clients.sqs, &url, &d.payload, &attrs)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of the file still in the page cache (`mincore` over a mapping of it).
    #[cfg(target_os = "linux")]
    fn resident_pages(path: &std::path::Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        let len = usize::try_from(f.metadata().unwrap().len()).unwrap();
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mapping
        // does not read the pages, and `vec` has one byte per page of `len`.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[cfg(target_os = "linux")]
    fn on_tmpfs(dir: &std::path::Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs for the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        st.f_type == libc::TMPFS_MAGIC
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_synced_batch_leaves_the_page_cache_and_the_file_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        if on_tmpfs(dir.path()) {
            // tmpfs pages are the file: there is no cache to leave.
            eprintln!("skipped: the temporary directory is on tmpfs");
            return;
        }
        let path = dir.path().join("out").join("events.jsonl");
        let state = std::sync::Mutex::new(FileState::default());
        let line = format!("{{\"x\":\"{}\"}}\n", "a".repeat(1000));
        for _ in 0..2 {
            append_synced(&path, &state, line.repeat(100).into_bytes()).unwrap();
        }
        assert!(
            state.lock().unwrap().buf.capacity() >= line.len() * 100,
            "the buffer is kept for the next batch"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert!(text.lines().all(|l| l.len() == line.len() - 1));
        // Reading it back cached it; the next batch drops the whole file again.
        assert!(resident_pages(&path) > 0, "the read above must cache pages");
        append_synced(&path, &state, line.clone().into_bytes()).unwrap();
        assert_eq!(resident_pages(&path), 0);
    }
}
