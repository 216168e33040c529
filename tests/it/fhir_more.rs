//! The FHIR door, more: FHIR XML input over real HTTP (the same answers as
//! the JSON equivalents, errors as OperationOutcomes, the journal keeping
//! the XML as received with its media type), and fhir-kit-client (npm, a
//! FHIR client library nobody here wrote) driving the gateway.
//!
//! fhir-kit-client is installed on demand by `tests/interop/setup_fhir.sh`
//! into `target/interop/node-fhir`. A missing `node`/`npm`, or an install
//! that fails, FAILS the test with the reason: it never passes silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fhirbolt::model::r4::Resource as R4Resource;
use serde_json::Value;

use crate::fhir::{FhirGateway, HttpResponse, TOKEN, observation, request, start_fhir_gateway};

const FHIR_JSON: &str = "application/fhir+json";
const FHIR_XML: &str = "application/fhir+xml";

/// POST with the sender's token and the given content type.
async fn post(g: &FhirGateway, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    request(
        g.http(),
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        body,
    )
    .await
}

/// FHIR JSON to FHIR XML, written by fhirbolt (strict R4 model), without
/// the XML declaration so it can be nested by hand.
fn to_xml(json: &str) -> String {
    let r: R4Resource = fhirbolt::json::from_str(json, None).expect("valid R4 JSON");
    let xml = fhirbolt::xml::to_string(&r, None).unwrap();
    match xml.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").unwrap() + 2..]
            .trim_start()
            .to_string(),
        None => xml,
    }
}

/// A Bundle written by hand following the FHIR XML rules: each entry's
/// resource inside `<resource>`, elements in specification order.
fn xml_bundle(ty: &str, resources: &[String]) -> String {
    let entries: String = resources
        .iter()
        .map(|r| {
            format!(
                "<entry><resource>{r}</resource><request><method value=\"POST\"/><url value=\"Observation\"/></request></entry>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Bundle xmlns=\"http://hl7.org/fhir\"><type value=\"{ty}\"/>{entries}</Bundle>"
    )
}

/// The same Bundle in JSON.
fn json_bundle(ty: &str, resources: &[String]) -> String {
    let e: Vec<String> = resources
        .iter()
        .map(|r| format!(r#"{{"resource":{r},"request":{{"method":"POST","url":"Observation"}}}}"#))
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"{ty}","entry":[{}]}}"#,
        e.join(",")
    )
}

/// `(control_id, raw_charset)` of every journal row.
fn media_types(g: &FhirGateway) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open_with_flags(
        g.journal(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = c
        .prepare("SELECT control_id, raw_charset FROM messages ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every row's raw content, newest first, through `switchboard messages
/// --show-content` (the keys are needed to read it).
fn raw_contents(g: &FhirGateway) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["messages", "--json", "--show-content", "--by", "it-test"])
        .arg("--config")
        .arg(g.dir.path().join("switchboard.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["raw"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn row<'a>(
    rows: &'a [switchboard::journal::MessageSummary],
    control_id: &str,
) -> &'a switchboard::journal::MessageSummary {
    rows.iter()
        .find(|r| r.control_id == control_id)
        .unwrap_or_else(|| panic!("no journal row {control_id}"))
}

#[tokio::test]
async fn xml_observation_gets_the_same_answer_as_json() {
    let g = start_fhir_gateway().await;
    let json = observation("XJ-1", "final");
    let xml = to_xml(&observation("XX-1", "final"));
    let a = post(&g, "/fhir/Observation", FHIR_JSON, json.as_bytes()).await;
    let b = post(&g, "/fhir/Observation", FHIR_XML, xml.as_bytes()).await;
    assert_eq!(a.status, 201, "{}", a.json());
    assert_eq!(b.status, a.status, "{}", b.json());
    assert_eq!(b.json(), a.json(), "same OperationOutcome");
    assert_eq!(
        b.header("content-type"),
        Some(FHIR_JSON),
        "answers are JSON"
    );
    assert!(
        b.header("location")
            .unwrap()
            .starts_with("/fhir/Observation/")
    );

    // application/xml with a charset parameter is FHIR XML too; a repeat
    // (same business identifier) is answered 200 without a second event.
    let xml2 = to_xml(&observation("XX-2", "final"));
    let c = post(
        &g,
        "/fhir/Observation",
        "application/xml; charset=utf-8",
        xml2.as_bytes(),
    )
    .await;
    assert_eq!(c.status, 201, "{}", c.json());
    let d = post(&g, "/fhir/Observation", FHIR_XML, xml.as_bytes()).await;
    assert_eq!(d.status, 200, "{}", d.json());
    assert_eq!(d.json(), a.json());

    let rows = g.rows();
    assert_eq!(rows.len(), 3, "the repeat made no new row");
    let (rj, rx) = (
        row(&rows, "Observation|urn:lab|XJ-1"),
        row(&rows, "Observation|urn:lab|XX-1"),
    );
    assert_eq!(rx.fate, rj.fate);
    assert_eq!(rx.message_type, rj.message_type);
    assert_eq!(rx.events, rj.events);
    assert_eq!(rx.events, 1);
    assert_eq!(rx.resends, 1);

    let media: HashMap<String, String> = media_types(&g).into_iter().collect();
    assert_eq!(media["Observation|urn:lab|XJ-1"], FHIR_JSON);
    assert_eq!(media["Observation|urn:lab|XX-1"], FHIR_XML);
    assert_eq!(media["Observation|urn:lab|XX-2"], "application/xml");
    // The journal keeps the bytes as received: the XML, not the JSON made of it.
    let raws = raw_contents(&g);
    assert!(raws.contains(&xml), "XML kept as received: {raws:?}");
    assert!(raws.contains(&xml2));
    assert!(raws.contains(&json));
}

#[tokio::test]
async fn xml_transaction_bundle_gets_the_same_answers_as_json() {
    let g = start_fhir_gateway().await;
    let obs = |id: &str| observation(id, "final");
    let json = json_bundle("transaction", &[obs("TJ-1"), obs("TJ-2")]);
    let xml = xml_bundle("transaction", &[to_xml(&obs("TX-1")), to_xml(&obs("TX-2"))]);
    let a = post(&g, "/fhir", FHIR_JSON, json.as_bytes()).await;
    let b = post(&g, "/fhir", FHIR_XML, xml.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.json());
    assert_eq!(b.status, 200, "{}", b.json());
    let (ja, jb) = (a.json(), b.json());
    assert_eq!(jb["type"], "transaction-response");
    assert_eq!(jb["type"], ja["type"]);
    let entries = |j: &Value| -> Vec<(String, String)> {
        j["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let loc = e["response"]["location"].as_str().unwrap_or_default();
                (
                    e["response"]["status"].as_str().unwrap().to_string(),
                    loc[..loc.rfind('/').unwrap_or(0)].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(entries(&jb), entries(&ja));
    assert_eq!(
        entries(&jb),
        vec![("201 Created".to_string(), "/fhir/Observation".to_string()); 2]
    );

    // All or nothing, with the entry at fault named the same way.
    let bad_json = json_bundle(
        "transaction",
        &[obs("TJ-3"), obs("TJ-4").replace(r#""status":"final","#, "")],
    );
    let bad_xml_obs = to_xml(&obs("TX-4"));
    assert!(
        bad_xml_obs.contains(r#"<status value="final"/>"#),
        "{bad_xml_obs}"
    );
    let bad_xml = xml_bundle(
        "transaction",
        &[
            to_xml(&obs("TX-3")),
            bad_xml_obs.replace(r#"<status value="final"/>"#, ""),
        ],
    );
    let c = post(&g, "/fhir", FHIR_JSON, bad_json.as_bytes()).await;
    let d = post(&g, "/fhir", FHIR_XML, bad_xml.as_bytes()).await;
    assert_eq!(c.status, 422, "{}", c.json());
    assert_eq!(d.status, c.status, "{}", d.json());
    assert_eq!(d.issue(), c.issue());
    assert!(
        d.issue().1.starts_with("Bundle.entry[1]"),
        "{:?}",
        d.issue()
    );

    let rows = g.rows();
    assert_eq!(rows.len(), 4);
    let accepted: Vec<u32> = rows
        .iter()
        .filter(|r| r.fate.as_str() == "accepted")
        .map(|r| r.events)
        .collect();
    assert_eq!(accepted, vec![2, 2], "both transactions: two events each");
    let media: Vec<String> = media_types(&g).into_iter().map(|(_, m)| m).collect();
    assert_eq!(media, [FHIR_JSON, FHIR_XML, FHIR_JSON, FHIR_XML]);
}

#[tokio::test]
async fn malformed_xml_is_400_structure() {
    let g = start_fhir_gateway().await;
    let good = to_xml(&observation("XM-1", "final"));
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "truncated",
            "/fhir/Observation",
            good[..good.len() - 20].to_string(),
        ),
        (
            "JSON sent as XML",
            "/fhir/Observation",
            observation("XM-2", "final"),
        ),
        (
            "unknown element",
            "/fhir/Observation",
            good.replace("<status ", "<bogus value=\"1\"/><status "),
        ),
        (
            "no FHIR namespace",
            "/fhir/Observation",
            good.replace(" xmlns=\"http://hl7.org/fhir\"", ""),
        ),
        (
            "DTD with an entity",
            "/fhir/Observation",
            format!("<!DOCTYPE Observation [<!ENTITY x \"y\">]>{good}"),
        ),
        (
            "too deep",
            "/fhir/Observation",
            good.replace(
                "<status ",
                &format!(
                    "{}{}<status ",
                    "<extension url=\"u\">".repeat(5000),
                    "</extension>".repeat(5000)
                ),
            ),
        ),
        (
            "truncated Bundle",
            "/fhir",
            xml_bundle("transaction", std::slice::from_ref(&good)).replace("</Bundle>", ""),
        ),
    ];
    for (what, path, body) in &cases {
        let r = post(&g, path, FHIR_XML, body.as_bytes()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.json());
        assert_eq!(r.issue().0, "structure", "{what}");
        assert_eq!(r.header("content-type"), Some(FHIR_JSON), "{what}");
    }
    let rows = g.rows();
    assert_eq!(rows.len(), cases.len(), "every request journaled");
    assert!(rows.iter().all(|r| r.fate.as_str() == "rejected"));
    assert!(media_types(&g).iter().all(|(_, m)| m == FHIR_XML));
    let raws = raw_contents(&g);
    assert!(raws.contains(&cases[0].2), "rejected XML kept as received");
}

#[tokio::test]
async fn xml_with_a_resource_type_mismatch_is_400_invalid() {
    let g = start_fhir_gateway().await;
    let encounter = r#"{"resourceType":"Encounter","status":"in-progress","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"IMP"},"subject":{"reference":"Patient/1"}}"#;
    let xml = to_xml(encounter);
    let a = post(&g, "/fhir/Observation", FHIR_JSON, encounter.as_bytes()).await;
    let b = post(&g, "/fhir/Observation", FHIR_XML, xml.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.issue().0, "invalid");
    assert_eq!(b.status, 400, "{}", b.json());
    assert_eq!(b.issue(), a.issue());
    assert_eq!(b.json(), a.json());
    // A resource where a Bundle belongs.
    let obs = to_xml(&observation("XR-1", "final"));
    let c = post(&g, "/fhir", FHIR_XML, obs.as_bytes()).await;
    let d = post(
        &g,
        "/fhir",
        FHIR_JSON,
        observation("XR-1", "final").as_bytes(),
    )
    .await;
    assert_eq!(c.status, 400, "{}", c.json());
    assert_eq!(c.issue().0, "invalid");
    assert_eq!(c.json(), d.json());
    // And the CapabilityStatement says XML is accepted.
    let m = request(g.http(), "GET", "/fhir/metadata", &[], b"").await;
    let formats = m.json()["format"].clone();
    assert!(
        formats.as_array().unwrap().contains(&Value::from(FHIR_XML)),
        "{formats}"
    );
}

// --- fhir-kit-client -------------------------------------------------------

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target dir>/interop` (as tests/it/interop.rs).
fn interop_root() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) if Path::new(t).is_absolute() => PathBuf::from(t),
        Some(t) => manifest_dir().join(t),
        None => manifest_dir().join("target"),
    };
    target.join("interop")
}

/// Installs (or reuses) fhir-kit-client; the folder holding its node_modules.
fn fhir_kit_client() -> PathBuf {
    let script = manifest_dir().join("tests/interop/setup_fhir.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg(interop_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "fhir-kit-client is required for this test: {} failed ({}):\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    interop_root().join("node-fhir")
}

#[tokio::test]
async fn fhir_kit_client_creates_sends_a_transaction_and_reads_the_capability_statement() {
    let modules = tokio::task::spawn_blocking(fhir_kit_client).await.unwrap();
    let g = start_fhir_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let obs = file("obs.json", &observation("FKC-1", "final"));
    let cond = file("cond.json", &observation("FKC-2", "final"));
    let invalid = file(
        "invalid.json",
        &observation("FKC-3", "final").replace(r#""status":"final","#, ""),
    );
    let bundle = file(
        "bundle.json",
        &json_bundle(
            "transaction",
            &[observation("FKC-4", "final"), observation("FKC-5", "final")],
        ),
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(manifest_dir().join("tests/interop/fhir_client.js"))
        .arg("--modules")
        .arg(&modules)
        .args(["--base", &format!("http://{}/fhir", g.http())])
        .args(["--token", TOKEN])
        .arg("--observation")
        .arg(&obs)
        .arg("--conditional")
        .arg(&cond)
        .arg("--invalid")
        .arg(&invalid)
        .arg("--bundle")
        .arg(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("fhir_client.js did not finish in 60 s")
        .unwrap_or_else(|e| panic!("cannot run node (is it installed? CI installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fhir_client.js failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: HashMap<String, Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("fhir_client.js printed a non-JSON line {l:?}: {e}"));
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let step = |name: &str| {
        steps
            .get(name)
            .unwrap_or_else(|| panic!("no step {name} in {stdout}"))
    };

    let m = step("metadata");
    assert_eq!(m["status"], 200, "{m}");
    assert_eq!(m["body"]["resourceType"], "CapabilityStatement");
    assert_eq!(m["body"]["fhirVersion"], "4.0.1");
    assert_eq!(
        m["body"]["rest"][0]["interaction"][1]["code"], "transaction",
        "{m}"
    );

    let c = step("create");
    assert_eq!(c["status"], 201, "{c}");
    assert!(
        c["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/fhir/Observation/")),
        "{c}"
    );
    assert_eq!(c["body"]["resourceType"], "OperationOutcome");
    assert_eq!(c["contentType"], FHIR_JSON);

    assert_eq!(step("conditional-1")["status"], 201);
    assert_eq!(
        step("conditional-2")["status"],
        200,
        "conditional create repeat"
    );

    let bad = step("invalid");
    assert_eq!(bad["status"], 422, "{bad}");
    assert_eq!(bad["error"], true);
    assert_eq!(bad["body"]["issue"][0]["code"], "required");
    assert_eq!(
        bad["body"]["issue"][0]["expression"][0],
        "Observation.status"
    );

    // fhir-kit-client POSTs a transaction to `[base]/` (with the slash),
    // as many FHIR clients do: the gateway must route it like `[base]`.
    let t = step("transaction");
    assert_eq!(
        t["status"], 200,
        "{t}: POST {{base}}/ must take batch and transaction Bundles"
    );
    assert_eq!(t["body"]["type"], "transaction-response");
    let entries = t["body"]["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created");
    }

    // The journal has every request that reached it, each with its fate.
    let rows = g.rows();
    assert_eq!(
        rows.len(),
        4,
        "create, conditional create, invalid, transaction"
    );
    let created = row(&rows, "Observation|urn:lab|FKC-1");
    assert_eq!((created.fate.as_str(), created.events), ("accepted", 1));
    let cond = row(&rows, "Observation?identifier=urn:lab|FKC-2");
    assert_eq!(
        (cond.fate.as_str(), cond.events, cond.resends),
        ("accepted", 1, 1)
    );
    let rejected: Vec<_> = rows
        .iter()
        .filter(|r| r.fate.as_str() == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].error_code, Some(422));
    let tx: Vec<_> = rows
        .iter()
        .filter(|r| r.fate.as_str() == "accepted" && r.events == 2)
        .collect();
    assert_eq!(tx.len(), 1, "the transaction: one row, two events");
}
