//! The async handle: [`Store`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError as StdTrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::MAX_COMMIT_LINGER_US;
use crate::consumer::{Consumer, JournalShared, Polled, SavedCursor, Tail};
use crate::dedup_index::{DedupIndex, Entry, FlushPolicy, IndexStats, hash_identity};
use crate::error::StoreError;
use crate::ingest_writer::{IngestCmd, IngestWriter};
use crate::journal::{self, EventRecord, JournalReader, SegmentInfo};
use crate::reader::{self, Depth, Readers};
use crate::schema;
use crate::types::{
    AuditRecord, CheckpointMode, DeadLetter, DeadLetterInfo, Delivery, DeliveryId, DlqFilter,
    ExpireStats, IngestOutcome, NewDelivery, NewEvent, Page, QueuePoll, RedriveReport,
    RedriveSelector, StoreOptions, StoreTuning, StoredEvent,
};
use crate::writer::{self, Cmd, Op, Output, Shared, Spill};

/// Subdirectory of the journal segments.
pub(crate) const JOURNAL_DIR: &str = "journal";
/// Subdirectory of the dedup index runs.
pub(crate) const DEDUP_DIR: &str = "dedup";
/// How often target cursors are saved (a crash repeats at most about this much delivery work).
const CURSOR_SAVE_EVERY: Duration = Duration::from_millis(200);
/// Largest `due` batch.
const MAX_DUE: usize = crate::reader::MAX_DUE;

/// Handle to the embedded store. Cheap to clone; all clones share the writer threads.
///
/// Dropping every clone without [`close`](Store::close) is safe (everything acknowledged is
/// already durable); `close` additionally flushes the dedup memtable, saves target cursors,
/// checkpoints SQLite and joins the threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    ingest_tx: SyncSender<IngestCmd>,
    /// `switchboard_store_ingest_wait_seconds`: from handing an ingest to the writer until the
    /// waiting task has the answer. It shows next to `switchboard_store_commit_seconds`, which
    /// times a commit only once it starts, what comes before and after: the queue behind the
    /// commit in flight, the writer's turn on the CPU, and the task's next turn on the runtime
    /// once answered. Registered once: a lookup per event would cost the hot path a hash and a
    /// lock.
    ingest_wait: metrics::Histogram,
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    readers: Arc<Readers>,
    queues: Arc<Queues>,
    index: IndexStats,
    /// The ingest writer, the SQLite writer (which owns and stops the checkpointer) and the
    /// cursor saver; joined by the first `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    cursor_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    dir: PathBuf,
}

/// Whether a target's `deliveries` rows need a read: a poll skips the SQLite read when it
/// knows nothing there is due, which is the normal state of a healthy target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Empty,
    /// Nothing is due before this time (rows may have been removed since: then a read finds
    /// less, never more).
    DueAt(i64),
    Unknown,
}

impl Hint {
    fn add(self, at: i64) -> Hint {
        match self {
            Hint::Empty => Hint::DueAt(at),
            Hint::DueAt(t) => Hint::DueAt(t.min(at)),
            Hint::Unknown => Hint::Unknown,
        }
    }
}

/// Per-target queue state shared by the handle and the cursor saver.
struct Queues {
    journal: Arc<JournalShared>,
    consumers: Mutex<HashMap<String, Arc<Mutex<Consumer>>>>,
    /// Cursors as last saved in SQLite.
    saved: Mutex<HashMap<String, SavedCursor>>,
    /// Targets the gateway runs; `None` until [`Store::register_targets`].
    registered: Mutex<Option<BTreeSet<String>>>,
    hints: Mutex<HashMap<String, Hint>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // None of these maps holds an invariant a panicking holder could break half-way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queues {
    fn consumer(&self, target: &str) -> Arc<Mutex<Consumer>> {
        let mut map = lock(&self.consumers);
        if let Some(c) = map.get(target) {
            return c.clone();
        }
        // No saved cursor: start at the oldest record on disk (nothing owed is skipped).
        let start = lock(&self.saved)
            .get(target)
            .cloned()
            .unwrap_or_else(|| SavedCursor::at(self.journal.segments.start_seq()));
        let c = Arc::new(Mutex::new(Consumer::new(target.to_owned(), start)));
        map.insert(target.to_owned(), c.clone());
        c
    }

    fn hint(&self, target: &str) -> Hint {
        lock(&self.hints)
            .get(target)
            .copied()
            .unwrap_or(Hint::Unknown)
    }

    fn set_hint(&self, target: &str, h: Hint) {
        lock(&self.hints).insert(target.to_owned(), h);
    }

    fn add_due(&self, target: &str, at: i64) {
        let mut hints = lock(&self.hints);
        let h = hints.get(target).copied().unwrap_or(Hint::Unknown).add(at);
        hints.insert(target.to_owned(), h);
    }

    /// Cursors that moved since the last save. A target that has deliveries in the journal
    /// but no consumer yet (nothing polled it since open) is saved at the oldest record on
    /// disk, so a restart counts its backlog from there.
    fn cursors_to_save(&self) -> Vec<(String, SavedCursor)> {
        let consumers: Vec<(String, Arc<Mutex<Consumer>>)> = lock(&self.consumers)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let idle: Vec<String> = {
            let pending = self.journal.pending();
            pending
                .keys()
                .filter(|t| !consumers.iter().any(|(c, _)| c == *t))
                .cloned()
                .collect()
        };
        let start = self.journal.segments.start_seq();
        let saved = lock(&self.saved);
        let mut out: Vec<(String, SavedCursor)> = consumers
            .into_iter()
            .filter_map(|(t, c)| {
                let cur = lock(&c).saved();
                (saved.get(&t) != Some(&cur)).then_some((t, cur))
            })
            .collect();
        out.extend(
            idle.into_iter()
                .filter(|t| !saved.contains_key(t))
                .map(|t| (t, SavedCursor::at(start))),
        );
        out
    }

    fn mark_saved(&self, cursors: &[(String, SavedCursor)]) {
        let mut saved = lock(&self.saved);
        for (t, c) in cursors {
            saved.insert(t.clone(), c.clone());
        }
    }

    fn settle(&self, target: &str, seq: u64, index: u32) {
        let c = self.consumer(target);
        if lock(&c).settle(seq, index) {
            let mut pending = self.journal.pending();
            if let Some(n) = pending.get_mut(target) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The lowest journal seq some target may still need: retention keeps it. Only saved
    /// cursors count (the caller makes them durable first): after a power cut a target resumes
    /// from its saved cursor, so the journal behind it must still be there. Before
    /// [`Store::register_targets`] every saved cursor counts; after it, only registered ones.
    fn retention_floor(&self) -> u64 {
        let registered = lock(&self.registered);
        let mut floor = u64::MAX;
        for (t, c) in lock(&self.saved).iter() {
            if registered.as_ref().is_none_or(|r| r.contains(t)) {
                floor = floor.min(c.next_seq);
            }
        }
        floor
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// Wall clock in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `create_dir_all`, then fsync the directory and its parent, so that a store created just
/// before a power cut does not vanish with its directory entry.
fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)?;
    if !existed {
        #[cfg(unix)]
        {
            std::fs::File::open(dir)?.sync_all()?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
    }
    Ok(())
}

fn unexpected(out: Output) -> StoreError {
    StoreError::Internal(format!("writer answered with the wrong output: {out:?}"))
}

fn validate(opts: &StoreOptions, tuning: &StoreTuning) -> Result<(), StoreError> {
    if opts.max_batch == 0 {
        return Err(StoreError::InvalidOptions("max_batch must be at least 1"));
    }
    if opts.queue_capacity == 0 {
        return Err(StoreError::InvalidOptions(
            "queue_capacity must be at least 1",
        ));
    }
    if tuning.commit_linger_us > MAX_COMMIT_LINGER_US {
        return Err(StoreError::InvalidOptions(
            "commit_linger_us must be at most 100000 (100 ms)",
        ));
    }
    if let CheckpointMode::Background { interval_ms: 0, .. } = tuning.checkpoint {
        return Err(StoreError::InvalidOptions(
            "checkpoint interval must be at least 1 ms",
        ));
    }
    if tuning.journal_segment_bytes < 4096 {
        return Err(StoreError::InvalidOptions(
            "journal_segment_bytes must be at least 4096",
        ));
    }
    if tuning.dedup_flush_entries == 0 || tuning.dedup_flush_secs == 0 {
        return Err(StoreError::InvalidOptions(
            "dedup_flush_entries and dedup_flush_secs must be at least 1",
        ));
    }
    Ok(())
}

/// Rebuilds what the store keeps in memory from the journal: claims newer than the dedup
/// index's runs, and the unsettled deliveries per target behind each saved cursor.
fn replay(
    segments: &Arc<journal::Segments>,
    end: u64,
    index: &mut DedupIndex,
    replay_from: u64,
    saved: &HashMap<String, SavedCursor>,
    now: i64,
) -> Result<HashMap<String, u64>, StoreError> {
    let mut pending: HashMap<String, u64> = HashMap::new();
    let from = saved
        .values()
        .map(|c| c.next_seq)
        .min()
        .unwrap_or(replay_from)
        .min(replay_from)
        .max(segments.start_seq());
    let mut r = JournalReader::new(segments.clone());
    for seq in from..end {
        let Some(rec) = r.read(seq, end)? else {
            continue;
        };
        if seq >= replay_from {
            if let Some((h, expires)) = rec.dedup
                && expires > now
            {
                index.insert(&h, Entry::new(seq, expires, &rec.id));
            }
            if let Some(expires) = rec.identity_expires_at_ms
                && expires > now
            {
                index.insert(&hash_identity(&rec.id), Entry::new(seq, expires, &rec.id));
            }
        }
        for (i, d) in rec.deliveries.iter().enumerate() {
            if saved
                .get(&d.target)
                .is_none_or(|c| !c.covers(seq, i as u32))
            {
                *pending.entry(d.target.clone()).or_default() += 1;
            }
        }
    }
    Ok(pending)
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with the default [`StoreTuning`].
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_tuned(dir, opts, StoreTuning::default())
    }

    /// Like [`open`](Store::open) with explicit tuning (benchmarks, unusual disks).
    pub fn open_tuned(
        dir: &Path,
        opts: StoreOptions,
        tuning: StoreTuning,
    ) -> Result<Store, StoreError> {
        validate(&opts, &tuning)?;
        create_dir_durably(dir)?;
        let now = now_ms();
        let path = dir.join(schema::DB_FILE);
        let mut conn = schema::open_connection(&path, &opts, &tuning)?;
        schema::configure_writer(&conn, &tuning)?;
        if schema::init(&mut conn)? < schema::SCHEMA_VERSION {
            crate::migrate::from_v1(&mut conn, dir, &tuning, now)?;
        }

        let journal_dir = dir.join(JOURNAL_DIR);
        let j = journal::open(&journal_dir, tuning.journal_segment_bytes, now)?;
        let policy = FlushPolicy {
            max_entries: tuning.dedup_flush_entries,
            max_age: Duration::from_secs(tuning.dedup_flush_secs),
        };
        let (mut index, replay_from) = DedupIndex::open(&dir.join(DEDUP_DIR), policy)?;
        let saved: HashMap<String, SavedCursor> = reader::cursors(&conn)?.into_iter().collect();
        let end = j.writer.next_seq();
        let pending = replay(&j.segments, end, &mut index, replay_from, &saved, now)?;

        let jshared = Arc::new(JournalShared {
            segments: j.segments.clone(),
            committed_end: AtomicU64::new(end),
            tail: Mutex::new(Tail::new(end, tuning.tail_bytes)),
            pending: Mutex::new(pending),
        });
        let queues = Arc::new(Queues {
            journal: jshared.clone(),
            consumers: Mutex::default(),
            saved: Mutex::new(saved),
            registered: Mutex::new(None),
            hints: Mutex::default(),
        });
        let index_stats = index.stats_handle();
        let shared = Arc::new(Shared::new(tuning.dedup_cache_entries));

        let (tx, rx) = mpsc::channel(opts.queue_capacity);
        let mut checkpointer = None;
        if let CheckpointMode::Background { interval_ms, .. } = tuning.checkpoint {
            let ckpt_conn = schema::open_connection(&path, &opts, &tuning)?;
            let (stop, stop_rx) = std::sync::mpsc::channel();
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name("sb-store-ckpt".into())
                .spawn(move || {
                    writer::run_checkpointer(
                        ckpt_conn,
                        stop_rx,
                        Duration::from_millis(interval_ms),
                        shared,
                    )
                })?;
            checkpointer = Some(writer::Checkpointer { stop, thread });
        }
        let batching = writer::Batching {
            max: opts.max_batch,
            // Rare writes: no reason to wait for company.
            linger: Duration::ZERO,
            full_sync: opts.synchronous_full,
        };
        let writer_shared = shared.clone();
        let mut threads = vec![
            std::thread::Builder::new()
                .name("sb-store-writer".into())
                .spawn(move || writer::run(conn, rx, writer_shared, batching, checkpointer))?,
        ];

        let (ingest_tx, ingest_rx) = std::sync::mpsc::sync_channel(opts.queue_capacity);
        let ingest = IngestWriter {
            reader: JournalReader::new(j.segments.clone()),
            journal: j.writer,
            index,
            shared: shared.clone(),
            jshared,
            max_batch: opts.max_batch,
            linger: Duration::from_micros(tuning.commit_linger_us),
        };
        threads.push(
            std::thread::Builder::new()
                .name("sb-store-ingest".into())
                .spawn(move || ingest.run(ingest_rx))?,
        );

        let (cursor_stop, stop_rx) = std::sync::mpsc::channel();
        {
            let queues = queues.clone();
            let tx = tx.clone();
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sb-store-cursors".into())
                    .spawn(move || run_cursor_saver(queues, tx, shared, stop_rx))?,
            );
        }
        let readers = Arc::new(Readers::new(path, opts, tuning));
        Ok(Store {
            inner: Arc::new(Inner {
                ingest_tx,
                ingest_wait: metrics::histogram!("switchboard_store_ingest_wait_seconds"),
                tx,
                shared,
                readers,
                queues,
                index: index_stats,
                threads: Mutex::new(threads),
                cursor_stop: Mutex::new(Some(cursor_stop)),
                dir: dir.to_path_buf(),
            }),
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// False once the store is fail-stop (a commit or checkpoint failed). Never recovers without
    /// a reopen: `/readyz` should report not ready and ingest should answer 503.
    pub fn is_healthy(&self) -> bool {
        self.inner.shared.is_healthy()
    }

    fn refuse_early(&self) -> Result<(), StoreError> {
        if !self.inner.shared.is_healthy() {
            return Err(self.inner.shared.failed_error());
        }
        if self.inner.shared.closing.load(Ordering::Acquire) {
            return Err(StoreError::ShuttingDown);
        }
        Ok(())
    }

    fn closed_error(&self) -> StoreError {
        if self.inner.shared.is_healthy() {
            StoreError::ShuttingDown
        } else {
            self.inner.shared.failed_error()
        }
    }

    async fn await_reply<T>(
        &self,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match rx.await {
            Ok(r) => r,
            // The writer dropped the reply without answering: it stopped (close) or panicked.
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Queues an SQLite write, waiting for queue space (internal work such as retries must not
    /// be shed; only new ingest load is).
    async fn write(&self, op: Op) -> Result<Output, StoreError> {
        self.refuse_early()?;
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Cmd { op, reply })
            .await
            .map_err(|_| self.closed_error())?;
        self.await_reply(rx).await
    }

    async fn write_unit(&self, op: Op) -> Result<(), StoreError> {
        match self.write(op).await? {
            Output::Unit | Output::Seq(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if !self.inner.shared.is_healthy() {
            return Err(self.inner.shared.failed_error());
        }
        self.inner.readers.run(f).await
    }

    /// Dedup check + journal append of the event with its deliveries, durable (fsync'd) when
    /// this returns `Ok`.
    ///
    /// Never waits for queue space: a full queue answers [`StoreError::Busy`] at once. If the
    /// future is dropped after it was queued, the event may still be stored; the sender's retry
    /// then gets `Duplicate` (with a dedup key or a claimed envelope id).
    pub async fn ingest(&self, ev: NewEvent) -> Result<IngestOutcome, StoreError> {
        self.refuse_early()?;
        if let Some(claim) = &ev.dedup
            && let Some(original_id) = self.cached_duplicate(&claim.key, ev.received_at_ms)
        {
            return Ok(IngestOutcome::Duplicate { original_id });
        }
        self.submit(ev).await
    }

    /// [`ingest`](Store::ingest) without its look at the cache of recent keys, for a caller
    /// that asked [`cached_duplicate`](Store::cached_duplicate) itself moments before (the
    /// pipeline does, to skip routing a retry). The writer still decides: a key committed since
    /// is answered `Duplicate` all the same, one trip to the writer later.
    pub async fn ingest_uncached(&self, ev: NewEvent) -> Result<IngestOutcome, StoreError> {
        self.refuse_early()?;
        self.submit(ev).await
    }

    /// Hands the event to the ingest writer and waits for its answer.
    async fn submit(&self, ev: NewEvent) -> Result<IngestOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let started = std::time::Instant::now();
        match self.inner.ingest_tx.try_send(IngestCmd::Ingest(ev, reply)) {
            Ok(()) => {}
            Err(StdTrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(StdTrySendError::Disconnected(_)) => return Err(self.closed_error()),
        }
        let answer = self.await_reply(rx).await;
        self.inner
            .ingest_wait
            .record(started.elapsed().as_secs_f64());
        answer
    }

    /// The id of the event that claimed `key`, if that claim is committed, still open at
    /// `now_ms`, and in the in-memory cache of recent keys. `None` means "ask [`ingest`]", not
    /// "new": [`ingest`] answers this without the writer anyway, so callers use it only to skip
    /// work they would do before ingesting.
    ///
    /// [`ingest`]: Store::ingest
    pub fn cached_duplicate(&self, key: &str, now_ms: i64) -> Option<String> {
        let hit = self.inner.shared.dedup_cache.lookup(key, now_ms);
        if hit.is_some() {
            metrics::counter!("switchboard_store_dedup_cache_hits_total").increment(1);
        }
        hit
    }

    /// Tells the store which targets exist. A target seen for the first time starts at the end
    /// of the journal (nothing was routed to it before). Cursors of targets not in the list no
    /// longer hold journal retention back: a removed target's undelivered first attempts
    /// expire with their segments. Call it before ingest starts.
    pub async fn register_targets(&self, targets: &[String]) -> Result<(), StoreError> {
        let q = &self.inner.queues;
        let end = q.journal.end();
        let new: Vec<(String, SavedCursor)> = {
            let saved = lock(&q.saved);
            let consumers = lock(&q.consumers);
            targets
                .iter()
                .filter(|t| !saved.contains_key(*t) && !consumers.contains_key(*t))
                .map(|t| (t.clone(), SavedCursor::at(end)))
                .collect()
        };
        if !new.is_empty() {
            self.write_unit(Op::SaveCursorsDurably(new.clone())).await?;
            q.mark_saved(&new);
        }
        *lock(&q.registered) = Some(targets.iter().cloned().collect());
        Ok(())
    }

    /// Up to `limit` (at most 10 000) deliveries of `target` due at `now_ms`: retries whose time
    /// has come (earliest due first), then first attempts in journal order. A read: a delivery
    /// is returned again by later calls until it is completed, rescheduled or dead-lettered.
    pub async fn due(
        &self,
        target: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.poll_queue(target, now_ms, limit).await?.due)
    }

    /// What is due now, and when nothing more is due, when the next retry falls due: a
    /// delivery worker's whole look at its queue. A healthy target's look touches no disk:
    /// its first attempts come from the journal's in-memory tail, and its `deliveries` rows are
    /// only read when one may be due.
    pub async fn poll_queue(
        &self,
        target: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<QueuePoll, StoreError> {
        let limit = limit.min(MAX_DUE);
        let mut out = QueuePoll {
            due: Vec::new(),
            more_due: false,
            next_due_at: None,
        };
        if limit == 0 {
            return Ok(out);
        }
        if !self.inner.shared.is_healthy() {
            return Err(self.inner.shared.failed_error());
        }
        let q = &self.inner.queues;
        let hint = q.hint(target);
        let read_table = match hint {
            Hint::Empty => false,
            Hint::DueAt(t) => t <= now_ms,
            Hint::Unknown => true,
        };
        if read_table {
            let t = target.to_owned();
            let p = self
                .read(move |c| reader::poll_queue(c, &t, now_ms, limit))
                .await?;
            q.set_hint(
                target,
                match (p.due.is_empty(), p.next_due_at) {
                    (false, _) => Hint::Unknown,
                    (true, Some(at)) => Hint::DueAt(at),
                    (true, None) => Hint::Empty,
                },
            );
            out = p;
        } else if let Hint::DueAt(t) = hint {
            out.next_due_at = Some(t);
        }
        let room = limit - out.due.len().min(limit);
        if room > 0 {
            let (deliveries, more, next_due_at) = self.poll_journal(target, room, now_ms).await?;
            out.due.extend(deliveries);
            out.more_due |= more;
            if let Some(at) = next_due_at {
                out.next_due_at = Some(out.next_due_at.map_or(at, |t| t.min(at)));
            }
        }
        if out.more_due {
            out.next_due_at = None;
        }
        Ok(out)
    }

    /// When the earliest waiting delivery of `target` becomes due (a first attempt is due at its
    /// receive time); None if its queue is empty.
    pub async fn next_due_at(&self, target: &str) -> Result<Option<i64>, StoreError> {
        let t = target.to_owned();
        let table = self.read(move |c| reader::next_due_at(c, &t)).await?;
        let (first, _, _) = self.poll_journal(target, 1, i64::MAX).await?;
        let journal = first.first().map(|d| d.next_attempt_at_ms);
        Ok(match (table, journal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The journal part of a poll: first attempts, read from memory when the tail has them.
    async fn poll_journal(
        &self,
        target: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<(Vec<Delivery>, bool, Option<i64>), StoreError> {
        let q = &self.inner.queues;
        let c = q.consumer(target);
        let polled = lock(&c).poll(&q.journal, limit, now_ms, false)?;
        let polled = match polled {
            Polled::NeedsIo => {
                let journal = q.journal.clone();
                tokio::task::spawn_blocking(move || lock(&c).poll(&journal, limit, now_ms, true))
                    .await
                    .map_err(|e| StoreError::Internal(format!("journal read failed: {e}")))??
            }
            found => found,
        };
        match polled {
            Polled::Found {
                deliveries,
                more,
                next_due_at,
            } => Ok((deliveries, more, next_due_at)),
            Polled::NeedsIo => Err(StoreError::Internal(
                "journal poll asked for file access twice".into(),
            )),
        }
    }

    /// Acknowledges delivered deliveries of `target`. Unknown ids are ignored (completing
    /// twice is harmless).
    pub async fn complete(&self, target: &str, ids: Vec<DeliveryId>) -> Result<(), StoreError> {
        let mut queued = Vec::new();
        for id in ids {
            match id {
                DeliveryId::Journal { seq, index } => self.inner.queues.settle(target, seq, index),
                DeliveryId::Queued(seq) => queued.push(seq),
            }
        }
        if queued.is_empty() {
            return Ok(());
        }
        self.write_unit(Op::Complete(queued)).await
    }

    /// Records a failed attempt and when to try again. A first attempt (from the journal) is
    /// copied into the `deliveries` table here. [`StoreError::UnknownDelivery`] if a queued
    /// delivery is no longer queued.
    pub async fn reschedule(
        &self,
        d: &Delivery,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: String,
    ) -> Result<(), StoreError> {
        match d.id {
            DeliveryId::Queued(seq) => {
                self.write_unit(Op::Reschedule {
                    seq,
                    attempts,
                    next_attempt_at_ms,
                    last_error,
                })
                .await?;
            }
            DeliveryId::Journal { seq, index } => {
                let r = self
                    .write_unit(Op::Spill {
                        spill: spill_of(d),
                        attempts,
                        next_attempt_at_ms,
                        last_error,
                    })
                    .await;
                self.settle_or_hand_back(d, seq, index, r)?;
            }
        }
        self.inner.queues.add_due(&d.target, next_attempt_at_ms);
        Ok(())
    }

    /// Moves a delivery to the DLQ in one transaction, stamped with the wall clock.
    pub async fn dead_letter(&self, d: &Delivery, info: DeadLetterInfo) -> Result<(), StoreError> {
        self.dead_letter_at(d, info, now_ms()).await
    }

    /// [`dead_letter`](Store::dead_letter) with an explicit failure time.
    pub async fn dead_letter_at(
        &self,
        d: &Delivery,
        info: DeadLetterInfo,
        failed_at_ms: i64,
    ) -> Result<(), StoreError> {
        match d.id {
            DeliveryId::Queued(seq) => {
                self.write_unit(Op::DeadLetter {
                    seq,
                    info,
                    failed_at_ms,
                })
                .await
            }
            DeliveryId::Journal { seq, index } => {
                let r = self
                    .write_unit(Op::SpillDeadLetter {
                        spill: spill_of(d),
                        info,
                        failed_at_ms,
                    })
                    .await;
                self.settle_or_hand_back(d, seq, index, r)
            }
        }
    }

    /// After a spill: settled when it was written. Otherwise it stays owed, so the next poll
    /// returns it again (a first attempt must not vanish because recording its failure failed).
    fn settle_or_hand_back(
        &self,
        d: &Delivery,
        seq: u64,
        index: u32,
        written: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        written?;
        self.inner.queues.settle(&d.target, seq, index);
        Ok(())
    }

    /// Deliveries waiting per target, first attempts and retries together (targets with an
    /// empty queue are absent).
    pub async fn queue_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut depths = self.read(|c| reader::depths(c, Depth::Queue)).await?;
        for (t, n) in self.inner.queues.journal.pending().iter() {
            if *n > 0 {
                *depths.entry(t.clone()).or_default() += *n;
            }
        }
        Ok(depths)
    }

    /// Dead letters per target (targets with none are absent).
    pub async fn dlq_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read(|c| reader::depths(c, Depth::Dlq)).await
    }

    /// One page of dead letters matching `filter`, oldest (lowest id) first. `limit` is clamped
    /// to 1..=1000. Pass the returned `next_page_token` to get the next page.
    pub async fn list_dlq(
        &self,
        filter: DlqFilter,
        page_token: Option<String>,
        limit: usize,
    ) -> Result<Page<DeadLetter>, StoreError> {
        self.read(move |c| reader::list_dlq(c, &filter, page_token.as_deref(), limit))
            .await
    }

    /// One dead letter by id.
    pub async fn get_dlq(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.read(move |c| reader::get_dlq(c, id)).await
    }

    /// Moves the selected dead letters back to their queues (attempts 0, due at `now_ms`,
    /// enqueued at `now_ms`, in DLQ id order) in one transaction. The report says which targets
    /// got work so their workers can be woken.
    pub async fn redrive(
        &self,
        sel: RedriveSelector,
        now_ms: i64,
    ) -> Result<RedriveReport, StoreError> {
        match self.write(Op::Redrive { sel, now_ms }).await? {
            Output::Redrive(r) => {
                for t in r.per_target.keys() {
                    self.inner.queues.add_due(t, now_ms);
                }
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Stored events received in `[from_ms, to_ms)`, in journal order, after journal position
    /// `after` (the `seq` of the last event of the previous page); at most `limit`.
    pub async fn events_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if limit == 0 || from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let j = self.inner.queues.journal.clone();
        tokio::task::spawn_blocking(move || {
            let end = j.end();
            let mut out = Vec::new();
            let mut r = JournalReader::new(j.segments.clone());
            for seg in j.segments.snapshot() {
                if seg.max_received_ms < from_ms || seg.min_received_ms >= to_ms {
                    continue;
                }
                let start = after.map_or(seg.first_seq, |a| seg.first_seq.max(a + 1));
                for seq in start..seg.end_seq.min(end) {
                    let Some(rec) = r.read(seq, end)? else { break };
                    if rec.received_at_ms >= from_ms && rec.received_at_ms < to_ms {
                        out.push(stored(rec));
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("journal scan failed: {e}")))?
    }

    /// Enqueues deliveries for events that are already stored (a replay): committed in one
    /// transaction, due at once. Each delivery must carry its payload.
    pub async fn enqueue(
        &self,
        deliveries: Vec<(String, NewDelivery)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let targets: BTreeSet<String> = deliveries.iter().map(|(_, d)| d.target.clone()).collect();
        let mut rows = Vec::with_capacity(deliveries.len());
        for (id, d) in deliveries {
            let Some(payload) = d.payload.clone() else {
                return Err(StoreError::Internal(
                    "a replayed delivery needs its payload".into(),
                ));
            };
            rows.push((id, d, payload));
        }
        match self
            .write(Op::Enqueue {
                deliveries: rows,
                now_ms,
            })
            .await?
        {
            Output::Unit => {
                for t in &targets {
                    self.inner.queues.add_due(t, now_ms);
                }
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Appends an audit record stamped with the wall clock; returns its seq.
    pub async fn append_audit(
        &self,
        actor: String,
        action: String,
        detail: serde_json::Value,
    ) -> Result<i64, StoreError> {
        let detail = detail.to_string();
        match self
            .write(Op::AppendAudit {
                at_ms: now_ms(),
                actor,
                action,
                detail,
            })
            .await?
        {
            Output::Seq(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// One page of the audit log, newest first. `limit` is clamped to 1..=1000.
    pub async fn list_audit(
        &self,
        page_token: Option<String>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.read(move |c| reader::list_audit(c, page_token.as_deref(), limit))
            .await
    }

    /// An event from the ingest log, if still within retention.
    ///
    /// Recent events are found in memory. Older ones: an id the gateway generated (a UUID v7)
    /// carries its receive time, so only the segments around it are scanned; any other id means
    /// scanning the journal, which an admin lookup can afford and the ingest path never does.
    pub async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let j = self.inner.queues.journal.clone();
        let found = j
            .tail()
            .iter()
            .rev()
            .find(|r| r.id == id)
            .map(|r| stored((**r).clone()));
        if found.is_some() {
            return Ok(found);
        }
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let end = j.end();
            let near = v7_millis(&id);
            let mut segs: Vec<SegmentInfo> = j.segments.snapshot();
            if let Some(ms) = near {
                // Receive time and id time come from the same clock, a moment apart.
                const SLACK_MS: i64 = 60_000;
                let (lo, hi) = (ms.saturating_sub(SLACK_MS), ms.saturating_add(SLACK_MS));
                let (close, far): (Vec<_>, Vec<_>) = segs
                    .into_iter()
                    .partition(|s| s.max_received_ms >= lo && s.min_received_ms <= hi);
                segs = close.into_iter().chain(far).collect();
            }
            let mut r = JournalReader::new(j.segments.clone());
            for seg in segs {
                for seq in seg.first_seq..seg.end_seq.min(end) {
                    match r.read(seq, end)? {
                        Some(rec) if rec.id == id => return Ok(Some(stored(rec))),
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            Ok(None)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("journal scan failed: {e}")))?
    }

    /// Deletes what has outlived its purpose: journal segments whose events are past
    /// `event_retention_ms`, that every registered target has read past, and that no live
    /// dedup claim points into; and dedup runs whose claims have all ended (in the background).
    /// Only whole segments are deleted, oldest first. `_limit` is kept for callers of the
    /// row-by-row store; a call does all there is to do.
    pub async fn expire(
        &self,
        now_ms: i64,
        event_retention_ms: i64,
        _limit: usize,
    ) -> Result<ExpireStats, StoreError> {
        self.refuse_early()?;
        let _ = self
            .inner
            .ingest_tx
            .try_send(IngestCmd::ExpireDedup(now_ms));
        // Cursors and spills are committed without a fsync of their own: sync them all first,
        // so that nothing retention relies on can roll back after a power cut.
        let q = &self.inner.queues;
        let cursors = q.cursors_to_save();
        self.write_unit(Op::SaveCursorsDurably(cursors.clone()))
            .await?;
        q.mark_saved(&cursors);
        let cutoff = now_ms.saturating_sub(event_retention_ms.max(0));
        let floor = self.inner.queues.retention_floor();
        let covered = self.inner.index.covered();
        let segments = self.inner.queues.journal.segments.clone();
        let doomed: Vec<SegmentInfo> = {
            let mut list = segments.lock_write();
            let mut n = 0;
            // Never the active (last) segment.
            while n + 1 < list.len() {
                let s = &list[n];
                let ok = s.max_received_ms < cutoff
                    && s.end_seq <= floor
                    && s.end_seq <= covered
                    && s.max_claim_expiry_ms <= now_ms;
                if !ok {
                    break;
                }
                n += 1;
            }
            list.drain(..n).collect()
        };
        let mut stats = ExpireStats::default();
        for s in &doomed {
            journal::remove_segment(&segments.dir, s.first_seq)?;
            stats.segments_deleted += 1;
            stats.events_deleted += s.end_seq - s.first_seq;
        }
        Ok(stats)
    }

    /// Counts for diagnostics and tests: `events` (journal records on disk), `dedup` (claims,
    /// including ended ones not yet merged away), `deliveries` (first attempts waiting in the
    /// journal plus rows of the `deliveries` table), `dlq` and `audit`.
    pub async fn table_counts(&self) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        let mut counts = self.read(reader::table_counts).await?;
        let pending: u64 = self.inner.queues.journal.pending().values().sum();
        *counts.entry("deliveries").or_default() += pending;
        counts.insert("events", self.inner.queues.journal.segments.record_count());
        counts.insert("dedup", self.inner.index.entries());
        Ok(counts)
    }

    /// Stops accepting work, lets the writers finish everything queued before this call,
    /// writes the dedup memtable out, saves target cursors, checkpoints SQLite and joins the
    /// store's threads. Other clones get [`StoreError::ShuttingDown`] afterwards. Calling it
    /// twice is harmless.
    pub async fn close(self) -> Result<(), StoreError> {
        self.inner.shared.closing.store(true, Ordering::Release);
        let (done, done_rx) = oneshot::channel();
        let tx = self.inner.ingest_tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(IngestCmd::Shutdown(done)).is_ok())
            .await
            .unwrap_or(false);
        if sent {
            let _ = done_rx.await;
        }
        if let Some(stop) = lock(&self.inner.cursor_stop).take() {
            drop(stop);
        }
        let cursors = self.inner.queues.cursors_to_save();
        if !cursors.is_empty() && self.is_healthy() {
            let (reply, rx) = oneshot::channel();
            if self
                .inner
                .tx
                .send(Cmd {
                    op: Op::SaveCursors(cursors.clone()),
                    reply,
                })
                .await
                .is_ok()
                && matches!(rx.await, Ok(Ok(_)))
            {
                self.inner.queues.mark_saved(&cursors);
            }
        }
        let (reply, rx) = oneshot::channel();
        let sent = self
            .inner
            .tx
            .send(Cmd {
                op: Op::Shutdown,
                reply,
            })
            .await;
        let result = match sent {
            Ok(()) => match rx.await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(self.closed_error()),
            },
            // The writer already stopped (an earlier close).
            Err(_) => {
                if self.is_healthy() {
                    Ok(())
                } else {
                    Err(self.inner.shared.failed_error())
                }
            }
        };
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.threads));
        if !threads.is_empty() {
            tokio::task::spawn_blocking(move || {
                for t in threads {
                    if t.join().is_err() {
                        return Err(StoreError::Internal("store thread panicked".into()));
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| StoreError::Internal(format!("join failed: {e}")))??;
        }
        result
    }

    /// Test hook: blocks the ingest writer until the returned guard is dropped.
    #[doc(hidden)]
    pub async fn test_pause_writer(&self) -> Result<WriterPause, StoreError> {
        let (paused_tx, paused_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel();
        let tx = self.inner.ingest_tx.clone();
        let sent = tokio::task::spawn_blocking(move || {
            tx.send(IngestCmd::TestPause {
                paused: paused_tx,
                resume: resume_rx,
            })
            .is_ok()
        })
        .await
        .unwrap_or(false);
        if !sent {
            return Err(self.closed_error());
        }
        paused_rx.await.map_err(|_| self.closed_error())?;
        Ok(WriterPause { _resume: resume_tx })
    }

    /// Test hook: batches the ingest writer has taken off its queue, counted before it lingers.
    #[doc(hidden)]
    pub fn test_batches_taken(&self) -> u64 {
        self.inner.shared.batches_taken.load(Ordering::Acquire)
    }

    /// Journal commits since open (each one fsync): benchmarks derive the mean group size.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Test hook: the next journal commit fails as if its fsync had returned EIO.
    #[doc(hidden)]
    pub fn test_fail_next_commit(&self) {
        self.inner
            .shared
            .fail_next_commit
            .store(true, Ordering::Release);
    }
}

fn spill_of(d: &Delivery) -> Spill {
    Spill {
        event_id: d.event_id.clone(),
        target: d.target.clone(),
        rule: d.rule.clone(),
        payload: d.payload.clone(),
        enqueued_at_ms: d.enqueued_at_ms,
    }
}

fn stored(rec: EventRecord) -> StoredEvent {
    StoredEvent {
        seq: rec.seq,
        id: rec.id,
        source: rec.source,
        received_at_ms: rec.received_at_ms,
        envelope: rec.envelope,
    }
}

/// The Unix-millisecond timestamp of a UUID v7, which is how the gateway names events.
fn v7_millis(id: &str) -> Option<i64> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    i64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

/// Saves moved target cursors every [`CURSOR_SAVE_EVERY`] until told to stop.
fn run_cursor_saver(
    queues: Arc<Queues>,
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    loop {
        match stop.recv_timeout(CURSOR_SAVE_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if !shared.is_healthy() {
            return;
        }
        let cursors = queues.cursors_to_save();
        if cursors.is_empty() {
            continue;
        }
        let (reply, rx) = oneshot::channel();
        if tx
            .blocking_send(Cmd {
                op: Op::SaveCursors(cursors.clone()),
                reply,
            })
            .is_err()
        {
            return;
        }
        if let Ok(Ok(_)) = rx.blocking_recv() {
            queues.mark_saved(&cursors);
        }
    }
}

/// Guard returned by [`Store::test_pause_writer`]; the writer resumes when it is dropped.
#[doc(hidden)]
pub struct WriterPause {
    _resume: std::sync::mpsc::Sender<()>,
}
