//! ORU^R40: IHE PCD Alarm Communication Management (ACM, transaction PCD-04
//! "Report Alarm"), one `Alarm` event per OBR group.
//!
//! Mapping implemented (written from the IHE PCD TF-2 ACM layout; lenient:
//! rows that are not recognised are kept as observations):
//! - OBR-3 filler order number (EI.1): the alarm id, stable across the
//!   phases of one alarm. OBR-7: alarm time, else MSH-7. An R40 without
//!   OBR is `SegmentSequence` at `OBR^1`.
//! - Alarm type (`Alarm::kind`): OBX-3 of the event identification row: the
//!   first OBX whose OBX-3 text starts with `MDC_EVT_` (e.g.
//!   `196648^MDC_EVT_HI^MDC`), else the first OBX whose OBX-4 sub-id ends
//!   in `.1` and which is not one of the rows below; else OBR-4.
//! - Event phase: OBX-5 of the row with OBX-3 `68481` / `MDC_ATTR_EVENT_PHASE`
//!   (`start`, `continue`, `end`, `present`, `update`, `escalate`,
//!   `inactivate`, `deescalate`, `reset`, `stop`), as sent.
//! - Alarm state: OBX-5 of `68482` / `MDC_ATTR_ALARM_STATE`
//!   (`inactive`, `active`, `latched`).
//! - Priority: the first OBX-8 repetition equal to `PH`, `PM`, `PL` or `PN`
//!   (ACM carries priority among the abnormal flags, next to the source
//!   type `SP`/`ST`/`SA`), event identification row first; else OBX-5 of a
//!   row whose OBX-3 text is `MDC_ATTR_ALARM_PRIORITY`. `PH` stat, `PM`
//!   urgent, `PL` routine, else unspecified.
//! - Source device: OBX-18 (equipment instance identifier, EI.1) of the
//!   first OBX that has one, else the OBX-3 text of the first device-level
//!   row (OBX-3 text starting with `MDC_DEV_`).
//! - Observations: every other OBX of the group (the measurement that
//!   triggered the alarm, inactivation state `68483`, unknown rows).
//! - Patient optional: a PID without PID-3 is accepted. Location from PV1-3.

use crate::event::{Alarm, ClinicalEvent, EventKind, Priority};
use crate::parse::error::ParseError;

use super::Cx;
use super::fields::Seg;
use super::patient::{apply_context, extras};
use super::result::{after_obr, missing_obr, observation, observation_groups};

fn is_attr(obx: &Seg<'_, '_>, code: &str, name: &str) -> bool {
    let c = obx.code(3);
    c.code.trim() == code || c.text.trim() == name
}

const PHASE: (&str, &str) = ("68481", "MDC_ATTR_EVENT_PHASE");
const STATE: (&str, &str) = ("68482", "MDC_ATTR_ALARM_STATE");
const PRIORITY_ATTR: &str = "MDC_ATTR_ALARM_PRIORITY";

fn priority_flag(obx: &Seg<'_, '_>) -> Option<String> {
    obx.reps(8)
        .map(|r| obx.dec(super::fields::comp(r, 1)).trim().to_string())
        .find(|f| matches!(f.as_str(), "PH" | "PM" | "PL" | "PN"))
}

pub(crate) fn events(cx: &Cx<'_, '_>) -> Result<Vec<ClinicalEvent>, ParseError> {
    let groups = observation_groups(cx);
    if groups.is_empty() {
        return Err(missing_obr());
    }
    let mut out = Vec::new();
    for g in &groups {
        let mut ev = cx.event(EventKind::Alarm);
        apply_context(g, &mut ev, false)?;
        let Some(obr) = g.first("OBR") else {
            return Err(missing_obr());
        };
        let obxs: Vec<Seg<'_, '_>> = after_obr(g)
            .iter()
            .filter(|s| s.name() == "OBX")
            .copied()
            .collect();
        let mut alarm = Alarm {
            id: obr.comp(3, 1),
            ..Alarm::default()
        };
        let is_phase = |s: &Seg<'_, '_>| is_attr(s, PHASE.0, PHASE.1);
        let is_state = |s: &Seg<'_, '_>| is_attr(s, STATE.0, STATE.1);
        let is_prio = |s: &Seg<'_, '_>| s.code(3).text.trim() == PRIORITY_ATTR;
        let is_device = |s: &Seg<'_, '_>| s.code(3).text.trim().starts_with("MDC_DEV_");
        let known = |s: &Seg<'_, '_>| is_phase(s) || is_state(s) || is_prio(s) || is_device(s);
        let kind_row = obxs
            .iter()
            .position(|s| s.code(3).text.trim().starts_with("MDC_EVT_"))
            .or_else(|| {
                obxs.iter()
                    .position(|s| s.comp(4, 1).trim().ends_with(".1") && !known(s))
            });
        alarm.kind = match kind_row.and_then(|i| obxs.get(i)) {
            Some(s) => s.code(3),
            None => obr.code(4),
        };
        let first = |pred: &dyn Fn(&Seg<'_, '_>) -> bool| {
            obxs.iter()
                .find(|s| pred(s))
                .map(|s| s.comp(5, 1).trim().to_string())
        };
        alarm.phase = first(&is_phase).unwrap_or_default();
        alarm.state = first(&is_state).unwrap_or_default();
        let ordered = kind_row
            .and_then(|i| obxs.get(i))
            .into_iter()
            .chain(obxs.iter());
        alarm.priority = ordered
            .filter_map(priority_flag)
            .next()
            .or_else(|| first(&is_prio))
            .unwrap_or_default();
        ev.priority = match alarm.priority.as_str() {
            "PH" => Priority::Stat,
            "PM" => Priority::Urgent,
            "PL" => Priority::Routine,
            _ => Priority::Unspecified,
        };
        alarm.source = obxs
            .iter()
            .map(|s| s.comp(18, 1))
            .find(|v| !v.is_empty())
            .or_else(|| obxs.iter().find(|s| is_device(s)).map(|s| s.code(3).text))
            .unwrap_or_default();
        for (i, s) in obxs.iter().enumerate() {
            if Some(i) != kind_row && !known(s) {
                ev.observations.push(observation(cx, s)?);
            }
        }
        ev.occurred_at = cx.time(&obr, 7)?.or(cx.msh_time);
        ev.alarm = Some(alarm);
        extras(&g.segs, &mut ev);
        out.push(ev);
    }
    Ok(out)
}
