//! Floods and slow clients (RELIABILITY.md §(f)): idle-connection floods,
//! slowloris on MLLP and HTTP, 100 MB frames and bodies, TLS handshake
//! floods — each while a legitimate sender keeps being served.
//!
//! Bounds are generous (these run on a loaded 2-core CI machine); the
//! figures measured are printed (`--nocapture`) and recorded in
//! BENCHMARKS.md, "Floods and slow clients".
//!
//! The memory and file-descriptor tests run the real `switchboard serve`
//! binary as a child and read `/proc/<pid>`: every integration test shares
//! one process and they run in parallel, so `/proc/self` would also count
//! the memory and sockets of whichever other test runs alongside.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::fhir::{TOKEN, observation, request};
use crate::support::*;

const MIB: u64 = 1024 * 1024;
/// 100 MB, the size RELIABILITY §(d) rows 3 and 32 send.
const HUNDRED_MB: u64 = 100 * 1000 * 1000;

// ------------------------------------------------------------ helpers

/// `switchboard serve` as a child process on ports it chose itself (read
/// from its `switchboard listening` log line); killed when dropped.
struct ChildGateway {
    child: Child,
    pid: u32,
    mllp: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildGateway {
    async fn start(mllp_extra: &str, http_extra: &str) -> ChildGateway {
        let dir = tempfile::tempdir().unwrap();
        let digest = hex::encode(Sha256::digest(TOKEN.as_bytes()));
        let text = format!(
            "[storage]\ndata_dir = \"{data}\"\n\n[mllp]\nlisten = \"127.0.0.1:0\"\n{mllp_extra}\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n\n{SENDERS}\n\
             [[senders]]\nname = \"flood-fhir\"\nmsh3 = [\"FLOODFHIR\"]\nmsh4 = [\"*\"]\n\
             tokens_sha256 = [\"{digest}\"]\nnetworks = [\"127.0.0.0/8\"]\n",
            data = dir.path().join("data").display()
        );
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard serve");
        let pid = child.id().expect("child pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mllp, http) = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("switchboard listening")) {
                let addr = |key: &str| -> SocketAddr {
                    let rest = &line[line.find(key).expect(key) + key.len()..];
                    rest.split_whitespace().next().unwrap().parse().unwrap()
                };
                break (addr("mllp="), addr("http="));
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start within 30 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ChildGateway {
            child,
            pid,
            mllp,
            http,
            log,
            _dir: dir,
        }
    }

    /// A `/proc/<pid>/status` figure in bytes (`VmRSS`, `VmHWM`).
    fn status(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"));
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .expect("reset VmHWM through /proc/<pid>/clear_refs");
    }

    /// Open file descriptors of the gateway.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// A counter or gauge from `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let r = request(self.http, "GET", "/metrics", &[], b"").await;
        let text = String::from_utf8_lossy(&r.body).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let log = self.log_text();
        assert!(
            !log.contains("ZZCANARY"),
            "no PHI in the gateway's log:\n{log}"
        );
        log
    }
}

/// Sends one ORU every 50 ms (20 msg/s) on `c` until `stop`; every answer
/// must be AA with its own MSA-2. Returns the round-trip times.
async fn steady_sender(mut c: Mllp, prefix: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("{prefix}{n}");
        let t = Instant::now();
        let ack = c.roundtrip(&oru(&id)).await;
        times.push(t.elapsed());
        assert_eq!(ack_code(&ack), "AA", "{ack:?}");
        assert_eq!(field(&ack, "MSA", 2), id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    times
}

/// (p50, p99, max) of some durations.
fn percentiles(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    assert!(!times.is_empty(), "no samples");
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), times[times.len() - 1])
}

/// Reads until EOF or an error (reset): `Some(elapsed since start)`, or
/// `None` if the connection is still open at `deadline`.
async fn closed_by(s: &mut TcpStream, start: Instant, deadline: Instant) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

// ------------------------------------------------------------ (a) idle flood

/// 2 × `max_connections` idle sockets: the ones over the cap are closed at
/// once, the others at the idle timeout (± 1 s); the gateway never holds
/// more than the cap in descriptors, gives them all back, logs the refusals
/// at most once a second, and a sender already connected is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_flood_keeps_fds_bounded_and_the_sender_served() {
    const CAP: usize = 128;
    const IDLE: Duration = Duration::from_secs(3);
    let gw = ChildGateway::start(
        &format!(
            "max_connections = {CAP}\nidle_timeout_secs = {}",
            IDLE.as_secs()
        ),
        "",
    )
    .await;
    let mut legit = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&legit.roundtrip(&oru("IDLEF-0")).await), "AA");
    let baseline = gw.fds();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(steady_sender(legit, "IDLEF-".into(), stop.clone()));

    let flood_start = Instant::now();
    let mut checks = Vec::with_capacity(2 * CAP);
    for _ in 0..2 * CAP {
        let mut s = TcpStream::connect(gw.mllp).await.unwrap();
        let connected = Instant::now();
        checks.push(tokio::spawn(async move {
            let closed = closed_by(
                &mut s,
                connected,
                connected + IDLE * 2 + Duration::from_secs(2),
            )
            .await;
            (closed, s)
        }));
    }
    let flood_took = flood_start.elapsed();
    // Sample the gateway's descriptors while the held sockets are open.
    let mut peak_fds = 0;
    while flood_start.elapsed() < IDLE - Duration::from_millis(500) {
        peak_fds = peak_fds.max(gw.fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = Vec::new();
    let mut held = Vec::new();
    let mut sockets = Vec::new();
    for c in checks {
        let (closed, s) = c.await.unwrap();
        sockets.push(s);
        match closed {
            Some(t) if t < Duration::from_secs(1) => refused.push(t),
            Some(t) => held.push(t),
            None => panic!("a flood socket was never closed (idle timeout {IDLE:?})"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = sender.await.unwrap();

    assert!(
        flood_took < Duration::from_secs(2),
        "the flood itself took {flood_took:?}"
    );
    assert_eq!(
        (refused.len(), held.len()),
        (CAP + 1, CAP - 1),
        "the sender holds one permit; CAP - 1 flood sockets get the rest, the others are closed at once"
    );
    let (r50, _, rmax) = percentiles(&mut refused);
    let (h50, _, hmax) = percentiles(&mut held);
    let hmin = held[0];
    assert!(
        hmin >= IDLE - Duration::from_secs(1) && hmax <= IDLE + Duration::from_secs(1),
        "held sockets closed at the idle timeout ± 1 s: {hmin:?}..{hmax:?}"
    );
    assert!(
        peak_fds <= baseline + CAP + 8,
        "the gateway holds at most the cap: {peak_fds} fds, baseline {baseline}"
    );
    assert_eq!(
        gw.metric("switchboard_mllp_connections_refused_total")
            .await,
        (CAP + 1) as u64
    );
    let (p50, p99, pmax) = percentiles(&mut latencies);
    assert!(p99 <= Duration::from_secs(1), "sender p99 {p99:?}");
    // Every descriptor comes back.
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = gw.fds();
    while after > baseline + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = gw.fds();
    }
    assert!(
        after <= baseline + 5,
        "fds back to baseline ± 5: {after} vs {baseline}"
    );
    let mut fresh = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&fresh.roundtrip(&oru("IDLEF-NEW")).await), "AA");
    let log = gw.stop().await;
    let lines = log
        .lines()
        .filter(|l| l.contains("MLLP connection limit reached"))
        .count();
    assert!(
        (1..=2 + flood_took.as_secs() as usize).contains(&lines),
        "refusals logged at most once a second: {lines} lines"
    );
    eprintln!(
        "idle flood: {} sockets (cap {CAP}) opened in {flood_took:?}; over-cap closed p50 {r50:?} max {rmax:?}; \
         held closed at idle timeout p50 {h50:?} range {hmin:?}..{hmax:?}; gateway fds baseline {baseline}, peak {peak_fds}, after {after}; \
         sender {} msgs p50 {p50:?} p99 {p99:?} max {pmax:?}; {lines} log line(s)",
        2 * CAP,
        latencies.len()
    );
}

// ------------------------------------------------------------ (b) MLLP slowloris

/// 50 sockets dribble a frame one byte per 200 ms: each is closed at
/// `frame_timeout` (1 s) ± 1 s however many bytes keep coming, nothing of
/// theirs is journaled, and a sender already connected is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_slowloris_frames_are_closed_at_frame_timeout() {
    const N: usize = 50;
    let gw = start_gateway_with("frame_timeout_secs = 1").await;
    let legit = gw.connect().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(steady_sender(legit, "SLOWL-".into(), stop.clone()));
    let addr = gw.addr();
    let dribblers: Vec<_> = (0..N)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let bytes = frame(oru(&format!("SLOWLORIS{i}")).as_bytes());
                let started = Instant::now();
                for b in bytes {
                    if s.write_all(&[b]).await.is_err() {
                        return started.elapsed();
                    }
                    let next = Instant::now() + Duration::from_millis(200);
                    if let Some(t) = closed_by(&mut s, started, next).await {
                        return t;
                    }
                }
                panic!("the whole frame was dribbled without the connection being closed");
            })
        })
        .collect();
    let mut closed = Vec::new();
    for d in dribblers {
        closed.push(d.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = sender.await.unwrap();
    let (c50, _, cmax) = percentiles(&mut closed);
    let cmin = closed[0];
    assert!(
        cmin >= Duration::from_millis(900) && cmax <= Duration::from_secs(2),
        "closed at frame_timeout (1 s) ± 1 s: {cmin:?}..{cmax:?}"
    );
    let m = gw.gateway.metrics();
    assert!(m.frame_timeouts.load(Ordering::Relaxed) >= N as u64);
    let journaled = crate::certs::journal_len(&gw.journal_path());
    assert_eq!(
        journaled,
        latencies.len(),
        "only the sender's messages are journaled"
    );
    let (p50, p99, pmax) = percentiles(&mut latencies);
    assert!(p99 <= Duration::from_secs(1), "sender p99 {p99:?}");
    eprintln!(
        "MLLP slowloris: {N} sockets, closed after p50 {c50:?} range {cmin:?}..{cmax:?}; \
         sender {} msgs p50 {p50:?} p99 {p99:?} max {pmax:?}",
        latencies.len()
    );
}

// ------------------------------------------------------------ (c) HTTP slowloris

/// 20 sockets dribble request headers one byte per 200 ms: each is closed
/// near `header_timeout_secs` (2 s), and health and FHIR requests are
/// answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_slowloris_headers_are_closed_at_header_timeout() {
    const N: usize = 20;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        crate::fhir::fhir_config_text(
            &dir.path().join("data"),
            &format!("header_timeout_secs = {}", HEADER_TIMEOUT.as_secs()),
        ),
    )
    .unwrap();
    let gw = switchboard::app::Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    let http = gw.http_addr();
    let dribblers: Vec<_> = (0..N)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(http).await.unwrap();
                let head = format!(
                    "POST /fhir/Observation HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
                     Content-Type: application/fhir+json\r\nX-Padding: {}\r\n\r\n",
                    "p".repeat(200)
                );
                let started = Instant::now();
                for b in head.bytes() {
                    if s.write_all(&[b]).await.is_err() {
                        return started.elapsed();
                    }
                    let next = Instant::now() + Duration::from_millis(200);
                    if let Some(t) = closed_by(&mut s, started, next).await {
                        return t;
                    }
                }
                panic!("all headers were dribbled without the connection being closed");
            })
        })
        .collect();
    // Meanwhile, ordinary requests are answered.
    let mut served = Vec::new();
    let auth = format!("Bearer {TOKEN}");
    let until = Instant::now() + HEADER_TIMEOUT + Duration::from_millis(500);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let t = Instant::now();
        let r = request(http, "GET", "/healthz", &[], b"").await;
        assert_eq!(r.status, 200);
        let body = observation(&format!("SLOWH{n}"), "final");
        let r = request(
            http,
            "POST",
            "/fhir/Observation",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/fhir+json"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        served.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = Vec::new();
    for d in dribblers {
        closed.push(d.await.unwrap());
    }
    let (c50, _, cmax) = percentiles(&mut closed);
    let cmin = closed[0];
    assert!(
        cmin >= HEADER_TIMEOUT - Duration::from_millis(500)
            && cmax <= HEADER_TIMEOUT + Duration::from_secs(2),
        "closed near header_timeout ({HEADER_TIMEOUT:?}): {cmin:?}..{cmax:?}"
    );
    let (p50, p99, pmax) = percentiles(&mut served);
    assert!(p99 <= Duration::from_secs(2), "requests p99 {p99:?}");
    eprintln!(
        "HTTP slowloris: {N} sockets, closed after p50 {c50:?} range {cmin:?}..{cmax:?}; \
         {} health + FHIR create pairs p50 {p50:?} p99 {p99:?} max {pmax:?}",
        served.len()
    );
    gw.shutdown().await;
}

// ------------------------------------------------------------ (d) 100 MB

/// Streams up to 100 MB of `head` + filler on a fresh connection while a
/// reader collects the answer; stops writing once the answer is complete
/// (`complete`) or the gateway closes. Returns (answer bytes, bytes sent).
async fn stream_huge(
    addr: SocketAddr,
    head: Vec<u8>,
    chunk: Vec<u8>,
    complete: fn(&[u8]) -> bool,
) -> (Vec<u8>, u64) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = done.clone();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
            if complete(&got) {
                break;
            }
        }
        reader_done.store(true, Ordering::Relaxed);
        got
    });
    let mut sent = 0u64;
    if wr.write_all(&head).await.is_ok() {
        sent += head.len() as u64;
        while sent < HUNDRED_MB && !done.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(10), wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len() as u64,
                _ => break,
            }
        }
    }
    (reader.await.unwrap(), sent)
}

fn mllp_answer_complete(got: &[u8]) -> bool {
    got.windows(2).any(|w| w == [EB, CR])
}

fn http_answer_complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    got.len() >= end + 4 + len
}

/// A 100 MB MLLP frame (no end block) is answered AE 104 after
/// `max_frame_bytes`, and a 100 MB HTTP body (with and without
/// `Content-Length`) 413 — each without the gateway's RSS growing by more
/// than 64 MiB (peak, `VmHWM` reset before each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_frame_and_body_are_refused_with_bounded_memory() {
    let gw = ChildGateway::start("", "").await;
    // Warm up both listeners so lazily allocated state is in the baseline.
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("HUGE-WARM")).await), "AA");
    drop(c);
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/fhir+json"),
    ];
    let r = request(
        gw.http,
        "POST",
        "/fhir/Observation",
        &headers,
        observation("HUGE-WARM", "final").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201);
    let filler = vec![b'x'; 64 * 1024];
    let mut figures = Vec::new();

    // MLLP: start block, a readable MSH, then bytes and no end block.
    let baseline = gw.status("VmRSS");
    gw.reset_peak();
    let mut head = vec![SB];
    head.extend_from_slice(oru("HUGE-MLLP").as_bytes());
    let started = Instant::now();
    let (answer, sent) = stream_huge(gw.mllp, head, filler.clone(), mllp_answer_complete).await;
    let took = started.elapsed();
    let growth = gw.status("VmHWM").saturating_sub(baseline);
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(
        text.contains("MSA|AE|HUGE-MLLP"),
        "AE for the frame: {text:?}"
    );
    assert_eq!(err_code(&text), "104");
    figures.push(format!(
        "MLLP 100 MB frame: AE 104 after {} sent in {took:?}, peak RSS growth {}",
        mib(sent),
        mib(growth)
    ));
    assert!(growth <= 64 * MIB, "{}", figures.last().unwrap());

    // HTTP, with Content-Length (refused before reading) and chunked.
    for chunked in [false, true] {
        let baseline = gw.status("VmRSS");
        gw.reset_peak();
        let length = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {HUNDRED_MB}")
        };
        let head = format!(
            "POST /fhir/Observation HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
             Content-Type: application/fhir+json\r\n{length}\r\n\r\n"
        )
        .into_bytes();
        let chunk = if chunked {
            let mut c = format!("{:x}\r\n", filler.len()).into_bytes();
            c.extend_from_slice(&filler);
            c.extend_from_slice(b"\r\n");
            c
        } else {
            filler.clone()
        };
        let started = Instant::now();
        let (answer, sent) = stream_huge(gw.http, head, chunk, http_answer_complete).await;
        let took = started.elapsed();
        let growth = gw.status("VmHWM").saturating_sub(baseline);
        let text = String::from_utf8_lossy(&answer).to_string();
        assert!(text.starts_with("HTTP/1.1 413 "), "413: {text:?}");
        assert!(
            text.contains("too-long"),
            "OperationOutcome too-long: {text:?}"
        );
        figures.push(format!(
            "HTTP 100 MB body ({}): 413 after {} sent in {took:?}, peak RSS growth {}",
            if chunked { "chunked" } else { "Content-Length" },
            mib(sent),
            mib(growth)
        ));
        assert!(growth <= 64 * MIB, "{}", figures.last().unwrap());
    }
    // Still serving.
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("HUGE-AFTER")).await), "AA");
    eprintln!(
        "huge inputs (baseline RSS {}):\n  {}",
        mib(gw.status("VmRSS")),
        figures.join("\n  ")
    );
    gw.stop().await;
}

// ------------------------------------------------------------ (e) TLS flood

/// A TLS client that trusts no CA: it aborts once it sees the server's
/// certificate, after the gateway has done the expensive part.
fn distrusting_client() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

/// One bad handshake of kind `i % 3`: connect and close at once; send
/// garbage; or start a real handshake and abort it.
async fn bad_handshake(addr: SocketAddr, i: usize) {
    match i % 3 {
        0 => drop(TcpStream::connect(addr).await.unwrap()),
        1 => {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let garbage: Vec<u8> = (0..512u32).map(|k| (k * 7 + i as u32) as u8).collect();
            let _ = s.write_all(&garbage).await;
            let start = Instant::now();
            let _ = closed_by(&mut s, start, start + Duration::from_secs(10)).await;
        }
        _ => {
            let r = crate::certs::connect_tls(addr, distrusting_client()).await;
            assert!(r.is_err(), "a client trusting no CA cannot complete");
        }
    }
}

/// A flood of 2,000 bad handshakes (open/close, garbage, aborted real
/// handshakes; 1,000 a second, from 16 tasks) for 2 s, while a real mTLS sender opens a new session every 100 ms: the
/// sender is served throughout, no connection leaks, and the audit trail
/// gets one `tls.client-rejected` record for the flooding peer plus one
/// summary counting the rest — not one record per refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_flood_keeps_serving_and_audits_refusals_at_a_bounded_rate() {
    const BAD: usize = 2000;
    const EVERY: Duration = Duration::from_millis(1);
    const WORKERS: usize = 16;
    let pki = crate::certs::Pki::generate();
    let gw = crate::certs::start_tls_gateway(&pki, true).await;
    let addr = gw.addr();
    let good = crate::certs::client_config(&pki, Some(&pki.lab), crate::certs::MODERN);

    let stop = Arc::new(AtomicBool::new(false));
    let stop_sender = stop.clone();
    let sender = tokio::spawn(async move {
        let mut times = Vec::new();
        let mut n = 0;
        while !stop_sender.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("TLSF-{n}");
            let t = Instant::now();
            let stream = crate::certs::connect_tls(addr, good.clone())
                .await
                .expect("the real sender completes its handshake during the flood");
            let ack = crate::certs::MllpStream::new(stream)
                .roundtrip(&oru(&id))
                .await;
            times.push(t.elapsed());
            assert_eq!(ack_code(&ack), "AA", "{ack:?}");
            assert_eq!(field(&ack, "MSA", 2), id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        times
    });
    let flood_start = Instant::now();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let started = started.clone();
            tokio::spawn(async move {
                loop {
                    let i = started.fetch_add(1, Ordering::Relaxed);
                    if i >= BAD {
                        break;
                    }
                    let at = flood_start + EVERY * i as u32;
                    tokio::time::sleep_until(at.into()).await;
                    bad_handshake(addr, i).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let bad = BAD;
    let flood_took = flood_start.elapsed();
    // Let the sender run on a little after the flood.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = sender.await.unwrap();
    let sent = latencies.len();

    crate::certs::eventually("every bad handshake to be counted", || {
        gw.handshake_failures() >= bad as u64
    })
    .await;
    let failures = gw.handshake_failures();
    assert_eq!(failures, bad as u64, "only the bad handshakes fail");
    let metrics = gw.gateway.metrics().clone();
    crate::certs::eventually("no connection left open", || {
        metrics.connections_open.load(Ordering::Relaxed) == 0
    })
    .await;
    let (p50, p99, pmax) = percentiles(&mut latencies);
    assert!(p99 <= Duration::from_secs(2), "real sender p99 {p99:?}");
    assert_eq!(gw.journal_len(), sent, "only the real sender's messages");
    let suppressed_metric = metrics
        .tls_refusal_audits_suppressed
        .load(Ordering::Relaxed);

    // The summary is written at the latest at shutdown.
    let journal = gw.journal_path();
    let crate::certs::TlsGateway { gateway, dir } = gw;
    gateway.shutdown().await;
    let db =
        rusqlite::Connection::open_with_flags(&journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = db
        .prepare("SELECT action, source, outcome FROM audit WHERE action LIKE 'tls.%' ORDER BY seq")
        .unwrap();
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let individual = rows.iter().filter(|r| r.0 == "tls.client-rejected").count();
    let summaries: Vec<&(String, String, String)> = rows
        .iter()
        .filter(|r| r.0 == "tls.client-rejected-summary")
        .collect();
    assert_eq!(
        individual, 1,
        "one record for the one flooding IP within the minute: {rows:?}"
    );
    assert_eq!(summaries.len(), 1, "{rows:?}");
    assert_eq!(
        summaries[0].2,
        format!("suppressed:{}", bad - 1),
        "the summary counts every refusal not recorded one by one: {rows:?}"
    );
    assert_eq!(summaries[0].1, "peers:1", "{rows:?}");
    assert_eq!(suppressed_metric, (bad - 1) as u64);
    drop(dir);
    eprintln!(
        "TLS handshake flood: {bad} bad handshakes ({WORKERS} at a time) in {flood_took:?} ({:.0}/s); \
         real sender {sent} new mTLS sessions + ACK, p50 {p50:?} p99 {p99:?} max {pmax:?}; \
         audit: {} tls.* records (was one per refusal)",
        bad as f64 / flood_took.as_secs_f64(),
        rows.len()
    );
}
