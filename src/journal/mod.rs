//! Journal: the durable record of every message, committed before its
//! acknowledgement leaves.
//!
//! # Storage format (SQLite, `<data_dir>/journal.sqlite3`, WAL, `synchronous=FULL`)
//!
//! - `messages`: one row per received message (accepted, filtered or
//!   rejected), holding no PHI: receive time (µs since the Unix epoch, UTC),
//!   peer, configured sender, MSH-3/MSH-4/MSH-10 as sent, type, trigger,
//!   processing id, `raw_charset` (`frame` for the frame as received,
//!   `UTF-8` for a message split out of a batch), `body_key` (a keyed blind
//!   index of the SHA-256 of the normalised text), fate and reason, HL7
//!   error code and location, and the acknowledgement exactly as sent (`ack`,
//!   without MLLP framing; it echoes only MSH header fields). `taken = 1`
//!   marks accepted and filtered messages: only they count for duplicate
//!   detection.
//! - `message_bodies`: the raw message, sealed (category `raw`, associated
//!   data `message_bodies\0<id>`); deleted by retention.
//! - `events`: the `ClinicalEvent`s of a message as sealed JSON (category
//!   `event`, associated data `events\0<id>`), with `patient_key`, a blind
//!   index of the first patient identifier, for per-patient ordering and
//!   legal holds (`id` order is commit order).
//! - `outbox`: application acknowledgements waiting for delivery.
//! - `audit`, `audit_checkpoints`, `audit_keys`: the hash-chained audit
//!   trail ([`crate::audit`]); one `message.received` (or
//!   `message.duplicate`) record per message, in the same transaction.
//! - `data_keys`, `seal_meta`: wrapped data keys ([`crate::seal`]).
//! - `legal_holds` ([`crate::retention`]), `meta`: bookkeeping.
//!
//! # Guarantees
//!
//! - [`Journal::commit`] resolves only after the message (and its events and
//!   outbox entry) is durably committed; the [`Receipt`] it returns is the only
//!   way to obtain acknowledgement bytes for a committed message.
//! - Commits are grouped across connections by one committer thread
//!   ([`writer`]); the queue in front of it is bounded (back-pressure).
//! - Duplicates: a message whose (MSH-3, MSH-4, MSH-10) matches a taken
//!   message received within the dedup window and whose body hash is equal
//!   gets the stored acknowledgement back and adds no row; a different body
//!   is a control-id reuse, stored as new and flagged.
//! - On a storage error the commit fails (the caller answers AR/CE 207), the
//!   journal reports unhealthy, and the next commit reopens the store.
//! - Order: commits from one caller are applied in the order they were
//!   submitted, so messages of one connection (and so of one patient on one
//!   feed) keep their order.

pub mod record;
mod schema;
pub mod sqlite;
pub mod storage;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use record::{
    Committed, DedupKey, Fate, MessageQuery, MessageSummary, NewMessage, OutboxEntry, OutboxItem,
    OutboxState, Viewer,
};
pub use sqlite::{HoldSubject, Protection, SqliteStorage};
pub use storage::{
    AlertWrite, AttemptUpdate, Backlog, CensusLoad, NotificationRow, RosterRevision, Storage,
    StorageError,
};
pub use writer::AfterCommit;

use std::sync::Arc as StdArc;

use chrono::{DateTime, Utc};

use crate::audit::Signer;
use crate::config::{Config, StorageConfig};
use crate::seal::{KeyDir, Keyring, LocalKek};

/// Loads the keys that protect the journal: the key-encryption key (from
/// the key folder, generating the first one on first start, or from the
/// configured environment variable) and the audit signing key.
pub fn protection(config: &Config, now: DateTime<Utc>) -> Result<Protection, StorageError> {
    let keys_err = |e: crate::seal::SealError| StorageError::Keys(e.to_string());
    let (key_dir, keyring) = match &config.keys.env {
        Some(var) => {
            let kek = LocalKek::from_env(var).map_err(keys_err)?;
            (None, Keyring::new(StdArc::new(kek), Vec::new()))
        }
        None => {
            let (dir, created) = KeyDir::load_or_create(&config.keys.dir, now).map_err(keys_err)?;
            if created {
                tracing::warn!(
                    path = %dir.current_key_file().display(),
                    "generated a new key-encryption key; keep it apart from the data directory and back it up: without it the journal cannot be read"
                );
                eprintln!(
                    "switchboard: generated a new key-encryption key at {}",
                    dir.current_key_file().display()
                );
            }
            let keyring = Keyring::from_dir(&dir).map_err(keys_err)?;
            (Some(dir), keyring)
        }
    };
    let signer = Signer::load_or_generate(&config.audit.signing_key, &config.audit.origin)
        .map_err(|e| StorageError::Audit(e.to_string()))?;
    Ok(Protection {
        key_dir,
        keyring,
        signer,
        checkpoint_dir: config.audit.checkpoint_dir.clone(),
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: config.audit.checkpoint_interval,
    })
}

/// Why a commit did not happen. The message was not stored; the sender must
/// be told to resend (AR/CE with ERR 207).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    /// The store failed (disk full, I/O error); see the log for the class.
    #[error("journal unavailable")]
    Unavailable,
    /// The journal is shutting down.
    #[error("journal closed")]
    Closed,
}

/// Counters and health of the journal, shared with readiness and metrics.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    /// Messages committed (including duplicates answered).
    pub committed: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Failed transactions.
    pub failures: AtomicU64,
    /// Duplicate resends answered with a stored acknowledgement.
    pub duplicates: AtomicU64,
}

impl Health {
    /// False after a failed commit, until a commit or probe succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// Proof that a message is durably in the journal, with the acknowledgement
/// to send for it. Only the journal creates receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    message_id: i64,
    ack: Vec<u8>,
    ack_code: Option<String>,
    duplicate: bool,
    control_id_reuse: bool,
}

impl Receipt {
    /// The journal id of the message (the original's, for a duplicate).
    pub fn message_id(&self) -> i64 {
        self.message_id
    }

    /// The acknowledgement payload to send (empty: send none).
    pub fn ack(&self) -> &[u8] {
        &self.ack
    }

    /// The acknowledgement code, if one is sent.
    pub fn ack_code(&self) -> Option<&str> {
        self.ack_code.as_deref()
    }

    /// True when this was a resend answered from the journal.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// True when the control id was reused with a different body.
    pub fn is_control_id_reuse(&self) -> bool {
        self.control_id_reuse
    }
}

/// A message queued for commit; await it for the [`Receipt`].
pub struct PendingCommit {
    rx: oneshot::Receiver<Result<Committed, ()>>,
    ack: Vec<u8>,
    ack_code: Option<String>,
}

impl std::future::IntoFuture for PendingCommit {
    type Output = Result<Receipt, JournalError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.rx.await {
                Ok(Ok(Committed::Stored {
                    id,
                    control_id_reuse,
                })) => Ok(Receipt {
                    message_id: id,
                    ack: self.ack,
                    ack_code: self.ack_code,
                    duplicate: false,
                    control_id_reuse,
                }),
                Ok(Ok(Committed::Duplicate {
                    original,
                    ack,
                    ack_code,
                })) => Ok(Receipt {
                    message_id: original,
                    ack,
                    ack_code,
                    duplicate: true,
                    control_id_reuse: false,
                }),
                Ok(Err(())) => Err(JournalError::Unavailable),
                Err(_) => Err(JournalError::Closed),
            }
        })
    }
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<writer::Command>,
    health: Arc<Health>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Journal {
    /// Starts the committer thread over `storage`.
    pub fn start(storage: Box<dyn Storage>, config: &StorageConfig) -> Journal {
        Journal::start_with_hook(storage, config, None)
    }

    /// Starts the committer thread over `storage`, calling `hook` after
    /// every successful commit (see [`AfterCommit`]).
    pub fn start_with_hook(
        storage: Box<dyn Storage>,
        config: &StorageConfig,
        hook: Option<AfterCommit>,
    ) -> Journal {
        let (tx, rx) = mpsc::channel(config.commit_queue);
        let health = Arc::new(Health {
            healthy: AtomicBool::new(true),
            committed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        });
        let thread = writer::spawn(
            storage,
            rx,
            config.commit_batch_max,
            config.dedup_window,
            health.clone(),
            hook,
        );
        Journal {
            tx,
            health,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        }
    }

    /// Opens the SQLite journal of `config` with its keys and starts it.
    pub fn open(config: &Config, now: DateTime<Utc>) -> Result<Journal, StorageError> {
        let storage = SqliteStorage::open(&config.journal_path(), protection(config, now)?, now)?;
        Ok(Journal::start(Box::new(storage), &config.storage))
    }

    /// Durably commits `message`; resolves after the commit (or with the
    /// stored answer for a duplicate).
    pub async fn commit(&self, message: NewMessage) -> Result<Receipt, JournalError> {
        self.submit(message).await?.await
    }

    /// Queues `message` for the committer and returns the pending answer.
    /// Waits only for room in the queue, so a caller that submits several
    /// messages one after the other keeps their order in the journal.
    pub async fn submit(&self, message: NewMessage) -> Result<PendingCommit, JournalError> {
        let ack = message.ack.clone();
        let ack_code = message.ack_code.clone();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Commit(Box::new(message), reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        Ok(PendingCommit { rx, ack, ack_code })
    }

    /// Runs `f` on the committer thread, after everything queued before it.
    pub async fn with_storage<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Storage) -> T + Send + 'static,
    ) -> Result<T, JournalError> {
        let (reply, rx) = oneshot::channel();
        let run = Box::new(move |s: &mut dyn Storage| {
            let _ = reply.send(f(s));
        });
        self.tx
            .send(writer::Command::Run(run))
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)
    }

    /// Tries a small write; marks the journal healthy again when it works.
    pub async fn probe(&self) -> bool {
        let health = self.health.clone();
        self.with_storage(move |s| {
            let ok = s.probe().is_ok();
            health.healthy.store(ok, Ordering::SeqCst);
            ok
        })
        .await
        .unwrap_or(false)
    }

    /// Closes this handle and, when it was the last one, waits (up to
    /// `timeout`) for the committer thread to finish what is queued and to
    /// close the store cleanly. Returns true when the thread finished.
    pub async fn close(self, timeout: std::time::Duration) -> bool {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        drop(self);
        let Some(thread) = thread else { return false };
        let join = tokio::task::spawn_blocking(move || thread.join().is_ok());
        matches!(tokio::time::timeout(timeout, join).await, Ok(Ok(true)))
    }

    /// True once the committer thread has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Health and counters.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }
}

#[cfg(test)]
mod tests;
