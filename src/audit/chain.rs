//! Appending to the chain inside the caller's transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::record::{ZERO_HASH, hash32};
use super::{ACTION_RECOVERED, AuditError, AuditRecord};

/// The insert refuses to extend anything but the real tail, so a stale cache
/// fails loudly instead of leaving a gap or a fork. Both subqueries are
/// rowid lookups.
const INSERT: &str = "
INSERT INTO audit (seq, at, actor, action, object, source, outcome, prev, hash)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
WHERE coalesce((SELECT max(seq) FROM audit), 0) = ?1 - 1
  AND coalesce((SELECT hash FROM audit WHERE seq = ?1 - 1), zeroblob(32)) = ?8";

/// The writer's view of the chain: the cached tail `(seq, hash)`.
///
/// One writer per database (the journal's committer thread). The tail is
/// read when first needed and advanced by each append; after the caller's
/// transaction rolls back, call [`Chain::reset`].
#[derive(Debug, Default)]
pub struct Chain {
    tail: Option<(u64, [u8; 32])>,
}

impl Chain {
    /// Reads the tail of the chain in `conn`.
    pub fn load(conn: &Connection) -> Result<Chain, AuditError> {
        let mut chain = Chain::default();
        chain.tail(conn)?;
        Ok(chain)
    }

    /// A chain whose tail is read on first use.
    pub fn lazy() -> Chain {
        Chain::default()
    }

    /// The cached tail, reading it from `conn` when not cached.
    pub fn tail(&mut self, conn: &Connection) -> Result<(u64, [u8; 32]), AuditError> {
        if let Some(t) = self.tail {
            return Ok(t);
        }
        let row: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let t = match row {
            None => (0, ZERO_HASH),
            Some((seq, hash)) => {
                let seq = u64::try_from(seq)
                    .map_err(|_| AuditError::Corrupt(format!("audit tail seq {seq}")))?;
                let hash = hash32(&hash)
                    .ok_or_else(|| AuditError::Corrupt(format!("audit hash of seq {seq}")))?;
                (seq, hash)
            }
        };
        self.tail = Some(t);
        Ok(t)
    }

    /// Appends `rec` as the next record, inside the caller's open
    /// transaction (`tx` may be a `&Transaction`). Returns its seq.
    ///
    /// Fails with [`AuditError::InvalidField`] before touching the database,
    /// and with [`AuditError::Stale`] when the database tail is not the
    /// cached one; on any error the cache is forgotten, and the caller rolls
    /// back its transaction.
    pub fn append(&mut self, tx: &Connection, rec: &AuditRecord) -> Result<u64, AuditError> {
        rec.validate()?;
        let result = self.append_valid(tx, rec);
        if result.is_err() {
            self.tail = None;
        }
        result
    }

    fn append_valid(&mut self, tx: &Connection, rec: &AuditRecord) -> Result<u64, AuditError> {
        let (last, prev) = self.tail(tx)?;
        let seq = last + 1;
        let hash = rec.hash(seq, &prev);
        let seq_sql = i64::try_from(seq).map_err(|_| AuditError::Corrupt("seq overflow".into()))?;
        let n = tx.prepare_cached(INSERT)?.execute(params![
            seq_sql,
            rec.at.timestamp_micros(),
            rec.actor,
            rec.action,
            rec.object,
            rec.source,
            rec.outcome,
            &prev[..],
            &hash[..],
        ])?;
        if n != 1 {
            return Err(AuditError::Stale { expected: seq });
        }
        self.tail = Some((seq, hash));
        Ok(seq)
    }

    /// Forgets the cached tail (call after the caller's transaction rolled
    /// back); the next use reads it again.
    pub fn reset(&mut self) {
        self.tail = None;
    }

    /// The number of records as last seen by this writer, `None` after
    /// [`Chain::reset`] until the tail is read again.
    pub fn size(&self) -> Option<u64> {
        self.tail.map(|(seq, _)| seq)
    }

    /// The cached head hash (hash of record [`Chain::size`]).
    pub fn head(&self) -> Option<[u8; 32]> {
        self.tail.map(|(_, h)| h)
    }
}

/// Appends the `audit.recovered` record after an unclean shutdown (the
/// caller decides that, e.g. from a missing clean-shutdown marker). Its
/// object names the last seq that survived. The verifier reports it as a
/// notice.
pub fn record_recovery(
    tx: &Connection,
    chain: &mut Chain,
    at: DateTime<Utc>,
    source: &str,
) -> Result<u64, AuditError> {
    let (last, _) = chain.tail(tx)?;
    chain.append(
        tx,
        &AuditRecord::new(
            at,
            "system",
            ACTION_RECOVERED,
            format!("audit:{last}"),
            source,
            "ok",
        ),
    )
}

#[cfg(test)]
mod unit {
    use chrono::TimeZone;

    use super::*;
    use crate::audit::SCHEMA;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn rec(i: u64) -> AuditRecord {
        AuditRecord::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::seconds(i as i64),
            "sender:lab",
            "message.received",
            format!("message:{i}"),
            "127.0.0.1",
            "AA",
        )
    }

    #[test]
    fn appends_link_and_number() {
        let c = db();
        let mut chain = Chain::load(&c).unwrap();
        assert_eq!(chain.size(), Some(0));
        for i in 1..=3 {
            assert_eq!(chain.append(&c, &rec(i)).unwrap(), i);
        }
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = c
            .prepare("SELECT seq, prev, hash FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows[0].1, vec![0; 32]);
        assert_eq!(rows[1].1, rows[0].2);
        assert_eq!(rows[2].1, rows[1].2);
        assert_eq!(rows[2].2, rec(3).hash(3, &hash32(&rows[1].2).unwrap()));
        assert_eq!(chain.head().unwrap().to_vec(), rows[2].2);
        // A reloaded chain continues where the database is.
        let mut again = Chain::load(&c).unwrap();
        assert_eq!(again.append(&c, &rec(4)).unwrap(), 4);
    }

    #[test]
    fn invalid_record_is_refused_without_writing() {
        let c = db();
        let mut chain = Chain::load(&c).unwrap();
        let mut r = rec(1);
        r.object = "message:1\r\nINJECTED".into();
        assert!(chain.append(&c, &r).is_err());
        let n: i64 = c
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn rollback_then_reset_continues_without_gap() {
        let mut c = db();
        let mut chain = Chain::load(&c).unwrap();
        chain.append(&c, &rec(1)).unwrap();
        {
            let tx = c.transaction().unwrap();
            chain.append(&tx, &rec(2)).unwrap();
            chain.append(&tx, &rec(3)).unwrap();
            tx.rollback().unwrap();
        }
        chain.reset();
        assert_eq!(chain.size(), None);
        assert_eq!(chain.append(&c, &rec(2)).unwrap(), 2);
    }

    #[test]
    fn stale_cache_fails_instead_of_forking() {
        let mut c = db();
        let mut chain = Chain::load(&c).unwrap();
        chain.append(&c, &rec(1)).unwrap();
        {
            let tx = c.transaction().unwrap();
            chain.append(&tx, &rec(2)).unwrap();
            tx.rollback().unwrap();
        }
        // No reset: the cache says 2, the database says 1.
        assert!(matches!(
            chain.append(&c, &rec(3)),
            Err(AuditError::Stale { expected: 3 })
        ));
        // A second writer appended behind our back.
        let mut other = Chain::load(&c).unwrap();
        let mut mine = Chain::load(&c).unwrap();
        other.append(&c, &rec(2)).unwrap();
        assert!(mine.append(&c, &rec(2)).is_err());
        // The error forgot the cache: the retry builds on the real tail.
        assert_eq!(mine.append(&c, &rec(3)).unwrap(), 3);
    }

    #[test]
    fn recovery_record_names_the_surviving_tail() {
        let c = db();
        let mut chain = Chain::lazy();
        chain.append(&c, &rec(1)).unwrap();
        let seq = record_recovery(&c, &mut chain, rec(2).at, "startup").unwrap();
        let (action, object): (String, String) = c
            .query_row(
                "SELECT action, object FROM audit WHERE seq = ?1",
                [seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (action.as_str(), object.as_str()),
            (ACTION_RECOVERED, "audit:1")
        );
    }
}
