//! How the journal writer puts bytes on disk: direct, synchronous writes into preallocated files.
//!
//! A commit is one `pwrite` with `O_DIRECT | O_DSYNC`: it bypasses the page cache and returns
//! once the device has the data, so there is no separate `fdatasync` and no writeback of dirty
//! pages. Direct I/O writes whole 4 KiB blocks at 4 KiB offsets, so the writer keeps the last,
//! partly filled block in memory and writes it again, with the new records after it and zeros to
//! the block's end; recovery reads those zeros as the end of the log.
//!
//! Into a file whose blocks are already allocated and written (prepared with zeros in the
//! background, see [`Preparer`]) such a write changes no metadata, so the device sees one write
//! and one flush. Measured on this machine: about 60 µs of CPU and 0.13 ms per 20 KiB commit,
//! against 150 µs and 0.33 ms for a buffered append + `fdatasync` (BENCHMARKS.md). Zeros written
//! through the page cache instead would not do: the kernel keeps them in 1 MiB folios, and each
//! later commit then writes a whole folio back.
//!
//! Filesystems without direct I/O (tmpfs, some network filesystems) get buffered writes and an
//! `fdatasync` per commit, and no preparation. `SWITCHBOARD_JOURNAL_BUFFERED=1` in the
//! environment chooses that path everywhere: for a filesystem that accepts `O_DIRECT` but handles
//! it badly, and so that the test suite runs the store on both paths on any filesystem.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Direct I/O unit: offsets, lengths and buffer addresses are multiples of it.
pub(crate) const BLOCK: usize = 4096;

/// A buffer whose usable part starts at a [`BLOCK`]-aligned address, in safe code: a `Vec`
/// with room for the alignment, and the aligned window inside it.
#[derive(Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    /// `len` bytes (a multiple of [`BLOCK`]) at an aligned address.
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < len + BLOCK {
            self.raw = vec![0; (len + BLOCK).next_power_of_two()];
        }
        let start = self.raw.as_ptr().align_offset(BLOCK);
        &mut self.raw[start..start + len]
    }
}

fn round_down(x: u64) -> u64 {
    x & !(BLOCK as u64 - 1)
}

fn is_unsupported(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// `SWITCHBOARD_JOURNAL_BUFFERED=1`: behave as on a filesystem without direct I/O.
pub(crate) fn direct_io_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("SWITCHBOARD_JOURNAL_BUFFERED").is_some_and(|v| v == "1"))
}

fn open_direct(path: &Path, create_new: bool) -> std::io::Result<File> {
    if direct_io_disabled() {
        // What such a filesystem answers, so that every caller takes its usual fallback.
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

/// The active segment's file, open for appending commits.
pub(crate) struct SegmentFile {
    file: File,
    direct: bool,
    /// Direct mode: the bytes of the block that holds the end of the log, up to that end.
    tail: Vec<u8>,
    wbuf: AlignedBuf,
    /// The file was prepared (zeros written ahead of the log).
    pub(crate) prepared: bool,
}

impl SegmentFile {
    /// Creates `path` and writes `header` at offset 0, durably. Falls back to buffered I/O where
    /// direct I/O is refused.
    pub(crate) fn create(path: &Path, header: &[u8]) -> std::io::Result<SegmentFile> {
        match open_direct(path, true) {
            Ok(file) => {
                let mut f = SegmentFile {
                    file,
                    direct: true,
                    tail: Vec::new(),
                    wbuf: AlignedBuf::default(),
                    prepared: false,
                };
                match f.append(0, header) {
                    Ok(()) => return Ok(f),
                    Err(e) if is_unsupported(&e) => {
                        drop(f);
                        std::fs::remove_file(path)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) if is_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut f = SegmentFile {
            file,
            direct: false,
            tail: Vec::new(),
            wbuf: AlignedBuf::default(),
            prepared: false,
        };
        f.append(0, header)?;
        Ok(f)
    }

    /// A prepared file (already renamed to `path`) with `header` written at offset 0.
    pub(crate) fn from_prepared(file: File, header: &[u8]) -> std::io::Result<SegmentFile> {
        let mut f = SegmentFile {
            file,
            direct: true,
            tail: Vec::new(),
            wbuf: AlignedBuf::default(),
            prepared: true,
        };
        f.append(0, header)?;
        Ok(f)
    }

    /// Reopens an existing segment whose valid log ends at `end` (the file was cut there).
    pub(crate) fn reopen(path: &Path, end: u64) -> std::io::Result<SegmentFile> {
        let (file, direct) = match open_direct(path, false) {
            Ok(f) => (f, true),
            Err(e) if is_unsupported(&e) => {
                (OpenOptions::new().read(true).write(true).open(path)?, false)
            }
            Err(e) => return Err(e),
        };
        let mut tail = Vec::new();
        if direct {
            let start = round_down(end);
            let n = (end - start) as usize;
            // The tail is read through a buffered handle: direct reads want aligned buffers,
            // and this happens once per open.
            let mut t = vec![0u8; n];
            File::open(path)?.read_exact_at(&mut t, start)?;
            tail = t;
        }
        Ok(SegmentFile {
            file,
            direct,
            tail,
            wbuf: AlignedBuf::default(),
            prepared: false,
        })
    }

    /// Writes `bytes` at the log's end `end` and returns once they are durable.
    pub(crate) fn append(&mut self, end: u64, bytes: &[u8]) -> std::io::Result<()> {
        if !self.direct {
            self.file.write_all_at(bytes, end)?;
            return self.file.sync_data();
        }
        let start = round_down(end);
        debug_assert_eq!(self.tail.len() as u64, end - start);
        let used = self.tail.len() + bytes.len();
        let padded = used.div_ceil(BLOCK) * BLOCK;
        let w = self.wbuf.get(padded);
        w[..self.tail.len()].copy_from_slice(&self.tail);
        w[self.tail.len()..used].copy_from_slice(bytes);
        w[used..].fill(0);
        // One call: a short direct write cannot be continued at an unaligned offset, so it is
        // an error like any other (the caller turns it into fail-stop).
        let n = self.file.write_at(w, start)?;
        if n != padded {
            return Err(std::io::Error::other(format!(
                "short direct write: {n} of {padded} bytes"
            )));
        }
        let last_block = (used / BLOCK) * BLOCK;
        self.tail.clear();
        self.tail.extend_from_slice(&w[last_block..used]);
        Ok(())
    }

    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }
}

/// File name of the next segment while it is being prepared.
pub(crate) const PREPARED: &str = "next.seg.tmp";
/// Zeros are written in chunks of this size, so preparing a segment never puts one long write
/// in front of the journal's commits.
const PREPARE_CHUNK: usize = 256 << 10;

/// Prepares the next segment in the background: `bytes` of zeros written with direct I/O, then
/// synced. Requested when the active segment is half full, or early for a segment that was not
/// prepared itself; a store that never writes a MiB never pays for it.
#[derive(Clone)]
pub(crate) struct Preparer {
    inner: Arc<PreparerInner>,
}

struct PreparerInner {
    dir: PathBuf,
    bytes: u64,
    /// `Some` once the prepared file is complete and synced.
    ready: Mutex<Option<File>>,
    /// A preparation is running, or done and not taken yet.
    busy: AtomicBool,
}

impl Preparer {
    pub(crate) fn new(dir: &Path, bytes: u64) -> Preparer {
        Preparer {
            inner: Arc::new(PreparerInner {
                dir: dir.to_path_buf(),
                bytes,
                ready: Mutex::new(None),
                busy: AtomicBool::new(false),
            }),
        }
    }

    /// Starts preparing a segment unless one is on its way or waiting.
    pub(crate) fn request(&self) {
        if self.inner.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("sb-store-prep".into())
            .spawn(move || match prepare(&inner.dir, inner.bytes) {
                Ok(f) => *inner.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(f),
                Err(e) => {
                    // The next segment is then created empty: commits work, a little slower.
                    // `busy` stays set, so a filesystem that refuses is not asked again.
                    if !is_unsupported(&e) {
                        tracing::warn!(error = %e, "preparing the next journal segment failed");
                    }
                    let _ = std::fs::remove_file(inner.dir.join(PREPARED));
                }
            });
        if spawned.is_err() {
            self.inner.busy.store(false, Ordering::Release);
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.inner
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The prepared file, if it is complete.
    pub(crate) fn take(&self) -> Option<File> {
        let f = self
            .inner
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.inner.busy.store(false, Ordering::Release);
        Some(f)
    }
}

fn prepare(dir: &Path, bytes: u64) -> std::io::Result<File> {
    let path = dir.join(PREPARED);
    let _ = std::fs::remove_file(&path);
    let f = open_direct(&path, true)?;
    let mut buf = AlignedBuf::default();
    let zeros = buf.get(PREPARE_CHUNK);
    let mut off = 0u64;
    while off < bytes {
        let n = PREPARE_CHUNK.min((bytes - off) as usize).div_ceil(BLOCK) * BLOCK;
        let written = f.write_at(&zeros[..n], off)?;
        if written != n {
            return Err(std::io::Error::other(
                "short write while preparing a segment",
            ));
        }
        off += n as u64;
    }
    // The data is on the device already (O_DSYNC); this makes the size and allocation durable.
    f.sync_all()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn appends_land_where_a_buffered_reader_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut f = SegmentFile::create(&path, b"HDR").unwrap();
        let mut expect = b"HDR".to_vec();
        let mut end = 3u64;
        for i in 0..300u32 {
            let chunk: Vec<u8> = (0..(i * 37 % 5000 + 1))
                .map(|j| (i + j) as u8 | 1)
                .collect();
            f.append(end, &chunk).unwrap();
            end += chunk.len() as u64;
            expect.extend_from_slice(&chunk);
        }
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert!(got.len() as u64 >= end);
        assert_eq!(&got[..end as usize], &expect[..]);
        assert!(
            got[end as usize..].iter().all(|b| *b == 0),
            "padding is zeros"
        );
        // Reopened at the end, appends continue seamlessly.
        drop(f);
        let mut f = SegmentFile::reopen(&path, end).unwrap();
        f.append(end, b"MORE").unwrap();
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(&got[end as usize..end as usize + 4], b"MORE");
        assert_eq!(&got[..end as usize], &expect[..]);
    }

    #[test]
    fn buffered_when_direct_io_is_turned_off() {
        if !direct_io_disabled() {
            eprintln!(
                "direct I/O on: run with SWITCHBOARD_JOURNAL_BUFFERED=1 (scripts/test.sh does)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = SegmentFile::create(&dir.path().join("s"), b"HDR").unwrap();
        assert!(!f.is_direct());
        let f = SegmentFile::reopen(&dir.path().join("s"), 3).unwrap();
        assert!(!f.is_direct());
        // No preparation without direct I/O (the journal creates plain segments instead), and
        // the refusal is the quiet kind, not a logged failure.
        let refused = prepare(dir.path(), 1 << 20).map(|_| ()).unwrap_err();
        assert!(is_unsupported(&refused), "{refused}");
    }

    #[test]
    fn a_prepared_file_is_zeros_of_the_asked_size() {
        if direct_io_disabled() {
            return; // Nothing is prepared without direct I/O (the test above checks that).
        }
        let dir = tempfile::tempdir().unwrap();
        let p = Preparer::new(dir.path(), 1 << 20);
        p.request();
        let mut waited = 0;
        while !p.is_ready() {
            waited += 1;
            assert!(
                waited < 100_000,
                "never prepared (direct I/O unsupported here?)"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(p.take().is_some());
        let mut all = Vec::new();
        File::open(dir.path().join(PREPARED))
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all.len(), 1 << 20);
        assert!(all.iter().all(|b| *b == 0));
        assert!(p.take().is_none());
    }
}
