//! The ingest journal: append-only segment files, group-committed with one `fdatasync`.
//!
//! Every accepted event is one record. Records have consecutive sequence numbers (`seq`) across
//! segments; a segment is named after the seq of its first record. The journal is the ingest log
//! (inspection, replay), the source the target queues read from, and the write-ahead log of the
//! dedup index. `docs/storage.md` gives the format byte by byte and argues recovery.
//!
//! Frame: `u32 len | u32 crc | body`, little-endian. `crc` is CRC-32 over the segment's salt
//! (its first seq, 8 bytes) followed by the body, so a stale record left in a reused or
//! preallocated file never validates in another segment. `len == 0` ends the segment (zeros).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::StoreError;
use crate::segfile::{PREPARED, Preparer, SegmentFile};

const SEGMENT_MAGIC: &[u8; 8] = b"SBJRNL01";
const INDEX_MAGIC: &[u8; 8] = b"SBJIDX01";
const FORMAT_VERSION: u32 = 1;
/// Bytes before the first record of a segment.
pub(crate) const HEADER_LEN: u64 = 64;
const FRAME_HEADER: usize = 8;
/// Largest record body accepted: a bound on what a corrupt length field can make us allocate.
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 20;
/// A segment created without zeros ahead asks for a prepared successor once it holds this much.
const EARLY_PREPARE_AT: u64 = 1 << 20;
/// One sparse-index entry per this many records.
const SPARSE_EVERY: u64 = 256;

const KIND_EVENT: u8 = 1;
const FLAG_DEDUP: u8 = 1;
const FLAG_IDENTITY: u8 = 2;

/// One journal record as written: an accepted event and what it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRecord {
    pub(crate) seq: u64,
    pub(crate) received_at_ms: i64,
    /// Dedup key hash and when the claim expires.
    pub(crate) dedup: Option<([u8; 16], i64)>,
    /// When the envelope id's own claim expires (ids that came from the sender).
    pub(crate) identity_expires_at_ms: Option<i64>,
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) envelope: String,
    pub(crate) deliveries: Vec<RecordDelivery>,
}

/// A delivery routed at ingest: the target's first attempt reads it from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordDelivery {
    pub(crate) target: String,
    pub(crate) rule: String,
    /// `None`: the envelope itself (the common case, stored once).
    pub(crate) payload: Option<String>,
}

impl EventRecord {
    /// Latest expiry of anything in the dedup index that points at this record.
    pub(crate) fn max_claim_expiry(&self) -> i64 {
        let d = self.dedup.map_or(i64::MIN, |(_, e)| e);
        d.max(self.identity_expires_at_ms.unwrap_or(i64::MIN))
    }

    /// The payload of delivery `i`.
    pub(crate) fn payload(&self, i: usize) -> Option<&str> {
        let d = self.deliveries.get(i)?;
        Some(d.payload.as_deref().unwrap_or(&self.envelope))
    }

    fn encoded_len(&self) -> usize {
        let mut n = 1 + 8 + 8 + 1 + 4 + self.id.len() + 4 + self.source.len();
        n += 4 + self.envelope.len() + 4;
        if self.dedup.is_some() {
            n += 16 + 8;
        }
        if self.identity_expires_at_ms.is_some() {
            n += 8;
        }
        for d in &self.deliveries {
            n += 4 + d.target.len() + 4 + d.rule.len() + 1;
            n += d.payload.as_ref().map_or(0, |p| 4 + p.len());
        }
        n
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Lengths were checked against MAX_RECORD_BYTES by the caller, so they fit in u32.
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends one framed record to `buf`. Fails only when the record is too large.
pub(crate) fn encode(buf: &mut Vec<u8>, salt: u64, rec: &EventRecord) -> Result<(), StoreError> {
    let len = rec.encoded_len();
    if len > MAX_RECORD_BYTES {
        return Err(StoreError::RecordTooLarge {
            bytes: len,
            max: MAX_RECORD_BYTES,
        });
    }
    let start = buf.len();
    buf.reserve(FRAME_HEADER + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(KIND_EVENT);
    buf.extend_from_slice(&rec.seq.to_le_bytes());
    buf.extend_from_slice(&rec.received_at_ms.to_le_bytes());
    let mut flags = 0;
    if rec.dedup.is_some() {
        flags |= FLAG_DEDUP;
    }
    if rec.identity_expires_at_ms.is_some() {
        flags |= FLAG_IDENTITY;
    }
    buf.push(flags);
    if let Some((hash, expires)) = rec.dedup {
        buf.extend_from_slice(&hash);
        buf.extend_from_slice(&expires.to_le_bytes());
    }
    if let Some(expires) = rec.identity_expires_at_ms {
        buf.extend_from_slice(&expires.to_le_bytes());
    }
    put_str(buf, &rec.id);
    put_str(buf, &rec.source);
    put_str(buf, &rec.envelope);
    buf.extend_from_slice(&(rec.deliveries.len() as u32).to_le_bytes());
    for d in &rec.deliveries {
        put_str(buf, &d.target);
        put_str(buf, &d.rule);
        match &d.payload {
            None => buf.push(0),
            Some(p) => {
                buf.push(1);
                put_str(buf, p);
            }
        }
    }
    debug_assert_eq!(buf.len() - start - FRAME_HEADER, len);
    let crc = checksum(salt, &buf[start + FRAME_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn checksum(salt: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Reads a body field by field; every read is bounds-checked (the crc already matched, but a
/// body from a future version or a bug must still not panic).
struct Body<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).ok()
    }
}

fn decode_body(body: &[u8]) -> Option<EventRecord> {
    let mut r = Body { b: body, i: 0 };
    if r.u8()? != KIND_EVENT {
        return None;
    }
    let seq = r.u64()?;
    let received_at_ms = r.i64()?;
    let flags = r.u8()?;
    let dedup = if flags & FLAG_DEDUP != 0 {
        let hash: [u8; 16] = r.take(16)?.try_into().ok()?;
        Some((hash, r.i64()?))
    } else {
        None
    };
    let identity_expires_at_ms = if flags & FLAG_IDENTITY != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    let id = r.string()?;
    let source = r.string()?;
    let envelope = r.string()?;
    let n = r.u32()? as usize;
    // Each delivery takes at least 9 bytes: a count beyond that is corrupt, not an allocation.
    if n > body.len() / 9 {
        return None;
    }
    let mut deliveries = Vec::with_capacity(n);
    for _ in 0..n {
        let target = r.string()?;
        let rule = r.string()?;
        let payload = match r.u8()? {
            0 => None,
            1 => Some(r.string()?),
            _ => return None,
        };
        deliveries.push(RecordDelivery {
            target,
            rule,
            payload,
        });
    }
    if r.i != body.len() {
        return None;
    }
    Some(EventRecord {
        seq,
        received_at_ms,
        dedup,
        identity_expires_at_ms,
        id,
        source,
        envelope,
        deliveries,
    })
}

/// What one attempt to read a frame found.
enum Frame {
    Record(EventRecord, u64),
    /// End of the valid log in this segment: zeros, a torn write, or the end of the file.
    End,
}

fn read_frame<R: Read>(r: &mut R, salt: u64, expected_seq: u64) -> std::io::Result<Frame> {
    let mut head = [0u8; FRAME_HEADER];
    if !read_full(r, &mut head)? {
        return Ok(Frame::End);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_RECORD_BYTES {
        return Ok(Frame::End);
    }
    let mut body = vec![0u8; len];
    if !read_full(r, &mut body)? {
        return Ok(Frame::End);
    }
    if checksum(salt, &body) != crc {
        return Ok(Frame::End);
    }
    match decode_body(&body) {
        Some(rec) if rec.seq == expected_seq => Ok(Frame::Record(rec, (FRAME_HEADER + len) as u64)),
        _ => Ok(Frame::End),
    }
}

/// `read_exact` that reports a short read as `false` instead of an error.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn index_name(first_seq: u64) -> String {
    format!("{first_seq:020}.idx")
}

fn header_bytes(first_seq: u64, created_ms: i64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h[24..32].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32fast::hash(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; `Ok(false)` means torn or absent (only acceptable for the last one).
fn check_header(file: &File, first_seq: u64) -> Result<bool, StoreError> {
    let mut h = [0u8; HEADER_LEN as usize];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let crc = u32::from_le_bytes([h[32], h[33], h[34], h[35]]);
    if crc32fast::hash(&h[0..32]) != crc {
        return Ok(false);
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(StoreError::NotAStore(
            "journal segment has a foreign magic".into(),
        ));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(version),
            supported: i64::from(FORMAT_VERSION),
        });
    }
    let seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    if seq != first_seq {
        return Err(StoreError::Corrupt(format!(
            "journal segment {} says it starts at seq {seq}",
            segment_name(first_seq)
        )));
    }
    Ok(true)
}

/// What the store keeps in memory about one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) first_seq: u64,
    /// One past the last record (== first_seq when empty).
    pub(crate) end_seq: u64,
    /// File length covered by valid records.
    pub(crate) len: u64,
    pub(crate) min_received_ms: i64,
    pub(crate) max_received_ms: i64,
    /// Latest dedup expiry of any record: the dedup index may point here until then.
    pub(crate) max_claim_expiry_ms: i64,
    /// `(seq, offset)` every [`SPARSE_EVERY`] records, starting with the first.
    pub(crate) sparse: Vec<(u64, u64)>,
}

impl SegmentInfo {
    fn empty(first_seq: u64) -> Self {
        SegmentInfo {
            first_seq,
            end_seq: first_seq,
            len: HEADER_LEN,
            min_received_ms: i64::MAX,
            max_received_ms: i64::MIN,
            max_claim_expiry_ms: i64::MIN,
            sparse: Vec::new(),
        }
    }

    fn note(&mut self, rec: &EventRecord, offset: u64, frame_len: u64) {
        if (rec.seq - self.first_seq).is_multiple_of(SPARSE_EVERY) {
            self.sparse.push((rec.seq, offset));
        }
        self.end_seq = rec.seq + 1;
        self.len = offset + frame_len;
        self.min_received_ms = self.min_received_ms.min(rec.received_at_ms);
        self.max_received_ms = self.max_received_ms.max(rec.received_at_ms);
        self.max_claim_expiry_ms = self.max_claim_expiry_ms.max(rec.max_claim_expiry());
    }

    /// The offset to start scanning from for `seq`, and the seq found there.
    fn seek_hint(&self, seq: u64) -> (u64, u64) {
        match self.sparse.partition_point(|&(s, _)| s <= seq) {
            0 => (self.first_seq, HEADER_LEN),
            i => (self.sparse[i - 1].0, self.sparse[i - 1].1),
        }
    }

    fn records(&self) -> u64 {
        self.end_seq - self.first_seq
    }
}

/// The list of segments, shared by the writer (which appends) and every reader.
#[derive(Debug)]
pub(crate) struct Segments {
    pub(crate) dir: PathBuf,
    pub(crate) list: RwLock<Vec<SegmentInfo>>,
}

impl Segments {
    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<SegmentInfo>> {
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<SegmentInfo>> {
        self.list.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the segment list (admin scans work on a snapshot).
    pub(crate) fn snapshot(&self) -> Vec<SegmentInfo> {
        self.lock_read().clone()
    }

    /// The first seq still on disk.
    pub(crate) fn start_seq(&self) -> u64 {
        self.lock_read().first().map_or(0, |s| s.first_seq)
    }

    /// Records on disk, for diagnostics.
    pub(crate) fn record_count(&self) -> u64 {
        self.lock_read().iter().map(SegmentInfo::records).sum()
    }

    pub(crate) fn path_of(&self, first_seq: u64) -> PathBuf {
        self.dir.join(segment_name(first_seq))
    }
}

/// The journal as found on disk at open.
pub(crate) struct Recovered {
    pub(crate) segments: Arc<Segments>,
    pub(crate) writer: JournalWriter,
}

/// Opens (or creates) the journal in `dir`. The last segment is scanned; a torn tail is cut off
/// (nothing after it was ever acknowledged, since acks follow the fsync that covers them).
/// Earlier segments use their sidecar index, or are scanned when it is missing or stale.
pub(crate) fn open(
    dir: &Path,
    max_segment_bytes: u64,
    now_ms: i64,
) -> Result<Recovered, StoreError> {
    std::fs::create_dir_all(dir)?;
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(seq) = stem.parse::<u64>()
        {
            firsts.push(seq);
        } else if name.ends_with(".idx.tmp") || name == PREPARED {
            // An index that was not renamed, or a segment half prepared: both are redone.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let preparer = Preparer::new(dir, max_segment_bytes);
    firsts.sort_unstable();
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(firsts.len());
    let last_i = firsts.len().checked_sub(1);
    for (i, &first) in firsts.iter().enumerate() {
        if let Some(prev) = infos.last()
            && prev.end_seq != first
        {
            return Err(StoreError::Corrupt(format!(
                "journal segment {} starts at seq {first} but the previous one ends at {}",
                segment_name(first),
                prev.end_seq
            )));
        }
        let path = dir.join(segment_name(first));
        let is_last = Some(i) == last_i;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        if !check_header(&file, first)? {
            if is_last {
                // Created but its header never reached the disk: it holds no acknowledged record.
                drop(file);
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            }
            return Err(StoreError::Corrupt(format!(
                "journal segment {} has a damaged header",
                segment_name(first)
            )));
        }
        let info = if is_last {
            let info = scan_segment(&file, first)?;
            let file_len = file.metadata()?.len();
            if file_len > info.len {
                // A torn or partial group commit: cut it so later appends start clean.
                file.set_len(info.len)?;
                file.sync_all()?;
            }
            info
        } else {
            match read_index(dir, first)? {
                Some(info) => info,
                None => {
                    let info = scan_segment(&file, first)?;
                    if !zeros_after(&file, info.len)? {
                        return Err(StoreError::Corrupt(format!(
                            "journal segment {} has damaged records at offset {} (only the newest segment may end torn)",
                            segment_name(first),
                            info.len
                        )));
                    }
                    write_index(dir, &info)?;
                    info
                }
            }
        };
        infos.push(info);
    }
    let segments = Arc::new(Segments {
        dir: dir.to_path_buf(),
        list: RwLock::new(Vec::new()),
    });
    let writer = match infos.last() {
        Some(last) => {
            let path = dir.join(segment_name(last.first_seq));
            let file = SegmentFile::reopen(&path, last.len)?;
            let w = JournalWriter {
                segments: segments.clone(),
                file,
                salt: last.first_seq,
                offset: last.len,
                next_seq: last.end_seq,
                max_segment_bytes,
                buf: Vec::new(),
                staged: SegmentInfo::empty(last.first_seq),
                staged_end: last.len,
                preparer,
            };
            *segments.lock_write() = infos;
            w
        }
        None => {
            *segments.lock_write() = Vec::new();
            JournalWriter::create(segments.clone(), 0, max_segment_bytes, now_ms, preparer)?
        }
    };
    Ok(Recovered { segments, writer })
}

/// Whether everything in `file` after `end` is zero: the padding of the last direct write, or
/// the unused rest of a prepared segment.
fn zeros_after(file: &File, end: u64) -> Result<bool, StoreError> {
    let len = file.metadata()?.len();
    let mut off = end;
    let mut buf = vec![0u8; 64 << 10];
    while off < len {
        let n = buf.len().min((len - off) as usize);
        file.read_exact_at(&mut buf[..n], off)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

fn scan_segment(file: &File, first_seq: u64) -> Result<SegmentInfo, StoreError> {
    let mut info = SegmentInfo::empty(first_seq);
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek(SeekFrom::Start(HEADER_LEN))?;
    let mut offset = HEADER_LEN;
    let mut seq = first_seq;
    while let Frame::Record(rec, n) = read_frame(&mut r, first_seq, seq)? {
        info.note(&rec, offset, n);
        offset += n;
        seq += 1;
    }
    Ok(info)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes the sidecar index of a sealed segment (tmp + rename; it can always be rebuilt).
fn write_index(dir: &Path, info: &SegmentInfo) -> Result<(), StoreError> {
    let mut b = Vec::with_capacity(96 + info.sparse.len() * 16);
    b.extend_from_slice(INDEX_MAGIC);
    for v in [info.first_seq, info.end_seq, info.len] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        info.min_received_ms,
        info.max_received_ms,
        info.max_claim_expiry_ms,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(info.sparse.len() as u64).to_le_bytes());
    for (s, o) in &info.sparse {
        b.extend_from_slice(&s.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{}.tmp", index_name(info.first_seq)));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join(index_name(info.first_seq)))?;
    Ok(())
}

fn read_index(dir: &Path, first_seq: u64) -> Result<Option<SegmentInfo>, StoreError> {
    let b = match std::fs::read(dir.join(index_name(first_seq))) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let parse = || -> Option<SegmentInfo> {
        let (data, crc) = b.split_at(b.len().checked_sub(4)?);
        if crc32fast::hash(data) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Body { b: data, i: 0 };
        if r.take(8)? != INDEX_MAGIC {
            return None;
        }
        let (first, end, len) = (r.u64()?, r.u64()?, r.u64()?);
        let (min_r, max_r, max_c) = (r.i64()?, r.i64()?, r.i64()?);
        let n = r.u64()? as usize;
        if n > data.len() / 16 {
            return None;
        }
        let mut sparse = Vec::with_capacity(n);
        for _ in 0..n {
            sparse.push((r.u64()?, r.u64()?));
        }
        (first == first_seq && r.i == data.len()).then_some(SegmentInfo {
            first_seq: first,
            end_seq: end,
            len,
            min_received_ms: min_r,
            max_received_ms: max_r,
            max_claim_expiry_ms: max_c,
            sparse,
        })
    };
    Ok(parse())
}

/// Deletes a segment (already taken out of the list) and its sidecar index. Readers that have
/// it open keep reading their open file; new readers no longer find it.
pub(crate) fn remove_segment(dir: &Path, first_seq: u64) -> Result<(), StoreError> {
    for name in [segment_name(first_seq), index_name(first_seq)] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The writer's end of the journal. Owned by the ingest writer thread.
pub(crate) struct JournalWriter {
    segments: Arc<Segments>,
    file: SegmentFile,
    salt: u64,
    /// End of the durable part of the active segment.
    offset: u64,
    next_seq: u64,
    max_segment_bytes: u64,
    buf: Vec<u8>,
    /// Stats of the records staged in `buf`, folded into the segment info at commit.
    staged: SegmentInfo,
    staged_end: u64,
    preparer: Preparer,
}

impl JournalWriter {
    fn create(
        segments: Arc<Segments>,
        first_seq: u64,
        max_segment_bytes: u64,
        now_ms: i64,
        preparer: Preparer,
    ) -> Result<JournalWriter, StoreError> {
        let path = segments.path_of(first_seq);
        let header = header_bytes(first_seq, now_ms);
        let file = match preparer.take() {
            Some(prepared) => {
                std::fs::rename(segments.dir.join(PREPARED), &path)?;
                SegmentFile::from_prepared(prepared, &header)?
            }
            None => SegmentFile::create(&path, &header)?,
        };
        // The new name must survive a power cut before anything in it is acknowledged.
        sync_dir(&segments.dir)?;
        segments.lock_write().push(SegmentInfo::empty(first_seq));
        Ok(JournalWriter {
            segments,
            file,
            salt: first_seq,
            offset: HEADER_LEN,
            next_seq: first_seq,
            max_segment_bytes,
            buf: Vec::with_capacity(1 << 20),
            staged: SegmentInfo::empty(first_seq),
            staged_end: HEADER_LEN,
            preparer,
        })
    }

    /// The seq the next staged record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Starts a new segment if the active one is full. Only between commits.
    pub(crate) fn roll_if_full(&mut self, now_ms: i64) -> Result<(), StoreError> {
        debug_assert!(self.buf.is_empty());
        let full = self.offset >= self.max_segment_bytes;
        // A segment created without zeros ahead is left as soon as a prepared one is ready.
        let upgrade = !self.file.prepared && self.preparer.is_ready();
        if !(full || upgrade) || self.next_seq == self.salt {
            return Ok(());
        }
        let sealed = {
            let list = self.segments.lock_read();
            list.last().cloned()
        };
        if let Some(info) = sealed {
            // Best effort: without it the next open scans this segment instead.
            if let Err(e) = write_index(&self.segments.dir, &info) {
                tracing::warn!(error = %e, "writing a journal segment index failed");
            }
        }
        let next = JournalWriter::create(
            self.segments.clone(),
            self.next_seq,
            self.max_segment_bytes,
            now_ms,
            self.preparer.clone(),
        )?;
        let buf = std::mem::take(&mut self.buf);
        *self = JournalWriter { buf, ..next };
        Ok(())
    }

    /// Encodes `rec` (whose seq must be [`next_seq`](Self::next_seq)) into the commit buffer.
    /// On error nothing was staged.
    pub(crate) fn stage(&mut self, rec: &EventRecord) -> Result<(), StoreError> {
        debug_assert_eq!(rec.seq, self.next_seq);
        let before = self.buf.len();
        encode(&mut self.buf, self.salt, rec)?;
        let frame = (self.buf.len() - before) as u64;
        self.staged.note(rec, self.staged_end, frame);
        self.staged_end += frame;
        self.next_seq += 1;
        Ok(())
    }

    /// Writes the staged records and makes them durable. After an error the caller must treat
    /// the journal as failed: what reached the disk is unknown.
    pub(crate) fn commit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.append(self.offset, &self.buf)?;
        self.offset += self.buf.len() as u64;
        // Prepare the next segment at half of this one, or early (after a MiB) when this one
        // has no zeros ahead. Only where direct I/O works: zeros written through the page cache
        // make later commits slower, not faster (see `segfile`).
        if self.file.is_direct()
            && (self.offset >= self.max_segment_bytes / 2
                || (!self.file.prepared
                    && self.offset >= EARLY_PREPARE_AT.min(self.max_segment_bytes / 2)))
        {
            self.preparer.request();
        }
        self.buf.clear();
        let staged = std::mem::replace(&mut self.staged, SegmentInfo::empty(self.salt));
        let mut list = self.segments.lock_write();
        if let Some(info) = list.last_mut() {
            info.sparse.extend(staged.sparse);
            info.end_seq = staged.end_seq;
            info.len = self.offset;
            info.min_received_ms = info.min_received_ms.min(staged.min_received_ms);
            info.max_received_ms = info.max_received_ms.max(staged.max_received_ms);
            info.max_claim_expiry_ms = info.max_claim_expiry_ms.max(staged.max_claim_expiry_ms);
        }
        Ok(())
    }

    /// Test hook support: forget what was staged (the commit "failed").
    pub(crate) fn discard_staged(&mut self) {
        self.buf.clear();
        self.staged = SegmentInfo::empty(self.salt);
        self.staged_end = self.offset;
    }
}

/// Reads committed records in seq order from the segment files.
///
/// Each instance keeps its file position, so a consumer that reads on from where it stopped
/// never re-scans. Reads stop at `end` (the committed end the caller passes), never at the
/// file's end: the active segment may hold bytes whose fsync has not returned yet.
pub(crate) struct JournalReader {
    segments: Arc<Segments>,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first_seq: u64,
    reader: BufReader<File>,
    /// The seq of the next frame `reader` is positioned at, and that frame's offset.
    next_seq: u64,
    next_offset: u64,
}

impl JournalReader {
    pub(crate) fn new(segments: Arc<Segments>) -> Self {
        JournalReader {
            segments,
            open: None,
        }
    }

    fn open_for(&self, seq: u64) -> Result<Option<OpenSegment>, StoreError> {
        let (first, hint_seq, hint_off) = {
            let list = self.segments.lock_read();
            let i = list.partition_point(|s| s.first_seq <= seq);
            let Some(info) = i.checked_sub(1).and_then(|i| list.get(i)) else {
                return Ok(None);
            };
            if seq >= info.end_seq {
                return Ok(None);
            }
            let (hs, ho) = info.seek_hint(seq);
            (info.first_seq, hs, ho)
        };
        let file = match File::open(self.segments.path_of(first)) {
            Ok(f) => f,
            // Deleted by retention meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut reader = BufReader::with_capacity(256 << 10, file);
        reader.seek(SeekFrom::Start(hint_off))?;
        Ok(Some(OpenSegment {
            first_seq: first,
            reader,
            next_seq: hint_seq,
            next_offset: hint_off,
        }))
    }

    /// The record with `seq`, if it is still on disk and below `end`.
    /// Sequential calls (`seq`, `seq + 1`, ...) read on without seeking.
    pub(crate) fn read(&mut self, seq: u64, end: u64) -> Result<Option<EventRecord>, StoreError> {
        if seq >= end {
            return Ok(None);
        }
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.next_seq > seq || o.next_seq + SPARSE_EVERY < seq)
        {
            self.open = None;
        }
        let mut refreshed = false;
        loop {
            if self.open.is_none() {
                self.open = self.open_for(seq)?;
                refreshed = true;
            }
            let Some(o) = self.open.as_mut() else {
                return Ok(None);
            };
            match read_frame(&mut o.reader, o.first_seq, o.next_seq)? {
                Frame::Record(rec, n) => {
                    o.next_seq += 1;
                    o.next_offset += n;
                    if rec.seq == seq {
                        return Ok(Some(rec));
                    }
                    // Still walking from the sparse-index hint to `seq`.
                }
                Frame::End if !refreshed => {
                    // The buffer may hold bytes read before the writer appended them: read the
                    // file again from the frame we are at.
                    refreshed = true;
                    let off = o.next_offset;
                    o.reader.seek(SeekFrom::Start(off))?;
                }
                Frame::End => {
                    // Past this segment's last record: `seq` is in the next segment, if any.
                    let at = o.next_seq;
                    self.open = None;
                    let next_exists = self.segments.lock_read().iter().any(|s| s.first_seq == at);
                    if !next_exists || at > seq {
                        return Ok(None);
                    }
                    refreshed = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, deliveries: usize) -> EventRecord {
        EventRecord {
            seq,
            received_at_ms: 1_000 + seq as i64,
            dedup: seq.is_multiple_of(2).then_some(([seq as u8; 16], 5_000)),
            identity_expires_at_ms: seq.is_multiple_of(3).then_some(7_000),
            id: format!("id-{seq}"),
            source: "genesys".into(),
            envelope: format!("{{\"n\":{seq}}}"),
            deliveries: (0..deliveries)
                .map(|i| RecordDelivery {
                    target: format!("t{i}"),
                    rule: "r".into(),
                    payload: (i == 1).then(|| "custom".to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn frames_round_trip_and_reject_the_wrong_salt() {
        let r = rec(4, 3);
        let mut buf = Vec::new();
        encode(&mut buf, 77, &r).unwrap();
        match read_frame(&mut buf.as_slice(), 77, 4).unwrap() {
            Frame::Record(got, n) => {
                assert_eq!(got, r);
                assert_eq!(n as usize, buf.len());
            }
            Frame::End => panic!("valid frame not read"),
        }
        assert!(matches!(
            read_frame(&mut buf.as_slice(), 78, 4).unwrap(),
            Frame::End
        ));
        assert!(matches!(
            read_frame(&mut buf.as_slice(), 77, 5).unwrap(),
            Frame::End
        ));
        for cut in [0, 3, 8, buf.len() - 1] {
            assert!(matches!(
                read_frame(&mut &buf[..cut], 77, 4).unwrap(),
                Frame::End
            ));
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            read_frame(&mut flipped.as_slice(), 77, 4).unwrap(),
            Frame::End
        ));
    }

    #[test]
    fn decoding_arbitrary_bodies_never_panics() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, &rec(6, 2)).unwrap();
        let body = &buf[FRAME_HEADER..];
        for cut in 0..body.len() {
            let _ = decode_body(&body[..cut]);
            let mut b = body.to_vec();
            b[cut] = b[cut].wrapping_add(0x41);
            let _ = decode_body(&b);
        }
    }

    fn write_n(w: &mut JournalWriter, n: u64, per_commit: u64) {
        let mut staged = 0;
        for _ in 0..n {
            let r = rec(w.next_seq(), 2);
            w.stage(&r).unwrap();
            staged += 1;
            if staged == per_commit {
                w.commit().unwrap();
                w.roll_if_full(0).unwrap();
                staged = 0;
            }
        }
        w.commit().unwrap();
    }

    #[test]
    fn reopen_finds_every_committed_record_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path(), 4096, 0).unwrap();
        write_n(&mut j.writer, 500, 7);
        let segs = j.segments.snapshot().len();
        assert!(segs > 3, "small segments roll: {segs}");
        drop(j);
        let j = open(dir.path(), 4096, 0).unwrap();
        assert_eq!(j.writer.next_seq(), 500);
        assert_eq!(j.segments.record_count(), 500);
        let mut r = JournalReader::new(j.segments.clone());
        for seq in 0..500 {
            assert_eq!(r.read(seq, 500).unwrap(), Some(rec(seq, 2)), "seq {seq}");
        }
        assert_eq!(r.read(500, 500).unwrap(), None);
        // Random access uses the sparse index.
        let mut r = JournalReader::new(j.segments.clone());
        for seq in [499, 3, 260, 0, 261] {
            assert_eq!(r.read(seq, 500).unwrap().map(|x| x.seq), Some(seq));
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path(), 1 << 30, 0).unwrap();
        write_n(&mut j.writer, 10, 10);
        let path = j.segments.path_of(0);
        // The valid log's end (the file may be longer: direct writes pad to a block).
        let good_len = j.segments.snapshot()[0].len;
        // A group commit that was cut short: half a frame, then garbage after it.
        let mut tail = Vec::new();
        encode(&mut tail, 0, &rec(10, 1)).unwrap();
        encode(&mut tail, 0, &rec(11, 1)).unwrap();
        tail[FRAME_HEADER + 3] ^= 0xff;
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&tail, good_len).unwrap();
        drop(f);
        drop(j);
        let mut j = open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!(j.writer.next_seq(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        write_n(&mut j.writer, 5, 5);
        drop(j);
        let j = open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!(j.writer.next_seq(), 15);
        let mut r = JournalReader::new(j.segments.clone());
        assert_eq!(r.read(12, 15).unwrap(), Some(rec(12, 2)));
    }

    #[test]
    fn damage_in_a_sealed_segment_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path(), 2048, 0).unwrap();
        write_n(&mut j.writer, 200, 5);
        let first = j.segments.snapshot()[0].clone();
        drop(j);
        std::fs::remove_file(dir.path().join(index_name(first.first_seq))).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(segment_name(first.first_seq)))
            .unwrap();
        f.write_all_at(&[0xAB; 16], HEADER_LEN + 20).unwrap();
        drop(f);
        match open(dir.path(), 2048, 0) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("damaged records"), "{m}"),
            other => panic!("expected Corrupt, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_segment_whose_header_never_reached_the_disk_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path(), 1 << 30, 0).unwrap();
        write_n(&mut j.writer, 3, 3);
        drop(j);
        // The writer crashed right after creating the next segment's file.
        std::fs::write(dir.path().join(segment_name(3)), b"SBJ").unwrap();
        let j = open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!(j.writer.next_seq(), 3);
        assert!(!dir.path().join(segment_name(3)).exists());
    }

    #[test]
    fn readers_stop_at_the_committed_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path(), 1 << 30, 0).unwrap();
        write_n(&mut j.writer, 4, 4);
        j.writer.stage(&rec(4, 0)).unwrap();
        let mut r = JournalReader::new(j.segments.clone());
        assert_eq!(r.read(3, 4).unwrap().map(|x| x.seq), Some(3));
        assert_eq!(r.read(4, 4).unwrap(), None);
        j.writer.commit().unwrap();
        assert_eq!(r.read(4, 5).unwrap().map(|x| x.seq), Some(4));
    }
}
