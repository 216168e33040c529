//! The journal schema and its migrations (`PRAGMA user_version`).
//!
//! Version 1: messages (metadata, no PHI), message_bodies (sealed raw
//! messages), events (sealed payloads, blind-indexed patient key), outbox,
//! meta, plus the tables of [`crate::seal`], [`crate::audit`] and
//! [`crate::retention`].
//!
//! Version 2: the census's own journal — `census_ops` (sealed nurse
//! assignments from the API, each with the newest event id it follows) and
//! `census_snapshots` (sealed census state up to an event and an op id);
//! `roster_revisions` (console-managed rosters: every saved version, as
//! TOML text — staff names and handles, no PHI); `alerts` (state, deadline
//! and windows in columns, the alert itself sealed, category `alert`) and
//! `notifications` (one row per recipient and backend, with an idempotency
//! key, for the delivery outboxes); the routing cursor is `meta`
//! `alerts.routed_event`.
//!
//! Version 3: `notifications.remote_ref` — what the backend calls a sent
//! notification (a Matrix event id, a WCTP tracking number, a FHIR
//! Communication id), so replies, reactions, receipts and status that come
//! back find their alert and recipient.
//!
//! Version 4: `status_reports` — status owed to an alarm source (ORA^R41)
//! or the EHR write-back, queued in the same transaction as the alert
//! transition it reports ([`crate::status`]): destination, status word,
//! member id, time, the alert's event (its message header names the alarm
//! source) and delivery state. No PHI: the message is built from the sealed
//! alert when it is sent.

use rusqlite::Connection;

/// Current schema version.
pub const VERSION: i64 = 4;

const V4: &str = "
CREATE TABLE status_reports (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id),
    event_id        INTEGER NOT NULL,
    target          TEXT NOT NULL,
    status          TEXT NOT NULL,
    member          TEXT,
    at              INTEGER NOT NULL,
    dedup_key       TEXT NOT NULL UNIQUE,
    control_id      TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX status_reports_queue ON status_reports (target, state, id);
";

const V3: &str = "
ALTER TABLE notifications ADD COLUMN remote_ref TEXT;
CREATE INDEX notifications_remote ON notifications (backend, remote_ref) WHERE remote_ref IS NOT NULL;
";

const V1: &str = "
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    received_at      INTEGER NOT NULL,
    peer             TEXT NOT NULL,
    sender           TEXT,
    msh3             TEXT NOT NULL,
    msh4             TEXT NOT NULL,
    control_id       TEXT NOT NULL,
    message_type     TEXT NOT NULL,
    trigger_event    TEXT NOT NULL,
    processing_id    TEXT NOT NULL,
    batch_ref        TEXT,
    raw_charset      TEXT NOT NULL,
    body_key         BLOB NOT NULL,
    fate             TEXT NOT NULL,
    reason           TEXT,
    error_code       INTEGER,
    error_location   TEXT,
    ack_code         TEXT,
    ack              BLOB,
    taken            INTEGER NOT NULL,
    control_id_reuse INTEGER NOT NULL DEFAULT 0,
    event_count      INTEGER NOT NULL DEFAULT 0,
    resends          INTEGER NOT NULL DEFAULT 0,
    last_resend_at   INTEGER
);
CREATE INDEX messages_dedup ON messages (msh3, msh4, control_id) WHERE taken = 1;
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_control_id ON messages (control_id);

CREATE TABLE message_bodies (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id),
    body       BLOB NOT NULL
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages (id),
    idx         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    patient_key BLOB,
    payload     BLOB NOT NULL
);
CREATE INDEX events_message ON events (message_id);
CREATE INDEX events_patient ON events (patient_key, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages (id),
    kind            TEXT NOT NULL,
    destination     TEXT NOT NULL,
    payload         BLOB NOT NULL,
    control_id      TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

CREATE TABLE fhir_subscriptions (
    subscription TEXT PRIMARY KEY,
    last_event   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

const V2: &str = "
CREATE TABLE census_ops (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    after_event INTEGER NOT NULL,
    action      TEXT NOT NULL,
    payload     BLOB NOT NULL
);
CREATE TABLE roster_revisions (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    revision INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    comment  TEXT NOT NULL,
    retired  INTEGER NOT NULL DEFAULT 0,
    text     TEXT NOT NULL,
    UNIQUE (name, revision)
);
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    priority     TEXT NOT NULL,
    state        TEXT NOT NULL,
    deadline     INTEGER,
    dedup_until  INTEGER,
    group_until  INTEGER,
    lease_owner  TEXT,
    lease_until  INTEGER,
    payload      BLOB NOT NULL
);
CREATE INDEX alerts_deadline ON alerts (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX alerts_state ON alerts (state);
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES alerts (id),
    seq             INTEGER NOT NULL,
    member          TEXT NOT NULL,
    backend         TEXT NOT NULL,
    handle          TEXT NOT NULL,
    tier            INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    state           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX notifications_due ON notifications (backend, state, next_attempt_at);
CREATE INDEX notifications_alert ON notifications (alert_id);
CREATE TABLE census_snapshots (
    id         INTEGER PRIMARY KEY,
    taken_at   INTEGER NOT NULL,
    upto_event INTEGER NOT NULL,
    upto_op    INTEGER NOT NULL,
    payload    BLOB NOT NULL
);
";

/// Brings the database to [`VERSION`]; refuses a database from a newer version.
pub fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some(format!("journal schema {version} is newer than {VERSION}")),
        ));
    }
    if version < 1 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {V1} {} {} {} PRAGMA user_version = 1; COMMIT;",
            crate::seal::SCHEMA,
            crate::audit::SCHEMA,
            crate::retention::SCHEMA,
        ))?;
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {V2} PRAGMA user_version = 2; COMMIT;"
        ))?;
    }
    if version < 3 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {V3} PRAGMA user_version = 3; COMMIT;"
        ))?;
    }
    if version < 4 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {V4} PRAGMA user_version = 4; COMMIT;"
        ))?;
    }
    Ok(())
}
