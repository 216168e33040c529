//! Seal: encryption at rest for the PHI the journal stores.
//!
//! # Storage format
//!
//! **Sealed value** (what goes into `messages.raw`, `events.payload`, ...):
//!
//! ```text
//! "SB1" | dek id (u64, big endian) | nonce (24 bytes) | ciphertext | tag (16 bytes)
//!   3   |            8             |        24        |  len(PHI)  |      16
//! ```
//!
//! XChaCha20-Poly1305 under the data key (DEK) `dek id` (a row of
//! `data_keys`), with a fresh random 192-bit nonce per value (random nonces
//! of that size never repeat in practice; the tests check 200,000 in debug
//! and 1,000,000 with `--ignored`). The associated data is the 11-byte
//! header followed by the caller's context, which binds the value to its
//! row, e.g. `b"messages.raw\0" + row id`: a value copied to another row,
//! another column or another key, truncated or altered in any bit fails to
//! open ([`SealError::Authentication`] or [`SealError::Malformed`]), never
//! panics.
//!
//! **Wrapped key** (`data_keys.wrapped`, `seal_meta.wrapped`, as written by
//! [`LocalKek`]; a KMS-backed [`KeyEncryptionKey`] has its own format):
//!
//! ```text
//! "SW1" | nonce (24 bytes) | encrypted key (32 bytes) | tag (16 bytes)   = 75 bytes
//! ```
//!
//! XChaCha20-Poly1305 under the key-encryption key (KEK); the associated
//! data is `"SW1"` followed by the context the [`Keyring`] gives: for a DEK
//! `"switchboard/seal/dek\0" kek-id "\0" dek-id (u64 BE) category "\0"
//! period`, for a `seal_meta` entry `"switchboard/seal/meta\0" kek-id "\0"
//! key`. A wrapped key moved to another row, or relabelled with another
//! KEK id, does not unwrap.
//!
//! **Tables** ([`SCHEMA`], added to the journal's migrations):
//!
//! - `data_keys`: one DEK per (category, period): `kek_id` names the KEK
//!   that wrapped it, `created_at`/`destroyed_at` are µs since the Unix
//!   epoch (UTC). `wrapped IS NULL` with `destroyed_at` set: crypto-erased.
//! - `seal_meta`: other keys, wrapped: `blind_index` (the HMAC key of
//!   [`Keyring::blind_index`]).
//!
//! **Key files** ([`KeyDir`]): `<keys_dir>/kek-<id>.key`, 64 hex digits and
//! a newline, mode 0600 (a file that group or others may read is refused),
//! `id` = `YYYYMMDDTHHMMSSZ-<4 random hex>` of its creation, so the newest
//! sorts last. The KEK never enters the database; the database never holds
//! an unwrapped key.
//!
//! # Keys
//!
//! - **KEK**: 32 random bytes from a key file ([`KeyDir`], [`LocalKek::from_file`]),
//!   an environment variable ([`LocalKek::from_env`], hex) or an external
//!   KMS (implement [`KeyEncryptionKey`]). Only wraps keys.
//! - **DEK**: one per [`Category`] and period (UTC day `YYYY-MM-DD` by
//!   default, or month `YYYY-MM`, see [`PeriodLength`]), created on first
//!   use inside the caller's transaction, wrapped by the current KEK.
//!   Destroying it ([`destroy_key`]) erases every value of that category
//!   and period at once (crypto-erase for retention): its ciphertexts may
//!   stay in old pages, backups or the WAL and are still unreadable.
//! - **Blind-index key**: HMAC-SHA256 key for [`Keyring::blind_index`], so
//!   PHI such as a patient key can be looked up without being stored.
//!
//! # Rotation protocol ([`KeyDir::rotate`])
//!
//! 1. Write the new KEK to `kek-<new id>.key` (temporary name, fsync,
//!    rename, fsync the directory). From now on both KEKs are on disk and
//!    [`KeyDir::load`] loads both; the newest is current.
//! 2. In ONE transaction ([`rewrap_all`]): unwrap every live DEK and
//!    `seal_meta` entry with the KEK its row names, wrap it with the new
//!    KEK, check the new wrapping opens, update the row (`kek_id` too).
//!    Payloads are not touched, so this is O(number of keys), not rows.
//! 3. Only after that commit: delete the files of older KEKs that no live
//!    key still names ([`KeyDir::prune`]), fsync the directory.
//!
//! A crash (`kill -9`) anywhere leaves every key readable: before step 2
//! commits, every DEK is wrapped by an old KEK whose file still exists;
//! after, by the new one, whose file was made durable in step 1. The
//! transaction makes "each DEK wrapped by exactly one of them" atomic. A
//! rotation interrupted in step 3 is finished by [`KeyDir::prune`] (or the
//! next rotation). Run the rotation on the thread that owns the journal's
//! write connection, and rebuild the [`Keyring`] from the [`KeyDir`]
//! afterwards: the old KEK is gone, and a keyring that was not rebuilt
//! fails closed (it cannot unwrap the re-wrapped DEKs, and refuses to wrap
//! a new DEK while live keys name a KEK it lacks:
//! [`SealError::StaleKeyring`]), so no value is ever sealed under a key
//! whose KEK file was deleted.
//!
//! # Invariants
//!
//! - No plaintext key and no PHI in an error, a log line, a panic message
//!   or a `Debug` output: errors carry key ids, DEK ids, categories,
//!   periods, file paths and kinds only.
//! - Keys in memory are [`zeroize::Zeroizing`] and wiped on drop; opened
//!   values are returned as `Zeroizing<Vec<u8>>`.
//! - The keyring's DEK cache is checked against the row on every use
//!   (same KEK id, same wrapped bytes), so a rolled-back DEK, a rotation or
//!   an erase can never make it use a stale key.
//!
//! # Layout
//!
//! - `format`: sealed-value and wrapped-key framing (pure).
//! - `kek`: [`KeyEncryptionKey`], [`LocalKek`], key files and env keys.
//! - `keydir`: [`KeyDir`], rotation.
//! - `keyring`: [`Keyring`], [`rewrap_all`], [`destroy_key`], [`periods`].

mod format;
mod kek;
mod keydir;
mod keyring;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};

pub use format::{SEALED_MAGIC, SEALED_OVERHEAD, WRAPPED_LEN, WRAPPED_MAGIC};
pub use kek::{DEFAULT_KEK_ENV, KeyEncryptionKey, LocalKek};
pub use keydir::{KeyDir, RotationReport};
pub use keyring::{Keyring, destroy_key, periods, rewrap_all};

/// Tables of the seal (add to the journal's migrations).
pub const SCHEMA: &str = "
CREATE TABLE data_keys (
    id           INTEGER PRIMARY KEY,
    category     TEXT NOT NULL,
    period       TEXT NOT NULL,
    kek_id       TEXT NOT NULL,
    wrapped      BLOB,
    created_at   INTEGER NOT NULL,
    destroyed_at INTEGER,
    UNIQUE (category, period)
);

CREATE TABLE seal_meta (
    key     TEXT PRIMARY KEY,
    kek_id  TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
";

/// What a DEK protects; each category has its own keys, so retention can
/// erase raw messages earlier than alerts (or the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Raw messages as received (`messages.raw`).
    Raw,
    /// Normalised clinical events (`events.payload`).
    Event,
    /// Alerts.
    Alert,
    /// Deliveries (what was sent to whom).
    Delivery,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 4] = [
        Category::Raw,
        Category::Event,
        Category::Alert,
        Category::Delivery,
    ];

    /// The name stored in `data_keys.category`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Raw => "raw",
            Category::Event => "event",
            Category::Alert => "alert",
            Category::Delivery => "delivery",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| SealError::UnknownCategory(s.chars().take(32).collect()))
    }
}

/// How long one DEK is used: the unit of crypto-erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeriodLength {
    /// One key per UTC day, period `YYYY-MM-DD` (the default).
    #[default]
    Day,
    /// One key per UTC month, period `YYYY-MM`.
    Month,
}

impl PeriodLength {
    /// The period that `at` falls in.
    pub fn period_of(self, at: DateTime<Utc>) -> String {
        match self {
            PeriodLength::Day => at.format("%Y-%m-%d").to_string(),
            PeriodLength::Month => at.format("%Y-%m").to_string(),
        }
    }
}

/// True when `period` is a day (`YYYY-MM-DD`) or a month (`YYYY-MM`).
pub fn is_valid_period(period: &str) -> bool {
    match period.len() {
        10 => NaiveDate::parse_from_str(period, "%Y-%m-%d").is_ok(),
        7 => NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").is_ok(),
        _ => false,
    }
}

/// Why sealing, opening or key handling failed. Carries key ids, DEK ids,
/// categories, periods, paths and kinds; never key bytes or PHI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key file that group or others may access.
    #[error(
        "key file {path} has mode {mode:04o}: group or others may access it; it must be 0600 or stricter (chmod 600 it)"
    )]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file that cannot be used (missing, unreadable, not 64 hex digits, badly named).
    #[error("key file {path}: {problem}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never its content).
        problem: String,
    },
    /// The key directory cannot be used.
    #[error("key directory {path}: {problem}")]
    KeyDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A KEK from an environment variable that cannot be used.
    #[error("environment variable {var}: {problem}")]
    KeyEnv {
        /// The variable's name.
        var: String,
        /// What is wrong (never its value).
        problem: &'static str,
    },
    /// A key was wrapped by a KEK that is not loaded.
    #[error(
        "key-encryption key {kek_id} is not loaded but {key} is wrapped by it (is its key file missing?)"
    )]
    MissingKek {
        /// The KEK the row names.
        kek_id: String,
        /// Which key needs it, e.g. `data key 7 (raw 2026-11-23)`.
        key: String,
    },
    /// Live keys are wrapped by a KEK this keyring lacks, so it refuses to
    /// wrap new ones (it was not rebuilt after a rotation, or a key file is
    /// missing: restore it, or erase the periods that need it).
    #[error(
        "live keys are wrapped by key-encryption key {kek_id}, which this keyring does not have; rebuild the keyring from the key directory (after a rotation) or restore that key file"
    )]
    StaleKeyring {
        /// The KEK the rows name.
        kek_id: String,
    },
    /// A wrapped key did not unwrap: wrong KEK, altered row or wrong context.
    #[error("{key} does not unwrap with key-encryption key {kek_id} (wrong key or altered row)")]
    Unwrap {
        /// The KEK used.
        kek_id: String,
        /// Which key, when known.
        key: String,
    },
    /// An external KEK (KMS) failed.
    #[error("key-encryption key {kek_id}: {problem}")]
    Kek {
        /// The KEK.
        kek_id: String,
        /// What failed.
        problem: String,
    },
    /// A key id that cannot name a key file.
    #[error("invalid key id {0:?}: use 1-64 of A-Z a-z 0-9 _ -")]
    InvalidKeyId(String),
    /// A sealed value names a DEK that does not exist.
    #[error("data key {dek_id} does not exist")]
    UnknownDek {
        /// The DEK id in the value's header.
        dek_id: i64,
    },
    /// The DEK was destroyed (crypto-erase): the value is gone for good.
    #[error("erased: data key {dek_id} ({category} {period}) was destroyed")]
    Erased {
        /// The DEK.
        dek_id: i64,
        /// Its category.
        category: String,
        /// Its period.
        period: String,
    },
    /// Not a sealed value (bad magic, too short).
    #[error("not a sealed value: {0}")]
    Malformed(&'static str),
    /// The value did not authenticate: altered, truncated, or opened with the
    /// wrong context (row id, column) or key.
    #[error(
        "sealed value under data key {dek_id} failed authentication (wrong context or altered)"
    )]
    Authentication {
        /// The DEK in the value's header.
        dek_id: i64,
    },
    /// A category name not known to this version.
    #[error("unknown key category {0:?}")]
    UnknownCategory(String),
    /// A period that is neither `YYYY-MM-DD` nor `YYYY-MM`.
    #[error("invalid period {0:?}: expected YYYY-MM-DD or YYYY-MM")]
    InvalidPeriod(String),
    /// The database failed (code and kind only).
    #[error("database: {0}")]
    Database(String),
    /// A file operation on the key directory failed.
    #[error("{path}: {kind}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error kind.
        kind: std::io::ErrorKind,
    },
}

impl From<rusqlite::Error> for SealError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => {
                SealError::Database(format!("{:?} ({})", f.code, f.extended_code))
            }
            // Other variants describe API misuse, conversions or "no rows";
            // none quotes a bound value or column content.
            other => SealError::Database(other.to_string()),
        }
    }
}

impl SealError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: &std::io::Error) -> SealError {
        SealError::Io {
            path: path.into(),
            kind: e.kind(),
        }
    }
}

#[cfg(test)]
mod tests;
