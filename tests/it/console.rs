//! The web console (`/console/`) and its live alert stream
//! (`GET /api/v1/alerts/stream`) through the running gateway, ending in a
//! real headless Chromium driven over WebDriver (chromedriver + fantoccini).
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`,
//! installed on demand with apt-get when missing and the test runs as root;
//! when they cannot be had the browser test FAILS with the reason. The
//! screenshots of the main pages are kept as test artefacts under
//! `<target dir>/console-screenshots/`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};
use switchboard::app::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::census::{OPERATOR_TOKEN, READER_TOKEN, api, write_config};
use crate::fhir::request;
use crate::support::{Mllp, ack_code, note};

const STAFF: &str = r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = { matrix = "@rn-a:localhost" }

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = { matrix = "@rn-b:localhost" }

[[members]]
id = "sup"
display = "Supervisor (fictional)"
contacts = { matrix = "@sup:localhost" }

[[roles]]
name = "charge-nurse"

[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "rn-b"
"#;

// Tier timeouts far beyond the test: tiers move only when someone declines.
const MAPPING: &str = r#"
[[rules]]
name = "critical-potassium"
match = { kind = "result", codes = ["LN|2823-3"], flags = ["HH", "LL"] }
route = { role = "charge-nurse", priority = "stat", escalation = "slow", dedup_window_secs = 600, dedup_key = ["patient", "code"] }

[escalations.slow]
tiers = [
  { route = true, timeout_secs = 600 },
  { person = "sup", timeout_secs = 600 },
  { failsafe = true, timeout_secs = 600 },
]
"#;

/// An operator who may read and acknowledge alerts, but not on behalf.
const CLERK_TOKEN: &str = "clerk-token-for-tests";

/// A gateway with the ward roster, the potassium rule, the operator
/// `coordinator` (`OPERATOR_TOKEN`) holding the alert permissions and the
/// `clerk` without `alerts:on-behalf`; no backends, so nothing but people
/// moves an alert.
async fn start(dir: &Path) -> Gateway {
    std::fs::create_dir_all(dir.join("rosters")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("rosters/ward.toml"), STAFF).unwrap();
    std::fs::write(dir.join("mappings/alerts.toml"), MAPPING).unwrap();
    let path = write_config(dir, "[reload]\nwatch_files = false\n");
    let text = std::fs::read_to_string(&path).unwrap();
    let granted = text.replace(
        "\"rosters:write\"]",
        "\"rosters:write\", \"alerts:read\", \"alerts:ack\", \"alerts:on-behalf\"]",
    );
    assert_ne!(
        text, granted,
        "the coordinator's permissions were not extended"
    );
    let clerk = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        CLERK_TOKEN.as_bytes(),
    ));
    let granted = format!(
        "{granted}\n[[operators]]\nname = \"clerk\"\ntokens_sha256 = [\"{clerk}\"]\n\
         permissions = [\"alerts:read\", \"alerts:ack\"]\n"
    );
    std::fs::write(&path, granted).unwrap();
    Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap()
}

/// A critical potassium result for patient `mrn`, observed now.
fn oru(id: &str, mrn: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|{now}||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
PID|1||{mrn}^^^HOSP^MR||ZZCANARY^PHI\r\
PV1|1|I|ICU^101^A^HOSP\r\
OBR|1|PL{id}|FL{id}|2823-3^Potassium^LN|||{now}\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r"
    )
}

async fn send(g: &Gateway, msg: &str) {
    let mut c = Mllp::connect(g.mllp_addr()).await;
    assert_eq!(ack_code(&c.roundtrip(msg).await), "AA");
}

async fn alert(g: &Gateway, id: i64) -> Value {
    let r = api(
        g,
        "GET",
        &format!("/api/v1/alerts/{id}"),
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

// ---------------------------------------------------------------------------
// The assets and the stream over plain HTTP.

#[tokio::test]
async fn console_assets_are_served_by_the_gateway_with_strict_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    for (path, kind, needle) in [
        (
            "/console/",
            "text/html; charset=utf-8",
            "<title>Switchboard console</title>",
        ),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "/alerts/stream",
        ),
        (
            "/console/console.css",
            "text/css; charset=utf-8",
            ".visually-hidden",
        ),
    ] {
        let r = request(g.http_addr(), "GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(needle),
            "{path} lacks {needle:?}"
        );
        for (k, v) in switchboard::console::SECURITY_HEADERS {
            assert_eq!(r.header(k), Some(v), "{path}: {k}");
        }
    }
    let csp = switchboard::console::CSP;
    assert!(csp.starts_with("default-src 'self';") && csp.contains("script-src 'self';"));
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"));
    // The bare path redirects; anything else under /console/ is a 404 with
    // the same headers.
    let r = request(g.http_addr(), "GET", "/console", &[], b"").await;
    assert_eq!((r.status, r.header("location")), (308, Some("/console/")));
    let r = request(g.http_addr(), "GET", "/console/../api/v1/alerts", &[], b"").await;
    assert_ne!(r.status, 200);
    let r = request(g.http_addr(), "GET", "/console/secrets.txt", &[], b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    g.shutdown().await;
}

#[tokio::test]
async fn alert_stream_needs_a_token_with_alerts_read() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let path = "/api/v1/alerts/stream";
    let r = request(g.http_addr(), "GET", path, &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"switchboard\"")
    );
    let r = request(
        g.http_addr(),
        "GET",
        path,
        &[("Authorization", "Bearer not-a-known-token")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    // The reader operator holds oncall:read only.
    let reader = format!("Bearer {READER_TOKEN}");
    let r = request(
        g.http_addr(),
        "GET",
        path,
        &[("Authorization", &reader)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["error"],
        "this operator lacks the permission alerts:read"
    );
    g.shutdown().await;
}

/// A raw SSE client: HTTP/1.1 over TCP, chunked body decoded by hand, so
/// the framing on the wire is what is asserted.
struct SseReader {
    sock: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    status: u16,
    headers: Vec<(String, String)>,
}

impl SseReader {
    async fn open(addr: std::net::SocketAddr, token: &str) -> SseReader {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /api/v1/alerts/stream HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let split = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
                .await
                .expect("stream headers within 10 s")
                .unwrap();
            assert!(n > 0, "closed before the headers");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let raw = raw[split + 4..].to_vec();
        SseReader {
            sock,
            raw,
            body: Vec::new(),
            status,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn dechunk(&mut self) {
        while let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..nl]).unwrap(), 16)
                .expect("a chunk size");
            assert_ne!(size, 0, "the stream ended");
            if self.raw.len() < nl + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[nl + 2..nl + 2 + size]);
            self.raw.drain(..nl + 2 + size + 2);
        }
    }

    /// The next event block (comments skipped), exactly as framed.
    async fn next_block(&mut self, wait: Duration) -> String {
        self.try_next_block(wait)
            .await
            .unwrap_or_else(|| panic!("no event within {wait:?}"))
    }

    /// Like [`Self::next_block`], `None` when nothing comes within `wait`.
    async fn try_next_block(&mut self, wait: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            self.dechunk();
            while let Some(p) = self.body.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.body[..p].to_vec()).unwrap();
                self.body.drain(..p + 2);
                if !block.lines().all(|l| l.starts_with(':')) {
                    return Some(block);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(until, self.sock.read(&mut chunk))
                .await
                .ok()?
                .unwrap();
            assert!(n > 0, "the stream closed");
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event's JSON data, asserting it is a one-line `snapshot`.
    async fn next_snapshot(&mut self, wait: Duration) -> (String, Value) {
        let block = self.next_block(wait).await;
        let data = block
            .strip_prefix("event: snapshot\ndata: ")
            .unwrap_or_else(|| panic!("not a snapshot event: {block:?}"));
        assert!(!data.contains('\n'), "{block:?}");
        (data.to_string(), serde_json::from_str(data).unwrap())
    }
}

#[tokio::test]
async fn alert_stream_sends_a_snapshot_then_a_new_one_after_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let mut s = SseReader::open(g.http_addr(), OPERATOR_TOKEN).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("transfer-encoding"), Some("chunked"));
    // First: the open alerts, exactly the body of GET /api/v1/alerts.
    let (text, v) = s.next_snapshot(Duration::from_secs(5)).await;
    assert_eq!(v, json!({ "alerts": [] }));
    let list = api(&g, "GET", "/api/v1/alerts", Some(OPERATOR_TOKEN), "").await;
    assert_eq!(text.as_bytes(), &list.body[..]);

    // A critical result: a new snapshot arrives by itself.
    send(&g, &oru("S1", "MRN7")).await;
    let t = Instant::now();
    let (text, v) = s.next_snapshot(Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let a = &v["alerts"][0];
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        (&a["priority"], &a["state"]),
        (&json!("stat"), &json!("notifying"))
    );
    assert_eq!(a["told"], json!(["rn-a"]));
    let list = api(&g, "GET", "/api/v1/alerts", Some(OPERATOR_TOKEN), "").await;
    assert_eq!(text.as_bytes(), &list.body[..]);
    // No PHI in what the board is fed.
    assert!(
        !text.contains("ZZCANARY") && !text.contains("MRN7"),
        "{text}"
    );

    // An acknowledgement on behalf through the API: the next snapshot shows it.
    let id = a["id"].as_i64().unwrap();
    let r = api(
        &g,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(OPERATOR_TOKEN),
        r#"{"action":"accept","member":"rn-b","on_behalf":true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, v) = s.next_snapshot(Duration::from_secs(5)).await;
    let a = &v["alerts"][0];
    assert_eq!(a["state"], "accepted");
    assert_eq!(
        a["accepted_by"],
        "rn-b (on behalf, by operator:coordinator)"
    );
    assert_eq!(a["on_behalf_by"], "operator:coordinator");

    // Resolved: it leaves the board.
    let r = api(
        &g,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(OPERATOR_TOKEN),
        r#"{"action":"resolve","member":"rn-b"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, v) = s.next_snapshot(Duration::from_secs(5)).await;
    assert_eq!(v, json!({ "alerts": [] }));

    // Shutdown ends the stream instead of waiting on it.
    let t = Instant::now();
    g.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown waited on an open alert stream: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn alert_stream_coalesces_a_burst_and_stays_quiet_while_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let mut s = SseReader::open(g.http_addr(), OPERATOR_TOKEN).await;
    let (_, v) = s.next_snapshot(Duration::from_secs(5)).await;
    assert_eq!(v, json!({ "alerts": [] }));
    let t = Instant::now();
    // Twelve critical results for twelve patients, as fast as the ACKs come.
    let mut c = Mllp::connect(g.mllp_addr()).await;
    for i in 0..12 {
        let ack = c
            .roundtrip(&oru(&format!("C{i}"), &format!("MRN{}", 100 + i)))
            .await;
        assert_eq!(ack_code(&ack), "AA");
    }
    let mut snapshots = 0u32;
    loop {
        let (_, v) = s.next_snapshot(Duration::from_secs(20)).await;
        snapshots += 1;
        if v["alerts"].as_array().unwrap().len() == 12 {
            break;
        }
    }
    // One journal read per 250 ms at most, whatever the desk does.
    let elapsed = t.elapsed();
    let bound = 1 + (elapsed.as_millis() / MIN_INTERVAL_MS) as u32;
    assert!(
        snapshots <= bound,
        "{snapshots} snapshots in {elapsed:?} (at most {bound})"
    );
    // The desk keeps running (the router wakes every 5 s), but nothing
    // changed: nothing is sent.
    let quiet = s.try_next_block(Duration::from_secs(6)).await;
    assert_eq!(quiet, None);
    g.shutdown().await;
}

/// `alert_stream::MIN_INTERVAL` (private to the crate).
const MIN_INTERVAL_MS: u128 = 250;

// ---------------------------------------------------------------------------
// A real headless Chromium.

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target dir>/console-screenshots`: the test artefacts.
fn screenshots_dir() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) if Path::new(t).is_absolute() => PathBuf::from(t),
        Some(t) => manifest_dir().join(t),
        None => manifest_dir().join("target"),
    };
    target.join("console-screenshots")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The browser binary itself (Debian's `/usr/bin/chromium` is a wrapper
/// script around it) and chromedriver.
fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    let chromium = if real.is_file() {
        real
    } else {
        on_path("chromium")?
    };
    Some((chromium, on_path("chromedriver")?))
}

fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(format!(
        "{cmd:?} failed ({}):\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// Chromium and chromedriver, installed with apt-get when missing (once
/// per test process).
fn browser_programs() -> Result<(PathBuf, PathBuf), String> {
    static READY: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            if let Some(found) = find_browser() {
                return Ok(found);
            }
            let uid = std::process::Command::new("id")
                .arg("-u")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            if uid != "0" {
                return Err(
                    "chromium and chromedriver are not installed and this test does not run as \
                     root to install them: apt-get install chromium chromium-driver"
                        .into(),
                );
            }
            if on_path("apt-get").is_none() {
                return Err(
                    "chromium and chromedriver are not installed and there is no apt-get".into(),
                );
            }
            let started = Instant::now();
            let lock = "DPkg::Lock::Timeout=600";
            run(std::process::Command::new("apt-get").args(["-o", lock, "update", "-qq"]))?;
            run(std::process::Command::new("apt-get")
                .args([
                    "-o",
                    lock,
                    "install",
                    "-y",
                    "-qq",
                    "chromium",
                    "chromium-driver",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
            note(&format!(
                "console: chromium and chromium-driver installed in {:?}",
                started.elapsed()
            ));
            find_browser().ok_or_else(|| {
                "apt-get installed chromium and chromium-driver, yet chromium or chromedriver \
                 is still not found"
                    .to_string()
            })
        })
        .clone()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Browser {
    client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver on a free port and a headless Chromium session.
async fn launch(logs: &Path) -> Browser {
    let (chromium, chromedriver) = tokio::task::spawn_blocking(browser_programs)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("a headless Chromium is required for this test: {e}"));
    let port = free_port();
    let driver = tokio::process::Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .arg(format!(
            "--log-path={}",
            logs.join("chromedriver.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < until,
                    "no WebDriver session from {} within 30 s: {e} (see {})",
                    chromedriver.display(),
                    logs.join("chromedriver.log").display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Browser {
        client,
        driver,
        _profile: profile,
    }
}

/// Every board row as the page shows it.
async fn board(c: &Client) -> Vec<Value> {
    let script = r#"
        return Array.from(document.querySelectorAll('#alert-rows tr')).map((tr) => ({
            id: Number(tr.dataset.alertId),
            state: tr.dataset.state,
            tier: Number(tr.dataset.tier),
            class: tr.className,
            cells: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-field]'))
                .map((td) => [td.dataset.field, td.textContent])),
            members: Array.from(tr.querySelectorAll('select option')).map((o) => o.value),
        }));
    "#;
    let v = c.execute(script, vec![]).await.unwrap();
    v.as_array().cloned().unwrap_or_default()
}

/// Polls the board until `f` holds (`within`), returning it.
async fn board_until(
    c: &Client,
    what: &str,
    within: Duration,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let until = Instant::now() + within;
    loop {
        let rows = board(c).await;
        if f(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < until,
            "{what}: not on the board within {within:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn row(rows: &[Value], id: i64) -> &Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row for alert {id}: {rows:#?}"))
}

/// Waits (10 s) until the element `css` is not hidden and its text is `want`.
async fn wait_text(c: &Client, css: &str, want: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 return e && { hidden: e.closest('[hidden]') !== null, text: e.textContent };",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if v["hidden"] == false && v["text"] == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "{css}: want {want:?} shown, have {v} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Saves a screenshot and checks it is a real, non-empty PNG.
async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    assert_eq!(&png[12..16], b"IHDR", "{name}");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 800 && height >= 400, "{name}: {width}x{height}");
    assert!(png.len() > 5_000, "{name}: {} bytes", png.len());
    let path = dir.join(name);
    std::fs::write(&path, &png).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn choose_member(c: &Client, id: i64, member: &str) {
    c.find(Locator::Css(&format!(
        "tr[data-alert-id='{id}'] select[data-role='member']"
    )))
    .await
    .unwrap()
    .select_by_value(member)
    .await
    .unwrap_or_else(|e| panic!("choose {member} for alert {id}: {e}"));
}

async fn sign_in(c: &Client, token: &str) {
    let input = c.find(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    click(c, "#sign-in-button").await;
}

async fn flow(c: &Client, g: &Gateway, shots: &Path) {
    let base = format!("http://{}", g.http_addr());
    c.goto(&format!("{base}/console/")).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "Switchboard console");
    assert!(
        c.find(Locator::Id("token"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    screenshot(c, shots, "sign-in.png").await;

    // A wrong token: the API's answer is shown in the page, nothing stored.
    sign_in(c, "not-a-known-token").await;
    wait_text(
        c,
        "#sign-in-error",
        "a valid operator bearer token is required",
    )
    .await;
    assert_eq!(js(c, "return sessionStorage.length").await, json!(0));

    // The coordinator signs in: the board opens, live.
    sign_in(c, OPERATOR_TOKEN).await;
    wait_text(c, "#connection", "Live").await;
    assert!(
        c.find(Locator::Id("empty"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    // The token is in this tab's sessionStorage only: not in the URL, not
    // in localStorage, not in a cookie.
    let url = c.current_url().await.unwrap();
    assert_eq!(url.as_str(), format!("{base}/console/"));
    assert_eq!(
        js(
            c,
            "return sessionStorage.getItem('switchboard.operatorToken')"
        )
        .await,
        json!(OPERATOR_TOKEN)
    );
    assert_eq!(js(c, "return localStorage.length").await, json!(0));
    assert_eq!(js(c, "return document.cookie").await, json!(""));
    // Marks this page: if it were reloaded, the mark would be gone.
    js(c, "window.boardMark = 'same page'; return null").await;

    // A critical result arrives: the board shows it without a reload.
    send(g, &oru("B1", "MRN7")).await;
    let t = Instant::now();
    let rows = board_until(c, "the STAT alert", Duration::from_secs(10), |r| {
        r.len() == 1
    })
    .await;
    let seen_after = t.elapsed();
    assert!(
        seen_after < Duration::from_secs(5),
        "the board took {seen_after:?}"
    );
    let first = rows[0]["id"].as_i64().unwrap();
    let r = row(&rows, first);
    assert_eq!(r["cells"]["priority"], "STAT");
    assert_eq!(r["class"], "stat");
    assert_eq!(r["cells"]["rule"], "critical-potassium");
    assert_eq!(r["state"], "notifying");
    assert_eq!(r["cells"]["tier"], "1");
    assert_eq!(r["cells"]["told"], "rn-a");
    assert_eq!(r["cells"]["accepted"], "\u{2014}");
    assert_eq!(r["members"], json!(["rn-a"]));
    let countdown = r["cells"]["deadline"].as_str().unwrap();
    assert!(
        countdown.starts_with("in 9:") || countdown.starts_with("in 10:"),
        "{countdown}"
    );
    // The live region announces it; no patient data on the board.
    wait_text(
        c,
        "#announcer",
        &format!("New STAT alert {first}: critical-potassium."),
    )
    .await;
    let page = js(c, "return document.body.innerText").await;
    assert!(
        !page.as_str().unwrap().contains("ZZCANARY") && !page.as_str().unwrap().contains("MRN7"),
        "{page}"
    );
    assert_eq!(js(c, "return window.boardMark").await, json!("same page"));
    screenshot(c, shots, "board-open-stat.png").await;

    // Acknowledge on behalf of the notified member.
    choose_member(c, first, "rn-a").await;
    click(
        c,
        &format!("tr[data-alert-id='{first}'] button[data-action='on-behalf']"),
    )
    .await;
    let rows = board_until(c, "the acceptance", Duration::from_secs(10), |r| {
        r.iter()
            .any(|x| x["id"] == first && x["state"] == "accepted")
    })
    .await;
    let r = row(&rows, first);
    assert_eq!(
        r["cells"]["accepted"],
        "rn-a (on behalf, by operator:coordinator)"
    );
    assert_eq!(r["class"], "stat accepted");
    let v = alert(g, first).await;
    assert_eq!(v["state"], "accepted");
    assert_eq!(v["on_behalf_by"], "operator:coordinator");
    assert_eq!(
        v["accepted_by"],
        "rn-a (on behalf, by operator:coordinator)"
    );
    assert_eq!(
        v["timeline"].as_array().unwrap().last().unwrap()["by"],
        "operator:coordinator"
    );
    assert_eq!(js(c, "return window.boardMark").await, json!("same page"));
    screenshot(c, shots, "board-accepted.png").await;

    // A second alert (another patient); rn-a declines: tier 2 at once.
    send(g, &oru("B2", "MRN8")).await;
    let rows = board_until(c, "the second alert", Duration::from_secs(10), |r| {
        r.len() == 2
    })
    .await;
    let second = rows
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .find(|id| *id != first)
        .unwrap();
    assert_eq!(row(&rows, second)["cells"]["tier"], "1");
    choose_member(c, second, "rn-a").await;
    click(
        c,
        &format!("tr[data-alert-id='{second}'] button[data-action='decline']"),
    )
    .await;
    let rows = board_until(c, "the escalation", Duration::from_secs(10), |r| {
        r.iter().any(|x| x["id"] == second && x["tier"] == 1)
    })
    .await;
    let r = row(&rows, second);
    assert_eq!(r["cells"]["tier"], "2");
    assert_eq!(r["cells"]["told"], "rn-a, sup");
    assert_eq!(r["members"], json!(["rn-a", "sup"]));
    let v = alert(g, second).await;
    assert_eq!(v["tier"], 1);
    assert_eq!(v["told"], json!(["rn-a", "sup"]));
    assert_eq!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["what"] == "declined by rn-a")
            .count(),
        1
    );

    // The supervisor, told in tier 2, accepts.
    choose_member(c, second, "sup").await;
    click(
        c,
        &format!("tr[data-alert-id='{second}'] button[data-action='accept']"),
    )
    .await;
    board_until(c, "sup's acceptance", Duration::from_secs(10), |r| {
        r.iter().any(|x| {
            x["id"] == second && x["state"] == "accepted" && x["cells"]["accepted"] == "sup"
        })
    })
    .await;
    assert_eq!(alert(g, second).await["accepted_by"], "sup");
    assert_eq!(js(c, "return window.boardMark").await, json!("same page"));

    // Signing out forgets the token; an operator without alerts:read is
    // told why in the page.
    click(c, "#sign-out").await;
    assert_eq!(js(c, "return sessionStorage.length").await, json!(0));
    sign_in(c, READER_TOKEN).await;
    wait_text(
        c,
        "#sign-in-error",
        "this operator lacks the permission alerts:read",
    )
    .await;

    // An operator without alerts:on-behalf: the refusal is shown in the
    // page and nothing changes.
    sign_in(c, CLERK_TOKEN).await;
    wait_text(c, "#connection", "Live").await;
    board_until(c, "the clerk's board", Duration::from_secs(10), |r| {
        r.len() == 2
    })
    .await;
    choose_member(c, second, "rn-a").await;
    click(
        c,
        &format!("tr[data-alert-id='{second}'] button[data-action='on-behalf']"),
    )
    .await;
    wait_text(
        c,
        "#board-error-text",
        &format!(
            "Alert {second}: could not acknowledge on behalf of rn-a: \
             this operator lacks the permission alerts:on-behalf"
        ),
    )
    .await;
    assert_eq!(alert(g, second).await["accepted_by"], "sup");
    click(c, "#board-error-dismiss").await;
    assert_eq!(
        js(c, "return document.getElementById('board-error').hidden").await,
        json!(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_signs_in_sees_alerts_live_and_acknowledges_on_behalf() {
    let dir = tempfile::tempdir().unwrap();
    let shots = screenshots_dir();
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["sign-in.png", "board-open-stat.png", "board-accepted.png"] {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let g = start(dir.path()).await;
    let mut browser = launch(&shots).await;
    let t = Instant::now();
    let outcome = AssertUnwindSafe(flow(&browser.client, &g, &shots))
        .catch_unwind()
        .await;
    let took = t.elapsed();
    // Always end the browser and the gateway, also after a failed step.
    let _ = browser.client.clone().close().await;
    let _ = browser.driver.start_kill();
    let _ = browser.driver.wait().await;
    g.shutdown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    note(&format!(
        "console: browser flow took {took:?}; screenshots in {}",
        shots.display()
    ));
    assert!(
        took < Duration::from_secs(60),
        "the browser flow took {took:?}"
    );
}
