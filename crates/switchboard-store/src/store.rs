//! The async handle: [`Store`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::MAX_COMMIT_LINGER_US;
use crate::error::StoreError;
use crate::reader::{self, Depth, Readers};
use crate::schema;
use crate::types::{
    AuditRecord, CheckpointMode, DeadLetter, DeadLetterInfo, Delivery, DlqFilter, ExpireStats,
    IngestOutcome, NewDelivery, NewEvent, Page, QueuePoll, RedriveReport, RedriveSelector,
    StoreOptions, StoreTuning, StoredEvent,
};
use crate::writer::{self, Cmd, Op, Output, Shared};

/// Handle to the embedded store. Cheap to clone; all clones share one writer thread.
///
/// Dropping every clone without [`close`](Store::close) is safe (everything acknowledged is
/// already committed); `close` additionally checkpoints the WAL and joins the threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    readers: Arc<Readers>,
    /// The writer thread (which owns and stops the checkpointer), joined by the first `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    dir: PathBuf,
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
/// before a power cut does not vanish with its directory entry. SQLite fsyncs the directory
/// itself when it creates the WAL, but not the directory's own entry in its parent.
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

impl Store {
    /// Opens (creating if needed) `<dir>/switchboard.db` with the default [`StoreTuning`].
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_tuned(dir, opts, StoreTuning::default())
    }

    /// Like [`open`](Store::open) with explicit tuning (benchmarks, unusual disks).
    pub fn open_tuned(
        dir: &Path,
        opts: StoreOptions,
        tuning: StoreTuning,
    ) -> Result<Store, StoreError> {
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
        create_dir_durably(dir)?;
        let path = dir.join(schema::DB_FILE);
        let mut conn = schema::open_connection(&path, &opts, &tuning)?;
        schema::configure_writer(&conn, &tuning)?;
        schema::init(&mut conn)?;

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
            linger: Duration::from_micros(tuning.commit_linger_us),
        };
        let writer_shared = shared.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("sb-store-writer".into())
                .spawn(move || writer::run(conn, rx, writer_shared, batching, checkpointer))?,
        ];
        let readers = Arc::new(Readers::new(path, opts, tuning));
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                shared,
                readers,
                threads: Mutex::new(threads),
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

    async fn await_reply(
        &self,
        rx: oneshot::Receiver<Result<Output, StoreError>>,
    ) -> Result<Output, StoreError> {
        match rx.await {
            Ok(r) => r,
            // The writer dropped the reply without answering: it stopped (close) or panicked.
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Queues a write, waiting for queue space (internal work such as acks and retries must
    /// not be shed; only new ingest load is).
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
            Output::Unit => Ok(()),
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

    /// Dedup check + persist the event + enqueue its deliveries, in one transaction, durable
    /// (fsync'd) when this returns `Ok`.
    ///
    /// Never waits for queue space: a full queue answers [`StoreError::Busy`] at once. If the
    /// future is dropped after it was queued, the event may still be stored; the sender's retry
    /// then gets `Duplicate` (with a dedup key or the same envelope id).
    pub async fn ingest(&self, ev: NewEvent) -> Result<IngestOutcome, StoreError> {
        self.refuse_early()?;
        if let Some(claim) = &ev.dedup
            && let Some(original_id) = self.cached_duplicate(&claim.key, ev.received_at_ms)
        {
            return Ok(IngestOutcome::Duplicate { original_id });
        }
        let (reply, rx) = oneshot::channel();
        match self.inner.tx.try_send(Cmd {
            op: Op::Ingest(ev),
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(TrySendError::Closed(_)) => return Err(self.closed_error()),
        }
        match self.await_reply(rx).await? {
            Output::Ingest(o) => Ok(o),
            other => Err(unexpected(other)),
        }
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

    /// Up to `limit` (at most 10 000) deliveries of `target` with `next_attempt_at_ms <= now_ms`,
    /// earliest due first, then by seq.
    pub async fn due(
        &self,
        target: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let target = target.to_owned();
        self.read(move |c| reader::due(c, &target, now_ms, limit))
            .await
    }

    /// [`due`] and, when the limit was not reached, when the next delivery not yet due becomes
    /// due: one read where a delivery worker would otherwise make two.
    ///
    /// [`due`]: Store::due
    pub async fn poll_queue(
        &self,
        target: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<QueuePoll, StoreError> {
        if limit == 0 {
            return Ok(QueuePoll {
                due: Vec::new(),
                more_due: false,
                next_due_at: None,
            });
        }
        let target = target.to_owned();
        self.read(move |c| reader::poll_queue(c, &target, now_ms, limit))
            .await
    }

    /// When the earliest queued delivery of `target` becomes due; None if its queue is empty.
    pub async fn next_due_at(&self, target: &str) -> Result<Option<i64>, StoreError> {
        let target = target.to_owned();
        self.read(move |c| reader::next_due_at(c, &target)).await
    }

    /// Deletes delivered rows. Unknown seqs are ignored (completing twice is harmless).
    pub async fn complete(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write_unit(Op::Complete(seqs)).await
    }

    /// Records a failed attempt and when to try again.
    /// [`StoreError::UnknownDelivery`] if `seq` is not queued.
    pub async fn reschedule(
        &self,
        seq: i64,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: String,
    ) -> Result<(), StoreError> {
        self.write_unit(Op::Reschedule {
            seq,
            attempts,
            next_attempt_at_ms,
            last_error,
        })
        .await
    }

    /// Moves a queued delivery to the DLQ in one transaction, stamped with the wall clock.
    /// [`StoreError::UnknownDelivery`] if `seq` is not queued.
    pub async fn dead_letter(&self, seq: i64, info: DeadLetterInfo) -> Result<(), StoreError> {
        self.dead_letter_at(seq, info, now_ms()).await
    }

    /// [`dead_letter`](Store::dead_letter) with an explicit failure time.
    pub async fn dead_letter_at(
        &self,
        seq: i64,
        info: DeadLetterInfo,
        failed_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.write_unit(Op::DeadLetter {
            seq,
            info,
            failed_at_ms,
        })
        .await
    }

    /// Queued deliveries per target (targets with an empty queue are absent).
    pub async fn queue_depths(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read(|c| reader::depths(c, Depth::Queue)).await
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
            Output::Redrive(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Stored events received in `[from_ms, to_ms)`, oldest first, after the
    /// `(received_at_ms, id)` of the last one of the previous page.
    pub async fn events_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |c| reader::events_between(c, from_ms, to_ms, after, limit))
            .await
    }

    /// Enqueues deliveries for events that are already stored (a replay): committed in one
    /// transaction, due at once. The event ids must exist in the ingest log.
    pub async fn enqueue(
        &self,
        deliveries: Vec<(String, NewDelivery)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match self.write(Op::Enqueue { deliveries, now_ms }).await? {
            Output::Unit => Ok(()),
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
    pub async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| reader::get_event(c, &id)).await
    }

    /// Deletes at most `limit` (clamped to 1..=100 000) expired dedup keys and at most `limit`
    /// events received before `now_ms - event_retention_ms`. Call again while
    /// [`ExpireStats::more`] is true. Deliveries and dead letters carry their own payload, so
    /// expiring an event never affects them.
    pub async fn expire(
        &self,
        now_ms: i64,
        event_retention_ms: i64,
        limit: usize,
    ) -> Result<ExpireStats, StoreError> {
        match self
            .write(Op::Expire {
                now_ms,
                retention_ms: event_retention_ms,
                limit,
            })
            .await?
        {
            Output::Expire(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Row counts per table (`events`, `dedup`, `deliveries`, `dlq`, `audit`): diagnostics.
    pub async fn table_counts(&self) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        self.read(reader::table_counts).await
    }

    /// Stops accepting work, lets the writer finish everything queued before this call,
    /// checkpoints the WAL into the main file and joins the store's threads. Other clones get
    /// [`StoreError::ShuttingDown`] afterwards. Calling it twice is harmless.
    pub async fn close(self) -> Result<(), StoreError> {
        self.inner.shared.closing.store(true, Ordering::Release);
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
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
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

    /// Test hook: blocks the writer until the returned guard is dropped. The writer holds an
    /// open transaction meanwhile; reads still work.
    #[doc(hidden)]
    pub async fn test_pause_writer(&self) -> Result<WriterPause, StoreError> {
        let (paused_tx, paused_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel();
        let (reply, _reply_rx) = oneshot::channel();
        self.inner
            .tx
            .send(Cmd {
                op: Op::TestPause {
                    paused: paused_tx,
                    resume: resume_rx,
                },
                reply,
            })
            .await
            .map_err(|_| self.closed_error())?;
        paused_rx.await.map_err(|_| self.closed_error())?;
        Ok(WriterPause { _resume: resume_tx })
    }

    /// Test hook: batches the writer has taken off its queue, counted before it lingers.
    #[doc(hidden)]
    pub fn test_batches_taken(&self) -> u64 {
        self.inner.shared.batches_taken.load(Ordering::Acquire)
    }

    /// Batches committed since open (each one fsync): benchmarks derive the mean group size.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Test hook: the next commit fails as if its fsync had returned EIO.
    #[doc(hidden)]
    pub fn test_fail_next_commit(&self) {
        self.inner
            .shared
            .fail_next_commit
            .store(true, Ordering::Release);
    }
}

/// Guard returned by [`Store::test_pause_writer`]; the writer resumes when it is dropped.
#[doc(hidden)]
pub struct WriterPause {
    _resume: std::sync::mpsc::Sender<()>,
}
