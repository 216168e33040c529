//! R4 resources to [`ClinicalEvent`]s, and what they share.
//!
//! Shared rules (per-type rules are in [`result`], [`order`],
//! [`encounter`] and [`alert`]):
//! - `source`: `sender` = the configured FHIR client, `message_type` = the
//!   resource type, `trigger` = its `status` code (a code from a fixed value
//!   set, never free text), `control_id` = the resource id (the caller may
//!   replace it with its own request id), `index` = position among the events.
//! - `processing`: `Training` when the resource, or the Bundle it came in,
//!   is tagged `HTEST` in `meta.tag`/`meta.security`; `Production` otherwise
//!   (FHIR has no MSH-11).
//! - References are resolved `#id` in `contained`, then in the Bundle (see
//!   [`BundleContext`]). Patient: a resolved Patient's identifiers (system as
//!   authority, `type.coding[0].code` as type), first name, birth date as
//!   given, gender as `M`/`F`/`O`/`U`; else the reference's `identifier`;
//!   else the reference text itself as an identifier with authority
//!   `reference`. Providers: a resolved Practitioner (or PractitionerRole's
//!   practitioner) gives identifier and name; otherwise the reference's
//!   identifier (or reference text, authority `reference`) and its `display`
//!   kept whole in `name.family`. References to other types (Organization,
//!   Patient, Device ...) are not providers.
//! - Codes: `CodeableConcept` -> first coding with a code: `code`, `display`
//!   (else `text`) as text, system `http://loinc.org` -> `LN`,
//!   `http://snomed.info/sct` -> `SCT`, `http://unitsofmeasure.org` -> `UCUM`,
//!   any other system URI kept as is.
//! - Times: see [`super::time`]; a malformed one is 422 `value` at its
//!   element. `occurred_at` falls back to `meta.lastUpdated`.
//! - Locations: a resolved Location and its `partOf` chain (up to 5) fill
//!   bed (`physicalType` `bd`), room (`ro`), facility (`bu`, `si`) and unit
//!   (anything else, or no type), each from `name` (else `description`); an
//!   unresolved reference
//!   gives `unit` = its display, else the reference text.

mod alert;
mod encounter;
mod order;
mod result;

use chrono::{DateTime, Utc};
use fhirbolt::model::r4::Resource as R4;
use fhirbolt::model::r4::types::{
    Annotation, CodeableConcept, HumanName, Identifier as FIdentifier, Meta, Reference,
};

use crate::event::{
    ClinicalEvent, Code, EventKind, Identifier, Location, Patient, PersonName, Priority,
    Processing, Provider, ProviderRole, SourceRef,
};

use super::FhirContext;
use super::bundle::{BundleContext, type_id_tail};
use super::error::{FhirError, IssueType};
use super::resource::Resource;
use super::time;

/// Everything the per-type mappers share.
pub(crate) struct Cx<'a> {
    pub(crate) ctx: &'a FhirContext<'a>,
    pub(crate) bundle: Option<&'a BundleContext<'a>>,
    pub(crate) resource: &'a Resource,
    /// `contained` of the resource being mapped.
    pub(crate) contained: &'a [R4],
}

/// Value of an optional FHIR primitive.
macro_rules! pv {
    ($e:expr) => {
        $e.as_ref().and_then(|p| p.value.as_deref())
    };
}
pub(crate) use pv;

impl<'a> Cx<'a> {
    /// A blank event of `kind`.
    pub(crate) fn event(&self, kind: EventKind, status: &str) -> ClinicalEvent {
        let training = self.resource.processing == Processing::Training
            || self
                .bundle
                .is_some_and(|b| b.processing == Processing::Training);
        ClinicalEvent {
            kind,
            source: SourceRef {
                sender: self.ctx.source.to_string(),
                message_type: self.resource.type_name.clone(),
                trigger: status.to_string(),
                control_id: self.resource.id.clone().unwrap_or_default(),
                index: 0,
            },
            processing: if training {
                Processing::Training
            } else {
                Processing::Production
            },
            occurred_at: None,
            patient: Patient::default(),
            location: None,
            prior_location: None,
            patient_class: String::new(),
            visit: None,
            providers: Vec::new(),
            priority: Priority::Unspecified,
            order: None,
            observations: Vec::new(),
            alarm: None,
            merged_identifiers: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A FHIR date/dateTime/instant at `expr`, or 422 `value` there.
    pub(crate) fn time(
        &self,
        v: Option<&str>,
        expr: impl FnOnce() -> String,
    ) -> Result<Option<DateTime<Utc>>, FhirError> {
        match v {
            None => Ok(None),
            Some(s) => time::parse(s, self.ctx.timezone).map_err(|_| {
                FhirError::at(
                    422,
                    IssueType::Value,
                    expr(),
                    "not a valid FHIR date, dateTime or instant",
                )
            }),
        }
    }

    /// `meta.lastUpdated`, leniently (already a server-side value).
    pub(crate) fn last_updated(&self, meta: Option<&Meta>) -> Option<DateTime<Utc>> {
        meta.and_then(|m| pv!(m.last_updated))
            .and_then(|s| time::parse(s, self.ctx.timezone).ok().flatten())
    }

    /// The resource a reference points to: `#id` in `contained`, else in
    /// the Bundle.
    pub(crate) fn resolve(&self, r: &Reference) -> Option<&'a R4> {
        let target = pv!(r.reference)?;
        if let Some(id) = target.strip_prefix('#') {
            return self
                .contained
                .iter()
                .find(|c| c.id().and_then(|i| i.value.as_deref()) == Some(id));
        }
        self.bundle?.resolve(target).map(|res| &res.r4)
    }

    /// The patient a subject reference names.
    pub(crate) fn patient(&self, subject: Option<&Reference>) -> Patient {
        let Some(r) = subject else {
            return Patient::default();
        };
        if let Some(R4::Patient(p)) = self.resolve(r) {
            let mut out = Patient {
                identifiers: p.identifier.iter().filter_map(identifier).collect(),
                name: p.name.first().map(person_name),
                birth_date: pv!(p.birth_date).map(str::to_string),
                sex: pv!(p.gender).map(|g| {
                    match g {
                        "male" => "M",
                        "female" => "F",
                        "other" => "O",
                        _ => "U",
                    }
                    .to_string()
                }),
            };
            if out.identifiers.is_empty() {
                out.identifiers.extend(reference_identifier(r));
            }
            return out;
        }
        Patient {
            identifiers: reference_identifier(r).into_iter().collect(),
            ..Patient::default()
        }
    }

    /// A provider from a reference, when it names a practitioner (or its
    /// type is unknown).
    pub(crate) fn provider(
        &self,
        r: &Reference,
        role: ProviderRole,
        role_code: &str,
    ) -> Option<Provider> {
        let mut resolved = self.resolve(r);
        if let Some(R4::PractitionerRole(pr)) = resolved {
            resolved = pr.practitioner.as_deref().and_then(|p| self.resolve(p));
        }
        let make = |id: Identifier, name: PersonName| Provider {
            role,
            role_code: role_code.to_string(),
            id,
            name,
        };
        match resolved {
            Some(R4::Practitioner(p)) => Some(make(
                p.identifier
                    .iter()
                    .find_map(identifier)
                    .or_else(|| reference_identifier(r))
                    .unwrap_or_default(),
                p.name.first().map(person_name).unwrap_or_default(),
            )),
            Some(_) => None,
            None => {
                let t = reference_type(r);
                if t.is_some_and(|t| t != "Practitioner" && t != "PractitionerRole") {
                    return None;
                }
                let id = reference_identifier(r).unwrap_or_default();
                let display = pv!(r.display).unwrap_or("").to_string();
                if id.value.is_empty() && display.is_empty() {
                    return None;
                }
                Some(make(
                    id,
                    PersonName {
                        family: display,
                        ..PersonName::default()
                    },
                ))
            }
        }
    }

    /// Adds providers for `refs`, skipping non-practitioners.
    pub(crate) fn add_providers<'r>(
        &self,
        ev: &mut ClinicalEvent,
        refs: impl IntoIterator<Item = &'r Reference>,
        role: ProviderRole,
        role_code: &str,
    ) {
        ev.providers.extend(
            refs.into_iter()
                .filter_map(|r| self.provider(r, role, role_code)),
        );
    }

    /// A location (with its `partOf` chain) from a reference.
    pub(crate) fn location(&self, r: &Reference) -> Location {
        let mut out = Location::default();
        let mut cur = match self.resolve(r) {
            Some(R4::Location(l)) => Some(l),
            _ => None,
        };
        if cur.is_none() {
            out.unit = pv!(r.display)
                .or(pv!(r.reference))
                .unwrap_or("")
                .to_string();
            return out;
        }
        for _ in 0..5 {
            let Some(l) = cur else { break };
            let name = pv!(l.name).or(pv!(l.description)).unwrap_or("").to_string();
            let kind = l
                .physical_type
                .as_deref()
                .and_then(|c| c.coding.iter().find_map(|c| pv!(c.code)))
                .unwrap_or("");
            let slot = match kind {
                "bd" => &mut out.bed,
                "ro" => &mut out.room,
                "bu" | "si" => &mut out.facility,
                _ => &mut out.unit,
            };
            if slot.is_empty() {
                *slot = name;
            }
            cur = match l.part_of.as_deref().and_then(|p| self.resolve(p)) {
                Some(R4::Location(p)) => Some(p),
                _ => None,
            };
        }
        out
    }

    /// Visit, location and patient class from an encounter reference.
    pub(crate) fn encounter(&self, ev: &mut ClinicalEvent, r: Option<&Reference>) {
        let Some(r) = r else { return };
        if let Some(R4::Encounter(e)) = self.resolve(r) {
            ev.visit = e.identifier.iter().find_map(identifier);
            ev.patient_class = encounter::patient_class(pv!(e.class.code).unwrap_or(""));
            if let Some((_, l)) = encounter::current_location(e) {
                ev.location = Some(self.location(&l.location));
            }
        }
        if ev.visit.is_none() {
            ev.visit = reference_identifier(r);
        }
    }
}

/// The type a reference names (`Patient/1` -> `Patient`, or `type`).
pub(crate) fn reference_type(r: &Reference) -> Option<&str> {
    if let Some(t) = pv!(r.r#type) {
        return Some(t.rsplit('/').next().unwrap_or(t));
    }
    let s = pv!(r.reference)?;
    if s.starts_with('#') || s.starts_with("urn:") {
        return None;
    }
    type_id_tail(s)?;
    let path = s.split(['?', '#']).next().unwrap_or("");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let n = parts.len();
    let i = if n >= 4 && parts[n - 2] == "_history" {
        n - 4
    } else {
        n.checked_sub(2)?
    };
    parts.get(i).copied()
}

/// The reference's identifier, else the reference text (authority
/// `reference`).
pub(crate) fn reference_identifier(r: &Reference) -> Option<Identifier> {
    if let Some(i) = r.identifier.as_deref().and_then(identifier) {
        return Some(i);
    }
    pv!(r.reference).map(|s| Identifier {
        value: s.to_string(),
        authority: "reference".to_string(),
        type_code: String::new(),
    })
}

/// An R4 Identifier.
pub(crate) fn identifier(i: &FIdentifier) -> Option<Identifier> {
    Some(Identifier {
        value: pv!(i.value)?.to_string(),
        authority: pv!(i.system).unwrap_or("").to_string(),
        type_code: i
            .r#type
            .as_deref()
            .and_then(|t| t.coding.iter().find_map(|c| pv!(c.code)))
            .unwrap_or("")
            .to_string(),
    })
}

/// The first identifier whose type code is `type_code`.
pub(crate) fn typed_identifier(ids: &[FIdentifier], type_code: &str) -> Option<String> {
    ids.iter()
        .filter_map(identifier)
        .find(|i| i.type_code == type_code)
        .map(|i| i.value)
}

/// A HumanName: family, first given, further given names joined by a space.
pub(crate) fn person_name(n: &HumanName) -> PersonName {
    let given: Vec<&str> = n.given.iter().filter_map(|g| g.value.as_deref()).collect();
    PersonName {
        family: pv!(n.family).unwrap_or("").to_string(),
        given: given.first().copied().unwrap_or("").to_string(),
        middle: given.get(1..).unwrap_or(&[]).join(" "),
    }
}

/// Short HL7-style name of a well-known coding system URI.
pub(crate) fn system_name(uri: &str) -> String {
    match uri {
        "http://loinc.org" => "LN",
        "http://snomed.info/sct" => "SCT",
        "http://unitsofmeasure.org" => "UCUM",
        other => other,
    }
    .to_string()
}

/// A CodeableConcept as a code (see the module docs).
pub(crate) fn code(cc: &CodeableConcept) -> Code {
    let text = pv!(cc.text).unwrap_or("");
    match cc.coding.iter().find(|c| pv!(c.code).is_some()) {
        Some(c) => Code {
            code: pv!(c.code).unwrap_or("").to_string(),
            text: pv!(c.display).unwrap_or(text).to_string(),
            system: system_name(pv!(c.system).unwrap_or("")),
        },
        None => Code {
            code: String::new(),
            text: text.to_string(),
            system: String::new(),
        },
    }
}

/// Annotation texts.
pub(crate) fn notes(n: &[Annotation]) -> impl Iterator<Item = String> + '_ {
    n.iter()
        .filter_map(|a| a.text.value.as_deref())
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
}

/// FHIR request priority (`routine`, `urgent`, `asap`, `stat`); ASAP is
/// `Urgent`, as HL7 `A`.
pub(crate) fn request_priority(code: Option<&str>) -> Priority {
    match code {
        Some("stat") => Priority::Stat,
        Some("asap" | "urgent") => Priority::Urgent,
        Some("routine") => Priority::Routine,
        _ => Priority::Unspecified,
    }
}

/// The resource's events; see [`super::events`].
pub(crate) fn events(
    resource: &Resource,
    bundle: Option<&BundleContext<'_>>,
    ctx: &FhirContext<'_>,
) -> Result<Vec<ClinicalEvent>, FhirError> {
    let contained: &[R4] = match &resource.r4 {
        R4::Observation(r) => &r.contained,
        R4::DiagnosticReport(r) => &r.contained,
        R4::ServiceRequest(r) => &r.contained,
        R4::Encounter(r) => &r.contained,
        R4::Flag(r) => &r.contained,
        R4::DetectedIssue(r) => &r.contained,
        R4::Communication(r) => &r.contained,
        R4::CommunicationRequest(r) => &r.contained,
        _ => {
            return Err(FhirError::new(
                404,
                IssueType::NotSupported,
                "resource type is not supported here",
            ));
        }
    };
    // A shorter-lived view of the bundle context fits `Cx<'_>`.
    let cx = Cx {
        ctx,
        bundle,
        resource,
        contained,
    };
    let mut out = match &resource.r4 {
        R4::Observation(o) => vec![result::observation_event(&cx, o)?],
        R4::DiagnosticReport(d) => vec![result::report_event(&cx, d)?],
        R4::ServiceRequest(s) => vec![order::event(&cx, s)?],
        R4::Encounter(e) => vec![encounter::event(&cx, e)?],
        R4::Flag(f) => vec![alert::flag(&cx, f)?],
        R4::DetectedIssue(d) => vec![alert::detected_issue(&cx, d)?],
        R4::Communication(c) => vec![alert::communication(&cx, c)?],
        R4::CommunicationRequest(c) => vec![alert::communication_request(&cx, c)?],
        _ => Vec::new(),
    };
    for (i, ev) in out.iter_mut().enumerate() {
        ev.source.index = u32::try_from(i).unwrap_or(u32::MAX);
    }
    Ok(out)
}
