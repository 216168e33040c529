//! The storage interface: every journal access goes through [`Storage`], so
//! the SQLite default and the PostgreSQL backend (HA) are interchangeable,
//! and tests can inject faults at this layer.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{Committed, MessageQuery, MessageSummary, NewMessage, OutboxItem, OutboxState};
use super::sqlite::HoldSubject;
use crate::audit::{AuditRecord, StoredRecord, VerifierKey, VerifyReport};
use crate::census::{Census, CensusOp};
use crate::config::RetentionConfig;
use crate::retention::{Hold, PeriodStatus, PurgeReport};
use crate::seal::RotationReport;

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
    /// Keys for PHI at rest are missing or unusable (names key ids, never key bytes).
    #[error("keys: {0}")]
    Keys(String),
    /// The audit chain could not be appended or checkpointed.
    #[error("audit: {0}")]
    Audit(String),
    /// Any other database error.
    #[error("storage error: {0}")]
    Other(String),
}

/// What rebuilding the census found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CensusLoad {
    /// The snapshot used: when it was taken and the event id it covers.
    pub snapshot: Option<(DateTime<Utc>, i64)>,
    /// Snapshots that could not be opened (erased keys, other version).
    pub unusable_snapshots: u64,
    /// ADT events replayed after the snapshot.
    pub events: u64,
    /// Census ops replayed after the snapshot.
    pub ops: u64,
    /// Events or ops skipped because retention erased their keys.
    pub erased: u64,
    /// Warnings raised while replaying (identity conflicts, occupied beds, ...).
    pub warnings: u64,
}

/// One saved version of a console-managed roster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RosterRevision {
    /// Roster name (its `name = ...`).
    pub name: String,
    /// 1, 2, ... per name.
    pub revision: u64,
    /// When it was saved.
    pub at: DateTime<Utc>,
    /// Who saved it (`operator:NAME`, `cli:USER`).
    pub actor: String,
    /// Why (free text from the editor; no PHI expected).
    pub comment: String,
    /// True when this revision hands the roster back (no longer console-managed).
    pub retired: bool,
    /// The roster file text (empty for a retirement).
    pub text: String,
}

/// One notification to deliver (a recipient on one backend).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotificationRow {
    /// Row id (0 before it is written).
    pub id: i64,
    /// The alert.
    pub alert_id: i64,
    /// Index of the notice in the alert's `notified` list.
    pub seq: usize,
    /// Roster member id.
    pub member: String,
    /// Backend (`matrix`, `pager`, `webhook`, ...).
    pub backend: String,
    /// The member's handle on that backend.
    pub handle: String,
    /// Tier.
    pub tier: usize,
    /// Why (`new`, `escalation`, `correction`, ...).
    pub reason: String,
    /// `pending`, `sent`, `delivered`, `read`, `cancelled`, `failed`.
    pub state: String,
    /// Stable over redeliveries: the backend sees the same key again.
    pub idempotency_key: String,
    /// What the backend calls it once sent (event id, tracking number,
    /// resource id); replies and status find the notification by it.
    pub remote_ref: Option<String>,
}

/// A backend's waiting notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Contact kind (`webhook`, ...).
    pub backend: String,
    /// Pending or retrying.
    pub waiting: u64,
    /// When the oldest of them was created.
    pub oldest: Option<DateTime<Utc>>,
}

/// The outcome of one delivery attempt of a notification.
#[derive(Clone, Debug)]
pub struct AttemptUpdate {
    /// Notification id.
    pub id: i64,
    /// `delivered`, `retrying` or `dead`.
    pub state: &'static str,
    /// When to try again (for `retrying`).
    pub next_attempt_at: DateTime<Utc>,
    /// Why it failed (status or error kind; never content).
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// Audit records (what left, to whom) written with it.
    pub audit: Vec<AuditRecord>,
    /// What the backend calls the sent notification (kept when `None`).
    pub remote_ref: Option<String>,
}

/// Everything one alert transition writes, in one transaction.
#[derive(Clone, Debug, Default)]
pub struct AlertWrite {
    /// When.
    pub at: DateTime<Utc>,
    /// Alerts created or changed (full records).
    pub alerts: Vec<crate::alert::model::Alert>,
    /// Notifications to add (duplicates by idempotency key are ignored).
    pub notifications: Vec<NotificationRow>,
    /// Alerts whose pending notifications are cancelled.
    pub cancel_pending: Vec<i64>,
    /// The newest event id routed, when events were routed.
    pub cursor: Option<i64>,
    /// Per backend, the most notifications waiting (pending or retrying);
    /// a notification beyond it is written dead-lettered (`outbox full`,
    /// audited) instead of queued — the alert's tier timer still escalates.
    /// `None`: unbounded.
    pub outbox_max: Option<usize>,
    /// Delivery attempts recorded in the same transaction (before the
    /// rest); an attempt on a row cancelled meanwhile writes nothing.
    pub attempts: Vec<AttemptUpdate>,
    /// Audit records of the steps taken.
    pub audit: Vec<AuditRecord>,
    /// Status reports the steps owe the alarm source and the EHR
    /// (duplicates by key are ignored).
    pub status: Vec<crate::status::StatusReport>,
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

    /// Records that `subscription` has reached event number `newest`;
    /// returns the highest number seen before (None the first time).
    fn subscription_advance(
        &mut self,
        subscription: &str,
        newest: u64,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, StorageError>;

    /// Rebuilds the patient census from the newest snapshot and the ADT
    /// events and census ops journaled after it, in order.
    fn census_load(&mut self) -> Result<(Census, CensusLoad), StorageError>;

    /// Journals a census op (sealed) with its audit record, in one
    /// transaction; returns its id. The caller applies it afterwards.
    fn census_record(
        &mut self,
        op: &CensusOp,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, StorageError>;

    /// Saves `census` as the state after every event and op journaled so
    /// far; returns the newest event id it covers.
    fn census_snapshot(&mut self, census: &Census, at: DateTime<Utc>) -> Result<i64, StorageError>;

    /// The console-managed rosters in force: the newest revision of each
    /// name that is not retired.
    fn rosters_current(&mut self) -> Result<Vec<RosterRevision>, StorageError>;

    /// Every revision of one console-managed roster, oldest first.
    fn roster_revisions(&mut self, name: &str) -> Result<Vec<RosterRevision>, StorageError>;

    /// Saves a new revision (audited); `text: None` retires the roster.
    /// The caller has validated it. Returns the revision number.
    fn roster_save(
        &mut self,
        name: &str,
        text: Option<&str>,
        actor: &str,
        comment: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StorageError>;

    /// The newest event id already routed into alerts.
    fn alerts_cursor(&mut self) -> Result<i64, StorageError>;

    /// Events after `after` in id order, at most `limit`; `None` for an
    /// event whose keys retention erased.
    fn alerts_events_after(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Option<crate::event::ClinicalEvent>)>, StorageError>;

    /// Open alerts and those whose windows still run at `now`; and the
    /// highest alert id ever used.
    fn alerts_live(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<crate::alert::model::Alert>, i64), StorageError>;

    /// One alert.
    fn alert(&mut self, id: i64) -> Result<Option<crate::alert::model::Alert>, StorageError>;

    /// Writes one transition's alerts, notifications, cancellations, cursor
    /// and audit records in one transaction.
    fn alerts_write(&mut self, w: &AlertWrite) -> Result<(), StorageError>;

    /// Notifications, of one alert or all, in order.
    fn notifications(&mut self, alert: Option<i64>) -> Result<Vec<NotificationRow>, StorageError>;

    /// Pending (or retrying) notifications of one backend due at `now`,
    /// with their attempt counts, oldest first.
    fn notifications_due(
        &mut self,
        backend: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(NotificationRow, u32)>, StorageError>;

    /// The earliest next attempt of a backend's pending notifications.
    fn notifications_next(&mut self, backend: &str) -> Result<Option<DateTime<Utc>>, StorageError>;

    /// Records a delivery attempt (unless the row was cancelled meanwhile:
    /// then returns false and writes nothing).
    fn notification_attempt(&mut self, u: &AttemptUpdate) -> Result<bool, StorageError>;

    /// Per backend (contact kind): notifications waiting, and the oldest one's creation time.
    fn notifications_backlog(&mut self) -> Result<Vec<Backlog>, StorageError>;

    /// The notification a backend knows as `remote_ref` (its contact kind
    /// `backend`), if any.
    fn notification_by_ref(
        &mut self,
        backend: &str,
        remote_ref: &str,
    ) -> Result<Option<NotificationRow>, StorageError>;

    /// Delivered notifications of one backend (contact kind `backend`) that
    /// have a `remote_ref` and whose alert is open, oldest first: what a
    /// backend that is polled for status still has to follow.
    fn notifications_outstanding(
        &mut self,
        backend: &str,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StorageError>;

    /// The status reports of destination `target` that are due at `now`,
    /// oldest first (at most `limit`, stopping at the first not yet due),
    /// and when the oldest waiting one is due otherwise.
    fn status_due(
        &mut self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<crate::status::StatusDue, StorageError>;

    /// Records a status report attempt (and its audit records) in one
    /// transaction.
    fn status_attempt(&mut self, u: &crate::status::StatusUpdate) -> Result<(), StorageError>;

    /// Appends one audit record on its own (events that change nothing
    /// else in the store: refused TLS clients, deliveries, logins).
    fn audit(&mut self, record: &AuditRecord) -> Result<(), StorageError>;

    /// Rotates the key-encryption key: re-wraps every data key (one
    /// transaction), audited.
    fn rotate_keys(
        &mut self,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<RotationReport, StorageError>;

    /// Retention state of every (category, day).
    fn retention_status(
        &mut self,
        cfg: &RetentionConfig,
        now: DateTime<Utc>,
    ) -> Result<Vec<PeriodStatus>, StorageError>;

    /// Crypto-erases every due, unheld (category, day); each erase and each
    /// suspension is audited.
    fn purge(
        &mut self,
        cfg: &RetentionConfig,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<PurgeReport, StorageError>;

    /// Places a legal hold (audited); returns its id.
    fn place_hold(
        &mut self,
        subject: HoldSubject,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StorageError>;

    /// Releases a legal hold (audited).
    fn release_hold(
        &mut self,
        id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError>;

    /// Active legal holds.
    fn holds(&mut self) -> Result<Vec<Hold>, StorageError>;

    /// Verifies the audit chain and its checkpoints (and the off-box ones).
    fn audit_verify(
        &mut self,
        external: Option<&Path>,
        origin: &str,
        trusted_key: Option<&VerifierKey>,
    ) -> Result<VerifyReport, StorageError>;

    /// Audit records after `after_seq`, oldest first, at most `limit`.
    fn audit_records(
        &mut self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StorageError>;
}

/// Implements the operator methods of [`Storage`] by delegating to the
/// field `$inner` (for wrappers that change only the commit path, e.g. fault
/// injection in tests).
#[macro_export]
macro_rules! delegate_admin_storage {
    ($inner:ident) => {
        fn rotate_keys(
            &mut self,
            now: ::chrono::DateTime<::chrono::Utc>,
            actor: &str,
        ) -> Result<$crate::seal::RotationReport, $crate::journal::StorageError> {
            self.$inner.rotate_keys(now, actor)
        }
        fn retention_status(
            &mut self,
            cfg: &$crate::config::RetentionConfig,
            now: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<Vec<$crate::retention::PeriodStatus>, $crate::journal::StorageError> {
            self.$inner.retention_status(cfg, now)
        }
        fn purge(
            &mut self,
            cfg: &$crate::config::RetentionConfig,
            now: ::chrono::DateTime<::chrono::Utc>,
            actor: &str,
        ) -> Result<$crate::retention::PurgeReport, $crate::journal::StorageError> {
            self.$inner.purge(cfg, now, actor)
        }
        fn place_hold(
            &mut self,
            subject: $crate::journal::HoldSubject,
            reason: &str,
            actor: &str,
            now: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<i64, $crate::journal::StorageError> {
            self.$inner.place_hold(subject, reason, actor, now)
        }
        fn release_hold(
            &mut self,
            id: i64,
            actor: &str,
            now: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<(), $crate::journal::StorageError> {
            self.$inner.release_hold(id, actor, now)
        }
        fn subscription_advance(
            &mut self,
            subscription: &str,
            newest: u64,
            at: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<Option<u64>, $crate::journal::StorageError> {
            self.$inner.subscription_advance(subscription, newest, at)
        }
        fn census_load(
            &mut self,
        ) -> Result<
            ($crate::census::Census, $crate::journal::CensusLoad),
            $crate::journal::StorageError,
        > {
            self.$inner.census_load()
        }
        fn census_record(
            &mut self,
            op: &$crate::census::CensusOp,
            actor: &str,
            at: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<i64, $crate::journal::StorageError> {
            self.$inner.census_record(op, actor, at)
        }
        fn census_snapshot(
            &mut self,
            census: &$crate::census::Census,
            at: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<i64, $crate::journal::StorageError> {
            self.$inner.census_snapshot(census, at)
        }
        fn rosters_current(
            &mut self,
        ) -> Result<Vec<$crate::journal::RosterRevision>, $crate::journal::StorageError> {
            self.$inner.rosters_current()
        }
        fn roster_revisions(
            &mut self,
            name: &str,
        ) -> Result<Vec<$crate::journal::RosterRevision>, $crate::journal::StorageError> {
            self.$inner.roster_revisions(name)
        }
        fn roster_save(
            &mut self,
            name: &str,
            text: Option<&str>,
            actor: &str,
            comment: &str,
            at: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<u64, $crate::journal::StorageError> {
            self.$inner.roster_save(name, text, actor, comment, at)
        }
        fn alerts_cursor(&mut self) -> Result<i64, $crate::journal::StorageError> {
            self.$inner.alerts_cursor()
        }
        fn alerts_events_after(
            &mut self,
            after: i64,
            limit: usize,
        ) -> Result<Vec<(i64, Option<$crate::event::ClinicalEvent>)>, $crate::journal::StorageError>
        {
            self.$inner.alerts_events_after(after, limit)
        }
        fn alerts_live(
            &mut self,
            now: ::chrono::DateTime<::chrono::Utc>,
        ) -> Result<(Vec<$crate::alert::model::Alert>, i64), $crate::journal::StorageError> {
            self.$inner.alerts_live(now)
        }
        fn alert(
            &mut self,
            id: i64,
        ) -> Result<Option<$crate::alert::model::Alert>, $crate::journal::StorageError> {
            self.$inner.alert(id)
        }
        fn alerts_write(
            &mut self,
            w: &$crate::journal::AlertWrite,
        ) -> Result<(), $crate::journal::StorageError> {
            self.$inner.alerts_write(w)
        }
        fn notifications(
            &mut self,
            alert: Option<i64>,
        ) -> Result<Vec<$crate::journal::NotificationRow>, $crate::journal::StorageError> {
            self.$inner.notifications(alert)
        }
        fn notifications_due(
            &mut self,
            backend: &str,
            now: ::chrono::DateTime<::chrono::Utc>,
            limit: usize,
        ) -> Result<Vec<($crate::journal::NotificationRow, u32)>, $crate::journal::StorageError> {
            self.$inner.notifications_due(backend, now, limit)
        }
        fn notifications_next(
            &mut self,
            backend: &str,
        ) -> Result<Option<::chrono::DateTime<::chrono::Utc>>, $crate::journal::StorageError> {
            self.$inner.notifications_next(backend)
        }
        fn notification_attempt(
            &mut self,
            u: &$crate::journal::AttemptUpdate,
        ) -> Result<bool, $crate::journal::StorageError> {
            self.$inner.notification_attempt(u)
        }
        fn notifications_backlog(
            &mut self,
        ) -> Result<Vec<$crate::journal::Backlog>, $crate::journal::StorageError> {
            self.$inner.notifications_backlog()
        }
        fn notification_by_ref(
            &mut self,
            backend: &str,
            remote_ref: &str,
        ) -> Result<Option<$crate::journal::NotificationRow>, $crate::journal::StorageError> {
            self.$inner.notification_by_ref(backend, remote_ref)
        }
        fn notifications_outstanding(
            &mut self,
            backend: &str,
            limit: usize,
        ) -> Result<Vec<$crate::journal::NotificationRow>, $crate::journal::StorageError> {
            self.$inner.notifications_outstanding(backend, limit)
        }
        fn status_due(
            &mut self,
            target: &str,
            now: ::chrono::DateTime<::chrono::Utc>,
            limit: usize,
        ) -> Result<$crate::status::StatusDue, $crate::journal::StorageError> {
            self.$inner.status_due(target, now, limit)
        }
        fn status_attempt(
            &mut self,
            u: &$crate::status::StatusUpdate,
        ) -> Result<(), $crate::journal::StorageError> {
            self.$inner.status_attempt(u)
        }
        fn audit(
            &mut self,
            record: &$crate::audit::AuditRecord,
        ) -> Result<(), $crate::journal::StorageError> {
            self.$inner.audit(record)
        }
        fn holds(&mut self) -> Result<Vec<$crate::retention::Hold>, $crate::journal::StorageError> {
            self.$inner.holds()
        }
        fn audit_verify(
            &mut self,
            external: Option<&::std::path::Path>,
            origin: &str,
            trusted_key: Option<&$crate::audit::VerifierKey>,
        ) -> Result<$crate::audit::VerifyReport, $crate::journal::StorageError> {
            self.$inner.audit_verify(external, origin, trusted_key)
        }
        fn audit_records(
            &mut self,
            after_seq: u64,
            limit: usize,
        ) -> Result<Vec<$crate::audit::StoredRecord>, $crate::journal::StorageError> {
            self.$inner.audit_records(after_seq, limit)
        }
    };
}
