//! Moving a store written by an older Switchboard forward.
//!
//! Version 1 kept events and dedup keys in SQLite tables. Version 2 keeps them in the journal
//! and the dedup index. The migration writes every event into a new journal (oldest first,
//! with the dedup claim it holds), writes the live claims out as a dedup run, and only then
//! drops the two tables and records version 2, in one SQLite transaction. A crash before that
//! transaction leaves a version 1 file: the next open deletes the half-written journal and
//! starts over. Queued deliveries and dead letters were already in the tables version 2 keeps.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::dedup_index::{DedupIndex, Entry, FlushPolicy, hash_key};
use crate::error::StoreError;
use crate::journal::{self, EventRecord};
use crate::schema;
use crate::store::{DEDUP_DIR, JOURNAL_DIR};
use crate::types::StoreTuning;

/// Records staged per journal commit during the migration.
const CHUNK: usize = 1_000;

pub(crate) fn from_v1(
    conn: &mut Connection,
    dir: &Path,
    tuning: &StoreTuning,
    now: i64,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let jdir = dir.join(JOURNAL_DIR);
    let ddir = dir.join(DEDUP_DIR);
    for d in [&jdir, &ddir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    let mut j = journal::open(&jdir, tuning.journal_segment_bytes, now)?;
    // One run at the end, whatever the size: the migration must not leave a memtable behind.
    let policy = FlushPolicy {
        max_entries: usize::MAX,
        max_age: Duration::from_secs(u64::MAX / 4),
    };
    let (mut index, _) = DedupIndex::open(&ddir, policy)?;

    let mut claims: HashMap<String, (String, i64)> = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT key, event_id, expires_at_ms FROM dedup WHERE expires_at_ms > ?1")?;
        let rows = stmt.query_map([now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (key, event_id, expires) = row?;
            claims.insert(event_id, (key, expires));
        }
    }
    let mut events = 0u64;
    {
        let mut stmt = conn.prepare(
            "SELECT id, source, received_at_ms, envelope FROM events ORDER BY received_at_ms, id",
        )?;
        let mut rows = stmt.query([])?;
        let mut staged = 0;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let claim = claims.remove(&id);
            let seq = j.writer.next_seq();
            let rec = EventRecord {
                seq,
                received_at_ms: row.get(2)?,
                dedup: claim.as_ref().map(|(k, e)| (hash_key(k), *e)),
                identity_expires_at_ms: None,
                source: row.get(1)?,
                envelope: row.get(3)?,
                deliveries: Vec::new(),
                id,
            };
            j.writer.stage(&rec)?;
            if let Some((k, e)) = &claim {
                index.insert(&hash_key(k), Entry::new(seq, *e, &rec.id));
            }
            events += 1;
            staged += 1;
            if staged == CHUNK {
                j.writer.commit()?;
                j.writer.roll_if_full(now)?;
                staged = 0;
            }
        }
    }
    j.writer.commit()?;
    // Claims whose event already left the v1 ingest log: kept when the id fits in the claim.
    let mut orphaned = 0u64;
    for (event_id, (key, expires)) in claims {
        let e = Entry::new(0, expires, &event_id);
        if e.event_id().is_some() {
            index.insert(&hash_key(&key), e);
        } else {
            orphaned += 1;
        }
    }
    index.close(j.writer.next_seq());
    drop(j);

    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS dedup;")?;
    tx.execute_batch(schema::DDL_V2)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [schema::SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    tracing::info!(
        events,
        orphaned_claims_dropped = orphaned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "migrated the store from schema version 1 to 2"
    );
    Ok(())
}
