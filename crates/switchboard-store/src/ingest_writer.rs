//! The ingest writer thread: dedup decisions, journal group commit, fail-stop.
//!
//! One OS thread owns the journal's append end and the dedup memtable. It blocks for the first
//! queued ingest, takes whatever else is queued (lingering once when that is little), decides
//! each event in queue order (duplicate of a live claim, or new: staged as a record and claimed
//! in the memtable), writes the staged records with one `pwrite` and one `fdatasync`, and only
//! then answers every caller and publishes the records to the target queues.
//!
//! A failed write or sync makes the whole store fail-stop, as a failed SQLite commit does:
//! retrying an `fsync` after an error proves nothing (the kernel may have dropped the pages).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::LINGER_BELOW;
use crate::consumer::JournalShared;
use crate::dedup_cache::CachedKey;
use crate::dedup_index::{DedupIndex, Entry, hash_identity, hash_key};
use crate::error::StoreError;
use crate::journal::{EventRecord, JournalReader, JournalWriter, RecordDelivery};
use crate::store::now_ms;
use crate::types::{IngestOutcome, NewEvent};
use crate::writer::Shared;

/// A commit at least this slow is logged.
const SLOW_COMMIT: Duration = Duration::from_millis(100);
/// How often an idle writer looks at the memtable's age.
const IDLE_TICK: Duration = Duration::from_millis(500);

pub(crate) type IngestReply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

pub(crate) enum IngestCmd {
    Ingest(NewEvent, IngestReply),
    /// Drain what was queued before, flush the dedup memtable, stop.
    Shutdown(oneshot::Sender<()>),
    /// Test hook: block until `resume` is dropped.
    TestPause {
        paused: oneshot::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
    /// Ask the dedup flusher to drop runs whose claims have all ended.
    ExpireDedup(i64),
}

pub(crate) struct IngestWriter {
    pub(crate) journal: JournalWriter,
    pub(crate) index: DedupIndex,
    pub(crate) shared: Arc<Shared>,
    pub(crate) jshared: Arc<JournalShared>,
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
    /// Reads the journal for the id of a claim whose event id is not stored inline.
    pub(crate) reader: JournalReader,
}

/// Marks the store failed if the thread unwinds, so callers see `Failed` rather than hanging.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("ingest writer thread panicked".into());
        }
    }
}

fn drain(rx: &Receiver<IngestCmd>, batch: &mut Vec<IngestCmd>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
}

impl IngestWriter {
    pub(crate) fn run(mut self, rx: Receiver<IngestCmd>) {
        let _guard = PanicGuard(self.shared.clone());
        #[cfg(target_os = "linux")]
        prefer_batch_scheduling();
        let mut batch: Vec<IngestCmd> = Vec::with_capacity(self.max_batch);
        loop {
            let first = match rx.recv_timeout(IDLE_TICK) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.index.maybe_freeze(self.journal.next_seq());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            batch.push(first);
            drain(&rx, &mut batch, self.max_batch);
            self.shared.batches_taken.fetch_add(1, Ordering::Release);
            let ingests = batch
                .iter()
                .filter(|c| matches!(c, IngestCmd::Ingest(..)))
                .count();
            if ingests == batch.len() && ingests < LINGER_BELOW && !self.linger.is_zero() {
                // A plain sleep: the wait is short, and ending it early would gain little.
                std::thread::sleep(self.linger);
                drain(&rx, &mut batch, self.max_batch);
            }
            let mut stop = None;
            let mut ingest = Vec::with_capacity(batch.len());
            for cmd in batch.drain(..) {
                match cmd {
                    IngestCmd::Ingest(ev, reply) if stop.is_none() => ingest.push((ev, reply)),
                    IngestCmd::Ingest(_, reply) => {
                        let _ = reply.send(Err(StoreError::ShuttingDown));
                    }
                    IngestCmd::Shutdown(done) => stop = Some(done),
                    IngestCmd::TestPause { paused, resume } => {
                        self.commit_batch(std::mem::take(&mut ingest));
                        let _ = paused.send(());
                        let _ = resume.recv();
                    }
                    IngestCmd::ExpireDedup(now) => self.index.request_expiry(now),
                }
            }
            self.commit_batch(ingest);
            self.index.maybe_freeze(self.journal.next_seq());
            if let Some(done) = stop {
                self.shutdown(&rx);
                let _ = done.send(());
                return;
            }
        }
        // Every handle dropped without `close`: everything acknowledged is durable already.
        self.index.close(self.journal.next_seq());
    }

    fn shutdown(self, rx: &Receiver<IngestCmd>) {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                IngestCmd::Ingest(_, reply) => {
                    let _ = reply.send(Err(StoreError::ShuttingDown));
                }
                IngestCmd::Shutdown(done) => {
                    let _ = done.send(());
                }
                IngestCmd::TestPause { paused, .. } => drop(paused),
                IngestCmd::ExpireDedup(_) => {}
            }
        }
        if self.shared.is_healthy() {
            self.index.close(self.journal.next_seq());
        }
    }

    /// The original id of a live claim.
    fn claim_owner(
        &mut self,
        e: &Entry,
        staged: &[Arc<EventRecord>],
    ) -> Result<String, StoreError> {
        if let Some(id) = e.event_id() {
            return Ok(id);
        }
        // Claimed earlier in this batch: staged, not yet readable from the journal. `staged` is
        // in seq order (each staged record takes the next seq), so it can be searched.
        if let Ok(i) = staged.binary_search_by_key(&e.seq, |r| r.seq) {
            return Ok(staged[i].id.clone());
        }
        match self.reader.read(e.seq, self.jshared.end())? {
            Some(rec) => Ok(rec.id),
            // Retention keeps a segment until its last claim has ended, so a live claim's
            // record is on disk; if not, say so rather than invent an id.
            None => Err(StoreError::Internal(format!(
                "dedup claim points at journal record {} which is gone",
                e.seq
            ))),
        }
    }

    fn decide(
        &mut self,
        ev: NewEvent,
        staged: &[Arc<EventRecord>],
        cache: &mut Vec<CachedKey>,
    ) -> Result<Decision, StoreError> {
        let now = ev.received_at_ms;
        let key_hash = ev.dedup.as_ref().map(|c| hash_key(&c.key));
        if let (Some(claim), Some(h)) = (&ev.dedup, &key_hash)
            && let Some(e) = self.index.lookup(h)?
            && e.expires_at_ms > now
        {
            let original_id = self.claim_owner(&e, staged)?;
            // Not in the cache (evicted, or claimed before a restart): it is now.
            cache.push(CachedKey {
                key: claim.key.clone(),
                event_id: original_id.clone(),
                expires_at_ms: e.expires_at_ms,
            });
            return Ok(Decision::Duplicate(original_id));
        }
        let identity_hash = ev.identity_ttl_ms.map(|_| hash_identity(&ev.id));
        if let Some(h) = &identity_hash
            && let Some(e) = self.index.lookup(h)?
            && e.expires_at_ms > now
        {
            return Ok(Decision::Duplicate(ev.id));
        }
        let seq = self.journal.next_seq();
        let dedup = match (&ev.dedup, key_hash) {
            (Some(c), Some(h)) => Some((h, now.saturating_add(c.ttl_ms))),
            _ => None,
        };
        let identity_expires = ev.identity_ttl_ms.map(|t| now.saturating_add(t));
        let rec = EventRecord {
            seq,
            received_at_ms: now,
            dedup,
            identity_expires_at_ms: identity_expires,
            id: ev.id,
            source: ev.source,
            envelope: ev.envelope,
            deliveries: ev
                .deliveries
                .into_iter()
                .map(|d| RecordDelivery {
                    target: d.target,
                    rule: d.rule,
                    payload: d.payload,
                })
                .collect(),
        };
        self.journal.stage(&rec)?;
        if let Some((h, expires)) = dedup {
            self.index.insert(&h, Entry::new(seq, expires, &rec.id));
            if let Some(c) = &ev.dedup {
                cache.push(CachedKey {
                    key: c.key.clone(),
                    event_id: rec.id.clone(),
                    expires_at_ms: expires,
                });
            }
        }
        if let (Some(h), Some(expires)) = (identity_hash, identity_expires) {
            self.index.insert(&h, Entry::new(seq, expires, &rec.id));
        }
        Ok(Decision::Stored(Arc::new(rec)))
    }

    fn commit_batch(&mut self, batch: Vec<(NewEvent, IngestReply)>) {
        if batch.is_empty() {
            return;
        }
        if !self.shared.is_healthy() {
            for (_, reply) in batch {
                let _ = reply.send(Err(self.shared.failed_error()));
            }
            return;
        }
        if let Err(e) = self.journal.roll_if_full(now_ms()) {
            self.shared
                .fail(format!("starting a journal segment failed: {e}"));
            for (_, reply) in batch {
                let _ = reply.send(Err(self.shared.failed_error()));
            }
            return;
        }
        let started = Instant::now();
        let commands = batch.len();
        let mut cache = Vec::new();
        let mut records = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for (ev, reply) in batch {
            let result = match self.decide(ev, &records, &mut cache) {
                Ok(Decision::Stored(rec)) => {
                    records.push(rec);
                    Ok(IngestOutcome::Stored)
                }
                Ok(Decision::Duplicate(original_id)) => {
                    Ok(IngestOutcome::Duplicate { original_id })
                }
                Err(e) => Err(e),
            };
            replies.push((reply, result));
        }
        let commit = if self.shared.fail_next_commit.swap(false, Ordering::AcqRel) {
            Err("injected commit failure (test hook)".to_string())
        } else {
            self.journal
                .commit()
                .map_err(|e| format!("journal write failed: {e}"))
        };
        match commit {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.publish(records);
                // Before the replies: a sender that retries the moment it is answered must hit.
                self.shared.dedup_cache.insert_committed(cache);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(reason) => {
                self.journal.discard_staged();
                self.shared.fail(reason);
                for (reply, _) in replies {
                    let _ = reply.send(Err(self.shared.failed_error()));
                }
            }
        }
        let elapsed = started.elapsed();
        metrics::histogram!("switchboard_store_commit_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("switchboard_store_commit_commands").record(commands as f64);
        if elapsed >= SLOW_COMMIT {
            // Every ingest waiting behind this commit waited this long: the usual cause is the
            // disk (an fsync stall), which nothing else in the process would show.
            tracing::warn!(
                elapsed_ms = elapsed.as_millis() as u64,
                commands,
                "slow store commit"
            );
        }
    }

    /// Makes committed records visible to the target queues: counts first, then the tail, then
    /// the end (a reader that sees the new end finds the records in the tail or on disk).
    fn publish(&self, records: Vec<Arc<EventRecord>>) {
        let Some(last) = records.last().map(|r| r.seq) else {
            return;
        };
        {
            let mut pending = self.jshared.pending();
            for r in &records {
                for d in &r.deliveries {
                    match pending.get_mut(&d.target) {
                        Some(n) => *n += 1,
                        None => {
                            pending.insert(d.target.clone(), 1);
                        }
                    }
                }
            }
        }
        self.jshared.tail().push(records);
        self.jshared
            .committed_end
            .store(last + 1, Ordering::Release);
    }
}

/// Asks the kernel not to let this thread preempt the thread it wakes beside (`SCHED_BATCH`).
///
/// The writer wakes for every ingest queued while it idles and for every write the device
/// finishes. As an ordinary thread on a core it shares with the tokio worker that serves the
/// requests, each wake preempts that worker in the middle of its run: two more context switches,
/// and a commit of whatever was queued at that instant. As `SCHED_BATCH` it keeps its fair
/// share of the CPU but runs when the worker blocks or its slice ends, and then commits what the
/// whole run queued. With a core of its own it is placed as before: the policy changes only
/// wake-up preemption. Measured in BENCHMARKS.md ("the writer as SCHED_BATCH"). Best effort: if
/// the call fails, the thread keeps the ordinary policy.
#[cfg(target_os = "linux")]
fn prefer_batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` is a valid struct that outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "the ingest writer keeps the ordinary scheduling policy"
        );
    }
}

enum Decision {
    Stored(Arc<EventRecord>),
    Duplicate(String),
}
