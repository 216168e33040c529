//! The census's journal in SQLite: nurse-assignment ops and snapshots, both
//! sealed (category `event`), and the rebuild at start-up.
//!
//! Rebuild = the newest snapshot that can be opened, then every ADT event
//! and census op after it, in the order they were applied: an op carries the
//! newest event id committed before it (`after_event`), so it is replayed
//! right after that event. Events whose keys were crypto-erased by retention
//! are skipped and counted; any other failure to open one is an error (a
//! missing key must not silently empty the census).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, SqliteStorage, aad, from_micros, to_micros};
use crate::audit::AuditRecord;
use crate::census::{Census, CensusOp, CensusSnapshot};
use crate::event::{ClinicalEvent, EventKind};
use crate::journal::storage::CensusLoad;
use crate::seal::{Category, SealError};

/// Snapshots kept (older ones are deleted when a new one is saved).
const KEEP_SNAPSHOTS: i64 = 3;

fn json_err(e: serde_json::Error) -> Fail {
    Fail::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl SqliteStorage {
    pub(super) fn census_record_op(
        &mut self,
        conn: &mut Connection,
        op: &CensusOp,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, Fail> {
        let payload = serde_json::to_vec(op).map_err(json_err)?;
        let rec = AuditRecord::new(
            at,
            actor,
            op.action(),
            format!("member:{}", op.member()),
            "api",
            "ok",
        );
        let mut new_id = 0;
        self.audit_op(conn, rec, |s, tx| {
            let id: i64 =
                tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM census_ops", [], |r| {
                    r.get(0)
                })?;
            let after: i64 =
                tx.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
            let sealed = s.protection()?.keyring.seal(
                tx,
                Category::Event,
                at,
                &payload,
                &aad("census_ops", id),
            )?;
            tx.execute(
                "INSERT INTO census_ops (id, at, after_event, action, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, to_micros(at), after, op.action(), sealed],
            )?;
            new_id = id;
            Ok((Some(format!("census-op:{id}")), "ok".to_string()))
        })?;
        Ok(new_id)
    }

    pub(super) fn census_save_snapshot(
        &mut self,
        conn: &mut Connection,
        census: &Census,
        at: DateTime<Utc>,
    ) -> Result<i64, Fail> {
        let payload = serde_json::to_vec(&census.snapshot()).map_err(json_err)?;
        let tx = conn.transaction()?;
        let upto_event: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        let upto_op: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) FROM census_ops", [], |r| {
                r.get(0)
            })?;
        let id: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM census_snapshots",
            [],
            |r| r.get(0),
        )?;
        let sealed = self.protection()?.keyring.seal(
            &tx,
            Category::Event,
            at,
            &payload,
            &aad("census_snapshots", id),
        )?;
        tx.execute(
            "INSERT INTO census_snapshots (id, taken_at, upto_event, upto_op, payload)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, to_micros(at), upto_event, upto_op, sealed],
        )?;
        tx.execute(
            "DELETE FROM census_snapshots WHERE id <= ?1",
            [id - KEEP_SNAPSHOTS],
        )?;
        tx.commit()?;
        Ok(upto_event)
    }

    pub(super) fn census_rebuild(
        &mut self,
        conn: &mut Connection,
    ) -> Result<(Census, CensusLoad), Fail> {
        let mut report = CensusLoad::default();
        let (mut census, upto_event, upto_op) = self.newest_snapshot(conn, &mut report)?;
        let ops = self.ops_after(conn, upto_op, &mut report)?;
        let mut ops = ops.into_iter().peekable();
        let kinds: Vec<String> = EventKind::ADT
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        let sql = format!(
            "SELECT id, payload FROM events WHERE id > ?1 AND kind IN ({}) ORDER BY id",
            kinds.join(", ")
        );
        let keyring = &mut self.protection()?.keyring;
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([upto_event])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let sealed: Vec<u8> = row.get(1)?;
            while let Some((_, op)) = ops.next_if(|(after, _)| *after < id) {
                apply_op(&mut census, &op, &mut report);
            }
            let plain = match keyring.open(conn, &sealed, &aad("events", id)) {
                Ok(p) => p,
                Err(SealError::Erased { .. }) => {
                    report.erased += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let ev: ClinicalEvent = serde_json::from_slice(&plain).map_err(json_err)?;
            let applied = census.apply(&ev);
            report.events += 1;
            report.warnings += applied.warnings.len() as u64;
        }
        for (_, op) in ops {
            apply_op(&mut census, &op, &mut report);
        }
        Ok((census, report))
    }

    /// The newest snapshot that opens: (census, upto_event, upto_op).
    fn newest_snapshot(
        &mut self,
        conn: &Connection,
        report: &mut CensusLoad,
    ) -> Result<(Census, i64, i64), Fail> {
        let rows: Vec<(i64, i64, i64, i64, Vec<u8>)> = {
            let mut stmt = conn.prepare(
                "SELECT id, taken_at, upto_event, upto_op, payload FROM census_snapshots ORDER BY id DESC",
            )?;
            stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let keyring = &mut self.protection()?.keyring;
        for (id, taken, upto_event, upto_op, sealed) in rows {
            let opened = keyring
                .open(conn, &sealed, &aad("census_snapshots", id))
                .ok()
                .and_then(|p| serde_json::from_slice::<CensusSnapshot>(&p).ok())
                .and_then(|s| Census::from_snapshot(s).ok());
            match opened {
                Some(c) => {
                    report.snapshot = Some((from_micros(taken), upto_event));
                    return Ok((c, upto_event, upto_op));
                }
                None => report.unusable_snapshots += 1,
            }
        }
        Ok((Census::new(), 0, 0))
    }

    fn ops_after(
        &mut self,
        conn: &Connection,
        upto_op: i64,
        report: &mut CensusLoad,
    ) -> Result<Vec<(i64, CensusOp)>, Fail> {
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = conn.prepare(
                "SELECT id, after_event, payload FROM census_ops WHERE id > ?1 ORDER BY id",
            )?;
            stmt.query_map([upto_op], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let keyring = &mut self.protection()?.keyring;
        let mut out = Vec::with_capacity(rows.len());
        for (id, after, sealed) in rows {
            match keyring.open(conn, &sealed, &aad("census_ops", id)) {
                Ok(p) => out.push((after, serde_json::from_slice(&p).map_err(json_err)?)),
                Err(SealError::Erased { .. }) => report.erased += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The newest census op id (for tests and status).
    pub fn census_op_count(&mut self) -> Result<i64, crate::journal::StorageError> {
        self.guarded(|_, c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM census_ops", [], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
            )
        })
    }
}

fn apply_op(census: &mut Census, op: &CensusOp, report: &mut CensusLoad) {
    report.ops += 1;
    if census.apply_op(op).is_err() {
        report.warnings += 1;
    }
}
