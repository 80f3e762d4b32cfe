//! Target queues over the journal.
//!
//! A delivery's first attempt is not written anywhere but the journal record of its event:
//! each target *consumes* the journal from its cursor, picking the deliveries routed to it.
//! Only a delivery that fails its first attempt is copied into the `deliveries` table (a
//! *spill*), where retries, redrives and replays wait. So the common case (delivered on the
//! first try) costs no write beyond the journal append, and a failing target costs what it
//! did before.
//!
//! A consumer hands deliveries out in journal order and remembers which are in flight; its
//! *cursor* is the lowest seq with an unsettled delivery (settled = delivered, spilled or
//! dead-lettered). Cursors are saved every few hundred milliseconds; after a crash a target
//! resumes from its saved cursor, so deliveries settled since are attempted again: at least
//! once, never lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::journal::{EventRecord, JournalReader, Segments};
use crate::types::{Delivery, DeliveryId};

/// Most records one poll looks at, whatever it finds: a target that few events are routed to
/// must not hold a worker in one long scan.
const MAX_SCAN: usize = 50_000;

/// Journal state that readers share with the ingest writer.
#[derive(Debug)]
pub(crate) struct JournalShared {
    pub(crate) segments: Arc<Segments>,
    /// One past the last committed (fsync'd) record: nothing at or beyond it is read.
    pub(crate) committed_end: AtomicU64,
    pub(crate) tail: Mutex<Tail>,
    /// Unsettled journal deliveries per target (queue depth, `/metrics`).
    pub(crate) pending: Mutex<HashMap<String, u64>>,
}

impl JournalShared {
    pub(crate) fn end(&self) -> u64 {
        self.committed_end.load(Ordering::Acquire)
    }

    pub(crate) fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The most recent committed records, in memory.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Seq of `recs[0]`.
    base: u64,
    recs: VecDeque<Arc<EventRecord>>,
    bytes: usize,
    max_bytes: usize,
}

fn approx_size(r: &EventRecord) -> usize {
    let d: usize = r
        .deliveries
        .iter()
        .map(|d| 64 + d.target.len() + d.rule.len() + d.payload.as_ref().map_or(0, String::len))
        .sum();
    128 + r.id.len() + r.source.len() + r.envelope.len() + d
}

impl Tail {
    pub(crate) fn new(next_seq: u64, max_bytes: usize) -> Tail {
        Tail {
            base: next_seq,
            recs: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends committed records (consecutive seqs, continuing the tail).
    pub(crate) fn push(&mut self, recs: impl IntoIterator<Item = Arc<EventRecord>>) {
        for r in recs {
            if self.recs.is_empty() {
                self.base = r.seq;
            }
            debug_assert_eq!(r.seq, self.base + self.recs.len() as u64);
            self.bytes += approx_size(&r);
            self.recs.push_back(r);
        }
        while self.bytes > self.max_bytes
            && let Some(old) = self.recs.pop_front()
        {
            self.bytes -= approx_size(&old);
            self.base += 1;
        }
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Arc<EventRecord>> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.recs.get(i)
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Arc<EventRecord>> {
        self.recs.iter()
    }
}

/// A target's position as saved in SQLite: everything below `next_seq` is settled, and so
/// are the `settled` deliveries at or above it (settled out of order), so that a restart after
/// a clean close hands out nothing twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SavedCursor {
    pub(crate) next_seq: u64,
    pub(crate) settled: Vec<(u64, u32)>,
}

/// Most out-of-order settlements kept per target; beyond it a restart may repeat some.
const MAX_SETTLED_AHEAD: usize = 100_000;

impl SavedCursor {
    pub(crate) fn at(next_seq: u64) -> SavedCursor {
        SavedCursor {
            next_seq,
            settled: Vec::new(),
        }
    }

    /// Whether delivery `index` of record `seq` is settled by this cursor.
    pub(crate) fn covers(&self, seq: u64, index: u32) -> bool {
        seq < self.next_seq || self.settled.binary_search(&(seq, index)).is_ok()
    }

    /// `settled` as stored: `seq.index` pairs separated by spaces.
    pub(crate) fn settled_text(&self) -> String {
        let mut out = String::new();
        for (s, i) in &self.settled {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("{s}.{i}"));
        }
        out
    }

    /// Parses [`settled_text`](Self::settled_text); a damaged list is dropped (the deliveries
    /// in it are then repeated, which at-least-once allows).
    pub(crate) fn parse(next_seq: u64, text: &str) -> SavedCursor {
        let parsed: Option<Vec<(u64, u32)>> = text
            .split_ascii_whitespace()
            .map(|p| {
                let (s, i) = p.split_once('.')?;
                Some((s.parse().ok()?, i.parse().ok()?))
            })
            .collect();
        let mut settled = parsed.unwrap_or_default();
        settled.sort_unstable();
        settled.dedup();
        SavedCursor { next_seq, settled }
    }
}

/// One target's position in the journal.
///
/// Polls *peek*, like a read of the `deliveries` table: a delivery is returned by every poll
/// until it is settled. Records already examined that still owe this target something are kept
/// in `owed` (shared with the tail, with the indices of the unsettled deliveries), so a poll
/// never re-reads the journal for them and builds each returned delivery with one copy.
pub(crate) struct Consumer {
    target: String,
    /// Every record below this has been examined.
    scanned_to: u64,
    /// Examined records with unsettled deliveries to this target, in seq order.
    owed: VecDeque<Owed>,
    /// Deliveries settled out of order, at or above the cursor.
    settled_ahead: std::collections::BTreeSet<(u64, u32)>,
    reader: Option<JournalReader>,
}

struct Owed {
    rec: Arc<EventRecord>,
    /// Unsettled deliveries of this target, as indices into `rec.deliveries`.
    indices: Vec<u32>,
}

/// What one poll found.
pub(crate) enum Polled {
    Found {
        deliveries: Vec<Delivery>,
        /// More is due right now than was returned.
        more: bool,
        /// The next record is not due until then (only when the clock is behind a receive time).
        next_due_at: Option<i64>,
    },
    /// The next record is no longer in memory: poll again with file access allowed.
    NeedsIo,
}

fn delivery(rec: &EventRecord, index: u32) -> Option<Delivery> {
    let i = usize::try_from(index).ok()?;
    let d = rec.deliveries.get(i)?;
    Some(Delivery {
        id: DeliveryId::Journal {
            seq: rec.seq,
            index,
        },
        event_id: rec.id.clone(),
        target: d.target.clone(),
        rule: d.rule.clone(),
        payload: rec.payload(i)?.to_owned(),
        attempts: 0,
        enqueued_at_ms: rec.received_at_ms,
        next_attempt_at_ms: rec.received_at_ms,
    })
}

impl Consumer {
    pub(crate) fn new(target: String, from: SavedCursor) -> Consumer {
        Consumer {
            target,
            scanned_to: from.next_seq,
            owed: VecDeque::new(),
            settled_ahead: from.settled.into_iter().collect(),
            reader: None,
        }
    }

    /// What to save so that a restart resumes exactly here.
    pub(crate) fn saved(&self) -> SavedCursor {
        SavedCursor {
            next_seq: self.cursor(),
            settled: self
                .settled_ahead
                .iter()
                .take(MAX_SETTLED_AHEAD)
                .copied()
                .collect(),
        }
    }

    /// Lowest seq that may still hold an unsettled delivery of this target.
    pub(crate) fn cursor(&self) -> u64 {
        self.owed.front().map_or(self.scanned_to, |o| o.rec.seq)
    }

    /// Nothing owed and nothing committed left to examine.
    #[cfg(test)]
    pub(crate) fn is_drained(&self, end: u64) -> bool {
        self.owed.is_empty() && self.scanned_to >= end
    }

    /// Up to `limit` unsettled deliveries due at `now_ms`, oldest first (a record's deliveries
    /// to this target are never split across polls, so one poll may return a few more).
    pub(crate) fn poll(
        &mut self,
        shared: &JournalShared,
        limit: usize,
        now_ms: i64,
        allow_io: bool,
    ) -> Result<Polled, StoreError> {
        let end = shared.end();
        let start = shared.segments.start_seq();
        if self.scanned_to < start {
            // Retention removed records this consumer never examined: it was not a registered
            // target (registered targets hold retention back), so nothing it owes is lost.
            self.scanned_to = start;
        }
        let mut out: Vec<Delivery> = Vec::new();
        let mut more = false;
        for o in &self.owed {
            if out.len() >= limit {
                more = true;
                break;
            }
            out.extend(o.indices.iter().filter_map(|&i| delivery(&o.rec, i)));
        }
        let mut next_due_at = None;
        let mut scanned = 0usize;
        if !more {
            let tail = shared.tail();
            while self.scanned_to < end && out.len() < limit && scanned < MAX_SCAN {
                let Some(rec) = tail.get(self.scanned_to) else {
                    break;
                };
                if rec.received_at_ms > now_ms {
                    next_due_at = Some(rec.received_at_ms);
                    break;
                }
                let rec = rec.clone();
                self.examine(rec, &mut out);
                scanned += 1;
            }
        }
        while !more
            && next_due_at.is_none()
            && self.scanned_to < end
            && out.len() < limit
            && scanned < MAX_SCAN
        {
            if !allow_io {
                if out.is_empty() {
                    return Ok(Polled::NeedsIo);
                }
                break;
            }
            let reader = self
                .reader
                .get_or_insert_with(|| JournalReader::new(shared.segments.clone()));
            match reader.read(self.scanned_to, end)? {
                Some(rec) if rec.received_at_ms > now_ms => {
                    next_due_at = Some(rec.received_at_ms);
                }
                Some(rec) => self.examine(Arc::new(rec), &mut out),
                // Deleted by retention between the check above and the read.
                None => self.scanned_to += 1,
            }
            scanned += 1;
            if shared.tail().get(self.scanned_to).is_some() {
                // Back in the window the tail holds: continue from memory next time.
                self.reader = None;
                break;
            }
        }
        more |= next_due_at.is_none() && self.scanned_to < end;
        Ok(Polled::Found {
            deliveries: out,
            more,
            next_due_at: if more { None } else { next_due_at },
        })
    }

    fn examine(&mut self, rec: Arc<EventRecord>, out: &mut Vec<Delivery>) {
        let mut indices = Vec::new();
        for (i, d) in rec.deliveries.iter().enumerate() {
            let Ok(index) = u32::try_from(i) else { break };
            if d.target != self.target || self.settled_ahead.contains(&(rec.seq, index)) {
                continue;
            }
            if let Some(d) = delivery(&rec, index) {
                out.push(d);
                indices.push(index);
            }
        }
        self.scanned_to = rec.seq + 1;
        if !indices.is_empty() {
            self.owed.push_back(Owed { rec, indices });
        }
        self.prune();
    }

    /// Forgets out-of-order settlements the cursor has passed.
    fn prune(&mut self) {
        let cursor = self.cursor();
        if self.settled_ahead.first().is_some_and(|&(s, _)| s < cursor) {
            self.settled_ahead = self.settled_ahead.split_off(&(cursor, 0));
        }
    }

    /// Marks a delivery settled. False if it was not owed (settled twice, or never examined).
    pub(crate) fn settle(&mut self, seq: u64, index: u32) -> bool {
        let i = self.owed.partition_point(|o| o.rec.seq < seq);
        let Some(o) = self.owed.get_mut(i).filter(|o| o.rec.seq == seq) else {
            return false;
        };
        let Some(pos) = o.indices.iter().position(|&i| i == index) else {
            return false;
        };
        o.indices.remove(pos);
        let emptied = o.indices.is_empty();
        if emptied {
            self.owed.remove(i);
        }
        if i > 0 || !emptied {
            self.settled_ahead.insert((seq, index));
        }
        self.prune();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{self, RecordDelivery};

    fn rec(seq: u64, targets: &[&str]) -> EventRecord {
        EventRecord {
            seq,
            received_at_ms: seq as i64,
            dedup: None,
            identity_expires_at_ms: None,
            id: format!("e{seq}"),
            source: "s".into(),
            envelope: "{}".into(),
            deliveries: targets
                .iter()
                .map(|t| RecordDelivery {
                    target: (*t).into(),
                    rule: "r".into(),
                    payload: None,
                })
                .collect(),
        }
    }

    fn shared_with(
        dir: &std::path::Path,
        recs: &[EventRecord],
        tail_bytes: usize,
    ) -> JournalShared {
        let mut j = journal::open(dir, 1 << 30, 0).unwrap();
        for r in recs {
            j.writer.stage(r).unwrap();
        }
        j.writer.commit().unwrap();
        let mut tail = Tail::new(0, tail_bytes);
        tail.push(recs.iter().cloned().map(Arc::new));
        JournalShared {
            segments: j.segments.clone(),
            committed_end: AtomicU64::new(recs.len() as u64),
            tail: Mutex::new(tail),
            pending: Mutex::default(),
        }
    }

    fn ids(p: Polled) -> (Vec<DeliveryId>, bool) {
        match p {
            Polled::Found {
                deliveries, more, ..
            } => (deliveries.into_iter().map(|d| d.id).collect(), more),
            Polled::NeedsIo => panic!("needs io"),
        }
    }

    #[test]
    fn consumers_peek_until_settled_and_the_cursor_waits_for_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<_> = (0..6)
            .map(|s| rec(s, if s % 2 == 0 { &["a", "b"] } else { &["b", "b"] }))
            .collect();
        let shared = shared_with(dir.path(), &recs, 1 << 20);
        let j = |seq, index| DeliveryId::Journal { seq, index };
        let mut a = Consumer::new("a".into(), SavedCursor::at(0));
        let (got, more) = ids(a.poll(&shared, 2, i64::MAX, false).unwrap());
        assert_eq!(got, vec![j(0, 0), j(2, 0)]);
        assert!(more);
        // Unsettled deliveries come back on the next poll, first.
        let (again, _) = ids(a.poll(&shared, 2, i64::MAX, false).unwrap());
        assert_eq!(again, got);
        assert_eq!(a.cursor(), 0);
        assert!(a.settle(2, 0));
        assert_eq!(a.cursor(), 0, "seq 0 is still owed");
        assert!(a.settle(0, 0));
        assert_eq!(a.cursor(), 3);
        assert!(!a.settle(0, 0), "settling twice is reported");
        // Settled out of order and saved: a consumer resumed from it skips exactly that one.
        let (got, _) = ids(a.poll(&shared, 2, i64::MAX, false).unwrap());
        assert_eq!(got, vec![j(4, 0)]);
        let mut a2 = Consumer::new("a".into(), a.saved());
        assert_eq!(
            ids(a2.poll(&shared, 10, i64::MAX, false).unwrap()).0,
            vec![j(4, 0)]
        );
        let saved = a.saved();
        assert_eq!(
            SavedCursor::parse(saved.next_seq, &saved.settled_text()),
            saved
        );
        // Both deliveries of one record to the same target come together.
        let mut b = Consumer::new("b".into(), SavedCursor::at(1));
        let (got, _) = ids(b.poll(&shared, 1, i64::MAX, false).unwrap());
        assert_eq!(got, vec![j(1, 0), j(1, 1)]);
        assert!(!a.is_drained(6));
    }

    #[test]
    fn records_received_after_now_are_not_due_yet() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<_> = (0..3).map(|s| rec(s, &["a"])).collect();
        let shared = shared_with(dir.path(), &recs, 1 << 20);
        let mut a = Consumer::new("a".into(), SavedCursor::at(0));
        match a.poll(&shared, 10, 1, false).unwrap() {
            Polled::Found {
                deliveries,
                more,
                next_due_at,
            } => {
                assert_eq!(deliveries.len(), 2);
                assert!(!more);
                assert_eq!(next_due_at, Some(2));
            }
            Polled::NeedsIo => panic!(),
        }
    }

    #[test]
    fn a_consumer_behind_the_tail_reads_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<_> = (0..200).map(|s| rec(s, &["a"])).collect();
        // A tail of a few records: most of the journal is only on disk.
        let shared = shared_with(dir.path(), &recs, 1_000);
        let mut a = Consumer::new("a".into(), SavedCursor::at(0));
        assert!(matches!(
            a.poll(&shared, 10, i64::MAX, false).unwrap(),
            Polled::NeedsIo
        ));
        let mut seen = Vec::new();
        loop {
            let (got, more) = ids(a.poll(&shared, 32, i64::MAX, true).unwrap());
            for id in &got {
                if let DeliveryId::Journal { seq, index } = id {
                    assert!(a.settle(*seq, *index));
                }
            }
            seen.extend(got);
            if !more {
                break;
            }
        }
        assert_eq!(seen.len(), 200);
        for (i, id) in seen.iter().enumerate() {
            assert_eq!(
                *id,
                DeliveryId::Journal {
                    seq: i as u64,
                    index: 0
                }
            );
        }
        assert!(a.is_drained(200));
    }
}
