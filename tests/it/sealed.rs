//! The sealed journal and the audit trail, end to end: no readable PHI in
//! the database files, audited content views, `audit verify`, retention with
//! legal holds, and key rotation / purge interrupted by SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard::app::Gateway;
use switchboard::clock::Clock;
use switchboard::config::{self, Config};
use switchboard::journal::{self, DedupKey, Fate, NewMessage, SqliteStorage, Storage};

use crate::support::*;

const CANARY: &[u8] = b"ZZCANARY";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

/// A configuration in `dir` with off-box checkpoints and short retention.
fn sealed_config(dir: &Path) -> (PathBuf, Config) {
    let text = format!(
        "{}\n[audit]\norigin = \"test.switchboard/audit\"\ncheckpoint_dir = \"{}\"\ncheckpoint_every = 50\n\n[retention]\nraw_messages_days = 30\nevents_days = 30\n",
        config_text(&dir.join("data"), ""),
        dir.join("offbox").display()
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    (path, cfg)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn phi_canary_never_reaches_the_database_wal_or_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = sealed_config(dir.path());
    let gw = Gateway::start(cfg).await.unwrap();
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    for i in 0..150 {
        let ack = c.roundtrip(&oru(&format!("CAN{i}"))).await;
        assert_eq!(ack_code(&ack), "AA");
    }
    // Rejected and filtered messages are journaled too.
    c.roundtrip(&oru("CANBAD").replace("||6.9|", "||FOO|"))
        .await;
    c.roundtrip("MSH|^~\\&|LAB|HOSP|||20261123||ZZZ^Z01|CANZ|P|2.5\rPID|1||ZZCANARY^^^HOSP^MR\r")
        .await;
    // Inspect the files while the gateway still has them open (WAL not
    // checkpointed), and again after shutdown.
    let data = dir.path().join("data");
    let mut scanned = 0;
    for f in files(&data) {
        // SQLite may remove a transient file between listing and reading.
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        assert!(!contains(&bytes, CANARY), "canary in {}", f.display());
        scanned += 1;
    }
    assert!(scanned >= 2, "db and wal scanned");
    gw.shutdown().await;
    for f in files(dir.path()) {
        if f.extension().is_some_and(|e| e == "toml") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        assert!(!contains(&bytes, CANARY), "canary in {}", f.display());
    }
    // The off-box checkpoint exists and the key file is 0600.
    assert!(dir.path().join("offbox").join("checkpoint").is_file());
    let kek = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("kek-"))
        .expect("a key-encryption key was generated");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(kek.metadata().unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn content_views_decrypt_and_are_audited_and_audit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cfg) = sealed_config(dir.path());
    let gw = Gateway::start(cfg).await.unwrap();
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    for i in 0..120 {
        c.roundtrip(&adt_a01(&format!("AUD{i}"))).await;
    }
    gw.shutdown().await;

    let (code, out, err) = run(bin()
        .args([
            "messages",
            "--show-content",
            "--control-id",
            "AUD7",
            "--by",
            "alice",
            "--config",
        ])
        .arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ZZCANARY"), "content decrypted: {out}");

    let (code, out, err) = run(bin().args(["audit", "export", "--config"]).arg(&path));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let received = lines
        .iter()
        .filter(|r| r["action"] == "message.received")
        .count();
    assert_eq!(received, 120);
    let views: Vec<_> = lines
        .iter()
        .filter(|r| r["action"] == "phi.viewed")
        .collect();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["actor"], "user:alice");
    assert!(!out.contains("ZZCANARY"), "audit holds ids, not content");

    let (code, out, err) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_eq!(code, 0, "clean log verifies: {out}{err}");

    // Pinning the verifier key: the real one verifies, any other is refused.
    let (code, key, _) = run(bin().args(["audit", "key", "--config"]).arg(&path));
    assert_eq!(code, 0);
    let base = std::fs::read_to_string(&path).unwrap();
    let pinned = base.replace(
        "[audit]\n",
        &format!("[audit]\ntrusted_key = \"{}\"\n", key.trim()),
    );
    std::fs::write(&path, &pinned).unwrap();
    let (code, out, err) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_eq!(code, 0, "pinned key verifies: {out}{err}");
    let other = switchboard::audit::Signer::generate("test.switchboard/audit")
        .unwrap()
        .verifier_key()
        .to_string();
    std::fs::write(&path, pinned.replace(key.trim(), &other)).unwrap();
    let (code, out, _) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_ne!(code, 0, "a log signed by another key is refused: {out}");
    std::fs::write(&path, &base).unwrap();

    // An attacker edits one audit row directly in the file.
    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    conn.execute("UPDATE audit SET outcome = 'AE' WHERE seq = 5", [])
        .unwrap();
    drop(conn);
    let (code, out, _) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_ne!(code, 0);
    assert!(out.contains("FAIL seq=5"), "{out}");
}

fn message_at(id: &str, patient: &str, at: DateTime<Utc>) -> NewMessage {
    use sha2::Digest;
    let text = oru(id).replace(&format!("MRN{id}"), patient);
    let d = switchboard::parse::decode_frame(text.as_bytes(), switchboard::parse::Charset::Utf8)
        .unwrap();
    let h = switchboard::parse::Header::parse(&d.text).unwrap();
    let ctx = switchboard::parse::EventContext {
        sender: "lab",
        timezone: chrono_tz::UTC,
    };
    let events = switchboard::parse::events(&d.text, &h, &ctx).unwrap();
    NewMessage {
        received_at: at,
        peer: "127.0.0.1:1".into(),
        sender: Some("lab".into()),
        key: DedupKey {
            msh3: "LAB".into(),
            msh4: "HOSP".into(),
            control_id: id.into(),
        },
        message_type: "ORU".into(),
        trigger: "R01".into(),
        processing_id: "P".into(),
        raw: text.clone().into_bytes(),
        raw_charset: "frame".into(),
        body_sha256: sha2::Sha256::digest(text.as_bytes()).into(),
        fate: Fate::Accepted,
        reason: None,
        error_code: None,
        error_location: None,
        events,
        ack_code: Some("AA".into()),
        ack: format!("MSH|^~\\&|SB|H|LAB|HOSP|x||ACK^R01^ACK|A{id}|P|2.5.1\rMSA|AA|{id}\r")
            .into_bytes(),
        app_ack: None,
        batch_ref: None,
    }
}

/// Fills the journal with `days` days of messages starting `first_age_days`
/// ago; control ids are `<prefix>D<day>M<n>`.
fn fill(cfg: &Config, prefix: &str, days: i64, first_age_days: i64, per_day: usize) {
    let now = Clock::system().now_utc();
    let protection = journal::protection(cfg, now).unwrap();
    let mut s = SqliteStorage::open(&cfg.journal_path(), protection, now).unwrap();
    for d in 0..days {
        let at = now - chrono::Duration::days(first_age_days + d);
        let batch: Vec<NewMessage> = (0..per_day)
            .map(|i| {
                let patient = if i == 0 {
                    "HELDPATIENT".to_string()
                } else {
                    format!("P{d}-{i}")
                };
                message_at(&format!("{prefix}D{d}M{i}"), &patient, at)
            })
            .collect();
        s.commit(&batch, at, Duration::from_secs(3600)).unwrap();
    }
}

fn status(path: &Path) -> serde_json::Value {
    let (code, out, err) = run(bin()
        .args(["retention", "status", "--json", "--config"])
        .arg(path));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn count_state(st: &serde_json::Value, category: &str, state: &str) -> usize {
    st["periods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["category"] == category
                && match &p["state"] {
                    serde_json::Value::String(s) => s == state,
                    serde_json::Value::Object(o) => o.contains_key(state),
                    _ => false,
                }
        })
        .count()
}

#[tokio::test]
async fn retention_erases_expired_days_and_legal_holds_suspend_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cfg) = sealed_config(dir.path());
    // Days 40..43 ago are past 30 days; days 1..2 ago are kept.
    fill(&cfg, "OLD", 3, 40, 3);
    fill(&cfg, "NEW", 2, 1, 3);
    // Every day's first message is about HELDPATIENT: a hold on that
    // patient suspends the purge of every old day.
    let (code, out, err) = run(bin()
        .args([
            "hold",
            "place",
            "--patient",
            "HELDPATIENT",
            "--authority",
            "HOSP",
            "--reason",
            "matter 2026-17",
            "--by",
            "compliance",
            "--config",
        ])
        .arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    let st = status(&path);
    assert_eq!(count_state(&st, "raw", "held"), 3, "{st:#}");
    assert_eq!(count_state(&st, "raw", "kept"), 2);
    let (code, out, _) = run(bin()
        .args(["retention", "purge", "--by", "compliance", "--config"])
        .arg(&path));
    assert_eq!(code, 0);
    assert!(out.contains("held raw"), "{out}");
    assert!(!out.contains("erased"), "nothing erased under hold: {out}");

    run(bin()
        .args(["hold", "release", "1", "--by", "compliance", "--config"])
        .arg(&path));
    let (code, out, _) = run(bin()
        .args(["retention", "purge", "--by", "compliance", "--config"])
        .arg(&path));
    assert_eq!(code, 0);
    assert_eq!(out.matches("erased raw").count(), 3, "{out}");
    assert_eq!(out.matches("erased event").count(), 3, "{out}");
    let st = status(&path);
    assert_eq!(count_state(&st, "raw", "erased"), 3, "{st:#}");
    assert_eq!(count_state(&st, "raw", "kept"), 2);

    // Erased content is gone; kept content still opens.
    let (_, out, _) = run(bin()
        .args([
            "messages",
            "--show-content",
            "--control-id",
            "OLDD1M1",
            "--config",
        ])
        .arg(&path));
    assert!(!out.contains("ZZCANARY"), "{out}");
    let (_, out, _) = run(bin()
        .args(["messages", "--show-content", "--limit", "6", "--config"])
        .arg(&path));
    assert_eq!(out.matches("ZZCANARY").count(), 6, "kept days open: {out}");

    // Every hold and purge is in the audit trail, and the chain verifies.
    let (_, out, _) = run(bin().args(["audit", "export", "--config"]).arg(&path));
    for action in [
        "hold.placed",
        "hold.released",
        "retention.suspended",
        "retention.purged",
    ] {
        assert!(out.contains(action), "{action} audited");
    }
    let (code, out, _) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_eq!(code, 0, "{out}");
}

/// Runs `args` and SIGKILLs it after `after`; returns true if it was killed
/// before finishing.
fn run_and_kill(path: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = bin()
        .args(args)
        .arg("--config")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    killed
}

fn all_content_opens(path: &Path, expected: usize) {
    let (code, out, err) = run(bin()
        .args([
            "messages",
            "--show-content",
            "--json",
            "--limit",
            "100000",
            "--config",
        ])
        .arg(path));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), expected);
    for r in &rows {
        let raw = r["raw"].as_str().unwrap();
        assert!(
            raw.contains("ZZCANARY") || raw.contains("erased"),
            "unreadable: {raw}"
        );
    }
}

#[tokio::test]
async fn key_rotation_killed_at_random_moments_leaves_everything_readable() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let (path, cfg) = sealed_config(dir.path());
    fill(&cfg, "K", 60, 1, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut interrupted = 0;
    for _ in 0..10 {
        let after = Duration::from_millis(rng.random_range(0..40));
        if run_and_kill(&path, &["keys", "rotate"], after) {
            interrupted += 1;
        }
        all_content_opens(&path, 120);
    }
    // A last rotation runs to the end and retires every older key file.
    let (code, out, err) = run(bin().args(["keys", "rotate", "--config"]).arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    all_content_opens(&path, 120);
    let keks = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kek-"))
        .count();
    assert_eq!(
        keks, 1,
        "old key-encryption keys retired after a completed rotation"
    );
    let (code, out, _) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_eq!(code, 0, "{out}");
    note(&format!(
        "key rotation: {interrupted} of 10 runs killed before they finished"
    ));
}

#[tokio::test]
async fn purge_killed_at_random_moments_leaves_each_day_whole_or_erased() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let (path, cfg) = sealed_config(dir.path());
    fill(&cfg, "P", 40, 31, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..10 {
        let after = Duration::from_millis(rng.random_range(0..60));
        run_and_kill(&path, &["retention", "purge"], after);
        // Each day is either intact (its content opens) or erased (rows gone, key destroyed).
        all_content_opens(&path, 80);
        let st = status(&path);
        for p in st["periods"].as_array().unwrap() {
            if p["state"] == "erased" {
                assert_eq!(p["rows"], 0, "erased day has no rows: {p}");
            }
        }
    }
    let (code, _, _) = run(bin().args(["retention", "purge", "--config"]).arg(&path));
    assert_eq!(code, 0);
    let st = status(&path);
    assert_eq!(count_state(&st, "raw", "erased"), 40);
    let (code, out, _) = run(bin().args(["audit", "verify", "--config"]).arg(&path));
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn audit_records_are_shipped_to_a_siem_as_syslog_over_tls() {
    use tokio::io::AsyncReadExt;
    let pki = crate::certs::Pki::generate();
    let server = switchboard::listener::tls::server_config(&switchboard::config::TlsConfig {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
        crls: vec![],
        handshake_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // RFC 5425 octet counting: "LEN SP MSG".
                    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
                        let Ok(len) = std::str::from_utf8(&buf[..sp]).unwrap().parse::<usize>()
                        else {
                            return;
                        };
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        let msg = String::from_utf8_lossy(&buf[sp + 1..sp + 1 + len]).into_owned();
                        buf.drain(..sp + 1 + len);
                        let _ = tx.send(msg);
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[audit]\norigin = \"test.switchboard/audit\"\nsyslog_address = \"{collector}\"\nsyslog_server_name = \"localhost\"\nsyslog_ca = \"{}\"\nsyslog_interval_secs = 1\n",
        config_text(&dir.path().join("data"), ""),
        pki.ca.display()
    );
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::start(config::load(&path).unwrap()).await.unwrap();
    let mut c = Mllp::connect(gw.mllp_addr()).await;
    for i in 0..5 {
        c.roundtrip(&oru(&format!("SIEM{i}"))).await;
    }
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received
        .iter()
        .filter(|l: &&String| l.contains("message.received"))
        .count()
        < 5
    {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => received.push(line),
            _ => panic!("collector got {} lines: {received:?}", received.len()),
        }
    }
    let line = received
        .iter()
        .find(|l| l.contains("message.received"))
        .unwrap();
    assert!(line.starts_with("<"), "RFC 5424 PRI: {line}");
    assert!(
        line.contains("[audit@32473 seq=\""),
        "structured data: {line}"
    );
    assert!(received.iter().all(|l| !l.contains("ZZCANARY")), "ids only");
    gw.shutdown().await;
    let cursor = std::fs::read_to_string(dir.path().join("data/audit-syslog.cursor")).unwrap();
    assert!(cursor.trim().parse::<u64>().unwrap() >= 5);
}

#[tokio::test]
async fn phi_canary_never_reaches_the_logs_at_debug_level() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sealed_config(dir.path());
    let port = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mllp, http) = (port(()), port(()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&path)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    let mut c = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            drop(s);
            c = Some(Mllp::connect(addr).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("gateway up");
    // Accepted, rejected at every stage, duplicate, reuse, oversized-free junk.
    c.roundtrip(&oru("LOG1")).await;
    c.roundtrip(&oru("LOG1")).await;
    c.roundtrip(&oru("LOG1").replace("6.9", "7.0")).await;
    c.roundtrip(&oru("LOG2").replace("||6.9|", "||ZZCANARY|"))
        .await;
    c.roundtrip(&oru("LOG3").replace("|LAB|", "|ZZCANARY|"))
        .await;
    c.roundtrip(&oru("LOG4").replace("|P|2.5.1", "|ZZCANARY|2.5.1"))
        .await;
    c.roundtrip(&adt_a01("LOG5").replace("PV1|1|I|", "PV1|1|ZZCANARY|"))
        .await;
    c.send_raw(b"ZZCANARY junk before a frame").await;
    c.roundtrip("ZZCANARY|not|an|msh\r").await;
    drop(c);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut err = String::new();
    let mut out = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(
        err.contains("switchboard listening"),
        "logs were captured: {err}"
    );
    assert!(!err.contains("ZZCANARY"), "canary in stderr:\n{err}");
    assert!(!out.contains("ZZCANARY"), "canary in stdout:\n{out}");
}
