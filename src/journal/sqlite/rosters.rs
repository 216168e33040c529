//! Console-managed rosters in SQLite: every saved version is a row
//! (`roster_revisions`), never updated; the newest row of a name is the
//! roster in force unless it is a retirement. Each save and retirement is
//! audited in the same transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, SqliteStorage, from_micros, to_micros};
use crate::audit::AuditRecord;
use crate::journal::storage::RosterRevision;

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RosterRevision> {
    Ok(RosterRevision {
        name: r.get(0)?,
        revision: r.get::<_, i64>(1)? as u64,
        at: from_micros(r.get(2)?),
        actor: r.get(3)?,
        comment: r.get(4)?,
        retired: r.get(5)?,
        text: r.get(6)?,
    })
}

const COLUMNS: &str = "name, revision, at, actor, comment, retired, text";

impl SqliteStorage {
    pub(super) fn roster_current(conn: &Connection) -> Result<Vec<RosterRevision>, Fail> {
        let sql = format!(
            "SELECT {COLUMNS} FROM roster_revisions r
             WHERE revision = (SELECT MAX(revision) FROM roster_revisions WHERE name = r.name)
               AND retired = 0
             ORDER BY name"
        );
        let mut stmt = conn.prepare(&sql)?;
        let out = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(out)
    }

    pub(super) fn roster_history(
        conn: &Connection,
        name: &str,
    ) -> Result<Vec<RosterRevision>, Fail> {
        let sql =
            format!("SELECT {COLUMNS} FROM roster_revisions WHERE name = ?1 ORDER BY revision");
        let mut stmt = conn.prepare(&sql)?;
        let out = stmt.query_map([name], row)?.collect::<Result<_, _>>()?;
        Ok(out)
    }

    /// Appends a revision (a retirement when `text` is `None`); returns its number.
    pub(super) fn roster_append(
        &mut self,
        conn: &mut Connection,
        name: &str,
        text: Option<&str>,
        actor: &str,
        comment: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, Fail> {
        let action = if text.is_some() {
            "roster.saved"
        } else {
            "roster.retired"
        };
        let rec = AuditRecord::new(at, actor, action, format!("roster:{name}"), "api", "ok");
        let mut revision = 0;
        self.audit_op(conn, rec, |_, tx| {
            let last: Option<i64> = tx
                .query_row(
                    "SELECT MAX(revision) FROM roster_revisions WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let next = last.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO roster_revisions (name, revision, at, actor, comment, retired, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    name,
                    next,
                    to_micros(at),
                    actor,
                    comment,
                    text.is_none(),
                    text.unwrap_or("")
                ],
            )?;
            revision = next as u64;
            Ok((Some(format!("roster:{name}@{next}")), "ok".to_string()))
        })?;
        Ok(revision)
    }
}
