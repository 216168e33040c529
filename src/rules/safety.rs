//! Clinical safety: which rules and events count as critical results or
//! high-priority alarms (never held, collapsed or replaced), and whether a
//! later event clears a held alert.

use crate::census::PatientKey;
use crate::event::{ClinicalEvent, EventKind, Priority, ResultStatus};

use super::matcher::order_status;
use super::{AlertPriority, ClearOn, Critical, Hold, Match};

/// OBX-8 / FHIR interpretation codes read as critical: critical high, low and
/// abnormal, significantly high and low, and off scale (above / below the
/// instrument's range). Compared trimmed and case-insensitively.
pub const CRITICAL_FLAGS: &[&str] = &["HH", "LL", "AA", "HU", "LU", ">", "<"];

/// The IHE PCD ACM alarm priority that counts as high.
pub const HIGH_ALARM_PRIORITY: &str = "PH";

/// ACM alarm priorities a rule may list in `alarm_priority`.
pub const ALARM_PRIORITIES: &[&str] = &["PH", "PM", "PL", "PN"];

fn is_critical_flag(f: &str) -> bool {
    let f = f.trim();
    CRITICAL_FLAGS.iter().any(|c| c.eq_ignore_ascii_case(f))
}

/// Whether this event itself is a critical result or a high-priority alarm:
/// any observation carrying a critical flag, a STAT result, or an alarm
/// whose priority is `PH` (or whose event priority is STAT).
pub fn critical_event(ev: &ClinicalEvent) -> Option<Critical> {
    if ev.kind == EventKind::Alarm
        && (ev.priority == Priority::Stat
            || ev
                .alarm
                .as_ref()
                .is_some_and(|a| a.priority.trim().eq_ignore_ascii_case(HIGH_ALARM_PRIORITY)))
    {
        return Some(Critical::Alarm);
    }
    let flagged = ev
        .observations
        .iter()
        .any(|o| o.flags.iter().any(|f| is_critical_flag(f)));
    if flagged || (ev.kind == EventKind::Result && ev.priority == Priority::Stat) {
        return Some(Critical::Result);
    }
    None
}

impl Match {
    /// True when some event of `kind` can pass the kind and alarm-priority
    /// criteria (the others cannot rule a kind out).
    pub(crate) fn can_match_kind(&self, kind: EventKind) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.alarm_priority.is_empty() || kind == EventKind::Alarm)
    }
}

/// Why a rule can match a critical result, or `None` when it cannot (see
/// the module doc of `rules`, "Clinical safety").
pub(crate) fn critical_result_reason(m: &Match, priority: Option<AlertPriority>) -> Option<String> {
    if !m.can_match_kind(EventKind::Result) {
        return None;
    }
    let kind = if m.kinds.is_empty() {
        "it has no `kind` criterion, so it can match results"
    } else {
        "it matches results"
    };
    let why = if priority == Some(AlertPriority::Stat) {
        "its route priority is stat".to_string()
    } else if m.priority_at_least == Some(Priority::Stat) {
        "it matches STAT results (priority_at_least = \"stat\")".to_string()
    } else if m.flags.is_empty() {
        "it has no `flags` criterion, so a critical value (HH, LL, AA, ...) passes".to_string()
    } else if let Some(f) = m.flags.iter().find(|f| is_critical_flag(f)) {
        format!("its `flags` criterion lists the critical flag `{f}`")
    } else {
        return None;
    };
    Some(format!("{kind} and {why}"))
}

/// Why a rule can match a high-priority alarm, or `None` when it cannot.
pub(crate) fn high_alarm_reason(m: &Match, priority: Option<AlertPriority>) -> Option<String> {
    if !m.can_match_kind(EventKind::Alarm) {
        return None;
    }
    let kind = if m.kinds.is_empty() && m.alarm_priority.is_empty() {
        "it has no `kind` criterion, so it can match alarms"
    } else {
        "it matches alarms"
    };
    let why = match priority {
        Some(p @ (AlertPriority::Stat | AlertPriority::Asap)) => {
            format!("its route priority is {}", p.as_str())
        }
        _ if m.alarm_priority.is_empty() => {
            "it has no `alarm_priority` criterion, so a PH (high) alarm passes".to_string()
        }
        _ if m.alarm_priority.iter().any(|p| p == HIGH_ALARM_PRIORITY) => {
            "its `alarm_priority` criterion lists PH (high)".to_string()
        }
        _ => return None,
    };
    Some(format!("{kind} and {why}"))
}

/// The patient keys of an event.
fn keys(ev: &ClinicalEvent) -> Vec<PatientKey> {
    ev.patient
        .identifiers
        .iter()
        .filter_map(PatientKey::of)
        .collect()
}

/// True when the two events share a patient identifier (authority and value).
fn same_patient(a: &ClinicalEvent, b: &ClinicalEvent) -> bool {
    let kb = keys(b);
    keys(a).iter().any(|k| kb.contains(k))
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// ACM phase / state of an alarm that has ended.
fn alarm_ended(phase: &str, state: &str) -> bool {
    phase.trim().eq_ignore_ascii_case("end") || state.trim().eq_ignore_ascii_case("inactive")
}

/// ORC-1 order controls that cancel or discontinue an order.
const CANCEL_CONTROLS: &[&str] = &["CA", "OC", "DC", "OD"];

fn is_retraction(s: ResultStatus) -> bool {
    matches!(
        s,
        ResultStatus::CannotObtain | ResultStatus::Deleted | ResultStatus::WrongPatient
    )
}

impl ClearOn {
    /// True when `ev` carries what a clearing event must match: an alarm id
    /// (`alarm-end`) or a placer or filler order number (`order-cancel`).
    /// Without it nothing could ever cancel the hold, so none is applied.
    pub fn can_clear(self, ev: &ClinicalEvent) -> bool {
        match self {
            ClearOn::AlarmEnd => ev
                .alarm
                .as_ref()
                .is_some_and(|a| non_empty(&a.id).is_some()),
            ClearOn::OrderCancel => ev.order.as_ref().is_some_and(|o| {
                non_empty(&o.placer_id).is_some() || non_empty(&o.filler_id).is_some()
            }),
        }
    }
}

impl Hold {
    /// Whether `later` cancels the alert held for `held` (the event the
    /// route was made for). Pure: the caller checks that `later` arrived
    /// within [`Hold::window`] of the hold starting.
    ///
    /// Both events must have the same MSH-11 (a training message never
    /// clears a production alert). `alarm-end`: `later` is an alarm from the
    /// same sender with the same alarm id whose phase is `end` or whose
    /// state is `inactive`; when both events name a patient they must share
    /// an identifier. `order-cancel`: `later` names the same placer or filler
    /// order number and shares a patient identifier, and is an order whose
    /// ORC-1 is `CA`, `OC`, `DC` or `OD`, or a result whose OBR-25 (or every
    /// observation's OBX-11) is `X`, `D` or `W`.
    pub fn clears(&self, held: &ClinicalEvent, later: &ClinicalEvent) -> bool {
        if later.processing != held.processing {
            return false;
        }
        match self.clear {
            ClearOn::AlarmEnd => {
                let (Some(a), Some(b)) = (&held.alarm, &later.alarm) else {
                    return false;
                };
                let named = !keys(held).is_empty() && !keys(later).is_empty();
                later.kind == EventKind::Alarm
                    && held.source.sender == later.source.sender
                    && non_empty(&a.id).is_some_and(|id| Some(id) == non_empty(&b.id))
                    && (!named || same_patient(held, later))
                    && alarm_ended(&b.phase, &b.state)
            }
            ClearOn::OrderCancel => {
                let (Some(a), Some(b)) = (&held.order, &later.order) else {
                    return false;
                };
                let same = |x: &str, y: &str| non_empty(x).is_some_and(|x| Some(x) == non_empty(y));
                let same_order =
                    same(&a.placer_id, &b.placer_id) || same(&a.filler_id, &b.filler_id);
                let cancelled = match later.kind {
                    EventKind::Order => CANCEL_CONTROLS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(b.control.trim())),
                    EventKind::Result => {
                        is_retraction(order_status(&b.result_status))
                            || (!later.observations.is_empty()
                                && later.observations.iter().all(|o| is_retraction(o.status)))
                    }
                    _ => false,
                };
                same_order && same_patient(held, later) && cancelled
            }
        }
    }
}
