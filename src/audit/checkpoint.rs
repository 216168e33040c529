//! Signed checkpoints: written to `audit_checkpoints` and exported off the box.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::AuditError;
use super::chain::Chain;
use super::note;
use super::record::hash32;
use super::signer::{Signer, ensure_current, write_durably};

/// File name of the newest exported checkpoint; each one is also kept as
/// `checkpoint.<size>`.
pub const LATEST_FILE: &str = "checkpoint";

/// Signs the current head of the chain and stores the note in
/// `audit_checkpoints`, inside the caller's transaction. Returns the note
/// text so the caller can write it off the box ([`export_checkpoint`]) after
/// the commit; `None` when the log is empty or that size is already
/// checkpointed.
///
/// The head signed is this writer's own (cached) head, checked against the
/// database, so a head rewritten behind the writer's back is never signed.
/// When no key is registered yet, `signer` becomes key 1; otherwise it must
/// be the current key ([`AuditError::NotCurrentKey`]).
pub fn checkpoint(
    tx: &Connection,
    chain: &mut Chain,
    signer: &Signer,
) -> Result<Option<String>, AuditError> {
    let (size, head) = chain.tail(tx)?;
    if size == 0 {
        return Ok(None);
    }
    let size_sql = i64::try_from(size).map_err(|_| AuditError::Corrupt("seq overflow".into()))?;
    let stored: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if stored.as_ref().map(|(s, h)| (*s, hash32(h))) != Some((size_sql, Some(head))) {
        chain.reset();
        return Err(AuditError::Stale { expected: size });
    }
    ensure_current(tx, signer)?;
    let exists: bool = tx
        .query_row(
            "SELECT 1 FROM audit_checkpoints WHERE size = ?1",
            [size_sql],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Ok(None);
    }
    let text = signer.sign_note(&note::checkpoint_body(signer.origin(), size, &head));
    tx.execute(
        "INSERT INTO audit_checkpoints (size, note) VALUES (?1, ?2)",
        params![size_sql, text],
    )?;
    Ok(Some(text))
}

/// The newest stored checkpoint note (to export again, e.g. at start-up).
pub fn latest_checkpoint(conn: &Connection) -> Result<Option<String>, AuditError> {
    Ok(conn
        .query_row(
            "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Durably writes a checkpoint note into `dir` (off the box: another disk,
/// a mounted share, a directory shipped elsewhere): `<dir>/checkpoint.<size>`
/// and `<dir>/checkpoint` (the newest), each via tmp file + fsync + rename +
/// fsync of the directory. `checkpoint` is only replaced by a larger size,
/// so a late export of an older note never moves it back.
pub fn export_checkpoint(dir: &Path, note_text: &str) -> Result<(), AuditError> {
    let parsed = note::parse(note_text)
        .and_then(|n| note::parse_checkpoint(n.body))
        .ok_or(AuditError::Note("not a checkpoint note"))?;
    std::fs::create_dir_all(dir).map_err(|e| AuditError::io("create", dir, e))?;
    write_durably(
        &dir.join(format!("{LATEST_FILE}.{}", parsed.size)),
        note_text.as_bytes(),
        0o644,
    )?;
    let latest = dir.join(LATEST_FILE);
    let current = std::fs::read_to_string(&latest)
        .ok()
        .and_then(|t| note::parse(&t).and_then(|n| note::parse_checkpoint(n.body)))
        .map(|c| c.size);
    if current.is_none_or(|s| s <= parsed.size) {
        write_durably(&latest, note_text.as_bytes(), 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::audit::{AuditRecord, SCHEMA};

    const ORIGIN: &str = "switchboard.example-hospital/audit";

    fn rec(i: i64) -> AuditRecord {
        AuditRecord::new(
            Utc.timestamp_opt(1_800_000_000 + i, 0).unwrap(),
            "system",
            "test",
            format!("message:{i}"),
            "cli",
            "ok",
        )
    }

    #[test]
    fn checkpoint_signs_the_head_once_and_exports() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let signer = Signer::from_secret(ORIGIN, [5; 32]).unwrap();
        let mut chain = Chain::load(&c).unwrap();
        assert_eq!(checkpoint(&c, &mut chain, &signer).unwrap(), None);
        for i in 1..=3 {
            chain.append(&c, &rec(i)).unwrap();
        }
        let text = checkpoint(&c, &mut chain, &signer).unwrap().unwrap();
        let n = note::parse(&text).unwrap();
        assert!(n.verified_by(&signer.verifier_key()));
        let cp = note::parse_checkpoint(n.body).unwrap();
        assert_eq!((cp.origin.as_str(), cp.size), (ORIGIN, 3));
        assert_eq!(cp.root, chain.head().unwrap());
        assert_eq!(checkpoint(&c, &mut chain, &signer).unwrap(), None);
        assert_eq!(
            latest_checkpoint(&c).unwrap().as_deref(),
            Some(text.as_str())
        );

        // Another key is refused once one is registered.
        let other = Signer::from_secret(ORIGIN, [6; 32]).unwrap();
        chain.append(&c, &rec(4)).unwrap();
        assert!(matches!(
            checkpoint(&c, &mut chain, &other),
            Err(AuditError::NotCurrentKey { current: 1 })
        ));
        let text4 = checkpoint(&c, &mut chain, &signer).unwrap().unwrap();

        let dir = tempfile::tempdir().unwrap();
        export_checkpoint(dir.path(), &text4).unwrap();
        export_checkpoint(dir.path(), &text).unwrap();
        let latest = std::fs::read_to_string(dir.path().join("checkpoint")).unwrap();
        assert_eq!(
            latest, text4,
            "an older export does not move `checkpoint` back"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("checkpoint.3")).unwrap(),
            text
        );
        assert!(export_checkpoint(dir.path(), "garbage\n").is_err());
    }

    #[test]
    fn checkpoint_refuses_a_head_changed_behind_its_back() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let signer = Signer::from_secret(ORIGIN, [5; 32]).unwrap();
        let mut chain = Chain::load(&c).unwrap();
        chain.append(&c, &rec(1)).unwrap();
        c.execute("UPDATE audit SET hash = zeroblob(32) WHERE seq = 1", [])
            .unwrap();
        assert!(matches!(
            checkpoint(&c, &mut chain, &signer),
            Err(AuditError::Stale { expected: 1 })
        ));
    }
}
