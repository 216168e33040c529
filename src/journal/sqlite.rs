//! The embedded SQLite store (the default).
//!
//! One file, `journal.sqlite3`, in WAL mode with `synchronous=FULL`: a commit
//! returns only after the WAL is fsync'd, so a power cut after an ACK loses
//! nothing (with `NORMAL` it could). `secure_delete=ON` overwrites freed
//! pages. After any error the connection is closed and reopened before the
//! next use, so a failed fsync is never trusted (PostgreSQL's "fsyncgate"
//! lesson): SQLite re-reads the WAL and only what really reached the disk
//! counts.
//!
//! PHI is sealed before it reaches SQLite ([`crate::seal`]): message bodies
//! (category `raw`) and event payloads (category `event`) are
//! XChaCha20-Poly1305 ciphertext bound to their row (`table\0id` as
//! associated data); the patient key used for ordering and holds is a keyed
//! blind index. Every message committed appends an audit record in the same
//! transaction ([`crate::audit`]); a signed checkpoint follows every
//! `checkpoint_every` records or `checkpoint_interval`, written also to the
//! off-box directory.

mod alerts;
mod census;
mod rosters;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::record::{
    Committed, Fate, MessageQuery, MessageSummary, NewMessage, OutboxItem, OutboxState,
};
use super::schema;
use super::storage::{Storage, StorageError};
use crate::audit::{self, AuditRecord, Chain, Signer};
use crate::config::RetentionConfig;
use crate::retention::{self, HoldScope, PeriodState, PeriodStatus, PurgeReport};
use crate::seal::{Category, KeyDir, Keyring, RotationReport, SealError};

/// What protects the journal: keys for PHI at rest, and the audit signer.
pub struct Protection {
    /// The key directory (for reloads and rotation); `None` when the KEK
    /// comes from an environment variable.
    pub key_dir: Option<KeyDir>,
    /// Data keys, wrapped by the key-encryption key.
    pub keyring: Keyring,
    /// Signs audit checkpoints.
    pub signer: Signer,
    /// Second ("off-box") location for checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or after this long.
    pub checkpoint_interval: Duration,
}

impl Protection {
    /// Freshly generated keys held only in memory: for tests and benchmarks
    /// (a journal written with them cannot be read after the process ends).
    pub fn ephemeral(origin: &str) -> Result<Protection, StorageError> {
        let kek = crate::seal::LocalKek::generate("ephemeral")
            .map_err(|e| StorageError::Keys(e.to_string()))?;
        let signer = Signer::generate(origin).map_err(|e| StorageError::Audit(e.to_string()))?;
        Ok(Protection {
            key_dir: None,
            keyring: Keyring::new(std::sync::Arc::new(kek), Vec::new()),
            signer,
            checkpoint_dir: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
        })
    }
}

/// SQLite-backed [`Storage`].
pub struct SqliteStorage {
    path: PathBuf,
    conn: Option<Connection>,
    read_only: bool,
    /// The gateway's own store: keeps the `running` marker that detects an
    /// unclean shutdown. Operator commands open the same file without it.
    owner: bool,
    protection: Option<Protection>,
    chain: Chain,
    /// Size and time of the last checkpoint written by this process.
    last_checkpoint: Option<(u64, DateTime<Utc>)>,
}

/// Failures inside a storage operation, before mapping.
enum Fail {
    Sql(rusqlite::Error),
    Seal(SealError),
    Audit(audit::AuditError),
    Retention(retention::RetentionError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}
impl From<SealError> for Fail {
    fn from(e: SealError) -> Self {
        Fail::Seal(e)
    }
}
impl From<audit::AuditError> for Fail {
    fn from(e: audit::AuditError) -> Self {
        Fail::Audit(e)
    }
}
impl From<retention::RetentionError> for Fail {
    fn from(e: retention::RetentionError) -> Self {
        Fail::Retention(e)
    }
}

impl Fail {
    fn into_storage(self) -> StorageError {
        match self {
            Fail::Sql(e) => map_err(e),
            Fail::Seal(e) => StorageError::Keys(e.to_string()),
            Fail::Audit(audit::AuditError::Sqlite(e)) => map_err(e),
            Fail::Audit(e) => StorageError::Audit(e.to_string()),
            Fail::Retention(e) => StorageError::Other(e.to_string()),
        }
    }

    /// A keyring that is behind the key directory (a rotation by another process).
    fn is_stale_keys(&self) -> bool {
        matches!(
            self,
            Fail::Seal(SealError::StaleKeyring { .. } | SealError::MissingKek { .. })
        )
    }
}

impl SqliteStorage {
    /// Opens (creating when missing) the journal at `path`, migrates it, and
    /// checks that every live data key can be unwrapped. After an unclean
    /// shutdown it appends an `audit.recovered` record.
    pub fn open(
        path: &Path,
        protection: Protection,
        now: DateTime<Utc>,
    ) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Io(e.kind().to_string()))?;
        }
        let mut s = SqliteStorage {
            path: path.to_path_buf(),
            conn: None,
            read_only: false,
            owner: true,
            protection: Some(protection),
            chain: Chain::default(),
            last_checkpoint: None,
        };
        s.connection()?;
        s.start_up(now)?;
        Ok(s)
    }

    /// Opens the journal for an operator command (key rotation, retention,
    /// holds) that may run beside the gateway: no recovery bookkeeping.
    pub fn open_admin(path: &Path, protection: Protection) -> Result<Self, StorageError> {
        if !path.is_file() {
            return Err(StorageError::Other(format!(
                "no journal at {}",
                path.display()
            )));
        }
        let mut s = SqliteStorage {
            path: path.to_path_buf(),
            conn: None,
            read_only: false,
            owner: false,
            protection: Some(protection),
            chain: Chain::default(),
            last_checkpoint: None,
        };
        s.connection()?;
        Ok(s)
    }

    /// Opens an existing journal read-only (for operator commands). Without
    /// `protection`, sealed content cannot be shown.
    pub fn open_read_only(
        path: &Path,
        protection: Option<Protection>,
    ) -> Result<Self, StorageError> {
        if !path.is_file() {
            return Err(StorageError::Other(format!(
                "no journal at {}",
                path.display()
            )));
        }
        let mut s = SqliteStorage {
            path: path.to_path_buf(),
            conn: None,
            read_only: true,
            owner: false,
            protection,
            chain: Chain::default(),
            last_checkpoint: None,
        };
        s.connection()?;
        Ok(s)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current connection, reopened after an earlier error.
    fn connection(&mut self) -> Result<&mut Connection, StorageError> {
        if self.conn.is_none() {
            let conn = if self.read_only {
                Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(map_err)?
            } else {
                Connection::open(&self.path).map_err(map_err)?
            };
            conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
            if !self.read_only {
                let mode: String = conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                    .map_err(map_err)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StorageError::Other(format!(
                        "journal_mode is {mode}, expected wal"
                    )));
                }
                conn.execute_batch(
                    "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
                )
                .map_err(map_err)?;
                schema::migrate(&conn).map_err(map_err)?;
            }
            self.conn = Some(conn);
            self.chain.reset();
            if let Some(p) = self.protection.as_mut() {
                p.keyring.clear_cache();
            }
        }
        Ok(self.conn.as_mut().expect("connection just opened"))
    }

    /// Start-up checks: keys unwrap, recovery record after an unclean stop,
    /// the newest checkpoint exported again.
    fn start_up(&mut self, now: DateTime<Utc>) -> Result<(), StorageError> {
        let clean = self.guarded(|s, c| {
            let p = s
                .protection
                .as_ref()
                .expect("writable storage has protection");
            p.keyring.verify(c)?;
            let state: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'running'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(state.as_deref() != Some("1"))
        })?;
        self.guarded(|s, c| {
            let tx = c.transaction()?;
            if !clean {
                audit::record_recovery(&tx, &mut s.chain, now, "journal")?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('running', '1')
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        if !clean {
            tracing::warn!("journal was not closed cleanly; recorded audit.recovered");
        }
        self.maybe_checkpoint(now, true);
        Ok(())
    }

    /// Runs `f`; on error drops the connection so the next call reopens it.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut Connection) -> Result<T, Fail>,
    ) -> Result<T, StorageError> {
        self.connection()?;
        let mut conn = self.conn.take().expect("connection open");
        let result = f(self, &mut conn);
        match result {
            Ok(v) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Err(e) => {
                drop(conn);
                self.chain.reset();
                if let Some(p) = self.protection.as_mut() {
                    p.keyring.clear_cache();
                }
                Err(e.into_storage())
            }
        }
    }

    fn protection(&mut self) -> Result<&mut Protection, Fail> {
        self.protection
            .as_mut()
            .ok_or(Fail::Seal(SealError::Malformed(
                "journal opened without keys",
            )))
    }

    /// Reloads the keyring from the key directory (after a rotation by
    /// another process).
    fn reload_keys(&mut self) -> Result<(), StorageError> {
        let Some(p) = self.protection.as_mut() else {
            return Ok(());
        };
        let Some(dir) = p.key_dir.as_ref() else {
            return Ok(());
        };
        let dir = KeyDir::load(dir.path()).map_err(|e| StorageError::Keys(e.to_string()))?;
        p.keyring = Keyring::from_dir(&dir).map_err(|e| StorageError::Keys(e.to_string()))?;
        p.key_dir = Some(dir);
        tracing::info!("key directory changed; keyring reloaded");
        Ok(())
    }

    /// `PRAGMA journal_mode` and `PRAGMA synchronous` of the open connection.
    pub fn durability_settings(&mut self) -> Result<(String, i64), StorageError> {
        self.guarded(|_, c| {
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
    }

    /// Writes a signed checkpoint when due (or `force`d), and exports it to
    /// the off-box directory. Failures are logged: the chain itself is
    /// already durable, and the next checkpoint covers it.
    fn maybe_checkpoint(&mut self, now: DateTime<Utc>, force: bool) {
        let Some(p) = self.protection.as_ref() else {
            return;
        };
        let (every, interval) = (p.checkpoint_every, p.checkpoint_interval);
        let size = match self.guarded(|s, c| Ok(s.chain.tail(c)?.0)) {
            Ok(size) => size,
            Err(_) => return,
        };
        let due = match self.last_checkpoint {
            None => true,
            Some((last, at)) => {
                size >= last + every
                    || (size > last
                        && chrono::Duration::from_std(interval).is_ok_and(|i| now - at >= i))
            }
        };
        if !(due || force) || size == 0 {
            return;
        }
        let result = self.guarded(|s, c| {
            let tx = c.transaction()?;
            let note = {
                let p = s.protection.as_ref().expect("checked above");
                let signer = &p.signer;
                audit::checkpoint(&tx, &mut s.chain, signer)?
            };
            tx.commit()?;
            let note = match note {
                Some(n) => Some(n),
                None => audit::latest_checkpoint(c)?,
            };
            Ok(note)
        });
        match result {
            Ok(note) => {
                self.last_checkpoint = Some((size, now));
                if let (Some(note), Some(dir)) = (
                    note,
                    self.protection
                        .as_ref()
                        .and_then(|p| p.checkpoint_dir.clone()),
                ) && let Err(e) = audit::export_checkpoint(&dir, &note)
                {
                    tracing::error!(error = %e, "audit checkpoint could not be written off the box");
                }
            }
            Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
        }
    }
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if let Some(c) = self.conn.as_ref() {
            let _ = c.execute("UPDATE meta SET value = '0' WHERE key = 'running'", []);
        }
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

/// Associated data binding a sealed value to its row.
fn aad(table: &str, id: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(table.len() + 9);
    v.extend_from_slice(table.as_bytes());
    v.push(0);
    v.extend_from_slice(&id.to_be_bytes());
    v
}

/// The newest taken message with the same key: id, body hash, stored ACK, ACK code.
type PriorTaken = (i64, Vec<u8>, Option<Vec<u8>>, Option<String>);

fn actor_of(m: &NewMessage) -> String {
    match &m.sender {
        Some(s) => format!("sender:{s}"),
        None => "sender:unknown".to_string(),
    }
}

impl SqliteStorage {
    fn commit_batch(
        &mut self,
        conn: &mut Connection,
        batch: &[NewMessage],
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<Vec<Committed>, Fail> {
        // Another process (an operator command) may have appended audit
        // records: read the tail afresh for every transaction.
        self.chain.reset();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(batch.len());
        let window_start = to_micros(now) - window.as_micros().min(i64::MAX as u128) as i64;
        let mut next_message: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM messages", [], |r| {
                r.get(0)
            })?;
        let mut next_event: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM events", [], |r| {
                r.get(0)
            })?;
        for m in batch {
            let mut reuse = false;
            // The body hash is stored keyed (a blind index), so the journal
            // holds nothing that could confirm a guessed message.
            let body_key = self
                .protection()?
                .keyring
                .blind_index(&tx, &m.body_sha256)?;
            if m.fate.is_taken() && !m.key.control_id.is_empty() {
                let prior: Option<PriorTaken> = tx
                    .prepare_cached(
                        "SELECT id, body_key, ack, ack_code FROM messages
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
                    if hash.as_slice() == body_key.as_slice() {
                        tx.prepare_cached(
                            "UPDATE messages SET resends = resends + 1, last_resend_at = ?2 WHERE id = ?1",
                        )?
                        .execute(params![id, to_micros(m.received_at)])?;
                        self.chain.append(
                            &tx,
                            &AuditRecord::new(
                                m.received_at,
                                actor_of(m),
                                "message.duplicate",
                                format!("message:{id}"),
                                &m.peer,
                                ack_code.as_deref().unwrap_or("none"),
                            ),
                        )?;
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
            let id = next_message;
            next_message += 1;
            tx.prepare_cached(
                "INSERT INTO messages (id, received_at, peer, sender, msh3, msh4, control_id,
                    message_type, trigger_event, processing_id, batch_ref, raw_charset,
                    body_key, fate, reason, error_code, error_location, ack_code, ack,
                    taken, control_id_reuse, event_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                    ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )?
            .execute(params![
                id,
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
                m.raw_charset,
                body_key.as_slice(),
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
            let keyring = &mut self.protection()?.keyring;
            let body = keyring.seal(
                &tx,
                Category::Raw,
                m.received_at,
                &m.raw,
                &aad("message_bodies", id),
            )?;
            tx.prepare_cached("INSERT INTO message_bodies (message_id, body) VALUES (?1, ?2)")?
                .execute(params![id, body])?;
            for (i, e) in m.events.iter().enumerate() {
                let eid = next_event;
                next_event += 1;
                let payload = serde_json::to_vec(e)
                    .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
                let sealed = keyring.seal(
                    &tx,
                    Category::Event,
                    m.received_at,
                    &payload,
                    &aad("events", eid),
                )?;
                let patient = match e.patient.identifiers.first() {
                    Some(p) => Some(
                        keyring
                            .blind_index(&tx, format!("{}|{}", p.authority, p.value).as_bytes())?
                            .to_vec(),
                    ),
                    None => None,
                };
                tx.prepare_cached(
                    "INSERT INTO events (id, message_id, idx, kind, patient_key, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    eid,
                    id,
                    i as i64,
                    e.kind.as_str(),
                    patient,
                    sealed
                ])?;
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
            self.chain.append(
                &tx,
                &AuditRecord::new(
                    m.received_at,
                    actor_of(m),
                    "message.received",
                    format!("message:{id}"),
                    &m.peer,
                    m.ack_code.as_deref().unwrap_or("none"),
                ),
            )?;
            if reuse {
                self.chain.append(
                    &tx,
                    &AuditRecord::new(
                        m.received_at,
                        actor_of(m),
                        "message.control-id-reuse",
                        format!("message:{id}"),
                        &m.peer,
                        "accepted",
                    ),
                )?;
            }
            out.push(Committed::Stored {
                id,
                control_id_reuse: reuse,
            });
        }
        tx.commit()?;
        Ok(out)
    }

    fn list(
        &mut self,
        conn: &mut Connection,
        q: &MessageQuery,
    ) -> Result<Vec<MessageSummary>, Fail> {
        let mut sql = String::from(
            "SELECT m.id, m.received_at, m.sender, m.peer, m.message_type, m.trigger_event,
                    m.control_id, m.processing_id, m.fate, m.reason, m.error_code,
                    m.error_location, m.ack_code, m.event_count, m.resends, m.control_id_reuse,
                    b.body
             FROM messages m LEFT JOIN message_bodies b ON b.message_id = m.id WHERE 1 = 1",
        );
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(f) = q.fate {
            sql.push_str(" AND m.fate = ?");
            args.push(Box::new(f.as_str()));
        }
        if let Some(s) = &q.sender {
            sql.push_str(" AND m.sender = ?");
            args.push(Box::new(s.clone()));
        }
        if let Some(id) = &q.control_id {
            sql.push_str(" AND m.control_id = ?");
            args.push(Box::new(id.clone()));
        }
        if let Some(t) = &q.message_type {
            match t.split_once('^') {
                Some((ty, trig)) => {
                    sql.push_str(" AND m.message_type = ? AND m.trigger_event = ?");
                    args.push(Box::new(ty.to_string()));
                    args.push(Box::new(trig.to_string()));
                }
                None => {
                    sql.push_str(" AND m.message_type = ?");
                    args.push(Box::new(t.clone()));
                }
            }
        }
        if let Some(since) = q.since {
            sql.push_str(" AND m.received_at >= ?");
            args.push(Box::new(to_micros(since)));
        }
        sql.push_str(" ORDER BY m.id DESC LIMIT ?");
        args.push(Box::new(q.limit.max(1) as i64));
        let mut rows: Vec<(MessageSummary, Option<Vec<u8>>)> = {
            let mut stmt = conn.prepare(&sql)?;
            let mapped = stmt.query_map(
                rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
                |r| {
                    let ty: String = r.get(4)?;
                    let trig: String = r.get(5)?;
                    let fate: String = r.get(8)?;
                    Ok((
                        MessageSummary {
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
                            raw: None,
                        },
                        r.get::<_, Option<Vec<u8>>>(16)?,
                    ))
                },
            )?;
            mapped.collect::<Result<_, _>>()?
        };
        if q.include_raw {
            if self.read_only {
                return Err(Fail::Seal(SealError::Malformed(
                    "content views are audited: open the journal writable",
                )));
            }
            self.audit_views(conn, &rows.iter().map(|(r, _)| r.id).collect::<Vec<_>>(), q)?;
            let keyring = self.protection.as_mut().map(|p| &mut p.keyring);
            match keyring {
                None => {
                    for (row, _) in &mut rows {
                        row.raw = Some("[sealed: no keys available]".into());
                    }
                }
                Some(keyring) => {
                    for (row, body) in &mut rows {
                        row.raw = Some(match body {
                            None => "[erased by retention]".to_string(),
                            Some(b) => {
                                match keyring.open(conn, b, &aad("message_bodies", row.id)) {
                                    Ok(plain) => {
                                        String::from_utf8_lossy(&plain).replace('\r', "\n")
                                    }
                                    Err(SealError::Erased { .. }) => {
                                        "[erased by retention]".to_string()
                                    }
                                    Err(e) => format!("[cannot open: {e}]"),
                                }
                            }
                        });
                    }
                }
            }
        }
        Ok(rows.into_iter().map(|(r, _)| r).collect())
    }

    /// Appends one `phi.viewed` record per message whose content is shown,
    /// before it is shown.
    fn audit_views(
        &mut self,
        conn: &mut Connection,
        ids: &[i64],
        q: &MessageQuery,
    ) -> Result<(), Fail> {
        let Some(viewer) = q.viewer.as_ref() else {
            return Err(Fail::Seal(SealError::Malformed(
                "content views need a viewer for the audit trail",
            )));
        };
        let (viewer, now) = (viewer.actor.clone(), viewer.at);
        self.chain.reset();
        let tx = conn.transaction()?;
        for id in ids {
            self.chain.append(
                &tx,
                &AuditRecord::new(
                    now,
                    &viewer,
                    "phi.viewed",
                    format!("message:{id}"),
                    "cli",
                    "ok",
                ),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `op` and appends its audit record in one transaction. `op`
    /// returns the outcome, and optionally the object when it is only known
    /// afterwards (a new hold's id).
    fn audit_op(
        &mut self,
        conn: &mut Connection,
        rec: AuditRecord,
        op: impl FnOnce(&mut Self, &Connection) -> Result<(Option<String>, String), Fail>,
    ) -> Result<String, Fail> {
        self.chain.reset();
        let tx = conn.transaction()?;
        let (object, outcome) = op(self, &tx)?;
        let rec = AuditRecord {
            object: object.unwrap_or(rec.object.clone()),
            outcome: outcome.clone(),
            ..rec
        };
        self.chain.append(&tx, &rec)?;
        tx.commit()?;
        Ok(outcome)
    }
}

impl Storage for SqliteStorage {
    fn commit(
        &mut self,
        batch: &[NewMessage],
        now: DateTime<Utc>,
        dedup_window: Duration,
    ) -> Result<Vec<Committed>, StorageError> {
        let mut retried = false;
        loop {
            self.connection()?;
            let mut conn = self.conn.take().expect("connection open");
            let result = self.commit_batch(&mut conn, batch, now, dedup_window);
            match result {
                Ok(v) => {
                    self.conn = Some(conn);
                    self.maybe_checkpoint(now, false);
                    return Ok(v);
                }
                Err(e) => {
                    drop(conn);
                    self.chain.reset();
                    if let Some(p) = self.protection.as_mut() {
                        p.keyring.clear_cache();
                    }
                    if e.is_stale_keys() && !retried {
                        retried = true;
                        self.reload_keys()?;
                        continue;
                    }
                    return Err(e.into_storage());
                }
            }
        }
    }

    fn messages(&mut self, q: &MessageQuery) -> Result<Vec<MessageSummary>, StorageError> {
        self.guarded(|s, c| s.list(c, q))
    }

    fn outbox_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StorageError> {
        self.guarded(|_, c| {
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
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn outbox_next_due(&mut self) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.guarded(|_, c| {
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
        self.guarded(|_, c| {
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
        self.guarded(|_, c| {
            c.execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO meta (key, value) VALUES ('probe', datetime('now'))
                   ON CONFLICT(key) DO UPDATE SET value = excluded.value;
                 COMMIT;",
            )?;
            Ok(())
        })
    }

    fn rotate_keys(
        &mut self,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<RotationReport, StorageError> {
        self.reload_keys()?;
        let report = self.guarded(|s, c| {
            let p = s.protection()?;
            let Some(dir) = p.key_dir.as_mut() else {
                return Err(Fail::Seal(SealError::Malformed(
                    "the key-encryption key comes from the environment: rotate it there",
                )));
            };
            let report = dir.rotate(c, now)?;
            p.keyring = Keyring::from_dir(dir)?;
            Ok(report)
        })?;
        let rec = AuditRecord::new(
            now,
            actor,
            "key.rotated",
            format!("kek:{}", report.new_kek_id),
            "cli",
            "",
        );
        let rewrapped = report.rewrapped;
        self.guarded(|s, c| {
            s.audit_op(c, rec, |_, _| {
                Ok((None, format!("ok {rewrapped} keys rewrapped")))
            })
        })?;
        self.maybe_checkpoint(now, true);
        Ok(report)
    }

    fn retention_status(
        &mut self,
        cfg: &RetentionConfig,
        now: DateTime<Utc>,
    ) -> Result<Vec<PeriodStatus>, StorageError> {
        self.guarded(|_, c| Ok(retention::status(c, cfg, now)?))
    }

    fn purge(
        &mut self,
        cfg: &RetentionConfig,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<PurgeReport, StorageError> {
        let status = self.retention_status(cfg, now)?;
        let mut report = PurgeReport::default();
        for p in status {
            match &p.state {
                PeriodState::Due => {
                    let category: Category = p
                        .category
                        .parse()
                        .map_err(|e: SealError| StorageError::Keys(e.to_string()))?;
                    let period = p.period.clone();
                    let rec = AuditRecord::new(
                        now,
                        actor,
                        "retention.purged",
                        format!("data-key:{}/{}", p.category, p.period),
                        "retention",
                        "",
                    );
                    let outcome = self.guarded(|s, c| {
                        s.audit_op(c, rec, |_, tx| {
                            let rows = retention::erase_period(tx, category, &period, now)?;
                            Ok((None, format!("ok {rows} rows")))
                        })
                    })?;
                    let rows = outcome
                        .split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    report
                        .erased
                        .push((p.category.to_string(), p.period.clone(), rows));
                }
                PeriodState::Held(ids) => {
                    let rec = AuditRecord::new(
                        now,
                        actor,
                        "retention.suspended",
                        format!("data-key:{}/{}", p.category, p.period),
                        "retention",
                        "",
                    );
                    let holds = ids
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    self.guarded(|s, c| {
                        s.audit_op(c, rec, |_, _| Ok((None, format!("held by {holds}"))))
                    })?;
                    report
                        .held
                        .push((p.category.to_string(), p.period.clone(), ids.clone()));
                }
                _ => {}
            }
        }
        if !report.erased.is_empty() {
            // Make the erase reach the main file and truncate the WAL.
            self.guarded(|_, c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(())
            })?;
        }
        self.maybe_checkpoint(now, true);
        Ok(report)
    }

    fn place_hold(
        &mut self,
        scope: HoldSubject,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StorageError> {
        let rec = AuditRecord::new(now, actor, "hold.placed", "hold:new", "cli", "");
        let out = self.guarded(|s, c| {
            s.audit_op(c, rec, |s, tx| {
                let scope = match &scope {
                    HoldSubject::Global => HoldScope::Global,
                    HoldSubject::Sender(n) => HoldScope::Sender(n.clone()),
                    HoldSubject::Patient { authority, id } => {
                        let ix = s
                            .protection()?
                            .keyring
                            .blind_index(tx, format!("{authority}|{id}").as_bytes())?;
                        HoldScope::Patient(ix)
                    }
                };
                let id = retention::place_hold(tx, &scope, reason, actor, now)?;
                Ok((Some(format!("hold:{id}")), id.to_string()))
            })
        })?;
        self.maybe_checkpoint(now, true);
        out.parse()
            .map_err(|_| StorageError::Other("hold id".into()))
    }

    fn release_hold(
        &mut self,
        id: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let rec = AuditRecord::new(now, actor, "hold.released", format!("hold:{id}"), "cli", "");
        self.guarded(|s, c| {
            s.audit_op(c, rec, |_, tx| {
                retention::release_hold(tx, id, actor, now)?;
                Ok((None, "ok".to_string()))
            })
        })?;
        self.maybe_checkpoint(now, true);
        Ok(())
    }

    fn subscription_advance(
        &mut self,
        subscription: &str,
        newest: u64,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, StorageError> {
        self.guarded(|_, c| {
            let tx = c.transaction()?;
            let previous: Option<i64> = tx
                .query_row(
                    "SELECT last_event FROM fhir_subscriptions WHERE subscription = ?1",
                    [subscription],
                    |r| r.get(0),
                )
                .optional()?;
            let newest = i64::try_from(newest).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO fhir_subscriptions (subscription, last_event, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(subscription) DO UPDATE SET
                   last_event = MAX(last_event, excluded.last_event), updated_at = excluded.updated_at",
                params![subscription, newest, to_micros(at)],
            )?;
            tx.commit()?;
            Ok(previous.map(|p| p.max(0) as u64))
        })
    }

    fn census_load(&mut self) -> Result<(crate::census::Census, super::CensusLoad), StorageError> {
        self.guarded(|s, c| s.census_rebuild(c))
    }

    fn census_record(
        &mut self,
        op: &crate::census::CensusOp,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, StorageError> {
        let id = self.guarded(|s, c| s.census_record_op(c, op, actor, at))?;
        self.maybe_checkpoint(at, false);
        Ok(id)
    }

    fn census_snapshot(
        &mut self,
        census: &crate::census::Census,
        at: DateTime<Utc>,
    ) -> Result<i64, StorageError> {
        self.guarded(|s, c| s.census_save_snapshot(c, census, at))
    }

    fn rosters_current(&mut self) -> Result<Vec<super::RosterRevision>, StorageError> {
        self.guarded(|_, c| SqliteStorage::roster_current(c))
    }

    fn roster_revisions(&mut self, name: &str) -> Result<Vec<super::RosterRevision>, StorageError> {
        self.guarded(|_, c| SqliteStorage::roster_history(c, name))
    }

    fn roster_save(
        &mut self,
        name: &str,
        text: Option<&str>,
        actor: &str,
        comment: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StorageError> {
        let rev = self.guarded(|s, c| s.roster_append(c, name, text, actor, comment, at))?;
        self.maybe_checkpoint(at, false);
        Ok(rev)
    }

    fn alerts_cursor(&mut self) -> Result<i64, StorageError> {
        self.guarded(|_, c| SqliteStorage::alert_cursor(c))
    }

    fn alerts_events_after(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Option<crate::event::ClinicalEvent>)>, StorageError> {
        self.guarded(|s, c| s.alert_events(c, after, limit))
    }

    fn alerts_live(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<crate::alert::model::Alert>, i64), StorageError> {
        self.guarded(|s, c| Ok((s.alert_live(c, now)?, SqliteStorage::alert_max_id(c)?)))
    }

    fn alert(&mut self, id: i64) -> Result<Option<crate::alert::model::Alert>, StorageError> {
        self.guarded(|s, c| s.alert_get(c, id))
    }

    fn alerts_write(&mut self, w: &super::AlertWrite) -> Result<(), StorageError> {
        self.guarded(|s, c| s.alert_write(c, w))?;
        self.maybe_checkpoint(w.at, false);
        Ok(())
    }

    fn notifications(
        &mut self,
        alert: Option<i64>,
    ) -> Result<Vec<super::NotificationRow>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_list(c, alert))
    }

    fn notifications_due(
        &mut self,
        backend: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(super::NotificationRow, u32)>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_due(c, backend, now, limit))
    }

    fn notifications_next(&mut self, backend: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_next(c, backend))
    }

    fn notification_attempt(&mut self, u: &super::AttemptUpdate) -> Result<bool, StorageError> {
        let changed = self.guarded(|s, c| s.notification_attempt(c, u))?;
        self.maybe_checkpoint(u.at, false);
        Ok(changed)
    }

    fn notifications_backlog(&mut self) -> Result<Vec<super::Backlog>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_backlog(c))
    }

    fn notification_by_ref(
        &mut self,
        backend: &str,
        remote_ref: &str,
    ) -> Result<Option<super::NotificationRow>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_by_ref(c, backend, remote_ref))
    }

    fn notifications_outstanding(
        &mut self,
        backend: &str,
        limit: usize,
    ) -> Result<Vec<super::NotificationRow>, StorageError> {
        self.guarded(|_, c| SqliteStorage::notification_outstanding(c, backend, limit))
    }

    fn status_due(
        &mut self,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<crate::status::StatusDue, StorageError> {
        self.guarded(|_, c| SqliteStorage::status_queue(c, target, now, limit))
    }

    fn status_attempt(&mut self, u: &crate::status::StatusUpdate) -> Result<(), StorageError> {
        self.guarded(|s, c| s.status_record(c, u))?;
        self.maybe_checkpoint(u.at, false);
        Ok(())
    }

    fn audit(&mut self, record: &AuditRecord) -> Result<(), StorageError> {
        let rec = record.clone();
        let outcome = rec.outcome.clone();
        self.guarded(|s, c| s.audit_op(c, rec, |_, _| Ok((None, outcome))))?;
        self.maybe_checkpoint(record.at, false);
        Ok(())
    }

    fn holds(&mut self) -> Result<Vec<retention::Hold>, StorageError> {
        self.guarded(|_, c| Ok(retention::active_holds(c)?))
    }

    fn audit_verify(
        &mut self,
        external: Option<&Path>,
        origin: &str,
        trusted_key: Option<&audit::VerifierKey>,
    ) -> Result<audit::VerifyReport, StorageError> {
        self.guarded(|_, c| {
            // One read transaction: a consistent snapshot while the gateway appends.
            let tx = c.transaction()?;
            let report = audit::verify_with(
                &tx,
                &audit::VerifyOptions {
                    origin,
                    external,
                    trusted_key,
                },
            )?;
            tx.commit()?;
            Ok(report)
        })
    }

    fn audit_records(
        &mut self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<audit::StoredRecord>, StorageError> {
        self.guarded(|_, c| Ok(audit::read_records(c, after_seq, limit)?))
    }
}

/// Who a legal hold covers, as an operator names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldSubject {
    /// Everything.
    Global,
    /// A patient, by identifier and assigning authority (stored only as a blind index).
    Patient {
        /// Assigning authority (CX.4), as in the messages.
        authority: String,
        /// Identifier (CX.1).
        id: String,
    },
    /// A configured sender.
    Sender(String),
}
