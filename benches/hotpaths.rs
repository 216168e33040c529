//! Hot paths not covered by the other benches: FHIR R4 parse and
//! normalisation (an Observation, and a transaction Bundle), redaction of an
//! alert under each shipped profile and template rendering, and sealing /
//! opening a 1 KiB value (XChaCha20-Poly1305 under a day's data key, the
//! key looked up in SQLite as the journal does).
//!
//! `cargo bench --bench hotpaths`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::alert::model::{Alert, Reason};
use switchboard::parse::fhir::{self, FhirContext};
use switchboard::seal::{Category, Keyring, LocalKek};

const OBSERVATION: &str = r#"{
  "resourceType": "Observation",
  "id": "k1",
  "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
  "subject": {"reference": "Patient/p1", "identifier": {"system": "urn:oid:1.2.3", "value": "ZZMRN1"}},
  "effectiveDateTime": "2026-11-23T12:00:00Z",
  "valueQuantity": {"value": 6.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
  "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "HH"}]}],
  "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L"}}]
}"#;

fn bench_fhir(c: &mut Criterion) {
    let ctx = FhirContext {
        source: "ehr",
        timezone: chrono_tz::America::New_York,
    };
    c.bench_function("fhir_observation_parse_and_events", |b| {
        b.iter(|| {
            let r = fhir::parse_resource(black_box(OBSERVATION.as_bytes()), None).unwrap();
            black_box(fhir::events(&r, None, &ctx).unwrap())
        })
    });
    c.bench_function("fhir_observation_parse_only", |b| {
        b.iter(|| black_box(fhir::parse_resource(black_box(OBSERVATION.as_bytes()), None).unwrap()))
    });
}

/// An alert from the bench ORU, routed by a one-rule mapping.
fn alert() -> Alert {
    let oru = "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ORU^R01^ORU_R01|B1|P|2.5.1\r\
PID|1||ZZMRN1^^^HOSP^MR||ZZTEST^BENCH||19700101|F|||1 Test Road^^Zzville||(555)010-9999\r\
PV1|1|I|ICU^101^A^HOSP\r\
ORC|RE|PL1|FL1||CM||^^^^^S\r\
OBR|1|PL1|FL1|24323-8^Comprehensive metabolic panel^LN|||20261123115500\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r\
NTE|1||Called to ZZTEST BENCH at (555)010-9999, MRN ZZMRN1\r";
    let d = switchboard::parse::decode_frame(oru.as_bytes(), switchboard::parse::Charset::Utf8)
        .unwrap();
    let split = switchboard::parse::split(&d.text).unwrap();
    let h = switchboard::parse::Header::parse(split.messages[0]).unwrap();
    let ctx = switchboard::parse::EventContext {
        sender: "lab",
        timezone: chrono_tz::America::New_York,
    };
    let ev = switchboard::parse::events(split.messages[0], &h, &ctx)
        .unwrap()
        .remove(0);
    let roster = r#"
name = "ward"
timezone = "America/New_York"
[[members]]
id = "rn-a"
contacts = { webhook = "https://example.invalid/rn-a" }
[[roles]]
name = "charge-nurse"
[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1
[failsafe]
member = "rn-a"
"#;
    let mapping = r#"
[[rules]]
name = "critical"
match = { kind = "result", flags = ["HH"] }
route = { role = "charge-nurse", priority = "stat" }
"#;
    let rosters =
        switchboard::roster::load_files(&[(PathBuf::from("ward.toml"), roster.into())]).unwrap();
    let rules =
        switchboard::rules::load_files(&[(PathBuf::from("m.toml"), mapping.into())], &rosters)
            .unwrap_or_else(|e| panic!("{e:?}"));
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let routes = match rules.route_in(&ev, &switchboard::rules::RouteContext { at, census: None }) {
        switchboard::rules::Decision::Routed { routes, .. } => routes,
        other => panic!("not routed: {other:?}"),
    };
    Alert::transient(&routes[0], &ev, at)
}

fn bench_redact(c: &mut Criterion) {
    let a = alert();
    for name in switchboard::redact::BUILTIN {
        let profile = switchboard::redact::builtin(name).unwrap();
        c.bench_function(&format!("redact_{name}"), |b| {
            b.iter(|| {
                black_box(switchboard::redact::redact(
                    black_box(&a),
                    Reason::New,
                    &profile,
                ))
            })
        });
    }
    let profile = switchboard::redact::builtin("limited").unwrap();
    let template = switchboard::redact::compile(
        "bench",
        "{{ priority }} {{ test }} {{ value }} {{ units }} ({{ flag }}) {{ unit }} {{ room }}",
        &profile,
    )
    .unwrap();
    let view = switchboard::redact::redact(&a, Reason::New, &profile);
    c.bench_function("render_template_limited", |b| {
        b.iter(|| black_box(template.render(black_box(&view)).unwrap()))
    });
}

fn bench_seal(c: &mut Criterion) {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(switchboard::seal::SCHEMA).unwrap();
    let mut ring = Keyring::new(Arc::new(LocalKek::generate("bench").unwrap()), Vec::new());
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let plain = vec![0x5au8; 1024];
    let sealed = ring
        .seal(&conn, Category::Alert, at, &plain, b"bench\0")
        .unwrap();
    c.bench_function("seal_1k", |b| {
        b.iter(|| {
            black_box(
                ring.seal(&conn, Category::Alert, at, black_box(&plain), b"bench\0")
                    .unwrap(),
            )
        })
    });
    c.bench_function("open_1k", |b| {
        b.iter(|| black_box(ring.open(&conn, black_box(&sealed), b"bench\0").unwrap()))
    });
}

criterion_group!(benches, bench_fhir, bench_redact, bench_seal);
criterion_main!(benches);
