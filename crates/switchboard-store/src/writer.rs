//! The single writer thread: group commit and fail-stop.
//!
//! One OS thread owns the only write connection. It blocks for the first queued command, takes
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
use crate::dedup_cache::{CachedKey, DedupCache};
use crate::error::{StoreError, is_fatal};
use crate::types::{
    DeadLetterInfo, ExpireStats, IngestOutcome, NewDelivery, NewEvent, RedriveReport,
    RedriveSelector,
};

/// A commit at least this slow is logged.
const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// Upper bound on rows one `expire` call deletes per table, whatever the caller asks.
pub(crate) const MAX_EXPIRE_CHUNK: usize = 100_000;

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
    /// Committed batches; the checkpointer skips rounds where it did not move.
    pub(crate) commits: AtomicU64,
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
    Ingest(NewEvent),
    Complete(Vec<i64>),
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
        deliveries: Vec<(String, NewDelivery)>,
        now_ms: i64,
    },
    AppendAudit {
        at_ms: i64,
        actor: String,
        action: String,
        detail: String,
    },
    Expire {
        now_ms: i64,
        retention_ms: i64,
        limit: usize,
    },
    /// Drain what was queued before, checkpoint, stop.
    Shutdown,
    /// Test hook: block the writer (inside its transaction) until `resume` is dropped.
    TestPause {
        paused: oneshot::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
}

/// What the writer answers.
#[derive(Debug)]
pub(crate) enum Output {
    Unit,
    Ingest(IngestOutcome),
    Seq(i64),
    Redrive(RedriveReport),
    Expire(ExpireStats),
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
    let mut batch: Vec<Cmd> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain_queued(&mut rx, &mut batch, max_batch);
        shared.batches_taken.fetch_add(1, Ordering::Release);
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
            // How long callers wait on the disk, and how much one fsync carries: the two numbers
            // that explain ingest latency tails (`/metrics`).
            let started = std::time::Instant::now();
            let commands = batch.len();
            process_batch(&conn, &mut batch, &shared);
            let elapsed = started.elapsed();
            metrics::histogram!("switchboard_store_commit_seconds").record(elapsed.as_secs_f64());
            if elapsed >= SLOW_COMMIT {
                // Every ingest waiting behind this commit waited this long: the usual cause is
                // the disk (an fsync stall), which nothing else in the process would show.
                tracing::warn!(
                    elapsed_ms = elapsed.as_millis() as u64,
                    commands,
                    "slow store commit"
                );
            }
            metrics::histogram!("switchboard_store_commit_commands").record(commands as f64);
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
    let mut cache_keys = Vec::new();
    for cmd in batch.drain(..) {
        if fatal.is_some() {
            results.push((cmd.reply, Err(StoreError::ShuttingDown)));
            continue;
        }
        let result = exec_in_savepoint(conn, cmd.op, &mut cache_keys);
        if let Err(StoreError::Sqlite(e)) = &result
            && is_fatal(e)
        {
            fatal = Some(format!("write failed: {e}"));
        }
        results.push((cmd.reply, result));
    }

    let commit = match fatal {
        Some(reason) => Err(reason),
        None if shared.fail_next_commit.swap(false, Ordering::AcqRel) => {
            Err("injected commit failure (test hook)".to_string())
        }
        None => exec_sql(conn, "COMMIT").map_err(|e| format!("commit failed: {e}")),
    };
    match commit {
        Ok(()) => {
            shared.commits.fetch_add(1, Ordering::Relaxed);
            // Before the replies: a sender that retries the moment it is answered must hit.
            shared.dedup_cache.insert_committed(cache_keys);
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

/// Runs one command in its own savepoint. Dedup keys it wrote or read are appended to
/// `cache_keys` only if the savepoint was released, for the cache to take after the commit.
fn exec_in_savepoint(
    conn: &Connection,
    op: Op,
    cache_keys: &mut Vec<CachedKey>,
) -> Result<Output, StoreError> {
    exec_sql(conn, "SAVEPOINT cmd")?;
    let mut key = None;
    let result = exec(conn, op, &mut key);
    match &result {
        Ok(_) => {
            exec_sql(conn, "RELEASE cmd")?;
            cache_keys.extend(key);
        }
        Err(_) => {
            exec_sql(conn, "ROLLBACK TO cmd")?;
            exec_sql(conn, "RELEASE cmd")?;
        }
    }
    result
}

fn exec(
    conn: &Connection,
    op: Op,
    cache_key: &mut Option<CachedKey>,
) -> Result<Output, StoreError> {
    match op {
        Op::Ingest(ev) => ingest(conn, ev, cache_key).map(Output::Ingest),
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
            for (event_id, d) in &deliveries {
                stmt.execute(params![event_id, d.target, d.rule, d.payload, now_ms])?;
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
        Op::Expire {
            now_ms,
            retention_ms,
            limit,
        } => expire(conn, now_ms, retention_ms, limit).map(Output::Expire),
        Op::Shutdown => Ok(Output::Unit),
        Op::TestPause { paused, resume } => {
            let _ = paused.send(());
            // Err means the guard was dropped: either way, resume.
            let _ = resume.recv();
            Ok(Output::Unit)
        }
    }
}

/// Dedup check, event insert, dedup claim and deliveries: all in the caller's savepoint, so the
/// claim is never visible without the event (invariant 2).
fn ingest(
    conn: &Connection,
    ev: NewEvent,
    cache_key: &mut Option<CachedKey>,
) -> Result<IngestOutcome, StoreError> {
    if let Some(claim) = &ev.dedup {
        let mut stmt =
            conn.prepare_cached("SELECT event_id, expires_at_ms FROM dedup WHERE key = ?1")?;
        let mut rows = stmt.query([&claim.key])?;
        if let Some(row) = rows.next()? {
            let original_id: String = row.get(0)?;
            let expires_at_ms: i64 = row.get(1)?;
            if expires_at_ms > ev.received_at_ms {
                // Not in the cache (evicted, or written before a restart): it is now.
                *cache_key = Some(CachedKey {
                    key: claim.key.clone(),
                    event_id: original_id.clone(),
                    expires_at_ms,
                });
                return Ok(IngestOutcome::Duplicate { original_id });
            }
        }
    }
    // The envelope id is the event's identity too: an EventBridge relay retrying the same
    // envelope is a duplicate even without a dedup key.
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events(id, source, received_at_ms, envelope)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![ev.id, ev.source, ev.received_at_ms, ev.envelope])?;
    if inserted == 0 {
        return Ok(IngestOutcome::Duplicate { original_id: ev.id });
    }
    if let Some(claim) = &ev.dedup {
        let expires = ev.received_at_ms.saturating_add(claim.ttl_ms);
        conn.prepare_cached(
            "INSERT INTO dedup(key, event_id, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET event_id = excluded.event_id,
                                            expires_at_ms = excluded.expires_at_ms",
        )?
        .execute(params![claim.key, ev.id, expires])?;
        *cache_key = Some(CachedKey {
            key: claim.key.clone(),
            event_id: ev.id.clone(),
            expires_at_ms: expires,
        });
    }
    if !ev.deliveries.is_empty() {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO deliveries(event_id, target, rule, payload, attempts, enqueued_at_ms,
                                    next_attempt_at_ms)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
        )?;
        for d in &ev.deliveries {
            stmt.execute(params![
                ev.id,
                d.target,
                d.rule,
                d.payload,
                ev.received_at_ms
            ])?;
        }
    }
    Ok(IngestOutcome::Stored)
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

fn expire(
    conn: &Connection,
    now_ms: i64,
    retention_ms: i64,
    limit: usize,
) -> Result<ExpireStats, StoreError> {
    let limit = limit.clamp(1, MAX_EXPIRE_CHUNK);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let dedup_deleted = conn
        .prepare_cached(
            "DELETE FROM dedup WHERE key IN
               (SELECT key FROM dedup WHERE expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2)",
        )?
        .execute(params![now_ms, limit_sql])?;
    let cutoff = now_ms.saturating_sub(retention_ms.max(0));
    let events_deleted = conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN
               (SELECT id FROM events WHERE received_at_ms < ?1 ORDER BY received_at_ms LIMIT ?2)",
        )?
        .execute(params![cutoff, limit_sql])?;
    Ok(ExpireStats {
        dedup_deleted: dedup_deleted as u64,
        events_deleted: events_deleted as u64,
        more: dedup_deleted >= limit || events_deleted >= limit,
    })
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
    let mut last = shared.commits.load(Ordering::Relaxed);
    loop {
        match stop.recv_timeout(interval) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if !shared.is_healthy() {
            return;
        }
        let now = shared.commits.load(Ordering::Relaxed);
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
