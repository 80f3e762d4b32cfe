//! On-disk format: the DDL, the schema version check and connection setup.
//!
//! `docs/storage.md` describes every table; keep the two in step.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::StoreError;
use crate::types::{CheckpointMode, StoreOptions, StoreTuning};

/// Schema version this build writes and understands. Bump it with a migration in [`init`].
///
/// Version 1 kept events and dedup keys in SQLite; version 2 keeps them in the journal and the
/// dedup index, and SQLite holds only what is written rarely (retries, dead letters, audit,
/// target cursors). `crate::migrate` moves a version 1 store forward.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// File name inside the store directory.
pub(crate) const DB_FILE: &str = "switchboard.db";

/// The schema of version 1, kept to migrate from it (and for tests that build a version 1 file).
/// Frozen: it is what that release wrote, so [`DDL_V2`] repeats the tables both have rather than
/// sharing text with it.
pub(crate) const DDL_V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    envelope        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at_ms);

CREATE TABLE IF NOT EXISTS dedup (
    key             TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    expires_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expires ON dedup(expires_at_ms);

CREATE TABLE IF NOT EXISTS deliveries (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT NOT NULL,
    target              TEXT NOT NULL,
    rule                TEXT NOT NULL,
    payload             TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    enqueued_at_ms      INTEGER NOT NULL,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(target, next_attempt_at_ms);

CREATE TABLE IF NOT EXISTS dlq (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id             TEXT NOT NULL,
    target               TEXT NOT NULL,
    rule                 TEXT NOT NULL,
    payload              TEXT NOT NULL,
    error_code           TEXT NOT NULL,
    error_message        TEXT NOT NULL,
    exhausted_condition  TEXT,
    retry_attempts       INTEGER NOT NULL,
    enqueued_at_ms       INTEGER NOT NULL,
    failed_at_ms         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_failed ON dlq(failed_at_ms);
CREATE INDEX IF NOT EXISTS dlq_target ON dlq(target);

CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
";

/// The current schema (tables, indexes): what SQLite holds beside the journal.
pub(crate) const DDL_V2: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT NOT NULL,
    target              TEXT NOT NULL,
    rule                TEXT NOT NULL,
    payload             TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    enqueued_at_ms      INTEGER NOT NULL,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(target, next_attempt_at_ms);

CREATE TABLE IF NOT EXISTS dlq (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id             TEXT NOT NULL,
    target               TEXT NOT NULL,
    rule                 TEXT NOT NULL,
    payload              TEXT NOT NULL,
    error_code           TEXT NOT NULL,
    error_message        TEXT NOT NULL,
    exhausted_condition  TEXT,
    retry_attempts       INTEGER NOT NULL,
    enqueued_at_ms       INTEGER NOT NULL,
    failed_at_ms         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_failed ON dlq(failed_at_ms);
CREATE INDEX IF NOT EXISTS dlq_target ON dlq(target);

CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS cursors (
    target      TEXT PRIMARY KEY,
    next_seq    INTEGER NOT NULL,
    settled     TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
";

/// Opens a connection with the pragmas every connection shares.
pub(crate) fn open_connection(
    path: &Path,
    opts: &StoreOptions,
    tuning: &StoreTuning,
) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(tuning.busy_timeout_ms))?;
    // Only takes effect while the file is still empty (before WAL mode writes the header); an
    // existing store keeps the page size it was created with.
    conn.pragma_update(None, "page_size", tuning.page_size)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // WAL is what makes readers independent of the writer and the commit a single
        // sequential append + fsync; anything else breaks the argument in docs/storage.md.
        return Err(StoreError::Internal(format!(
            "could not enable WAL mode (journal_mode={mode})"
        )));
    }
    let sync = if opts.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "journal_size_limit", tuning.journal_size_limit_bytes)?;
    // Rows are self-contained (a delivery carries its payload), so no foreign keys: they would
    // cost an index probe per insert and make expiry order-dependent.
    conn.pragma_update(None, "foreign_keys", false)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Writer-only settings.
pub(crate) fn configure_writer(conn: &Connection, tuning: &StoreTuning) -> Result<(), StoreError> {
    let pages = match tuning.checkpoint {
        CheckpointMode::Auto { pages } => pages,
        CheckpointMode::Background { fallback_pages, .. } => fallback_pages,
    };
    conn.pragma_update(None, "wal_autocheckpoint", pages)?;
    conn.pragma_update(None, "cache_size", -tuning.writer_cache_kib.max(64))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Creates or checks the schema. Refuses databases from a newer build and files that are
/// SQLite but not ours. Returns the version found; a version 1 file is left as it is for
/// `crate::migrate` (which needs the journal open) to move forward.
pub(crate) fn init(conn: &mut Connection) -> Result<i64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has_meta: bool = tx
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let table_count: i64 = tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;
    if has_meta {
        let found: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let found = found
            .ok_or_else(|| StoreError::NotAStore("meta table has no schema_version".into()))?;
        let found: i64 = found.parse().map_err(|_| {
            StoreError::NotAStore(format!("schema_version {found:?} is not a number"))
        })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            tx.commit()?;
            return Ok(found);
        }
    } else if table_count > 0 {
        return Err(StoreError::NotAStore(
            "database has tables but no switchboard meta table".into(),
        ));
    } else {
        tx.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
        )?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION.to_string()],
        )?;
    }
    tx.execute_batch(DDL_V2)?;
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_records_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let opts = StoreOptions::default();
        let tuning = StoreTuning::default();
        for _ in 0..2 {
            let mut conn = open_connection(&path, &opts, &tuning).unwrap();
            init(&mut conn).unwrap();
            let v: String = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION.to_string());
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(sync, 2, "FULL");
        }
    }

    #[test]
    fn queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut conn =
            open_connection(&path, &StoreOptions::default(), &StoreTuning::default()).unwrap();
        init(&mut conn).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows.join(" | ")
        };
        for (sql, index) in [
            (
                "SELECT seq FROM deliveries WHERE target = 't' AND next_attempt_at_ms <= 5
                 ORDER BY next_attempt_at_ms, seq LIMIT 10",
                "deliveries_due",
            ),
            (
                "SELECT min(next_attempt_at_ms) FROM deliveries WHERE target = 't'",
                "deliveries_due",
            ),
            (
                "SELECT min(next_attempt_at_ms) FROM deliveries
                 WHERE target = 't' AND next_attempt_at_ms > 5",
                "deliveries_due",
            ),
            (
                "SELECT target, count(*) FROM dlq GROUP BY target",
                "dlq_target",
            ),
        ] {
            let p = plan(sql);
            assert!(p.contains(index), "{sql}\n=> {p}");
            assert!(!p.contains("TEMP B-TREE"), "{sql} sorts: {p}");
        }
    }
}
