//! Delivery to a real webhook receiver on loopback, through the real
//! binary: signed, redacted (a PHI canary never leaves under `limited`),
//! marked delivered; retries honour `Retry-After` with the same idempotency
//! key; a 4xx dead-letters one notification without blocking the others.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Mllp, ack_code};

const SECRET: &str = "webhook-secret-for-tests";

/// One request the receiver saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Answers for requests under a path prefix: (status, Retry-After seconds).
type Script = Vec<(String, VecDeque<(u16, Option<u64>)>)>;

/// A webhook receiver: answers from a per-path script (else 200).
#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub async fn start(&self) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, len) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..p]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            break (p + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.lines();
                    let path = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("")
                        .to_string();
                    let headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    me.seen.lock().unwrap().push(Seen {
                        path: path.clone(),
                        headers,
                        body: buf[head_end..].to_vec(),
                        at: Instant::now(),
                    });
                    let (status, retry) = {
                        let mut script = me.script.lock().unwrap();
                        script
                            .iter_mut()
                            .find(|(p, _)| path.starts_with(p.as_str()))
                            .and_then(|(_, q)| {
                                if q.len() > 1 {
                                    q.pop_front()
                                } else {
                                    q.front().copied()
                                }
                            })
                            .unwrap_or((200, None))
                    };
                    let retry = retry
                        .map(|r| format!("Retry-After: {r}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n{retry}\r\n"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    pub fn script(&self, path: &str, answers: &[(u16, Option<u64>)]) {
        self.script
            .lock()
            .unwrap()
            .push((path.to_string(), answers.iter().copied().collect()));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn roster(port: u16) -> String {
    format!(
        r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = {{ webhook = "http://127.0.0.1:{port}/hook/rn-a" }}

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = {{ webhook = "http://127.0.0.1:{port}/hook/rn-b" }}

[[roles]]
name = "charge-nurse"

[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "rn-b"
"#
    )
}

const MAPPING: &str = r#"
[[rules]]
name = "icu-critical"
match = { kind = "result", flags = ["HH"], units = ["ICU"] }
route = { person = "rn-a", priority = "stat", escalation = "slow" }

[[rules]]
name = "ward-critical"
match = { kind = "result", flags = ["HH"], units = ["WARD"] }
route = { person = "rn-b", priority = "stat", escalation = "slow" }

[escalations.slow]
tiers = [{ route = true, timeout_secs = 600 }, { failsafe = true, timeout_secs = 600 }]
"#;

pub fn setup(dir: &Path, port: u16) -> std::path::PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("rosters/ward.toml"), roster(port)).unwrap();
    std::fs::write(dir.join("mappings/m.toml"), MAPPING).unwrap();
    let text = "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[backends]]\nname = \"hook\"\nkind = \"webhook\"\ncontact = \"webhook\"\nprofile = \"limited\"\nsecret_env = \"SB_TEST_HOOK_SECRET\"\nretry_initial_ms = 200\nretry_max_secs = 5\nmax_attempts = 5\n";
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn oru(id: &str, unit: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|{now}||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
PID|1||ZZMRN{id}^^^HOSP^MR||ZZCANARY^PHIPERSON||19700101|F|||1 Canary Road^^Zzville||(555)010-9999\r\
PV1|1|I|{unit}^12^A^HOSP\r\
OBR|1|PL{id}|FL{id}|2823-3^Potassium^LN|||{now}\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r\
NTE|1||Patient ZZCANARY PHIPERSON called from (555)010-9999 about ZZMRN{id}\r"
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(config: &Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let (c, mllp, _) = serve_both(config).await;
    (c, mllp)
}

async fn serve_both(
    config: &Path,
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let (mllp, http) = (free_port(), free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_HOOK_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (
        child,
        format!("127.0.0.1:{mllp}").parse().unwrap(),
        format!("127.0.0.1:{http}").parse().unwrap(),
    )
}

pub fn rows(db: &Path) -> Vec<(String, String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.prepare("SELECT member, state, attempts FROM notifications ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(seen: &Seen) {
    let ts = seen.header("X-Switchboard-Timestamp").expect("timestamp");
    let sig = seen.header("X-Switchboard-Signature").expect("signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&seen.body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[tokio::test]
async fn notifications_reach_the_webhook_signed_and_redacted_and_are_marked_delivered() {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let (mut child, addr) = serve(&config).await;
    let mut c = Mllp::connect(addr).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("W1", "ICU")).await), "AA");
    wait_until("no webhook call", 30, || !rx.seen().is_empty()).await;
    let seen = rx.seen()[0].clone();
    assert_eq!(seen.path, "/hook/rn-a");
    verify(&seen);
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["priority"], "stat");
    assert_eq!(body["reason"], "new");
    assert_eq!(body["recipient"]["member"], "rn-a");
    assert_eq!(
        seen.header("Idempotency-Key"),
        body["idempotency_key"].as_str()
    );
    assert!(!body["preview"].as_str().unwrap().is_empty());
    // Minimum necessary: `limited` sends no identifier, and free text is scrubbed.
    let text = String::from_utf8_lossy(&seen.body).to_uppercase();
    for canary in [
        "ZZCANARY",
        "PHIPERSON",
        "ZZMRN",
        "19700101",
        "555",
        "CANARY ROAD",
    ] {
        assert!(
            !text.contains(canary),
            "{canary} left under `limited`: {text}"
        );
    }
    let db = dir.path().join("data/journal.sqlite3");
    wait_until("not marked delivered", 10, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let state: String = conn
        .query_row("SELECT state FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "delivered", "the backend's receipt moved the alert");
    let fields: String = conn
        .query_row(
            "SELECT outcome FROM audit WHERE action = 'delivery.sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(fields.contains("fields:"), "{fields}");
    assert!(
        !fields.contains("mrn") && !fields.contains("patient_name"),
        "{fields}"
    );
    child.start_kill().unwrap();
}

#[tokio::test]
async fn retries_honour_retry_after_and_a_poison_notification_is_dead_lettered_without_blocking() {
    let rx = Receiver::default();
    rx.script("/hook/rn-a", &[(503, Some(1)), (429, Some(1)), (200, None)]);
    rx.script("/hook/rn-b", &[(400, None)]);
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let (mut child, addr) = serve(&config).await;
    let mut c = Mllp::connect(addr).await;
    let t0 = Instant::now();
    assert_eq!(ack_code(&c.roundtrip(&oru("P1", "WARD")).await), "AA");
    assert_eq!(ack_code(&c.roundtrip(&oru("P2", "ICU")).await), "AA");
    let db = dir.path().join("data/journal.sqlite3");
    wait_until("rn-a never delivered", 30, || {
        rows(&db)
            .iter()
            .any(|r| r.0 == "rn-a" && r.1 == "delivered")
    })
    .await;
    let r = rows(&db);
    let b = r.iter().find(|x| x.0 == "rn-b").unwrap();
    assert_eq!((b.1.as_str(), b.2), ("dead", 1), "a 400 is not retried");
    let a = r.iter().find(|x| x.0 == "rn-a").unwrap();
    assert_eq!(a.2, 3, "two retries, then delivered");
    let to_a: Vec<Seen> = rx
        .seen()
        .into_iter()
        .filter(|s| s.path == "/hook/rn-a")
        .collect();
    assert_eq!(to_a.len(), 3);
    let keys: Vec<&str> = to_a
        .iter()
        .map(|s| s.header("Idempotency-Key").unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "the same key on every attempt"
    );
    // Retry-After: 1 s honoured between attempts.
    assert!(to_a[1].at - to_a[0].at >= Duration::from_millis(950));
    assert!(to_a[2].at - to_a[1].at >= Duration::from_millis(950));
    assert!(t0.elapsed() < Duration::from_secs(20));
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let dead: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'delivery.dead'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dead, 2, "tier 0 and the failsafe, both refused");
    // The undeliverable notification was an escalation input: the failsafe
    // tier was tried at once, and with nobody reachable the alert is
    // exhausted (an operator alarm), not silently dropped.
    let b_rows: Vec<_> = rows(&db).into_iter().filter(|r| r.0 == "rn-b").collect();
    assert_eq!(b_rows.len(), 2, "{b_rows:?}");
    let states: Vec<String> = conn
        .prepare("SELECT state FROM alerts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(states.contains(&"exhausted".to_string()), "{states:?}");
    child.start_kill().unwrap();
}

#[tokio::test]
async fn a_backend_down_for_a_while_loses_nothing_and_its_callback_accepts() {
    let rx = Receiver::default();
    rx.script(
        "/hook/rn-a",
        &[(503, None), (503, None), (502, None), (200, None)],
    );
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let (mut child, mllp, http) = serve_both(&config).await;
    let mut c = Mllp::connect(mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("R1", "ICU")).await), "AA");
    let db = dir.path().join("data/journal.sqlite3");
    wait_until("not delivered after the outage", 30, || {
        rows(&db).first().is_some_and(|r| r.1 == "delivered")
    })
    .await;
    assert_eq!(rows(&db)[0].2, 4, "three failures, then delivered");
    let last = rx.seen().last().unwrap().clone();
    let body: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    let callback = body["callback"].as_str().expect("callback").to_string();
    // Queue depth and oldest age are exported per backend.
    let m = crate::fhir::request(http, "GET", "/metrics", &[], b"").await;
    let metrics = String::from_utf8_lossy(&m.body).to_string();
    assert!(
        metrics.contains("switchboard_notifications_pending{backend=\"hook\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_notifications_oldest_age_seconds{backend=\"hook\"} 0"));
    // A forged token is refused; the real one accepts for rn-a.
    let mut forged = callback.clone();
    forged.pop();
    forged.push('x');
    let r = crate::fhir::request(http, "POST", &forged, &[], br#"{"action":"accept"}"#).await;
    assert_eq!(r.status, 403);
    let r = crate::fhir::request(http, "POST", &callback, &[], br#"{"action":"accept"}"#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["state"], "accepted");
    child.start_kill().unwrap();
}
