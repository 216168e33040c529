//! Segments shared by every message type: PID (patient), PV1 (visit), ROL
//! (care team), NTE (notes), and the patient/order grouping of a message.
//!
//! Rules:
//! - Patient: identifiers from every PID-3 repetition with a CX.1 value,
//!   then PID-2 if present; name from PID-5's first repetition; PID-7 as
//!   sent; PID-8. When an id is required, no PID-3 value is
//!   `RequiredFieldMissing` at `PID^k^3`.
//! - Visit: PV1-2 class (must be in table 0004: B C E I N O P R U, else
//!   `TableValueNotFound` at `PV1^k^2`; empty is fine), PV1-3 location,
//!   PV1-6 prior location, PV1-7/8/9/17 providers, PV1-19 visit number.
//! - ROL: each ROL-4 repetition is a `CareTeam` provider with role code ROL-3.1.
//! - NTE: NTE-3 repetitions decoded and joined by newlines, one note per NTE.

use crate::event::{ClinicalEvent, Patient, Provider, ProviderRole};
use crate::parse::error::{ErrorCode, ErrorLocation, ParseError};

use super::fields::Seg;

/// Reads PID; with `require_id`, an empty PID-3 is an error.
pub(crate) fn patient(pid: &Seg<'_, '_>, require_id: bool) -> Result<Patient, ParseError> {
    let mut identifiers: Vec<_> = pid
        .reps(3)
        .map(|r| pid.cx(r))
        .filter(|id| !id.value.is_empty())
        .collect();
    if identifiers.is_empty() && require_id {
        return Err(ParseError::new(
            ErrorCode::RequiredFieldMissing,
            pid.loc(3),
            "PID-3 patient identifier list is empty",
        ));
    }
    identifiers.extend(
        pid.reps(2)
            .map(|r| pid.cx(r))
            .filter(|id| !id.value.is_empty()),
    );
    let name = pid
        .rep(5)
        .map(|r| pid.xpn(r))
        .filter(|n| !(n.family.is_empty() && n.given.is_empty() && n.middle.is_empty()));
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Patient {
        identifiers,
        name,
        birth_date: nonempty(pid.comp_raw(7, 1).to_string()),
        sex: nonempty(pid.comp(8, 1)),
    })
}

/// The missing-PID error.
pub(crate) fn missing_pid() -> ParseError {
    ParseError::new(
        ErrorCode::SegmentSequence,
        ErrorLocation::segment("PID", 1),
        "PID segment is missing",
    )
}

/// Applies PV1 to an event.
pub(crate) fn visit(pv1: &Seg<'_, '_>, ev: &mut ClinicalEvent) -> Result<(), ParseError> {
    let class = pv1.comp(2, 1);
    if !class.is_empty()
        && !matches!(
            class.as_str(),
            "B" | "C" | "E" | "I" | "N" | "O" | "P" | "R" | "U"
        )
    {
        return Err(ParseError::new(
            ErrorCode::TableValueNotFound,
            pv1.loc(2),
            "PV1-2 patient class is not in table 0004",
        ));
    }
    ev.patient_class = class;
    ev.location = pv1.pl(3);
    ev.prior_location = pv1.pl(6);
    for (n, role) in [
        (7, ProviderRole::Attending),
        (8, ProviderRole::Referring),
        (9, ProviderRole::Consulting),
        (17, ProviderRole::Admitting),
    ] {
        add_providers(ev, pv1.providers(n, role, ""));
    }
    ev.visit = pv1
        .rep(19)
        .map(|r| pv1.cx(r))
        .filter(|id| !id.value.is_empty());
    Ok(())
}

/// Adds providers, skipping exact duplicates.
pub(crate) fn add_providers(ev: &mut ClinicalEvent, providers: Vec<Provider>) {
    for p in providers {
        if !ev.providers.contains(&p) {
            ev.providers.push(p);
        }
    }
}

/// Applies ROL and NTE segments (others are ignored) to an event.
pub(crate) fn extras(segs: &[Seg<'_, '_>], ev: &mut ClinicalEvent) {
    for s in segs {
        match s.name() {
            "ROL" => {
                let code = s.comp(3, 1);
                add_providers(ev, s.providers(4, ProviderRole::CareTeam, &code));
            }
            "NTE" => {
                let text: Vec<String> = s.reps(3).map(|r| s.dec(r.raw_value())).collect();
                let text = text.join("\n");
                if !text.is_empty() {
                    ev.notes.push(text);
                }
            }
            _ => {}
        }
    }
}

/// A group of segments (an order / observation group) with the patient
/// context it appeared in.
pub(crate) struct Group<'c, 'm> {
    /// The latest PID before the group.
    pub(crate) pid: Option<Seg<'c, 'm>>,
    /// The PV1 following that PID, before the group.
    pub(crate) pv1: Option<Seg<'c, 'm>>,
    /// Other patient-level segments (NTE, ROL, ...) before the group.
    pub(crate) pre: Vec<Seg<'c, 'm>>,
    /// The group's segments, starting with the one that opened it.
    pub(crate) segs: Vec<Seg<'c, 'm>>,
}

impl<'c, 'm> Group<'c, 'm> {
    /// The first segment named `name` in the group.
    pub(crate) fn first(&self, name: &str) -> Option<Seg<'c, 'm>> {
        self.segs.iter().find(|s| s.name() == name).copied()
    }
}

/// Splits the segments after MSH into groups: `opens(seg, current)` says
/// whether `seg` opens a new group. A PID closes the current group and
/// starts a new patient context.
pub(crate) fn groups<'c, 'm>(
    segs: &[Seg<'c, 'm>],
    opens: impl Fn(&Seg<'c, 'm>, Option<&Group<'c, 'm>>) -> bool,
) -> Vec<Group<'c, 'm>> {
    let mut out = Vec::new();
    let mut cur: Option<Group<'c, 'm>> = None;
    let (mut pid, mut pv1, mut pre) = (None, None, Vec::new());
    for s in segs.iter().skip(1) {
        if s.name() == "PID" {
            out.extend(cur.take());
            (pid, pv1, pre) = (Some(*s), None, Vec::new());
        } else if s.name() == "PV1" && cur.is_none() && pv1.is_none() {
            pv1 = Some(*s);
        } else if opens(s, cur.as_ref()) {
            out.extend(cur.take());
            cur = Some(Group {
                pid,
                pv1,
                pre: pre.clone(),
                segs: vec![*s],
            });
        } else if let Some(g) = cur.as_mut() {
            g.segs.push(*s);
        } else {
            pre.push(*s);
        }
    }
    out.extend(cur);
    out
}

/// Applies a group's patient context (PID, PV1, patient-level ROL/NTE).
pub(crate) fn apply_context(
    g: &Group<'_, '_>,
    ev: &mut ClinicalEvent,
    require_pid: bool,
) -> Result<(), ParseError> {
    match (&g.pid, require_pid) {
        (Some(pid), _) => ev.patient = patient(pid, require_pid)?,
        (None, true) => return Err(missing_pid()),
        (None, false) => {}
    }
    if let Some(pv1) = &g.pv1 {
        visit(pv1, ev)?;
    }
    extras(&g.pre, ev);
    Ok(())
}
