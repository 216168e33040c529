//! Alerts and their notifications in SQLite. An alert row keeps its state,
//! deadline and windows in plain columns (no PHI) and the alert itself
//! sealed (category `alert`, bound to its row). Everything one transition
//! decides — alerts, notifications, cancellations, the routing cursor and
//! the audit records — is written in one transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, SqliteStorage, aad, to_micros};
use crate::alert::model::Alert;
use crate::event::ClinicalEvent;
use crate::journal::storage::{AlertWrite, NotificationRow};
use crate::seal::{Category, SealError};

/// The columns [`notification_row`] reads, in its order.
pub(super) const NOTIFICATION_COLUMNS: &str = "id, alert_id, seq, member, backend, handle, tier, \
     reason, state, idempotency_key, remote_ref";

/// A [`NotificationRow`] from the first columns of a row selected with
/// [`NOTIFICATION_COLUMNS`].
pub(super) fn notification_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRow> {
    Ok(NotificationRow {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        seq: r.get::<_, i64>(2)? as usize,
        member: r.get(3)?,
        backend: r.get(4)?,
        handle: r.get(5)?,
        tier: r.get::<_, i64>(6)? as usize,
        reason: r.get(7)?,
        state: r.get(8)?,
        idempotency_key: r.get(9)?,
        remote_ref: r.get(10)?,
    })
}

const CURSOR: &str = "alerts.routed_event";

fn json_err(e: serde_json::Error) -> Fail {
    Fail::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl SqliteStorage {
    pub(super) fn alert_cursor(conn: &Connection) -> Result<i64, Fail> {
        let v: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [CURSOR], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub(super) fn alert_events(
        &mut self,
        conn: &Connection,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Option<ClinicalEvent>)>, Fail> {
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut stmt = conn.prepare_cached(
                "SELECT id, payload FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let keyring = &mut self.protection()?.keyring;
        let mut out = Vec::with_capacity(rows.len());
        for (id, sealed) in rows {
            match keyring.open(conn, &sealed, &aad("events", id)) {
                Ok(p) => out.push((id, Some(serde_json::from_slice(&p).map_err(json_err)?))),
                // Erased by retention before it was routed: nothing to route.
                Err(SealError::Erased { .. }) => out.push((id, None)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn open_alert(&mut self, conn: &Connection, id: i64, sealed: &[u8]) -> Result<Alert, Fail> {
        let plain = self
            .protection()?
            .keyring
            .open(conn, sealed, &aad("alerts", id))?;
        serde_json::from_slice(&plain).map_err(json_err)
    }

    pub(super) fn alert_get(&mut self, conn: &Connection, id: i64) -> Result<Option<Alert>, Fail> {
        let sealed: Option<Vec<u8>> = conn
            .query_row("SELECT payload FROM alerts WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        match sealed {
            None => Ok(None),
            Some(s) => Ok(Some(self.open_alert(conn, id, &s)?)),
        }
    }

    /// Open alerts, and closed ones whose de-duplication or grouping window
    /// still runs at `now`.
    pub(super) fn alert_live(
        &mut self,
        conn: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, Fail> {
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut stmt = conn.prepare(
                "SELECT id, payload FROM alerts
                 WHERE state NOT IN ('resolved', 'exhausted', 'cancelled')
                    OR dedup_until > ?1 OR group_until > ?1
                 ORDER BY id",
            )?;
            stmt.query_map([to_micros(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, sealed) in rows {
            out.push(self.open_alert(conn, id, &sealed)?);
        }
        Ok(out)
    }

    pub(super) fn alert_max_id(conn: &Connection) -> Result<i64, Fail> {
        Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM alerts", [], |r| r.get(0))?)
    }

    pub(super) fn alert_write(
        &mut self,
        conn: &mut Connection,
        w: &AlertWrite,
    ) -> Result<(), Fail> {
        self.chain.reset();
        let tx = conn.transaction()?;
        // Delivery attempts first: they happened before the acknowledgements
        // this write records.
        for u in &w.attempts {
            Self::apply_attempt(&mut self.chain, &tx, u)?;
        }
        for a in &w.alerts {
            let payload = serde_json::to_vec(a).map_err(json_err)?;
            let sealed = self.protection()?.keyring.seal(
                &tx,
                Category::Alert,
                a.created_at,
                &payload,
                &aad("alerts", a.id),
            )?;
            tx.prepare_cached(
                "INSERT INTO alerts (id, created_at, updated_at, rule, priority, state, deadline,
                    dedup_until, group_until, lease_owner, lease_until, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10)
                 ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at,
                    state = excluded.state, deadline = excluded.deadline,
                    dedup_until = excluded.dedup_until, group_until = excluded.group_until,
                    payload = excluded.payload",
            )?
            .execute(params![
                a.id,
                to_micros(a.created_at),
                to_micros(w.at),
                a.rule,
                a.priority.as_str(),
                a.state.as_str(),
                a.deadline.map(to_micros),
                a.dedup_until.map(to_micros),
                a.group_until.map(to_micros),
                sealed
            ])?;
        }
        for id in &w.cancel_pending {
            tx.prepare_cached(
                "UPDATE notifications SET state = 'cancelled', updated_at = ?2
                 WHERE alert_id = ?1 AND state IN ('pending', 'retrying')",
            )?
            .execute(params![id, to_micros(w.at)])?;
        }
        for n in &w.notifications {
            // A bounded outbox: beyond the cap the row is written dead
            // (never silently skipped), audited, and the tier timer escalates.
            let full = match w.outbox_max {
                Some(max) => {
                    let waiting: i64 = tx
                        .prepare_cached(
                            "SELECT COUNT(*) FROM (SELECT 1 FROM notifications
                             WHERE backend = ?1 AND state IN ('pending', 'retrying') LIMIT ?2)",
                        )?
                        .query_row(params![n.backend, max as i64], |r| r.get(0))?;
                    waiting >= max as i64
                }
                None => false,
            };
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO notifications (alert_id, seq, member, backend, handle, tier, reason,
                    state, idempotency_key, attempts, next_attempt_at, created_at, updated_at, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?10, ?8, 0, ?9, ?9, ?9, ?11)
                 ON CONFLICT(idempotency_key) DO NOTHING",
                )?
                .execute(params![
                    n.alert_id,
                    n.seq as i64,
                    n.member,
                    n.backend,
                    n.handle,
                    n.tier as i64,
                    n.reason,
                    n.idempotency_key,
                    to_micros(w.at),
                    if full { "dead" } else { "pending" },
                    full.then_some("outbox full"),
                ])?;
            if full && inserted > 0 {
                tracing::error!(alert = n.alert_id, backend = %n.backend, "outbox full: notification dead-lettered; the tier timer escalates");
                self.chain.append(
                    &tx,
                    &crate::audit::AuditRecord::new(
                        w.at,
                        "gateway".to_string(),
                        "delivery.dead",
                        format!("alert:{}", n.alert_id),
                        format!("member:{}", n.member),
                        format!("outbox of {} full", n.backend),
                    ),
                )?;
            }
        }
        for r in &w.status {
            Self::status_insert(&tx, r, w.at)?;
        }
        if let Some(c) = w.cursor {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![CURSOR, c.to_string()],
            )?;
        }
        for rec in &w.audit {
            self.chain.append(&tx, rec)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn notification_list(
        conn: &Connection,
        alert: Option<i64>,
    ) -> Result<Vec<NotificationRow>, Fail> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications
                 WHERE (?1 IS NULL OR alert_id = ?1) ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([alert], notification_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl SqliteStorage {
    pub(super) fn notification_due(
        conn: &Connection,
        backend: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(NotificationRow, u32)>, Fail> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS}, attempts
             FROM notifications
             WHERE backend = ?1 AND state IN ('pending', 'retrying') AND next_attempt_at <= ?2
             ORDER BY next_attempt_at, id LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(params![backend, to_micros(now), limit as i64], |r| {
                Ok((notification_row(r)?, r.get::<_, i64>(11)? as u32))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub(super) fn notification_by_ref(
        conn: &Connection,
        backend: &str,
        remote_ref: &str,
    ) -> Result<Option<NotificationRow>, Fail> {
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications
                     WHERE backend = ?1 AND remote_ref = ?2 ORDER BY id LIMIT 1"
                ),
                [backend, remote_ref],
                notification_row,
            )
            .optional()?)
    }

    pub(super) fn notification_next(
        conn: &Connection,
        backend: &str,
    ) -> Result<Option<DateTime<Utc>>, Fail> {
        let v: Option<i64> = conn.query_row(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE backend = ?1 AND state IN ('pending', 'retrying')",
            [backend],
            |r| r.get(0),
        )?;
        Ok(v.map(super::from_micros))
    }

    /// Records a delivery attempt; `audit` is appended in the same
    /// transaction. A row that was cancelled meanwhile stays cancelled.
    pub(super) fn notification_attempt(
        &mut self,
        conn: &mut Connection,
        u: &crate::journal::storage::AttemptUpdate,
    ) -> Result<bool, Fail> {
        self.chain.reset();
        let tx = conn.transaction()?;
        let changed = Self::apply_attempt(&mut self.chain, &tx, u)?;
        tx.commit()?;
        Ok(changed)
    }

    /// Records one attempt inside `tx` (with its audit records); false,
    /// writing nothing, when the row was cancelled or settled meanwhile.
    fn apply_attempt(
        chain: &mut crate::audit::Chain,
        tx: &rusqlite::Transaction<'_>,
        u: &crate::journal::storage::AttemptUpdate,
    ) -> Result<bool, Fail> {
        let changed = tx
            .prepare_cached(
                "UPDATE notifications SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                last_error = ?4, updated_at = ?5, remote_ref = COALESCE(?6, remote_ref)
             WHERE id = ?1 AND state IN ('pending', 'retrying')",
            )?
            .execute(params![
                u.id,
                u.state,
                to_micros(u.next_attempt_at),
                u.error,
                to_micros(u.at),
                u.remote_ref
            ])?;
        if changed > 0 {
            for rec in &u.audit {
                chain.append(tx, rec)?;
            }
        }
        Ok(changed > 0)
    }
}

impl SqliteStorage {
    pub(super) fn notification_backlog(
        conn: &Connection,
    ) -> Result<Vec<crate::journal::Backlog>, Fail> {
        let mut stmt = conn.prepare(
            "SELECT backend, COUNT(*), MIN(created_at) FROM notifications
             WHERE state IN ('pending', 'retrying') GROUP BY backend ORDER BY backend",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(crate::journal::Backlog {
                    backend: r.get(0)?,
                    waiting: r.get::<_, i64>(1)?.max(0) as u64,
                    oldest: r.get::<_, Option<i64>>(2)?.map(super::from_micros),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
