//! ORU^R01 observation results, and the OBR/ORC/OBX readers that orders and
//! alarms share.
//!
//! Rules:
//! - One event per order observation group: an OBR, with the ORC just before
//!   it if any; its observations are the OBX segments after that OBR up to
//!   the next ORC/OBR (OBX before the first OBR belong to no group). No OBR
//!   at all is `SegmentSequence` at `OBR^1`. PID is required (with PID-3).
//! - Order: ORC-1 control, placer OBR-2 (else ORC-2), filler OBR-3 (else
//!   ORC-3), service OBR-4, ORC-5 status, OBR-7 observed at, OBR-25 result
//!   status. Providers: PV1, ROL, ORC-12 and OBR-16 (ordering).
//! - Priority: first non-empty of TQ1-9 (in the group), ORC-7.6, OBR-27.6,
//!   OBR-5; `S` stat, `A` urgent, `R` routine, else unspecified.
//! - `occurred_at`: OBR-7, else MSH-7.
//! - OBX: OBX-5 repetitions are decoded; for CE/CWE/CNE/CF the value is the
//!   text (component 2) if present, else the code (component 1); for NM it
//!   must be a number (optional sign, digits, at most one dot; surrounding
//!   blanks ignored; comparators such as `<5` belong in SN) else
//!   `DataType` at `OBX^k^5` (k counts all OBX of the message); for any
//!   other type the whole repetition, decoded, components kept apart by the
//!   component separator. OBX-8: every repetition's first component. OBX-11:
//!   F final, C corrected, W wrong patient, D deleted, X cannot obtain,
//!   P/R/S/I preliminary, else unknown. A bad OBX-14 is `DataType` at
//!   `OBX^k^14`.

use crate::event::{
    ClinicalEvent, EventKind, Observation, Order, Priority, ProviderRole, ResultStatus,
};
use crate::parse::error::{ErrorCode, ErrorLocation, ParseError};

use super::fields::{Seg, comp};
use super::patient::{Group, add_providers, apply_context, extras, groups};
use super::{Cx, priority_code};

/// True for a strict HL7 NM value.
pub(crate) fn is_number(v: &str) -> bool {
    let v = v.trim();
    let v = v.strip_prefix(['+', '-']).unwrap_or(v);
    let mut dots = 0;
    let mut digits = 0;
    for c in v.chars() {
        match c {
            '.' => dots += 1,
            '0'..='9' => digits += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

fn status(code: &str) -> ResultStatus {
    match code.trim() {
        "F" => ResultStatus::Final,
        "C" => ResultStatus::Corrected,
        "W" => ResultStatus::WrongPatient,
        "D" => ResultStatus::Deleted,
        "X" => ResultStatus::CannotObtain,
        "P" | "R" | "S" | "I" => ResultStatus::Preliminary,
        _ => ResultStatus::Unknown,
    }
}

/// One OBX.
pub(crate) fn observation(cx: &Cx<'_, '_>, obx: &Seg<'_, '_>) -> Result<Observation, ParseError> {
    let value_type = obx.comp(2, 1);
    let mut values = Vec::new();
    for r in obx.reps(5) {
        let v = match value_type.as_str() {
            "CE" | "CWE" | "CNE" | "CF" => {
                let text = obx.dec(comp(r, 2));
                if text.is_empty() {
                    obx.dec(comp(r, 1))
                } else {
                    text
                }
            }
            "NM" => {
                let raw = obx.dec(r.raw_value());
                if raw.trim().is_empty() {
                    String::new()
                } else if is_number(&raw) {
                    raw.trim().to_string()
                } else {
                    return Err(ParseError::new(
                        ErrorCode::DataType,
                        obx.loc(5),
                        "OBX-5 is not a number although OBX-2 is NM",
                    ));
                }
            }
            _ => obx.dec(r.raw_value()),
        };
        if !v.is_empty() {
            values.push(v);
        }
    }
    let units = obx
        .rep(6)
        .map(|r| obx.code_of(r))
        .filter(|c| !(c.code.is_empty() && c.text.is_empty() && c.system.is_empty()));
    Ok(Observation {
        set_id: obx.comp(1, 1),
        value_type,
        code: obx.code(3),
        sub_id: obx.comp(4, 1),
        values,
        units,
        reference_range: obx.dec(obx.field(7).map_or("", |f| f.raw_value())),
        flags: obx
            .reps(8)
            .map(|r| obx.dec(comp(r, 1)))
            .filter(|f| !f.is_empty())
            .collect(),
        status: status(obx.comp_raw(11, 1)),
        observed_at: cx.time(obx, 14)?,
    })
}

/// Order details from an ORC and/or OBR. `orc_first`: prefer ORC-2/3 over
/// OBR-2/3 (orders) or the reverse (results).
pub(crate) fn order(
    cx: &Cx<'_, '_>,
    orc: Option<&Seg<'_, '_>>,
    obr: Option<&Seg<'_, '_>>,
    orc_first: bool,
) -> Result<Order, ParseError> {
    let pick = |n: usize| {
        let a = orc.map(|s| s.comp(n, 1)).unwrap_or_default();
        let b = obr.map(|s| s.comp(n, 1)).unwrap_or_default();
        let (x, y) = if orc_first { (a, b) } else { (b, a) };
        if x.is_empty() { y } else { x }
    };
    Ok(Order {
        control: orc.map(|s| s.comp(1, 1)).unwrap_or_default(),
        placer_id: pick(2),
        filler_id: pick(3),
        service: obr.map(|s| s.code(4)).unwrap_or_default(),
        status: orc.map(|s| s.comp(5, 1)).unwrap_or_default(),
        observed_at: match obr {
            Some(s) => cx.time(s, 7)?,
            None => None,
        },
        result_status: obr.map(|s| s.comp(25, 1)).unwrap_or_default(),
    })
}

/// Priority of a group: first non-empty of TQ1-9, ORC-7.6, OBR-27.6, OBR-5.
pub(crate) fn priority(g: &Group<'_, '_>) -> Priority {
    let tq1 = g
        .segs
        .iter()
        .filter(|s| s.name() == "TQ1")
        .map(|s| s.comp(9, 1))
        .find(|v| !v.is_empty());
    let orc = g.first("ORC").map(|s| s.comp(7, 6));
    let obr27 = g.first("OBR").map(|s| s.comp(27, 6));
    let obr5 = g.first("OBR").map(|s| s.comp(5, 1));
    [tq1, orc, obr27, obr5]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
        .map_or(Priority::Unspecified, |v| priority_code(&v))
}

/// Ordering providers: ORC-12 and OBR-16.
pub(crate) fn ordering(g: &Group<'_, '_>, ev: &mut ClinicalEvent) {
    if let Some(orc) = g.first("ORC") {
        add_providers(ev, orc.providers(12, ProviderRole::Ordering, ""));
    }
    if let Some(obr) = g.first("OBR") {
        add_providers(ev, obr.providers(16, ProviderRole::Ordering, ""));
    }
}

/// Groups for ORU: ORC or OBR opens a group, except an OBR right after an
/// ORC group that has no OBR yet (it joins it).
pub(crate) fn observation_groups<'c, 'm>(cx: &Cx<'c, 'm>) -> Vec<Group<'c, 'm>> {
    groups(cx.segs, |s, cur| match s.name() {
        "ORC" => true,
        "OBR" => !cur.is_some_and(|g| g.first("ORC").is_some() && g.first("OBR").is_none()),
        _ => false,
    })
    .into_iter()
    .filter(|g| g.first("OBR").is_some())
    .collect()
}

/// The missing-OBR error.
pub(crate) fn missing_obr() -> ParseError {
    ParseError::new(
        ErrorCode::SegmentSequence,
        ErrorLocation::segment("OBR", 1),
        "OBR segment is missing",
    )
}

/// The segments of a group after its OBR.
pub(crate) fn after_obr<'g, 'c, 'm>(g: &'g Group<'c, 'm>) -> &'g [Seg<'c, 'm>] {
    let i = g.segs.iter().position(|s| s.name() == "OBR").unwrap_or(0);
    g.segs.get(i + 1..).unwrap_or(&[])
}

pub(crate) fn events(cx: &Cx<'_, '_>) -> Result<Vec<ClinicalEvent>, ParseError> {
    let groups = observation_groups(cx);
    if groups.is_empty() {
        return Err(missing_obr());
    }
    let mut out = Vec::new();
    for g in &groups {
        let mut ev = cx.event(EventKind::Result);
        apply_context(g, &mut ev, true)?;
        let obr = g.first("OBR");
        let orc = g.first("ORC");
        let ord = order(cx, orc.as_ref(), obr.as_ref(), false)?;
        ev.occurred_at = ord.observed_at.or(cx.msh_time);
        ev.order = Some(ord);
        ev.priority = priority(g);
        ordering(g, &mut ev);
        for s in after_obr(g).iter().filter(|s| s.name() == "OBX") {
            ev.observations.push(observation(cx, s)?);
        }
        extras(&g.segs, &mut ev);
        out.push(ev);
    }
    Ok(out)
}
