//! The audit tamper cases of RELIABILITY.md §4(e) / §2.4 against a generated
//! 100,000-record log, clean logs (no false positives), a mutation fuzz, and
//! the SIEM exports.
//!
//! The 100,000-record log is built once per test binary (a template file);
//! each tamper test copies it and edits the copy with plain SQL, as an
//! attacker with file access would.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};

use super::note;
use super::record::{ZERO_HASH, leaf_hash};
use super::*;

const ORIGIN: &str = "switchboard.example-hospital/audit";
const N: u64 = 100_000;
const EVERY: u64 = 1_000;
/// Seq of the (legitimate) key rotation record in the template.
const ROTATE_AT: u64 = 70_001;
/// Size of the older copy kept for the rollback case.
const SNAPSHOT_AT: u64 = 50_000;
const KEY1: [u8; 32] = [0x11; 32];
const KEY2: [u8; 32] = [0x22; 32];
const ATTACKER: [u8; 32] = [0x66; 32];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
}

fn at(seq: u64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(seq as i64 * 10)
}

fn rec(seq: u64) -> AuditRecord {
    const ACTORS: [&str; 4] = ["sender:lab", "user:alice", "system", "peer:127.0.0.1:5000"];
    const ACTIONS: [&str; 4] = [
        "message.received",
        "message.acknowledged",
        "message.duplicate",
        "hold.placed",
    ];
    const OUTCOMES: [&str; 4] = ["AA", "ok", "AE", "refused"];
    let i = (seq % 4) as usize;
    AuditRecord::new(
        at(seq),
        ACTORS[i],
        ACTIONS[(seq / 4 % 4) as usize],
        format!("message:{seq}"),
        "10.0.0.7:5000",
        OUTCOMES[i],
    )
}

fn key1() -> Signer {
    Signer::from_secret(ORIGIN, KEY1).unwrap()
}

fn key2() -> Signer {
    Signer::from_secret(ORIGIN, KEY2).unwrap()
}

// ---------------------------------------------------------------------------
// The 100,000-record template
// ---------------------------------------------------------------------------

struct Template {
    /// The full log: 100,000 records, checkpoints at 1,000 … 99,000
    /// (records 99,001–100,000 unanchored), key 2 from seq 70,001.
    db: PathBuf,
    /// The same log when it had 50,000 records (for the rollback case).
    old: PathBuf,
    /// Off-box directory: every checkpoint exported.
    external: PathBuf,
    /// Appends per second while building (WAL, synchronous=OFF, including
    /// the checkpoints and their durable exports); printed, never asserted.
    appends_per_sec: f64,
}

/// One directory per test process under the temp dir; directories of
/// processes that are gone are removed when the next one starts.
fn template_root() -> PathBuf {
    let base = std::env::temp_dir().join("switchboard-audit-tests");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("template-")
                && pid.parse::<u32>().is_ok()
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    base.join(format!("template-{}", std::process::id()))
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(build_template)
}

#[allow(clippy::disallowed_methods)] // Instant::now: only to print a figure
fn build_template() -> Template {
    let root = template_root();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut t = Template {
        db: root.join("audit.sqlite3"),
        old: root.join("audit-old.sqlite3"),
        external: root.join("off-box"),
        appends_per_sec: 0.0,
    };
    let started = std::time::Instant::now();
    let mut conn = Connection::open(&t.db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
        .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let (k1, k2) = (key1(), key2());
    let mut chain = Chain::load(&conn).unwrap();
    let mut signer = &k1;
    let mut tx = conn.transaction().unwrap();
    for seq in 1..=N {
        if seq == ROTATE_AT {
            let s =
                rotate_signer(&tx, &mut chain, &k1, &k2, at(seq), "user:security", "cli").unwrap();
            assert_eq!(s, seq);
            signer = &k2;
        } else {
            assert_eq!(chain.append(&tx, &rec(seq)).unwrap(), seq);
        }
        if seq % EVERY == 0 && seq < N {
            let note = checkpoint(&tx, &mut chain, signer).unwrap().unwrap();
            export_checkpoint(&t.external, &note).unwrap();
        }
        if seq % 10_000 == 0 || seq == SNAPSHOT_AT {
            tx.commit().unwrap();
            if seq == SNAPSHOT_AT {
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                    .unwrap();
                std::fs::copy(&t.db, &t.old).unwrap();
            }
            tx = conn.transaction().unwrap();
        }
    }
    tx.commit().unwrap();
    t.appends_per_sec = N as f64 / started.elapsed().as_secs_f64();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    t
}

/// A private copy of a template file, opened as the attacker/verifier.
struct Case {
    _dir: tempfile::TempDir,
    path: PathBuf,
    conn: Connection,
}

fn open_copy(from: &Path) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    std::fs::copy(from, &path).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA synchronous=OFF;").unwrap();
    Case {
        _dir: dir,
        path,
        conn,
    }
}

fn fresh() -> Case {
    open_copy(&template().db)
}

fn check(conn: &Connection) -> VerifyReport {
    let report = verify(conn, Some(&template().external), ORIGIN).unwrap();
    println!("{report}");
    report
}

fn first(report: &VerifyReport) -> (Option<u64>, FindingKind, String) {
    let f = report.first().expect("a failure");
    (f.seq, f.kind, f.to_string())
}

fn hash_at(conn: &Connection, seq: u64) -> [u8; 32] {
    let v: Vec<u8> = conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [seq as i64], |r| {
            r.get(0)
        })
        .unwrap();
    v.try_into().unwrap()
}

type Row = (i64, i64, [String; 5]);

fn rows_from(conn: &Connection, from: u64) -> Vec<Row> {
    conn.prepare(
        "SELECT seq, at, actor, action, object, source, outcome FROM audit
         WHERE seq >= ?1 ORDER BY seq",
    )
    .unwrap()
    .query_map([from as i64], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn row_hash(seq: u64, prev: &[u8; 32], row: &Row) -> [u8; 32] {
    let f = &row.2;
    leaf_hash(
        seq,
        prev,
        row.1,
        [
            f[0].as_bytes(),
            f[1].as_bytes(),
            f[2].as_bytes(),
            f[3].as_bytes(),
            f[4].as_bytes(),
        ],
    )
}

/// The attacker recomputes `prev` and `hash` of every record from `from` on.
fn rechain_from(conn: &Connection, from: u64) {
    let tx = conn.unchecked_transaction().unwrap();
    let mut prev = if from == 1 {
        ZERO_HASH
    } else {
        hash_at(&tx, from - 1)
    };
    {
        let mut up = tx
            .prepare("UPDATE audit SET prev = ?1, hash = ?2 WHERE seq = ?3")
            .unwrap();
        for row in rows_from(&tx, from) {
            let h = row_hash(row.0 as u64, &prev, &row);
            up.execute(params![&prev[..], &h[..], row.0]).unwrap();
            prev = h;
        }
    }
    tx.commit().unwrap();
}

fn notes(conn: &Connection) -> Vec<(i64, String)> {
    conn.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------
// The clean template
// ---------------------------------------------------------------------------

#[test]
#[allow(clippy::disallowed_methods)] // Instant::now: only to print a figure, never asserted
fn clean_100k_log_verifies_and_prints_throughput() {
    let case = fresh();
    let started = std::time::Instant::now();
    let report = verify(&case.conn, Some(&template().external), ORIGIN).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!("{report}");
    println!(
        "verify: {} records in {secs:.3} s = {:.0} records/s; append: {:.0} records/s ({} build)",
        report.records,
        report.records as f64 / secs,
        template().appends_per_sec,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, N);
    assert_eq!(report.checkpoints, N / EVERY - 1);
    assert_eq!(report.external_checkpoints, N / EVERY - 1);
    assert_eq!(report.keys, 2);
    assert_eq!(
        report.warnings,
        vec!["WARN: 1000 records unanchored (seq 99001..100000 after the newest checkpoint 99000)"]
    );
    assert_eq!(
        report.notices,
        vec![format!("NOTE seq={ROTATE_AT}: checkpoint key rotated")]
    );
    // Pinning the genesis key off the box changes nothing for a clean log.
    let pinned = key1().verifier_key();
    let again = verify_with(
        &case.conn,
        &VerifyOptions {
            origin: ORIGIN,
            external: Some(&template().external),
            trusted_key: Some(&pinned),
        },
    )
    .unwrap();
    assert!(again.ok(), "{again}");
    assert!(report.to_string().starts_with(
        "audit: 100000 records, 99 checkpoints, 99 external checkpoints, 2 keys: OK\n"
    ));
}

// ---------------------------------------------------------------------------
// The 14 tamper cases (RELIABILITY.md, "Audit tamper cases")
// ---------------------------------------------------------------------------

/// Case 1: A byte changed in a record body: that record's hash no longer matches.
#[test]
fn tamper_01_byte_changed_in_record_body() {
    let case = fresh();
    let k = 12_345u64;
    for (sql, undo) in [
        (
            "UPDATE audit SET object = 'message:12346' WHERE seq = ?1",
            "UPDATE audit SET object = 'message:12345' WHERE seq = ?1",
        ),
        (
            "UPDATE audit SET at = at + 1 WHERE seq = ?1",
            "UPDATE audit SET at = at - 1 WHERE seq = ?1",
        ),
        (
            "UPDATE audit SET outcome = 'AE' WHERE seq = ?1",
            "UPDATE audit SET outcome = 'ok' WHERE seq = ?1",
        ),
    ] {
        case.conn.execute(sql, [k as i64]).unwrap();
        let r = check(&case.conn);
        assert!(!r.ok());
        assert_eq!(
            first(&r),
            (
                Some(k),
                FindingKind::ContentHash,
                "FAIL seq=12345: content hash mismatch".into()
            ),
            "{sql}"
        );
        assert_eq!(r.failures.len(), 1, "{r}");
        case.conn.execute(undo, [k as i64]).unwrap();
        assert!(check(&case.conn).ok(), "undo of {sql}");
    }
}

/// Case 2: `prev` edited (and that row's hash recomputed to match): the link to
/// the record before breaks. When the attacker rewrites the rest of the
/// chain too, the signed checkpoint after the edit catches it.
#[test]
fn tamper_02_prev_hash_edited_to_match() {
    let case = fresh();
    let k = 23_456u64;
    // (a) Record k now claims record k-2 as its predecessor.
    let skip = hash_at(&case.conn, k - 2);
    let row = rows_from(&case.conn, k).swap_remove(0);
    let h = row_hash(k, &skip, &row);
    case.conn
        .execute(
            "UPDATE audit SET prev = ?1, hash = ?2 WHERE seq = ?3",
            params![&skip[..], &h[..], k as i64],
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(k), FindingKind::ChainBreak));
    assert!(text.starts_with("FAIL seq=23456: chain break"), "{text}");

    // (b) Content of k edited and the whole rest of the chain recomputed:
    // only the signed checkpoint 24,000 can tell.
    let case = fresh();
    case.conn
        .execute(
            "UPDATE audit SET actor = 'user:mallory' WHERE seq = ?1",
            [k as i64],
        )
        .unwrap();
    rechain_from(&case.conn, k);
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(24_000), FindingKind::ChainBreak));
    assert_eq!(
        text,
        "FAIL seq=24000: chain break (record 24000 differs from signed checkpoint 24000)"
    );
}

/// Case 3: One record deleted in the middle: a gap in seq.
#[test]
fn tamper_03_record_deleted_in_the_middle() {
    let case = fresh();
    case.conn
        .execute("DELETE FROM audit WHERE seq = 34567", [])
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    assert_eq!(
        first(&r),
        (
            Some(34_567),
            FindingKind::Missing,
            "FAIL seq=34567: missing".into()
        )
    );
    assert_eq!(r.failures.len(), 1, "{r}");

    // Deleted and every later record renumbered (hashes left alone).
    let case = fresh();
    case.conn
        .execute_batch(
            "DELETE FROM audit WHERE seq = 34567;
             UPDATE audit SET seq = -seq WHERE seq > 34567;
             UPDATE audit SET seq = -seq - 1 WHERE seq < 0;",
        )
        .unwrap();
    let r = check(&case.conn);
    let (seq, kind, _) = first(&r);
    assert_eq!((seq, kind), (Some(34_567), FindingKind::Missing));
}

/// Case 4: Two records swapped: each sits at the other's seq.
#[test]
fn tamper_04_two_records_swapped() {
    let case = fresh();
    case.conn
        .execute_batch(
            "UPDATE audit SET seq = -1 WHERE seq = 45100;
             UPDATE audit SET seq = 45100 WHERE seq = 45200;
             UPDATE audit SET seq = 45200 WHERE seq = -1;",
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    assert_eq!(
        first(&r),
        (
            Some(45_100),
            FindingKind::Order,
            "FAIL seq=45100: order (holds record 45200)".into()
        )
    );
    assert_eq!(r.failures.len(), 2, "{r}");
    assert_eq!(
        (r.failures[1].seq, r.failures[1].kind),
        (Some(45_200), FindingKind::Order)
    );

    // Adjacent swap.
    let case = fresh();
    case.conn
        .execute_batch(
            "UPDATE audit SET seq = -1 WHERE seq = 45100;
             UPDATE audit SET seq = 45100 WHERE seq = 45101;
             UPDATE audit SET seq = 45101 WHERE seq = -1;",
        )
        .unwrap();
    let r = check(&case.conn);
    assert_eq!(
        (r.first().unwrap().seq, r.first().unwrap().kind),
        (Some(45_100), FindingKind::Order)
    );
}

/// Case 5: A forged record inserted (with a correct hash) and the rest renumbered.
#[test]
fn tamper_05_record_inserted() {
    let case = fresh();
    let k = 56_789u64;
    case.conn
        .execute_batch(
            "UPDATE audit SET seq = -seq WHERE seq >= 56789;
             UPDATE audit SET seq = -seq + 1 WHERE seq < 0;",
        )
        .unwrap();
    let prev = hash_at(&case.conn, k - 1);
    let forged = AuditRecord::new(
        at(k),
        "user:mallory",
        "hold.placed",
        "message:1",
        "cli",
        "ok",
    );
    let h = forged.hash(k, &prev);
    case.conn
        .execute(
            "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                k as i64,
                forged.at.timestamp_micros(),
                forged.actor,
                forged.action,
                forged.object,
                forged.source,
                forged.outcome,
                &prev[..],
                &h[..]
            ],
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(k), FindingKind::Inserted));
    assert!(text.starts_with("FAIL seq=56789: inserted"), "{text}");
}

/// Case 6: Tail truncated below the newest checkpoint.
#[test]
fn tamper_06_tail_truncated_below_last_checkpoint() {
    let case = fresh();
    case.conn
        .execute("DELETE FROM audit WHERE seq > 98500", [])
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    assert_eq!(
        first(&r),
        (
            Some(98_501),
            FindingKind::LogShorter,
            "FAIL: log shorter than checkpoint 99000 (local size 98500)".into()
        )
    );
    // The off-box copy says the same even if the local checkpoints go too.
    case.conn
        .execute("DELETE FROM audit_checkpoints WHERE size > 98500", [])
        .unwrap();
    let r = check(&case.conn);
    assert_eq!(
        first(&r),
        (
            Some(98_501),
            FindingKind::Rollback,
            "FAIL: rollback, external checkpoint 99000 > local 98500".into()
        )
    );
}

/// Case 7: Tail truncated after the newest checkpoint: not provable, but never
/// silent.
#[test]
fn tamper_07_tail_truncated_after_last_checkpoint() {
    let case = fresh();
    case.conn
        .execute("DELETE FROM audit WHERE seq > 99400", [])
        .unwrap();
    let r = check(&case.conn);
    assert!(r.ok(), "{r}");
    assert_eq!(r.records, 99_400);
    assert_eq!(
        r.warnings,
        vec!["WARN: 400 records unanchored (seq 99001..99400 after the newest checkpoint 99000)"]
    );
    assert!(r.to_string().contains("WARN: 400 records unanchored"));
}

/// Case 8: The whole log rewritten consistently by someone without the key.
#[test]
fn tamper_08_whole_log_rewritten_without_key() {
    // (a) Records rewritten from seq 1, checkpoint roots patched to match,
    // the old signatures kept.
    let case = fresh();
    case.conn
        .execute("UPDATE audit SET actor = 'user:mallory' WHERE seq = 1", [])
        .unwrap();
    rechain_from(&case.conn, 1);
    for (size, text) in notes(&case.conn) {
        let mut lines: Vec<&str> = text.split('\n').collect();
        let root = b64(&hash_at(&case.conn, size as u64));
        lines[2] = &root;
        case.conn
            .execute(
                "UPDATE audit_checkpoints SET note = ?1 WHERE size = ?2",
                params![lines.join("\n"), size],
            )
            .unwrap();
    }
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(1_000), FindingKind::CheckpointSignature));
    assert!(text.starts_with("FAIL: checkpoint signature"), "{text}");

    // (b) …and the keys replaced by the attacker's own, every checkpoint
    // re-signed: locally consistent, but the off-box checkpoints were signed
    // by the real keys.
    let attacker = SigningKey::from_bytes(&ATTACKER);
    case.conn.execute_batch("DELETE FROM audit_keys;").unwrap();
    case.conn
        .execute(
            "INSERT INTO audit_keys VALUES (1, ?1, ?2, 1, NULL)",
            params![ORIGIN, &attacker.verifying_key().as_bytes()[..]],
        )
        .unwrap();
    case.conn
        .execute(
            "UPDATE audit SET action = 'hold.placed', object = 'message:70001' WHERE seq = ?1",
            [ROTATE_AT as i64],
        )
        .unwrap();
    rechain_from(&case.conn, ROTATE_AT);
    for (size, _) in notes(&case.conn) {
        let body = note::checkpoint_body(ORIGIN, size as u64, &hash_at(&case.conn, size as u64));
        case.conn
            .execute(
                "UPDATE audit_checkpoints SET note = ?1 WHERE size = ?2",
                params![note::sign(&body, ORIGIN, &attacker), size],
            )
            .unwrap();
    }
    let local_only = verify(&case.conn, None, ORIGIN).unwrap();
    assert!(
        local_only.ok(),
        "without an off-box anchor a full rewrite is undetectable: {local_only}"
    );
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(1_000), FindingKind::CheckpointSignature));
    assert!(
        text.starts_with("FAIL: checkpoint signature (external checkpoint file checkpoint.1000 of size 1000: not signed by key 1)"),
        "{text}"
    );
    // A pinned genesis key catches it even without the directory.
    let pinned = key1().verifier_key();
    let r = verify_with(
        &case.conn,
        &VerifyOptions {
            origin: ORIGIN,
            external: None,
            trusted_key: Some(&pinned),
        },
    )
    .unwrap();
    assert_eq!(r.first().unwrap().kind, FindingKind::UntrustedKey, "{r}");
    assert_eq!(r.first().unwrap().seq, Some(1));
}

/// Case 9: The whole database rolled back to an older copy.
#[test]
fn tamper_09_rolled_back_to_an_older_copy() {
    let case = open_copy(&template().old);
    // The old copy is consistent in itself…
    let local_only = verify(&case.conn, None, ORIGIN).unwrap();
    assert!(local_only.ok(), "{local_only}");
    assert_eq!(local_only.records, SNAPSHOT_AT);
    // …but the off-box checkpoint is newer.
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!((seq, kind), (Some(SNAPSHOT_AT + 1), FindingKind::Rollback));
    assert!(
        text.starts_with("FAIL: rollback, external checkpoint 99000 > local 50000"),
        "{text}"
    );
    assert_eq!(r.failures.len(), 1, "{r}");
}

/// Case 10: A checkpoint edited: its root, or its size.
#[test]
fn tamper_10_checkpoint_edited() {
    let case = fresh();
    let (_, text) = notes(&case.conn)
        .into_iter()
        .find(|(s, _)| *s == 60_000)
        .unwrap();
    let other_root = b64(&hash_at(&case.conn, 59_999));
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines[2] = &other_root;
    case.conn
        .execute(
            "UPDATE audit_checkpoints SET note = ?1 WHERE size = 60000",
            [lines.join("\n")],
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, text) = first(&r);
    assert_eq!(
        (seq, kind),
        (Some(60_000), FindingKind::CheckpointSignature)
    );
    assert!(text.starts_with("FAIL: checkpoint signature"), "{text}");

    let case = fresh();
    let (_, text) = notes(&case.conn)
        .into_iter()
        .find(|(s, _)| *s == 61_000)
        .unwrap();
    let edited = text.replacen("\n61000\n", "\n61500\n", 1);
    case.conn
        .execute(
            "UPDATE audit_checkpoints SET size = 61500, note = ?1 WHERE size = 61000",
            [edited],
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    let (seq, kind, _) = first(&r);
    assert_eq!(
        (seq, kind),
        (Some(61_000), FindingKind::CheckpointMissing),
        "{r}"
    );
    assert!(
        r.failures
            .iter()
            .any(|f| f.seq == Some(61_500) && f.kind == FindingKind::CheckpointSignature)
    );
}

/// Case 11: A checkpoint from another site.
#[test]
fn tamper_11_checkpoint_from_another_origin() {
    let case = fresh();
    let other = "switchboard.other-hospital/audit";
    let body = note::checkpoint_body(other, 50_000, &hash_at(&case.conn, 50_000));
    let foreign = note::sign(&body, other, &SigningKey::from_bytes(&ATTACKER));
    case.conn
        .execute(
            "UPDATE audit_checkpoints SET note = ?1 WHERE size = 50000",
            [foreign],
        )
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    assert_eq!(
        first(&r),
        (
            Some(50_000),
            FindingKind::CheckpointOrigin,
            "FAIL: checkpoint origin (checkpoint is for \"switchboard.other-hospital/audit\")"
                .into()
        )
    );
    // Verifying with the wrong origin fails everything from the first one.
    let r = verify(&case.conn, None, other).unwrap();
    assert_eq!(r.first().unwrap().kind, FindingKind::UntrustedKey);
}

/// Case 12: A forged signing-key rotation: the new key is not endorsed by the
/// previous one.
#[test]
fn tamper_12_forged_key_rotation() {
    let case = fresh();
    let attacker = Signer::from_secret(ORIGIN, ATTACKER).unwrap();
    let attacker_key = SigningKey::from_bytes(&ATTACKER);
    let mut chain = Chain::load(&case.conn).unwrap();
    let from = N + 1;
    let object = format!(
        "audit-key:3:{}",
        note::fingerprint(&attacker_key.verifying_key())
    );
    chain
        .append(
            &case.conn,
            &AuditRecord::new(
                at(from),
                "user:mallory",
                ACTION_KEY_ROTATED,
                object,
                "cli",
                "ok",
            ),
        )
        .unwrap();
    // Self-endorsed: signed by the new key instead of key 2.
    let endorsement = note::sign(
        &note::endorsement_body(ORIGIN, 3, &attacker_key.verifying_key(), from),
        ORIGIN,
        &attacker_key,
    );
    case.conn
        .execute(
            "INSERT INTO audit_keys VALUES (3, ?1, ?2, ?3, ?4)",
            params![
                ORIGIN,
                &attacker_key.verifying_key().as_bytes()[..],
                from as i64,
                endorsement
            ],
        )
        .unwrap();
    for seq in from + 1..from + 500 {
        chain.append(&case.conn, &rec(seq)).unwrap();
    }
    checkpoint(&case.conn, &mut chain, &attacker)
        .unwrap()
        .unwrap();
    let r = check(&case.conn);
    assert!(!r.ok());
    assert_eq!(
        first(&r),
        (
            Some(from),
            FindingKind::ForgedKeyRotation,
            "FAIL: forged key rotation (key 3 is not endorsed by key 2)".into()
        )
    );
    assert!(
        r.failures
            .iter()
            .any(|f| f.seq == Some(from + 499) && f.kind == FindingKind::CheckpointSignature),
        "{r}"
    );
    // Without any endorsement: the same.
    case.conn
        .execute("UPDATE audit_keys SET endorsement = NULL WHERE id = 3", [])
        .unwrap();
    assert_eq!(
        check(&case.conn).first().unwrap().kind,
        FindingKind::ForgedKeyRotation
    );
}

fn copy_crash_image(db: &Path, to: &Path) -> PathBuf {
    let image = to.join("crash.sqlite3");
    std::fs::copy(db, &image).unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", image.display())).unwrap();
    }
    image
}

/// After the crash: append `audit.recovered`, carry on, checkpoint.
fn recover_and_check(image: &Path, expect_records: u64) {
    let conn = Connection::open(image).unwrap();
    let r = check(&conn);
    assert!(r.ok(), "{r}");
    assert_eq!(r.records, expect_records);
    let mut chain = Chain::load(&conn).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let seq = record_recovery(&tx, &mut chain, at(expect_records + 1), "startup").unwrap();
    assert_eq!(seq, expect_records + 1);
    for s in seq + 1..seq + 5 {
        chain.append(&tx, &rec(s)).unwrap();
    }
    checkpoint(&tx, &mut chain, &key2()).unwrap().unwrap();
    tx.commit().unwrap();
    let r = check(&conn);
    assert!(r.ok(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
    assert!(
        r.notices.contains(&format!(
            "NOTE seq={seq}: recovered after an unclean shutdown (audit:{expect_records})"
        )),
        "{r}"
    );
}

/// Case 13: A torn last record after a crash: SQLite never shows an uncommitted
/// or torn transaction, so verify passes; the `audit.recovered` flow too.
#[test]
fn tamper_13_torn_last_record_after_crash_is_ok() {
    // (a) A transaction open (its pages spilled into the WAL) at the crash.
    let case = fresh();
    let crash = tempfile::tempdir().unwrap();
    case.conn
        .execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=2;")
        .unwrap();
    let mut chain = Chain::load(&case.conn).unwrap();
    let tx = case.conn.unchecked_transaction().unwrap();
    for s in N + 1..=N + 3_000 {
        chain.append(&tx, &rec(s)).unwrap();
    }
    let image = copy_crash_image(&case.path, crash.path());
    drop(tx); // rolled back, like the crashed process
    recover_and_check(&image, N);

    // (b) The last committed transaction's commit frame torn in the WAL.
    let case = fresh();
    let crash = tempfile::tempdir().unwrap();
    case.conn
        .execute_batch("PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    let mut chain = Chain::load(&case.conn).unwrap();
    for batch in 0..2u64 {
        let tx = case.conn.unchecked_transaction().unwrap();
        for s in 0..100 {
            chain.append(&tx, &rec(N + 1 + batch * 100 + s)).unwrap();
        }
        tx.commit().unwrap();
    }
    let image = copy_crash_image(&case.path, crash.path());
    let wal = PathBuf::from(format!("{}-wal", image.display()));
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    recover_and_check(&image, N + 100);
}

/// Case 14: Crypto-erased payloads: the chain holds ids only, so erasing the
/// payloads (and auditing the purge) leaves it valid.
#[test]
fn tamper_14_crypto_erased_payloads_are_ok() {
    let case = fresh();
    case.conn
        .execute_batch("CREATE TABLE payloads (id INTEGER PRIMARY KEY, raw BLOB);")
        .unwrap();
    let mut chain = Chain::load(&case.conn).unwrap();
    let tx = case.conn.unchecked_transaction().unwrap();
    for id in 1..=10i64 {
        tx.execute(
            "INSERT INTO payloads VALUES (?1, ?2)",
            params![id, b"MSH|^~\\&|LAB|... ZZCANARY^PHI".to_vec()],
        )
        .unwrap();
        let seq = chain.size().unwrap() + 1;
        chain
            .append(
                &tx,
                &AuditRecord::new(
                    at(seq),
                    "sender:lab",
                    "message.received",
                    format!("message:{id}"),
                    "10.0.0.7:5000",
                    "AA",
                ),
            )
            .unwrap();
    }
    checkpoint(&tx, &mut chain, &key2()).unwrap().unwrap();
    tx.commit().unwrap();
    // Crypto-erase: the payloads become unreadable; the purge is audited.
    let tx = case.conn.unchecked_transaction().unwrap();
    tx.execute("UPDATE payloads SET raw = zeroblob(32)", [])
        .unwrap();
    let seq = chain.size().unwrap() + 1;
    chain
        .append(
            &tx,
            &AuditRecord::new(
                at(seq),
                "system",
                "retention.purged",
                "data-key:raw/2026-11-23",
                "retention",
                "ok",
            ),
        )
        .unwrap();
    checkpoint(&tx, &mut chain, &key2()).unwrap().unwrap();
    tx.commit().unwrap();
    let r = check(&case.conn);
    assert!(r.ok(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
    let canary: i64 = case
        .conn
        .query_row(
            "SELECT count(*) FROM audit WHERE actor || action || object || source || outcome LIKE '%ZZCANARY%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(canary, 0);
}

// ---------------------------------------------------------------------------
// Clean small logs: no false positives
// ---------------------------------------------------------------------------

struct Small {
    conn: Connection,
    external: tempfile::TempDir,
    size: u64,
}

/// A log of `size` records with checkpoints every `every` (exported), an
/// optional key rotation and an optional crash + recovery, and a random
/// unanchored tail.
fn small_log(rng: &mut StdRng, size: u64) -> Small {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let external = tempfile::tempdir().unwrap();
    let every = rng.random_range(1..=60u64);
    let rotate_at = rng.random_bool(0.4).then(|| rng.random_range(1..=size));
    let recover_at = rng.random_bool(0.4).then(|| rng.random_range(1..=size));
    let (k1, k2) = (key1(), key2());
    let mut signer = &k1;
    let mut chain = Chain::lazy();
    let tail_from = size - rng.random_range(0..=size.min(40));
    for seq in 1..=size {
        let tx = conn.unchecked_transaction().unwrap();
        if Some(seq) == rotate_at {
            rotate_signer(&tx, &mut chain, &k1, &k2, at(seq), "user:security", "cli").unwrap();
            signer = &k2;
        } else if Some(seq) == recover_at {
            // A "restart": the writer starts from what the database holds.
            chain.reset();
            record_recovery(&tx, &mut chain, at(seq), "startup").unwrap();
        } else {
            chain.append(&tx, &rec(seq)).unwrap();
        }
        if seq % every == 0 && seq <= tail_from {
            let text = checkpoint(&tx, &mut chain, signer).unwrap().unwrap();
            export_checkpoint(external.path(), &text).unwrap();
        }
        tx.commit().unwrap();
    }
    Small {
        conn,
        external,
        size,
    }
}

#[test]
fn no_false_positives_on_100_clean_logs() {
    let mut rng = StdRng::seed_from_u64(0x5b_a0d1);
    for i in 0..100 {
        let size = match i {
            0 => 1,
            1 => 2,
            _ => rng.random_range(1..=500),
        };
        let log = small_log(&mut rng, size);
        let r = verify(&log.conn, Some(log.external.path()), ORIGIN).unwrap();
        assert!(r.ok(), "log {i} ({size} records):\n{r}");
        assert_eq!(r.records, log.size);
        for w in &r.warnings {
            assert!(
                w.contains("records unanchored") || w == "WARN: no external checkpoint",
                "log {i}: {w}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Mutation fuzz
// ---------------------------------------------------------------------------

fn dump(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT quote(seq)||quote(at)||quote(actor)||quote(action)||quote(object)||quote(source)||quote(outcome)||quote(prev)||quote(hash) FROM audit ORDER BY seq",
        "SELECT quote(size)||quote(note) FROM audit_checkpoints ORDER BY size",
        "SELECT quote(id)||quote(name)||quote(public_key)||quote(valid_from_seq)||quote(endorsement) FROM audit_keys ORDER BY id",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        out.extend(rows.map(Result::unwrap));
        out.push("--".into());
    }
    out
}

/// One random mutation of one value, row or pair of rows. `Err` when SQLite
/// refuses it (a constraint): counted as a no-op.
fn mutate(conn: &Connection, rng: &mut StdRng, size: u64) -> rusqlite::Result<String> {
    let seq = rng.random_range(1..=size) as i64;
    let table = rng.random_range(0..10);
    if table < 7 {
        const COLS: [&str; 9] = [
            "seq", "at", "actor", "action", "object", "source", "outcome", "prev", "hash",
        ];
        match rng.random_range(0..12) {
            0 => {
                conn.execute("DELETE FROM audit WHERE seq = ?1", [seq])?;
                Ok(format!("delete audit {seq}"))
            }
            1 => {
                let other = rng.random_range(1..=size) as i64;
                conn.execute_batch(&format!(
                    "UPDATE audit SET seq = -1000 WHERE seq = {seq};
                     UPDATE audit SET seq = {seq} WHERE seq = {other};
                     UPDATE audit SET seq = {other} WHERE seq = -1000;"
                ))?;
                Ok(format!("swap audit {seq} {other}"))
            }
            2 => {
                let to = rng.random_range(-3..=size as i64 + 3);
                conn.execute("UPDATE audit SET seq = ?1 WHERE seq = ?2", [to, seq])?;
                Ok(format!("renumber audit {seq} -> {to}"))
            }
            _ => {
                let col = COLS[rng.random_range(1..COLS.len())];
                mutate_value(conn, rng, "audit", col, "seq", seq)
            }
        }
    } else if table < 9 {
        let sizes: Vec<i64> = conn
            .prepare("SELECT size FROM audit_checkpoints")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let size = sizes[rng.random_range(0..sizes.len())];
        match rng.random_range(0..6) {
            0 => {
                conn.execute("DELETE FROM audit_checkpoints WHERE size = ?1", [size])?;
                Ok(format!("delete checkpoint {size}"))
            }
            1 => mutate_value(conn, rng, "audit_checkpoints", "size", "size", size),
            _ => mutate_value(conn, rng, "audit_checkpoints", "note", "size", size),
        }
    } else {
        const COLS: [&str; 5] = ["id", "name", "public_key", "valid_from_seq", "endorsement"];
        let id = rng.random_range(1..=2);
        if rng.random_range(0..8) == 0 {
            conn.execute("DELETE FROM audit_keys WHERE id = ?1", [id])?;
            return Ok(format!("delete key {id}"));
        }
        let col = COLS[rng.random_range(0..COLS.len())];
        mutate_value(conn, rng, "audit_keys", col, "id", id)
    }
}

fn mutate_value(
    conn: &Connection,
    rng: &mut StdRng,
    table: &str,
    col: &str,
    key: &str,
    id: i64,
) -> rusqlite::Result<String> {
    use rusqlite::types::Value;
    let old: Value = conn.query_row(
        &format!("SELECT {col} FROM {table} WHERE {key} = ?1"),
        [id],
        |r| r.get(0),
    )?;
    let new = match (rng.random_range(0..8), &old) {
        (0, _) => Value::Null,
        (1, Value::Text(t)) => Value::Blob(t.clone().into_bytes()),
        (1, Value::Blob(b)) => Value::Text(String::from_utf8_lossy(b).into_owned()),
        (1, Value::Integer(i)) => Value::Text(i.to_string()),
        (2, Value::Integer(i)) => Value::Real(*i as f64 + 0.5),
        (_, Value::Integer(i)) => Value::Integer(i.wrapping_add(rng.random_range(-3..=3))),
        (k, Value::Text(t)) => {
            let mut b = t.clone().into_bytes();
            edit_bytes(&mut b, rng, k);
            Value::Text(String::from_utf8_lossy(&b).into_owned())
        }
        (k, Value::Blob(b)) => {
            let mut b = b.clone();
            edit_bytes(&mut b, rng, k);
            Value::Blob(b)
        }
        (_, _) => Value::Integer(rng.random_range(-2..100)),
    };
    let what = format!("{table}.{col}[{id}]: {old:?} -> {new:?}");
    conn.execute(
        &format!("UPDATE {table} SET {col} = ?1 WHERE {key} = ?2"),
        params![new, id],
    )?;
    Ok(what)
}

fn edit_bytes(b: &mut Vec<u8>, rng: &mut StdRng, k: usize) {
    match k {
        3 if !b.is_empty() => {
            b.pop();
        }
        4 => b.push(rng.random()),
        _ if !b.is_empty() => {
            let i = rng.random_range(0..b.len());
            b[i] ^= 1 << rng.random_range(0..8);
        }
        _ => b.push(b'x'),
    }
}

#[test]
fn fuzz_2000_mutations_never_pass_and_never_panic() {
    // A fully anchored small log (every checkpoint exported) with a key
    // rotation and a recovery record.
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let external = tempfile::tempdir().unwrap();
    let size = 60u64;
    let (k1, k2) = (key1(), key2());
    let mut chain = Chain::lazy();
    let mut signer = &k1;
    for seq in 1..=size {
        if seq == 31 {
            rotate_signer(&conn, &mut chain, &k1, &k2, at(seq), "user:sec", "cli").unwrap();
            signer = &k2;
        } else if seq == 17 {
            record_recovery(&conn, &mut chain, at(seq), "startup").unwrap();
        } else {
            chain.append(&conn, &rec(seq)).unwrap();
        }
        if seq % 10 == 0 {
            let text = checkpoint(&conn, &mut chain, signer).unwrap().unwrap();
            export_checkpoint(external.path(), &text).unwrap();
        }
    }
    let clean = verify(&conn, Some(external.path()), ORIGIN).unwrap();
    assert!(clean.ok() && clean.warnings.is_empty(), "{clean}");
    let before = dump(&conn);

    let mut rng = StdRng::seed_from_u64(0xa0d17);
    let (mut effective, mut noops) = (0, 0);
    for i in 0..2000 {
        conn.execute_batch("SAVEPOINT m").unwrap();
        let what = mutate(&conn, &mut rng, size);
        let changed = what.is_ok() && dump(&conn) != before;
        if changed {
            effective += 1;
            let r = verify(&conn, Some(external.path()), ORIGIN)
                .unwrap_or_else(|e| panic!("mutation {i} ({what:?}): verify error {e}"));
            assert!(!r.ok(), "mutation {i} ({what:?}) passed:\n{r}");
            // The report prints without panicking, too.
            let _ = r.to_string();
        } else {
            noops += 1;
        }
        conn.execute_batch("ROLLBACK TO m; RELEASE m").unwrap();
    }
    println!("fuzz: {effective} effective mutations, {noops} no-ops or refused by SQLite");
    assert!(effective >= 1500, "{effective}");
    assert!(verify(&conn, Some(external.path()), ORIGIN).unwrap().ok());
}

// ---------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------

fn export_log() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut chain = Chain::lazy();
    for seq in 1..=10 {
        chain.append(&conn, &rec(seq)).unwrap();
    }
    (dir, path, conn)
}

#[test]
fn jsonl_export_has_one_object_per_record_after_seq() {
    let (_dir, _path, conn) = export_log();
    let mut out = Vec::new();
    assert_eq!(export_jsonl(&conn, 7, &mut out).unwrap(), 10);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["seq"], 8);
    assert_eq!(v["actor"], "sender:lab");
    assert_eq!(v["object"], "message:8");
    assert_eq!(v["at"], "2026-11-23T00:00:00.080Z");
    assert_eq!(v["hash"], hex::encode(hash_at(&conn, 8)));
    assert_eq!(v["prev"], hex::encode(hash_at(&conn, 7)));
    let mut none = Vec::new();
    assert_eq!(export_jsonl(&conn, 10, &mut none).unwrap(), 10);
    assert!(none.is_empty());
}

#[test]
fn syslog_line_follows_rfc5424() {
    let r = StoredRecord {
        seq: 42,
        at: t0() + Duration::microseconds(1),
        actor: r#"user:"a]b\c"#.into(),
        action: "message.received".into(),
        object: "message:42".into(),
        source: "10.0.0.7:5000".into(),
        outcome: "AA".into(),
        prev: [1; 32],
        hash: [2; 32],
    };
    let line = export::format_syslog(&r, "gw01.example", "switchboard");
    let want = format!(
        "<86>1 2026-11-23T00:00:00.000001Z gw01.example switchboard - message.received \
         [audit@32473 seq=\"42\" hash=\"{}\" prev=\"{}\" actor=\"user:\\\"a\\]b\\\\c\" \
         action=\"message.received\" object=\"message:42\" source=\"10.0.0.7:5000\" outcome=\"AA\"] \
         user:\"a]b\\c message.received message:42 AA",
        "02".repeat(32),
        "01".repeat(32)
    );
    assert_eq!(line, want);
    // authpriv (10) * 8 + notice (5) for a refusal; empty header fields are "-".
    let refused = StoredRecord {
        outcome: "refused".into(),
        ..r.clone()
    };
    assert!(
        format_syslog(&refused, "", "a b").starts_with("<85>1 2026-11-23T00:00:00.000001Z - ab - ")
    );
    assert_eq!(export::escape_param(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    assert_eq!(export::octet_frame("abc"), b"3 abc".to_vec());
}

fn test_pki(dir: &Path) -> (PathBuf, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair,
    };
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Audit Test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (ca_path, std::sync::Arc::new(config))
}

/// Parses RFC 5425 frames: `LEN SP MSG` repeated.
fn parse_frames(mut buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let sp = buf.iter().position(|b| *b == b' ').expect("length");
        let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
        let msg = &buf[sp + 1..sp + 1 + len];
        out.push(String::from_utf8(msg.to_vec()).unwrap());
        buf = &buf[sp + 1 + len..];
    }
    out
}

#[tokio::test]
async fn syslog_over_tls_ships_octet_counted_frames() {
    use tokio::io::AsyncReadExt as _;
    let (dir, path, conn) = export_log();
    let (ca, server_config) = test_pki(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server_config)
            .accept(tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.unwrap();
        buf
    });
    let target = SyslogTlsTarget {
        addr: addr.to_string(),
        server_name: "localhost".into(),
        ca_file: ca,
        hostname: "gw01.example".into(),
        app: "switchboard".into(),
        timeout: std::time::Duration::from_secs(10),
    };
    let last = ship_syslog_tls(&target, &path, 2, 3).await.unwrap();
    assert_eq!(last, 10);
    let frames = parse_frames(&server.await.unwrap());
    let want: Vec<String> = read_records(&conn, 2, 100)
        .unwrap()
        .iter()
        .map(|r| format_syslog(r, "gw01.example", "switchboard"))
        .collect();
    assert_eq!(frames.len(), 8);
    assert_eq!(frames, want);
    assert!(frames[0].contains(" seq=\"3\" "));

    // An untrusted server (another CA) is refused before anything is sent.
    let other = tempfile::tempdir().unwrap();
    let (_other_ca, other_config) = test_pki(other.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = tokio_rustls::TlsAcceptor::from(other_config)
                .accept(tcp)
                .await;
        }
    });
    let bad = SyslogTlsTarget {
        addr: addr.to_string(),
        ..target.clone()
    };
    assert!(matches!(
        ship_syslog_tls(&bad, &path, 0, 3).await,
        Err(AuditError::Syslog(_))
    ));
}
