//! Switchboard's embedded durable store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! It owns the ingest log (`events`), the dedup index with TTL (`dedup`), the per-target
//! delivery queues (`deliveries`), the dead-letter queue (`dlq`) and the audit log (`audit`).
//! `docs/storage.md` gives the format and argues the commit protocol crash by crash.
//!
//! # Brief overview
//!
//! - [`Store`] is the async handle (cheap to clone). [`Store::ingest`] dedups, persists an event
//!   and enqueues its deliveries in one transaction and returns only once that transaction is
//!   fsync'd. Delivery workers use [`Store::due`], [`Store::complete`], [`Store::reschedule`]
//!   and [`Store::dead_letter`]; the admin API uses the DLQ, redrive and audit calls.
//! - All writes go through **one writer thread** (an OS thread, not a tokio worker) fed by a
//!   bounded queue. It commits whatever is queued as one transaction (group commit), then
//!   answers. A full queue makes `ingest` answer [`StoreError::Busy`] at once (backpressure).
//! - A failed commit (fsync) makes the store **fail-stop**: every later call answers
//!   [`StoreError::Failed`] and [`Store::is_healthy`] turns false until the process reopens it.
//! - Reads run on a small pool of read-only connections on `spawn_blocking`; in WAL mode they
//!   never block the writer and see exactly what has been acknowledged.
//! - A background checkpointer thread copies the WAL into the main file, off the commit path.
//!
//! # Layout
//!
//! - `store`: the [`Store`] handle and its async API.
//! - `writer`: the writer thread (group commit, savepoint per command, fail-stop) and the
//!   checkpointer thread.
//! - `reader`: the read pool and read queries, page tokens.
//! - `schema`: DDL, schema version check, connection pragmas.
//! - `types`: the public data types; `error`: [`StoreError`].

mod consumer;
mod dedup_cache;
mod dedup_index;
mod error;
mod ingest_writer;
mod journal;
mod migrate;
mod reader;
mod schema;
mod segfile;
mod store;
mod types;
mod writer;

pub use error::StoreError;
pub use store::{Store, WriterPause, now_ms};
pub use types::{
    AuditRecord, CheckpointMode, DeadLetter, DeadLetterInfo, DedupClaim, Delivery, DeliveryId,
    DlqFilter, ExpireStats, IngestOutcome, NewDelivery, NewEvent, Page, QueuePoll, RedriveReport,
    RedriveSelector, StoreOptions, StoreTuning, StoredEvent,
};

/// A batch this small makes the writer wait [`StoreTuning::commit_linger_us`] for more. From 8
/// commands on, one commit is already shared widely enough that waiting would only add latency.
pub const LINGER_BELOW: usize = 8;

/// Longest [`StoreTuning::commit_linger_us`] accepted: beyond it the wait is a
/// misconfiguration, not batching.
pub const MAX_COMMIT_LINGER_US: u64 = 100_000;

/// Highest on-disk schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;
/// The version 1 schema, for tests that build a store as an older release wrote it, and for the
/// engines benchmark, which compares embedded stores on the tables that release used.
#[doc(hidden)]
pub const SCHEMA_DDL_V1: &str = schema::DDL_V1;

/// Name of the database file inside the store directory.
pub const DB_FILE_NAME: &str = schema::DB_FILE;
