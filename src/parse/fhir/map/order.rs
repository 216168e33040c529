//! ServiceRequest -> one `Order` event.
//!
//! | ServiceRequest | event |
//! | --- | --- |
//! | status draft, active / on-hold / revoked / completed / entered-in-error / unknown | `order.control` (ORC-1) `NW` / `HD` / `CA` / `SC` / `CA` / empty; `order.status` (ORC-5, table 0038) `SC`, `IP` / `HD` / `CA` / `CM` / `ER` / empty (draft: control `NW`, status `SC`) |
//! | priority routine / urgent / asap / stat | Routine / Urgent / Urgent / Stat |
//! | code | `order.service` |
//! | identifier typed `PLAC` (else the first not typed `FILL`) / typed `FILL` | `placer_id` / `filler_id` |
//! | occurrence[x] (dateTime, Period.start) | `order.observed_at` |
//! | authoredOn (else meta.lastUpdated) | `occurred_at` |
//! | requester / performer | Ordering / CareTeam `performer` |
//! | subject / encounter | patient / visit, location, class |
//! | note; doNotPerform = true | notes; the note `DO NOT PERFORM` first |
//!
//! `intent` is validated but not carried (the event has no place for it).

use fhirbolt::model::r4::resources::{ServiceRequest, ServiceRequestOccurrence};

use crate::event::{ClinicalEvent, EventKind, Order, ProviderRole};
use crate::parse::fhir::error::FhirError;

use super::{Cx, code, identifier, notes, pv, request_priority, typed_identifier};

/// ORC-1 and ORC-5 for a request status.
pub(crate) fn control_and_status(s: Option<&str>) -> (&'static str, &'static str) {
    match s {
        Some("draft") => ("NW", "SC"),
        Some("active") => ("NW", "IP"),
        Some("on-hold") => ("HD", "HD"),
        Some("revoked") => ("CA", "CA"),
        Some("completed") => ("SC", "CM"),
        Some("entered-in-error") => ("CA", "ER"),
        _ => ("", ""),
    }
}

pub(crate) fn event(cx: &Cx<'_>, s: &ServiceRequest) -> Result<ClinicalEvent, FhirError> {
    let st = s.status.value.as_deref();
    let mut ev = cx.event(EventKind::Order, st.unwrap_or(""));
    ev.patient = cx.patient(Some(&s.subject));
    cx.encounter(&mut ev, s.encounter.as_deref());
    cx.add_providers(&mut ev, s.requester.as_deref(), ProviderRole::Ordering, "");
    cx.add_providers(&mut ev, &s.performer, ProviderRole::CareTeam, "performer");
    ev.priority = request_priority(pv!(s.priority));
    let observed_at = match &s.occurrence {
        Some(ServiceRequestOccurrence::DateTime(t)) => cx.time(t.value.as_deref(), || {
            "ServiceRequest.occurrenceDateTime".to_string()
        })?,
        Some(ServiceRequestOccurrence::Period(p)) => cx.time(pv!(p.start), || {
            "ServiceRequest.occurrencePeriod.start".to_string()
        })?,
        _ => None,
    };
    let authored = cx.time(pv!(s.authored_on), || {
        "ServiceRequest.authoredOn".to_string()
    })?;
    let (control, status) = control_and_status(st);
    ev.order = Some(Order {
        control: control.to_string(),
        placer_id: typed_identifier(&s.identifier, "PLAC")
            .or_else(|| {
                s.identifier
                    .iter()
                    .filter_map(identifier)
                    .find(|i| i.type_code != "FILL")
                    .map(|i| i.value)
            })
            .unwrap_or_default(),
        filler_id: typed_identifier(&s.identifier, "FILL").unwrap_or_default(),
        service: s.code.as_deref().map(code).unwrap_or_default(),
        status: status.to_string(),
        observed_at,
        result_status: String::new(),
    });
    ev.occurred_at = authored.or_else(|| cx.last_updated(s.meta.as_deref()));
    if s.do_not_perform.as_ref().and_then(|b| b.value) == Some(true) {
        ev.notes.push("DO NOT PERFORM".to_string());
    }
    ev.notes.extend(notes(&s.note));
    Ok(ev)
}
