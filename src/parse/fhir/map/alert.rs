//! Flag and DetectedIssue -> `Alarm` events; Communication and
//! CommunicationRequest -> `Communication` events.
//!
//! Flag and DetectedIssue are alerts a clinical system raises about a
//! patient (a safety flag, a drug interaction), so they travel as `Alarm`
//! with [`Alarm`] filled as for IHE PCD ACM, which keeps one alert path for
//! rules:
//!
//! | element | Flag | DetectedIssue |
//! | --- | --- | --- |
//! | `alarm.id` | first identifier, else id | same |
//! | `alarm.phase` | active `present`; inactive, entered-in-error `end` | cancelled, entered-in-error `end`; others `present` |
//! | `alarm.priority` / `priority` | empty / Unspecified | severity high `PH` / Stat, moderate `PM` / Urgent, low `PL` / Routine |
//! | `alarm.kind` | code | code |
//! | `alarm.source` | author display, else reference | same |
//! | `alarm.state` | status | status |
//! | patient | subject | patient |
//! | `occurred_at` | period.start | identified[x] |
//! | notes | | detail |
//!
//! Communication / CommunicationRequest (kind `Communication`): priority
//! as requests; `order` carries `placer_id` = first identifier, `service` =
//! first category (else Communication.topic), `status` = the FHIR status,
//! `observed_at` = sent (Communication) or occurrence[x] (request); sender,
//! recipients as CareTeam `sender`/`recipient`; requester as Ordering;
//! `occurred_at` = sent, else received (Communication) or authoredOn
//! (request); notes = string payloads then `note`; doNotPerform as the note
//! `DO NOT PERFORM`.

use fhirbolt::model::r4::resources::{
    Communication, CommunicationPayloadContent, CommunicationRequest,
    CommunicationRequestOccurrence, CommunicationRequestPayloadContent, DetectedIssue,
    DetectedIssueIdentified, Flag,
};
use fhirbolt::model::r4::types::Reference;

use crate::event::{Alarm, ClinicalEvent, EventKind, Order, Priority, ProviderRole};
use crate::parse::fhir::error::FhirError;

use super::{Cx, code, notes, pv, request_priority};

fn source(r: Option<&Reference>) -> String {
    r.and_then(|r| pv!(r.display).or(pv!(r.reference)))
        .unwrap_or("")
        .to_string()
}

fn alarm_id(cx: &Cx<'_>) -> String {
    cx.resource
        .identifiers
        .first()
        .map(|i| i.value.clone())
        .or_else(|| cx.resource.id.clone())
        .unwrap_or_default()
}

pub(crate) fn flag(cx: &Cx<'_>, f: &Flag) -> Result<ClinicalEvent, FhirError> {
    let st = f.status.value.as_deref().unwrap_or("");
    let mut ev = cx.event(EventKind::Alarm, st);
    ev.patient = cx.patient(Some(&f.subject));
    cx.encounter(&mut ev, f.encounter.as_deref());
    ev.alarm = Some(Alarm {
        id: alarm_id(cx),
        phase: if st == "active" { "present" } else { "end" }.to_string(),
        priority: String::new(),
        kind: code(&f.code),
        source: source(f.author.as_deref()),
        state: st.to_string(),
    });
    let start = f.period.as_deref().and_then(|p| pv!(p.start));
    ev.occurred_at = cx
        .time(start, || "Flag.period.start".to_string())?
        .or_else(|| cx.last_updated(f.meta.as_deref()));
    Ok(ev)
}

pub(crate) fn detected_issue(cx: &Cx<'_>, d: &DetectedIssue) -> Result<ClinicalEvent, FhirError> {
    let st = d.status.value.as_deref().unwrap_or("");
    let mut ev = cx.event(EventKind::Alarm, st);
    ev.patient = cx.patient(d.patient.as_deref());
    let (alarm_priority, priority) = match pv!(d.severity) {
        Some("high") => ("PH", Priority::Stat),
        Some("moderate") => ("PM", Priority::Urgent),
        Some("low") => ("PL", Priority::Routine),
        _ => ("", Priority::Unspecified),
    };
    ev.priority = priority;
    ev.alarm = Some(Alarm {
        id: alarm_id(cx),
        phase: if matches!(st, "cancelled" | "entered-in-error") {
            "end"
        } else {
            "present"
        }
        .to_string(),
        priority: alarm_priority.to_string(),
        kind: d.code.as_deref().map(code).unwrap_or_default(),
        source: source(d.author.as_deref()),
        state: st.to_string(),
    });
    let identified = match &d.identified {
        Some(DetectedIssueIdentified::DateTime(t)) => cx.time(t.value.as_deref(), || {
            "DetectedIssue.identifiedDateTime".to_string()
        })?,
        Some(DetectedIssueIdentified::Period(p)) => cx.time(pv!(p.start), || {
            "DetectedIssue.identifiedPeriod.start".to_string()
        })?,
        _ => None,
    };
    ev.occurred_at = identified.or_else(|| cx.last_updated(d.meta.as_deref()));
    if let Some(t) = pv!(d.detail).filter(|t| !t.trim().is_empty()) {
        ev.notes.push(t.to_string());
    }
    Ok(ev)
}

pub(crate) fn communication(cx: &Cx<'_>, c: &Communication) -> Result<ClinicalEvent, FhirError> {
    let st = c.status.value.as_deref().unwrap_or("");
    let mut ev = cx.event(EventKind::Communication, st);
    ev.patient = cx.patient(c.subject.as_deref());
    cx.encounter(&mut ev, c.encounter.as_deref());
    ev.priority = request_priority(pv!(c.priority));
    cx.add_providers(
        &mut ev,
        c.sender.as_deref(),
        ProviderRole::CareTeam,
        "sender",
    );
    cx.add_providers(&mut ev, &c.recipient, ProviderRole::CareTeam, "recipient");
    let sent = cx.time(pv!(c.sent), || "Communication.sent".to_string())?;
    let received = cx.time(pv!(c.received), || "Communication.received".to_string())?;
    ev.order = Some(Order {
        placer_id: cx
            .resource
            .identifiers
            .first()
            .map(|i| i.value.clone())
            .unwrap_or_default(),
        service: c
            .category
            .first()
            .or(c.topic.as_deref())
            .map(code)
            .unwrap_or_default(),
        status: st.to_string(),
        observed_at: sent,
        ..Order::default()
    });
    ev.occurred_at = sent
        .or(received)
        .or_else(|| cx.last_updated(c.meta.as_deref()));
    for p in &c.payload {
        if let CommunicationPayloadContent::String(s) = &p.content {
            ev.notes
                .extend(s.value.clone().filter(|t| !t.trim().is_empty()));
        }
    }
    ev.notes.extend(notes(&c.note));
    Ok(ev)
}

pub(crate) fn communication_request(
    cx: &Cx<'_>,
    c: &CommunicationRequest,
) -> Result<ClinicalEvent, FhirError> {
    let st = c.status.value.as_deref().unwrap_or("");
    let mut ev = cx.event(EventKind::Communication, st);
    ev.patient = cx.patient(c.subject.as_deref());
    cx.encounter(&mut ev, c.encounter.as_deref());
    ev.priority = request_priority(pv!(c.priority));
    cx.add_providers(&mut ev, c.requester.as_deref(), ProviderRole::Ordering, "");
    cx.add_providers(
        &mut ev,
        c.sender.as_deref(),
        ProviderRole::CareTeam,
        "sender",
    );
    cx.add_providers(&mut ev, &c.recipient, ProviderRole::CareTeam, "recipient");
    let occurrence = match &c.occurrence {
        Some(CommunicationRequestOccurrence::DateTime(t)) => cx.time(t.value.as_deref(), || {
            "CommunicationRequest.occurrenceDateTime".to_string()
        })?,
        Some(CommunicationRequestOccurrence::Period(p)) => cx.time(pv!(p.start), || {
            "CommunicationRequest.occurrencePeriod.start".to_string()
        })?,
        _ => None,
    };
    let authored = cx.time(pv!(c.authored_on), || {
        "CommunicationRequest.authoredOn".to_string()
    })?;
    ev.order = Some(Order {
        placer_id: cx
            .resource
            .identifiers
            .first()
            .map(|i| i.value.clone())
            .unwrap_or_default(),
        service: c.category.first().map(code).unwrap_or_default(),
        status: st.to_string(),
        observed_at: occurrence,
        ..Order::default()
    });
    ev.occurred_at = authored.or_else(|| cx.last_updated(c.meta.as_deref()));
    if c.do_not_perform.as_ref().and_then(|b| b.value) == Some(true) {
        ev.notes.push("DO NOT PERFORM".to_string());
    }
    for p in &c.payload {
        if let CommunicationRequestPayloadContent::String(s) = &p.content {
            ev.notes
                .extend(s.value.clone().filter(|t| !t.trim().is_empty()));
        }
    }
    ev.notes.extend(notes(&c.note));
    Ok(ev)
}
