//! The live census: fed from ADT in journal order, nurse assignments through
//! the operator API (journaled, audited), and rebuilt at start-up — from a
//! snapshot after a clean stop, by replaying the journal when there is none.

use std::path::Path;

use sha2::{Digest, Sha256};
use switchboard::app::Gateway;
use switchboard::census::{Census, PatientKey};

use crate::fhir::{HttpResponse, request};
use crate::support::{Mllp, ack_code};

pub const OPERATOR_TOKEN: &str = "coordinator-token-for-tests";
pub const READER_TOKEN: &str = "reader-token-for-tests";

pub const WARD_ROSTER: &str = r#"
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

/// A configuration with two operators, a roster folder and an empty mapping folder.
pub fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let rosters = dir.join("rosters");
    let mappings = dir.join("mappings");
    std::fs::create_dir_all(&rosters).unwrap();
    std::fs::create_dir_all(&mappings).unwrap();
    if !rosters.join("ward.toml").exists() {
        std::fs::write(rosters.join("ward.toml"), WARD_ROSTER).unwrap();
    }
    let h = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n{extra}\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[[senders]]\nname = \"adt\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[operators]]\nname = \"coordinator\"\ntokens_sha256 = [\"{}\"]\npermissions = [\"oncall:read\", \"assignments:read\", \"assignments:write\", \"routing:reload\", \"rosters:write\"]\n\
[[operators]]\nname = \"reader\"\ntokens_sha256 = [\"{}\"]\npermissions = [\"oncall:read\"]\n",
        h(OPERATOR_TOKEN),
        h(READER_TOKEN)
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn start(dir: &Path, extra: &str) -> Gateway {
    let path = write_config(dir, extra);
    Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap()
}

pub async fn api(
    g: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    request(g.http_addr(), method, path, &headers, body.as_bytes()).await
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

fn adt(trigger: &str, id: &str, pid: &str, pv1_3: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|ADT|HOSP|SWITCHBOARD|HOSP|20261123120000||ADT^{trigger}^ADT_A01|{id}|P|2.5.1\r\
EVN|{trigger}|20261123120000\r\
PID|1||{pid}^^^HOSP^MR||ZZCANARY^PHI||19700101|F\r\
{extra}PV1|1|I|{pv1_3}\r"
    )
}

async fn send_all(g: &Gateway, msgs: &[String]) {
    let mut c = Mllp::connect(g.mllp_addr()).await;
    for m in msgs {
        let ack = c.roundtrip(m).await;
        assert_eq!(ack_code(&ack), "AA", "ADT not accepted");
    }
}

fn bed_of(c: &Census, mrn: &str) -> Option<String> {
    c.patient_by_key(&PatientKey::new("HOSP", mrn))
        .and_then(|p| p.bed())
        .map(|b| b.to_string())
}

/// Admit two patients, assign nurses (one to a bed, one to a patient),
/// transfer one, merge the other into a third: ops and ADT interleaved.
async fn workload(g: &Gateway) {
    send_all(
        g,
        &[
            adt("A01", "C1", "MRN1", "ICU^101^A^HOSP", ""),
            adt("A01", "C2", "MRN2", "ICU^102^A^HOSP", ""),
        ],
    )
    .await;
    let to = (chrono::Utc::now() + chrono::TimeDelta::hours(12)).to_rfc3339();
    let r = api(
        g,
        "POST",
        "/api/v1/assignments",
        Some(OPERATOR_TOKEN),
        &format!(
            r#"{{"member":"rn-a","bed":{{"facility":"HOSP","unit":"ICU","room":"103","bed":"A"}},"to":"{to}"}}"#
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = api(
        g,
        "POST",
        "/api/v1/assignments",
        Some(OPERATOR_TOKEN),
        &format!(r#"{{"member":"rn-b","patient":{{"authority":"HOSP","id":"MRN2"}},"to":"{to}"}}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    send_all(
        g,
        &[
            // MRN1 moves into the assigned bed.
            adt("A02", "C3", "MRN1", "ICU^103^A^HOSP", ""),
            // MRN2 is merged into MRN9: the assignment follows the survivor.
            "MSH|^~\\&|ADT|HOSP|SWITCHBOARD|HOSP|20261123120500||ADT^A40^ADT_A39|C4|P|2.5.1\r\
EVN|A40|20261123120500\r\
PID|1||MRN9^^^HOSP^MR||ZZCANARY^PHI\r\
MRG|MRN2^^^HOSP^MR\r"
                .to_string(),
        ],
    )
    .await;
}

fn nurses(c: &Census, mrn: &str) -> Vec<String> {
    let rosters =
        switchboard::roster::load_files(&[("ward.toml".into(), WARD_ROSTER.to_string())]).unwrap();
    c.relation_members(
        &PatientKey::new("HOSP", mrn),
        switchboard::rules::Relation::AssignedNurse,
        &rosters,
        chrono::Utc::now(),
    )
}

#[tokio::test]
async fn census_follows_adt_and_api_assignments_and_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "").await;
    workload(&g).await;
    let before = g.census().read().clone();
    assert_eq!(bed_of(&before, "MRN1").as_deref(), Some("HOSP/ICU/103/A"));
    assert_eq!(bed_of(&before, "MRN9").as_deref(), Some("HOSP/ICU/102/A"));
    assert_eq!(nurses(&before, "MRN1"), vec!["rn-a"], "bed assignment");
    assert_eq!(nurses(&before, "MRN9"), vec!["rn-b"], "followed the merge");
    g.shutdown().await;

    let snapshots: i64 = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM census_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(snapshots, 1, "a clean stop saves one snapshot");

    let g = start(dir.path(), "").await;
    assert_eq!(*g.census().read(), before, "restored from the snapshot");
    // And it keeps going from there.
    send_all(&g, &[adt("A03", "C5", "MRN1", "ICU^103^A^HOSP", "")]).await;
    assert_eq!(bed_of(&g.census().read(), "MRN1"), None, "discharged");
    g.shutdown().await;
}

#[tokio::test]
async fn census_is_rebuilt_by_replaying_the_journal_when_no_snapshot_exists() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "").await;
    workload(&g).await;
    let before = g.census().read().clone();
    g.shutdown().await;
    // As after a crash before the first snapshot: only the journal is left.
    rusqlite::Connection::open(dir.path().join("data/journal.sqlite3"))
        .unwrap()
        .execute("DELETE FROM census_snapshots", [])
        .unwrap();
    let g = start(dir.path(), "").await;
    let after = g.census().read().clone();
    assert_eq!(after, before, "replay of ADT events and ops, in order");
    assert_eq!(nurses(&after, "MRN9"), vec!["rn-b"]);
    g.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_plus_later_events_equals_the_live_census() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every second: some events land before, some after one.
    let g = start(dir.path(), "[census]\nsnapshot_secs = 1\n").await;
    send_all(&g, &[adt("A01", "S1", "MRN1", "ICU^101^A^HOSP", "")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let db = dir.path().join("data/journal.sqlite3");
    let count = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM census_snapshots", [], |r| r.get(0))
            .unwrap()
    };
    while count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no periodic snapshot");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    send_all(&g, &[adt("A02", "S2", "MRN1", "ICU^104^B^HOSP", "")]).await;
    let live = g.census().read().clone();
    // Stop without the final snapshot: abort the process's view by copying
    // the journal files as they are now (WAL included).
    let copy = tempfile::tempdir().unwrap();
    for d in ["data", "keys", "rosters", "mappings"] {
        let src = dir.path().join(d);
        if src.is_dir() {
            copy_dir(&src, &copy.path().join(d));
        }
    }
    g.shutdown().await;
    let g2 = start(copy.path(), "").await;
    assert_eq!(*g2.census().read(), live);
    assert_eq!(
        bed_of(&g2.census().read(), "MRN1").as_deref(),
        Some("HOSP/ICU/104/B")
    );
    g2.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else if !p.to_string_lossy().ends_with("-shm") {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn the_assignment_api_checks_who_asks_and_what_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "").await;
    let body = r#"{"member":"rn-a","bed":{"unit":"ICU","room":"101","bed":"A"},"to":"2099-01-01T00:00:00Z","from":"2098-12-31T12:00:00Z"}"#;
    let r = api(&g, "POST", "/api/v1/assignments", None, body).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.iter().any(|(k, _)| k == "www-authenticate"));
    let r = api(&g, "POST", "/api/v1/assignments", Some("wrong"), body).await;
    assert_eq!(r.status, 401);
    let r = api(&g, "POST", "/api/v1/assignments", Some(READER_TOKEN), body).await;
    assert_eq!(r.status, 403);
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("assignments:write")
    );
    let cases = [
        (
            r#"{"member":"nobody","bed":{"unit":"ICU","bed":"A"},"to":"2099-01-01T00:00:00Z"}"#,
            "unknown member",
        ),
        (
            r#"{"member":"rn-a","to":"2099-01-01T00:00:00Z"}"#,
            "exactly one",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":"A"},"patient":{"id":"X"},"to":"2099-01-01T00:00:00Z"}"#,
            "exactly one",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":""},"to":"2099-01-01T00:00:00Z"}"#,
            "unit",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":"A"},"from":"2099-01-02T00:00:00Z","to":"2099-01-01T00:00:00Z"}"#,
            "after",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":"A"},"from":"2098-01-01T00:00:00Z","to":"2099-01-01T00:00:00Z"}"#,
            "at most",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":"A"},"from":"2020-01-01T00:00:00Z","to":"2020-01-01T08:00:00Z"}"#,
            "ended",
        ),
        (
            r#"{"member":"rn-a","bed":{"unit":"ICU","bed":"A"},"to":"2099-01-01T00:00:00Z","colour":"red"}"#,
            "line 1",
        ),
        (r#"{"member":"#, "line 1"),
    ];
    for (body, expect) in cases {
        let r = api(
            &g,
            "POST",
            "/api/v1/assignments",
            Some(OPERATOR_TOKEN),
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{body}");
        let msg = json(&r)["error"].as_str().unwrap().to_string();
        assert!(msg.contains(expect), "{body}: {msg}");
    }
    // The accepted one is listed, removed, and both changes are audited.
    let r = api(
        &g,
        "POST",
        "/api/v1/assignments",
        Some(OPERATOR_TOKEN),
        body,
    )
    .await;
    assert_eq!(r.status, 201);
    let r = api(&g, "GET", "/api/v1/assignments", Some(OPERATOR_TOKEN), "").await;
    assert_eq!(r.status, 200);
    let list = json(&r);
    assert_eq!(list["assignments"].as_array().unwrap().len(), 1);
    assert_eq!(list["assignments"][0]["member"], "rn-a");
    assert_eq!(list["assignments"][0]["bed"]["room"], "101");
    let r = api(
        &g,
        "POST",
        "/api/v1/assignments/remove",
        Some(OPERATOR_TOKEN),
        r#"{"member":"rn-a","bed":{"unit":"ICU","room":"101","bed":"A"}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["removed"], 1);
    assert!(g.census().read().assignments().is_empty());
    g.shutdown().await;
    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    let actions: Vec<(String, String)> = conn
        .prepare("SELECT actor, action FROM audit WHERE action LIKE 'census.%' OR action LIKE 'assignments.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<(String, String)> = ["census.assign", "assignments.viewed", "census.unassign"]
        .iter()
        .map(|a| ("operator:coordinator".to_string(), a.to_string()))
        .collect();
    assert_eq!(actions, want);
}

/// A mapping that needs the census: a critical result goes to the nurse
/// assigned to the patient's bed, else the charge nurse.
const NURSE_MAPPING: &str = r#"
[[rules]]
name = "critical-to-assigned-nurse"
match = { kind = "result", flags = ["HH", "LL"] }
route = { relation = "assigned-nurse", fallback = { role = "charge-nurse" }, priority = "stat" }
"#;

#[tokio::test]
async fn route_reads_the_census_the_gateway_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    std::fs::write(dir.path().join("mappings/nurse.toml"), NURSE_MAPPING).unwrap();
    let result = dir.path().join("k.hl7");
    std::fs::write(
        &result,
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||MRN1^^^HOSP^MR||ZZCANARY^PHI\r\
PV1|1|I|ICU^101^A^HOSP\r\
OBR|1|PL1|FL1|2823-3^Potassium^LN\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r",
    )
    .unwrap();
    let route = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["route", "--json", "--config"])
            .arg(&config)
            .arg(&result)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let who: Vec<String> = v["alerts"][0]["tiers"][0]["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["member"].as_str().unwrap().to_string())
            .collect();
        (v, who)
    };
    // No journal yet: the fallback, and the note says why.
    let (v, who) = route();
    assert_eq!(who, ["rn-a"], "charge nurse by fallback: {v}");
    assert!(
        v["notes"].to_string().contains("census not available"),
        "{v}"
    );

    // The gateway admits the patient and rn-b is assigned to the bed.
    let g = start(dir.path(), "").await;
    send_all(&g, &[adt("A01", "N1", "MRN1", "ICU^101^A^HOSP", "")]).await;
    let to = (chrono::Utc::now() + chrono::TimeDelta::hours(8)).to_rfc3339();
    let r = api(
        &g,
        "POST",
        "/api/v1/assignments",
        Some(OPERATOR_TOKEN),
        &format!(r#"{{"member":"rn-b","bed":{{"facility":"HOSP","unit":"ICU","room":"101","bed":"A"}},"to":"{to}"}}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    // While it runs (read-only beside it) and after it stops.
    let (v, who) = route();
    assert_eq!(who, ["rn-b"], "the assigned nurse from the census: {v}");
    assert!(v["notes"].to_string().contains("census: 1 patients"), "{v}");
    g.shutdown().await;
    let (_, who) = route();
    assert_eq!(who, ["rn-b"]);
}
