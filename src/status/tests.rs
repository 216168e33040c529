//! What each transition reports where, and the FHIR resources built for
//! the EHR write-back and the Communication backend.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;

use super::fhir_writeback::{self, member_reference, task_status};
use super::{Hooks, Status, WRITEBACK, changes, ora_target};
use crate::alert::engine::{Ack, Recipients};
use crate::alert::model::{Alert, Reason, State};
use crate::config::{StatusConfig, StatusRetry, WritebackConfig};
use crate::delivery::Outgoing;
use crate::delivery::fhir::{communication as backend_communication, r4_json};
use crate::event::{Alarm, ClinicalEvent, Code, EventKind, ResultStatus};
use crate::journal::NotificationRow;
use crate::rules::tests::result_event;
use crate::rules::{AlertPriority, EscalationPolicy, RouteTarget, Tier, TierTarget};

struct Staff;

impl Recipients for Staff {
    fn tier(&self, _: &Alert, tier: usize) -> Vec<String> {
        match tier {
            0 => vec!["rn-a".into()],
            1 => vec!["rn-b".into()],
            _ => Vec::new(),
        }
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn alarm_event(sender: &str) -> ClinicalEvent {
    let mut ev = result_event();
    ev.kind = EventKind::Alarm;
    ev.source.sender = sender.into();
    ev.source.control_id = "R40-1".into();
    ev.alarm = Some(Alarm {
        id: "ALARM-42".into(),
        phase: "start".into(),
        priority: "PH".into(),
        kind: Code {
            code: "196648".into(),
            text: "MDC_EVT_HI".into(),
            system: "MDC".into(),
        },
        source: "MON-7".into(),
        state: "active".into(),
    });
    ev
}

fn alert(ev: ClinicalEvent) -> Alert {
    let tier = |target| Tier {
        target,
        timeout: Some(Duration::from_secs(120)),
    };
    Alert {
        id: 42,
        rule: "high-priority-alarm".into(),
        priority: AlertPriority::Stat,
        target: RouteTarget::Person { id: "rn-a".into() },
        policy: EscalationPolicy {
            name: "stat".into(),
            tiers: vec![tier(TierTarget::Route), tier(TierTarget::Failsafe)],
            repeats: 0,
            renotify: None,
        },
        clear: None,
        dedup_key: "k".into(),
        dedup_until: None,
        group_key: None,
        group_until: None,
        state: State::Notifying,
        tier: 0,
        round: 0,
        deadline: None,
        created_at: t0(),
        late: false,
        count: 1,
        event_id: 9,
        event: ev,
        notified: Vec::new(),
        accepted_by: None,
        timeline: Vec::new(),
    }
}

fn hooks(sources: &[&str], writeback: bool) -> Hooks {
    let cfg = StatusConfig {
        writeback: writeback.then(|| WritebackConfig {
            fhir_base: "http://127.0.0.1:1/fhir".into(),
            ca: None,
            client_cert: None,
            client_key: None,
            token_env: None,
            profile: "limited".into(),
            end_to_end: false,
            timeout: Duration::from_secs(1),
            retry: StatusRetry {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
                give_up_after: Duration::from_secs(60),
            },
        }),
        alarm_sources: sources
            .iter()
            .map(|s| crate::config::AlarmSourceConfig {
                sender: s.to_string(),
                mllp: "127.0.0.1:1".into(),
                tls: false,
                ca: None,
                server_name: None,
                application: "SWITCHBOARD".into(),
                facility: String::new(),
                connect_timeout: Duration::from_secs(1),
                answer_timeout: Duration::from_secs(1),
                retry: StatusRetry {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                    give_up_after: Duration::from_secs(60),
                },
            })
            .collect(),
    };
    Hooks::new(&cfg)
}

/// Runs `f` on the alert and returns what that one transition reports.
fn step(
    a: &mut Alert,
    h: &Hooks,
    f: impl FnOnce(&mut Alert),
) -> Vec<(String, Status, Option<String>)> {
    let (steps, notices) = (a.timeline.len(), a.notified.len());
    f(a);
    h.reports(a, steps, notices, at(100))
        .into_iter()
        .map(|r| (r.target, r.status, r.member))
        .collect()
}

fn ack(a: &mut Alert, ack: Ack, secs: i64) {
    a.on_ack(&ack, at(secs), &Staff).unwrap();
}

#[test]
fn changes_follow_the_words_the_engine_writes() {
    let mut a = alert(result_event());
    a.start(at(0), &Staff);
    ack(
        &mut a,
        Ack::Delivered {
            member: "rn-a".into(),
        },
        1,
    );
    ack(
        &mut a,
        Ack::Read {
            member: "rn-a".into(),
        },
        2,
    );
    ack(
        &mut a,
        Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: Some("operator:ops".into()),
        },
        3,
    );
    ack(
        &mut a,
        Ack::Resolve {
            by: "member:rn-a".into(),
        },
        4,
    );
    let got: Vec<(Status, Option<String>, DateTime<Utc>)> = changes(&a, 0, 0)
        .into_iter()
        .map(|c| (c.status, c.member, c.at))
        .collect();
    let m = || Some("rn-a".to_string());
    assert_eq!(
        got,
        [
            (Status::Notified, m(), at(0)),
            (Status::Delivered, m(), at(1)),
            (Status::Read, m(), at(2)),
            (Status::Accepted, m(), at(3)),
            (Status::Resolved, m(), at(4)),
        ],
        "the accepted member is named even when an operator acted for them"
    );
}

#[test]
fn an_alarm_reports_to_its_own_source_and_the_writeback_hears_everything() {
    let h = hooks(&["monitors"], true);
    let mut a = alert(alarm_event("monitors"));
    let ora = ora_target("monitors");
    let new = step(&mut a, &h, |a| {
        a.start(at(0), &Staff);
    });
    assert_eq!(
        new,
        [(WRITEBACK.to_string(), Status::Notified, Some("rn-a".into()))],
        "the source is not told of notices"
    );
    let new = step(&mut a, &h, |a| {
        ack(
            a,
            Ack::Delivered {
                member: "rn-a".into(),
            },
            1,
        )
    });
    assert_eq!(
        new,
        [
            (ora.clone(), Status::Delivered, Some("rn-a".into())),
            (
                WRITEBACK.to_string(),
                Status::Delivered,
                Some("rn-a".into())
            ),
        ]
    );
    let new = step(&mut a, &h, |a| {
        ack(
            a,
            Ack::Accept {
                member: "rn-a".into(),
                on_behalf_by: None,
            },
            2,
        )
    });
    assert_eq!(new[0], (ora, Status::Accepted, Some("rn-a".into())));
    // Another sender's alarm, or a result, never goes to this source.
    for ev in [alarm_event("other-monitors"), result_event()] {
        let mut b = alert(ev);
        let r = step(&mut b, &h, |b| {
            b.start(at(0), &Staff);
            ack(
                b,
                Ack::Delivered {
                    member: "rn-a".into(),
                },
                1,
            );
        });
        assert!(r.iter().all(|x| x.0 == WRITEBACK), "{r:?}");
    }
    // A storm summary speaks for many alarms: not reported as this one.
    let mut s = alert(alarm_event("monitors"));
    s.rule = "storm:ICU".into();
    let r = step(&mut s, &h, |s| {
        s.start(at(0), &Staff);
        ack(
            s,
            Ack::Delivered {
                member: "rn-a".into(),
            },
            1,
        );
    });
    assert!(r.iter().all(|x| x.0 == WRITEBACK), "{r:?}");
}

#[test]
fn a_receipt_counts_once_per_member_but_every_decline_is_reported() {
    let h = hooks(&["monitors"], false);
    let mut a = alert(alarm_event("monitors"));
    a.start(at(0), &Staff);
    let first = h.reports(
        &{
            let mut x = a.clone();
            ack(
                &mut x,
                Ack::Delivered {
                    member: "rn-a".into(),
                },
                1,
            );
            x
        },
        a.timeline.len(),
        a.notified.len(),
        at(1),
    );
    ack(
        &mut a,
        Ack::Delivered {
            member: "rn-a".into(),
        },
        1,
    );
    let (s, n) = (a.timeline.len(), a.notified.len());
    ack(
        &mut a,
        Ack::Delivered {
            member: "rn-a".into(),
        },
        5,
    );
    let again = h.reports(&a, s, n, at(5));
    assert_eq!(
        first[0].dedup_key, again[0].dedup_key,
        "the journal keeps one"
    );
    assert_ne!(first[0].control_id, again[0].control_id);
    assert_eq!(first[0].control_id.len(), 20);
    let new = step(&mut a, &h, |a| {
        ack(
            a,
            Ack::Decline {
                member: "rn-a".into(),
            },
            6,
        )
    });
    assert_eq!(
        new,
        [(
            ora_target("monitors"),
            Status::Declined,
            Some("rn-a".into())
        )],
        "the escalation's notice is not the source's business"
    );
}

#[test]
fn a_cleared_or_retracted_alert_reports_cancelled_and_an_unsent_one_stays_out_of_the_ehr() {
    let h = hooks(&["monitors"], true);
    let mut a = alert(alarm_event("monitors"));
    a.state = State::Held;
    a.start(at(0), &Staff);
    let mut end = alarm_event("monitors");
    end.alarm.as_mut().unwrap().phase = "end".into();
    a.clear = Some(crate::rules::ClearOn::AlarmEnd);
    let r = step(&mut a, &h, |a| {
        a.on_related(&end, 10, false, at(5), &Staff);
    });
    assert_eq!(a.state, State::Cancelled);
    assert_eq!(
        r,
        [(ora_target("monitors"), Status::Cancelled, None)],
        "the EHR never hears of an alert nobody was told of"
    );
    // A retraction of a result that was sent: the EHR hears it.
    let mut b = alert(result_event());
    b.start(at(0), &Staff);
    let mut wrong = result_event();
    for o in &mut wrong.observations {
        o.status = ResultStatus::WrongPatient;
    }
    let r = step(&mut b, &h, |b| {
        b.on_related(&wrong, 11, false, at(6), &Staff);
    });
    assert!(
        r.contains(&(WRITEBACK.to_string(), Status::Cancelled, None)),
        "{r:?}"
    );
}

fn view_of(a: &Alert, profile: &str) -> crate::redact::Redacted<crate::redact::AlertView> {
    let p = match crate::redact::builtin(profile) {
        Some(p) => p,
        // A configured profile with the identifiers that name the patient
        // and the order (only on a channel declared end-to-end).
        None => {
            crate::redact::Profile::custom(profile, &["mrn", "order_number", "clinical"]).unwrap()
        }
    };
    crate::redact::redact(a, Reason::New, &p)
}

#[test]
fn the_task_status_follows_the_alert() {
    let mut a = alert(result_event());
    a.start(at(0), &Staff);
    assert_eq!(task_status(&a), "requested");
    ack(
        &mut a,
        Ack::Delivered {
            member: "rn-a".into(),
        },
        1,
    );
    assert_eq!(task_status(&a), "received");
    ack(
        &mut a,
        Ack::Decline {
            member: "rn-a".into(),
        },
        2,
    );
    assert_eq!(task_status(&a), "rejected", "declined, escalated to rn-b");
    ack(
        &mut a,
        Ack::Accept {
            member: "rn-b".into(),
            on_behalf_by: None,
        },
        3,
    );
    assert_eq!(task_status(&a), "accepted");
    ack(
        &mut a,
        Ack::Resolve {
            by: "member:rn-b".into(),
        },
        4,
    );
    assert_eq!(task_status(&a), "completed");
    let mut c = alert(result_event());
    c.start(at(0), &Staff);
    c.on_deadline(at(200), &Staff);
    c.on_deadline(at(400), &Staff);
    assert_eq!((c.state, task_status(&c)), (State::Exhausted, "failed"));
}

#[test]
fn writeback_resources_are_valid_r4_and_carry_no_patient_identifier_under_limited() {
    let mut a = alert(result_event());
    a.event.order.as_mut().unwrap().filler_id = "ORD-77".into();
    a.start(at(0), &Staff);
    ack(
        &mut a,
        Ack::Delivered {
            member: "rn-a".into(),
        },
        1,
    );
    ack(
        &mut a,
        Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: None,
        },
        2,
    );
    let view = view_of(&a, "limited");
    let owner = serde_json::json!({"reference": "Practitioner/123", "display": "RN A"});
    let task = fhir_writeback::task(&a, &view, "0a1b2c3d", Some(owner.clone()));
    let back: Value = serde_json::from_slice(&r4_json(&task).unwrap()).unwrap();
    assert_eq!(back["id"], "sb-0a1b2c3d-42");
    assert_eq!(
        (back["status"].as_str(), back["intent"].as_str()),
        (Some("accepted"), Some("order"))
    );
    assert_eq!(back["owner"], owner);
    assert_eq!(back["priority"], "stat");
    assert!(
        back.get("for").is_none() && back.get("focus").is_none(),
        "{back}"
    );
    let text = serde_json::to_string(&back).unwrap();
    assert!(!text.contains("123\"}") || !text.contains("HOSP"), "no MRN");
    assert!(
        !text.contains("ORD-77"),
        "no order number under limited: {text}"
    );
    let comm = fhir_writeback::communication(
        &a,
        &view,
        "0a1b2c3d",
        "rn-a",
        serde_json::json!({"display": "RN A"}),
    );
    let back: Value = serde_json::from_slice(&r4_json(&comm).unwrap()).unwrap();
    assert_eq!(back["status"], "completed");
    assert_eq!(back["sent"], "2026-11-23T12:00:00.000Z");
    assert_eq!(back["received"], "2026-11-23T12:00:01.000Z");
    assert_eq!(back["basedOn"][0]["reference"], "Task/sb-0a1b2c3d-42");
    assert_eq!(back["identifier"][0]["system"], "urn:ietf:rfc:3986");
    assert!(
        back["identifier"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    // Under a profile that allows them (end-to-end configured): patient
    // and order.
    let full = view_of(&a, "with-identifiers");
    let task = fhir_writeback::task(&a, &full, "0a1b2c3d", None);
    let back: Value = serde_json::from_slice(&r4_json(&task).unwrap()).unwrap();
    assert_eq!(back["for"]["identifier"]["value"], "123");
    assert_eq!(back["focus"]["identifier"]["value"], "ORD-77");
    assert!(back.get("owner").is_none());
}

#[test]
fn a_communication_not_received_before_the_alert_closed_is_stopped() {
    let mut a = alert(result_event());
    a.start(at(0), &Staff);
    let view = view_of(&a, "limited");
    let c =
        fhir_writeback::communication(&a, &view, "o", "rn-a", serde_json::json!({"display": "x"}));
    assert_eq!(c["status"], "in-progress");
    assert!(c.get("received").is_none());
    ack(
        &mut a,
        Ack::Resolve {
            by: "operator:ops".into(),
        },
        9,
    );
    let c =
        fhir_writeback::communication(&a, &view, "o", "rn-a", serde_json::json!({"display": "x"}));
    assert_eq!(c["status"], "stopped");
}

#[test]
fn members_are_referenced_by_fhir_handle_then_npi_then_name() {
    let rosters = crate::roster::load_files(&[(
        std::path::PathBuf::from("w.toml"),
        r#"
name = "w"
timezone = "America/New_York"
[[members]]
id = "a"
display = "Dr A"
contacts = { fhir = "Practitioner/77" }
ids = [{ value = "9990000101", authority = "NPI" }]
[[members]]
id = "b"
display = "Dr B"
contacts = { webhook = "http://127.0.0.1:1/b" }
ids = [{ value = "C1", authority = "HOSP" }, { value = "9990000102", authority = "NPI" }]
[[members]]
id = "c"
display = "Dr C"
contacts = { webhook = "http://127.0.0.1:1/c" }
"#
        .into(),
    )])
    .unwrap();
    let fhir = vec!["fhir".to_string()];
    let r = |id: &str| member_reference(id, rosters.member(id).map(|m| m.as_ref()), &fhir);
    assert_eq!(r("a")["reference"], "Practitioner/77");
    assert_eq!(r("a")["display"], "Dr A");
    assert_eq!(
        r("b")["identifier"]["system"],
        "http://hl7.org/fhir/sid/us-npi"
    );
    assert_eq!(r("b")["identifier"]["value"], "9990000102");
    assert_eq!(r("c"), serde_json::json!({"display": "Dr C"}));
    assert_eq!(r("gone"), serde_json::json!({"display": "gone"}));
}

fn row(handle: &str) -> NotificationRow {
    NotificationRow {
        id: 1,
        alert_id: 42,
        seq: 0,
        member: "rn-a".into(),
        backend: "fhir".into(),
        handle: handle.into(),
        tier: 0,
        reason: "new".into(),
        state: "pending".into(),
        idempotency_key: "00ff".into(),
        remote_ref: None,
    }
}

#[test]
fn the_backend_communication_is_valid_r4_and_carries_only_the_text() {
    let mut a = alert(result_event());
    a.event.order.as_mut().unwrap().filler_id = "ORD-77".into();
    a.event.notes = vec!["ZZCANARY note".into()];
    a.start(at(0), &Staff);
    let view = view_of(&a, "limited");
    let r = row("Practitioner/123");
    let out = Outgoing {
        row: &r,
        view: &view,
        text: "STAT critical result ICU 12-A",
        now: at(3),
    };
    let c = backend_communication(&out).unwrap();
    let back: Value = serde_json::from_slice(&r4_json(&c).unwrap()).unwrap();
    assert_eq!(back["status"], "in-progress");
    assert_eq!(back["priority"], "stat");
    assert_eq!(back["recipient"][0]["reference"], "Practitioner/123");
    assert_eq!(
        back["payload"],
        serde_json::json!([{"contentString": "STAT critical result ICU 12-A"}])
    );
    assert_eq!(back["sent"], "2026-11-23T12:00:03.000Z");
    assert_eq!(
        back["identifier"][0]["value"],
        crate::delivery::fhir::urn_uuid("00ff")
    );
    assert!(
        back.get("basedOn").is_none(),
        "no order number under limited"
    );
    let mut keys: Vec<&str> = back
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "category",
            "identifier",
            "payload",
            "priority",
            "recipient",
            "resourceType",
            "sent",
            "status"
        ]
    );
    let text = serde_json::to_string(&back).unwrap();
    assert!(
        !text.contains("ZZCANARY") && !text.contains("ORD-77"),
        "{text}"
    );
    // A profile with the order number: basedOn names it.
    let full = view_of(&a, "with-identifiers");
    let out = Outgoing {
        row: &r,
        view: &full,
        text: "x",
        now: at(3),
    };
    let c = backend_communication(&out).unwrap();
    assert_eq!(c["basedOn"][0]["identifier"]["value"], "ORD-77");
    // A handle that is not a Practitioner reference is refused.
    let bad = row("@rn-a:localhost");
    let out = Outgoing {
        row: &bad,
        view: &view,
        text: "x",
        now: at(3),
    };
    assert!(backend_communication(&out).is_err());
}
