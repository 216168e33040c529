//! Encounter -> one ADT-like event.
//!
//! A FHIR Encounter is a state, not a transition, so the kind is read from
//! the state it is in now:
//!
//! | status | condition | kind |
//! | --- | --- | --- |
//! | arrived, triaged, in-progress | inpatient class (`IMP`, `ACUTE`, `NONAC`) | Admit (A01) |
//! | arrived, triaged, in-progress | any other class (`AMB`, `EMER`, `OBSENC`, `VR`, ...) | Register (A04) |
//! | in-progress | a `location` that is `active` and one that is `completed` | Transfer (A02), prior = the last completed one |
//! | finished | | Discharge (A03) |
//! | cancelled, entered-in-error | | CancelAdmit (A11) |
//! | planned, onleave, unknown | | Update (A08) |
//!
//! - location: the last `location` with status `active` (else the last one
//!   that is neither `completed` nor `planned`; for a discharge, else the
//!   last one); prior location: the last `completed` one (transfers only).
//! - patient class (PV1-2) from `class.code`: `IMP`/`ACUTE`/`NONAC` `I`,
//!   `EMER` `E`, `PRENC` `P`, `AMB`/`OBSENC`/`SS`/`HH`/`VR`/`FLD` `O`, else `U`.
//! - visit: first identifier. Participants: type `ATND` Attending, `REF`
//!   Referring, `CON` Consulting, `ADM` Admitting, any other type CareTeam
//!   with that code (no type: CareTeam, empty code).
//! - priority (v3 ActPriority): `S`/`EM` Stat, `A`/`UR` Urgent, `R`/`EL`
//!   Routine.
//! - `occurred_at`: Transfer: the active location's `period.start`;
//!   Discharge: `period.end`; others: `period.start`; then meta.lastUpdated.

use fhirbolt::model::r4::resources::{Encounter, EncounterLocation};

use crate::event::{ClinicalEvent, EventKind, Priority, ProviderRole};
use crate::parse::fhir::error::FhirError;

use super::{Cx, pv};

/// PV1-2 from an ActCode class.
pub(crate) fn patient_class(code: &str) -> String {
    match code {
        "IMP" | "ACUTE" | "NONAC" => "I",
        "EMER" => "E",
        "PRENC" => "P",
        "AMB" | "OBSENC" | "SS" | "HH" | "VR" | "FLD" => "O",
        _ => "U",
    }
    .to_string()
}

fn loc_status(l: &EncounterLocation) -> Option<&str> {
    pv!(l.status)
}

/// The current location entry, with its index.
pub(crate) fn current_location(e: &Encounter) -> Option<(usize, &EncounterLocation)> {
    let all = || e.location.iter().enumerate().rev();
    all()
        .find(|(_, l)| loc_status(l) == Some("active"))
        .or_else(|| all().find(|(_, l)| !matches!(loc_status(l), Some("completed" | "planned"))))
}

fn prior_location(e: &Encounter) -> Option<&EncounterLocation> {
    e.location
        .iter()
        .rev()
        .find(|l| loc_status(l) == Some("completed"))
}

/// The event kind for an encounter's state (see the module table).
pub(crate) fn kind(e: &Encounter) -> EventKind {
    let inpatient = matches!(pv!(e.class.code), Some("IMP" | "ACUTE" | "NONAC"));
    let started = if inpatient {
        EventKind::Admit
    } else {
        EventKind::Register
    };
    let moved =
        e.location.iter().any(|l| loc_status(l) == Some("active")) && prior_location(e).is_some();
    match e.status.value.as_deref() {
        Some("in-progress") if moved => EventKind::Transfer,
        Some("arrived" | "triaged" | "in-progress") => started,
        Some("finished") => EventKind::Discharge,
        Some("cancelled" | "entered-in-error") => EventKind::CancelAdmit,
        _ => EventKind::Update,
    }
}

pub(crate) fn event(cx: &Cx<'_>, e: &Encounter) -> Result<ClinicalEvent, FhirError> {
    let kind = kind(e);
    let mut ev = cx.event(kind, e.status.value.as_deref().unwrap_or(""));
    ev.patient = cx.patient(e.subject.as_deref());
    ev.patient_class = patient_class(pv!(e.class.code).unwrap_or(""));
    ev.visit = cx.resource.identifiers.first().cloned();
    let current = current_location(e);
    ev.location = current
        .map(|(_, l)| l)
        .or(if kind == EventKind::Discharge {
            e.location.last()
        } else {
            None
        })
        .map(|l| cx.location(&l.location));
    if kind == EventKind::Transfer {
        ev.prior_location = prior_location(e).map(|l| cx.location(&l.location));
    }
    for p in &e.participant {
        let code = p
            .r#type
            .iter()
            .flat_map(|t| t.coding.iter().filter_map(|c| pv!(c.code)))
            .next()
            .unwrap_or("");
        let (role, role_code) = match code {
            "ATND" => (ProviderRole::Attending, ""),
            "REF" => (ProviderRole::Referring, ""),
            "CON" => (ProviderRole::Consulting, ""),
            "ADM" => (ProviderRole::Admitting, ""),
            other => (ProviderRole::CareTeam, other),
        };
        cx.add_providers(&mut ev, p.individual.as_deref(), role, role_code);
    }
    ev.priority = match e
        .priority
        .as_deref()
        .and_then(|c| c.coding.iter().find_map(|k| pv!(k.code)))
    {
        Some("S" | "EM") => Priority::Stat,
        Some("A" | "UR") => Priority::Urgent,
        Some("R" | "EL") => Priority::Routine,
        _ => Priority::Unspecified,
    };
    let period = e.period.as_deref();
    let start = cx.time(period.and_then(|p| pv!(p.start)), || {
        "Encounter.period.start".to_string()
    })?;
    let end = cx.time(period.and_then(|p| pv!(p.end)), || {
        "Encounter.period.end".to_string()
    })?;
    let moved_at = match current {
        Some((i, l)) => cx.time(l.period.as_deref().and_then(|p| pv!(p.start)), || {
            format!("Encounter.location[{i}].period.start")
        })?,
        None => None,
    };
    ev.occurred_at = match kind {
        EventKind::Transfer => moved_at.or(start),
        EventKind::Discharge => end.or(start),
        _ => start,
    }
    .or_else(|| cx.last_updated(e.meta.as_deref()));
    Ok(ev)
}
