//! The redacted view of an alert: the envelope, the profile's fields
//! (scrubbed) and the preview line.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use super::Redacted;
use super::fields::Field;
use super::profile::Profile;
use super::scrub::Scrubber;
use crate::alert::model::{Alert, Reason};
use crate::event::{
    ClinicalEvent, EventKind, Observation, PersonName, Priority, ProviderRole, ResultStatus,
};
use crate::rules::CRITICAL_FLAGS;

/// The longest preview line, in characters.
pub const PREVIEW_MAX_CHARS: usize = 100;

/// The preview line's notice under a profile with no clinical content.
pub const OPEN_SECURE_APP: &str = "open the secure app";

/// What a backend may see of one alert under one profile. Only
/// [`redact`] makes one inside a [`Redacted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertView {
    /// Journal id of the alert (`alert_id`).
    pub alert_id: i64,
    /// The rule that raised it (`rule`); blank under a profile with no
    /// clinical content (`none`): rule names tend to name the finding
    /// (`critical-potassium`).
    pub rule: String,
    /// The alert priority: `routine`, `urgent`, `asap`, `stat` (`priority`).
    pub priority: &'static str,
    /// Why this notification: `new`, `escalation`, `correction`, ... (`reason`).
    pub reason: &'static str,
    /// The event was older than the late threshold, or the reason is `late` (`late`).
    pub late: bool,
    /// The profile it was redacted under.
    pub profile: String,
    /// The fields that profile allows (present or not).
    pub allowed: BTreeSet<Field>,
    /// The allowed fields the event has, by [`Field::name`]; every
    /// non-identifier value scrubbed.
    pub values: BTreeMap<&'static str, String>,
    /// One short line for lock screens and previews (`preview`): the alert
    /// priority, then only non-identifier fields the profile allows (event
    /// class, a critical flag, unit, room, bed), e.g.
    /// `STAT critical result ICU 12-A`; under a profile without clinical
    /// content, `STAT alert: open the secure app`. Never a direct identifier.
    pub preview: String,
    /// The fields the preview line was made from.
    pub preview_fields: Vec<Field>,
    /// Every field in `values`, in catalogue order: what leaves with the
    /// whole view (for the audit trail).
    pub fields_sent: Vec<Field>,
}

/// Redacts `alert` (notified for `reason`) under `profile`: the envelope,
/// the profile's fields that the event has (identifiers as they are, every
/// other value scrubbed against the event's own identifiers and the
/// pattern rules) and the preview line.
pub fn redact(alert: &Alert, reason: Reason, profile: &Profile) -> Redacted<AlertView> {
    let ev = &alert.event;
    let scrubber = Scrubber::new(ev);
    let mut values = BTreeMap::new();
    let mut fields_sent = Vec::new();
    for &f in &profile.fields {
        let Some(v) = extract(f, ev, &scrubber) else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        values.insert(f.name(), v.to_string());
        fields_sent.push(f);
    }
    let (preview, preview_fields) = preview(alert, reason, profile, &values);
    let rule = if profile.has_clinical_content() {
        alert.rule.clone()
    } else {
        String::new()
    };
    Redacted(AlertView {
        alert_id: alert.id,
        rule,
        priority: alert.priority.as_str(),
        reason: reason.as_str(),
        late: alert.late || reason == Reason::Late,
        profile: profile.name.clone(),
        allowed: profile.fields.clone(),
        values,
        preview,
        preview_fields,
        fields_sent,
    })
}

/// One field's value from the event (`None` when the event has none).
fn extract(f: Field, ev: &ClinicalEvent, sc: &Scrubber) -> Option<String> {
    let main = main_observation(ev);
    let loc = ev.location.as_ref();
    match f {
        Field::PatientName => ev.patient.name.as_ref().map(full_name),
        Field::PatientId => {
            let ids = &ev.patient.identifiers;
            ids.iter()
                .find(|i| i.type_code.eq_ignore_ascii_case("MR") && !i.value.trim().is_empty())
                .or_else(|| ids.iter().find(|i| !i.value.trim().is_empty()))
                .map(|i| i.value.trim().to_string())
        }
        Field::PatientIds => Some(
            ev.patient
                .identifiers
                .iter()
                .filter(|i| !i.value.trim().is_empty())
                .map(|i| {
                    if i.type_code.is_empty() {
                        i.value.trim().to_string()
                    } else {
                        format!("{}:{}", i.type_code, i.value.trim())
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Field::BirthDate => ev.patient.birth_date.as_deref().map(birth_date),
        Field::Visit => ev.visit.as_ref().map(|v| v.value.clone()),
        Field::OrderNumber => ev.order.as_ref().map(|o| {
            if o.filler_id.trim().is_empty() {
                o.placer_id.clone()
            } else {
                o.filler_id.clone()
            }
        }),
        Field::Sex => ev.patient.sex.as_deref().map(|s| sc.scrub(s)),
        Field::Facility => loc.map(|l| sc.scrub(&l.facility)),
        Field::Unit => loc.map(|l| sc.scrub(&l.unit)),
        Field::Room => loc.map(|l| sc.scrub(&l.room)),
        Field::Bed => loc.map(|l| sc.scrub(&l.bed)),
        Field::EventClass => {
            let mt = &ev.source.message_type;
            let message = if ev.source.trigger.is_empty() || mt.contains('^') {
                mt.clone()
            } else {
                format!("{mt}^{}", ev.source.trigger)
            };
            Some(sc.scrub(&format!("{} {message}", ev.kind.as_str())))
        }
        Field::Test => main
            .map(|o| code_label(&o.code.text, &o.code.code))
            .filter(|s| !s.is_empty())
            .or_else(|| {
                ev.order
                    .as_ref()
                    .map(|o| code_label(&o.service.text, &o.service.code))
            })
            .map(|s| sc.scrub(&s)),
        Field::Value => main.map(|o| observation_values(o, sc)),
        Field::Units => main
            .and_then(|o| o.units.as_ref())
            .map(|u| sc.scrub(&code_label(&u.text, &u.code))),
        Field::Flag => main.map(|o| sc.scrub(&o.flags.join(","))),
        // Ranges look like local phone numbers (`150-4500`): only the
        // patient's own identifiers are removed.
        Field::ReferenceRange => main.map(|o| sc.scrub_identifiers(&o.reference_range)),
        Field::ResultStatus => main.map(|o| status_name(o.status).to_string()),
        Field::Results => Some(
            ev.observations
                .iter()
                .map(|o| {
                    let mut parts = vec![sc.scrub(&code_label(&o.code.text, &o.code.code))];
                    parts.push(observation_values(o, sc));
                    if let Some(u) = &o.units {
                        parts.push(sc.scrub(&code_label(&u.text, &u.code)));
                    }
                    parts.push(sc.scrub(&o.flags.join(",")));
                    parts.retain(|p| !p.trim().is_empty());
                    parts.join(" ")
                })
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Field::Priority => match ev.priority {
            Priority::Unspecified => None,
            Priority::Routine => Some("routine".to_string()),
            Priority::Urgent => Some("urgent".to_string()),
            Priority::Stat => Some("stat".to_string()),
        },
        Field::OrderingProvider => ev
            .providers
            .iter()
            .find(|p| p.role == ProviderRole::Ordering)
            .map(|p| sc.scrub(&full_name(&p.name))),
        Field::AlarmKind => ev
            .alarm
            .as_ref()
            .map(|a| sc.scrub(&code_label(&a.kind.text, &a.kind.code))),
        Field::Notes => Some(
            ev.notes
                .iter()
                .map(|n| sc.scrub(n.trim()))
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// The observation an alert is mostly about: the first with a critical
/// flag, else the first with an abnormal flag, else the first.
fn main_observation(ev: &ClinicalEvent) -> Option<&Observation> {
    let obs = &ev.observations;
    obs.iter()
        .find(|o| o.flags.iter().any(|f| is_critical_flag(f)))
        .or_else(|| {
            obs.iter().find(|o| {
                o.flags
                    .iter()
                    .any(|f| !f.trim().is_empty() && !f.trim().eq_ignore_ascii_case("N"))
            })
        })
        .or_else(|| obs.first())
}

fn is_critical_flag(f: &str) -> bool {
    CRITICAL_FLAGS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(f.trim()))
}

/// The observation's values, `, `-separated. A plain number (`NM`) is only
/// checked against the patient's identifiers (a 7-digit count is a count);
/// everything else, free text (`ST`, `TX`, `FT`) above all, is scrubbed.
fn observation_values(o: &Observation, sc: &Scrubber) -> String {
    let numeric = o.value_type.trim().eq_ignore_ascii_case("NM");
    o.values
        .iter()
        .map(|v| {
            if numeric && is_plain_number(v) {
                sc.scrub_identifiers(v.trim())
            } else {
                sc.scrub(v.trim())
            }
        })
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `6.9`, `-1`, `<0.01`, `>=1000000`.
fn is_plain_number(v: &str) -> bool {
    let v = v.trim();
    let v = v
        .strip_prefix("<=")
        .or_else(|| v.strip_prefix(">="))
        .or_else(|| v.strip_prefix('<'))
        .or_else(|| v.strip_prefix('>'))
        .unwrap_or(v)
        .trim();
    !v.is_empty() && v.parse::<f64>().is_ok_and(f64::is_finite)
}

fn code_label(text: &str, code: &str) -> String {
    if text.trim().is_empty() {
        code.trim().to_string()
    } else {
        text.trim().to_string()
    }
}

fn full_name(n: &PersonName) -> String {
    [&n.given, &n.middle, &n.family]
        .into_iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD` from HL7 `YYYYMMDD…`; anything else as given.
fn birth_date(raw: &str) -> String {
    let raw = raw.trim();
    raw.get(..8)
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| raw.to_string())
}

fn status_name(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Preliminary => "preliminary",
        ResultStatus::Final => "final",
        ResultStatus::Corrected => "corrected",
        ResultStatus::WrongPatient => "wrong-patient",
        ResultStatus::Deleted => "deleted",
        ResultStatus::CannotObtain => "cannot-obtain",
        ResultStatus::Unknown => "unknown",
    }
}

/// The preview line and the fields it was made from. Only the envelope and
/// values already in the view (so allowed and scrubbed) that are not
/// direct identifiers.
fn preview(
    alert: &Alert,
    reason: Reason,
    profile: &Profile,
    values: &BTreeMap<&'static str, String>,
) -> (String, Vec<Field>) {
    let mut used = Vec::new();
    let priority = alert.priority.as_str().to_ascii_uppercase();
    let mut line = if profile.has_clinical_content() {
        let get = |f: Field| -> Option<&str> {
            if f.is_identifier() {
                return None;
            }
            values
                .get(f.name())
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
        };
        let mut words = vec![priority];
        let what = if get(Field::EventClass).is_some() {
            used.push(Field::EventClass);
            match alert.event.kind {
                EventKind::Result => {
                    let critical =
                        get(Field::Flag).is_some_and(|f| f.split(',').any(is_critical_flag));
                    if critical {
                        used.push(Field::Flag);
                        "critical result".to_string()
                    } else {
                        "result".to_string()
                    }
                }
                EventKind::Communication => "message".to_string(),
                k => k.as_str().replace('-', " "),
            }
        } else {
            "alert".to_string()
        };
        words.push(what);
        if let Some(u) = get(Field::Unit) {
            used.push(Field::Unit);
            words.push(u.to_string());
        }
        match (get(Field::Room), get(Field::Bed)) {
            (Some(r), Some(b)) => {
                used.extend([Field::Room, Field::Bed]);
                words.push(format!("{r}-{b}"));
            }
            (Some(r), None) => {
                used.push(Field::Room);
                words.push(r.to_string());
            }
            (None, Some(b)) => {
                used.push(Field::Bed);
                words.push(format!("bed {b}"));
            }
            (None, None) => {}
        }
        words.join(" ")
    } else {
        format!("{priority} alert: {OPEN_SECURE_APP}")
    };
    if reason != Reason::New && reason != Reason::Late {
        line.push_str(&format!(" ({})", reason.as_str()));
    }
    if alert.late || reason == Reason::Late {
        line.push_str(" (late)");
    }
    let line: String = line
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(PREVIEW_MAX_CHARS)
        .collect();
    used.sort();
    (line, used)
}
