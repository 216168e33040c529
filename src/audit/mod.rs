//! Audit: a tamper-evident trail of who did what to which object, when, from
//! where, with what outcome (HIPAA §164.312(b) audit controls, §164.312(c)
//! integrity).
//!
//! # Storage format (three tables in the journal's SQLite file, [`SCHEMA`])
//!
//! - `audit`: one row per event, `seq` = 1, 2, 3 … without gaps. `at` is µs
//!   since the Unix epoch (UTC). `prev` is the `hash` of record `seq - 1`
//!   (32 zero bytes for seq 1). `hash` is SHA-256 over the canonical encoding
//!   below, so every record commits to its number, its content and the whole
//!   history before it.
//! - `audit_checkpoints`: signed checkpoints, one per `size`, as C2SP
//!   signed-note text (see [`note`]).
//! - `audit_keys`: the public keys that sign checkpoints. Key 1 is the
//!   genesis key; key *n* > 1 carries an endorsement note signed by key
//!   *n − 1* and is valid for checkpoints of size ≥ `valid_from_seq`, which is
//!   the seq of its `audit.key-rotated` record.
//!
//! ## Record hash
//!
//! ```text
//! hash = SHA-256( lp("switchboard.audit.record.v1")
//!               || be64(seq) || prev(32 bytes) || be64(at µs, two's complement)
//!               || lp(actor) || lp(action) || lp(object) || lp(source) || lp(outcome) )
//! lp(x) = be32(byte length of x) || x            (UTF-8 bytes)
//! ```
//!
//! ## Checkpoint note (C2SP `tlog-checkpoint` body in a C2SP `signed-note`)
//!
//! ```text
//! <origin>\n
//! <size, decimal>\n
//! <base64(hash of record `size`)>\n
//! \n
//! — <origin> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n
//! ```
//!
//! The key id is the first 4 bytes of SHA-256(origin || "\n" || 0x01 ||
//! public key), as in C2SP signed-note. One difference from a transparency
//! log: the "root" is the head of a hash chain, not a Merkle tree root, so
//! the note proves "records 1..size are exactly these" but offers no
//! inclusion proofs.
//!
//! # What records carry
//!
//! Ids only: `message:123`, `user:alice`, `data-key:raw/2026-11-23`, never
//! clinical content, so crypto-erasing a payload never touches the chain and
//! an exported audit trail is not PHI. Every field is at most
//! [`MAX_FIELD_BYTES`] bytes, contains no control characters (no CR/LF, so
//! one record is one log line) and `action` is not empty;
//! [`Chain::append`] rejects anything else.
//!
//! # Invariants
//!
//! - Appends happen inside the caller's transaction (the journal commits a
//!   message and its audit records atomically). One writer per database: the
//!   [`Chain`] caches the tail, and an append whose cached tail no longer
//!   matches the database fails with [`AuditError::Stale`] instead of forking
//!   the chain. After a rollback call [`Chain::reset`].
//! - A torn record is impossible: a record is either in a committed SQLite
//!   transaction or not at all (WAL frames without a commit frame, or with a
//!   bad checksum, are ignored on recovery). After an unclean shutdown the
//!   caller appends an `audit.recovered` record ([`record_recovery`]); the
//!   verifier reports it as a notice, never as a failure.
//! - A hash chain alone cannot reveal that its newest records were deleted:
//!   [`checkpoint`] signs the head and [`export_checkpoint`] writes it off
//!   the box. Records after the newest checkpoint are *unanchored*; the
//!   verifier says how many (`WARN`), never silently.
//! - [`verify`] never panics on any database content; a failure names the
//!   first bad seq.
//!
//! # Layout
//!
//! - [`record`]: the record, validation and the hash.
//! - [`chain`]: appending (cached tail).
//! - [`note`]: C2SP signed notes, verifier keys.
//! - [`signer`]: the Ed25519 signing key file and key rotation.
//! - [`checkpoint`]: signing and exporting checkpoints.
//! - [`verify`]: the verifier and its report.
//! - [`export`]: JSON lines, RFC 5424 syslog, RFC 5425 syslog over TLS.

pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod note;
pub mod record;
pub mod signer;
pub mod verify;

#[cfg(test)]
mod tests;

pub use chain::{Chain, record_recovery};
pub use checkpoint::{checkpoint, export_checkpoint, latest_checkpoint};
pub use export::{
    SyslogTlsSender, SyslogTlsTarget, export_jsonl, format_syslog, read_records, ship_syslog_tls,
};
pub use note::VerifierKey;
pub use record::{AuditRecord, MAX_FIELD_BYTES, StoredRecord};
pub use signer::{Signer, rotate_signer};
pub use verify::{Finding, FindingKind, VerifyOptions, VerifyReport, verify, verify_with};

/// The audit tables; the journal's migrations run it once.
pub const SCHEMA: &str = "
CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    object  TEXT NOT NULL,
    source  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev    BLOB NOT NULL,
    hash    BLOB NOT NULL
);
CREATE TABLE audit_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE audit_keys (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    valid_from_seq INTEGER NOT NULL,
    endorsement    TEXT
);
";

/// Action of the record appended after an unclean shutdown.
pub const ACTION_RECOVERED: &str = "audit.recovered";
/// Action of the record that registers a new checkpoint signing key.
pub const ACTION_KEY_ROTATED: &str = "audit.key-rotated";

/// Why an audit operation failed. Carries ids, field names and kinds, never
/// record content.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A record field is invalid (too long, control characters, empty action).
    #[error("audit record field `{field}`: {problem}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The cached tail does not match the database (another writer, or a
    /// rollback without [`Chain::reset`]); roll back, reset and retry.
    #[error("audit chain tail is stale (expected seq {expected})")]
    Stale {
        /// The seq this append or checkpoint expected to be next / current.
        expected: u64,
    },
    /// The database holds something the writer cannot build on.
    #[error("audit store is corrupt: {0}")]
    Corrupt(String),
    /// The signer is not the key registered as current in `audit_keys`.
    #[error("audit signer is not the current key (current is key {current})")]
    NotCurrentKey {
        /// Id of the current key.
        current: u64,
    },
    /// Origins do not match (signer vs key file vs rotation).
    #[error("audit origin mismatch")]
    Origin,
    /// The signing key file is missing, malformed or too open.
    #[error("audit key file {path}: {problem}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A file operation failed.
    #[error("audit {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint note could not be parsed.
    #[error("audit checkpoint note malformed: {0}")]
    Note(&'static str),
    /// SQLite failed.
    #[error("audit store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Syslog shipping failed (connect, TLS, write).
    #[error("audit syslog: {0}")]
    Syslog(String),
}

impl AuditError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
