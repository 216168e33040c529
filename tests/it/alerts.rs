//! The alert lifecycle through the running gateway: a critical result
//! becomes a STAT alert, escalates tier by tier on time, stops at an
//! acceptance (pending notifications cancelled), declines escalate at once,
//! corrections reach everyone told, and a SIGKILL in the middle of an
//! escalation resumes with the right next step and no duplicate page.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::census::{OPERATOR_TOKEN, api, write_config};
use crate::support::{Mllp, ack_code};

const STAFF: &str = r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = { matrix = "@rn-a:localhost", pager = "1001" }

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

const MAPPING: &str = r#"
[[rules]]
name = "critical-potassium"
match = { kind = "result", codes = ["LN|2823-3"], flags = ["HH", "LL"] }
route = { role = "charge-nurse", priority = "stat", escalation = "fast", dedup_window_secs = 600, dedup_key = ["patient", "code"] }

[escalations.fast]
tiers = [
  { route = true, timeout_secs = 2 },
  { person = "sup", timeout_secs = 2 },
  { failsafe = true, timeout_secs = 2 },
]
"#;

/// Writes the roster, mapping and config (operators from `census`).
pub fn setup(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rosters")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("rosters/ward.toml"), STAFF).unwrap();
    std::fs::write(dir.join("mappings/alerts.toml"), MAPPING).unwrap();
    // Backends for both contact kinds; nothing listens on port 9, so
    // deliveries keep retrying and the notifications stay visible.
    let backends = "[reload]\nwatch_files = false\n\n\
[[backends]]\nname = \"matrix\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
[[backends]]\nname = \"pager\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n";
    let path = write_config(dir, backends);
    // Operators of the census tests plus the alert permissions.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "\"rosters:write\"]",
        "\"rosters:write\", \"alerts:read\", \"alerts:ack\", \"alerts:on-behalf\"]",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A potassium result observed now (not late).
fn oru(id: &str, value: &str, status: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|{now}||ORU^R01^ORU_R01|{id}|P|2.5.1\r\
PID|1||MRN7^^^HOSP^MR||ZZCANARY^PHI\r\
PV1|1|I|ICU^101^A^HOSP\r\
OBR|1|PL7|FL7|2823-3^Potassium^LN|||{now}\r\
OBX|1|NM|2823-3^Potassium^LN||{value}|mmol/L|3.5-5.1|HH|||{status}\r"
    )
}

async fn send(addr: std::net::SocketAddr, msg: &str) {
    let mut c = Mllp::connect(addr).await;
    assert_eq!(ack_code(&c.roundtrip(msg).await), "AA");
}

fn body(r: &crate::fhir::HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Polls until `f(alert detail)` holds (30 s), returning the detail.
async fn wait_alert(
    g: &switchboard::app::Gateway,
    id: i64,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api(
            g,
            "GET",
            &format!("/api/v1/alerts/{id}"),
            Some(OPERATOR_TOKEN),
            "",
        )
        .await;
        let v = body(&r);
        if r.status == 200 && f(&v) {
            return v;
        }
        assert!(Instant::now() < until, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_alert(g: &switchboard::app::Gateway) -> i64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api(g, "GET", "/api/v1/alerts", Some(OPERATOR_TOKEN), "").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if let Some(id) = body(&r)["alerts"][0]["id"].as_i64() {
            return id;
        }
        assert!(Instant::now() < until, "no alert raised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn told(v: &Value) -> Vec<String> {
    v["told"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

async fn ack(g: &switchboard::app::Gateway, id: i64, b: &str) -> crate::fhir::HttpResponse {
    api(
        g,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(OPERATOR_TOKEN),
        b,
    )
    .await
}

async fn start(dir: &Path) -> switchboard::app::Gateway {
    let path = setup(dir);
    switchboard::app::Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_critical_result_escalates_on_time_and_an_acceptance_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let t0 = Instant::now();
    send(g.mllp_addr(), &oru("K1", "6.9", "F")).await;
    let id = first_alert(&g).await;
    let v = wait_alert(&g, id, "tier 0", |v| told(v) == ["rn-a"]).await;
    assert_eq!(v["priority"], "stat");
    assert_eq!(v["state"], "notifying");
    // One notification per backend handle of rn-a, each with its own key.
    let n = v["notifications"].as_array().unwrap();
    let backends: Vec<&str> = n.iter().map(|x| x["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["matrix", "pager"]);
    assert_ne!(n[0]["idempotency_key"], n[1]["idempotency_key"]);

    // Tier 1 after its 2 s timeout (generous bound: not before 2 s, within 10 s).
    let v = wait_alert(&g, id, "tier 1", |v| told(v) == ["rn-a", "sup"]).await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "escalated early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "escalated late: {elapsed:?}"
    );
    assert_eq!(v["tier"], 1);

    // rn-a (an earlier tier) reads, then accepts: every pending notification stops.
    let r = ack(&g, id, r#"{"action":"read","member":"rn-a"}"#).await;
    assert_eq!(body(&r)["state"], "read");
    let r = ack(&g, id, r#"{"action":"accept","member":"rn-a"}"#).await;
    assert_eq!(r.status, 200);
    let v = wait_alert(&g, id, "accepted", |v| v["state"] == "accepted").await;
    assert!(
        v["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "cancelled")
    );
    assert_eq!(v["accepted_by"], "rn-a");
    // No more escalation: the failsafe is never told.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v = wait_alert(&g, id, "still accepted", |v| v["state"] == "accepted").await;
    assert_eq!(told(&v), ["rn-a", "sup"]);
    // The same result again is folded into the alert, not a new page.
    send(g.mllp_addr(), &oru("K2", "6.9", "F")).await;
    let v = wait_alert(&g, id, "duplicate", |v| v["count"] == 2).await;
    assert_eq!(told(&v), ["rn-a", "sup"]);
    let r = api(&g, "GET", "/api/v1/alerts", Some(OPERATOR_TOKEN), "").await;
    assert_eq!(body(&r)["alerts"].as_array().unwrap().len(), 1);
    // Resolve; acknowledging a closed alert is a 409.
    assert_eq!(
        ack(&g, id, r#"{"action":"resolve","member":"rn-a"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        ack(&g, id, r#"{"action":"accept","member":"sup"}"#)
            .await
            .status,
        409
    );
    g.shutdown().await;

    // Each step is in the audit trail, with who caused it.
    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    let steps: Vec<(String, String)> = conn
        .prepare("SELECT actor, action FROM audit WHERE object = ?1 ORDER BY seq")
        .unwrap()
        .query_map([format!("alert:{id}")], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The operator who pressed the button is on record beside the member.
    let want = [
        ("gateway", "alert.notifying"),
        ("timer", "alert.notifying"),
        ("member:rn-a", "alert.read"),
        ("operator:coordinator", "alert.ack.via"),
        ("member:rn-a", "alert.accepted"),
        ("operator:coordinator", "alert.ack.via"),
        ("event:2", "alert.accepted"),
        ("member:rn-a", "alert.resolved"),
        ("operator:coordinator", "alert.ack.via"),
    ];
    let got: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn declines_escalate_at_once_on_behalf_is_recorded_and_corrections_reach_everyone_told() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    send(g.mllp_addr(), &oru("D1", "6.9", "F")).await;
    let id = first_alert(&g).await;
    wait_alert(&g, id, "tier 0", |v| told(v) == ["rn-a"]).await;
    // Someone never told may not accept for themselves...
    let r = ack(&g, id, r#"{"action":"accept","member":"rn-b"}"#).await;
    assert_eq!(r.status, 403);
    // ...rn-a declines: sup is told at once, well before the 2 s timeout.
    let t = Instant::now();
    let r = ack(&g, id, r#"{"action":"decline","member":"rn-a"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(told(&body(&r)), ["rn-a", "sup"]);
    assert!(t.elapsed() < Duration::from_secs(2));
    // The charge nurse's coordinator accepts on behalf of rn-b.
    let r = ack(
        &g,
        id,
        r#"{"action":"accept","member":"rn-b","on_behalf":true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = body(&r);
    assert_eq!(
        v["accepted_by"],
        "rn-b (on behalf, by operator:coordinator)"
    );
    assert_eq!(
        v["timeline"].as_array().unwrap().last().unwrap()["by"],
        "operator:coordinator"
    );
    // A corrected value: everyone told hears it, with the reason.
    send(g.mllp_addr(), &oru("D2", "5.2", "C")).await;
    let v = wait_alert(&g, id, "correction", |v| {
        v["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["reason"] == "correction")
    })
    .await;
    let mut corrected: Vec<&str> = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reason"] == "correction" && n["backend"] == "matrix")
        .map(|n| n["member"].as_str().unwrap())
        .collect();
    corrected.sort();
    assert_eq!(corrected, ["rn-a", "sup"]);
    g.shutdown().await;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn notifications(db: &Path) -> Vec<(String, String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.prepare(
        "SELECT member, reason, tier FROM notifications WHERE backend = 'matrix' ORDER BY id",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn serve(config: &Path, mllp: u16, http: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
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
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child
}

#[tokio::test]
async fn a_sigkill_mid_escalation_resumes_with_the_next_step_and_no_duplicate_page() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let db = dir.path().join("data/journal.sqlite3");
    let (mllp, http) = (free_port(), free_port());
    let mut child = serve(&config, mllp, http).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    send(addr, &oru("S1", "6.9", "F")).await;
    let until = Instant::now() + Duration::from_secs(30);
    while notifications(&db).is_empty() {
        assert!(Instant::now() < until, "tier 0 never notified");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Killed with tier 0 told and its 2 s deadline pending.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(
        notifications(&db),
        [("rn-a".to_string(), "new".to_string(), 0)]
    );
    // Down past the deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = Instant::now();
    let mut child = serve(&config, mllp, http).await;
    let until = Instant::now() + Duration::from_secs(30);
    while notifications(&db).len() < 2 {
        assert!(Instant::now() < until, "the overdue escalation never fired");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "overdue deadline fires at once"
    );
    let n = notifications(&db);
    assert_eq!(
        n[..2],
        [
            ("rn-a".to_string(), "new".to_string(), 0),
            ("sup".to_string(), "escalation".to_string(), 1)
        ]
    );
    // Killed again right after; restarted: still no step twice.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut child = serve(&config, mllp, http).await;
    let until = Instant::now() + Duration::from_secs(30);
    while notifications(&db).len() < 3 {
        assert!(Instant::now() < until, "failsafe tier never notified");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let n = notifications(&db);
    assert_eq!(n[2], ("rn-b".to_string(), "escalation".to_string(), 2));
    // Exhausted after the failsafe's timeout: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(notifications(&db).len(), 3, "{:?}", notifications(&db));
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let state: String = conn
        .query_row("SELECT state FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "exhausted");
    let alerts: i64 = conn
        .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(alerts, 1, "the message was routed once across three starts");
    child.start_kill().unwrap();
}

#[tokio::test]
async fn an_operator_acknowledging_for_a_member_is_named_in_the_audit_trail() {
    // Regression: an operator's plain accept or decline through the API (the
    // console's buttons) used to leave only `member:X` on record.
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    send(g.mllp_addr(), &oru("V1", "6.9", "F")).await;
    let id = first_alert(&g).await;
    wait_alert(&g, id, "tier 0", |v| told(v) == ["rn-a"]).await;
    let r = ack(&g, id, r#"{"action":"decline","member":"rn-a"}"#).await;
    assert_eq!(r.status, 200);
    g.shutdown().await;
    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    let (actor, outcome): (String, String) = conn
        .query_row(
            "SELECT actor, outcome FROM audit WHERE object = ?1 AND action = 'alert.ack.via'",
            [format!("alert:{id}")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(actor, "operator:coordinator");
    assert_eq!(outcome, "decline for member:rn-a");
}
