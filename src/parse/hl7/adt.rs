//! ADT: admit/visit/transfer/discharge family, A17 swaps and A40 merges.
//!
//! Rules:
//! - The message is split at each PID into patient groups (EVN and other
//!   segments before the first PID are message-level).
//! - A01..A13 give one event from the first group; A17 one event per
//!   PID/PV1 pair; A40 one event per PID/MRG group, MRG-1 repetitions giving
//!   `merged_identifiers` (a group without MRG is `SegmentSequence` at
//!   `MRG^n`, n the next MRG occurrence).
//! - No PID is `SegmentSequence` at `PID^1`; each PID needs PID-3.
//! - `occurred_at` is EVN-6, else EVN-2, else MSH-7 (bad EVN values are data
//!   type errors at `EVN^1^6` / `EVN^1^2`). Priority is unspecified.

use crate::event::{ClinicalEvent, EventKind};
use crate::parse::error::{ErrorCode, ErrorLocation, ParseError};

use super::Cx;
use super::fields::Seg;
use super::patient::{extras, missing_pid, patient, visit};

fn kind(trigger: &str) -> Option<EventKind> {
    Some(match trigger {
        "A01" => EventKind::Admit,
        "A02" => EventKind::Transfer,
        "A03" => EventKind::Discharge,
        "A04" => EventKind::Register,
        "A06" => EventKind::OutpatientToInpatient,
        "A07" => EventKind::InpatientToOutpatient,
        "A08" => EventKind::Update,
        "A11" => EventKind::CancelAdmit,
        "A12" => EventKind::CancelTransfer,
        "A13" => EventKind::CancelDischarge,
        "A17" => EventKind::BedSwap,
        "A40" => EventKind::Merge,
        _ => return None,
    })
}

pub(crate) fn events(cx: &Cx<'_, '_>, trigger: &str) -> Result<Vec<ClinicalEvent>, ParseError> {
    let kind = kind(trigger).ok_or_else(|| {
        ParseError::new(
            ErrorCode::UnsupportedEventCode,
            ErrorLocation::field("MSH", 1, 9),
            "trigger event is not supported",
        )
    })?;
    let segs = cx.segs.get(1..).unwrap_or(&[]);
    let mut occurred_at = cx.msh_time;
    if let Some(evn) = segs
        .iter()
        .take_while(|s| s.name() != "PID")
        .find(|s| s.name() == "EVN")
        && let Some(t) = cx.time(evn, 6)?.or(cx.time(evn, 2)?)
    {
        occurred_at = Some(t);
    }
    // Patient groups: each PID with the segments up to the next PID.
    let mut groups: Vec<Vec<Seg<'_, '_>>> = Vec::new();
    for s in segs {
        if s.name() == "PID" {
            groups.push(vec![*s]);
        } else if let Some(g) = groups.last_mut() {
            g.push(*s);
        }
    }
    if groups.is_empty() {
        return Err(missing_pid());
    }
    if !matches!(kind, EventKind::BedSwap | EventKind::Merge) {
        groups.truncate(1);
    }
    let mut mrg_seen = 0u32;
    let mut out = Vec::new();
    for g in &groups {
        let mut ev = cx.event(kind);
        ev.occurred_at = occurred_at;
        if let Some(pid) = g.first() {
            ev.patient = patient(pid, true)?;
        }
        if let Some(pv1) = g.iter().find(|s| s.name() == "PV1") {
            visit(pv1, &mut ev)?;
        }
        if kind == EventKind::Merge {
            let Some(mrg) = g.iter().find(|s| s.name() == "MRG") else {
                return Err(ParseError::new(
                    ErrorCode::SegmentSequence,
                    ErrorLocation::segment("MRG", mrg_seen + 1),
                    "MRG segment is missing",
                ));
            };
            mrg_seen = mrg.occurrence;
            ev.merged_identifiers = mrg
                .reps(1)
                .map(|r| mrg.cx(r))
                .filter(|id| !id.value.is_empty())
                .collect();
        }
        extras(g, &mut ev);
        out.push(ev);
    }
    Ok(out)
}
