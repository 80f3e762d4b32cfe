//! The store's one error type.

/// Everything a [`Store`](crate::Store) call can fail with.
///
/// The gateway maps [`Busy`](StoreError::Busy), [`ShuttingDown`](StoreError::ShuttingDown) and
/// [`Failed`](StoreError::Failed) to `503 + Retry-After` (the sender retries), and everything else
/// to `500`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bounded write queue is full: the writer is behind. Shed load (503) and retry later.
    #[error("store write queue is full")]
    Busy,
    /// `close` was called: the writer no longer accepts commands.
    #[error("store is shutting down")]
    ShuttingDown,
    /// The store is fail-stop: an earlier commit (fsync) or I/O error left the on-disk state
    /// unknown. Every later call answers this until the process reopens the store.
    #[error("store failed and must be reopened: {0}")]
    Failed(String),
    /// An SQLite error that did not compromise durability (the command was rolled back alone).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem error while opening the store.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The database was written by a newer Switchboard: refuse rather than misread it.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade Switchboard"
    )]
    SchemaTooNew {
        /// Version recorded in the file's `meta` table.
        found: i64,
        /// Highest version this build understands.
        supported: i64,
    },
    /// The file is not a Switchboard store (its `meta` table is missing or malformed).
    #[error("not a switchboard store: {0}")]
    NotAStore(String),
    /// The store's files are damaged in a way recovery must not guess about (a bad record in
    /// the middle of the journal, a segment that does not follow its predecessor).
    #[error("store files are damaged: {0}")]
    Corrupt(String),
    /// One event (its envelope and the payloads of its deliveries) is larger than a journal
    /// record may be.
    #[error("event is {bytes} bytes; a journal record holds at most {max}")]
    RecordTooLarge {
        /// Encoded size of the record.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A page token that this store did not issue (or issued for another listing).
    #[error("invalid page token")]
    BadPageToken,
    /// `reschedule` / `dead_letter` named a delivery that is not queued (completed, dead-lettered
    /// already, or never existed).
    #[error("no queued delivery with seq {0}")]
    UnknownDelivery(i64),
    /// Rejected [`StoreOptions`](crate::StoreOptions) / [`StoreTuning`](crate::StoreTuning).
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
    /// A bug or a dead background thread (for example the writer thread panicked).
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// True when the error means "try again later" rather than "this request is wrong".
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Busy | StoreError::ShuttingDown | StoreError::Failed(_)
        )
    }
}

/// Whether an SQLite error means the durable state is unknown (I/O, full disk, corruption):
/// such errors make the store fail-stop instead of being reported for one command only.
pub(crate) fn is_fatal(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        err.sqlite_error_code(),
        Some(
            C::SystemIoFailure
                | C::DiskFull
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::CannotOpen
                | C::ReadOnly
                | C::FileLockingProtocolFailed
                | C::NoLargeFileSupport
                | C::InternalMalfunction
                | C::OutOfMemory
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn fatal_classification() {
        for (code, fatal) in [
            (ffi::SQLITE_IOERR, true),
            (ffi::SQLITE_IOERR_FSYNC, true),
            (ffi::SQLITE_IOERR_WRITE, true),
            (ffi::SQLITE_FULL, true),
            (ffi::SQLITE_CORRUPT, true),
            (ffi::SQLITE_READONLY, true),
            (ffi::SQLITE_CONSTRAINT, false),
            (ffi::SQLITE_BUSY, false),
            (ffi::SQLITE_MISMATCH, false),
        ] {
            assert_eq!(is_fatal(&sqlite(code)), fatal, "code {code}");
        }
        assert!(!is_fatal(&rusqlite::Error::QueryReturnedNoRows));
    }

    #[test]
    fn retryable_errors() {
        assert!(StoreError::Busy.is_retryable());
        assert!(StoreError::ShuttingDown.is_retryable());
        assert!(StoreError::Failed("x".into()).is_retryable());
        assert!(!StoreError::BadPageToken.is_retryable());
        assert!(!StoreError::UnknownDelivery(1).is_retryable());
    }
}
