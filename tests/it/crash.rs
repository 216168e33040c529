//! Crash recovery with the real binary (RELIABILITY.md §4(a)): `switchboard
//! serve` is SIGKILLed at random moments while four senders stream unique
//! messages and resend whatever was not acknowledged, as interface engines
//! do. Afterwards every message that got AA is in the journal exactly once,
//! with ack code AA, and a resend returns the byte-identical stored ACK
//! without adding a row. Also: the binary's exit code 64 for a missing or
//! invalid configuration.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::support::{self, CR, EB, SB, adt_a01, field, frame, oru};

const SENDERS: usize = 4;
const PER_SENDER: usize = 500;
const TOTAL: usize = SENDERS * PER_SENDER;
/// Kills at least this many times, and keeps killing while senders still
/// have unacknowledged messages, up to `MAX_KILLS`.
const MIN_KILLS: usize = 12;
const MAX_KILLS: usize = 40;
const MAX_IN_FLIGHT: usize = 8;
const SEED: u64 = 0x5357_4954_4348; // "SWITCH"

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// A free loopback port: bind port 0, read it, release it.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// The `switchboard serve` child; SIGKILLed when dropped, even on panic.
struct Server {
    child: Option<Child>,
    config: PathBuf,
    dir: PathBuf,
    mllp: u16,
    http: u16,
    generation: usize,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

impl Server {
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("serve-{}.log", self.generation))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Spawns `serve` and waits until the MLLP port accepts connections.
    async fn start(&mut self) {
        for attempt in 1..=5 {
            self.generation += 1;
            let log = std::fs::File::create(self.log_path()).expect("create serve log");
            let child = Command::new(bin())
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .args(["--mllp", &format!("127.0.0.1:{}", self.mllp)])
                .args(["--http", &format!("127.0.0.1:{}", self.http)])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn switchboard serve");
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", self.mllp)).await.is_ok() {
                    return;
                }
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    eprintln!(
                        "crash: serve exited with {status} before listening (attempt {attempt}):\n{}",
                        self.log_tail()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "serve did not accept on 127.0.0.1:{} within 30 s:\n{}",
                    self.mllp,
                    self.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("serve could not be started 5 times in a row");
    }

    /// SIGKILL (tokio's `start_kill` on unix) and reap.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("a running child");
        child.start_kill().expect("SIGKILL the gateway");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("killed child must exit")
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the child must die of SIGKILL: {status}"
            );
        }
        #[cfg(not(unix))]
        let _ = status;
    }
}

/// A minimal MLLP client whose failures are values (the server dies under it).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// The next frame's payload, exactly as received.
    async fn recv(&mut self, wait: Duration) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(start) = self.buf.iter().position(|b| *b == SB)
                && let Some(end) = self.buf[start..].iter().position(|b| *b == EB)
                && self.buf.len() > start + end + 1
            {
                let payload = self.buf[start + 1..start + end].to_vec();
                assert_eq!(
                    self.buf[start + end + 1],
                    CR,
                    "end block must be followed by CR"
                );
                self.buf.drain(..start + end + 2);
                return Ok(payload);
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

fn control_id(sender: usize, n: usize) -> String {
    format!("K{sender}-{n}")
}

fn message(sender: usize, n: usize) -> String {
    let id = control_id(sender, n);
    if n.is_multiple_of(2) {
        oru(&id)
    } else {
        adt_a01(&id)
    }
}

/// What one sender saw.
#[derive(Default)]
struct SenderReport {
    /// MSH-10 -> payload of the first AA acknowledgement received for it.
    ledger: HashMap<String, Vec<u8>>,
    /// Frames sent, counting resends.
    sends: usize,
    /// Connections opened.
    connections: usize,
    /// Non-AA answers (e.g. AR 207 while the journal was unavailable).
    not_aa: usize,
}

/// Sends this sender's messages in bursts of 1..=8 (pipelined), paced, and
/// resends every unacknowledged message after a connection error.
async fn run_sender(sender: usize, port: u16, acked_total: Arc<AtomicUsize>) -> SenderReport {
    let mut rng = StdRng::seed_from_u64(SEED + 1 + sender as u64);
    let mut report = SenderReport::default();
    let mut todo: VecDeque<usize> = (0..PER_SENDER).collect();
    while !todo.is_empty() {
        let mut conn = match Conn::connect(port).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
        };
        report.connections += 1;
        'connection: while !todo.is_empty() {
            let burst = rng.random_range(1..=MAX_IN_FLIGHT).min(todo.len());
            let in_flight: Vec<usize> = todo.drain(..burst).collect();
            let mut bytes = Vec::new();
            for &n in &in_flight {
                bytes.extend_from_slice(&frame(message(sender, n).as_bytes()));
            }
            report.sends += in_flight.len();
            let sent = conn.stream.write_all(&bytes).await;
            let mut answered = 0;
            if sent.is_ok() {
                while answered < in_flight.len() {
                    let n = in_flight[answered];
                    let Ok(ack) = conn.recv(Duration::from_secs(10)).await else {
                        break;
                    };
                    let text = String::from_utf8_lossy(&ack).to_string();
                    let id = control_id(sender, n);
                    assert_eq!(
                        field(&text, "MSA", 2),
                        id,
                        "acknowledgements must come back in order, one per frame: {text:?}"
                    );
                    if field(&text, "MSA", 1) == "AA" {
                        assert!(
                            report.ledger.insert(id.clone(), ack).is_none(),
                            "{id} acknowledged twice by the ledger"
                        );
                        acked_total.fetch_add(1, Ordering::Relaxed);
                    } else {
                        report.not_aa += 1;
                        todo.push_back(n);
                    }
                    answered += 1;
                }
            }
            if answered < in_flight.len() {
                // The gateway died (or stalled): everything not answered goes
                // back to the front, in order, and is resent after reconnecting.
                for &n in in_flight[answered..].iter().rev() {
                    todo.push_front(n);
                }
                break 'connection;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    report
}

/// Rows of `switchboard messages --json`, through the binary.
async fn messages_json(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["messages", "--json", "--limit", "100000", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run switchboard messages");
    assert!(
        out.status.success(),
        "switchboard messages failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("messages --json prints a JSON array");
    rows.as_array().expect("a JSON array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, support::config_text(&dir.path().join("data"), "")).unwrap();
    let mut server = Server {
        child: None,
        config: config.clone(),
        dir: dir.path().to_path_buf(),
        mllp: free_port(),
        http: free_port(),
        generation: 0,
    };
    server.start().await;
    let port = server.mllp;

    let acked_total = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(run_sender(s, port, acked_total.clone())))
        .collect();

    // The killer: uniform 50-400 ms after the gateway is ready, SIGKILL,
    // restart on the same ports, wait until it accepts again.
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut kills = 0;
    let mut mid_run_kills = 0;
    while kills < MIN_KILLS || (acked_total.load(Ordering::Relaxed) < TOTAL && kills < MAX_KILLS) {
        let delay = rng.random_range(50..=400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if acked_total.load(Ordering::Relaxed) < TOTAL {
            mid_run_kills += 1;
        }
        server.kill().await;
        kills += 1;
        server.start().await;
    }
    let kills_done_at = started.elapsed();

    let mut ledger: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut sends, mut connections, mut not_aa) = (0, 0, 0);
    for (s, handle) in senders.into_iter().enumerate() {
        let report = tokio::time::timeout(Duration::from_secs(90), handle)
            .await
            .unwrap_or_else(|_| panic!("sender {s} did not finish within 90 s after the kills"))
            .unwrap_or_else(|e| panic!("sender {s} failed: {e}"));
        sends += report.sends;
        connections += report.connections;
        not_aa += report.not_aa;
        ledger.extend(report.ledger);
    }
    eprintln!(
        "crash: {kills} SIGKILLs ({mid_run_kills} while messages were outstanding) in {kills_done_at:?}; \
         {TOTAL} messages, {sends} frames sent ({} resends), {connections} connections, \
         {not_aa} non-AA answers; senders done after {:?}",
        sends - TOTAL,
        started.elapsed()
    );
    assert_eq!(
        ledger.len(),
        TOTAL,
        "every message was eventually acknowledged AA"
    );
    assert!(kills >= 10, "at least 10 kills, got {kills}");
    assert!(
        mid_run_kills >= 10,
        "at least 10 kills must hit while messages were outstanding, got {mid_run_kills}"
    );

    // (a) + (c): every AA'd control id is in the journal exactly once, with
    // ack code AA, read through the operator CLI.
    let rows = messages_json(&config).await;
    let mut by_id: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for row in &rows {
        let id = row["control_id"].as_str().expect("control_id").to_string();
        by_id.entry(id).or_default().push(row);
    }
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for id in ledger.keys() {
        match by_id.get(id).map(Vec::len) {
            None => missing.push(id.clone()),
            Some(1) => {
                let row = by_id[id][0];
                assert_eq!(
                    row["ack_code"], "AA",
                    "{id}: journal ack_code must be AA: {row}"
                );
                assert_eq!(row["fate"], "accepted", "{id}: {row}");
            }
            Some(_) => doubled.push(id.clone()),
        }
    }
    missing.sort();
    doubled.sort();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are missing from the journal (lost after AA): {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        doubled.is_empty(),
        "{} messages are journaled more than once: {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(20)]
    );
    assert_eq!(
        rows.len(),
        TOTAL,
        "the journal holds exactly the {TOTAL} messages, nothing else"
    );

    // (b) resending 50 acknowledged messages returns the byte-identical
    // first ACK and adds no row; `resends` goes up by one for each.
    let resends_before: HashMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["control_id"].as_str().unwrap().to_string(),
                r["resends"].as_u64().expect("resends"),
            )
        })
        .collect();
    eprintln!(
        "crash: {} messages were committed but their ACK lost to a kill (answered from the journal on resend)",
        resends_before.values().filter(|r| **r > 0).count()
    );
    let mut ids: Vec<&String> = ledger.keys().collect();
    ids.sort();
    let sample: Vec<&String> = ids.into_iter().choose_multiple(&mut rng, 50);
    let mut conn = Conn::connect(port)
        .await
        .expect("connect to the last gateway");
    for id in &sample {
        let (s, n) = id[1..].split_once('-').unwrap();
        let msg = message(s.parse().unwrap(), n.parse().unwrap());
        conn.stream.write_all(&frame(msg.as_bytes())).await.unwrap();
        let ack = conn
            .recv(Duration::from_secs(10))
            .await
            .expect("ACK to a resend");
        assert!(
            ack == ledger[*id],
            "{id}: a resend must get the byte-identical first ACK\nfirst:  {:?}\nresend: {:?}",
            String::from_utf8_lossy(&ledger[*id]),
            String::from_utf8_lossy(&ack)
        );
    }
    drop(conn);
    let rows_after = messages_json(&config).await;
    assert_eq!(rows_after.len(), TOTAL, "resends must not add journal rows");
    let sampled: HashSet<&str> = sample.iter().map(|s| s.as_str()).collect();
    for r in &rows_after {
        let id = r["control_id"].as_str().unwrap();
        let expected = resends_before[id] + u64::from(sampled.contains(id));
        assert_eq!(
            r["resends"].as_u64().unwrap(),
            expected,
            "{id}: resends must count the duplicate answered from the journal"
        );
    }

    server.kill().await;
    eprintln!("crash: total {:?}", started.elapsed());
}

#[test]
fn serve_without_a_config_exits_64_and_names_the_flag() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .arg("serve")
        .current_dir(empty.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "serve without switchboard.toml must exit 64 before binding; stderr: {stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("--config")),
        "stderr must tell the operator about --config: {stderr}"
    );
}

#[test]
fn check_with_an_unknown_field_exits_64_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mllp]\nlisten = \"127.0.0.1:2575\"\nlisten_backlog = 5\n\n\
         [[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    let expected = format!("{}:3:1: field ", path.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&expected) && l.contains("listen_backlog")),
        "expected a line starting with `{expected}` naming `listen_backlog`: {stderr}"
    );
}
