//! The SQLite writer thread: group commit and fail-stop for everything but ingest.
//!
//! Ingest goes to the journal (`ingest_writer`); SQLite holds what is written rarely: retries
//! (deliveries that failed their first attempt), redrives and replays, dead letters, the audit
//! log and the target cursors. One OS thread owns the only write connection. It blocks for the first queued command, takes
//! whatever else is already queued (up to `max_batch`), runs them all inside ONE transaction
//! (each in its own savepoint, so one bad command does not sink its neighbours), commits (the
//! WAL fsync), and only then answers every command of the batch. Concurrent ingests therefore
//! share one fsync, and no caller ever sees `Ok` for data that is not yet durable.
//!
//! If the commit fails, or any statement fails with an I/O-class error, the store turns
//! fail-stop: the batch and every later command answer [`StoreError::Failed`]. Retrying a commit
//! after a failed fsync is unsafe (the kernel may have dropped the dirty pages and report the
//! next fsync as clean), so the only way forward is to reopen, which replays the WAL from disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use crate::LINGER_BELOW;
use crate::consumer::SavedCursor;
use crate::dedup_cache::DedupCache;
use crate::error::{StoreError, is_fatal};
use crate::types::{DeadLetterInfo, NewDelivery, RedriveReport, RedriveSelector};

/// A commit at least this slow is logged.
const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// State shared by the store handle, the writer and the checkpointer.
#[derive(Debug)]
pub(crate) struct Shared {
    /// False once fail-stop tripped; never becomes true again for this process.
    failed: AtomicBool,
    /// The first failure, for the `Failed` message and logs.
    failure: Mutex<Option<String>>,
    /// Set by `close` so new ingests are refused before the writer even sees them.
    pub(crate) closing: AtomicBool,
    /// Test hook: the next commit is treated as failed.
    pub(crate) fail_next_commit: AtomicBool,
    /// Committed journal batches (each one fsync).
    pub(crate) commits: AtomicU64,
    /// Committed SQLite batches; the checkpointer skips rounds where it did not move.
    pub(crate) sqlite_commits: AtomicU64,
    /// Batches taken off the queue (counted before the linger): lets a test queue a write
    /// that provably missed the first take.
    pub(crate) batches_taken: AtomicU64,
    /// Recently committed dedup keys, answered without the writer.
    pub(crate) dedup_cache: DedupCache,
}

impl Shared {
    pub(crate) fn new(dedup_cache_entries: usize) -> Shared {
        Shared {
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            closing: AtomicBool::new(false),
            fail_next_commit: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            sqlite_commits: AtomicU64::new(0),
            batches_taken: AtomicU64::new(0),
            dedup_cache: DedupCache::new(dedup_cache_entries),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Trips fail-stop. Keeps the first reason: later ones are consequences.
    pub(crate) fn fail(&self, reason: String) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(reason = %reason, "switchboard store is now fail-stop; reopen required");
            *slot = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn failed_error(&self) -> StoreError {
        let slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        StoreError::Failed(slot.clone().unwrap_or_else(|| "earlier failure".into()))
    }
}

/// What a command asks the writer to do.
pub(crate) enum Op {
    Complete(Vec<i64>),
    /// A journal delivery that failed its first attempt: queue it for a retry.
    Spill {
        spill: Spill,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: String,
    },
    /// A journal delivery that goes straight to the DLQ.
    SpillDeadLetter {
        spill: Spill,
        info: DeadLetterInfo,
        failed_at_ms: i64,
    },
    /// Where each target's journal queue stands.
    SaveCursors(Vec<(String, SavedCursor)>),
    /// The same, committed with a fsync: makes every earlier commit durable too (the WAL is
    /// synced up to the end), which retention needs before it deletes journal segments.
    SaveCursorsDurably(Vec<(String, SavedCursor)>),
    Reschedule {
        seq: i64,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: String,
    },
    DeadLetter {
        seq: i64,
        info: DeadLetterInfo,
        failed_at_ms: i64,
    },
    Redrive {
        sel: RedriveSelector,
        now_ms: i64,
    },
    /// Deliveries for events already stored (a replay); no dedup, no new event rows.
    Enqueue {
        /// Event id, the delivery, and its payload (the envelope when the delivery has none).
        deliveries: Vec<(String, NewDelivery, String)>,
        now_ms: i64,
    },
    AppendAudit {
        at_ms: i64,
        actor: String,
        action: String,
        detail: String,
    },
    /// Drain what was queued before, checkpoint, stop.
    Shutdown,
}

/// A delivery leaving the journal for the `deliveries` or `dlq` table.
pub(crate) struct Spill {
    pub(crate) event_id: String,
    pub(crate) target: String,
    pub(crate) rule: String,
    pub(crate) payload: String,
    pub(crate) enqueued_at_ms: i64,
}

/// What the writer answers.
#[derive(Debug)]
pub(crate) enum Output {
    Unit,
    Seq(i64),
    Redrive(RedriveReport),
}

pub(crate) type Reply = oneshot::Sender<Result<Output, StoreError>>;

/// A queued command and where to send its answer.
pub(crate) struct Cmd {
    pub(crate) op: Op,
    pub(crate) reply: Reply,
}

/// Marks the store failed if the writer thread unwinds, so callers see `Failed` rather than
/// hanging or getting a bare channel error.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("writer thread panicked".into());
        }
    }
}

/// How the writer groups commands into commits.
pub(crate) struct Batching {
    /// Most commands per transaction.
    pub(crate) max: usize,
    /// One wait for more when fewer than [`LINGER_BELOW`] are queued (zero: none).
    pub(crate) linger: Duration,
    /// Whether commits that are not delivery progress fsync (`synchronous=FULL`).
    pub(crate) full_sync: bool,
}

impl Op {
    /// Delivery progress: losing it to a power cut repeats deliveries and loses nothing, because
    /// the journal still holds every first attempt and SQLite's WAL keeps commits in order (a
    /// cursor that survived implies the spills before it survived). Such batches commit with
    /// `synchronous=NORMAL`: durable at the next checkpoint rather than at once, and no fsync
    /// of their own competing with the journal's.
    fn is_progress(&self) -> bool {
        matches!(
            self,
            Op::Complete(_)
                | Op::Spill { .. }
                | Op::SpillDeadLetter { .. }
                | Op::SaveCursors(_)
                | Op::Reschedule { .. }
                | Op::DeadLetter { .. }
        )
    }
}

/// Moves queued commands into `batch` until it holds `max` or the queue is empty.
fn drain_queued(rx: &mut mpsc::Receiver<Cmd>, batch: &mut Vec<Cmd>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

/// The writer thread's body. Returns when the channel closes or after `Shutdown`.
pub(crate) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    batching: Batching,
    mut checkpointer: Option<Checkpointer>,
) {
    let _guard = PanicGuard(shared.clone());
    let max_batch = batching.max;
    // What the connection is set to: FULL when the store is durable (schema::open_connection).
    let mut full_now = batching.full_sync;
    let mut batch: Vec<Cmd> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain_queued(&mut rx, &mut batch, max_batch);
        // A plain sleep, not a timed receive: tokio's channel has no blocking receive with a
        // timeout, and the wait is short enough that ending it early would gain little.
        if batch.len() < LINGER_BELOW
            && !batching.linger.is_zero()
            && !batch.iter().any(|c| matches!(c.op, Op::Shutdown))
        {
            std::thread::sleep(batching.linger);
            drain_queued(&mut rx, &mut batch, max_batch);
        }
        let shutdown_at = batch.iter().position(|c| matches!(c.op, Op::Shutdown));
        let tail = shutdown_at.map(|at| batch.split_off(at));
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            let commands = batch.len();
            let want_full = batching.full_sync && !batch.iter().all(|c| c.op.is_progress());
            if want_full != full_now {
                let level = if want_full { "FULL" } else { "NORMAL" };
                match conn.pragma_update(None, "synchronous", level) {
                    Ok(()) => full_now = want_full,
                    Err(e) => tracing::warn!(error = %e, level, "setting synchronous failed"),
                }
            }
            process_batch(&conn, &mut batch, &shared);
            let elapsed = started.elapsed();
            metrics::histogram!("switchboard_store_sqlite_commit_seconds")
                .record(elapsed.as_secs_f64());
            if elapsed >= SLOW_COMMIT {
                // Retries, dead-lettering and redrives wait behind it: usually the disk.
                tracing::warn!(
                    elapsed_ms = elapsed.as_millis() as u64,
                    commands,
                    "slow sqlite commit"
                );
            }
        }
        if let Some(tail) = tail {
            // Stop the checkpointer first so the final TRUNCATE checkpoint cannot find it
            // holding the checkpoint lock.
            if let Some(c) = checkpointer.take() {
                c.stop();
            }
            shutdown(&conn, &mut rx, tail, &shared);
            return;
        }
    }
    // Every handle was dropped without `close`: everything acknowledged is committed already.
    // Dropping `checkpointer` tells its thread to stop.
}

/// The checkpointer thread's handle, owned by the writer so shutdown can stop it in order.
pub(crate) struct Checkpointer {
    /// Dropping it wakes the checkpointer with `Disconnected`, which ends its loop.
    pub(crate) stop: std::sync::mpsc::Sender<()>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("checkpointer thread panicked");
        }
    }
}

fn shutdown(conn: &Connection, rx: &mut mpsc::Receiver<Cmd>, tail: Vec<Cmd>, shared: &Shared) {
    rx.close();
    let mut tail = tail.into_iter();
    let shutdown_reply = tail.next().map(|c| c.reply);
    for cmd in tail {
        let _ = cmd.reply.send(Err(StoreError::ShuttingDown));
    }
    while let Ok(cmd) = rx.try_recv() {
        let _ = cmd.reply.send(Err(StoreError::ShuttingDown));
    }
    let result = if shared.is_healthy() {
        // Fold the WAL into the main file so the next open starts with an empty log (fast
        // open, and `switchboard.db` alone is a complete copy for an operator).
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(busy) => {
                if busy != 0 {
                    tracing::warn!("final checkpoint could not complete (readers active)");
                }
                Ok(Output::Unit)
            }
            Err(e) if is_fatal(&e) => {
                shared.fail(format!("final checkpoint failed: {e}"));
                Err(shared.failed_error())
            }
            Err(e) => {
                tracing::warn!(error = %e, "final checkpoint failed");
                Ok(Output::Unit)
            }
        }
    } else {
        Err(shared.failed_error())
    };
    if let Some(reply) = shutdown_reply {
        let _ = reply.send(result);
    }
}

fn exec_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs one batch in one transaction and answers every command after the commit.
fn process_batch(conn: &Connection, batch: &mut Vec<Cmd>, shared: &Shared) {
    if !shared.is_healthy() {
        for cmd in batch.drain(..) {
            let _ = cmd.reply.send(Err(shared.failed_error()));
        }
        return;
    }
    if let Err(e) = exec_sql(conn, "BEGIN IMMEDIATE") {
        if is_fatal(&e) {
            shared.fail(format!("begin failed: {e}"));
        }
        // BUSY here means another process holds the write lock past busy_timeout: nothing was
        // written, so the batch can honestly be refused without failing the store.
        let fatal = !shared.is_healthy();
        for cmd in batch.drain(..) {
            let err = if fatal {
                shared.failed_error()
            } else {
                StoreError::Internal(format!("could not begin transaction: {e}"))
            };
            let _ = cmd.reply.send(Err(err));
        }
        return;
    }

    let mut results: Vec<(Reply, Result<Output, StoreError>)> = Vec::with_capacity(batch.len());
    let mut fatal: Option<String> = None;
    for cmd in batch.drain(..) {
        if fatal.is_some() {
            results.push((cmd.reply, Err(StoreError::ShuttingDown)));
            continue;
        }
        let result = exec_in_savepoint(conn, cmd.op);
        if let Err(StoreError::Sqlite(e)) = &result
            && is_fatal(e)
        {
            fatal = Some(format!("write failed: {e}"));
        }
        results.push((cmd.reply, result));
    }

    let commit = match fatal {
        Some(reason) => Err(reason),
        None => exec_sql(conn, "COMMIT").map_err(|e| format!("commit failed: {e}")),
    };
    match commit {
        Ok(()) => {
            shared.sqlite_commits.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(batch = results.len(), "committed");
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(reason) => {
            // The WAL may hold a partly synced commit; SQLite may or may not roll back on its
            // own. Try, but never write through this connection again.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            shared.fail(reason);
            for (reply, _) in results {
                let _ = reply.send(Err(shared.failed_error()));
            }
        }
    }
}

/// Runs one command in its own savepoint, so an ordinary error undoes only that command.
fn exec_in_savepoint(conn: &Connection, op: Op) -> Result<Output, StoreError> {
    exec_sql(conn, "SAVEPOINT cmd")?;
    let result = exec(conn, op);
    match &result {
        Ok(_) => {
            exec_sql(conn, "RELEASE cmd")?;
        }
        Err(_) => {
            exec_sql(conn, "ROLLBACK TO cmd")?;
            exec_sql(conn, "RELEASE cmd")?;
        }
    }
    result
}

fn exec(conn: &Connection, op: Op) -> Result<Output, StoreError> {
    match op {
        Op::Spill {
            spill,
            attempts,
            next_attempt_at_ms,
            last_error,
        } => {
            conn.prepare_cached(
                "INSERT INTO deliveries(event_id, target, rule, payload, attempts, enqueued_at_ms,
                                        next_attempt_at_ms, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                spill.event_id,
                spill.target,
                spill.rule,
                spill.payload,
                attempts,
                spill.enqueued_at_ms,
                next_attempt_at_ms,
                last_error
            ])?;
            Ok(Output::Seq(conn.last_insert_rowid()))
        }
        Op::SpillDeadLetter {
            spill,
            info,
            failed_at_ms,
        } => {
            conn.prepare_cached(
                "INSERT INTO dlq(event_id, target, rule, payload, error_code, error_message,
                                 exhausted_condition, retry_attempts, enqueued_at_ms, failed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                spill.event_id,
                spill.target,
                spill.rule,
                spill.payload,
                info.error_code,
                info.error_message,
                info.exhausted_condition,
                info.retry_attempts,
                spill.enqueued_at_ms,
                failed_at_ms
            ])?;
            Ok(Output::Seq(conn.last_insert_rowid()))
        }
        Op::SaveCursors(cursors) | Op::SaveCursorsDurably(cursors) => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO cursors(target, next_seq, settled) VALUES (?1, ?2, ?3)
                 ON CONFLICT(target) DO UPDATE SET next_seq = excluded.next_seq,
                                                   settled = excluded.settled",
            )?;
            for (target, c) in cursors {
                stmt.execute(params![
                    target,
                    i64::try_from(c.next_seq).unwrap_or(i64::MAX),
                    c.settled_text()
                ])?;
            }
            Ok(Output::Unit)
        }
        Op::Complete(seqs) => {
            let mut stmt = conn.prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?;
            for seq in seqs {
                stmt.execute([seq])?;
            }
            Ok(Output::Unit)
        }
        Op::Reschedule {
            seq,
            attempts,
            next_attempt_at_ms,
            last_error,
        } => {
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET attempts = ?2, next_attempt_at_ms = ?3, last_error = ?4
                     WHERE seq = ?1",
                )?
                .execute(params![seq, attempts, next_attempt_at_ms, last_error])?;
            if n == 0 {
                return Err(StoreError::UnknownDelivery(seq));
            }
            Ok(Output::Unit)
        }
        Op::DeadLetter {
            seq,
            info,
            failed_at_ms,
        } => {
            let n = conn
                .prepare_cached(
                    "INSERT INTO dlq(event_id, target, rule, payload, error_code, error_message,
                                     exhausted_condition, retry_attempts, enqueued_at_ms, failed_at_ms)
                     SELECT event_id, target, rule, payload, ?2, ?3, ?4, ?5, enqueued_at_ms, ?6
                     FROM deliveries WHERE seq = ?1",
                )?
                .execute(params![
                    seq,
                    info.error_code,
                    info.error_message,
                    info.exhausted_condition,
                    info.retry_attempts,
                    failed_at_ms
                ])?;
            if n == 0 {
                return Err(StoreError::UnknownDelivery(seq));
            }
            conn.prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?
                .execute([seq])?;
            Ok(Output::Unit)
        }
        Op::Redrive { sel, now_ms } => redrive(conn, sel, now_ms).map(Output::Redrive),
        Op::Enqueue { deliveries, now_ms } => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO deliveries(event_id, target, rule, payload, attempts, enqueued_at_ms,
                                        next_attempt_at_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
            )?;
            for (event_id, d, payload) in &deliveries {
                stmt.execute(params![event_id, d.target, d.rule, payload, now_ms])?;
            }
            Ok(Output::Unit)
        }
        Op::AppendAudit {
            at_ms,
            actor,
            action,
            detail,
        } => {
            conn.prepare_cached(
                "INSERT INTO audit(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![at_ms, actor, action, detail])?;
            Ok(Output::Seq(conn.last_insert_rowid()))
        }
        Op::Shutdown => Ok(Output::Unit),
    }
}

const REDRIVE_COLUMNS: &str = "INSERT INTO deliveries(event_id, target, rule, payload, attempts,
                                                      enqueued_at_ms, next_attempt_at_ms)
     SELECT event_id, target, rule, payload, 0, ?9, ?9 FROM dlq";

fn redrive(
    conn: &Connection,
    sel: RedriveSelector,
    now_ms: i64,
) -> Result<RedriveReport, StoreError> {
    let mut report = RedriveReport::default();
    let (target, from, to) = match sel {
        RedriveSelector::Ids(ids) => {
            let unique: BTreeSet<i64> = ids.into_iter().collect();
            let mut target_of = conn.prepare_cached("SELECT target FROM dlq WHERE id = ?1")?;
            let mut insert = conn.prepare_cached(&format!("{REDRIVE_COLUMNS} WHERE id = ?1"))?;
            let mut delete = conn.prepare_cached("DELETE FROM dlq WHERE id = ?1")?;
            for id in unique {
                let target: Option<String> = {
                    let mut rows = target_of.query([id])?;
                    match rows.next()? {
                        Some(row) => Some(row.get(0)?),
                        None => None,
                    }
                };
                let Some(target) = target else {
                    report.missing.push(id);
                    continue;
                };
                // ?9 is the shared "now" parameter of REDRIVE_COLUMNS.
                insert.raw_bind_parameter(1, id)?;
                insert.raw_bind_parameter(9, now_ms)?;
                insert.raw_execute()?;
                delete.execute([id])?;
                report.moved += 1;
                *report.per_target.entry(target).or_insert(0) += 1;
            }
            return Ok(report);
        }
        RedriveSelector::All { target } => (target, i64::MIN, i64::MAX),
        RedriveSelector::TimeRange {
            from_ms,
            to_ms,
            target,
        } => (target, from_ms, to_ms),
    };
    // ?1 target (NULL = all), ?2 from (inclusive), ?3 to (exclusive; i64::MAX means open).
    let cond = "WHERE (?1 IS NULL OR target = ?1) AND failed_at_ms >= ?2
                  AND (failed_at_ms < ?3 OR ?3 = 9223372036854775807)";
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT target, count(*) FROM dlq {cond} GROUP BY target"
        ))?;
        let mut rows = stmt.query(params![target, from, to])?;
        let mut per_target = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let t: String = row.get(0)?;
            let n: i64 = row.get(1)?;
            let n = u64::try_from(n).unwrap_or(0);
            report.moved += n;
            per_target.insert(t, n);
        }
        report.per_target = per_target;
    }
    if report.moved == 0 {
        return Ok(report);
    }
    let mut insert = conn.prepare_cached(&format!("{REDRIVE_COLUMNS} {cond} ORDER BY id"))?;
    insert.raw_bind_parameter(1, &target)?;
    insert.raw_bind_parameter(2, from)?;
    insert.raw_bind_parameter(3, to)?;
    insert.raw_bind_parameter(9, now_ms)?;
    insert.raw_execute()?;
    conn.prepare_cached(&format!("DELETE FROM dlq {cond}"))?
        .execute(params![target, from, to])?;
    Ok(report)
}

/// The background checkpointer: `wal_checkpoint(PASSIVE)` on its own connection, so the copy
/// of WAL pages into the main file and its fsync never sit between a commit and its ack.
/// PASSIVE never blocks the writer; if the writer is mid-append it just copies what is safe.
pub(crate) fn run_checkpointer(
    conn: Connection,
    stop: std::sync::mpsc::Receiver<()>,
    interval: Duration,
    shared: Arc<Shared>,
) {
    let mut last = shared.sqlite_commits.load(Ordering::Relaxed);
    loop {
        match stop.recv_timeout(interval) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if !shared.is_healthy() {
            return;
        }
        let now = shared.sqlite_commits.load(Ordering::Relaxed);
        if now == last {
            continue;
        }
        last = now;
        let started = std::time::Instant::now();
        let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        let elapsed = started.elapsed();
        metrics::histogram!("switchboard_store_checkpoint_seconds").record(elapsed.as_secs_f64());
        match r {
            Ok((log, done)) if elapsed >= SLOW_COMMIT => tracing::warn!(
                log,
                done,
                elapsed_ms = elapsed.as_millis() as u64,
                "slow store checkpoint"
            ),
            Ok((log, done)) => tracing::trace!(log, done, "checkpoint"),
            // A failed checkpoint fsync leaves the main file in an unknown state. SQLite keeps
            // the WAL (it only resets after a successful sync), but we apply the same rule as
            // for commits: stop writing rather than reason about partial syncs.
            Err(e) if is_fatal(&e) => {
                shared.fail(format!("checkpoint failed: {e}"));
                return;
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
}
