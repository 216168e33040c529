//! The Matrix backend against a real Synapse homeserver on loopback (PyPI
//! `matrix-synapse`, installed on demand by `tests/matrix/setup.sh` into
//! `target/interop/synapse-venv`; AGPL, so only ever a separate process).
//! The gateway is the real binary (its password and store passphrase come
//! from its environment); the test's own matrix-sdk client, logged in as
//! the recipient with its own store and device, is a second, independent
//! end of the end-to-end encryption: it joins, decrypts the alert, sends a
//! read receipt and reacts or replies, and the gateway turns that into the
//! acknowledgement.
//!
//! Cases: a direct room (read receipt, ✅ accepts, no tier 2 after the
//! timeout; a restart keeps the device, the room and the sync position); a
//! reply "decline" escalates at once; rooms per role (an unencrypted room
//! is refused and escalates, an encrypted one accepts on behalf, an invite
//! to an unconfigured room is not joined); a crash right after sending
//! resends with the same transaction id and pages once.
//!
//! A missing `python3`, or an install that fails (PyPI unreachable), FAILS
//! these tests with the reason: they never pass silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::delivery::{free_port, rows};
use crate::fhir::{request, try_request};
use crate::support::{Mllp, ack_code};

const BOT: &str = "@switchboard:localhost";
const BOT_PASSWORD: &str = "bot-password-for-tests";
const STORE_PASSPHRASE: &str = "matrix-store-passphrase-for-tests";
const PEER_PASSWORD: &str = "peer-password-for-tests";
const OPERATOR_TOKEN: &str = "matrix-operator-token-for-tests";
/// PHI the HL7 message carries only in fields outside `clinician-secure`
/// (address, phone) or in notes, where the scrubber removes them.
const OUTSIDE_PROFILE: [&str; 4] = ["(555)", "010-9999", "CANARY ROAD", "ZZVILLE"];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target dir>/interop`: outside the repository's tracked files.
fn interop_root() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) if Path::new(t).is_absolute() => PathBuf::from(t),
        Some(t) => manifest_dir().join(t),
        None => manifest_dir().join("target"),
    };
    target.join("interop")
}

/// Installs Synapse (once per test process; setup.sh locks across
/// processes) and returns the venv's python.
fn synapse_python() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let script = manifest_dir().join("tests/matrix/setup.sh");
            let started = Instant::now();
            let out = std::process::Command::new("sh")
                .arg(&script)
                .arg(interop_root())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if started.elapsed() > Duration::from_secs(2) {
                eprintln!("matrix: Synapse installed in {:?}", started.elapsed());
            }
            Ok(interop_root().join("synapse-venv/bin/python"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("Synapse (PyPI matrix-synapse) is required for this test: {e}"))
}

/// A Synapse homeserver on a free loopback port, killed on drop.
struct Synapse {
    child: tokio::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Synapse {
    async fn start() -> Synapse {
        let python = tokio::task::spawn_blocking(synapse_python).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let seed: [u8; 32] = rand::random();
        use base64::Engine as _;
        std::fs::write(
            d.join("signing.key"),
            format!(
                "ed25519 a_test {}\n",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
            ),
        )
        .unwrap();
        // Only the access log (who asked what, as which user) and warnings.
        std::fs::write(
            d.join("log.yaml"),
            format!(
                "version: 1\nformatters:\n  plain:\n    format: '%(asctime)s %(name)s %(levelname)s %(message)s'\n\
handlers:\n  file:\n    class: logging.FileHandler\n    filename: {}\n    formatter: plain\n\
loggers:\n  synapse.access.http:\n    level: INFO\nroot:\n  level: WARNING\n  handlers: [file]\n\
disable_existing_loggers: false\n",
                d.join("homeserver.log").display()
            ),
        )
        .unwrap();
        let limit = "{per_second: 1000, burst_count: 1000}";
        std::fs::write(
            d.join("homeserver.yaml"),
            format!(
                "server_name: \"localhost\"\n\
listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
database:\n  name: sqlite3\n  args:\n    database: {db}\n\
log_config: {log}\nmedia_store_path: {media}\nsigning_key_path: {key}\n\
trusted_key_servers: []\nsuppress_key_server_warning: true\nreport_stats: false\n\
enable_registration: true\nenable_registration_without_verification: true\n\
macaroon_secret_key: \"test-macaroon-secret\"\nform_secret: \"test-form-secret\"\n\
rc_message: {limit}\nrc_registration: {limit}\n\
rc_login:\n  address: {limit}\n  account: {limit}\n  failed_attempts: {limit}\n\
rc_joins:\n  local: {limit}\n  remote: {limit}\n\
rc_invites:\n  per_room: {limit}\n  per_user: {limit}\n  per_issuer: {limit}\n",
                db = d.join("homeserver.db").display(),
                log = d.join("log.yaml").display(),
                media = d.join("media").display(),
                key = d.join("signing.key").display(),
            ),
        )
        .unwrap();
        let out = std::fs::File::create(d.join("stdout.log")).unwrap();
        let child = tokio::process::Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(d.join("homeserver.yaml"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start Synapse");
        let mut s = Synapse { child, port, dir };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) =
                try_request(s.addr(), "GET", "/_matrix/client/versions", &[], b"").await
                && r.status == 200
            {
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("Synapse exited ({status}) before answering:\n{}", s.tail());
            }
            assert!(
                Instant::now() < until,
                "Synapse did not answer within 60 s:\n{}",
                s.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registers a user through the client-server API.
    async fn register(&self, user: &str, password: &str) {
        let body = json!({
            "username": user, "password": password,
            "auth": {"type": "m.login.dummy"}, "inhibit_login": true
        });
        let r = request(
            self.addr(),
            "POST",
            "/_matrix/client/v3/register",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "register {user}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    /// Synapse's access log: one line per request, with the user.
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "homeserver.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {f}\n"));
            out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

const WARD: &str = r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = { matrix = "@alice:localhost" }

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
member = "sup"
"#;

/// ICU critical results to rn-a, then the failsafe after `tier_secs`.
fn mapping(tier_secs: u64) -> String {
    format!(
        r#"
[[rules]]
name = "icu-critical"
match = {{ kind = "result", flags = ["HH"], units = ["ICU"] }}
route = {{ person = "rn-a", priority = "stat", escalation = "matrix" }}

[escalations.matrix]
tiers = [{{ route = true, timeout_secs = {tier_secs} }}, {{ failsafe = true, timeout_secs = 600 }}]
"#
    )
}

/// Roster, mapping and the gateway's configuration with the matrix backend.
fn write_config(dir: &Path, homeserver: &str, roster: &str, mapping: &str) -> PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("rosters/ward.toml"), roster).unwrap();
    std::fs::write(dir.join("mappings/m.toml"), mapping).unwrap();
    let token = hex::encode(Sha256::digest(OPERATOR_TOKEN.as_bytes()));
    let text = format!(
        r#"rosters_dir = "rosters"
mappings_dir = "mappings"

[storage]
data_dir = "data"

[mllp]
listen = "127.0.0.1:0"

[http]
listen = "127.0.0.1:0"

[reload]
watch_files = false

[[senders]]
name = "lab"
msh3 = ["*"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]

[[operators]]
name = "coordinator"
tokens_sha256 = ["{token}"]
permissions = ["alerts:read"]

[[backends]]
name = "mx"
kind = "matrix"
contact = "matrix"
profile = "clinician-secure"
template = "{{{{ preview }}}} | MRN {{{{ mrn }}}} | {{{{ value }}}} {{{{ units }}}} | {{{{ notes }}}}"
homeserver = "{homeserver}"
user = "{BOT}"
password_env = "SB_TEST_MATRIX_PASSWORD"
store_passphrase_env = "SB_TEST_MATRIX_STORE"
device_name = "switchboard (tests)"
retry_initial_ms = 300
retry_max_secs = 2
max_attempts = 10
"#
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A potassium result from ICU, with PHI canaries outside the profile.
fn oru(id: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|{now}||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
PID|1||ZZMRN{id}^^^HOSP^MR||ZZCANARY^PHIPERSON||19700101|F|||1 Canary Road^^Zzville||(555)010-9999\r\
PV1|1|I|ICU^12^A^HOSP\r\
OBR|1|PL{id}|FL{id}|2823-3^Potassium^LN|||{now}\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r\
NTE|1||Patient ZZCANARY PHIPERSON called from (555)010-9999 about ZZMRN{id}\r"
    )
}

/// The gateway binary, its output in `gateway.log` (default log filter).
struct Gw {
    child: tokio::process::Child,
    mllp: SocketAddr,
    http: SocketAddr,
}

async fn start_gateway(dir: &Path) -> Gw {
    start_gateway_with(dir, None).await
}

/// [`start_gateway`], armed to abort at a named failpoint.
async fn start_gateway_with(dir: &Path, failpoint: Option<&str>) -> Gw {
    let (mllp, http) = (free_port(), free_port());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(dir.join("switchboard.toml"))
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("SB_TEST_MATRIX_STORE", STORE_PASSPHRASE)
        .env_remove("RUST_LOG")
        .env("SWITCHBOARD_FAILPOINT", failpoint.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut child = child;
    let until = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", mllp))
        .await
        .is_err()
    {
        let exited = child.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < until,
            "the gateway did not start ({exited:?}):\n{}",
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Gw {
        child,
        mllp: format!("127.0.0.1:{mllp}").parse().unwrap(),
        http: format!("127.0.0.1:{http}").parse().unwrap(),
    }
}

async fn api(http: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let r = request(http, "GET", path, &[("Authorization", &auth)], b"").await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The id of an open alert not in `known` (waits up to 30 s).
async fn new_alert(http: SocketAddr, known: &[i64]) -> i64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v = api(http, "/api/v1/alerts").await;
        if let Some(id) = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["id"].as_i64())
            .find(|id| !known.contains(id))
        {
            return id;
        }
        assert!(Instant::now() < until, "no new alert raised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the alert's detail until `f` holds (30 s).
async fn wait_alert(http: SocketAddr, id: i64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v = api(http, &format!("/api/v1/alerts/{id}")).await;
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < until, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn steps(v: &Value, what: &str) -> usize {
    v["timeline"]
        .as_array()
        .map(|t| t.iter().filter(|s| s["what"] == what).count())
        .unwrap_or(0)
}

async fn wait_rows(db: &Path, what: &str, f: impl Fn(&[(String, String, i64)]) -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = rows(db);
        if f(&r) {
            return;
        }
        assert!(Instant::now() < until, "{what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test's own client for `user`: its own store and device, end-to-end
/// encryption on; one sync uploads its device keys.
async fn peer(hs: &str, store: &Path, user: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(hs)
        .sqlite_store(store, None)
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(user, PEER_PASSWORD)
        .initial_device_display_name("test phone")
        .send()
        .await
        .unwrap();
    client
        .sync_once(SyncSettings::new().timeout(Duration::ZERO))
        .await
        .unwrap();
    client
}

/// A message from the gateway as the peer decrypted it.
struct Received {
    room: Room,
    event_id: OwnedEventId,
    body: String,
    /// The sending device, from the decryption (None: it was plaintext).
    device: Option<String>,
}

fn decrypted(room: &Room, ev: &TimelineEvent) -> Option<Received> {
    let v: Value = serde_json::from_str(ev.raw().json().get()).ok()?;
    if v["sender"] != BOT || v["type"] != "m.room.message" {
        return None;
    }
    Some(Received {
        room: room.clone(),
        event_id: ev.event_id()?,
        body: v["content"]["body"].as_str()?.to_string(),
        device: ev
            .encryption_info()
            .and_then(|i| i.sender_device.as_ref().map(|d| d.to_string())),
    })
}

/// Syncs as the peer (joining invites) until a message from the gateway is
/// decrypted.
async fn next_message(c: &Client) -> Received {
    let until = Instant::now() + Duration::from_secs(45);
    let mut waiting: Vec<(OwnedRoomId, OwnedEventId)> = Vec::new();
    loop {
        assert!(
            Instant::now() < until,
            "no message from the gateway decrypted within 45 s (undecrypted: {})",
            waiting.len()
        );
        let resp = c
            .sync_once(SyncSettings::new().timeout(Duration::from_millis(500)))
            .await
            .expect("peer sync");
        for room_id in resp.rooms.invited.keys() {
            c.join_room_by_id(room_id).await.expect("join the invite");
        }
        for (room_id, update) in &resp.rooms.joined {
            let room = c.get_room(room_id).unwrap();
            for ev in &update.timeline.events {
                if let Some(r) = decrypted(&room, ev) {
                    return r;
                }
                let v: Value = serde_json::from_str(ev.raw().json().get()).unwrap();
                if v["sender"] == BOT
                    && v["type"] == "m.room.encrypted"
                    && let Some(id) = ev.event_id()
                {
                    waiting.push((room_id.clone(), id));
                }
            }
        }
        // Keys may arrive after the event: try those again.
        for (room_id, id) in std::mem::take(&mut waiting) {
            let room = c.get_room(&room_id).unwrap();
            match room
                .event(&id, None)
                .await
                .ok()
                .and_then(|ev| decrypted(&room, &ev))
            {
                Some(r) => return r,
                None => waiting.push((room_id, id)),
            }
        }
    }
}

/// What the gateway logged must hold no PHI and no message text.
fn assert_log_clean(dir: &Path, body: &str) {
    let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap();
    let upper = log.to_uppercase();
    for canary in ["ZZCANARY", "PHIPERSON", "ZZMRN", "19700101"]
        .iter()
        .chain(OUTSIDE_PROFILE.iter())
    {
        assert!(
            !upper.contains(canary),
            "{canary} in the gateway's log:\n{log}"
        );
    }
    assert!(!log.contains(body), "the message text in the gateway's log");
}

fn remote_ref(db: &Path, member: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT remote_ref FROM notifications WHERE member = ?1 ORDER BY id DESC LIMIT 1",
        [member],
        |r| r.get(0),
    )
    .unwrap()
}

/// The preview line of a new STAT critical result from ICU room 12 bed A.
const NEW: &str = "STAT critical result ICU 12-A";

/// The body is what `clinician-secure` and the template allow, nothing
/// more: the envelope, the MRN and the value; notes scrubbed; no address or
/// phone.
fn assert_redacted(body: &str, preview: &str, id: &str) {
    assert!(
        body.starts_with(&format!("{preview} | MRN ZZMRN{id} | 6.9 mmol/L | ")),
        "{body}"
    );
    let upper = body.to_uppercase();
    for canary in OUTSIDE_PROFILE {
        assert!(!upper.contains(canary), "{canary} left: {body}");
    }
    let notes = body.rsplit(" | ").next().unwrap();
    assert!(notes.contains("[redacted]"), "notes not scrubbed: {body}");
    assert!(!notes.to_uppercase().contains("ZZCANARY"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_alert_is_decrypted_read_and_accepted_by_reaction_and_a_restart_keeps_device_and_sync_position()
 {
    let t_start = Instant::now();
    let hs = Synapse::start().await;
    hs.register("switchboard", BOT_PASSWORD).await;
    hs.register("alice", PEER_PASSWORD).await;
    hs.register("sup", PEER_PASSWORD).await;
    let stores = tempfile::tempdir().unwrap();
    let alice = peer(&hs.url(), &stores.path().join("alice"), "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let tier_secs = 20;
    write_config(dir.path(), &hs.url(), WARD, &mapping(tier_secs));
    let mut gw = start_gateway(dir.path()).await;
    let db = dir.path().join("data/journal.sqlite3");

    let t0 = Instant::now();
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("M1")).await), "AA");
    let id = new_alert(gw.http, &[]).await;

    // Alice's own client receives and decrypts it, in an encrypted room.
    let got = next_message(&alice).await;
    assert!(
        got.room
            .latest_encryption_state()
            .await
            .unwrap()
            .is_encrypted(),
        "the room is end-to-end encrypted"
    );
    let device = got.device.clone().expect("the alert was encrypted");
    assert!(device.starts_with("SB"), "{device}");
    assert_redacted(&got.body, NEW, "M1");
    wait_rows(&db, "rn-a never marked delivered", |r| {
        r.iter().any(|x| x.0 == "rn-a" && x.1 == "delivered")
    })
    .await;
    assert_eq!(
        remote_ref(&db, "rn-a").as_deref(),
        Some(got.event_id.as_str()),
        "the event id is the notification's remote reference"
    );

    // A read receipt marks it read; a ✅ reaction accepts it.
    got.room
        .send_single_receipt(
            ReceiptType::Read,
            ReceiptThread::Unthreaded,
            got.event_id.clone(),
        )
        .await
        .unwrap();
    wait_alert(gw.http, id, "never marked read", |v| {
        steps(v, "read by rn-a") == 1
    })
    .await;
    got.room
        .send(ReactionEventContent::new(Annotation::new(
            got.event_id.clone(),
            "✅".to_string(),
        )))
        .await
        .unwrap();
    let v = wait_alert(gw.http, id, "never accepted", |v| v["state"] == "accepted").await;
    assert_eq!(v["accepted_by"], "rn-a");
    assert!(
        t0.elapsed() < Duration::from_secs(tier_secs),
        "accepted only after the tier timeout: {:?}",
        t0.elapsed()
    );

    // The escalation stopped: nobody at tier 2 after the tier timeout.
    let past_timeout = Duration::from_secs(tier_secs + 3);
    if let Some(rest) = past_timeout.checked_sub(t0.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let r = rows(&db);
    assert!(r.iter().all(|x| x.0 == "rn-a"), "tier 2 notified: {r:?}");
    let v = api(gw.http, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(v["state"], "accepted");
    assert_eq!(v["tier"], 0);

    // Restart (a crash: SIGKILL) on the same data folder.
    gw.child.kill().await.unwrap();
    let gw = start_gateway(dir.path()).await;
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("M2")).await), "AA");
    let id2 = new_alert(gw.http, &[id]).await;
    let got2 = next_message(&alice).await;
    assert_redacted(&got2.body, NEW, "M2");
    assert_eq!(
        got2.device.as_deref(),
        Some(device.as_str()),
        "the same device (its keys persisted) sends after the restart"
    );
    assert_eq!(
        got2.room.room_id(),
        got.room.room_id(),
        "the direct room is remembered"
    );
    wait_rows(&db, "the second alert never delivered", |r| {
        r.iter().filter(|x| x.1 == "delivered").count() == 2
    })
    .await;
    let v2 = api(gw.http, &format!("/api/v1/alerts/{id2}")).await;
    assert_ne!(v2["state"], "accepted");

    // The sync position resumed: one initial sync (no `since`) and one
    // login ever for the gateway; the old receipt was not applied again.
    let log = hs.access_log();
    let gateway_syncs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("{@switchboard:localhost}") && l.contains("/_matrix/client/v3/sync"))
        .collect();
    assert!(gateway_syncs.len() >= 3, "{gateway_syncs:?}");
    assert_eq!(
        gateway_syncs
            .iter()
            .filter(|l| !l.contains("since="))
            .count(),
        1,
        "the gateway synced from scratch again: {gateway_syncs:#?}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("POST /_matrix/client/v3/login"))
            .count(),
        2,
        "alice and the gateway log in once each; the restart restored the session"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = api(gw.http, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(steps(&v, "read by rn-a"), 1, "{v}");
    assert_eq!(v["state"], "accepted");

    assert_log_clean(dir.path(), &got.body);
    let store = dir.path().join("data/matrix/mx");
    assert!(store.join("state.sealed").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&store).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the store folder is private");
    }
    drop(gw);
    eprintln!("matrix accept/restart test: {:?}", t_start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_reply_decline_escalates_at_once_to_the_next_tier() {
    let t_start = Instant::now();
    let hs = Synapse::start().await;
    hs.register("switchboard", BOT_PASSWORD).await;
    hs.register("alice", PEER_PASSWORD).await;
    hs.register("sup", PEER_PASSWORD).await;
    let stores = tempfile::tempdir().unwrap();
    let alice = peer(&hs.url(), &stores.path().join("alice"), "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let tier_secs = 120;
    write_config(dir.path(), &hs.url(), WARD, &mapping(tier_secs));
    let gw = start_gateway(dir.path()).await;
    let db = dir.path().join("data/journal.sqlite3");

    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("D1")).await), "AA");
    let id = new_alert(gw.http, &[]).await;
    let got = next_message(&alice).await;
    assert_redacted(&got.body, NEW, "D1");

    // An (encrypted) reply "decline", with the usual quoted fallback.
    let t_reply = Instant::now();
    got.room
        .send_raw(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": format!("> <{BOT}> {}\n\nDecline - in theatre", got.body),
                "m.relates_to": {"m.in_reply_to": {"event_id": got.event_id.to_string()}}
            }),
        )
        .await
        .unwrap();
    wait_rows(&db, "the next tier was not notified", |r| {
        r.iter().any(|x| x.0 == "sup" && x.1 == "delivered")
    })
    .await;
    assert!(
        t_reply.elapsed() < Duration::from_secs(30),
        "escalated at once, not on the {tier_secs} s timeout"
    );
    let v = wait_alert(gw.http, id, "decline not on the timeline", |v| {
        steps(v, "declined by rn-a") == 1
    })
    .await;
    assert_eq!(v["tier"], 1);
    assert_ne!(v["state"], "accepted");
    assert_log_clean(dir.path(), &got.body);
    drop(gw);
    eprintln!("matrix decline test: {:?}", t_start.elapsed());
}

/// Alice creates a room inviting the gateway (and `others`), end-to-end
/// encrypted or not.
async fn create_room(alice: &Client, encrypted: bool, name: &str) -> OwnedRoomId {
    use matrix_sdk::ruma::api::client::room::create_room::v3::{Request, RoomPreset};
    use matrix_sdk::ruma::events::InitialStateEvent;
    use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
    let mut req = Request::new();
    req.invite = vec![BOT.try_into().unwrap()];
    req.name = Some(name.to_string());
    req.preset = Some(RoomPreset::PrivateChat);
    if encrypted {
        req.initial_state = vec![
            InitialStateEvent::with_empty_state_key(
                RoomEncryptionEventContent::with_recommended_defaults(),
            )
            .to_raw_any(),
        ];
    }
    alice.create_room(req).await.unwrap().room_id().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_role_rooms_an_unencrypted_room_is_refused_and_escalates_and_an_encrypted_one_accepts_on_behalf()
 {
    let t_start = Instant::now();
    let hs = Synapse::start().await;
    hs.register("switchboard", BOT_PASSWORD).await;
    hs.register("alice", PEER_PASSWORD).await;
    hs.register("sup", PEER_PASSWORD).await;
    let stores = tempfile::tempdir().unwrap();
    let alice = peer(&hs.url(), &stores.path().join("alice"), "alice").await;
    // Rooms per role, made by a ward clerk (alice here): one not encrypted.
    let plain = create_room(&alice, false, "ward-b (not encrypted)").await;
    let icu = create_room(&alice, true, "icu-rn").await;
    let stranger = create_room(&alice, true, "nobody's").await;
    let roster = format!(
        r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "ward-b-room"
display = "Ward B room (fictional)"
contacts = {{ matrix = "{plain}" }}

[[members]]
id = "icu-room"
display = "ICU nurses' room (fictional)"
contacts = {{ matrix = "{icu}" }}

[[members]]
id = "sup"
display = "Supervisor (fictional)"
contacts = {{ matrix = "@sup:localhost" }}

[[roles]]
name = "charge-nurse"

[[rotations]]
role = "charge-nurse"
members = ["ward-b-room"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "sup"
"#
    );
    let mapping = r#"
[[rules]]
name = "icu-critical"
match = { kind = "result", flags = ["HH"], units = ["ICU"] }
route = { person = "ward-b-room", priority = "stat", escalation = "rooms" }

[escalations.rooms]
tiers = [
  { route = true, timeout_secs = 120 },
  { person = "icu-room", timeout_secs = 120 },
  { failsafe = true, timeout_secs = 600 },
]
"#;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &hs.url(), &roster, mapping);
    let gw = start_gateway(dir.path()).await;
    let db = dir.path().join("data/journal.sqlite3");

    let t0 = Instant::now();
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("R1")).await), "AA");
    let id = new_alert(gw.http, &[]).await;

    // The unencrypted room is refused at once (never a plaintext page), and
    // that escalates to the next tier without waiting for its timeout.
    wait_rows(&db, "the unencrypted room was not refused", |r| {
        r.iter().any(|x| x.0 == "ward-b-room" && x.1 == "dead")
    })
    .await;
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let (attempts, error): (i64, String) = conn
        .query_row(
            "SELECT attempts, last_error FROM notifications WHERE member = 'ward-b-room'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(attempts, 1, "refused, not retried");
    assert!(error.contains("not end-to-end encrypted"), "{error}");

    // The encrypted ICU room gets it: decrypted by alice's own client.
    let got = next_message(&alice).await;
    assert_eq!(
        got.room.room_id(),
        icu,
        "sent into the role's encrypted room"
    );
    assert!(got.device.is_some(), "encrypted");
    assert_redacted(&got.body, &format!("{NEW} (escalation)"), "R1");
    assert!(t0.elapsed() < Duration::from_secs(60), "escalated at once");
    // Nothing from the gateway ever reached the unencrypted room.
    let plain_room = alice.get_room(&plain).unwrap();
    let msgs = plain_room
        .messages(matrix_sdk::room::MessagesOptions::backward())
        .await
        .unwrap();
    for ev in &msgs.chunk {
        let v: Value = serde_json::from_str(ev.raw().json().get()).unwrap();
        assert!(
            !(v["sender"] == BOT && v["type"] != "m.room.member"),
            "the gateway posted into the unencrypted room: {}",
            v["type"]
        );
    }

    // Anyone in the role's room answers for it: recorded on behalf.
    got.room
        .send(ReactionEventContent::new(Annotation::new(
            got.event_id.clone(),
            "👍".to_string(),
        )))
        .await
        .unwrap();
    let v = wait_alert(gw.http, id, "never accepted", |v| v["state"] == "accepted").await;
    assert_eq!(
        v["accepted_by"],
        "icu-room (on behalf, by matrix:@alice:localhost)"
    );
    // An invite to a room nobody is notified in is left pending (the
    // gateway's syncs, which applied the reaction, had all three invites
    // since their first response).
    let stranger = alice.get_room(&stranger).unwrap();
    let bot = stranger
        .get_member(BOT.try_into().unwrap())
        .await
        .unwrap()
        .expect("the gateway was invited");
    assert_eq!(
        bot.membership(),
        &matrix_sdk::ruma::events::room::member::MembershipState::Invite
    );
    assert_log_clean(dir.path(), &got.body);
    drop(gw);
    eprintln!("matrix role-room test: {:?}", t_start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_a_crash_right_after_sending_resends_with_the_same_transaction_id_and_pages_once() {
    let t_start = Instant::now();
    let hs = Synapse::start().await;
    hs.register("switchboard", BOT_PASSWORD).await;
    hs.register("alice", PEER_PASSWORD).await;
    hs.register("sup", PEER_PASSWORD).await;
    let stores = tempfile::tempdir().unwrap();
    let alice = peer(&hs.url(), &stores.path().join("alice"), "alice").await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &hs.url(), WARD, &mapping(120));
    let db = dir.path().join("data/journal.sqlite3");

    // The homeserver takes the alert; the gateway dies before recording it.
    let mut gw = start_gateway_with(dir.path(), Some("delivery.after-send")).await;
    let mut c = Mllp::connect(gw.mllp).await;
    assert_eq!(ack_code(&c.roundtrip(&oru("C1")).await), "AA");
    let status = tokio::time::timeout(Duration::from_secs(30), gw.child.wait())
        .await
        .expect("the failpoint never fired")
        .unwrap();
    assert!(!status.success(), "aborted at the failpoint");
    assert_eq!(
        rows(&db).first().map(|r| r.1.clone()).as_deref(),
        Some("pending"),
        "the send was not recorded"
    );

    // Restarted, it sends again: same device, same token, same transaction
    // id, so the homeserver answers with the first event.
    let gw = start_gateway(dir.path()).await;
    wait_rows(&db, "never delivered after the restart", |r| {
        r.first().is_some_and(|x| x.1 == "delivered")
    })
    .await;
    let got = next_message(&alice).await;
    assert_redacted(&got.body, NEW, "C1");
    assert_eq!(
        remote_ref(&db, "rn-a").as_deref(),
        Some(got.event_id.as_str())
    );
    // The room's whole history holds the alert once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = got
        .room
        .messages(matrix_sdk::room::MessagesOptions::backward())
        .await
        .unwrap();
    let from_gateway: Vec<String> = history
        .chunk
        .iter()
        .filter_map(|ev| {
            let v: Value = serde_json::from_str(ev.raw().json().get()).ok()?;
            (v["sender"] == BOT
                && (v["type"] == "m.room.message" || v["type"] == "m.room.encrypted"))
                .then(|| v["event_id"].as_str().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(from_gateway, [got.event_id.to_string()], "paged twice");
    assert_log_clean(dir.path(), &got.body);
    drop(gw);
    eprintln!("matrix crash-resend test: {:?}", t_start.elapsed());
}
