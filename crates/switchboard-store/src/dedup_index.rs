//! The dedup index: which keys were claimed, by which journal record, until when.
//!
//! A small log-structured index, built for keys that are written once and expire together:
//! - the writer thread inserts into an in-memory *memtable* (the journal record that carries the
//!   claim is the write-ahead log, so an insert costs no I/O);
//! - a full or old memtable is *frozen* and written by the `sb-store-dedup` thread as an
//!   immutable, sorted *run* file with a Bloom filter;
//! - runs of one level are merged into one run of the next level (expired entries dropped), and
//!   a run whose every entry has expired is deleted whole: expiry never rewrites a live page.
//!
//! A lookup checks the memtable, the frozen memtables and then every run whose Bloom filter
//! admits the key; the entry with the highest seq is the current claim (a key is only claimed
//! again after its previous claim expired, so the newest claim decides).
//!
//! Recovery: every run records the journal range it covers (`covers_to`, exclusive). On open,
//! records from the highest `covers_to` on are replayed from the journal into the memtable.
//! `docs/storage.md` has the run format.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// A dedup key or envelope id, hashed: SHA-256 truncated to 128 bits, domain-separated.
pub(crate) type KeyHash = [u8; 16];

const RUN_MAGIC: &[u8; 8] = b"SBDDUP01";
const RUN_VERSION: u32 = 1;
const RUN_HEADER: usize = 64;
const ENTRY_BYTES: usize = 48;
/// Entries per sparse-index block: one `pread` of 3 KiB finds an entry after a Bloom hit.
const BLOCK: usize = 64;
const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_PROBES: u64 = 7;
/// Runs of one level merged into one of the next.
const MERGE_FANOUT: usize = 4;

/// Hash of a dedup key.
pub(crate) fn hash_key(key: &str) -> KeyHash {
    hash_with(b"k\0", key)
}

/// Hash of an envelope id (its own claim, separate from any dedup key of the same text).
pub(crate) fn hash_identity(id: &str) -> KeyHash {
    hash_with(b"i\0", id)
}

fn hash_with(domain: &[u8], s: &str) -> KeyHash {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(s.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A claim: the journal record that made it, when it ends, and the record's id when that id is
/// a canonical UUID (otherwise zero: the id is read from the journal record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) expires_at_ms: i64,
    pub(crate) id: [u8; 16],
}

impl Entry {
    pub(crate) fn new(seq: u64, expires_at_ms: i64, event_id: &str) -> Entry {
        Entry {
            seq,
            expires_at_ms,
            id: compact_id(event_id).unwrap_or([0; 16]),
        }
    }

    /// The event id, when it is stored in the entry.
    pub(crate) fn event_id(&self) -> Option<String> {
        (self.id != [0; 16]).then(|| uuid::Uuid::from_bytes(self.id).to_string())
    }
}

/// The 16 bytes of `id` if it is a UUID in the canonical form `Uuid::to_string` prints, so that
/// [`Entry::event_id`] gives back exactly the same text.
fn compact_id(id: &str) -> Option<[u8; 16]> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    if u.is_nil() {
        return None;
    }
    let mut buf = uuid::Uuid::encode_buffer();
    (u.hyphenated().encode_lower(&mut buf) == id).then(|| *u.as_bytes())
}

fn as_u128(h: &KeyHash) -> u128 {
    u128::from_be_bytes(*h)
}

/// Hashes are already uniform: hash the first 8 bytes, no SipHash.
#[derive(Default, Clone, Copy)]
pub(crate) struct PassThroughHasher(u64);

impl std::hash::Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Map = HashMap<u128, Entry, std::hash::BuildHasherDefault<PassThroughHasher>>;

/// A memtable that no longer takes inserts, waiting for (or in) its flush.
#[derive(Debug)]
struct Frozen {
    map: Map,
    covers_from: u64,
    covers_to: u64,
}

/// An immutable run file and what lookups keep of it in memory.
#[derive(Debug)]
struct Run {
    path: PathBuf,
    file: File,
    level: u32,
    count: usize,
    covers_from: u64,
    covers_to: u64,
    max_expires_ms: i64,
    bloom: Vec<u64>,
    /// First hash of every block of [`BLOCK`] entries.
    sparse: Vec<u128>,
}

fn bloom_positions(h: u128, bits: u64) -> impl Iterator<Item = u64> {
    let h1 = (h >> 64) as u64;
    let h2 = (h as u64) | 1;
    (0..BLOOM_PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

impl Run {
    fn may_contain(&self, h: u128) -> bool {
        let bits = (self.bloom.len() as u64) * 64;
        if bits == 0 {
            return false;
        }
        bloom_positions(h, bits).all(|p| self.bloom[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    fn lookup(&self, h: u128) -> Result<Option<Entry>, StoreError> {
        if !self.may_contain(h) {
            return Ok(None);
        }
        let block = match self.sparse.partition_point(|&first| first <= h) {
            0 => return Ok(None),
            i => i - 1,
        };
        let start = block * BLOCK;
        let n = BLOCK.min(self.count - start);
        let mut buf = vec![0u8; n * ENTRY_BYTES];
        self.file
            .read_exact_at(&mut buf, (RUN_HEADER + start * ENTRY_BYTES) as u64)?;
        let found = buf
            .chunks_exact(ENTRY_BYTES)
            .map(decode_entry)
            .find(|(k, _)| *k == h)
            .map(|(_, e)| e);
        Ok(found)
    }
}

fn encode_entry(out: &mut Vec<u8>, h: u128, e: &Entry) {
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&e.seq.to_le_bytes());
    out.extend_from_slice(&e.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&e.id);
}

fn decode_entry(b: &[u8]) -> (u128, Entry) {
    let mut h = [0u8; 16];
    h.copy_from_slice(&b[0..16]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[16..24]);
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&b[24..32]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[32..48]);
    (
        u128::from_be_bytes(h),
        Entry {
            seq: u64::from_le_bytes(seq),
            expires_at_ms: i64::from_le_bytes(exp),
            id,
        },
    )
}

fn run_name(from: u64, to: u64, level: u32) -> String {
    format!("{from:020}-{to:020}-{level}.ddi")
}

/// Writes a sorted run file atomically (tmp, fsync, rename, fsync dir) and opens it.
fn write_run(
    dir: &Path,
    entries: &mut dyn Iterator<Item = (u128, Entry)>,
    count_hint: usize,
    covers_from: u64,
    covers_to: u64,
    level: u32,
) -> Result<Option<Run>, StoreError> {
    let final_path = dir.join(run_name(covers_from, covers_to, level));
    let tmp = dir.join(format!("{}.tmp", run_name(covers_from, covers_to, level)));
    let words = ((count_hint as u64 * BLOOM_BITS_PER_KEY).div_ceil(64)).max(1) as usize;
    let mut bloom = vec![0u64; words];
    let bits = words as u64 * 64;
    let mut sparse = Vec::with_capacity(count_hint / BLOCK + 1);
    let mut max_expires = i64::MIN;
    let mut count = 0usize;
    let mut crc = crc32fast::Hasher::new();
    {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&[0u8; RUN_HEADER])?;
        let mut buf = Vec::with_capacity(ENTRY_BYTES);
        for (h, e) in entries {
            if count.is_multiple_of(BLOCK) {
                sparse.push(h);
            }
            for p in bloom_positions(h, bits) {
                bloom[(p / 64) as usize] |= 1 << (p % 64);
            }
            max_expires = max_expires.max(e.expires_at_ms);
            buf.clear();
            encode_entry(&mut buf, h, &e);
            crc.update(&buf);
            w.write_all(&buf)?;
            count += 1;
        }
        if count == 0 {
            drop(w);
            std::fs::remove_file(&tmp)?;
            return Ok(None);
        }
        for word in &bloom {
            let b = word.to_le_bytes();
            crc.update(&b);
            w.write_all(&b)?;
        }
        w.write_all(&crc.finalize().to_le_bytes())?;
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        let mut header = [0u8; RUN_HEADER];
        header[0..8].copy_from_slice(RUN_MAGIC);
        header[8..12].copy_from_slice(&RUN_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&level.to_le_bytes());
        header[16..24].copy_from_slice(&(count as u64).to_le_bytes());
        header[24..32].copy_from_slice(&covers_from.to_le_bytes());
        header[32..40].copy_from_slice(&covers_to.to_le_bytes());
        header[40..48].copy_from_slice(&max_expires.to_le_bytes());
        header[48..56].copy_from_slice(&(words as u64).to_le_bytes());
        let hcrc = crc32fast::hash(&header[0..56]);
        header[56..60].copy_from_slice(&hcrc.to_le_bytes());
        f.write_all_at(&header, 0)?;
        f.flush()?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &final_path)?;
    File::open(dir)?.sync_all()?;
    Ok(Some(Run {
        file: File::open(&final_path)?,
        path: final_path,
        level,
        count,
        covers_from,
        covers_to,
        max_expires_ms: max_expires,
        bloom,
        sparse,
    }))
}

/// Opens and fully verifies a run file (its checksum covers every entry and the filter).
fn load_run(path: &Path) -> Result<Run, StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("dedup run {}: {why}", path.display()));
    let file = File::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, file.try_clone()?);
    let mut header = [0u8; RUN_HEADER];
    r.read_exact(&mut header)?;
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
    if &header[0..8] != RUN_MAGIC {
        return Err(bad("not a run file"));
    }
    if crc32fast::hash(&header[0..56])
        != u32::from_le_bytes(header[56..60].try_into().unwrap_or([0; 4]))
    {
        return Err(bad("damaged header"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or([0; 4]));
    if version != RUN_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(version),
            supported: i64::from(RUN_VERSION),
        });
    }
    let level = u32::from_le_bytes(header[12..16].try_into().unwrap_or([0; 4]));
    let count = u64_at(16) as usize;
    let (covers_from, covers_to) = (u64_at(24), u64_at(32));
    let max_expires = u64_at(40) as i64;
    let words = u64_at(48) as usize;
    let len = file.metadata()?.len() as usize;
    if RUN_HEADER + count * ENTRY_BYTES + words * 8 + 4 != len {
        return Err(bad("length does not match the header"));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut sparse = Vec::with_capacity(count / BLOCK + 1);
    let mut buf = [0u8; ENTRY_BYTES];
    let mut prev: Option<u128> = None;
    for i in 0..count {
        r.read_exact(&mut buf)?;
        crc.update(&buf);
        let (h, _) = decode_entry(&buf);
        if prev.is_some_and(|p| p >= h) {
            return Err(bad("entries out of order"));
        }
        prev = Some(h);
        if i % BLOCK == 0 {
            sparse.push(h);
        }
    }
    let mut bloom = vec![0u64; words];
    let mut w = [0u8; 8];
    for word in &mut bloom {
        r.read_exact(&mut w)?;
        crc.update(&w);
        *word = u64::from_le_bytes(w);
    }
    let mut c = [0u8; 4];
    r.read_exact(&mut c)?;
    if crc.finalize() != u32::from_le_bytes(c) {
        return Err(bad("checksum mismatch"));
    }
    Ok(Run {
        path: path.to_path_buf(),
        file,
        level,
        count,
        covers_from,
        covers_to,
        max_expires_ms: max_expires,
        bloom,
        sparse,
    })
}

/// Streams a run's entries in hash order (for merges). A read error ends the stream and is
/// kept, so the merge can refuse to publish a short run.
struct RunReader {
    r: BufReader<File>,
    left: usize,
    peeked: Option<(u128, Entry)>,
    err: Option<std::io::Error>,
}

impl RunReader {
    fn open(run: &Run) -> Result<RunReader, StoreError> {
        let mut f = File::open(&run.path)?;
        let mut skip = [0u8; RUN_HEADER];
        f.read_exact(&mut skip)?;
        let mut rr = RunReader {
            r: BufReader::with_capacity(1 << 20, f),
            left: run.count,
            peeked: None,
            err: None,
        };
        rr.advance();
        Ok(rr)
    }

    fn advance(&mut self) {
        self.peeked = None;
        if self.left == 0 || self.err.is_some() {
            return;
        }
        let mut buf = [0u8; ENTRY_BYTES];
        match self.r.read_exact(&mut buf) {
            Ok(()) => {
                self.left -= 1;
                self.peeked = Some(decode_entry(&buf));
            }
            Err(e) => self.err = Some(e),
        }
    }
}

/// State the writer and the `sb-store-dedup` thread share.
#[derive(Debug, Default)]
struct Levels {
    /// Oldest first.
    frozen: Vec<Arc<Frozen>>,
    runs: Vec<Arc<Run>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    levels: RwLock<Levels>,
    /// Size of the writer's active memtable, for diagnostics.
    active_entries: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Levels> {
        self.levels.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Levels> {
        self.levels.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Highest journal seq (exclusive) whose claims are all in runs.
    fn covered(&self) -> u64 {
        self.read()
            .runs
            .iter()
            .map(|r| r.covers_to)
            .max()
            .unwrap_or(0)
    }
}

/// When the writer freezes its memtable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushPolicy {
    pub(crate) max_entries: usize,
    pub(crate) max_age: Duration,
}

/// The writer's handle: owns the memtable; lookups also read what the flusher shares.
pub(crate) struct DedupIndex {
    shared: Arc<Shared>,
    active: Map,
    active_from: u64,
    active_since: Instant,
    policy: FlushPolicy,
    flush_tx: std::sync::mpsc::Sender<FlusherMsg>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

enum FlusherMsg {
    Flush(Arc<Frozen>),
    Expire(i64),
}

impl DedupIndex {
    /// Loads the runs in `dir` and starts the flusher thread. Returns the index and the journal
    /// seq from which claims must be replayed into it ([`insert`](Self::insert)).
    pub(crate) fn open(dir: &Path, policy: FlushPolicy) -> Result<(DedupIndex, u64), StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut runs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A flush or merge that never finished: its inputs are still there.
                std::fs::remove_file(&path)?;
            } else if name.ends_with(".ddi") {
                runs.push(load_run(&path)?);
            }
        }
        // A crash between a merge's rename and the deletion of its inputs leaves both: drop
        // runs whose range a higher-level run already covers.
        let all: Vec<(u64, u64, u32)> = runs
            .iter()
            .map(|r| (r.covers_from, r.covers_to, r.level))
            .collect();
        let mut kept = Vec::new();
        for r in runs {
            let superseded = all
                .iter()
                .any(|&(f, t, l)| l > r.level && f <= r.covers_from && r.covers_to <= t);
            if superseded {
                std::fs::remove_file(&r.path)?;
            } else {
                kept.push(Arc::new(r));
            }
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            levels: RwLock::new(Levels {
                frozen: Vec::new(),
                runs: kept,
            }),
            active_entries: Default::default(),
        });
        let replay_from = shared.covered();
        let (flush_tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("sb-store-dedup".into())
            .spawn(move || run_flusher(s, rx))?;
        Ok((
            DedupIndex {
                shared,
                active: Map::default(),
                active_from: replay_from,
                active_since: Instant::now(),
                policy,
                flush_tx,
                flusher: Some(flusher),
            },
            replay_from,
        ))
    }

    /// The newest claim of `h`, expired or not.
    pub(crate) fn lookup(&self, h: &KeyHash) -> Result<Option<Entry>, StoreError> {
        let k = as_u128(h);
        if let Some(e) = self.active.get(&k) {
            return Ok(Some(*e));
        }
        let levels = self.shared.read();
        for f in levels.frozen.iter().rev() {
            if let Some(e) = f.map.get(&k) {
                return Ok(Some(*e));
            }
        }
        let mut best: Option<Entry> = None;
        for r in &levels.runs {
            if let Some(e) = r.lookup(k)?
                && best.is_none_or(|b| e.seq > b.seq)
            {
                best = Some(e);
            }
        }
        Ok(best)
    }

    /// Records a claim (the writer calls this in journal order).
    pub(crate) fn insert(&mut self, h: &KeyHash, e: Entry) {
        self.active.insert(as_u128(h), e);
        self.shared
            .active_entries
            .store(self.active.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Hands the memtable to the flusher when it is full or old. `next_seq` is the journal seq
    /// the next record will get: everything below it that carries a claim is in the memtable.
    pub(crate) fn maybe_freeze(&mut self, next_seq: u64) {
        let due = self.active.len() >= self.policy.max_entries
            || (!self.active.is_empty() && self.active_since.elapsed() >= self.policy.max_age);
        if due {
            self.freeze(next_seq);
        }
    }

    fn freeze(&mut self, next_seq: u64) {
        let frozen = Arc::new(Frozen {
            map: std::mem::take(&mut self.active),
            covers_from: self.active_from,
            covers_to: next_seq,
        });
        self.active_from = next_seq;
        self.active_since = Instant::now();
        self.shared
            .active_entries
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.shared.write().frozen.push(frozen.clone());
        let _ = self.flush_tx.send(FlusherMsg::Flush(frozen));
    }

    /// Deletes runs whose every claim has ended by `now_ms` and merges what that allows.
    pub(crate) fn request_expiry(&self, now_ms: i64) {
        let _ = self.flush_tx.send(FlusherMsg::Expire(now_ms));
    }

    /// A cheap handle for [`IndexStats`] outside the writer.
    pub(crate) fn stats_handle(&self) -> IndexStats {
        IndexStats(self.shared.clone())
    }

    /// Flushes the memtable and stops the flusher after it wrote everything queued.
    pub(crate) fn close(mut self, next_seq: u64) {
        if !self.active.is_empty() {
            self.freeze(next_seq);
        }
        drop(self.flush_tx);
        if let Some(t) = self.flusher.take()
            && t.join().is_err()
        {
            tracing::error!("dedup flusher thread panicked");
        }
    }
}

/// Read-only view for retention and diagnostics.
#[derive(Debug, Clone)]
pub(crate) struct IndexStats(Arc<Shared>);

impl IndexStats {
    /// Journal seq (exclusive) below which every claim is in a run file: journal segments
    /// below it are not needed to rebuild the index.
    pub(crate) fn covered(&self) -> u64 {
        self.0.covered()
    }

    /// Claims held: in runs (including ended ones not merged away yet) and in memtables.
    pub(crate) fn entries(&self) -> u64 {
        let l = self.0.read();
        let runs: usize = l.runs.iter().map(|r| r.count).sum();
        let frozen: usize = l.frozen.iter().map(|f| f.map.len()).sum();
        let active = self
            .0
            .active_entries
            .load(std::sync::atomic::Ordering::Relaxed);
        (runs + frozen + active) as u64
    }
}

fn run_flusher(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<FlusherMsg>) {
    let mut last_expiry = i64::MIN;
    while let Ok(msg) = rx.recv() {
        match msg {
            FlusherMsg::Flush(frozen) => {
                let mut backoff = Duration::from_millis(100);
                loop {
                    match flush_one(&shared, &frozen) {
                        Ok(()) => break,
                        Err(e) => {
                            // The claims stay in memory (lookups still see them) and the journal
                            // is kept until they are on disk, so retrying loses nothing.
                            tracing::error!(error = %e, "writing a dedup run failed; retrying");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                if let Err(e) = compact(&shared, last_expiry) {
                    tracing::warn!(error = %e, "merging dedup runs failed");
                }
            }
            FlusherMsg::Expire(now) => {
                last_expiry = last_expiry.max(now);
                if let Err(e) = compact(&shared, now) {
                    tracing::warn!(error = %e, "expiring dedup runs failed");
                }
            }
        }
    }
}

fn flush_one(shared: &Shared, frozen: &Arc<Frozen>) -> Result<(), StoreError> {
    let mut entries: Vec<(u128, Entry)> = frozen.map.iter().map(|(k, e)| (*k, *e)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    let n = entries.len();
    let run = write_run(
        &shared.dir,
        &mut entries.into_iter(),
        n,
        frozen.covers_from,
        frozen.covers_to,
        0,
    )?;
    let mut l = shared.write();
    if let Some(run) = run {
        l.runs.push(Arc::new(run));
    }
    l.frozen.retain(|f| !Arc::ptr_eq(f, frozen));
    Ok(())
}

/// Deletes runs that only hold ended claims, then merges a level that has [`MERGE_FANOUT`] runs.
fn compact(shared: &Shared, now_ms: i64) -> Result<(), StoreError> {
    let dead: Vec<Arc<Run>> = {
        let mut l = shared.write();
        // Keep the newest run even when expired: its `covers_to` is what recovery replays from.
        let newest = l.runs.iter().map(|r| r.covers_to).max().unwrap_or(0);
        let (dead, live): (Vec<_>, Vec<_>) = l
            .runs
            .drain(..)
            .partition(|r| r.max_expires_ms <= now_ms && r.covers_to != newest);
        l.runs = live;
        dead
    };
    for r in dead {
        std::fs::remove_file(&r.path)?;
    }
    loop {
        let group: Vec<Arc<Run>> = {
            let l = shared.read();
            let mut by_level: std::collections::BTreeMap<u32, Vec<Arc<Run>>> = Default::default();
            for r in &l.runs {
                by_level.entry(r.level).or_default().push(r.clone());
            }
            match by_level.into_values().find(|v| v.len() >= MERGE_FANOUT) {
                Some(v) => v,
                None => return Ok(()),
            }
        };
        merge(shared, &group, now_ms)?;
    }
}

fn merge(shared: &Shared, group: &[Arc<Run>], now_ms: i64) -> Result<(), StoreError> {
    let level = group.iter().map(|r| r.level).max().unwrap_or(0) + 1;
    let from = group.iter().map(|r| r.covers_from).min().unwrap_or(0);
    let to = group.iter().map(|r| r.covers_to).max().unwrap_or(0);
    let newest_overall = shared.covered();
    let mut readers = Vec::with_capacity(group.len());
    for r in group {
        readers.push(RunReader::open(r)?);
    }
    let hint: usize = group.iter().map(|r| r.count).sum();
    // K-way merge by hash; for a hash in several runs the highest seq is the current claim.
    let out = {
        let mut merged = std::iter::from_fn(|| {
            loop {
                let min = readers
                    .iter()
                    .filter_map(|r| r.peeked.map(|(h, _)| h))
                    .min()?;
                let mut best: Option<Entry> = None;
                for r in &mut readers {
                    if let Some((h, e)) = r.peeked
                        && h == min
                    {
                        if best.is_none_or(|b| e.seq > b.seq) {
                            best = Some(e);
                        }
                        r.advance();
                    }
                }
                match best {
                    Some(e) if e.expires_at_ms > now_ms => return Some((min, e)),
                    _ => continue,
                }
            }
        });
        write_run(&shared.dir, &mut merged, hint, from, to, level)?
    };
    if let Some(e) = readers.iter_mut().find_map(|r| r.err.take()) {
        if let Some(run) = &out {
            let _ = std::fs::remove_file(&run.path);
        }
        return Err(e.into());
    }
    // With no live claim left the group needs no output, except that the run holding the
    // newest coverage stays: recovery replays the journal from its `covers_to`.
    let keep_marker = out.is_none() && to == newest_overall;
    let retired: Vec<Arc<Run>> = group
        .iter()
        .filter(|r| !(keep_marker && r.covers_to == to))
        .cloned()
        .collect();
    {
        let mut l = shared.write();
        l.runs
            .retain(|r| !retired.iter().any(|g| Arc::ptr_eq(g, r)));
        if let Some(run) = out {
            l.runs.push(Arc::new(run));
        }
    }
    for r in &retired {
        std::fs::remove_file(&r.path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_entries: usize) -> FlushPolicy {
        FlushPolicy {
            max_entries,
            max_age: Duration::from_secs(3600),
        }
    }

    /// Waits until the flusher has written every frozen memtable (test-only polling of a
    /// condition the flusher makes true; no fixed sleep).
    fn settle(ix: &DedupIndex) {
        for _ in 0..10_000 {
            if ix.shared.read().frozen.is_empty() {
                return;
            }
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("flusher did not catch up");
    }

    #[test]
    fn canonical_uuids_are_stored_inline_and_other_ids_are_not() {
        let id = "0192d4c3-7a1b-7cde-8f00-112233445566";
        assert_eq!(Entry::new(1, 2, id).event_id().as_deref(), Some(id));
        assert_eq!(Entry::new(1, 2, &id.to_uppercase()).event_id(), None);
        assert_eq!(Entry::new(1, 2, "e1").event_id(), None);
        assert_eq!(
            Entry::new(1, 2, "00000000-0000-0000-0000-000000000000").event_id(),
            None
        );
        assert_ne!(hash_key("x"), hash_identity("x"));
    }

    #[test]
    fn claims_survive_flush_merge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, from) = DedupIndex::open(dir.path(), policy(100)).unwrap();
        assert_eq!(from, 0);
        for seq in 0..1_000u64 {
            ix.insert(&hash_key(&format!("k{seq}")), Entry::new(seq, 10_000, "e"));
            ix.maybe_freeze(seq + 1);
        }
        settle(&ix);
        ix.request_expiry(0);
        for seq in (0..1_000u64).step_by(37) {
            let e = ix.lookup(&hash_key(&format!("k{seq}"))).unwrap().unwrap();
            assert_eq!(e.seq, seq);
        }
        assert_eq!(ix.lookup(&hash_key("absent")).unwrap(), None);
        ix.close(1_000);
        let (ix, from) = DedupIndex::open(dir.path(), policy(100)).unwrap();
        assert_eq!(from, 1_000, "everything flushed on close");
        let levels: Vec<u32> = ix.shared.read().runs.iter().map(|r| r.level).collect();
        assert!(
            levels.iter().any(|&l| l > 0),
            "runs were merged: {levels:?}"
        );
        for seq in 0..1_000u64 {
            assert_eq!(
                ix.lookup(&hash_key(&format!("k{seq}")))
                    .unwrap()
                    .map(|e| e.seq),
                Some(seq)
            );
        }
        ix.close(1_000);
    }

    #[test]
    fn expired_runs_are_deleted_but_the_replay_point_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _) = DedupIndex::open(dir.path(), policy(10)).unwrap();
        for seq in 0..30u64 {
            ix.insert(&hash_key(&format!("k{seq}")), Entry::new(seq, 100, "e"));
            ix.maybe_freeze(seq + 1);
        }
        settle(&ix);
        ix.request_expiry(1_000);
        ix.close(30);
        let (ix, from) = DedupIndex::open(dir.path(), policy(10)).unwrap();
        assert_eq!(from, 30);
        assert_eq!(ix.shared.read().runs.len(), 1, "only the newest run stays");
        ix.close(30);
    }

    #[test]
    fn a_damaged_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ix, _) = DedupIndex::open(dir.path(), policy(10)).unwrap();
        for seq in 0..10u64 {
            ix.insert(&hash_key(&format!("k{seq}")), Entry::new(seq, 100, "e"));
        }
        ix.close(10);
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut b = std::fs::read(&path).unwrap();
        b[RUN_HEADER + 20] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(matches!(
            DedupIndex::open(dir.path(), policy(10)),
            Err(StoreError::Corrupt(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Against a model (a plain map of the newest claim per key), through flushes, merges
        /// and expiry: the index gives the model's answer for every key that is still claimed.
        #[test]
        fn index_agrees_with_a_map(ops in proptest::collection::vec((0u16..300, 0i64..50), 1..600),
                                   flush_every in 5usize..80) {
            let dir = tempfile::tempdir().unwrap();
            let (mut ix, _) = DedupIndex::open(dir.path(), policy(flush_every)).unwrap();
            let mut model: HashMap<u16, Entry> = HashMap::new();
            for (seq, (k, ttl)) in ops.iter().enumerate() {
                let seq = seq as u64;
                let now = seq as i64;
                let h = hash_key(&k.to_string());
                let current = ix.lookup(&h).unwrap().filter(|e| e.expires_at_ms > now);
                let expected = model.get(k).copied().filter(|e| e.expires_at_ms > now);
                prop_assert_eq!(current, expected);
                if current.is_none() {
                    let e = Entry::new(seq, now + ttl, "e");
                    ix.insert(&h, e);
                    model.insert(*k, e);
                }
                ix.maybe_freeze(seq + 1);
                if seq.is_multiple_of(97) {
                    ix.request_expiry(now);
                }
            }
            ix.close(ops.len() as u64);
        }
    }
}
