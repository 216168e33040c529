//! RELIABILITY §(b): a backend down (answering 503 with `Retry-After`) for
//! two minutes under steady load. Nothing acknowledged is lost, the
//! gateway's memory stays within +64 MiB, ingest keeps its latency, STAT
//! alerts still escalate on time (the next tier is queued while the backend
//! is down), and the backlog drains once the backend is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Mllp, ack_code};

const OUTAGE: Duration = Duration::from_secs(120);
const RATE_PER_SEC: u64 = 20;

/// A receiver that answers 503 + Retry-After: 1 while `down`, else 200.
async fn receiver(down: Arc<AtomicBool>, ok: Arc<AtomicU64>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (down, ok) = (down.clone(), ok.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..p]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= p + 4 + len {
                            break;
                        }
                    }
                }
                let resp: &[u8] = if down.load(Ordering::SeqCst) {
                    b"HTTP/1.1 503 Down\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    ok.fetch_add(1, Ordering::SeqCst);
                    b"HTTP/1.1 204 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            });
        }
    });
    port
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_two_minutes_under_load_loses_nothing_and_drains_after() {
    let down = Arc::new(AtomicBool::new(true));
    let delivered = Arc::new(AtomicU64::new(0));
    let port = receiver(down.clone(), delivered.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(
        dir.path().join("rosters/ward.toml"),
        format!(
            "name = \"ward\"\ntimezone = \"UTC\"\n\
[[members]]\nid = \"rn-a\"\ncontacts = {{ webhook = \"http://127.0.0.1:{port}/a\" }}\n\
[[members]]\nid = \"sup\"\ncontacts = {{ webhook = \"http://127.0.0.1:{port}/sup\" }}\n\
[[roles]]\nname = \"charge-nurse\"\n\
[[rotations]]\nrole = \"charge-nurse\"\nmembers = [\"rn-a\"]\nstart = \"2026-01-05T07:00\"\nlength_days = 1\n\
[failsafe]\nmember = \"sup\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mappings/m.toml"),
        "[[rules]]\nname = \"critical\"\nmatch = { kind = \"result\", flags = [\"HH\"] }\n\
route = { role = \"charge-nurse\", priority = \"stat\", escalation = \"fast\" }\n\
[escalations.fast]\ntiers = [{ route = true, timeout_secs = 30 }, { failsafe = true, timeout_secs = 3600 }]\n",
    )
    .unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[backends]]\nname = \"hook\"\nkind = \"webhook\"\ncontact = \"webhook\"\nretry_initial_ms = 500\nretry_max_secs = 5\nmax_attempts = 10000\ncircuit_open_secs = 5\n",
    )
    .unwrap();
    let (mllp, http) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    let db = dir.path().join("data/journal.sqlite3");
    let mut c = Mllp::connect(addr).await;
    // Warm up, then the baseline.
    let mut sent = 0u64;
    let mut latencies: Vec<Duration> = Vec::new();
    let now = || chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string();
    let oru = |i: u64, ts: &str| {
        format!(
            "MSH|^~\\&|LAB|HOSP|SB|HOSP|{ts}||ORU^R01|O{i}|P|2.5.1\rPID|1||ZZ{i}^^^HOSP^MR||ZZCANARY^PHI\r\
PV1|1|I|ICU^{}^A\rOBR|1|P{i}|F{i}|2823-3^Potassium^LN|||{ts}\rOBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r",
            i % 40
        )
    };
    for _ in 0..20 {
        sent += 1;
        assert_eq!(ack_code(&c.roundtrip(&oru(sent, &now())).await), "AA");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = rss_kib(pid);
    // Steady load through the whole outage.
    let start = Instant::now();
    let mut peak = baseline;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_SEC));
    while start.elapsed() < OUTAGE {
        tick.tick().await;
        sent += 1;
        let t = Instant::now();
        let ack = c.roundtrip(&oru(sent, &now())).await;
        latencies.push(t.elapsed());
        assert_eq!(ack_code(&ack), "AA", "ingest refused during the outage");
        if sent.is_multiple_of(100) {
            peak = peak.max(rss_kib(pid));
        }
    }
    peak = peak.max(rss_kib(pid));
    // STAT alerts escalated on time while the backend was down: the first
    // alerts' failsafe tier is queued 30 s after them.
    let escalated = count(
        &db,
        "SELECT COUNT(*) FROM notifications WHERE reason = 'escalation'",
    );
    assert!(
        escalated > 0,
        "no STAT escalation while the backend was down"
    );
    let waiting = count(
        &db,
        "SELECT COUNT(*) FROM notifications WHERE state IN ('pending','retrying')",
    );
    assert!(waiting > 0, "the backlog should be waiting");
    assert_eq!(delivered.load(Ordering::SeqCst), 0);
    // The backend comes back: everything drains.
    down.store(false, Ordering::SeqCst);
    let total = count(&db, "SELECT COUNT(*) FROM notifications");
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let left = count(
            &db,
            "SELECT COUNT(*) FROM notifications WHERE state IN ('pending','retrying')",
        );
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{left} of {total} notifications not drained"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dead = count(
        &db,
        "SELECT COUNT(*) FROM notifications WHERE state = 'dead'",
    );
    assert_eq!(dead, 0, "nothing dead-lettered by a 503 outage");
    // Nothing acknowledged was lost: every message became one alert.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM messages WHERE fate = 'accepted'") as u64,
        sent
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts") as u64, sent);
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99) / 100];
    let growth_mib = (peak.saturating_sub(baseline)) as f64 / 1024.0;
    crate::support::note(&format!(
        "outage: {sent} messages over {} s at {RATE_PER_SEC}/s, ACK p99 {:.1} ms, RSS +{growth_mib:.1} MiB, {escalated} escalations queued during the outage, {total} notifications drained",
        OUTAGE.as_secs(),
        p99.as_secs_f64() * 1000.0
    ));
    assert!(
        p99 < Duration::from_millis(500),
        "ingest slowed: p99 {p99:?}"
    );
    assert!(growth_mib <= 64.0, "memory grew {growth_mib:.1} MiB");
    child.start_kill().unwrap();
}
