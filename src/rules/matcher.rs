//! Evaluating a rule's criteria against one event.

use chrono::{DateTime, Utc};

use crate::event::{ClinicalEvent, Code, Processing, ResultStatus};

use super::Match;

/// Coding-system names that mean the same system.
const SYSTEM_ALIASES: &[(&str, &str)] = &[
    ("ln", "ln"),
    ("loinc", "ln"),
    ("http://loinc.org", "ln"),
    ("sct", "sct"),
    ("snomed", "sct"),
    ("snomedct", "sct"),
    ("http://snomed.info/sct", "sct"),
    ("mdc", "mdc"),
    ("urn:iso:std:iso:11073:10101", "mdc"),
];

/// Lower-cased system name with aliases folded (`LN`, `LOINC`, `http://loinc.org` -> `ln`).
pub(crate) fn normal_system(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    SYSTEM_ALIASES
        .iter()
        .find(|(a, _)| *a == s)
        .map(|(_, n)| n.to_string())
        .unwrap_or(s)
}

/// OBR-25 result status code -> [`ResultStatus`].
pub(crate) fn order_status(code: &str) -> ResultStatus {
    match code.trim() {
        "F" => ResultStatus::Final,
        "C" => ResultStatus::Corrected,
        "P" | "R" | "S" | "I" | "A" => ResultStatus::Preliminary,
        "X" => ResultStatus::CannotObtain,
        "W" => ResultStatus::WrongPatient,
        "D" => ResultStatus::Deleted,
        _ => ResultStatus::Unknown,
    }
}

impl Match {
    /// `Ok` when every criterion holds at the routing instant `at`, else the
    /// first that does not.
    pub(crate) fn check(&self, ev: &ClinicalEvent, at: DateTime<Utc>) -> Result<(), &'static str> {
        let production = ev.processing == Processing::Production;
        if (!production && !self.allow_test) || (production && self.test_only) {
            return Err("processing");
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&ev.kind) {
            return Err("kind");
        }
        if !self.message_types.is_empty()
            && !self.message_types.iter().any(|(t, trig)| {
                t.eq_ignore_ascii_case(&ev.source.message_type)
                    && trig
                        .as_ref()
                        .is_none_or(|g| g.eq_ignore_ascii_case(&ev.source.trigger))
            })
        {
            return Err("message_type");
        }
        if !self.senders.is_empty() && !self.senders.contains(&ev.source.sender) {
            return Err("sender");
        }
        if let Some(p) = self.priority_at_least
            && ev.priority < p
        {
            return Err("priority_at_least");
        }
        let loc = ev.location.as_ref();
        if !self.units.is_empty()
            && !loc.is_some_and(|l| self.units.iter().any(|g| g.matches(&l.unit)))
        {
            return Err("units");
        }
        if !self.locations.is_empty()
            && !loc.is_some_and(|l| {
                let text = format!("{}/{}/{}", l.unit, l.room, l.bed);
                self.locations.iter().any(|g| g.matches(&text))
            })
        {
            return Err("locations");
        }
        if !self.facilities.is_empty()
            && !loc.is_some_and(|l| self.facilities.iter().any(|g| g.matches(&l.facility)))
        {
            return Err("facilities");
        }
        if !self.alarm_priority.is_empty()
            && !ev.alarm.as_ref().is_some_and(|a| {
                let p = a.priority.trim();
                self.alarm_priority
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(p))
            })
        {
            return Err("alarm_priority");
        }
        self.observations(ev)?;
        if !self.during.is_empty() && !self.during.iter().any(|w| w.contains(at)) {
            return Err("during");
        }
        Ok(())
    }

    fn code_ok(&self, c: &Code) -> bool {
        self.codes.is_empty()
            || self.codes.iter().any(|(sys, code)| {
                code.eq_ignore_ascii_case(c.code.trim()) && *sys == normal_system(&c.system)
            })
    }

    fn flags_ok(&self, flags: &[String]) -> bool {
        self.flags.is_empty()
            || flags
                .iter()
                .any(|f| self.flags.iter().any(|x| x.eq_ignore_ascii_case(f.trim())))
    }

    fn status_ok(&self, s: ResultStatus) -> bool {
        self.result_status.is_empty() || self.result_status.contains(&s)
    }

    /// Codes, flags and result status must hold on one observation; without
    /// flags, codes may also match the order's service (OBR-4) or the alarm
    /// kind, and the status the order's OBR-25.
    fn observations(&self, ev: &ClinicalEvent) -> Result<(), &'static str> {
        if self.codes.is_empty() && self.flags.is_empty() && self.result_status.is_empty() {
            return Ok(());
        }
        if ev
            .observations
            .iter()
            .any(|o| self.code_ok(&o.code) && self.flags_ok(&o.flags) && self.status_ok(o.status))
        {
            return Ok(());
        }
        if self.flags.is_empty() {
            let code = self.codes.is_empty()
                || ev.order.as_ref().is_some_and(|o| self.code_ok(&o.service))
                || ev.alarm.as_ref().is_some_and(|a| self.code_ok(&a.kind));
            let status = self.result_status.is_empty()
                || (ev.observations.is_empty()
                    && ev
                        .order
                        .as_ref()
                        .is_some_and(|o| self.status_ok(order_status(&o.result_status))));
            if code && status {
                return Ok(());
            }
        }
        let any_code = ev.observations.iter().any(|o| self.code_ok(&o.code))
            || ev.order.as_ref().is_some_and(|o| self.code_ok(&o.service))
            || ev.alarm.as_ref().is_some_and(|a| self.code_ok(&a.kind));
        if !any_code {
            Err("codes")
        } else if !self.flags.is_empty() {
            Err("flags")
        } else {
            Err("result_status")
        }
    }
}
