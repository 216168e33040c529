//! The embedded SQLite store (the default).
//!
//! One file, `journal.sqlite3`, in WAL mode with `synchronous=FULL`: a commit
//! returns only after the WAL is fsync'd, so a power cut after an ACK loses
//! nothing (with `NORMAL` it could). After any error the connection is closed
//! and reopened before the next use, so a failed fsync is never trusted
//! (PostgreSQL's "fsyncgate" lesson): SQLite re-reads the WAL and only what
//! really reached the disk counts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::record::{
    Committed, Fate, MessageQuery, MessageSummary, NewMessage, OutboxItem, OutboxState,
};
use super::schema;
use super::storage::{Storage, StorageError};

/// SQLite-backed [`Storage`].
pub struct SqliteStorage {
    path: PathBuf,
    conn: Option<Connection>,
}

impl SqliteStorage {
    /// Opens (creating when missing) the journal at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Io(e.kind().to_string()))?;
        }
        let mut s = SqliteStorage {
            path: path.to_path_buf(),
            conn: None,
        };
        s.connection()?;
        Ok(s)
    }

    /// Opens an existing journal read-only (for operator commands).
    pub fn open_read_only(path: &Path) -> Result<Self, StorageError> {
        if !path.is_file() {
            return Err(StorageError::Other(format!(
                "no journal at {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        Ok(SqliteStorage {
            path: path.to_path_buf(),
            conn: Some(conn),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current connection, reopened after an earlier error.
    fn connection(&mut self) -> Result<&mut Connection, StorageError> {
        if self.conn.is_none() {
            let conn = Connection::open(&self.path).map_err(map_err)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(map_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StorageError::Other(format!(
                    "journal_mode is {mode}, expected wal"
                )));
            }
            conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
                .map_err(map_err)?;
            schema::migrate(&conn).map_err(map_err)?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connection just opened"))
    }

    /// Runs `f`; on error drops the connection so the next call reopens it.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StorageError> {
        let conn = self.connection()?;
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.conn = None;
                Err(map_err(e))
            }
        }
    }

    /// `PRAGMA journal_mode` and `PRAGMA synchronous` of the open connection.
    pub fn durability_settings(&mut self) -> Result<(String, i64), StorageError> {
        self.guarded(|c| {
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
    }
}

fn map_err(e: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DiskFull => StorageError::Full,
            C::SystemIoFailure | C::CannotOpen | C::ReadOnly => {
                StorageError::Io(format!("{:?} ({})", f.code, f.extended_code))
            }
            C::DatabaseCorrupt | C::NotADatabase => StorageError::Corrupt(format!("{:?}", f.code)),
            _ => StorageError::Other(format!("{:?} ({})", f.code, f.extended_code)),
        },
        // Other variants describe API misuse or conversions; none quotes row content.
        other => StorageError::Other(other.to_string()),
    }
}

/// Microseconds since the Unix epoch: the journal's time format.
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(v).single().unwrap_or_default()
}

/// The newest taken message with the same key: id, body hash, stored ACK, ACK code.
type PriorTaken = (i64, Vec<u8>, Option<Vec<u8>>, Option<String>);

fn commit_batch(
    conn: &mut Connection,
    batch: &[NewMessage],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Vec<Committed>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(batch.len());
    let window_start = to_micros(now) - window.as_micros().min(i64::MAX as u128) as i64;
    for m in batch {
        let mut reuse = false;
        if m.fate.is_taken() && !m.key.control_id.is_empty() {
            let prior: Option<PriorTaken> = tx
                .prepare_cached(
                    "SELECT id, body_sha256, ack, ack_code FROM messages
                     WHERE msh3 = ?1 AND msh4 = ?2 AND control_id = ?3 AND taken = 1
                       AND received_at >= ?4
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row(
                    params![m.key.msh3, m.key.msh4, m.key.control_id, window_start],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            if let Some((id, hash, ack, ack_code)) = prior {
                if hash.as_slice() == m.body_sha256.as_slice() {
                    tx.prepare_cached(
                        "UPDATE messages SET resends = resends + 1, last_resend_at = ?2 WHERE id = ?1",
                    )?
                    .execute(params![id, to_micros(m.received_at)])?;
                    out.push(Committed::Duplicate {
                        original: id,
                        ack: ack.unwrap_or_default(),
                        ack_code,
                    });
                    continue;
                }
                reuse = true;
            }
        }
        tx.prepare_cached(
            "INSERT INTO messages (received_at, peer, sender, msh3, msh4, control_id,
                message_type, trigger_event, processing_id, batch_ref, raw, raw_charset,
                body_sha256, fate, reason, error_code, error_location, ack_code, ack,
                taken, control_id_reuse, event_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        )?
        .execute(params![
            to_micros(m.received_at),
            m.peer,
            m.sender,
            m.key.msh3,
            m.key.msh4,
            m.key.control_id,
            m.message_type,
            m.trigger,
            m.processing_id,
            m.batch_ref,
            m.raw,
            m.raw_charset,
            m.body_sha256.as_slice(),
            m.fate.as_str(),
            m.reason,
            m.error_code,
            m.error_location,
            m.ack_code,
            m.ack,
            m.fate.is_taken(),
            reuse,
            m.events.len() as i64,
        ])?;
        let id = tx.last_insert_rowid();
        for (i, e) in m.events.iter().enumerate() {
            let payload = serde_json::to_string(e)
                .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
            let patient = e
                .patient
                .identifiers
                .first()
                .map(|p| format!("{}|{}", p.authority, p.value));
            tx.prepare_cached(
                "INSERT INTO events (message_id, idx, kind, patient_key, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, i as i64, e.kind.as_str(), patient, payload])?;
        }
        if let Some(a) = &m.app_ack {
            tx.prepare_cached(
                "INSERT INTO outbox (message_id, kind, destination, payload, control_id,
                    state, attempts, next_attempt_at, created_at)
                 VALUES (?1, 'app-ack', ?2, ?3, ?4, 'pending', 0, ?5, ?5)",
            )?
            .execute(params![
                id,
                a.destination,
                a.payload,
                a.control_id,
                to_micros(m.received_at)
            ])?;
        }
        out.push(Committed::Stored {
            id,
            control_id_reuse: reuse,
        });
    }
    tx.commit()?;
    Ok(out)
}

impl Storage for SqliteStorage {
    fn commit(
        &mut self,
        batch: &[NewMessage],
        now: DateTime<Utc>,
        dedup_window: Duration,
    ) -> Result<Vec<Committed>, StorageError> {
        self.guarded(|c| commit_batch(c, batch, now, dedup_window))
    }

    fn messages(&mut self, q: &MessageQuery) -> Result<Vec<MessageSummary>, StorageError> {
        self.guarded(|c| {
            let mut sql = String::from(
                "SELECT id, received_at, sender, peer, message_type, trigger_event, control_id,
                        processing_id, fate, reason, error_code, error_location, ack_code,
                        event_count, resends, control_id_reuse, raw, raw_charset
                 FROM messages WHERE 1 = 1",
            );
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(f) = q.fate {
                sql.push_str(" AND fate = ?");
                args.push(Box::new(f.as_str()));
            }
            if let Some(s) = &q.sender {
                sql.push_str(" AND sender = ?");
                args.push(Box::new(s.clone()));
            }
            if let Some(id) = &q.control_id {
                sql.push_str(" AND control_id = ?");
                args.push(Box::new(id.clone()));
            }
            if let Some(t) = &q.message_type {
                match t.split_once('^') {
                    Some((ty, trig)) => {
                        sql.push_str(" AND message_type = ? AND trigger_event = ?");
                        args.push(Box::new(ty.to_string()));
                        args.push(Box::new(trig.to_string()));
                    }
                    None => {
                        sql.push_str(" AND message_type = ?");
                        args.push(Box::new(t.clone()));
                    }
                }
            }
            if let Some(since) = q.since {
                sql.push_str(" AND received_at >= ?");
                args.push(Box::new(to_micros(since)));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            args.push(Box::new(q.limit.max(1) as i64));
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
                |r| {
                    let ty: String = r.get(4)?;
                    let trig: String = r.get(5)?;
                    let fate: String = r.get(8)?;
                    let raw: Vec<u8> = r.get(16)?;
                    Ok(MessageSummary {
                        id: r.get(0)?,
                        received_at: from_micros(r.get(1)?),
                        sender: r.get(2)?,
                        peer: r.get(3)?,
                        message_type: if trig.is_empty() {
                            ty
                        } else {
                            format!("{ty}^{trig}")
                        },
                        control_id: r.get(6)?,
                        processing_id: r.get(7)?,
                        fate: Fate::parse(&fate).unwrap_or(Fate::Rejected),
                        reason: r.get(9)?,
                        error_code: r.get(10)?,
                        error_location: r.get(11)?,
                        ack_code: r.get(12)?,
                        events: r.get(13)?,
                        resends: r.get(14)?,
                        control_id_reuse: r.get(15)?,
                        raw: q
                            .include_raw
                            .then(|| String::from_utf8_lossy(&raw).replace('\r', "\n")),
                    })
                },
            )?;
            rows.collect()
        })
    }

    fn outbox_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StorageError> {
        self.guarded(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, message_id, destination, payload, control_id, attempts FROM outbox
                 WHERE state = 'pending' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_micros(now), limit as i64], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    message_id: r.get(1)?,
                    destination: r.get(2)?,
                    payload: r.get(3)?,
                    control_id: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    fn outbox_next_due(&mut self) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.guarded(|c| {
            let v: Option<i64> = c.query_row(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(v.map(from_micros))
        })
    }

    fn outbox_update(
        &mut self,
        id: i64,
        state: OutboxState,
        next_attempt_at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), StorageError> {
        self.guarded(|c| {
            c.prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                    last_error = ?4,
                    delivered_at = CASE WHEN ?2 = 'delivered' THEN ?3 ELSE delivered_at END
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state.as_str(),
                to_micros(next_attempt_at),
                error
            ])?;
            Ok(())
        })
    }

    fn probe(&mut self) -> Result<(), StorageError> {
        self.guarded(|c| {
            c.execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO meta (key, value) VALUES ('probe', datetime('now'))
                   ON CONFLICT(key) DO UPDATE SET value = excluded.value;
                 COMMIT;",
            )
        })
    }
}
