//! Tests of the FHIR stage: the corpus examples, every malformed-input row
//! of RELIABILITY.md (26-30, 33, 34) that is a parse concern, canaries and a
//! no-panic sweep.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::*;
use crate::event::{ClinicalEvent, EventKind, Priority, Processing, ProviderRole, ResultStatus};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");
const CANARY: &str = "ZZCANARY";

fn corpus(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(CORPUS).join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "corpus not found at {}: skipping",
            dir.display()
        );
        None
    }
}

/// `(file name, bytes)` of every `.json` in a corpus folder, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn read(sub: &str, name: &str) -> Option<Vec<u8>> {
    let dir = corpus(sub)?;
    Some(std::fs::read(dir.join(name)).unwrap())
}

fn ctx() -> FhirContext<'static> {
    FhirContext {
        source: "ehr",
        timezone: chrono_tz::Europe::Amsterdam,
    }
}

fn one(body: &[u8], t: &str) -> ClinicalEvent {
    let r = parse_resource(body, Some(t)).unwrap();
    let mut evs = events(&r, None, &ctx()).unwrap();
    assert_eq!(evs.len(), 1);
    evs.remove(0)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn err(body: &[u8], t: Option<&str>) -> FhirError {
    parse_resource(body, t).unwrap_err()
}

fn obs() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 6.9, "unit": "mmol/L"},
        "interpretation": [{"coding": [{"code": "HH"}]}]
    })
}

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
}

// ---------------------------------------------------------------- corpus

#[test]
fn corpus_supported_resources_parse_and_map() {
    let Some(dir) = corpus("fhir-r4") else { return };
    let mut seen = 0;
    for (name, body) in files(&dir) {
        let t = name.split('-').next().unwrap();
        if !supported_type(t) {
            continue;
        }
        let r = parse_resource(&body, Some(t)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.type_name, t);
        let evs = events(&r, None, &ctx()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(evs.len(), 1, "{name}");
        let kind = evs[0].kind;
        let ok = match t {
            "Observation" | "DiagnosticReport" => kind == EventKind::Result,
            "ServiceRequest" => kind == EventKind::Order,
            "Flag" | "DetectedIssue" => kind == EventKind::Alarm,
            "Communication" | "CommunicationRequest" => kind == EventKind::Communication,
            "Encounter" => matches!(
                kind,
                EventKind::Admit
                    | EventKind::Register
                    | EventKind::Transfer
                    | EventKind::Discharge
                    | EventKind::CancelAdmit
                    | EventKind::Update
            ),
            _ => false,
        };
        assert!(ok, "{name}: {kind:?}");
        assert_eq!(evs[0].source.sender, "ehr");
        assert_eq!(evs[0].source.message_type, t);
        seen += 1;
    }
    assert_eq!(seen, 64 + 6 + 20 + 10 + 3 + 2 + 2 + 4, "supported examples");
}

#[test]
fn observation_f001_high_glucose() {
    let Some(body) = read("fhir-r4", "Observation-f001.json") else {
        return;
    };
    let e = one(&body, "Observation");
    assert_eq!(e.kind, EventKind::Result);
    assert_eq!(e.processing, Processing::Production);
    assert_eq!(e.source.trigger, "final");
    assert_eq!(e.source.control_id, "f001");
    let o = &e.observations[0];
    assert_eq!(e.observations.len(), 1);
    assert_eq!(o.flags, ["H"]);
    assert_eq!(o.value_type, "NM");
    assert_eq!(o.values, ["6.3"]);
    assert_eq!(o.units.as_ref().unwrap().code, "mmol/L");
    assert_eq!(o.reference_range, "3.1-6.2");
    assert_eq!(o.status, ResultStatus::Final);
    assert_eq!(
        (o.code.code.as_str(), o.code.system.as_str()),
        ("15074-8", "LN")
    );
    assert_eq!(o.observed_at, Some(utc("2013-04-02T08:30:10Z")));
    assert_eq!(e.occurred_at, Some(utc("2013-04-02T08:30:10Z")));
    let order = e.order.as_ref().unwrap();
    assert_eq!(
        (order.result_status.as_str(), order.filler_id.as_str()),
        ("F", "6323")
    );
    // Unresolved subject: the reference itself, authority "reference".
    assert_eq!(e.patient.identifiers[0].value, "Patient/f001");
    assert_eq!(e.patient.identifiers[0].authority, "reference");
    assert_eq!(e.providers[0].role, ProviderRole::CareTeam);
    assert_eq!(e.providers[0].name.family, "A. Langeveld");
}

#[test]
fn observation_components_and_low_flags() {
    let Some(body) = read("fhir-r4", "Observation-blood-pressure.json") else {
        return;
    };
    let e = one(&body, "Observation");
    // Panel without a value but with an interpretation: itself + 2 components.
    let flags: Vec<_> = e.observations.iter().map(|o| o.flags.clone()).collect();
    assert!(e.observations.len() >= 2);
    assert!(flags.iter().flatten().any(|f| f == "L"), "{flags:?}");
    assert!(e.observations.iter().any(|o| o.sub_id == "1"));
}

#[test]
fn service_request_do_not_turn_is_stat() {
    let Some(body) = read("fhir-r4", "ServiceRequest-do-not-turn.json") else {
        return;
    };
    let e = one(&body, "ServiceRequest");
    assert_eq!(e.kind, EventKind::Order);
    assert_eq!(e.priority, Priority::Stat);
    let o = e.order.as_ref().unwrap();
    assert_eq!((o.control.as_str(), o.status.as_str()), ("NW", "IP"));
    assert_eq!(o.service.code, "359962006");
    assert_eq!(o.service.system, "SCT");
    assert_eq!(o.placer_id, "20170201-0002");
    assert_eq!(e.notes, ["DO NOT PERFORM"]);
    assert_eq!(e.providers[0].role, ProviderRole::Ordering);
    assert_eq!(e.occurred_at, Some(utc("2017-02-01T17:23:07Z")));
}

#[test]
fn encounter_examples() {
    let Some(dir) = corpus("fhir-r4") else { return };
    let kind = |name: &str| {
        let e = one(&std::fs::read(dir.join(name)).unwrap(), "Encounter");
        (e.kind, e.patient_class.clone(), e)
    };
    let (k, class, _) = kind("Encounter-example.json");
    assert_eq!((k, class.as_str()), (EventKind::Admit, "I"));
    let (k, class, e) = kind("Encounter-f001.json");
    assert_eq!((k, class.as_str()), (EventKind::Discharge, "O"));
    assert_eq!(e.visit.as_ref().unwrap().value, "v1451");
    let (k, _, e) = kind("Encounter-home.json");
    assert_eq!(k, EventKind::Discharge);
    // The contained Location (#home), by its description.
    assert_eq!(e.location.as_ref().unwrap().unit, "Client's home");
    assert_eq!(e.occurred_at, Some(utc("2015-01-17T06:30:00Z")));
    let (k, _, e) = kind("Encounter-emerg.json");
    assert_eq!(k, EventKind::Admit);
    assert_eq!(e.occurred_at, Some(utc("2017-01-31T21:15:00Z")));
}

#[test]
fn encounter_transfer_from_location_history() {
    let v = json!({
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"code": "IMP"},
        "identifier": [{"system": "urn:visit", "value": "V1"}],
        "priority": {"coding": [{"code": "EM"}]},
        "participant": [{"type": [{"coding": [{"code": "ATND"}]}],
                          "individual": {"reference": "#dr"}}],
        "contained": [
            {"resourceType": "Practitioner", "id": "dr",
             "identifier": [{"system": "urn:npi", "value": "123"}],
             "name": [{"family": "House", "given": ["Greg", "M"]}]},
            {"resourceType": "Location", "id": "b", "name": "Bed 2",
             "physicalType": {"coding": [{"code": "bd"}]}, "partOf": {"reference": "#w"}},
            {"resourceType": "Location", "id": "w", "name": "ICU"}
        ],
        "location": [
            {"location": {"display": "ER"}, "status": "completed"},
            {"location": {"reference": "#b"}, "status": "active",
             "period": {"start": "2024-03-01T10:00:00Z"}}
        ]
    });
    let e = one(&bytes(&v), "Encounter");
    assert_eq!(e.kind, EventKind::Transfer);
    let l = e.location.as_ref().unwrap();
    assert_eq!((l.bed.as_str(), l.unit.as_str()), ("Bed 2", "ICU"));
    assert_eq!(e.prior_location.as_ref().unwrap().unit, "ER");
    assert_eq!(e.priority, Priority::Stat);
    assert_eq!(e.occurred_at, Some(utc("2024-03-01T10:00:00Z")));
    let p = &e.providers[0];
    assert_eq!(p.role, ProviderRole::Attending);
    assert_eq!(
        (p.id.value.as_str(), p.name.given.as_str()),
        ("123", "Greg")
    );
    assert_eq!(p.name.middle, "M");
    // Without the completed location it is an admission; EMER registers.
    let mut v2 = v.clone();
    v2["location"].as_array_mut().unwrap().remove(0);
    assert_eq!(one(&bytes(&v2), "Encounter").kind, EventKind::Admit);
    v2["class"]["code"] = json!("EMER");
    let e = one(&bytes(&v2), "Encounter");
    assert_eq!(
        (e.kind, e.patient_class.as_str()),
        (EventKind::Register, "E")
    );
    for (status, kind) in [
        ("cancelled", EventKind::CancelAdmit),
        ("entered-in-error", EventKind::CancelAdmit),
        ("planned", EventKind::Update),
        ("finished", EventKind::Discharge),
    ] {
        v2["status"] = json!(status);
        assert_eq!(one(&bytes(&v2), "Encounter").kind, kind, "{status}");
    }
}

#[test]
fn alerts_and_communications() {
    let Some(dir) = corpus("fhir-r4") else { return };
    let ev = |name: &str, t: &str| one(&std::fs::read(dir.join(name)).unwrap(), t);
    let e = ev("DetectedIssue-ddi.json", "DetectedIssue");
    assert_eq!((e.kind, e.priority), (EventKind::Alarm, Priority::Stat));
    let a = e.alarm.as_ref().unwrap();
    assert_eq!((a.priority.as_str(), a.phase.as_str()), ("PH", "present"));
    assert_eq!(a.kind.code, "DRG");
    assert_eq!(e.notes.len(), 1);
    let e = ev("Flag-example.json", "Flag");
    let a = e.alarm.as_ref().unwrap();
    assert_eq!((a.phase.as_str(), a.state.as_str()), ("end", "inactive"));
    assert_eq!(a.id, "12345");
    assert_eq!(a.kind.code, "bigdog");
    let e = ev(
        "CommunicationRequest-fm-solicit.json",
        "CommunicationRequest",
    );
    assert_eq!(
        (e.kind, e.priority),
        (EventKind::Communication, Priority::Routine)
    );
    // requester "#requester" is a contained Practitioner; the recipient and
    // sender are contained Organizations, so not providers.
    assert_eq!(e.providers.len(), 1);
    assert_eq!(e.providers[0].role, ProviderRole::Ordering);
    assert_eq!(e.providers[0].id.value, "6789");
    assert_eq!(e.notes.len(), 1);
    assert_eq!(e.occurred_at, Some(utc("2016-06-10T19:01:10Z")));
    let e = ev("Communication-example.json", "Communication");
    assert_eq!(e.kind, EventKind::Communication);
    assert_eq!(e.order.as_ref().unwrap().status, "completed");
}

#[test]
fn corpus_bundles_parse() {
    let Some(dir) = corpus("fhir-r4") else { return };
    let mut types = Vec::new();
    for (name, body) in files(&dir) {
        if !name.starts_with("Bundle-") {
            continue;
        }
        let b = parse_bundle(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            b.entries
                .iter()
                .all(|e| !matches!(e.resource, Some(Err(_))))
        );
        let cx = b.context();
        for (_, r) in b.resources() {
            events(r, Some(&cx), &ctx()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        types.push(b.bundle_type.clone());
    }
    for t in [
        "transaction",
        "batch",
        "message",
        "searchset",
        "batch-response",
    ] {
        assert!(types.iter().any(|x| x == t), "{t}");
    }
    // The transaction keeps its requests.
    let b = parse_bundle(&read("fhir-r4", "Bundle-bundle-transaction.json").unwrap()).unwrap();
    assert_eq!(b.bundle_type, "transaction");
    let r = b.entries[0].request.as_ref().unwrap();
    assert_eq!(r.method, "POST");
    assert!(b.entries.iter().any(|e| {
        e.request
            .as_ref()
            .is_some_and(|r| r.if_none_exist.is_some())
    }));
    assert!(b.entries.iter().any(|e| e.resource.is_none()));
}

#[test]
fn corpus_other_resources_parse_without_events() {
    let Some(dir) = corpus("fhir-r4") else { return };
    for (name, body) in files(&dir) {
        let t = name.split('-').next().unwrap();
        if supported_type(t) || t == "Bundle" {
            continue;
        }
        // Not accepted on POST /fhir/{type} ...
        assert_eq!(err(&body, None).status, 404, "{name}");
        // ... but valid R4, and mapped to no events inside a Bundle.
        let v: Value = serde_json::from_slice(&body).unwrap();
        let bundle = json!({"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": v}]});
        let b = parse_bundle(&bytes(&bundle)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, r) = b.resources().next().unwrap();
        assert!(events(r, None, &ctx()).unwrap().is_empty());
    }
}

// ---------------------------------------------------------------- notifications

#[test]
fn r4b_message_wrapping_a_notification() {
    let Some(body) = read(
        "fhir-r4b",
        "Bundle-0f322dbe-4f8d-4cbd-9ecb-bc8dc6f65f6a.json",
    ) else {
        return;
    };
    let n = parse_notification(&body).unwrap();
    assert_eq!(n.shape, FhirVersionShape::R4B);
    assert_eq!(n.notification_type, NotificationType::EventNotification);
    assert_eq!(n.status.as_deref(), Some("active"));
    assert_eq!(
        n.subscription,
        "http://example.org/FHIR/R4B/Subscription/123"
    );
    assert_eq!(
        n.topic.as_deref(),
        Some("http://example.org/FHIR/R4B/SubscriptionTopic/admission")
    );
    assert_eq!(n.events_since_subscription_start, Some(2));
    assert_eq!(n.events.len(), 1);
    assert_eq!(n.events[0].event_number, Some(2));
    assert_eq!(
        n.events[0].focus.as_deref(),
        Some("http://example.org/FHIR/R4B/Encounter/2")
    );
    assert_eq!(n.processing, Processing::Training, "HTEST on the wrapper");
    assert_eq!(n.included.len(), 1);
    let cx = n.context();
    // The focus resolves by Type/id although the fullUrl differs in base.
    let r = cx.resolve(n.events[0].focus.as_deref().unwrap()).unwrap();
    let evs = events(r, Some(&cx), &ctx()).unwrap();
    assert_eq!(evs[0].kind, EventKind::Register, "in-progress, virtual");
    assert_eq!(evs[0].processing, Processing::Training);
    assert_eq!(evs[0].patient.identifiers[0].value, "Patient/123");
}

#[test]
fn r4b_subscription_status_alone() {
    let Some(body) = read("fhir-r4b", "SubscriptionStatus-example.json") else {
        return;
    };
    let n = parse_notification(&body).unwrap();
    assert_eq!(n.shape, FhirVersionShape::R4B);
    assert_eq!(n.events_since_subscription_start, Some(1000));
    assert_eq!(n.events[0].event_number, Some(1000));
    assert!(n.included.is_empty());
}

fn backport(kind: &str) -> Value {
    json!({
        "resourceType": "Bundle", "type": "history", "id": "n1",
        "entry": [
            {"fullUrl": "urn:uuid:s", "resource": {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "subscription", "valueReference": {"reference": "https://ehr/fhir/Subscription/7"}},
                    {"name": "topic", "valueCanonical": "http://hl7.org/topic/encounter-start"},
                    {"name": "status", "valueCode": "active"},
                    {"name": "type", "valueCode": kind},
                    {"name": "events-since-subscription-start", "valueString": "310"},
                    {"name": "notification-event", "part": [
                        {"name": "event-number", "valueString": "310"},
                        {"name": "timestamp", "valueInstant": "2024-03-01T10:00:00Z"},
                        {"name": "focus", "valueReference": {"reference": "https://ehr/fhir/Encounter/e1"}},
                        {"name": "additional-context", "valueReference": {"reference": "Patient/p1"}}
                    ]}
                ]}},
            {"fullUrl": "https://ehr/fhir/Encounter/e1", "resource": {
                "resourceType": "Encounter", "id": "e1", "status": "finished",
                "class": {"code": "IMP"}, "subject": {"reference": "Patient/p1"}}},
            {"fullUrl": "https://ehr/fhir/Patient/p1", "resource": {
                "resourceType": "Patient", "id": "p1",
                "identifier": [{"system": "urn:mrn", "value": "MRN1",
                                 "type": {"coding": [{"code": "MR"}]}}],
                "name": [{"family": "Test", "given": ["Demo"]}],
                "gender": "female", "birthDate": "1970-01-02"}}
        ]
    })
}

#[test]
fn r4_backport_notification() {
    let n = parse_notification(&bytes(&backport("event-notification"))).unwrap();
    assert_eq!(n.shape, FhirVersionShape::R4);
    assert_eq!(n.bundle_id.as_deref(), Some("n1"));
    assert_eq!(n.subscription, "https://ehr/fhir/Subscription/7");
    assert_eq!(n.events_since_subscription_start, Some(310));
    let ev = &n.events[0];
    assert_eq!(ev.event_number, Some(310));
    assert_eq!(ev.additional_context, ["Patient/p1"]);
    assert_eq!(n.included.len(), 2);
    let cx = n.context();
    let r = cx.resolve(ev.focus.as_deref().unwrap()).unwrap();
    let e = &events(r, Some(&cx), &ctx()).unwrap()[0];
    assert_eq!(e.kind, EventKind::Discharge);
    let p = &e.patient;
    assert_eq!(p.identifiers[0].value, "MRN1");
    assert_eq!(p.identifiers[0].type_code, "MR");
    assert_eq!(p.name.as_ref().unwrap().family, "Test");
    assert_eq!(p.sex.as_deref(), Some("F"));
    assert_eq!(p.birth_date.as_deref(), Some("1970-01-02"));
    for (k, t) in [
        ("handshake", NotificationType::Handshake),
        ("heartbeat", NotificationType::Heartbeat),
        ("query-status", NotificationType::QueryStatus),
        ("query-event", NotificationType::QueryEvent),
    ] {
        assert_eq!(
            parse_notification(&bytes(&backport(k)))
                .unwrap()
                .notification_type,
            t
        );
    }
    let e = parse_notification(&bytes(&backport(CANARY))).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::CodeInvalid));
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[0].resource.parameter.where(name = 'type')")
    );
}

#[test]
fn r5_notification_and_errors() {
    let v = json!({
        "resourceType": "Bundle", "type": "subscription-notification",
        "entry": [{"resource": {
            "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
            "eventsSinceSubscriptionStart": 12,
            "notificationEvent": [{"eventNumber": 12, "focus": {"reference": "Observation/o1"}}],
            "subscription": {"reference": "Subscription/s"}, "topic": "http://t"}},
            {"fullUrl": "http://x/Observation/o1", "resource": {
                "resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"text": "K"}, "valueQuantity": {"value": 7.1},
                "interpretation": [{"coding": [{"code": "HH"}]}]}},
            {"fullUrl": "urn:uuid:id-only"}]
    });
    let n = parse_notification(&bytes(&v)).unwrap();
    assert_eq!(n.shape, FhirVersionShape::R5);
    assert_eq!(
        (n.events_since_subscription_start, n.events[0].event_number),
        (Some(12), Some(12))
    );
    assert_eq!(n.included.len(), 1, "id-only entries are not included");
    let cx = n.context();
    let r = cx.resolve("Observation/o1").unwrap();
    assert_eq!(
        events(r, Some(&cx), &ctx()).unwrap()[0].observations[0].flags,
        ["HH"]
    );
    // Missing subscription; bad counter; not a notification.
    let mut bad = v.clone();
    bad["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("subscription");
    let e = parse_notification(&bytes(&bad)).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::Required));
    let mut bad = v.clone();
    bad["entry"][0]["resource"]["eventsSinceSubscriptionStart"] = json!(CANARY);
    let e = parse_notification(&bytes(&bad)).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::Value));
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[0].resource.eventsSinceSubscriptionStart")
    );
    let e = parse_notification(&bytes(&obs())).unwrap_err();
    assert_eq!((e.status, e.issue), (400, IssueType::Invalid));
}

// ---------------------------------------------------------------- resolution

#[test]
fn transaction_references_resolve_between_entries() {
    let v = json!({
        "resourceType": "Bundle", "type": "transaction",
        "identifier": {"system": "urn:lab", "value": "B1"},
        "meta": {"tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}]},
        "entry": [
            {"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient",
                          "identifier": [{"system": "urn:mrn", "value": "M9"}]}},
            {"fullUrl": "urn:uuid:sr", "request": {"method": "POST", "url": "ServiceRequest"},
             "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                          "priority": "asap", "subject": {"reference": "urn:uuid:p"},
                          "identifier": [{"type": {"coding": [{"code": "PLAC"}]}, "value": "PL1"}]}},
            {"fullUrl": "urn:uuid:o", "request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": "final",
                          "code": {"text": "K"}, "subject": {"reference": "urn:uuid:p"},
                          "basedOn": [{"reference": "urn:uuid:sr"}],
                          "valueQuantity": {"value": 2.1, "comparator": "<"}}},
            {"fullUrl": "urn:uuid:d",
             "request": {"method": "POST", "url": "DiagnosticReport", "ifNoneExist": "identifier=x"},
             "resource": {"resourceType": "DiagnosticReport", "status": "corrected",
                          "code": {"text": "panel"}, "subject": {"reference": "urn:uuid:p"},
                          "result": [{"reference": "urn:uuid:o"}, {"reference": "#c"},
                                     {"reference": "Observation/missing"}],
                          "contained": [{"resourceType": "Observation", "id": "c",
                                         "status": "final", "code": {"text": "Na"},
                                         "valueString": "ok"}],
                          "conclusion": "see"}}
        ]
    });
    let b = parse_bundle(&bytes(&v)).unwrap();
    assert_eq!(b.identifier.as_ref().unwrap().value, "B1");
    assert_eq!(b.processing, Processing::Training);
    assert_eq!(
        b.entries[3]
            .request
            .as_ref()
            .unwrap()
            .if_none_exist
            .as_deref(),
        Some("identifier=x")
    );
    let cx = b.context();
    let all: Vec<ClinicalEvent> = b
        .resources()
        .flat_map(|(_, r)| events(r, Some(&cx), &ctx()).unwrap())
        .collect();
    assert_eq!(all.len(), 3, "the Patient gives no event");
    assert!(all.iter().all(|e| e.processing == Processing::Training));
    assert!(all.iter().all(|e| e.patient.identifiers[0].value == "M9"));
    assert_eq!(all[0].priority, Priority::Urgent);
    let o = &all[1];
    assert_eq!(o.priority, Priority::Urgent, "from basedOn");
    assert_eq!(o.order.as_ref().unwrap().placer_id, "PL1");
    assert_eq!(
        (
            o.observations[0].value_type.as_str(),
            o.observations[0].values[0].as_str()
        ),
        ("SN", "<2.1")
    );
    let d = &all[2];
    assert_eq!(d.observations.len(), 2, "the unresolved result is skipped");
    assert_eq!(d.observations[1].values, ["ok"]);
    assert_eq!(d.order.as_ref().unwrap().result_status, "C");
    assert_eq!(d.notes, ["see"]);
}

#[test]
fn observation_status_mapping_and_dates() {
    for (s, st) in [
        ("registered", ResultStatus::Preliminary),
        ("preliminary", ResultStatus::Preliminary),
        ("final", ResultStatus::Final),
        ("amended", ResultStatus::Corrected),
        ("corrected", ResultStatus::Corrected),
        ("cancelled", ResultStatus::CannotObtain),
        ("entered-in-error", ResultStatus::WrongPatient),
        ("unknown", ResultStatus::Unknown),
    ] {
        let mut v = obs();
        v["status"] = json!(s);
        assert_eq!(
            one(&bytes(&v), "Observation").observations[0].status,
            st,
            "{s}"
        );
    }
    // A date without offset is local to the source's zone.
    let mut v = obs();
    v["effectiveDateTime"] = json!("2024-07-01");
    assert_eq!(
        one(&bytes(&v), "Observation").occurred_at,
        Some(utc("2024-06-30T22:00:00Z"))
    );
    // A malformed date is 422 value at the element, content-free.
    v["effectiveDateTime"] = json!(CANARY);
    let r = parse_resource(&bytes(&v), Some("Observation")).unwrap();
    let e = events(&r, None, &ctx()).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::Value));
    assert_eq!(
        e.expression.as_deref(),
        Some("Observation.effectiveDateTime")
    );
    assert_no_canary(&e);
}

// ---------------------------------------------------------------- errors (rows 26-34)

fn assert_no_canary(e: &FhirError) {
    let all = format!(
        "{e} {:?} {}",
        e.expression,
        operation_outcome(std::slice::from_ref(e))
    );
    assert!(!all.contains(CANARY), "canary leaked: {all}");
}

#[test]
fn row26_malformed_json_and_non_utf8() {
    for body in [
        &b"{\"resourceType\": \"Observation\", "[..],
        b"",
        b"null",
        b"[1,2]",
        b"{\"resourceType\": 5}",
        b"\xff\xfe{}",
        b"{\"resourceType\": \"Observation\", \"status\": \"f\xc3\x28\"}",
    ] {
        let e = err(body, Some("Observation"));
        assert_eq!((e.status, e.issue), (400, IssueType::Structure), "{body:?}");
        let e = parse_bundle(body).unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_notification(body).unwrap_err();
        assert_eq!(e.status, 400);
    }
    // A UTF-8 BOM is tolerated.
    let mut b = b"\xEF\xBB\xBF".to_vec();
    b.extend(bytes(&obs()));
    assert!(parse_resource(&b, Some("Observation")).is_ok());
}

#[test]
fn row27_resource_type_mismatch() {
    let e = err(&bytes(&obs()), Some("Encounter"));
    assert_eq!((e.status, e.issue), (400, IssueType::Invalid));
    let e = parse_bundle(&bytes(&obs())).unwrap_err();
    assert_eq!((e.status, e.issue), (400, IssueType::Invalid));
}

#[test]
fn row28_unsupported_type() {
    let basic = json!({"resourceType": "Basic", "code": {"text": "x"}});
    let e = err(&bytes(&basic), Some("Basic"));
    assert_eq!((e.status, e.issue), (404, IssueType::NotSupported));
    let e = err(&bytes(&basic), None);
    assert_eq!((e.status, e.issue), (404, IssueType::NotSupported));
    assert!(!supported_type("Patient") && supported_type("Flag"));
}

#[test]
fn row29_required_element_missing() {
    for (t, v, path) in [
        (
            "Observation",
            {
                let mut v = obs();
                v.as_object_mut().unwrap().remove("status");
                v
            },
            "Observation.status",
        ),
        (
            "Observation",
            {
                let mut v = obs();
                v.as_object_mut().unwrap().remove("code");
                v
            },
            "Observation.code",
        ),
        (
            "ServiceRequest",
            json!({"resourceType": "ServiceRequest", "status": "active",
                                  "subject": {"reference": "Patient/1"}}),
            "ServiceRequest.intent",
        ),
        (
            "Encounter",
            json!({"resourceType": "Encounter", "status": "planned"}),
            "Encounter.class",
        ),
        (
            "Flag",
            json!({"resourceType": "Flag", "status": "active", "code": {"text": "x"}}),
            "Flag.subject",
        ),
    ] {
        let e = err(&bytes(&v), Some(t));
        assert_eq!((e.status, e.issue), (422, IssueType::Required), "{path}");
        assert_eq!(e.expression.as_deref(), Some(path));
    }
    // A nested required element (Reference-free: Annotation.text) via fhirbolt.
    let mut v = obs();
    v["note"] = json!([{"authorString": "x"}]);
    let e = err(&bytes(&v), Some("Observation"));
    assert_eq!((e.status, e.issue), (422, IssueType::Required));
    assert_eq!(e.expression.as_deref(), Some("Observation"));
}

#[test]
fn row30_invalid_codes() {
    let mut v = obs();
    v["status"] = json!("bogus");
    let e = err(&bytes(&v), Some("Observation"));
    assert_eq!((e.status, e.issue), (422, IssueType::CodeInvalid));
    assert_eq!(e.expression.as_deref(), Some("Observation.status"));
    v["status"] = json!(7);
    let e = err(&bytes(&v), Some("Observation"));
    assert_eq!((e.status, e.issue), (400, IssueType::Structure));
    let sr = json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "priority": "whenever", "subject": {"reference": "Patient/1"}});
    let e = err(&bytes(&sr), Some("ServiceRequest"));
    assert_eq!(e.expression.as_deref(), Some("ServiceRequest.priority"));
    let enc = json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"},
                     "location": [{"location": {"display": "x"}, "status": "gone"}]});
    let e = err(&bytes(&enc), Some("Encounter"));
    assert_eq!(
        e.expression.as_deref(),
        Some("Encounter.location[0].status")
    );
    // Unknown element (strict mode) and wrong JSON type.
    let mut v = obs();
    v["ZZCANARYelement"] = json!(1);
    let e = err(&bytes(&v), Some("Observation"));
    assert_eq!((e.status, e.issue), (400, IssueType::Structure));
    // fhirbolt takes a decimal from a JSON string: checked when mapping.
    let mut v = obs();
    v["valueQuantity"]["value"] = json!("many");
    let r = parse_resource(&bytes(&v), Some("Observation")).unwrap();
    let e = events(&r, None, &ctx()).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::Value));
    assert_eq!(
        e.expression.as_deref(),
        Some("Observation.valueQuantity.value")
    );
    // Empty arrays/objects and null members (fhirbolt panics on some).
    for bad in [
        json!([]),
        json!({}),
        json!(null),
        json!([{"url": "u", "extension": []}]),
        json!([{"url": "u", "valueString": null}]),
    ] {
        let mut v = obs();
        v["extension"] = bad;
        let e = err(&bytes(&v), Some("Observation"));
        assert_eq!((e.status, e.issue), (400, IssueType::Structure));
    }
    let mut v = obs();
    v["contained"] = json!([{"resourceType": [], "id": "x"}]);
    assert_eq!(err(&bytes(&v), Some("Observation")).status, 400);
}

fn nested(levels: usize) -> Vec<u8> {
    let mut s = String::from(
        "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"extension\":",
    );
    for _ in 0..levels {
        s.push_str("[{\"url\":\"u\",\"extension\":");
    }
    s.push_str("[{\"url\":\"u\",\"valueString\":\"x\"}]");
    for _ in 0..levels {
        s.push_str("}]");
    }
    s.push('}');
    s.into_bytes()
}

/// Runs `f` on a thread with a 2 MiB stack (tokio's worker default).
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn row33_deep_nesting_is_400_without_stack_overflow() {
    let (a, b, c, d) = small_stack(|| {
        let deep: Vec<u8> = "[".repeat(10_000).into_bytes();
        let a = parse_resource(&deep, Some("Observation")).unwrap_err();
        let obj = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        let b = parse_bundle(obj.as_bytes()).unwrap_err();
        // 10,000 levels of extensions inside a valid-looking resource.
        let c = parse_resource(&nested(5_000), Some("Observation")).unwrap_err();
        // Just above the own limit (64): also refused.
        let d = parse_notification(&nested(40)).unwrap_err();
        (a, b, c, d)
    });
    for e in [a, b, c, d] {
        assert_eq!((e.status, e.issue), (400, IssueType::Structure));
    }
}

#[test]
fn deepest_accepted_nesting_fits_a_small_stack() {
    // 30 levels of extension (2 JSON levels each), the innermost extension
    // and the resource: depth 63, about the most fhirbolt is ever given.
    // Also as a Bundle entry.
    small_stack(|| {
        let levels = (MAX_DEPTH - 3) / 2;
        let r = parse_resource(&nested(levels), Some("Observation")).unwrap();
        events(&r, None, &ctx()).unwrap();
        let e = parse_resource(&nested(levels + 1), Some("Observation")).unwrap_err();
        assert_eq!(e.status, 400);
        let inner: Value = serde_json::from_slice(&nested(levels - 3)).unwrap();
        let b =
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]});
        parse_bundle(&bytes(&b)).unwrap();
    });
}

#[test]
fn row34_transaction_with_one_invalid_entry() {
    let mut bad = obs();
    bad["status"] = json!(CANARY);
    let entries = |bad: &Value| {
        json!([
            {"request": {"method": "POST", "url": "Observation"}, "resource": obs()},
            {"request": {"method": "POST", "url": "Observation"}, "resource": bad},
            {"request": {"method": "POST", "url": "Observation"}, "resource": obs()}
        ])
    };
    let t = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries(&bad)});
    let e = parse_bundle(&bytes(&t)).unwrap_err();
    assert_eq!((e.status, e.issue), (422, IssueType::CodeInvalid));
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.status")
    );
    assert_no_canary(&e);
    // A batch keeps going: the bad entry carries its own error.
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": entries(&bad)});
    let b = parse_bundle(&bytes(&b)).unwrap();
    assert!(matches!(b.entries[0].resource, Some(Ok(_))));
    let e = b.entries[1].resource.clone().unwrap().unwrap_err();
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.status")
    );
    assert_eq!(b.resources().count(), 2);
    // Entry-level problems.
    let no_req =
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": obs()}]});
    let e = parse_bundle(&bytes(&no_req)).unwrap_err();
    assert_eq!(e.expression.as_deref(), Some("Bundle.entry[0].request"));
    let bad_method = json!({"resourceType": "Bundle", "type": "batch",
                            "entry": [{"request": {"method": CANARY, "url": "x"}}]});
    let e = parse_bundle(&bytes(&bad_method)).unwrap_err();
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[0].request.method")
    );
    assert_no_canary(&e);
    let no_type = json!({"resourceType": "Bundle"});
    assert_eq!(
        parse_bundle(&bytes(&no_type)).unwrap_err().issue,
        IssueType::Required
    );
    let bad_type = json!({"resourceType": "Bundle", "type": CANARY});
    let e = parse_bundle(&bytes(&bad_type)).unwrap_err();
    assert_eq!(
        (e.issue, e.expression.as_deref()),
        (IssueType::CodeInvalid, Some("Bundle.type"))
    );
}

#[test]
fn canary_never_reaches_an_error() {
    let mut cases: Vec<(Vec<u8>, Option<&str>)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = obs();
        f(&mut v);
        bytes(&v)
    };
    cases.push((with(&|v| v["resourceType"] = json!(CANARY)), None));
    cases.push((
        with(&|v| v["resourceType"] = json!(CANARY)),
        Some("Observation"),
    ));
    cases.push((with(&|v| v["status"] = json!(CANARY)), Some("Observation")));
    cases.push((with(&|v| v[CANARY] = json!(CANARY)), Some("Observation")));
    cases.push((with(&|v| v["code"] = json!(CANARY)), Some("Observation")));
    cases.push((
        with(&|v| v["valueQuantity"]["value"] = json!(CANARY)),
        Some("Observation"),
    ));
    cases.push((
        with(&|v| v["subject"][CANARY] = json!(1)),
        Some("Observation"),
    ));
    cases.push((
        with(&|v| v["contained"] = json!([{"resourceType": CANARY}])),
        Some("Observation"),
    ));
    cases.push((format!("{{\"resourceType\": \"{CANARY}").into_bytes(), None));
    cases.push((format!("{{\"{CANARY}\" 1}}").into_bytes(), None));
    let mut n = 0;
    for (body, t) in &cases {
        match parse_resource(body, *t) {
            Err(e) => assert_no_canary(&e),
            // Decimals read from strings fail when mapped.
            Ok(r) => assert_no_canary(&events(&r, None, &ctx()).unwrap_err()),
        }
        if let Err(e) = parse_bundle(body) {
            assert_no_canary(&e);
        }
        if let Err(e) = parse_notification(body) {
            assert_no_canary(&e);
        }
        n += 1;
        // The same inside a Bundle entry.
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let b = json!({"resourceType": "Bundle", "type": "transaction",
                           "entry": [{"request": {"method": "POST", "url": "x"}, "resource": v}]});
            if let Err(e) = parse_bundle(&bytes(&b)) {
                assert_no_canary(&e);
            }
        }
    }
    assert_eq!(n, cases.len());
}

#[test]
fn operation_outcome_shape() {
    let e = FhirError::at(
        422,
        IssueType::Required,
        "Observation.status",
        "a required element is missing",
    );
    let oo = operation_outcome(std::slice::from_ref(&e));
    assert_eq!(
        oo,
        json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "required",
            "diagnostics": "a required element is missing",
            "expression": ["Observation.status"]}]})
    );
    let oo = operation_outcome(&[FhirError::too_long(), FhirError::transient()]);
    assert_eq!(oo["issue"].as_array().unwrap().len(), 2);
    assert_eq!(oo["issue"][1]["code"], "transient");
    assert!(oo["issue"][0].get("expression").is_none());
    assert_eq!(operation_outcome(&[])["issue"][0]["code"], "exception");
    let info = information_outcome("accepted");
    assert_eq!(info["issue"][0]["severity"], "information");
    assert_eq!(info["issue"][0]["code"], "informational");
    assert_eq!(
        e.to_string(),
        "422 required at Observation.status: a required element is missing"
    );
    for (e, s, c) in [
        (FhirError::unsupported_media_type(), 415, "not-supported"),
        (FhirError::login(), 401, "login"),
        (FhirError::forbidden(), 403, "forbidden"),
        (FhirError::throttled(), 429, "throttled"),
        (FhirError::too_long(), 413, "too-long"),
    ] {
        assert_eq!((e.status, e.issue.code()), (s, c));
    }
}

// ---------------------------------------------------------------- sweep

#[test]
fn no_panic_sweep() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for sub in ["fhir-r4", "fhir-r4b"] {
        if let Some(dir) = corpus(sub) {
            inputs.extend(
                files(&dir)
                    .into_iter()
                    .map(|(_, b)| b)
                    .filter(|b| b.len() < 24_000),
            );
        }
    }
    inputs.push(bytes(&obs()));
    inputs.push(bytes(&backport("event-notification")));
    let mut rng = StdRng::seed_from_u64(0x5B_F41B);
    let interesting: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"null",
        b"-1e999",
        b"\xff",
        b"\\u0000",
        b"\"status\":\"bogus\"",
        b"\"resourceType\":\"Bundle\"",
        b"\"reference\":\"#\"",
        b"\"2024-13-45T99:99:99Z\"",
        b"\"value\":1e400",
    ];
    let ctx = ctx();
    let mut parsed = 0;
    let caught = |e: &FhirError| e.diagnostics == "resource structure cannot be read";
    for i in 0..4000 {
        let base = &inputs[rng.random_range(0..inputs.len())];
        let mut b = base.clone();
        match i % 4 {
            3 => {
                if let Ok(mut v) = serde_json::from_slice::<Value>(&b) {
                    for _ in 0..rng.random_range(1..3) {
                        mutate_node(&mut v, &mut rng);
                    }
                    b = bytes(&v);
                }
            }
            0 => b.truncate(rng.random_range(0..=b.len())),
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    if b.is_empty() {
                        break;
                    }
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
            }
            _ => {
                let at = rng.random_range(0..=b.len());
                let ins = interesting[rng.random_range(0..interesting.len())];
                b.splice(at..at, ins.iter().copied());
            }
        }
        match parse_resource(&b, None) {
            Ok(r) => {
                parsed += 1;
                let _ = events(&r, None, &ctx);
            }
            Err(e) => assert!(!caught(&e), "fhirbolt panicked on input {i}"),
        }
        match parse_bundle(&b) {
            Ok(bundle) => {
                let cx = bundle.context();
                for (_, r) in bundle.resources() {
                    let _ = events(r, Some(&cx), &ctx);
                }
            }
            Err(e) => assert!(!caught(&e), "fhirbolt panicked on input {i}"),
        }
        if let Ok(n) = parse_notification(&b) {
            let cx = n.context();
            for inc in &n.included {
                match &inc.resource {
                    Ok(r) => {
                        let _ = events(r, Some(&cx), &ctx);
                    }
                    Err(e) => assert!(!caught(e), "fhirbolt panicked on input {i}"),
                }
            }
        }
    }
    assert!(parsed > 0, "some mutations still parse");
}

/// Replaces one random node of `v` with a structurally odd value.
fn mutate_node(v: &mut Value, rng: &mut StdRng) {
    let odd = [
        json!([]),
        json!({}),
        json!(null),
        json!(""),
        json!(0),
        json!(-1.5e300),
        json!(true),
        json!("ZZCANARY"),
        json!([[]]),
        json!([null]),
        json!({"resourceType": "Observation"}),
        json!([{"resourceType": []}]),
        json!({"reference": "#"}),
        json!("2024-02-30T25:61:00Z"),
    ];
    let mut cur = v;
    loop {
        let n = match &*cur {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if n == 0 || rng.random_range(0..4) == 0 {
            *cur = odd[rng.random_range(0..odd.len())].clone();
            return;
        }
        let k = rng.random_range(0..n);
        cur = match cur {
            Value::Array(a) => &mut a[k],
            Value::Object(o) => o.values_mut().nth(k).unwrap(),
            _ => unreachable!(),
        };
    }
}
