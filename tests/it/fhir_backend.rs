//! The FHIR Communication backend and the EHR write-back against a FHIR
//! server simulator on loopback (real HTTP): every resource it receives is
//! read with fhirbolt in strict mode (a valid R4 resource or a 400), it
//! insists on `application/fhir+json`, honours `If-None-Exist`, stores what
//! it is given and serves reads and `in-response-to` searches.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard::app::Gateway;

use crate::delivery::{oru, wait_until};
use crate::support::Mllp;

const OPS_TOKEN: &str = "ops-token-for-fhir-backend-tests";

/// What the simulator holds and saw.
#[derive(Default)]
pub struct Sim {
    /// (type, id) -> resource.
    pub resources: BTreeMap<(String, String), Value>,
    /// Every create attempt: (If-None-Exist, body).
    pub posts: Vec<(Option<String>, Value)>,
    /// Every update: (type, id).
    pub puts: Vec<(String, String)>,
    /// Answers for the next creates: store it first, then answer this
    /// status (a lost answer), with `Retry-After`.
    pub lose_answers: VecDeque<u16>,
    /// Requests refused for their content type.
    pub wrong_type: u32,
    next: u32,
}

#[derive(Clone, Default)]
pub struct FhirServer(pub Arc<Mutex<Sim>>);

fn outcome(status: StatusCode, code: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code }],
    });
    (
        status,
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

/// Reads a body as a strict R4 resource of `kind`.
fn r4(headers: &HeaderMap, body: &[u8], kind: &str) -> Result<Value, Box<Response>> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/fhir+json") {
        return Err(Box::new(outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
        )));
    }
    let config = fhirbolt::serde::DeserializationConfig {
        mode: fhirbolt::serde::DeserializationMode::Strict,
    };
    if fhirbolt::json::from_slice::<fhirbolt::model::r4::Resource>(body, Some(config)).is_err() {
        return Err(Box::new(outcome(StatusCode::BAD_REQUEST, "structure")));
    }
    let v: Value = serde_json::from_slice(body).unwrap();
    if v["resourceType"] != kind {
        return Err(Box::new(outcome(StatusCode::BAD_REQUEST, "invalid")));
    }
    Ok(v)
}

fn has_identifier(r: &Value, system: &str, value: &str) -> bool {
    r["identifier"].as_array().is_some_and(|ids| {
        ids.iter()
            .any(|i| i["system"] == system && i["value"] == value)
    })
}

fn created(status: StatusCode, id: &str, r: &Value) -> Response {
    let loc = format!("http://sim/fhir/Communication/{id}/_history/1");
    (
        status,
        [
            ("location", loc),
            ("content-type", "application/fhir+json".into()),
        ],
        r.to_string(),
    )
        .into_response()
}

async fn create(State(s): State<FhirServer>, headers: HeaderMap, body: Bytes) -> Response {
    let mut sim = s.0.lock().unwrap();
    let mut c = match r4(&headers, &body, "Communication") {
        Ok(c) => c,
        Err(resp) => {
            sim.wrong_type += 1;
            return *resp;
        }
    };
    let cond = headers
        .get("if-none-exist")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    sim.posts.push((cond.clone(), c.clone()));
    if let Some(cond) = &cond {
        let Some((system, value)) = cond
            .strip_prefix("identifier=")
            .and_then(|v| v.split_once('|'))
        else {
            return outcome(StatusCode::BAD_REQUEST, "invalid");
        };
        let found = sim
            .resources
            .iter()
            .find(|((t, _), r)| t == "Communication" && has_identifier(r, system, value))
            .map(|((_, id), r)| (id.clone(), r.clone()));
        if let Some((id, r)) = found {
            return created(StatusCode::OK, &id, &r);
        }
    }
    sim.next += 1;
    let id = format!("c{}", sim.next);
    c["id"] = json!(id);
    sim.resources
        .insert(("Communication".into(), id.clone()), c.clone());
    if let Some(status) = sim.lose_answers.pop_front() {
        return (
            StatusCode::from_u16(status).unwrap(),
            [("retry-after", "1")],
            String::new(),
        )
            .into_response();
    }
    created(StatusCode::CREATED, &id, &c)
}

async fn read(
    State(s): State<FhirServer>,
    UrlPath((kind, id)): UrlPath<(String, String)>,
) -> Response {
    match s.0.lock().unwrap().resources.get(&(kind, id)) {
        Some(r) => (
            StatusCode::OK,
            [("content-type", "application/fhir+json")],
            r.to_string(),
        )
            .into_response(),
        None => outcome(StatusCode::NOT_FOUND, "not-found"),
    }
}

async fn search(State(s): State<FhirServer>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let Some(target) = q.strip_prefix("in-response-to=") else {
        return outcome(StatusCode::BAD_REQUEST, "not-supported");
    };
    let sim = s.0.lock().unwrap();
    let entries: Vec<Value> = sim
        .resources
        .iter()
        .filter(|((t, _), r)| {
            t == "Communication"
                && r["inResponseTo"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["reference"] == target))
        })
        .map(|(_, r)| json!({ "resource": r }))
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    });
    (
        StatusCode::OK,
        [("content-type", "application/fhir+json")],
        bundle.to_string(),
    )
        .into_response()
}

async fn update(
    State(s): State<FhirServer>,
    UrlPath((kind, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut sim = s.0.lock().unwrap();
    let r = match r4(&headers, &body, &kind) {
        Ok(r) => r,
        Err(resp) => {
            sim.wrong_type += 1;
            return *resp;
        }
    };
    if r["id"] != id.as_str() {
        return outcome(StatusCode::BAD_REQUEST, "invalid");
    }
    sim.puts.push((kind.clone(), id.clone()));
    let existed = sim.resources.insert((kind, id), r.clone()).is_some();
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        [("content-type", "application/fhir+json")],
        r.to_string(),
    )
        .into_response()
}

impl FhirServer {
    pub async fn start(&self) -> SocketAddr {
        let app = axum::Router::new()
            .route("/fhir/Communication", post(create).get(search))
            .route("/fhir/{kind}/{id}", get(read).put(update))
            .with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        addr
    }

    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .resources
            .iter()
            .filter(|((t, _), _)| t == kind)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn get(&self, kind: &str, id: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .resources
            .get(&(kind.to_string(), id.to_string()))
            .cloned()
    }

    /// What the EHR's clients do: change a stored resource, add another.
    pub fn put(&self, kind: &str, id: &str, r: Value) {
        self.0
            .lock()
            .unwrap()
            .resources
            .insert((kind.into(), id.into()), r);
    }
}

const ROSTER: &str = r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = { fhir = "Practitioner/123" }
ids = [{ value = "9990000123", authority = "NPI" }]

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = { fhir = "Practitioner/456" }

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

/// Critical results in the ICU page rn-a; after `tier_secs` unanswered,
/// rn-b.
fn mapping(tier_secs: u64) -> String {
    format!(
        r#"
[[rules]]
name = "icu-critical"
match = {{ kind = "result", flags = ["HH"], units = ["ICU"] }}
route = {{ person = "rn-a", priority = "stat", escalation = "short" }}

[escalations.short]
tiers = [{{ route = true, timeout_secs = {tier_secs} }}, {{ failsafe = true, timeout_secs = 600 }}]
"#
    )
}

fn setup(
    dir: &Path,
    fhir: SocketAddr,
    writeback: Option<SocketAddr>,
    tier_secs: u64,
) -> std::path::PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("rosters/ward.toml"), ROSTER).unwrap();
    std::fs::write(dir.join("mappings/m.toml"), mapping(tier_secs)).unwrap();
    let wb = writeback
        .map(|w| {
            format!(
                "[alerts.writeback]\nfhir_base = \"http://{w}/fhir\"\nretry_initial_ms = 200\nretry_max_secs = 1\n"
            )
        })
        .unwrap_or_default();
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n{wb}\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[operators]]\nname = \"ops\"\ntokens_sha256 = [\"{}\"]\nnetworks = [\"127.0.0.0/8\"]\npermissions = [\"alerts:ack\", \"alerts:read\"]\n\
[[backends]]\nname = \"ehr\"\nkind = \"fhir-communication\"\ncontact = \"fhir\"\nurl = \"http://{fhir}/fhir\"\nprofile = \"limited\"\n\
retry_initial_ms = 200\nretry_max_secs = 2\nmax_attempts = 6\npoll_secs = 1\n",
        hex::encode(Sha256::digest(OPS_TOKEN.as_bytes()))
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(config: &Path) -> Gateway {
    Gateway::start(switchboard::config::load(config).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap()
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("data/journal.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

fn query<T: rusqlite::types::FromSql>(dir: &Path, sql: &str) -> Vec<T> {
    let c = db(dir);
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The notifications' (member, state, remote_ref).
fn notifications(dir: &Path) -> Vec<(String, String, Option<String>)> {
    let c = db(dir);
    let mut stmt = c
        .prepare("SELECT member, state, remote_ref FROM notifications ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The resource as text without its ids and times (hashes and clocks
/// could spell a canary's digits by chance).
fn without_ids(r: &Value) -> String {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        for k in [
            "id",
            "identifier",
            "sent",
            "received",
            "authoredOn",
            "lastModified",
            "basedOn",
        ] {
            o.remove(k);
        }
    }
    r.to_string()
}

async fn send_critical(g: &Gateway, id: &str) {
    let mut c = Mllp::connect(g.mllp_addr()).await;
    assert_eq!(
        crate::support::ack_code(&c.roundtrip(&oru(id, "ICU")).await),
        "AA"
    );
}

async fn api(g: &Gateway, method: &str, path: &str, body: &str) -> crate::fhir::HttpResponse {
    let auth = format!("Bearer {OPS_TOKEN}");
    crate::fhir::request(
        g.http_addr(),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn a_critical_result_becomes_one_valid_r4_communication_with_the_limited_text_only() {
    let sim = FhirServer::default();
    let fhir = sim.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = start(&setup(dir.path(), fhir, None, 600)).await;
    send_critical(&g, "F1").await;
    wait_until("no Communication created", 20, || {
        !sim.of("Communication").is_empty()
    })
    .await;
    wait_until("not marked delivered", 10, || {
        notifications(dir.path())
            .first()
            .is_some_and(|n| n.1 == "delivered")
    })
    .await;
    let comms = sim.of("Communication");
    assert_eq!(comms.len(), 1, "{comms:?}");
    let c = &comms[0];
    assert_eq!(c["status"], "in-progress");
    assert_eq!(c["priority"], "stat");
    assert_eq!(c["recipient"][0]["reference"], "Practitioner/123");
    assert_eq!(c["category"][0]["coding"][0]["code"], "alert");
    assert!(c.get("basedOn").is_none(), "limited: no order number");
    assert!(c.get("subject").is_none(), "no patient");
    let text = c["payload"][0]["contentString"].as_str().unwrap();
    assert!(text.starts_with("STAT"), "{text}");
    let all = without_ids(c).to_uppercase();
    for canary in [
        "ZZCANARY",
        "PHIPERSON",
        "ZZMRN",
        "19700101",
        "555",
        "CANARY ROAD",
        "PLF1",
        "FLF1",
    ] {
        assert!(
            !all.contains(canary),
            "{canary} left under `limited`: {all}"
        );
    }
    let (wrong_type, cond) = {
        let sim_state = sim.0.lock().unwrap();
        (sim_state.wrong_type, sim_state.posts[0].0.clone())
    };
    assert_eq!(wrong_type, 0, "always application/fhir+json");
    let value = c["identifier"][0]["value"].as_str().unwrap();
    assert_eq!(c["identifier"][0]["system"], "urn:ietf:rfc:3986");
    assert_eq!(
        cond.as_deref(),
        Some(format!("identifier=urn:ietf:rfc:3986|{value}").as_str())
    );
    // The remote id is what the journal knows the notification by.
    assert_eq!(notifications(dir.path())[0].2.as_deref(), Some("c1"));
    // Nothing more is created later (the poller reads, never writes).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sim.of("Communication").len(), 1);
    assert_eq!(sim.0.lock().unwrap().posts.len(), 1);
    g.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_then_a_retry_creates_exactly_one_communication() {
    let sim = FhirServer::default();
    sim.0.lock().unwrap().lose_answers.push_back(503);
    let fhir = sim.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = start(&setup(dir.path(), fhir, None, 600)).await;
    send_critical(&g, "F2").await;
    wait_until("not delivered after the 503", 20, || {
        notifications(dir.path())
            .first()
            .is_some_and(|n| n.1 == "delivered")
    })
    .await;
    let posts = sim.0.lock().unwrap().posts.clone();
    assert_eq!(posts.len(), 2, "one 503 (stored, answer lost), one retry");
    assert_eq!(posts[0].0, posts[1].0, "the same If-None-Exist");
    assert_eq!(
        posts[0].1["identifier"], posts[1].1["identifier"],
        "the same identifier"
    );
    assert_eq!(
        sim.of("Communication").len(),
        1,
        "exactly one Communication"
    );
    assert_eq!(
        notifications(dir.path())[0].2.as_deref(),
        Some("c1"),
        "the first one's id"
    );
    let attempts: Vec<i64> = query(dir.path(), "SELECT attempts FROM notifications");
    assert_eq!(attempts, [2]);
    g.shutdown().await;
}

#[tokio::test]
async fn status_flows_back_a_reply_accept_accepts_and_stops_the_escalation() {
    let sim = FhirServer::default();
    let fhir = sim.start().await;
    let dir = tempfile::tempdir().unwrap();
    // Unanswered, rn-b would be told after 6 s.
    let g = start(&setup(dir.path(), fhir, None, 6)).await;
    send_critical(&g, "F3").await;
    wait_until("not delivered", 20, || {
        notifications(dir.path())
            .first()
            .is_some_and(|n| n.1 == "delivered")
    })
    .await;
    // The app marks it received and read, then the nurse answers "accept".
    let mut c = sim.get("Communication", "c1").unwrap();
    c["received"] = json!("2026-11-23T12:00:01Z");
    c["status"] = json!("completed");
    sim.put("Communication", "c1", c);
    sim.put(
        "Communication",
        "r1",
        json!({
            "resourceType": "Communication",
            "id": "r1",
            "status": "completed",
            "inResponseTo": [{ "reference": "Communication/c1" }],
            "sender": { "reference": "Practitioner/123" },
            "payload": [{ "contentString": "Accept" }],
        }),
    );
    wait_until("the reply did not accept the alert", 10, || {
        query::<String>(dir.path(), "SELECT state FROM alerts") == ["accepted"]
    })
    .await;
    // Past the tier timeout: nobody else was told.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let members: Vec<String> = notifications(dir.path()).into_iter().map(|n| n.0).collect();
    assert_eq!(members, ["rn-a"], "the escalation stopped");
    assert!(
        sim.of("Communication")
            .iter()
            .all(|c| c["recipient"][0]["reference"] != "Practitioner/456"),
        "rn-b never paged"
    );
    let r = api(&g, "GET", "/api/v1/alerts/1", "").await;
    let v = r.json();
    let steps: Vec<String> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["what"].as_str().unwrap().to_string())
        .collect();
    let count = |w: &str| steps.iter().filter(|s| s.as_str() == w).count();
    assert_eq!(count("delivered to rn-a"), 1, "{steps:?}");
    assert_eq!(
        count("read by rn-a"),
        1,
        "polling again adds nothing: {steps:?}"
    );
    assert_eq!(count("accepted by rn-a"), 1, "{steps:?}");
    g.shutdown().await;
}

#[tokio::test]
async fn a_reply_from_someone_else_changes_nothing() {
    let sim = FhirServer::default();
    let fhir = sim.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = start(&setup(dir.path(), fhir, None, 600)).await;
    send_critical(&g, "F4").await;
    wait_until("not delivered", 20, || {
        notifications(dir.path())
            .first()
            .is_some_and(|n| n.1 == "delivered")
    })
    .await;
    sim.put(
        "Communication",
        "r9",
        json!({
            "resourceType": "Communication",
            "id": "r9",
            "status": "completed",
            "inResponseTo": [{ "reference": "Communication/c1" }],
            "sender": { "reference": "Practitioner/999" },
            "payload": [{ "contentString": "accept" }],
        }),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        query::<String>(dir.path(), "SELECT state FROM alerts"),
        ["delivered"]
    );
    g.shutdown().await;
}

#[tokio::test]
async fn the_writeback_task_follows_the_alert_and_the_communication_shows_when_it_was_received() {
    let sim = FhirServer::default();
    let fhir = sim.start().await;
    let ehr = FhirServer::default();
    let wb = ehr.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = start(&setup(dir.path(), fhir, Some(wb), 600)).await;
    send_critical(&g, "F5").await;
    let task = || ehr.of("Task").into_iter().next();
    wait_until("no Task received", 20, || {
        task().is_some_and(|t| t["status"] == "received")
    })
    .await;
    let t = task().unwrap();
    assert!(t["id"].as_str().unwrap().starts_with("sb-"), "{t}");
    assert_eq!(t["intent"], "order");
    assert!(
        t.get("for").is_none() && t.get("focus").is_none(),
        "limited: {t}"
    );
    let comms = ehr.of("Communication");
    assert_eq!(comms.len(), 1, "one per recipient: {comms:?}");
    let c = &comms[0];
    assert_eq!(c["recipient"][0]["reference"], "Practitioner/123");
    assert_eq!(
        c["basedOn"][0]["reference"],
        format!("Task/{}", t["id"].as_str().unwrap())
    );
    assert!(c["sent"].is_string());
    assert!(c["received"].is_string(), "received after delivery: {c}");
    assert_eq!(c["status"], "completed");
    let all = format!("{}{}", without_ids(&t), without_ids(c)).to_uppercase();
    for canary in ["ZZCANARY", "PHIPERSON", "ZZMRN", "19700101"] {
        assert!(!all.contains(canary), "{canary} written back: {all}");
    }
    // Accepted by rn-a through the API: the Task is accepted and owned.
    let r = api(
        &g,
        "POST",
        "/api/v1/alerts/1/ack",
        r#"{"action":"accept","member":"rn-a"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    wait_until("the Task was not accepted", 10, || {
        task().is_some_and(|t| t["status"] == "accepted")
    })
    .await;
    let t = task().unwrap();
    assert_eq!(t["owner"]["reference"], "Practitioner/123");
    let r = api(
        &g,
        "POST",
        "/api/v1/alerts/1/ack",
        r#"{"action":"resolve","member":"rn-a"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    wait_until("the Task was not completed", 10, || {
        task().is_some_and(|t| t["status"] == "completed")
    })
    .await;
    // Every report was sent, each PUT was to a client-assigned id, and
    // nothing was created twice.
    wait_until("status reports left", 10, || {
        query::<String>(
            dir.path(),
            "SELECT state FROM status_reports WHERE state != 'done'",
        )
        .is_empty()
    })
    .await;
    assert_eq!(ehr.of("Task").len(), 1);
    assert_eq!(ehr.of("Communication").len(), 1);
    assert_eq!(ehr.0.lock().unwrap().wrong_type, 0);
    let sent: i64 = query(
        dir.path(),
        "SELECT COUNT(*) FROM audit WHERE action = 'status.sent'",
    )[0];
    assert!(sent >= 3, "{sent}");
    g.shutdown().await;
}

#[tokio::test]
async fn the_writeback_waits_out_an_ehr_outage_and_loses_nothing() {
    let sim = FhirServer::default();
    let fhir = sim.start().await;
    // The EHR is down at first: nothing listens on its port.
    let port = crate::delivery::free_port();
    let wb: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start(&setup(dir.path(), fhir, Some(wb), 600)).await;
    send_critical(&g, "F6").await;
    wait_until("not delivered", 20, || {
        notifications(dir.path())
            .first()
            .is_some_and(|n| n.1 == "delivered")
    })
    .await;
    let r = api(
        &g,
        "POST",
        "/api/v1/alerts/1/ack",
        r#"{"action":"accept","member":"rn-a"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    wait_until("no retries recorded", 10, || {
        !query::<String>(
            dir.path(),
            "SELECT state FROM status_reports WHERE state = 'retrying'",
        )
        .is_empty()
    })
    .await;
    // The EHR comes back on its port.
    let ehr = FhirServer::default();
    let app_ehr = ehr.clone();
    let l = tokio::net::TcpListener::bind(wb).await.unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route("/fhir/Communication", post(create).get(search))
            .route("/fhir/{kind}/{id}", get(read).put(update))
            .with_state(app_ehr);
        let _ = axum::serve(l, app).await;
    });
    wait_until("the Task never arrived accepted", 20, || {
        ehr.of("Task")
            .first()
            .is_some_and(|t| t["status"] == "accepted")
    })
    .await;
    wait_until("status reports left", 10, || {
        query::<String>(
            dir.path(),
            "SELECT state FROM status_reports WHERE state != 'done'",
        )
        .is_empty()
    })
    .await;
    assert!(ehr.of("Communication")[0]["received"].is_string());
    g.shutdown().await;
}
