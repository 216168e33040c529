//! ORM^O01 and OML^O21 orders.
//!
//! Rules:
//! - One event per ORC group (ORC and the segments up to the next ORC). No
//!   ORC is `SegmentSequence` at `ORC^1`; an empty ORC-1 is
//!   `RequiredFieldMissing` at `ORC^k^1`. PID is required (with PID-3).
//! - Order: ORC-1 control, placer ORC-2 (else OBR-2), filler ORC-3 (else
//!   OBR-3), ORC-5 status, service OBR-4 (else RXO-1, else ODS-3 when the
//!   order detail is not an OBR), OBR-7, OBR-25.
//! - Providers: PV1 (the patient's visit), ROL, ORC-12 and OBR-16 (ordering).
//! - Priority: first non-empty of TQ1-9, ORC-7.6, OBR-27.6, OBR-5.
//! - `occurred_at`: ORC-9 (date/time of transaction), else MSH-7; a bad
//!   ORC-9 is `DataType` at `ORC^k^9`.
//! - OBX segments in the group become observations (same rules as results).

use crate::event::{ClinicalEvent, EventKind};
use crate::parse::error::{ErrorCode, ErrorLocation, ParseError};

use super::Cx;
use super::patient::{apply_context, extras, groups};
use super::result::{observation, order, ordering, priority};

pub(crate) fn events(cx: &Cx<'_, '_>) -> Result<Vec<ClinicalEvent>, ParseError> {
    let groups = groups(cx.segs, |s, _| s.name() == "ORC");
    if groups.is_empty() {
        return Err(ParseError::new(
            ErrorCode::SegmentSequence,
            ErrorLocation::segment("ORC", 1),
            "ORC segment is missing",
        ));
    }
    let mut out = Vec::new();
    for g in &groups {
        let mut ev = cx.event(EventKind::Order);
        apply_context(g, &mut ev, true)?;
        let orc = g.first("ORC");
        if let Some(orc) = &orc
            && orc.comp(1, 1).trim().is_empty()
        {
            return Err(ParseError::new(
                ErrorCode::RequiredFieldMissing,
                orc.loc(1),
                "ORC-1 order control is missing",
            ));
        }
        let obr = g.first("OBR");
        let mut ord = order(cx, orc.as_ref(), obr.as_ref(), true)?;
        if ord.service.code.is_empty() && ord.service.text.is_empty() {
            if let Some(rxo) = g.first("RXO") {
                ord.service = rxo.code(1);
            } else if let Some(ods) = g.first("ODS") {
                ord.service = ods.code(3);
            }
        }
        ev.occurred_at = match &orc {
            Some(orc) => cx.time(orc, 9)?,
            None => None,
        }
        .or(cx.msh_time);
        ev.order = Some(ord);
        ev.priority = priority(g);
        ordering(g, &mut ev);
        for s in g.segs.iter().filter(|s| s.name() == "OBX") {
            ev.observations.push(observation(cx, s)?);
        }
        extras(&g.segs, &mut ev);
        out.push(ev);
    }
    Ok(out)
}
