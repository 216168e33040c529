//! Observation and DiagnosticReport -> `Result` events.
//!
//! Observation (one event):
//! - observations: the Observation itself (unless it only groups
//!   components: no value, no interpretation, no dataAbsentReason), then one
//!   per `component` (`sub_id` = its 1-based index, the parent's status and
//!   time), then each `hasMember` Observation that resolves (one level,
//!   their components included). `set_id` counts them from 1.
//! - value[x] -> `value_type`/`values`: Quantity `NM` (`SN` with its
//!   comparator prefixed, `<5`), units from `code`/`unit`/`system`;
//!   CodeableConcept `CWE` (display, else text, else code); string `ST`;
//!   boolean `ST` (`true`/`false`); integer `NM`; Range `NR` (`low-high`);
//!   Ratio `SN` (`num:den`); SampledData `SD` (data not copied); time `TM`;
//!   dateTime `DTM` (as given); Period `DR` (`start/end`).
//! - every decimal of value[x] must be a FHIR decimal (fhirbolt also
//!   takes JSON strings there): else 422 `value` at it.
//! - `referenceRange[0]`: `low-high`, `>low`, `<high`, else its text.
//! - `interpretation`: every coding code (v3 ObservationInterpretation /
//!   v2 0078: `H`, `L`, `HH`, `LL`, `A`, `AA`, `HU`, `LU`, `N`, `POS` ...)
//!   kept as given, so critical `HH`/`LL`/`AA` read as in OBX-8.
//! - status (as OBX-11): registered, preliminary -> Preliminary; final ->
//!   Final; amended, corrected -> Corrected (changed after final: news);
//!   cancelled -> CannotObtain (the v2-to-FHIR map pairs OBX-11 `X` with
//!   `cancelled`); entered-in-error -> WrongPatient (a retraction that must
//!   reach whoever saw the result, as OBX-11 `W`); unknown -> Unknown.
//! - order: service = code, `result_status` = the OBX-11 letter (`P`, `F`,
//!   `C`, `X`, `W`, empty), `observed_at` = effective[x], `filler_id` = first
//!   identifier, `placer_id` = identifier of the `basedOn` ServiceRequest
//!   when it resolves; priority from that ServiceRequest.
//! - `occurred_at`: effective[x] (dateTime, instant, Period.start), else
//!   `issued`, else `meta.lastUpdated`. performer -> CareTeam `performer`.
//!   subject -> patient; encounter -> visit, location, patient class;
//!   notes from `note`.
//!
//! DiagnosticReport (one event): as above with `code` as the service,
//! `result_status` as OBR-25 (registered `O`, partial `A`, preliminary `P`,
//! final `F`, amended/corrected/appended `C`, cancelled `X`,
//! entered-in-error `W`), observations from `result` references that
//! resolve (contained or in the Bundle; unresolved ones are skipped — the
//! caller may fetch them), performer and resultsInterpreter as CareTeam
//! `performer`/`interpreter`, `conclusion` as a note.

use fhirbolt::model::r4::Resource as R4;
use fhirbolt::model::r4::resources::{
    DiagnosticReport, DiagnosticReportEffective, Observation as FObservation,
    ObservationComponentValue, ObservationEffective, ObservationReferenceRange, ObservationValue,
};
use fhirbolt::model::r4::types::{CodeableConcept, Period, Quantity, Range, Ratio, Reference};

use crate::event::{
    ClinicalEvent, Code, EventKind, Observation, Order, Priority, ProviderRole, ResultStatus,
};
use crate::parse::fhir::error::{FhirError, IssueType};

use super::{Cx, code, notes, pv, request_priority, system_name, typed_identifier};

/// value[x] of an Observation or a component.
enum Val<'a> {
    Quantity(&'a Quantity),
    Concept(&'a CodeableConcept),
    Str(Option<&'a str>),
    Bool(Option<bool>),
    Int(Option<i32>),
    Range(&'a Range),
    Ratio(&'a Ratio),
    Sampled,
    Time(Option<&'a str>),
    DateTime(Option<&'a str>),
    Period(&'a Period),
    None,
}

impl<'a> From<Option<&'a ObservationValue>> for Val<'a> {
    fn from(v: Option<&'a ObservationValue>) -> Self {
        match v {
            Some(ObservationValue::Quantity(q)) => Val::Quantity(q),
            Some(ObservationValue::CodeableConcept(c)) => Val::Concept(c),
            Some(ObservationValue::String(s)) => Val::Str(s.value.as_deref()),
            Some(ObservationValue::Boolean(b)) => Val::Bool(b.value),
            Some(ObservationValue::Integer(i)) => Val::Int(i.value),
            Some(ObservationValue::Range(r)) => Val::Range(r),
            Some(ObservationValue::Ratio(r)) => Val::Ratio(r),
            Some(ObservationValue::SampledData(_)) => Val::Sampled,
            Some(ObservationValue::Time(t)) => Val::Time(t.value.as_deref()),
            Some(ObservationValue::DateTime(t)) => Val::DateTime(t.value.as_deref()),
            Some(ObservationValue::Period(p)) => Val::Period(p),
            Some(ObservationValue::Invalid) | None => Val::None,
        }
    }
}

impl<'a> From<Option<&'a ObservationComponentValue>> for Val<'a> {
    fn from(v: Option<&'a ObservationComponentValue>) -> Self {
        use ObservationComponentValue as C;
        match v {
            Some(C::Quantity(q)) => Val::Quantity(q),
            Some(C::CodeableConcept(c)) => Val::Concept(c),
            Some(C::String(s)) => Val::Str(s.value.as_deref()),
            Some(C::Boolean(b)) => Val::Bool(b.value),
            Some(C::Integer(i)) => Val::Int(i.value),
            Some(C::Range(r)) => Val::Range(r),
            Some(C::Ratio(r)) => Val::Ratio(r),
            Some(C::SampledData(_)) => Val::Sampled,
            Some(C::Time(t)) => Val::Time(t.value.as_deref()),
            Some(C::DateTime(t)) => Val::DateTime(t.value.as_deref()),
            Some(C::Period(p)) => Val::Period(p),
            Some(C::Invalid) | None => Val::None,
        }
    }
}

/// A FHIR decimal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(crate) fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mant, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let (int, frac) = match mant.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mant, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(digits)
        && exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// fhirbolt reads a decimal from a JSON string as well as from a number:
/// every decimal of a value[x] must still look like one. `at`: the value
/// element (`Observation.valueQuantity`).
fn check_decimals(v: &Val<'_>, at: &str) -> Result<(), FhirError> {
    let quantities: Vec<(Option<&Quantity>, &str)> = match v {
        Val::Quantity(q) => vec![(Some(*q), "")],
        Val::Range(r) => vec![(r.low.as_deref(), ".low"), (r.high.as_deref(), ".high")],
        Val::Ratio(r) => vec![
            (r.numerator.as_deref(), ".numerator"),
            (r.denominator.as_deref(), ".denominator"),
        ],
        _ => Vec::new(),
    };
    for (q, part) in quantities {
        if let Some(d) = q.and_then(|q| pv!(q.value))
            && !is_decimal(d)
        {
            return Err(FhirError::at(
                422,
                IssueType::Value,
                format!("{at}{part}.value"),
                "not a valid FHIR decimal",
            ));
        }
    }
    Ok(())
}

/// The JSON name of a value[x] choice.
fn value_name(v: &Val<'_>) -> &'static str {
    match v {
        Val::Quantity(_) => "valueQuantity",
        Val::Range(_) => "valueRange",
        Val::Ratio(_) => "valueRatio",
        _ => "value",
    }
}

fn qty_value(q: Option<&Quantity>) -> String {
    q.and_then(|q| pv!(q.value)).unwrap_or("").to_string()
}

fn units(q: Option<&Quantity>) -> Option<Code> {
    let q = q?;
    let c = Code {
        code: pv!(q.code).unwrap_or("").to_string(),
        text: pv!(q.unit).unwrap_or("").to_string(),
        system: system_name(pv!(q.system).unwrap_or("")),
    };
    (!(c.code.is_empty() && c.text.is_empty())).then_some(c)
}

/// (value type, values, units).
fn value(v: Val<'_>) -> (String, Vec<String>, Option<Code>) {
    let one = |t: &str, s: String| {
        let vals = if s.is_empty() { Vec::new() } else { vec![s] };
        (t.to_string(), vals)
    };
    let ((t, vals), u) = match v {
        Val::Quantity(q) => {
            let n = qty_value(Some(q));
            match pv!(q.comparator) {
                Some(c) => (one("SN", format!("{c}{n}")), units(Some(q))),
                None => (one("NM", n), units(Some(q))),
            }
        }
        Val::Concept(c) => {
            let k = code(c);
            let text = if k.text.is_empty() { k.code } else { k.text };
            (one("CWE", text), None)
        }
        Val::Str(s) => (one("ST", s.unwrap_or("").to_string()), None),
        Val::Bool(b) => (
            one("ST", b.map(|b| b.to_string()).unwrap_or_default()),
            None,
        ),
        Val::Int(i) => (
            one("NM", i.map(|i| i.to_string()).unwrap_or_default()),
            None,
        ),
        Val::Range(r) => {
            let (lo, hi) = (r.low.as_deref(), r.high.as_deref());
            (
                one("NR", format!("{}-{}", qty_value(lo), qty_value(hi))),
                units(lo).or_else(|| units(hi)),
            )
        }
        Val::Ratio(r) => {
            let (n, d) = (r.numerator.as_deref(), r.denominator.as_deref());
            (
                one("SN", format!("{}:{}", qty_value(n), qty_value(d))),
                units(n),
            )
        }
        Val::Sampled => (one("SD", String::new()), None),
        Val::Time(t) => (one("TM", t.unwrap_or("").to_string()), None),
        Val::DateTime(t) => (one("DTM", t.unwrap_or("").to_string()), None),
        Val::Period(p) => (
            one(
                "DR",
                format!(
                    "{}/{}",
                    pv!(p.start).unwrap_or(""),
                    pv!(p.end).unwrap_or("")
                ),
            ),
            None,
        ),
        Val::None => ((String::new(), Vec::new()), None),
    };
    (t, vals, u)
}

fn range(r: &[ObservationReferenceRange]) -> String {
    let Some(r) = r.first() else {
        return String::new();
    };
    let lo = r.low.as_deref().and_then(|q| pv!(q.value));
    let hi = r.high.as_deref().and_then(|q| pv!(q.value));
    match (lo, hi) {
        (Some(l), Some(h)) => format!("{l}-{h}"),
        (Some(l), None) => format!(">{l}"),
        (None, Some(h)) => format!("<{h}"),
        (None, None) => pv!(r.text).unwrap_or("").to_string(),
    }
}

fn flags(interp: &[CodeableConcept]) -> Vec<String> {
    interp
        .iter()
        .flat_map(|c| c.coding.iter().filter_map(|k| pv!(k.code)))
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Observation status -> (ResultStatus, OBX-11 letter).
pub(crate) fn status(s: Option<&str>) -> (ResultStatus, &'static str) {
    match s {
        Some("registered" | "preliminary") => (ResultStatus::Preliminary, "P"),
        Some("final") => (ResultStatus::Final, "F"),
        Some("amended" | "corrected") => (ResultStatus::Corrected, "C"),
        Some("cancelled") => (ResultStatus::CannotObtain, "X"),
        Some("entered-in-error") => (ResultStatus::WrongPatient, "W"),
        _ => (ResultStatus::Unknown, ""),
    }
}

/// DiagnosticReport status -> OBR-25 (table 0123, plus `W`).
fn report_status(s: Option<&str>) -> &'static str {
    match s {
        Some("registered") => "O",
        Some("partial") => "A",
        Some("preliminary") => "P",
        Some("final") => "F",
        Some("amended" | "corrected" | "appended") => "C",
        Some("cancelled") => "X",
        Some("entered-in-error") => "W",
        _ => "",
    }
}

/// effective[x] of an Observation, at `prefix`.
fn observation_time(
    cx: &Cx<'_>,
    o: &FObservation,
    prefix: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, FhirError> {
    match &o.effective {
        Some(ObservationEffective::DateTime(d)) => {
            cx.time(d.value.as_deref(), || format!("{prefix}.effectiveDateTime"))
        }
        Some(ObservationEffective::Instant(d)) => {
            cx.time(d.value.as_deref(), || format!("{prefix}.effectiveInstant"))
        }
        Some(ObservationEffective::Period(p)) => {
            cx.time(pv!(p.start), || format!("{prefix}.effectivePeriod.start"))
        }
        _ => Ok(None),
    }
}

/// One Observation's entries (itself and its components), numbered from
/// `*next`. `prefix`: its FHIRPath, for time errors.
fn entries(
    cx: &Cx<'_>,
    o: &FObservation,
    prefix: &str,
    next: &mut usize,
    out: &mut Vec<Observation>,
) -> Result<(), FhirError> {
    let (st, _) = status(o.status.value.as_deref());
    let observed_at = observation_time(cx, o, prefix)?;
    let mut push = |out: &mut Vec<Observation>, mut ob: Observation| {
        *next += 1;
        ob.set_id = next.to_string();
        out.push(ob);
    };
    let own = o.value.is_some()
        || o.data_absent_reason.is_some()
        || !o.interpretation.is_empty()
        || o.component.is_empty();
    if own {
        let v: Val<'_> = o.value.as_ref().into();
        check_decimals(&v, &format!("{prefix}.{}", value_name(&v)))?;
        let (value_type, values, units) = value(v);
        push(
            out,
            Observation {
                set_id: String::new(),
                value_type,
                code: code(&o.code),
                sub_id: String::new(),
                values,
                units,
                reference_range: range(&o.reference_range),
                flags: flags(&o.interpretation),
                status: st,
                observed_at,
            },
        );
    }
    for (i, c) in o.component.iter().enumerate() {
        let v: Val<'_> = c.value.as_ref().into();
        check_decimals(&v, &format!("{prefix}.component[{i}].{}", value_name(&v)))?;
        let (value_type, values, units) = value(v);
        push(
            out,
            Observation {
                set_id: String::new(),
                value_type,
                code: code(&c.code),
                sub_id: (i + 1).to_string(),
                values,
                units,
                reference_range: range(&c.reference_range),
                flags: flags(&c.interpretation),
                status: st,
                observed_at,
            },
        );
    }
    Ok(())
}

/// The ServiceRequest a `basedOn` list resolves to: (placer id, priority).
fn based_on(cx: &Cx<'_>, refs: &[Reference]) -> (String, Priority) {
    for r in refs {
        if let Some(R4::ServiceRequest(s)) = cx.resolve(r) {
            let placer = typed_identifier(&s.identifier, "PLAC")
                .or_else(|| {
                    s.identifier
                        .iter()
                        .find_map(|i| pv!(i.value))
                        .map(str::to_string)
                })
                .unwrap_or_default();
            return (placer, request_priority(pv!(s.priority)));
        }
    }
    (String::new(), Priority::Unspecified)
}

pub(crate) fn observation_event(cx: &Cx<'_>, o: &FObservation) -> Result<ClinicalEvent, FhirError> {
    let st = o.status.value.as_deref();
    let mut ev = cx.event(EventKind::Result, st.unwrap_or(""));
    ev.patient = cx.patient(o.subject.as_deref());
    cx.encounter(&mut ev, o.encounter.as_deref());
    cx.add_providers(&mut ev, &o.performer, ProviderRole::CareTeam, "performer");
    let observed_at = observation_time(cx, o, "Observation")?;
    let issued = cx.time(pv!(o.issued), || "Observation.issued".to_string())?;
    let (placer_id, priority) = based_on(cx, &o.based_on);
    ev.priority = priority;
    ev.order = Some(Order {
        control: String::new(),
        placer_id,
        filler_id: o
            .identifier
            .iter()
            .find_map(|i| pv!(i.value))
            .unwrap_or("")
            .to_string(),
        service: code(&o.code),
        status: String::new(),
        observed_at,
        result_status: status(st).1.to_string(),
    });
    ev.occurred_at = observed_at
        .or(issued)
        .or_else(|| cx.last_updated(o.meta.as_deref()));
    let mut next = 0;
    entries(cx, o, "Observation", &mut next, &mut ev.observations)?;
    for (i, m) in o.has_member.iter().enumerate() {
        if let Some(R4::Observation(member)) = cx.resolve(m) {
            entries(
                cx,
                member,
                &format!("Observation.hasMember[{i}].resolve()"),
                &mut next,
                &mut ev.observations,
            )?;
        }
    }
    ev.notes.extend(notes(&o.note));
    Ok(ev)
}

pub(crate) fn report_event(cx: &Cx<'_>, d: &DiagnosticReport) -> Result<ClinicalEvent, FhirError> {
    let st = d.status.value.as_deref();
    let mut ev = cx.event(EventKind::Result, st.unwrap_or(""));
    ev.patient = cx.patient(d.subject.as_deref());
    cx.encounter(&mut ev, d.encounter.as_deref());
    cx.add_providers(&mut ev, &d.performer, ProviderRole::CareTeam, "performer");
    cx.add_providers(
        &mut ev,
        &d.results_interpreter,
        ProviderRole::CareTeam,
        "interpreter",
    );
    let observed_at = match &d.effective {
        Some(DiagnosticReportEffective::DateTime(t)) => cx.time(t.value.as_deref(), || {
            "DiagnosticReport.effectiveDateTime".to_string()
        })?,
        Some(DiagnosticReportEffective::Period(p)) => cx.time(pv!(p.start), || {
            "DiagnosticReport.effectivePeriod.start".to_string()
        })?,
        _ => None,
    };
    let issued = cx.time(pv!(d.issued), || "DiagnosticReport.issued".to_string())?;
    let (placer_id, priority) = based_on(cx, &d.based_on);
    ev.priority = priority;
    ev.order = Some(Order {
        control: String::new(),
        placer_id,
        filler_id: d
            .identifier
            .iter()
            .find_map(|i| pv!(i.value))
            .unwrap_or("")
            .to_string(),
        service: code(&d.code),
        status: String::new(),
        observed_at,
        result_status: report_status(st).to_string(),
    });
    ev.occurred_at = observed_at
        .or(issued)
        .or_else(|| cx.last_updated(d.meta.as_deref()));
    let mut next = 0;
    for (i, r) in d.result.iter().enumerate() {
        if let Some(R4::Observation(o)) = cx.resolve(r) {
            entries(
                cx,
                o,
                &format!("DiagnosticReport.result[{i}].resolve()"),
                &mut next,
                &mut ev.observations,
            )?;
        }
    }
    if let Some(c) = pv!(d.conclusion).filter(|c| !c.trim().is_empty()) {
        ev.notes.push(c.to_string());
    }
    Ok(ev)
}
