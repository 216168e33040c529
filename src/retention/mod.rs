//! Retention and legal hold.
//!
//! Each category (raw messages, events, alerts, deliveries) is kept for its
//! configured time, counted in whole UTC days: the sealing key of a day
//! ([`crate::seal`]) covers exactly that day's rows of that category. Purging
//! a day deletes its rows and destroys its data key in one transaction
//! (crypto-erase: even a copy of the database taken before cannot be read
//! for that day any more), and appends an audit record. A legal hold
//! (global, per patient or per sender) suspends the purge of every day that
//! holds data it covers; placing and releasing holds is audited too.
//!
//! The audit trail itself is never purged here: it is kept at least six
//! years (`audit_years`), and longer is allowed; it holds ids, not content.
//!
//! # Storage
//!
//! `legal_holds(id, scope, subject, reason, placed_by, placed_at,
//! released_by, released_at)`: `scope` is `global`, `patient` (subject = the
//! patient's blind index, never the identifier itself) or `sender` (subject =
//! the configured sender name).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::RetentionConfig;
use crate::seal::Category;

/// The `legal_holds` table.
pub const SCHEMA: &str = "
CREATE TABLE legal_holds (
    id          INTEGER PRIMARY KEY,
    scope       TEXT NOT NULL,
    subject     BLOB,
    reason      TEXT NOT NULL,
    placed_by   TEXT NOT NULL,
    placed_at   INTEGER NOT NULL,
    released_by TEXT,
    released_at INTEGER
);
";

/// What a hold covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldScope {
    /// Everything: no purge at all.
    Global,
    /// Every day holding data of this patient (blind index of the identifier).
    Patient([u8; 16]),
    /// Every day holding messages of this configured sender.
    Sender(String),
}

impl HoldScope {
    fn parts(&self) -> (&'static str, Option<Vec<u8>>) {
        match self {
            HoldScope::Global => ("global", None),
            HoldScope::Patient(ix) => ("patient", Some(ix.to_vec())),
            HoldScope::Sender(s) => ("sender", Some(s.as_bytes().to_vec())),
        }
    }
}

/// A hold as listed.
#[derive(Clone, Debug, Serialize)]
pub struct Hold {
    /// Hold id.
    pub id: i64,
    /// `global`, `patient` or `sender`.
    pub scope: String,
    /// Sender name, or `patient:<blind index hex>`; empty for global.
    pub subject: String,
    /// Why (free text written by the compliance officer; must not hold PHI).
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When.
    pub placed_at: DateTime<Utc>,
}

/// Why a retention operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Database error (no row content).
    #[error("retention storage: {0}")]
    Storage(String),
    /// Key destruction failed.
    #[error("retention keys: {0}")]
    Seal(String),
    /// No such hold.
    #[error("no active hold with id {0}")]
    NoSuchHold(i64),
}

impl From<rusqlite::Error> for RetentionError {
    fn from(e: rusqlite::Error) -> Self {
        RetentionError::Storage(e.to_string())
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Places a hold; returns its id.
pub fn place_hold(
    conn: &Connection,
    scope: &HoldScope,
    reason: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<i64, RetentionError> {
    let (scope, subject) = scope.parts();
    conn.execute(
        "INSERT INTO legal_holds (scope, subject, reason, placed_by, placed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![scope, subject, reason, by, micros(now)],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Releases an active hold.
pub fn release_hold(
    conn: &Connection,
    id: i64,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(), RetentionError> {
    let n = conn.execute(
        "UPDATE legal_holds SET released_by = ?2, released_at = ?3 WHERE id = ?1 AND released_at IS NULL",
        params![id, by, micros(now)],
    )?;
    if n == 0 {
        return Err(RetentionError::NoSuchHold(id));
    }
    Ok(())
}

/// Active holds, oldest first.
pub fn active_holds(conn: &Connection) -> Result<Vec<Hold>, RetentionError> {
    let mut stmt = conn.prepare(
        "SELECT id, scope, subject, reason, placed_by, placed_at FROM legal_holds
         WHERE released_at IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let scope: String = r.get(1)?;
        let subject: Option<Vec<u8>> = r.get(2)?;
        let subject = match (scope.as_str(), subject) {
            ("patient", Some(s)) => format!("patient:{}", hex::encode(s)),
            (_, Some(s)) => String::from_utf8_lossy(&s).into_owned(),
            (_, None) => String::new(),
        };
        Ok(Hold {
            id: r.get(0)?,
            scope,
            subject,
            reason: r.get(3)?,
            placed_by: r.get(4)?,
            placed_at: DateTime::from_timestamp_micros(r.get(5)?).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state of one (category, day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeriodState {
    /// Inside its retention time.
    Kept,
    /// Past its retention time and not held: the next purge erases it.
    Due,
    /// Past its retention time but held; the ids of the holds.
    Held(Vec<i64>),
    /// Erased: rows deleted, key destroyed.
    Erased,
}

/// One line of `switchboard retention status`.
#[derive(Clone, Debug, Serialize)]
pub struct PeriodStatus {
    /// Category name.
    pub category: &'static str,
    /// UTC day `YYYY-MM-DD`.
    pub period: String,
    /// Rows of that category and day still stored.
    pub rows: u64,
    /// Kept, due, held or erased.
    pub state: PeriodState,
}

/// How long `category` is kept.
pub fn keep_for(cfg: &RetentionConfig, category: Category) -> std::time::Duration {
    match category {
        Category::Raw => cfg.raw_messages,
        Category::Event => cfg.events,
        Category::Alert => cfg.alerts,
        Category::Delivery => cfg.deliveries,
    }
}

/// The table and time column holding a category's rows, and how a row is
/// tied to its message (for sender and patient holds).
fn rows_of(category: Category) -> Option<(&'static str, &'static str)> {
    match category {
        Category::Raw => Some(("message_bodies", "message_id")),
        Category::Event => Some(("events", "message_id")),
        // Alerts and deliveries arrive with the routing stages.
        Category::Alert | Category::Delivery => None,
    }
}

/// Start and end (µs) of a UTC day `YYYY-MM-DD`.
fn day_bounds(period: &str) -> Option<(i64, i64)> {
    let day = chrono::NaiveDate::parse_from_str(period, "%Y-%m-%d").ok()?;
    let start = day.and_hms_opt(0, 0, 0)?.and_utc();
    Some((micros(start), micros(start + ChronoDuration::days(1))))
}

/// Holds that cover (category, period).
fn holds_covering(
    conn: &Connection,
    category: Category,
    period: &str,
    holds: &[Hold],
) -> Result<Vec<i64>, RetentionError> {
    let Some((start, end)) = day_bounds(period) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for h in holds {
        let covered = match h.scope.as_str() {
            "global" => true,
            "sender" => conn
                .query_row(
                    "SELECT 1 FROM messages WHERE sender = ?1 AND received_at >= ?2 AND received_at < ?3 LIMIT 1",
                    params![h.subject, start, end],
                    |_| Ok(()),
                )
                .optional()?
                .is_some(),
            "patient" => {
                let ix = hex::decode(h.subject.trim_start_matches("patient:")).unwrap_or_default();
                conn.query_row(
                    "SELECT 1 FROM events e JOIN messages m ON m.id = e.message_id
                     WHERE e.patient_key = ?1 AND m.received_at >= ?2 AND m.received_at < ?3 LIMIT 1",
                    params![ix, start, end],
                    |_| Ok(()),
                )
                .optional()?
                .is_some()
            }
            _ => false,
        };
        if covered {
            out.push(h.id);
        }
        let _ = category;
    }
    Ok(out)
}

fn count_rows(conn: &Connection, category: Category, period: &str) -> Result<u64, RetentionError> {
    let (Some((table, link)), Some((start, end))) = (rows_of(category), day_bounds(period)) else {
        return Ok(0);
    };
    let sql = format!(
        "SELECT COUNT(*) FROM {table} x JOIN messages m ON m.id = x.{link}
         WHERE m.received_at >= ?1 AND m.received_at < ?2"
    );
    let n: i64 = conn.query_row(&sql, params![start, end], |r| r.get(0))?;
    Ok(n as u64)
}

/// Every (category, day) that has a data key, with its state.
pub fn status(
    conn: &Connection,
    cfg: &RetentionConfig,
    now: DateTime<Utc>,
) -> Result<Vec<PeriodStatus>, RetentionError> {
    let holds = active_holds(conn)?;
    let mut out = Vec::new();
    for category in Category::ALL {
        let keep = ChronoDuration::from_std(keep_for(cfg, category)).unwrap_or(ChronoDuration::MAX);
        let periods = crate::seal::periods(conn, category)
            .map_err(|e| RetentionError::Seal(e.to_string()))?;
        for (period, destroyed) in periods {
            let state = if destroyed {
                PeriodState::Erased
            } else {
                let expired = day_bounds(&period)
                    .and_then(|(_, end)| DateTime::from_timestamp_micros(end))
                    .is_some_and(|end| end + keep <= now);
                if !expired {
                    PeriodState::Kept
                } else {
                    let covering = holds_covering(conn, category, &period, &holds)?;
                    if covering.is_empty() {
                        PeriodState::Due
                    } else {
                        PeriodState::Held(covering)
                    }
                }
            };
            let rows = count_rows(conn, category, &period)?;
            out.push(PeriodStatus {
                category: category.as_str(),
                period,
                rows,
                state,
            });
        }
    }
    Ok(out)
}

/// What a purge did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeReport {
    /// (category, day, rows deleted) erased.
    pub erased: Vec<(String, String, u64)>,
    /// (category, day, hold ids) skipped because held.
    pub held: Vec<(String, String, Vec<i64>)>,
}

/// Deletes the rows of one (category, day) and destroys its key, inside the
/// caller's transaction. Returns the number of rows deleted.
pub fn erase_period(
    conn: &Connection,
    category: Category,
    period: &str,
    now: DateTime<Utc>,
) -> Result<u64, RetentionError> {
    let mut deleted = 0;
    if let (Some((table, link)), Some((start, end))) = (rows_of(category), day_bounds(period)) {
        let sql = format!(
            "DELETE FROM {table} WHERE {link} IN
               (SELECT id FROM messages WHERE received_at >= ?1 AND received_at < ?2)"
        );
        deleted = conn.execute(&sql, params![start, end])? as u64;
    }
    crate::seal::destroy_key(conn, category, period, now)
        .map_err(|e| RetentionError::Seal(e.to_string()))?;
    Ok(deleted)
}
