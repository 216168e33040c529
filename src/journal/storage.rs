//! The storage interface: every journal access goes through [`Storage`], so
//! the SQLite default and the PostgreSQL backend (HA) are interchangeable,
//! and tests can inject faults at this layer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{Committed, MessageQuery, MessageSummary, NewMessage, OutboxItem, OutboxState};

/// Why storage failed. Carries SQLite's error class, never row content.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk is full (SQLITE_FULL / ENOSPC).
    #[error("storage full")]
    Full,
    /// An I/O error (SQLITE_IOERR / EIO) or a failed fsync.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The database file is corrupt or not a Switchboard journal.
    #[error("storage corrupt or incompatible: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("storage error: {0}")]
    Other(String),
}

/// The operations the gateway needs from its store. Implementations must make
/// `commit` durable (flushed to stable storage) before returning `Ok`.
pub trait Storage: Send + 'static {
    /// Commits `batch` in one durable transaction, in order. For each message,
    /// in the same transaction: duplicate detection over messages taken
    /// within `dedup_window` before `now`, the message row, its events and its
    /// outbox entry. Returns one answer per message, in order. On error nothing
    /// of the batch is committed.
    fn commit(
        &mut self,
        batch: &[NewMessage],
        now: DateTime<Utc>,
        dedup_window: Duration,
    ) -> Result<Vec<Committed>, StorageError>;

    /// Lists messages, newest first.
    fn messages(&mut self, query: &MessageQuery) -> Result<Vec<MessageSummary>, StorageError>;

    /// Pending outbox rows due at `now`, oldest first.
    fn outbox_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StorageError>;

    /// The earliest `next_attempt_at` of a pending outbox row.
    fn outbox_next_due(&mut self) -> Result<Option<DateTime<Utc>>, StorageError>;

    /// Records an outbox attempt: new state, next attempt time and last error.
    fn outbox_update(
        &mut self,
        id: i64,
        state: OutboxState,
        next_attempt_at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), StorageError>;

    /// Cheap check that the store can be written; used to recover after errors.
    fn probe(&mut self) -> Result<(), StorageError>;
}
