//! The FHIR door over real HTTP: every corpus resource and Bundle, repeats,
//! every error with its OperationOutcome, authentication, and curl as a
//! client nobody here wrote.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard::app::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

pub(crate) const TOKEN: &str = "lab-fhir-token-for-tests";

/// A response: status, headers (lower-case names), body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The first OperationOutcome issue: (code, expression).
    pub fn issue(&self) -> (String, String) {
        let j = self.json();
        assert_eq!(j["resourceType"], "OperationOutcome", "{j}");
        let i = &j["issue"][0];
        (
            i["code"].as_str().unwrap_or("").to_string(),
            i["expression"][0].as_str().unwrap_or("").to_string(),
        )
    }
}

/// A minimal HTTP/1.1 client over a raw socket (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_request(addr, method, path, headers, body)
        .await
        .expect("an HTTP response")
}

/// Like [`request`], `None` when the connection fails or no response comes.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    }) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(nl + 2..nl + 2 + size)?);
            rest = rest.get(nl + 2 + size + 2..)?;
        }
        body = out;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn fhir_config_text(data: &std::path::Path, extra_http: &str) -> String {
    let digest = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    format!(
        "[storage]\ndata_dir = \"{}\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 1048576\n{extra_http}\n\
[[senders]]\nname = \"lab-fhir\"\nmsh3 = [\"LABFHIR\"]\nmsh4 = [\"*\"]\ntokens_sha256 = [\"{digest}\"]\nnetworks = [\"127.0.0.0/8\"]\ntimezone = \"America/New_York\"\n\n\
[[senders]]\nname = \"far-fhir\"\nmsh3 = [\"FARFHIR\"]\nmsh4 = [\"*\"]\ntokens_sha256 = [\"{}\"]\nnetworks = [\"10.99.0.0/16\"]\n",
        data.display(),
        hex::encode(Sha256::digest(b"far-token"))
    )
}

pub struct FhirGateway {
    pub gw: Gateway,
    pub dir: tempfile::TempDir,
}

impl FhirGateway {
    pub fn http(&self) -> SocketAddr {
        self.gw.http_addr()
    }
    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("data/journal.sqlite3")
    }
    pub fn rows(&self) -> Vec<switchboard::journal::MessageSummary> {
        use switchboard::journal::{MessageQuery, SqliteStorage, Storage};
        let mut s = SqliteStorage::open_read_only(&self.journal(), None).unwrap();
        s.messages(&MessageQuery {
            limit: 100_000,
            ..Default::default()
        })
        .unwrap()
    }
    pub async fn post(&self, path: &str, body: &[u8]) -> HttpResponse {
        let auth = format!("Bearer {TOKEN}");
        request(
            self.http(),
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/fhir+json"),
            ],
            body,
        )
        .await
    }
}

pub async fn start_fhir_gateway() -> FhirGateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, fhir_config_text(&dir.path().join("data"), "")).unwrap();
    let gw = Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    FhirGateway { gw, dir }
}

fn corpus(dir: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(dir);
    if !p.is_dir() {
        note(&format!(
            "corpus not found at {}: skipping corpus test",
            p.display()
        ));
        return None;
    }
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&p)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    Some(files)
}

const SUPPORTED: &[&str] = &[
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Encounter",
    "Flag",
    "DetectedIssue",
    "Communication",
    "CommunicationRequest",
];

#[tokio::test]
async fn every_corpus_resource_of_a_supported_type_is_created() {
    let Some(files) = corpus("fhir-r4") else {
        return;
    };
    let g = start_fhir_gateway().await;
    let mut created = 0;
    let mut repeats = 0;
    let mut failures = Vec::new();
    // Examples that share a business identifier are, by FHIR's own rule,
    // the same thing sent again: answered 200 with the first Location.
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    for (name, bytes) in &files {
        let kind = name.split('-').next().unwrap();
        if !SUPPORTED.contains(&kind) {
            continue;
        }
        let v: Value = serde_json::from_slice(bytes).unwrap();
        let ident = match &v["identifier"] {
            Value::Array(a) => a.first().cloned(),
            Value::Object(_) => Some(v["identifier"].clone()),
            _ => None,
        };
        let key = ident.filter(|i| i["value"].is_string()).map(|i| {
            format!(
                "{kind}|{}|{}",
                i["system"].as_str().unwrap_or(""),
                i["value"].as_str().unwrap_or("")
            )
        });
        let r = g.post(&format!("/fhir/{kind}"), bytes).await;
        if let Some(first) = key.as_ref().and_then(|k| seen.get(k)) {
            if r.status != 200 || r.header("location") != Some(first.as_str()) {
                failures.push(format!(
                    "{name}: repeat answered {} {:?}",
                    r.status,
                    r.header("location")
                ));
            }
            repeats += 1;
            continue;
        }
        if let (Some(k), Some(loc)) = (key, r.header("location")) {
            seen.insert(k, loc.to_string());
        }
        if r.status == 201 {
            created += 1;
            let loc = r.header("location").unwrap_or("");
            if !loc.starts_with(&format!("/fhir/{kind}/")) {
                failures.push(format!("{name}: Location {loc}"));
            }
        } else {
            failures.push(format!(
                "{name}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(created + repeats, 111);
    assert_eq!(repeats, 5, "corpus examples sharing an identifier");
    let rows = g.rows();
    assert_eq!(rows.len(), created);
    assert!(
        rows.iter()
            .all(|r| r.fate.as_str() == "accepted" && r.events >= 1),
        "each produced events"
    );
}

#[tokio::test]
async fn corpus_bundles_and_messages_are_processed() {
    let Some(files) = corpus("fhir-r4") else {
        return;
    };
    let g = start_fhir_gateway().await;
    for (name, bytes) in files.iter().filter(|(n, _)| n.starts_with("Bundle-")) {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        let ty = v["type"].as_str().unwrap().to_string();
        let r = match ty.as_str() {
            "message" => g.post("/fhir/$process-message", bytes).await,
            _ => g.post("/fhir", bytes).await,
        };
        match ty.as_str() {
            "batch" | "transaction" | "message" => {
                assert!(
                    r.status == 200 || r.status == 400 || r.status == 422,
                    "{name}: {}",
                    r.status
                );
                let j = r.json();
                if r.status == 200 {
                    let want = match ty.as_str() {
                        "batch" => "batch-response",
                        "transaction" => "transaction-response",
                        _ => "message",
                    };
                    assert_eq!(j["type"], want, "{name}");
                } else {
                    // The transaction names the entry at fault.
                    let (_, expr) = r.issue();
                    assert!(expr.starts_with("Bundle.entry["), "{name}: {expr}");
                }
            }
            _ => {
                assert_eq!(r.status, 400, "{name}: {ty} is refused at the base");
                assert_eq!(
                    r.issue(),
                    ("invalid".to_string(), "Bundle.type".to_string())
                );
            }
        }
    }
}

pub(crate) fn observation(id: &str, status: &str) -> String {
    format!(
        r#"{{"resourceType":"Observation","identifier":[{{"system":"urn:lab","value":"{id}"}}],"status":"{status}",
"code":{{"coding":[{{"system":"http://loinc.org","code":"2823-3","display":"Potassium"}}]}},
"subject":{{"identifier":{{"system":"urn:mrn","value":"ZZCANARY-1"}}}},
"valueQuantity":{{"value":6.9,"unit":"mmol/L"}},
"interpretation":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"HH"}}]}}]}}"#
    )
}

#[tokio::test]
async fn repeats_are_answered_without_a_second_event() {
    let g = start_fhir_gateway().await;
    let first = g
        .post("/fhir/Observation", observation("K1", "final").as_bytes())
        .await;
    assert_eq!(first.status, 201);
    let again = g
        .post("/fhir/Observation", observation("K1", "final").as_bytes())
        .await;
    assert_eq!(again.status, 200, "a repeat is not created twice");
    assert_eq!(again.header("location"), first.header("location"));
    // Conditional create: the query decides, whatever the body.
    let auth = format!("Bearer {TOKEN}");
    let cond = |id: &'static str| {
        let auth = auth.clone();
        let addr = g.http();
        async move {
            request(
                addr,
                "POST",
                "/fhir/Observation",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/fhir+json"),
                    ("If-None-Exist", "identifier=urn:lab|C1"),
                ],
                observation(id, "final").as_bytes(),
            )
            .await
        }
    };
    assert_eq!(cond("C1").await.status, 201);
    assert_eq!(cond("C1-other-body").await.status, 200);
    let rows = g.rows();
    assert_eq!(
        rows.len(),
        2,
        "two requests journaled, repeats added nothing"
    );
    assert!(rows.iter().all(|r| r.resends == 1));
}

/// (what, path, body, content type, status, issue code, expression).
type ErrorCase = (
    &'static str,
    &'static str,
    Vec<u8>,
    &'static str,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn every_error_gets_its_operation_outcome() {
    let g = start_fhir_gateway().await;
    let cases: Vec<ErrorCase> = vec![
        (
            "malformed json",
            "/fhir/Observation",
            b"{not json".to_vec(),
            "application/fhir+json",
            400,
            "structure",
            "",
        ),
        (
            "non-utf8",
            "/fhir/Observation",
            vec![0xff, 0xfe, 0x7b],
            "application/fhir+json",
            400,
            "structure",
            "",
        ),
        (
            "type mismatch",
            "/fhir/Flag",
            observation("E1", "final").into_bytes(),
            "application/fhir+json",
            400,
            "invalid",
            "",
        ),
        (
            "unsupported",
            "/fhir/Basic",
            br#"{"resourceType":"Basic"}"#.to_vec(),
            "application/fhir+json",
            404,
            "not-supported",
            "",
        ),
        (
            "missing status",
            "/fhir/Observation",
            observation("E2", "final")
                .replace(r#""status":"final","#, "")
                .into_bytes(),
            "application/fhir+json",
            422,
            "required",
            "Observation.status",
        ),
        (
            "bogus status",
            "/fhir/Observation",
            observation("E3", "bogus").into_bytes(),
            "application/fhir+json",
            422,
            "",
            "Observation.status",
        ),
        (
            "text/plain",
            "/fhir/Observation",
            observation("E4", "final").into_bytes(),
            "text/plain",
            415,
            "not-supported",
            "",
        ),
        (
            "deep nesting",
            "/fhir/Observation",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            "application/fhir+json",
            400,
            "structure",
            "",
        ),
    ];
    let auth = format!("Bearer {TOKEN}");
    for (what, path, body, ct, status, code, expr) in cases {
        let r = request(
            g.http(),
            "POST",
            path,
            &[("Authorization", &auth), ("Content-Type", ct)],
            &body,
        )
        .await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/fhir+json"),
            "{what}"
        );
        let (c, e) = r.issue();
        if !code.is_empty() {
            assert_eq!(c, code, "{what}");
        } else {
            assert!(c == "code-invalid" || c == "value", "{what}: {c}");
        }
        if !expr.is_empty() {
            assert_eq!(e, expr, "{what}");
        }
        assert!(
            !String::from_utf8_lossy(&r.body).contains("ZZCANARY"),
            "{what}: no content echoed"
        );
    }
    // Over the size limit: refused from Content-Length, and while reading a chunked body.
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = g.post("/fhir/Observation", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.issue().0, "too-long");
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = request(
        g.http(),
        "POST",
        "/fhir/Observation",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/fhir+json"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked,
    )
    .await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn transaction_is_all_or_nothing_and_batch_answers_each_entry() {
    let g = start_fhir_gateway().await;
    let good = observation("T1", "final");
    let bad = observation("T2", "final").replace(r#""status":"final","#, "");
    let bundle = |ty: &str, entries: &[&str]| {
        let e: Vec<String> = entries
            .iter()
            .map(|r| {
                format!(r#"{{"resource":{r},"request":{{"method":"POST","url":"Observation"}}}}"#)
            })
            .collect();
        format!(
            r#"{{"resourceType":"Bundle","type":"{ty}","entry":[{}]}}"#,
            e.join(",")
        )
    };
    let r = g
        .post("/fhir", bundle("transaction", &[&good, &bad]).as_bytes())
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.status);
    assert!(
        r.issue().1.starts_with("Bundle.entry[1]"),
        "{:?}",
        r.issue()
    );
    let rows = g.rows();
    assert_eq!(rows[0].fate.as_str(), "rejected");
    assert_eq!(
        rows[0].events, 0,
        "nothing of the transaction became an event"
    );

    let r = g
        .post("/fhir", bundle("batch", &[&good, &bad]).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["type"], "batch-response");
    assert!(
        j["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("201")
    );
    let second = j["entry"][1]["response"]["status"].as_str().unwrap();
    assert!(
        second.starts_with("422") || second.starts_with("400"),
        "{second}"
    );
    assert_eq!(
        j["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );

    let r = g
        .post(
            "/fhir",
            bundle("transaction", &[&good, &observation("T3", "final")]).as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["type"], "transaction-response");
    assert_eq!(g.rows()[0].events, 2);
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_nothing_is_journaled() {
    let g = start_fhir_gateway().await;
    let body = observation("A1", "final");
    let r = request(
        g.http(),
        "POST",
        "/fhir/Observation",
        &[("Content-Type", "application/fhir+json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.issue().0, "login");
    assert!(r.header("www-authenticate").is_some());
    let r = request(
        g.http(),
        "POST",
        "/fhir/Observation",
        &[
            ("Authorization", "Bearer wrong"),
            ("Content-Type", "application/fhir+json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 401);
    // A valid token from a network the sender may not use.
    let r = request(
        g.http(),
        "POST",
        "/fhir/Observation",
        &[
            ("Authorization", "Bearer far-token"),
            ("Content-Type", "application/fhir+json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.issue().0, "forbidden");
    assert!(g.rows().is_empty(), "nothing journaled");
}

#[tokio::test]
async fn metadata_states_what_is_accepted() {
    let g = start_fhir_gateway().await;
    let r = request(g.http(), "GET", "/fhir/metadata", &[], b"").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["resourceType"], "CapabilityStatement");
    assert_eq!(j["fhirVersion"], "4.0.1");
    let types: Vec<&str> = j["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, SUPPORTED);
}

#[tokio::test]
async fn curl_posts_a_resource() {
    let g = start_fhir_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("obs.json");
    std::fs::write(&file, observation("CURL1", "final")).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/fhir+json",
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/fhir/Observation", g.http()))
        .output()
        .await
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("201"), "{text}");
    assert!(text.contains("OperationOutcome"), "{text}");
}

fn notification(kind: &str, since: u64, events: &[(u64, Option<&str>)]) -> String {
    let ev: Vec<String> = events
        .iter()
        .map(|(n, focus)| match focus {
            Some(f) => format!(r#"{{"eventNumber":"{n}","focus":{{"reference":"{f}"}}}}"#),
            None => format!(r#"{{"eventNumber":"{n}"}}"#),
        })
        .collect();
    let mut entries = vec![format!(
        r#"{{"fullUrl":"urn:uuid:status-{since}","resource":{{"resourceType":"SubscriptionStatus","status":"active","type":"{kind}","eventsSinceSubscriptionStart":"{since}","notificationEvent":[{}],"subscription":{{"reference":"http://ehr.example/fhir/Subscription/abc"}},"topic":"http://ehr.example/fhir/SubscriptionTopic/results"}}}}"#,
        ev.join(",")
    )];
    for (n, focus) in events {
        if let Some(f) = focus {
            entries.push(format!(
                r#"{{"fullUrl":"{f}","resource":{},"request":{{"method":"POST","url":"Observation"}},"response":{{"status":"201"}}}}"#,
                observation(&format!("N{n}"), "final")
            ));
        }
    }
    format!(
        r#"{{"resourceType":"Bundle","type":"history","entry":[{}]}}"#,
        entries.join(",")
    )
}

#[tokio::test]
async fn subscription_notifications_are_answered_tracked_and_gaps_reported() {
    let g = start_fhir_gateway().await;
    let gaps = || {
        g.gw.metrics()
            .fhir_subscription_gaps
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let r = g
        .post(
            "/fhir/notifications",
            notification("handshake", 0, &[]).as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = g
        .post(
            "/fhir/notifications",
            notification("event-notification", 1, &[(1, Some("urn:uuid:obs-1"))]).as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("1 event"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The same notification again: answered, nothing new.
    let again = g
        .post(
            "/fhir/notifications",
            notification("event-notification", 1, &[(1, Some("urn:uuid:obs-1"))]).as_bytes(),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(gaps(), 0);
    // Events 2 to 4 never arrived.
    let r = g
        .post(
            "/fhir/notifications",
            notification("event-notification", 5, &[(5, Some("urn:uuid:obs-5"))]).as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gaps(), 1, "the gap is detected");
    // A heartbeat that agrees with what we have is no gap.
    let r = g
        .post(
            "/fhir/notifications",
            notification("heartbeat", 5, &[]).as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gaps(), 1);
    let rows = g.rows();
    let accepted = rows
        .iter()
        .filter(|r| r.fate.as_str() == "accepted")
        .count();
    assert_eq!(accepted, 2, "two event notifications became events");
    assert_eq!(
        rows.iter().map(|r| r.resends).sum::<u32>(),
        1,
        "the repeat added nothing"
    );
    // The gap is in the audit trail.
    use switchboard::journal::{SqliteStorage, Storage};
    let mut s = SqliteStorage::open_read_only(&g.journal(), None).unwrap();
    let records = s.audit_records(0, 10_000).unwrap();
    let gap = records
        .iter()
        .find(|r| r.action == "fhir.subscription-gap")
        .expect("gap audited");
    assert_eq!(gap.outcome, "missing 2-4");
}

#[tokio::test]
async fn r4b_corpus_notification_and_subscription_status_are_accepted() {
    let Some(files) = corpus("fhir-r4b") else {
        return;
    };
    let g = start_fhir_gateway().await;
    let (_, bundle) = files
        .iter()
        .find(|(n, _)| n.starts_with("Bundle-"))
        .unwrap();
    let r = g.post("/fhir/notifications", bundle).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn https_with_client_certificates_authenticates_the_sender_curl_over_mtls() {
    let pki = crate::certs::Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndata_dir = '{}'\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[http.tls]\ncert = '{}'\nkey = '{}'\nclient_ca = '{}'\ncrls = ['{}']\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\ncertificates = [\"{}\"]\n",
        dir.path().join("data").display(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
        pki.crl.display(),
        crate::certs::LAB_ID
    );
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    let body = dir.path().join("obs.json");
    std::fs::write(&body, observation("TLS1", "final")).unwrap();
    // tokio's Command: a blocking wait would stall the gateway on this runtime.
    let curl = async |cert: Option<&crate::certs::ClientFiles>| {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&pki.ca)
        .args(["-H", "Content-Type: application/fhir+json", "--data-binary"])
        .arg(format!("@{}", body.display()));
        if let Some(c) = cert {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        cmd.arg(format!(
            "https://localhost:{}/fhir/Observation",
            gw.http_addr().port()
        ));
        cmd.output().await.expect("curl is installed")
    };
    let ok = curl(Some(&pki.lab)).await;
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.trim_end().ends_with("201"),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without a client certificate, or with a revoked one: no HTTP at all.
    let none = curl(None).await;
    assert!(
        !none.status.success()
            || String::from_utf8_lossy(&none.stdout)
                .trim_end()
                .ends_with("000")
    );
    let revoked = curl(Some(&pki.revoked)).await;
    assert!(!revoked.status.success());
    gw.shutdown().await;
}

/// A stand-in for the sender's own FHIR server: serves one Observation and
/// `$events` for subscription `abc`.
async fn source_server() -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/fhir/Observation/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    if id == "42" {
                        (axum::http::StatusCode::OK, observation("SRC42", "final"))
                    } else {
                        (axum::http::StatusCode::NOT_FOUND, String::new())
                    }
                },
            ),
        )
        .route(
            "/fhir/Subscription/abc/{op}",
            get(
                |axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                    assert_eq!(
                        q.as_deref(),
                        Some("eventsSinceNumber=2&eventsUntilNumber=4")
                    );
                    notification(
                        "query-event",
                        4,
                        &[
                            (2, Some("urn:uuid:r2")),
                            (3, Some("urn:uuid:r3")),
                            (4, Some("urn:uuid:r4")),
                        ],
                    )
                },
            ),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

#[tokio::test]
async fn id_only_notifications_fetch_the_focus_and_gaps_are_recovered_with_events() {
    let src = source_server().await;
    let dir = tempfile::tempdir().unwrap();
    let text = fhir_config_text(&dir.path().join("data"), "").replacen(
        "name = \"lab-fhir\"\n",
        &format!("name = \"lab-fhir\"\nfhir_source = \"http://{src}/fhir\"\n"),
        1,
    );
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::start(switchboard::config::load(&path).unwrap())
        .await
        .unwrap();
    let g = FhirGateway { gw, dir };
    // The source's own notifications name its subscription by its URL.
    let here =
        |text: String| text.replace("http://ehr.example/fhir", &format!("http://{src}/fhir"));
    // Event 1 names its focus only.
    let r = g
        .post(
            "/fhir/notifications",
            here(notification("event-notification", 1, &[(1, None)]))
                .replace(
                    r#"{"eventNumber":"1"}"#,
                    r#"{"eventNumber":"1","focus":{"reference":"Observation/42"}}"#,
                )
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("1 event"),
        "the focus was fetched"
    );
    // Event 5 arrives; 2 to 4 are fetched with $events.
    let r = g
        .post(
            "/fhir/notifications",
            here(notification(
                "event-notification",
                5,
                &[(5, Some("urn:uuid:obs-5"))],
            ))
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    let m = g.gw.metrics();
    assert_eq!(
        m.fhir_subscription_gaps
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.fhir_gaps_recovered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let rows = g.rows();
    let recovered = rows
        .iter()
        .find(|r| r.message_type == "FHIR^notification-recovered")
        .expect("recovered row");
    assert_eq!(recovered.events, 3);
    // A focus the source cannot give: 503, to be resent.
    let r = g
        .post(
            "/fhir/notifications",
            here(notification("event-notification", 6, &[(6, None)]))
                .replace(
                    r#"{"eventNumber":"6"}"#,
                    r#"{"eventNumber":"6","focus":{"reference":"Observation/999"}}"#,
                )
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
}
