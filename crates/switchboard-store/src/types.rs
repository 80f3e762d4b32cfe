//! Public data types: what goes in, what comes out.

use std::collections::BTreeMap;

use serde::Serialize;

/// Options every deployment may want to set (the gateway maps its config onto these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most commands the writer folds into one transaction (one fsync). Default 512: past that
    /// the fsync is amortised and larger batches only grow the tail latency.
    pub max_batch: usize,
    /// Capacity of the bounded write queue. When full, `ingest` answers [`StoreError::Busy`]
    /// at once (the gateway turns it into 503 + Retry-After). Default 4096.
    ///
    /// [`StoreError::Busy`]: crate::StoreError::Busy
    pub queue_capacity: usize,
    /// `PRAGMA synchronous=FULL` (fsync the WAL on every commit). Default true. `false` uses
    /// `NORMAL`, which in WAL mode survives process crashes but NOT power loss or kernel panics:
    /// acknowledged events can then be lost. Only for tests and benchmarks.
    pub synchronous_full: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 512,
            queue_capacity: 4096,
            synchronous_full: true,
        }
    }
}

/// How the WAL is checkpointed (copied back into the main database file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointMode {
    /// SQLite's built-in auto-checkpoint: the commit that pushes the WAL past `pages` pages runs
    /// a PASSIVE checkpoint inline, before its batch is acknowledged.
    Auto {
        /// `PRAGMA wal_autocheckpoint` value (SQLite's default is 1000).
        pages: u32,
    },
    /// A dedicated checkpointer thread on its own connection runs `wal_checkpoint(PASSIVE)`
    /// every `interval_ms` when something was committed, so commits never pay for it. The
    /// writer keeps an inline auto-checkpoint at `fallback_pages` as a bound on WAL growth in
    /// case the checkpointer falls behind.
    Background {
        /// Milliseconds between checkpoint attempts.
        interval_ms: u64,
        /// Inline `wal_autocheckpoint` kept as a safety net (0 disables it; not recommended).
        fallback_pages: u32,
    },
}

/// Tuning knobs with measured defaults (see `docs/storage.md` and `BENCHMARKS.md ("Store" section)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTuning {
    /// Checkpoint strategy.
    pub checkpoint: CheckpointMode,
    /// `PRAGMA journal_size_limit` in bytes: the WAL file is truncated to this size when it is
    /// reset after a full checkpoint, so one burst does not keep a huge file forever.
    pub journal_size_limit_bytes: i64,
    /// `busy_timeout` for all connections. Only the checkpointer and readers can contend with
    /// the writer, and only briefly.
    pub busy_timeout_ms: u64,
    /// Most read connections open at once (reads run on `spawn_blocking`).
    pub max_readers: usize,
    /// Writer page cache in KiB (`PRAGMA cache_size=-N`).
    pub writer_cache_kib: i64,
    /// Recently committed dedup keys kept in memory so duplicates are answered without the
    /// writer (about 200 bytes each); 0 disables.
    pub dedup_cache_entries: usize,
    /// SQLite page size for a new store file (an existing file keeps its own). Measured when
    /// events still lived in SQLite (schema v1): 1024 wrote ~40 % fewer WAL bytes per event
    /// than 4096 at small commits, for no CPU gain (BENCHMARKS.md); 4096 stays the default. The
    /// SQLite file now holds only retries, dead letters, audit and cursors.
    pub page_size: u32,
    /// When the ingest writer finds fewer than [`LINGER_BELOW`] ingests queued, it waits this
    /// long once for more before it writes the group; 0 commits at once. Without it sparse
    /// arrivals pay a journal write and sync each; with it a lone event waits up to this long
    /// and the device sees fewer, larger writes. 300 µs saved 4–9 % of CPU per event at half
    /// load without raising p50 when it was measured on the v1 store (BENCHMARKS.md). On the
    /// journal only its cost is measured: one writer at a time gets 1,241 events/s (p50
    /// 0.60 ms), slower than the v1 store's 3,812/s, which BENCHMARKS.md puts down to this
    /// linger; that case was not re-measured with the linger off. With 32 concurrent senders
    /// (closed loop, 2026-12-02) turning it off cut the events per write from 12–14 to 8–9 and
    /// left the rate inside the noise. At most [`MAX_COMMIT_LINGER_US`].
    ///
    /// [`MAX_COMMIT_LINGER_US`]: crate::MAX_COMMIT_LINGER_US
    ///
    /// [`LINGER_BELOW`]: crate::LINGER_BELOW
    pub commit_linger_us: u64,
    /// A journal segment is closed and a new one started once it holds this many bytes.
    /// Retention deletes whole segments, so this is also the granularity of expiry.
    pub journal_segment_bytes: u64,
    /// Recently committed journal records kept in memory, so target workers that keep up read
    /// their deliveries without touching the disk. A worker that falls further behind reads the
    /// segment files instead.
    pub tail_bytes: usize,
    /// The dedup memtable is written out as a run once it holds this many claims ...
    pub dedup_flush_entries: usize,
    /// ... or is this many seconds old. Both bound what a restart replays from the journal.
    pub dedup_flush_secs: u64,
}

impl Default for StoreTuning {
    fn default() -> Self {
        StoreTuning {
            checkpoint: CheckpointMode::Background {
                interval_ms: 1_000,
                fallback_pages: 16_384,
            },
            journal_size_limit_bytes: 64 * 1024 * 1024,
            busy_timeout_ms: 5_000,
            max_readers: 4,
            writer_cache_kib: 16 * 1024,
            dedup_cache_entries: 65_536,
            page_size: 4096,
            commit_linger_us: 300,
            journal_segment_bytes: 64 << 20,
            tail_bytes: 16 << 20,
            dedup_flush_entries: 65_536,
            dedup_flush_secs: 60,
        }
    }
}

/// An event to persist, with its dedup claim and the deliveries routing produced for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Envelope id (unique per event; also the idempotency key of every delivery).
    pub id: String,
    /// Configured source name (webhook path, `genesys-ws`, ...).
    pub source: String,
    /// Receive time; also the "now" against which the dedup window is judged.
    pub received_at_ms: i64,
    /// Dedup key to claim atomically with the insert, if the source has one.
    pub dedup: Option<DedupClaim>,
    /// Also claim the envelope id itself for this long. Set for ids the sender chose (an
    /// EventBridge envelope passed through): a relay that retries the same envelope is then a
    /// duplicate even without a dedup key. Ids the gateway generates cannot repeat and need no
    /// claim.
    pub identity_ttl_ms: Option<i64>,
    /// The normalized envelope, JSON text.
    pub envelope: String,
    /// One row per (rule, target) match, with the already transformed payload.
    pub deliveries: Vec<NewDelivery>,
}

/// A dedup key and how long it stays claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupClaim {
    /// The key (provider delivery id, topic + correlation id, or a hashed template).
    pub key: String,
    /// Window length; the key expires at `received_at_ms + ttl_ms`.
    pub ttl_ms: i64,
}

/// One delivery to enqueue for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Target id.
    pub target: String,
    /// Rule name that matched.
    pub rule: String,
    /// Payload to send after the input transformer; `None` sends the envelope itself, which is
    /// then stored once for all such deliveries.
    pub payload: Option<String>,
}

/// What `ingest` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum IngestOutcome {
    /// New event: stored with its deliveries, durably (fsync'd) before this was returned.
    Stored,
    /// The dedup key (or the event id) was already present within its window: nothing stored.
    Duplicate {
        /// Id of the event that claimed the key first.
        original_id: String,
    },
}

/// Where a delivery waits, which is also how it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "queue", rename_all = "snake_case")]
pub enum DeliveryId {
    /// A first attempt, read from the ingest journal: record `seq`, delivery `index` of it.
    Journal {
        /// Journal record.
        seq: u64,
        /// Position among the record's deliveries.
        index: u32,
    },
    /// A retry, a redrive or a replay, in the `deliveries` table (AUTOINCREMENT: never reused).
    Queued(i64),
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryId::Journal { seq, index } => write!(f, "j{seq}.{index}"),
            DeliveryId::Queued(s) => write!(f, "q{s}"),
        }
    }
}

/// A delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Where it waits; pass it back to complete, reschedule or dead-letter it.
    pub id: DeliveryId,
    /// Envelope id (the consumer's idempotency key).
    pub event_id: String,
    /// Target id.
    pub target: String,
    /// Rule that produced it.
    pub rule: String,
    /// Payload to send.
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was enqueued (or redriven).
    pub enqueued_at_ms: i64,
    /// Not to be attempted before this time.
    pub next_attempt_at_ms: i64,
}

/// One look at a target's queue: what is due now, and when to look again ([`Store::poll_queue`]).
///
/// [`Store::poll_queue`]: crate::Store::poll_queue
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePoll {
    /// Due deliveries, earliest due first, then by seq.
    pub due: Vec<Delivery>,
    /// The limit was reached: more may be due right now.
    pub more_due: bool,
    /// When the earliest delivery that is not yet due becomes due; `None` when there is none,
    /// or when `more_due` (the caller reads again at once anyway).
    pub next_due_at: Option<i64>,
}

/// Why a delivery is being dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Bounded, low-cardinality error code (e.g. `http_5xx`, `timeout`).
    pub error_code: String,
    /// Human-readable last error.
    pub error_message: String,
    /// `MaximumRetryAttempts` / `MaximumEventAgeInSeconds` when a retry policy ran out, None
    /// for non-retryable failures.
    pub exhausted_condition: Option<String>,
    /// Attempts made.
    pub retry_attempts: u32,
}

/// A dead-lettered delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// DLQ id; never reused (AUTOINCREMENT), so redriving by id cannot hit a different row.
    pub id: i64,
    /// Envelope id.
    pub event_id: String,
    /// Target id.
    pub target: String,
    /// Rule that produced the delivery.
    pub rule: String,
    /// Payload that could not be delivered.
    pub payload: String,
    /// See [`DeadLetterInfo::error_code`].
    pub error_code: String,
    /// See [`DeadLetterInfo::error_message`].
    pub error_message: String,
    /// See [`DeadLetterInfo::exhausted_condition`].
    pub exhausted_condition: Option<String>,
    /// See [`DeadLetterInfo::retry_attempts`].
    pub retry_attempts: u32,
    /// When the delivery was (last) enqueued.
    pub enqueued_at_ms: i64,
    /// When it was dead-lettered.
    pub failed_at_ms: i64,
}

/// Which dead letters to list. All fields are ANDed; `Default` lists everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqFilter {
    /// Only this target.
    pub target: Option<String>,
    /// Only this error code.
    pub error_code: Option<String>,
    /// Only `failed_at_ms >= failed_from_ms`.
    pub failed_from_ms: Option<i64>,
    /// Only `failed_at_ms < failed_to_ms`.
    pub failed_to_ms: Option<i64>,
}

/// Which dead letters to move back to their queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveSelector {
    /// Every dead letter, or every one of one target.
    All {
        /// Restrict to this target.
        target: Option<String>,
    },
    /// These DLQ ids (unknown ids are reported in [`RedriveReport::missing`]).
    Ids(Vec<i64>),
    /// Dead letters with `from_ms <= failed_at_ms < to_ms`.
    TimeRange {
        /// Inclusive lower bound.
        from_ms: i64,
        /// Exclusive upper bound.
        to_ms: i64,
        /// Restrict to this target.
        target: Option<String>,
    },
}

/// What a redrive moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Rows moved from the DLQ back to the delivery queues.
    pub moved: u64,
    /// Moved rows per target: the gateway wakes these targets' workers.
    pub per_target: BTreeMap<String, u64>,
    /// For [`RedriveSelector::Ids`]: ids that were not in the DLQ.
    pub missing: Vec<i64>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Opaque token for the next page; None on the last page.
    pub next_page_token: Option<String>,
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the log; never reused.
    pub seq: i64,
    /// When it was appended (wall clock of the store).
    pub at_ms: i64,
    /// Who did it.
    pub actor: String,
    /// What they did (e.g. `dlq.redrive`).
    pub action: String,
    /// Structured detail.
    pub detail: serde_json::Value,
}

/// An event from the ingest log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    /// Position in the journal (pages of [`Store::events_between`] continue after it).
    ///
    /// [`Store::events_between`]: crate::Store::events_between
    pub seq: u64,
    /// Envelope id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Receive time.
    pub received_at_ms: i64,
    /// Envelope JSON text.
    pub envelope: String,
}

/// What one `expire` call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireStats {
    /// Journal segments deleted (each a file of events past retention).
    pub segments_deleted: u64,
    /// Events in those segments.
    pub events_deleted: u64,
}
