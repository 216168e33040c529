//! Status reports (`status_reports`, schema version 4) and the outstanding
//! notifications a polled backend follows. A report row holds ids, a
//! status word, a member id and times — no PHI; it is inserted in the
//! transaction of the alert transition it reports, and a destination's rows
//! are read strictly in id order.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, params};

use super::{Fail, SqliteStorage, from_micros, to_micros};
use crate::journal::storage::NotificationRow;
use crate::status::{Status, StatusDue, StatusReport, StatusRow, StatusUpdate};

impl SqliteStorage {
    /// Queues `r` inside the caller's transaction (a repeat of its key is
    /// ignored).
    pub(super) fn status_insert(
        tx: &Transaction<'_>,
        r: &StatusReport,
        at: DateTime<Utc>,
    ) -> Result<(), Fail> {
        tx.prepare_cached(
            "INSERT INTO status_reports (alert_id, event_id, target, status, member, at, dedup_key,
                control_id, state, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?9, ?9)
             ON CONFLICT(dedup_key) DO NOTHING",
        )?
        .execute(params![
            r.alert_id,
            r.event_id,
            r.target,
            r.status.as_str(),
            r.member,
            to_micros(r.at),
            r.dedup_key,
            r.control_id,
            to_micros(at),
        ])?;
        Ok(())
    }

    pub(super) fn status_queue(
        conn: &Connection,
        target: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<StatusDue, Fail> {
        let mut stmt = conn.prepare_cached(
            "SELECT r.id, r.alert_id, r.event_id, r.target, r.status, r.member, r.at, r.dedup_key,
                    r.control_id, r.attempts, r.next_attempt_at, r.created_at, m.msh3, m.msh4
             FROM status_reports r
             LEFT JOIN events e ON e.id = r.event_id
             LEFT JOIN messages m ON m.id = e.message_id
             WHERE r.target = ?1 AND r.state IN ('pending', 'retrying')
             ORDER BY r.id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![target, limit.max(1) as i64], |r| {
                let status: String = r.get(4)?;
                let msh3: Option<String> = r.get(12)?;
                let msh4: Option<String> = r.get(13)?;
                Ok((
                    StatusRow {
                        id: r.get(0)?,
                        report: StatusReport {
                            alert_id: r.get(1)?,
                            event_id: r.get(2)?,
                            target: r.get(3)?,
                            status: Status::parse(&status).unwrap_or(Status::Notified),
                            member: r.get(5)?,
                            at: from_micros(r.get(6)?),
                            dedup_key: r.get(7)?,
                            control_id: r.get(8)?,
                        },
                        attempts: r.get::<_, i64>(9)?.max(0) as u32,
                        created_at: from_micros(r.get(11)?),
                        origin: msh3.zip(msh4),
                    },
                    from_micros(r.get(10)?),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut due = StatusDue::default();
        for (row, next) in rows {
            if next > now {
                // Later rows wait behind the first that is not due.
                due.next = Some(next);
                break;
            }
            due.rows.push(row);
        }
        Ok(due)
    }

    pub(super) fn status_record(
        &mut self,
        conn: &mut Connection,
        u: &StatusUpdate,
    ) -> Result<(), Fail> {
        self.chain.reset();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE status_reports SET state = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                last_error = ?4, updated_at = ?5
             WHERE id = ?1",
            params![
                u.id,
                u.state,
                to_micros(u.next_attempt_at),
                u.error,
                to_micros(u.at)
            ],
        )?;
        for rec in &u.audit {
            self.chain.append(&tx, rec)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn notification_outstanding(
        conn: &Connection,
        backend: &str,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, Fail> {
        let mut stmt = conn.prepare_cached(
            "SELECT n.id, n.alert_id, n.seq, n.member, n.backend, n.handle, n.tier, n.reason,
                    n.state, n.idempotency_key, n.remote_ref
             FROM notifications n JOIN alerts a ON a.id = n.alert_id
             WHERE n.backend = ?1 AND n.state = 'delivered' AND n.remote_ref IS NOT NULL
               AND a.state NOT IN ('resolved', 'exhausted', 'cancelled')
             ORDER BY n.id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![backend, limit as i64],
                super::alerts::notification_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
