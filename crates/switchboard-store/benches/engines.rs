//! Engine comparison with Switchboard's access pattern: SQLite (our schema and SQL), redb and
//! fjall run the same logical workload in one process, one after another.
//!
//! Per event, inside one durable transaction per group of `G` events:
//! dedup lookup (absent) → event (id → 1 KB envelope, plus a received-time index entry) →
//! dedup claim (key → id + expiry, plus an expiry index entry) → delivery (seq → 1 KB payload,
//! plus the "due" ordering `(target, next_attempt_at, seq)`). That is what
//! `switchboard-store`'s `ingest` writes: two 1 KB blobs and five index entries. The KV engines
//! encode every secondary index in a key, because SQLite maintains the same indexes for us.
//!
//! "+ consumer" adds a second thread shaped like a delivery worker: it reads up to 512 due
//! deliveries (payload included) from a read snapshot, then hands their seqs to the writer,
//! which deletes them inside its next group transaction and acknowledges after the commit, as
//! `Store::complete` does. So every engine has a single writer and the deletes share the
//! writers' fsyncs; the backlog at the end says whether the consumer kept up.
//!
//! Durability: SQLite WAL + `synchronous=FULL` with the store's pragmas and a background
//! PASSIVE checkpointer every 100 ms (the store's default tuning); redb `Durability::Immediate`;
//! fjall `WriteBatch::durability(Some(PersistMode::SyncAll))`.
//!
//! Run: `cargo bench -p switchboard-store --bench engines`. `BENCH_SECS=n` changes the measured
//! length of each case (default 2.5, after 0.3 s of warm-up); `BENCH_FILTER=text` keeps only the
//! cases whose label contains `text`; `BENCH_NO_PROBE=1` skips the fdatasync gauges (1 s before
//! and after the run, 0.25 s before each case); `BENCH_TOMBSTONES=1` runs only
//! [`tombstone_check`]. Prints markdown. Data lives under CARGO_TARGET_TMPDIR, i.e. on the same
//! disk as target/.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const TARGET: &str = "arn:aws:events:us-east-1:123456789012:event-bus/bench";
const RULE: &str = "bench-rule";
const DEDUP_TTL_MS: i64 = 86_400_000;
const MAX_DUE: usize = 512;
const WARMUP: Duration = Duration::from_millis(300);

/// One event as the pipeline hands it to the store.
struct Ev {
    id: String,
    dedup_key: String,
    received_at_ms: i64,
    /// The ~1 KB envelope; the delivery payload is the same text (no input transformer).
    envelope: String,
}

/// A due delivery as a worker sees it.
struct Due {
    seq: u64,
    payload_len: usize,
}

/// The writer side of one engine: one durable transaction per call.
trait Writer {
    /// Deletes the completed deliveries, then ingests `events`, in one durable transaction.
    fn commit_group(&mut self, completes: &[u64], events: &[Ev]) -> BoxResult<()>;
    /// A read handle for the consumer thread.
    fn reader(&self) -> BoxResult<Box<dyn Reader>>;
    /// Row counts (events, deliveries) for the sanity check after a case.
    fn counts(&self) -> BoxResult<(u64, u64)>;
}

/// The consumer side: snapshot reads only.
trait Reader: Send {
    fn due(&mut self, now_ms: i64, limit: usize) -> BoxResult<Vec<Due>>;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Key encoding for the KV engines. Big-endian integers keep byte order == numeric order.

fn event_time_key(received_at_ms: i64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&(received_at_ms as u64).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn dedup_value(event_id: &str, expires_at_ms: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + event_id.len());
    v.extend_from_slice(&(expires_at_ms as u64).to_be_bytes());
    v.extend_from_slice(event_id.as_bytes());
    v
}

fn dedup_expiry_key(expires_at_ms: i64, key: &str) -> Vec<u8> {
    event_time_key(expires_at_ms, key)
}

/// `(target, next_attempt_at, seq)`; the target is NUL-terminated so one target's range never
/// runs into another's.
fn due_key(target: &str, next_attempt_at_ms: i64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(target.len() + 17);
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(&(next_attempt_at_ms as u64).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn due_range(target: &str, now_ms: i64) -> (Vec<u8>, Vec<u8>) {
    (due_key(target, 0, 0), due_key(target, now_ms, u64::MAX))
}

/// Delivery row: next_attempt_at (8) | attempts (4) | enqueued_at (8) | target len (1) |
/// target | rule len (1) | rule | event id len (1) | event id | payload.
fn delivery_value(ev: &Ev) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + TARGET.len() + RULE.len() + ev.envelope.len());
    v.extend_from_slice(&(ev.received_at_ms as u64).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&(ev.received_at_ms as u64).to_be_bytes());
    for s in [TARGET, RULE, ev.id.as_str()] {
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(ev.envelope.as_bytes());
    v
}

/// The due key a delivery row is indexed under.
fn due_key_of(seq: u64, row: &[u8]) -> BoxResult<Vec<u8>> {
    let next = row
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or("short delivery row")?;
    let tlen = *row.get(20).ok_or("short delivery row")? as usize;
    let target = row.get(21..21 + tlen).ok_or("short delivery row")?;
    let target = std::str::from_utf8(target)?;
    Ok(due_key(target, u64::from_be_bytes(next) as i64, seq))
}

fn seq_of_due_key(key: &[u8]) -> BoxResult<u64> {
    let tail = key
        .len()
        .checked_sub(8)
        .and_then(|at| key.get(at..))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or("short due key")?;
    Ok(u64::from_be_bytes(tail))
}

// ---------------------------------------------------------------------------------------------
// SQLite: the store's DDL (the tables ingest touches), pragmas and statements.

mod sqlite_engine {
    use super::*;
    use rusqlite::{Connection, params};

    // The store's own schema, so this bench cannot drift from what the store writes.
    // The version 1 layout (events, dedup and deliveries all in SQLite) that this comparison
    // was made for; version 2 keeps events and dedup keys in the journal.
    const DDL: &str = switchboard_store::SCHEMA_DDL_V1;

    /// `schema::open_connection` + `configure_writer` with `StoreTuning::default()`.
    fn open(path: &Path, writer: bool) -> BoxResult<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(5_000))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("journal_mode={mode}").into());
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.pragma_update(None, "foreign_keys", false)?;
        conn.set_prepared_statement_cache_capacity(64);
        if writer {
            conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
            conn.pragma_update(None, "cache_size", -16 * 1024)?;
            conn.pragma_update(None, "temp_store", "MEMORY")?;
        }
        Ok(conn)
    }

    pub struct Sqlite {
        conn: Connection,
        path: std::path::PathBuf,
        commits: Arc<AtomicU64>,
        stop_ckpt: Option<mpsc::Sender<()>>,
        ckpt: Option<std::thread::JoinHandle<()>>,
    }

    impl Sqlite {
        pub fn open(dir: &Path) -> BoxResult<Self> {
            let path = dir.join("switchboard.db");
            let conn = open(&path, true)?;
            conn.execute_batch(DDL)?;
            let commits = Arc::new(AtomicU64::new(0));
            // The store's default: PASSIVE checkpoints every 100 ms on their own connection.
            let ck_conn = open(&path, false)?;
            let (stop_ckpt, stop_rx) = mpsc::channel::<()>();
            let ck_commits = commits.clone();
            let ckpt = std::thread::spawn(move || {
                let mut last = ck_commits.load(Ordering::Relaxed);
                loop {
                    match stop_rx.recv_timeout(Duration::from_millis(100)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = ck_commits.load(Ordering::Relaxed);
                    if now == last {
                        continue;
                    }
                    last = now;
                    if let Err(e) = ck_conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        eprintln!("checkpoint failed: {e}");
                    }
                }
            });
            Ok(Sqlite {
                conn,
                path,
                commits,
                stop_ckpt: Some(stop_ckpt),
                ckpt: Some(ckpt),
            })
        }

        fn ingest(&self, ev: &Ev) -> BoxResult<()> {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT event_id, expires_at_ms FROM dedup WHERE key = ?1")?;
            let mut rows = stmt.query([&ev.dedup_key])?;
            if let Some(row) = rows.next()? {
                let expires: i64 = row.get(1)?;
                if expires > ev.received_at_ms {
                    return Err("unexpected duplicate".into());
                }
            }
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO events(id, source, received_at_ms, envelope)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![ev.id, "bench", ev.received_at_ms, ev.envelope])?;
            if inserted == 0 {
                return Err("unexpected duplicate id".into());
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO dedup(key, event_id, expires_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET event_id = excluded.event_id,
                                                    expires_at_ms = excluded.expires_at_ms",
                )?
                .execute(params![
                    ev.dedup_key,
                    ev.id,
                    ev.received_at_ms + DEDUP_TTL_MS
                ])?;
            self.conn
                .prepare_cached(
                    "INSERT INTO deliveries(event_id, target, rule, payload, attempts,
                                            enqueued_at_ms, next_attempt_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                )?
                .execute(params![ev.id, TARGET, RULE, ev.envelope, ev.received_at_ms])?;
            Ok(())
        }

        /// Each command in its own savepoint, exactly as `writer::exec_in_savepoint`.
        fn in_savepoint(&self, f: impl FnOnce() -> BoxResult<()>) -> BoxResult<()> {
            self.conn.prepare_cached("SAVEPOINT cmd")?.execute([])?;
            f()?;
            self.conn.prepare_cached("RELEASE cmd")?.execute([])?;
            Ok(())
        }
    }

    impl Writer for Sqlite {
        fn commit_group(&mut self, completes: &[u64], events: &[Ev]) -> BoxResult<()> {
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            if !completes.is_empty() {
                self.in_savepoint(|| {
                    let mut stmt = self
                        .conn
                        .prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?;
                    for &seq in completes {
                        stmt.execute([seq as i64])?;
                    }
                    Ok(())
                })?;
            }
            for ev in events {
                self.in_savepoint(|| self.ingest(ev))?;
            }
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        fn reader(&self) -> BoxResult<Box<dyn Reader>> {
            let conn = open(&self.path, false)?;
            conn.pragma_update(None, "query_only", true)?;
            Ok(Box::new(SqliteReader { conn }))
        }

        fn counts(&self) -> BoxResult<(u64, u64)> {
            let e: i64 = self
                .conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            let d: i64 = self
                .conn
                .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))?;
            Ok((e as u64, d as u64))
        }
    }

    impl Drop for Sqlite {
        fn drop(&mut self) {
            self.stop_ckpt.take();
            if let Some(h) = self.ckpt.take() {
                let _ = h.join();
            }
        }
    }

    struct SqliteReader {
        conn: Connection,
    }

    impl Reader for SqliteReader {
        /// `reader::due`, same SQL, same columns.
        fn due(&mut self, now_ms: i64, limit: usize) -> BoxResult<Vec<Due>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, event_id, target, rule, payload, attempts, enqueued_at_ms,
                        next_attempt_at_ms
                 FROM deliveries WHERE target = ?1 AND next_attempt_at_ms <= ?2
                 ORDER BY next_attempt_at_ms, seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![TARGET, now_ms, limit as i64], |r| {
                let seq: i64 = r.get(0)?;
                let _event_id: String = r.get(1)?;
                let _target: String = r.get(2)?;
                let _rule: String = r.get(3)?;
                let payload: String = r.get(4)?;
                Ok(Due {
                    seq: seq as u64,
                    payload_len: payload.len(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// redb: one table per SQLite table or index.

mod redb_engine {
    use super::*;
    use redb::{
        Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
        TableDefinition,
    };

    type Tbl = TableDefinition<'static, &'static [u8], &'static [u8]>;
    const EVENTS: Tbl = TableDefinition::new("events");
    const EVENTS_RECEIVED: Tbl = TableDefinition::new("events_received");
    const DEDUP: Tbl = TableDefinition::new("dedup");
    const DEDUP_EXPIRES: Tbl = TableDefinition::new("dedup_expires");
    const DELIVERIES: Tbl = TableDefinition::new("deliveries");
    const DUE: Tbl = TableDefinition::new("deliveries_due");
    const ALL: [Tbl; 6] = [
        EVENTS,
        EVENTS_RECEIVED,
        DEDUP,
        DEDUP_EXPIRES,
        DELIVERIES,
        DUE,
    ];

    pub struct Redb {
        db: Arc<Database>,
        next_seq: u64,
    }

    impl Redb {
        pub fn open(dir: &Path) -> BoxResult<Self> {
            let db = Database::create(dir.join("switchboard.redb"))?;
            let tx = db.begin_write()?;
            for t in ALL {
                tx.open_table(t)?;
            }
            tx.commit()?;
            Ok(Redb {
                db: Arc::new(db),
                next_seq: 1,
            })
        }
    }

    impl Writer for Redb {
        fn commit_group(&mut self, completes: &[u64], events: &[Ev]) -> BoxResult<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                let mut events_t = tx.open_table(EVENTS)?;
                let mut received_t = tx.open_table(EVENTS_RECEIVED)?;
                let mut dedup_t = tx.open_table(DEDUP)?;
                let mut expires_t = tx.open_table(DEDUP_EXPIRES)?;
                let mut deliv_t = tx.open_table(DELIVERIES)?;
                let mut due_t = tx.open_table(DUE)?;
                for &seq in completes {
                    let key = seq.to_be_bytes();
                    let due = match deliv_t.remove(key.as_slice())? {
                        Some(row) => due_key_of(seq, row.value())?,
                        None => continue,
                    };
                    due_t.remove(due.as_slice())?;
                }
                for ev in events {
                    if let Some(v) = dedup_t.get(ev.dedup_key.as_bytes())? {
                        let exp = v.value().get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
                        if exp.is_some_and(|e| u64::from_be_bytes(e) as i64 > ev.received_at_ms) {
                            return Err("unexpected duplicate".into());
                        }
                    }
                    if events_t
                        .insert(ev.id.as_bytes(), ev.envelope.as_bytes())?
                        .is_some()
                    {
                        return Err("unexpected duplicate id".into());
                    }
                    received_t.insert(
                        event_time_key(ev.received_at_ms, &ev.id).as_slice(),
                        &[][..],
                    )?;
                    let expires = ev.received_at_ms + DEDUP_TTL_MS;
                    dedup_t.insert(
                        ev.dedup_key.as_bytes(),
                        dedup_value(&ev.id, expires).as_slice(),
                    )?;
                    expires_t
                        .insert(dedup_expiry_key(expires, &ev.dedup_key).as_slice(), &[][..])?;
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    deliv_t.insert(seq.to_be_bytes().as_slice(), delivery_value(ev).as_slice())?;
                    due_t.insert(due_key(TARGET, ev.received_at_ms, seq).as_slice(), &[][..])?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn reader(&self) -> BoxResult<Box<dyn Reader>> {
            Ok(Box::new(RedbReader {
                db: self.db.clone(),
            }))
        }

        fn counts(&self) -> BoxResult<(u64, u64)> {
            let rx = self.db.begin_read()?;
            Ok((
                rx.open_table(EVENTS)?.len()?,
                rx.open_table(DELIVERIES)?.len()?,
            ))
        }
    }

    struct RedbReader {
        db: Arc<Database>,
    }

    impl Reader for RedbReader {
        fn due(&mut self, now_ms: i64, limit: usize) -> BoxResult<Vec<Due>> {
            let rx = self.db.begin_read()?;
            let due_t = rx.open_table(DUE)?;
            let deliv_t = rx.open_table(DELIVERIES)?;
            let (lo, hi) = due_range(TARGET, now_ms);
            let mut out = Vec::new();
            for item in due_t.range(lo.as_slice()..=hi.as_slice())?.take(limit) {
                let (k, _) = item?;
                let seq = seq_of_due_key(k.value())?;
                let row = deliv_t
                    .get(seq.to_be_bytes().as_slice())?
                    .ok_or("due entry without delivery")?;
                out.push(Due {
                    seq,
                    payload_len: row.value().len(),
                });
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fjall: one keyspace per SQLite table or index, one WriteBatch per group.

mod fjall_engine {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    #[derive(Clone)]
    struct Spaces {
        events: Keyspace,
        received: Keyspace,
        dedup: Keyspace,
        expires: Keyspace,
        deliveries: Keyspace,
        due: Keyspace,
    }

    pub struct Fjall {
        db: Database,
        ks: Spaces,
        next_seq: u64,
    }

    impl Fjall {
        pub fn open(dir: &Path) -> BoxResult<Self> {
            let db = Database::builder(dir.join("fjall")).open()?;
            let open = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
            let ks = Spaces {
                events: open("events")?,
                received: open("events_received")?,
                dedup: open("dedup")?,
                expires: open("dedup_expires")?,
                deliveries: open("deliveries")?,
                due: open("deliveries_due")?,
            };
            Ok(Fjall {
                db,
                ks,
                next_seq: 1,
            })
        }
    }

    impl Writer for Fjall {
        fn commit_group(&mut self, completes: &[u64], events: &[Ev]) -> BoxResult<()> {
            let ks = &self.ks;
            let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
            for &seq in completes {
                let key = seq.to_be_bytes();
                let Some(row) = ks.deliveries.get(key)? else {
                    continue;
                };
                batch.remove(&ks.due, due_key_of(seq, &row)?);
                batch.remove(&ks.deliveries, key.to_vec());
            }
            for ev in events {
                // Single writer, so a plain read is as good as a transactional one here.
                if let Some(v) = ks.dedup.get(ev.dedup_key.as_bytes())? {
                    let exp = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
                    if exp.is_some_and(|e| u64::from_be_bytes(e) as i64 > ev.received_at_ms) {
                        return Err("unexpected duplicate".into());
                    }
                }
                batch.insert(&ks.events, ev.id.as_bytes(), ev.envelope.as_bytes());
                batch.insert(&ks.received, event_time_key(ev.received_at_ms, &ev.id), []);
                let expires = ev.received_at_ms + DEDUP_TTL_MS;
                batch.insert(
                    &ks.dedup,
                    ev.dedup_key.as_bytes(),
                    dedup_value(&ev.id, expires),
                );
                batch.insert(&ks.expires, dedup_expiry_key(expires, &ev.dedup_key), []);
                let seq = self.next_seq;
                self.next_seq += 1;
                batch.insert(&ks.deliveries, seq.to_be_bytes(), delivery_value(ev));
                batch.insert(&ks.due, due_key(TARGET, ev.received_at_ms, seq), []);
            }
            batch.commit()?;
            Ok(())
        }

        fn reader(&self) -> BoxResult<Box<dyn Reader>> {
            Ok(Box::new(FjallReader {
                ks: self.ks.clone(),
            }))
        }

        fn counts(&self) -> BoxResult<(u64, u64)> {
            Ok((
                self.ks.events.len()? as u64,
                self.ks.deliveries.len()? as u64,
            ))
        }
    }

    struct FjallReader {
        ks: Spaces,
    }

    impl Reader for FjallReader {
        fn due(&mut self, now_ms: i64, limit: usize) -> BoxResult<Vec<Due>> {
            let (lo, hi) = due_range(TARGET, now_ms);
            let mut out = Vec::new();
            for guard in self.ks.due.range(lo..=hi).take(limit) {
                let seq = seq_of_due_key(&guard.key()?)?;
                // Not the same snapshot as the range: a concurrent delete could remove the
                // row in between; then the worker just skips it.
                if let Some(row) = self.ks.deliveries.get(seq.to_be_bytes())? {
                    out.push(Due {
                        seq,
                        payload_len: row.len(),
                    });
                }
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.

#[derive(Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Sqlite,
    Redb,
    Fjall,
}

impl EngineKind {
    fn label(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "SQLite WAL FULL",
            EngineKind::Redb => "redb Immediate",
            EngineKind::Fjall => "fjall SyncAll",
        }
    }

    fn open(self, dir: &Path) -> BoxResult<Box<dyn Writer>> {
        Ok(match self {
            EngineKind::Sqlite => Box::new(sqlite_engine::Sqlite::open(dir)?),
            EngineKind::Redb => Box::new(redb_engine::Redb::open(dir)?),
            EngineKind::Fjall => Box::new(fjall_engine::Fjall::open(dir)?),
        })
    }
}

struct Case {
    engine: EngineKind,
    group: usize,
    consumer: bool,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} | {} | {}",
            self.engine.label(),
            if self.consumer {
                "append + consumer"
            } else {
                "append only"
            },
            self.group
        )
    }
}

struct Outcome {
    events: u64,
    secs: f64,
    commits: u64,
    lat_us: Vec<u32>,
    deleted: u64,
    inserted: u64,
    backlog: u64,
    /// Apparent size (sum of file lengths) and allocated size (st_blocks) of the store dir.
    bytes_at_end: (u64, u64),
    /// Latency of the consumer's `due(512)` reads.
    due_us: Vec<u32>,
}

/// xorshift text: every envelope differs, so no layer can compress or dedup it.
struct Pad(u64);

impl Pad {
    fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::with_capacity(len);
        while s.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let mut x = self.0;
            for _ in 0..10 {
                s.push(ALPHABET[(x & 63) as usize] as char);
                x >>= 6;
            }
        }
        s.truncate(len);
        s
    }
}

fn make_event(n: u64, pad: &mut Pad) -> Ev {
    let id = format!("{:08x}-0000-4000-8000-{n:012x}", 0x5b0a_u32);
    let received_at_ms = now_ms();
    let envelope = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"v2.routing.queues.conversations","source":"aws.partner/genesys.com/bench","time":"2026-11-23T12:00:00Z","detail":{{"pad":"{}"}}}}"#,
        pad.text(860)
    );
    Ev {
        dedup_key: format!("k-{id}"),
        id,
        received_at_ms,
        envelope,
    }
}

/// (apparent, allocated) bytes under `p`: engines preallocate journals, so both matter.
fn dir_bytes(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return (0, 0);
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => (m.len(), m.blocks() * 512),
            Err(_) => (0, 0),
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

type CompleteReq = (Vec<u64>, mpsc::SyncSender<()>);

fn run_case(case: &Case, secs: f64) -> BoxResult<Outcome> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root)?;
    let dir = tempfile::tempdir_in(root)?;
    let mut w = case.engine.open(dir.path())?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<CompleteReq>(1);
    let consumer = if case.consumer {
        let mut reader = w.reader()?;
        let stop = stop.clone();
        Some(std::thread::spawn(move || -> BoxResult<Vec<u32>> {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let due = reader.due(now_ms(), MAX_DUE)?;
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if due.iter().any(|d| d.payload_len < 1000) {
                    return Err("short payload".into());
                }
                if due.is_empty() {
                    // A worker polls (or waits on a notify); 200 µs keeps the poll cheap.
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                if tx
                    .send((due.iter().map(|d| d.seq).collect(), ack_tx))
                    .is_err()
                {
                    break;
                }
                // The writer drops the ack sender unanswered when it stops.
                if ack_rx.recv().is_err() {
                    break;
                }
            }
            Ok(lat)
        }))
    } else {
        drop(tx);
        None
    };

    let mut pad = Pad(0x9e37_79b9_7f4a_7c15);
    let mut n = 0u64;
    let mut inserted = 0u64;
    let mut deleted = 0u64;
    let mut lat_us = Vec::new();
    let mut measured_events = 0u64;
    let mut measured_commits = 0u64;
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut group = Vec::with_capacity(case.group);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        group.clear();
        for _ in 0..case.group {
            n += 1;
            group.push(make_event(n, &mut pad));
        }
        let pending = rx.try_recv().ok();
        let completes: &[u64] = pending.as_ref().map_or(&[], |(s, _)| s.as_slice());
        let t0 = Instant::now();
        w.commit_group(completes, &group)?;
        let took = t0.elapsed();
        if let Some((seqs, ack)) = pending {
            deleted += seqs.len() as u64;
            let _ = ack.send(());
        }
        inserted += group.len() as u64;
        if t0 >= measure_from {
            measured_events += group.len() as u64;
            measured_commits += 1;
            lat_us.push(took.as_micros().min(u32::MAX as u128) as u32);
        }
    }
    let measured_secs = end.saturating_duration_since(measure_from).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Unblocks a consumer waiting to send or waiting for its ack.
    drop(rx);
    let mut due_us = match consumer {
        Some(h) => h.join().map_err(|_| "consumer panicked")??,
        None => Vec::new(),
    };
    due_us.sort_unstable();
    let bytes_at_end = dir_bytes(dir.path());
    let (events_rows, delivery_rows) = w.counts()?;
    if events_rows != inserted || delivery_rows != inserted - deleted {
        return Err(format!(
            "row counts do not match: events {events_rows} (want {inserted}), deliveries \
             {delivery_rows} (want {})",
            inserted - deleted
        )
        .into());
    }
    drop(w);
    lat_us.sort_unstable();
    Ok(Outcome {
        events: measured_events,
        secs: measured_secs,
        commits: measured_commits,
        lat_us,
        deleted,
        inserted,
        backlog: inserted - deleted,
        bytes_at_end,
        due_us,
    })
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> BoxResult<()> {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.5);
    let mut cases = Vec::new();
    for consumer in [false, true] {
        for group in [1, 64, 512] {
            for engine in [EngineKind::Sqlite, EngineKind::Redb, EngineKind::Fjall] {
                cases.push(Case {
                    engine,
                    group,
                    consumer,
                });
            }
        }
    }
    if let Ok(filter) = std::env::var("BENCH_FILTER") {
        cases.retain(|c| c.label().contains(filter.as_str()));
    }
    if std::env::var("BENCH_TOMBSTONES").is_ok() {
        return tombstone_check();
    }
    let probe = std::env::var("BENCH_NO_PROBE").is_err();
    if probe {
        fsync_probe("before")?;
    }
    println!(
        "| engine | case | group | disk p50 / p99 ms before | events/s | commits/s | txn p50 ms | txn p99 ms | txn max ms | due() p50 ms | due() p99 ms | deleted / inserted | backlog at end | files at end (apparent / allocated) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in &cases {
        // The disk's state flips between ~0.2 ms and ~4 ms flushes as other agents write, so
        // each row carries its own short gauge.
        let disk = if probe {
            let lat = disk_probe(Duration::from_millis(250))?;
            format!("{:.2} / {:.2}", pct(&lat, 0.5), pct(&lat, 0.99))
        } else {
            "-".into()
        };
        let o = run_case(case, secs)?;
        let consumer_col = |v: String| if case.consumer { v } else { "-".into() };
        println!(
            "| {} | {disk} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1} / {:.1} MB |",
            case.label(),
            o.events as f64 / o.secs,
            o.commits as f64 / o.secs,
            pct(&o.lat_us, 0.50),
            pct(&o.lat_us, 0.99),
            o.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0,
            consumer_col(format!("{:.2}", pct(&o.due_us, 0.50))),
            consumer_col(format!("{:.2}", pct(&o.due_us, 0.99))),
            consumer_col(format!("{} / {}", o.deleted, o.inserted)),
            consumer_col(o.backlog.to_string()),
            o.bytes_at_end.0 as f64 / 1e6,
            o.bytes_at_end.1 as f64 / 1e6,
        );
    }
    if probe {
        fsync_probe("after")?;
    }
    Ok(())
}

/// 32 KiB appends + fdatasync on the same disk for `d`; sorted latencies in µs. Other
/// agents' writeback shows up here first.
fn disk_probe(d: Duration) -> BoxResult<Vec<u32>> {
    use std::io::Write;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root)?;
    let dir = tempfile::tempdir_in(root)?;
    let mut f = std::fs::File::create(dir.path().join("probe"))?;
    let buf = vec![7u8; 32 * 1024];
    let mut lat = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t0 = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    lat.sort_unstable();
    Ok(lat)
}

/// Noise gauge, as in `benches/ingest.rs`: 1 s of [`disk_probe`].
fn fsync_probe(when: &str) -> BoxResult<()> {
    let lat = disk_probe(Duration::from_secs(1))?;
    println!(
        "fsync probe ({when}): 32 KiB append + fdatasync: {} ops/s, p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    Ok(())
}

/// `BENCH_TOMBSTONES=1`: how `due(512)` slows down when the head of the due range has been
/// deleted. Insert `n` deliveries (groups of 512, no consumer), delete all but the newest 512
/// through the writer, then time 50 `due(512)` reads. No fsync in the timed part.
fn tombstone_check() -> BoxResult<()> {
    println!("| engine | deleted head | due(512) p50 ms | due(512) max ms | rows returned |");
    println!("|---|---:|---:|---:|---:|");
    for n in [1_024u64, 10_240, 51_200] {
        for engine in [EngineKind::Sqlite, EngineKind::Redb, EngineKind::Fjall] {
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
            std::fs::create_dir_all(root)?;
            let dir = tempfile::tempdir_in(root)?;
            let mut w = engine.open(dir.path())?;
            let mut pad = Pad(0x2545_f491_4f6c_dd1d);
            let mut next = 0u64;
            while next < n {
                let group: Vec<Ev> = (0..512)
                    .map(|_| {
                        next += 1;
                        make_event(next, &mut pad)
                    })
                    .collect();
                w.commit_group(&[], &group)?;
            }
            let doomed: Vec<u64> = (1..=n - 512).collect();
            for chunk in doomed.chunks(512) {
                w.commit_group(chunk, &[])?;
            }
            let mut reader = w.reader()?;
            let mut lat = Vec::new();
            let mut rows = 0;
            for _ in 0..50 {
                let t0 = Instant::now();
                rows = reader.due(now_ms(), MAX_DUE)?.len();
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            lat.sort_unstable();
            println!(
                "| {} | {} | {:.2} | {:.2} | {rows} |",
                engine.label(),
                n - 512,
                pct(&lat, 0.5),
                lat.last().copied().unwrap_or(0) as f64 / 1000.0
            );
        }
    }
    Ok(())
}
