//! Read side: a small pool of read-only connections used from `spawn_blocking`.
//!
//! Why not read on the writer thread: reads (delivery workers polling `due`, admin listings,
//! metrics) would then queue behind commits and fsyncs, and every read would lengthen the
//! commit path that ingest latency depends on. In WAL mode readers never block the writer and
//! see the last committed snapshot, which is exactly what the writer has acknowledged (it
//! replies only after COMMIT). `spawn_blocking` keeps the tokio workers free; a semaphore
//! bounds how many read connections exist at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::Semaphore;

use crate::consumer::SavedCursor;
use crate::error::StoreError;
use crate::schema;
use crate::types::{
    AuditRecord, DeadLetter, Delivery, DeliveryId, DlqFilter, Page, QueuePoll, StoreOptions,
    StoreTuning,
};

/// Largest page a listing returns, whatever the caller asks.
pub(crate) const MAX_PAGE: usize = 1_000;
/// Largest `due` batch.
pub(crate) const MAX_DUE: usize = 10_000;

pub(crate) struct Readers {
    path: PathBuf,
    opts: StoreOptions,
    tuning: StoreTuning,
    /// Idle connections; at most `max_readers` exist because each use holds a permit.
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, opts: StoreOptions, tuning: StoreTuning) -> Readers {
        let n = tuning.max_readers.max(1);
        Readers {
            path,
            opts,
            tuning,
            idle: Mutex::new(Vec::with_capacity(n)),
            permits: Semaphore::new(n),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => {
                let c = schema::open_connection(&self.path, &self.opts, &self.tuning)?;
                c.pragma_update(None, "query_only", true)?;
                Ok(c)
            }
        }
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.take()?;
            let result = f(&conn);
            this.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

pub(crate) fn due(
    conn: &Connection,
    target: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let limit = i64::try_from(limit.min(MAX_DUE)).unwrap_or(0);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, target, rule, payload, attempts, enqueued_at_ms, next_attempt_at_ms
         FROM deliveries WHERE target = ?1 AND next_attempt_at_ms <= ?2
         ORDER BY next_attempt_at_ms, seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![target, now_ms, limit], |r| {
        Ok(Delivery {
            id: DeliveryId::Queued(r.get(0)?),
            event_id: r.get(1)?,
            target: r.get(2)?,
            rule: r.get(3)?,
            payload: r.get(4)?,
            attempts: r.get(5)?,
            enqueued_at_ms: r.get(6)?,
            next_attempt_at_ms: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn next_due_at(conn: &Connection, target: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT min(next_attempt_at_ms) FROM deliveries WHERE target = ?1")?
        .query_row([target], |r| r.get(0))?)
}

/// `due`, and when nothing more is due, the earliest future due time, on one connection: a
/// delivery worker's whole look at its queue in one trip to the read pool.
pub(crate) fn poll_queue(
    conn: &Connection,
    target: &str,
    now_ms: i64,
    limit: usize,
) -> Result<QueuePoll, StoreError> {
    let limit = limit.min(MAX_DUE);
    let due = due(conn, target, now_ms, limit)?;
    let more_due = due.len() == limit;
    let next_due_at = if more_due {
        None
    } else {
        conn.prepare_cached(
            "SELECT min(next_attempt_at_ms) FROM deliveries
             WHERE target = ?1 AND next_attempt_at_ms > ?2",
        )?
        .query_row(params![target, now_ms], |r| r.get(0))?
    };
    Ok(QueuePoll {
        due,
        more_due,
        next_due_at,
    })
}

pub(crate) fn depths(conn: &Connection, table: Depth) -> Result<BTreeMap<String, u64>, StoreError> {
    let sql = match table {
        Depth::Queue => "SELECT target, count(*) FROM deliveries GROUP BY target",
        Depth::Dlq => "SELECT target, count(*) FROM dlq GROUP BY target",
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (t, n) = row?;
        out.insert(t, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
pub(crate) enum Depth {
    Queue,
    Dlq,
}

const DLQ_COLUMNS: &str = "id, event_id, target, rule, payload, error_code, error_message,
                           exhausted_condition, retry_attempts, enqueued_at_ms, failed_at_ms";

fn dead_letter_row(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        event_id: r.get(1)?,
        target: r.get(2)?,
        rule: r.get(3)?,
        payload: r.get(4)?,
        error_code: r.get(5)?,
        error_message: r.get(6)?,
        exhausted_condition: r.get(7)?,
        retry_attempts: r.get(8)?,
        enqueued_at_ms: r.get(9)?,
        failed_at_ms: r.get(10)?,
    })
}

const DLQ_TOKEN: &str = "dlq1.";
const AUDIT_TOKEN: &str = "aud1.";

fn parse_token(token: Option<&str>, prefix: &str) -> Result<Option<i64>, StoreError> {
    match token {
        None => Ok(None),
        Some(t) => t
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<i64>().ok())
            .map(Some)
            .ok_or(StoreError::BadPageToken),
    }
}

fn page_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// Pages are in id order, oldest first; the token is the last id returned.
pub(crate) fn list_dlq(
    conn: &Connection,
    filter: &DlqFilter,
    token: Option<&str>,
    limit: usize,
) -> Result<Page<DeadLetter>, StoreError> {
    let after = parse_token(token, DLQ_TOKEN)?.unwrap_or(i64::MIN);
    let limit = page_limit(limit);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DLQ_COLUMNS} FROM dlq
         WHERE id > ?1 AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR error_code = ?3)
           AND (?4 IS NULL OR failed_at_ms >= ?4) AND (?5 IS NULL OR failed_at_ms < ?5)
         ORDER BY id LIMIT ?6"
    ))?;
    let rows = stmt.query_map(
        params![
            after,
            filter.target,
            filter.error_code,
            filter.failed_from_ms,
            filter.failed_to_ms,
            // One extra row tells whether there is a next page without a second query.
            i64::try_from(limit + 1).unwrap_or(i64::MAX)
        ],
        dead_letter_row,
    )?;
    let mut items: Vec<DeadLetter> = rows.collect::<Result<_, _>>()?;
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|d| format!("{DLQ_TOKEN}{}", d.id))
    } else {
        None
    };
    Ok(Page {
        items,
        next_page_token,
    })
}

pub(crate) fn get_dlq(conn: &Connection, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {DLQ_COLUMNS} FROM dlq WHERE id = ?1"))?
        .query_row([id], dead_letter_row)
        .optional()?)
}

/// Pages are newest first; the token is the last seq returned.
pub(crate) fn list_audit(
    conn: &Connection,
    token: Option<&str>,
    limit: usize,
) -> Result<Page<AuditRecord>, StoreError> {
    let before = parse_token(token, AUDIT_TOKEN)?.unwrap_or(i64::MAX);
    let limit = page_limit(limit);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, actor, action, detail FROM audit
         WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![before, i64::try_from(limit + 1).unwrap_or(i64::MAX)],
        |r| {
            let detail: String = r.get(4)?;
            Ok(AuditRecord {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                // Written by us as JSON; if someone edited the file by hand, show the text
                // rather than fail the whole page.
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            })
        },
    )?;
    let mut items: Vec<AuditRecord> = rows.collect::<Result<_, _>>()?;
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|a| format!("{AUDIT_TOKEN}{}", a.seq))
    } else {
        None
    };
    Ok(Page {
        items,
        next_page_token,
    })
}

/// Row counts of the SQLite tables, for tests and diagnostics.
pub(crate) fn table_counts(conn: &Connection) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for (name, sql) in [
        ("deliveries", "SELECT count(*) FROM deliveries"),
        ("dlq", "SELECT count(*) FROM dlq"),
        ("audit", "SELECT count(*) FROM audit"),
    ] {
        let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
        out.insert(name, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

/// The saved journal cursor of every target.
pub(crate) fn cursors(conn: &Connection) -> Result<Vec<(String, SavedCursor)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT target, next_seq, settled FROM cursors")?;
    let rows = stmt.query_map([], |r| {
        let seq = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
        let settled: String = r.get(2)?;
        Ok((r.get::<_, String>(0)?, SavedCursor::parse(seq, &settled)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: Option<&str>, prefix: &str, expected: Result<Option<i64>, ()>) {
        let got = parse_token(token, prefix).map_err(|e| {
            assert!(matches!(e, StoreError::BadPageToken), "{e:?}");
        });
        assert_eq!(got, expected, "{token:?} with {prefix}");
    }

    #[test]
    fn page_tokens() {
        check(None, DLQ_TOKEN, Ok(None));
        check(Some("dlq1.42"), DLQ_TOKEN, Ok(Some(42)));
        check(Some("dlq1.-3"), DLQ_TOKEN, Ok(Some(-3)));
        check(Some("aud1.7"), AUDIT_TOKEN, Ok(Some(7)));
        check(Some("aud1.7"), DLQ_TOKEN, Err(()));
        check(Some("dlq1."), DLQ_TOKEN, Err(()));
        check(Some("dlq1.1x"), DLQ_TOKEN, Err(()));
        check(Some("dlq1.99999999999999999999"), DLQ_TOKEN, Err(()));
        check(Some(""), DLQ_TOKEN, Err(()));
        check(Some("42"), DLQ_TOKEN, Err(()));
    }

    #[test]
    fn limits_are_clamped() {
        for (asked, got) in [
            (0, 1),
            (1, 1),
            (10, 10),
            (MAX_PAGE, MAX_PAGE),
            (usize::MAX, MAX_PAGE),
        ] {
            assert_eq!(page_limit(asked), got);
        }
    }
}
