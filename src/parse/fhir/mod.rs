//! FHIR R4 JSON -> [`ClinicalEvent`]s, with FHIR-style errors.
//!
//! Inputs: request bodies (bytes). Outputs: validated [`Resource`]s,
//! [`Bundle`]s and [`Notification`]s, their events, and [`FhirError`]s that
//! become OperationOutcome bodies ([`operation_outcome`]). The HTTP layer
//! (content type, size limit, authentication, journal) is not here.
//!
//! Stages, each usable on its own:
//! 1. [`parse_resource`] (one resource for `POST /fhir/{type}`),
//!    [`parse_bundle`] (`POST /fhir`, `$process-message`) or
//!    [`parse_notification`] (subscription notifications, R4 backport / R4B /
//!    R5): bytes -> UTF-8 -> JSON (depth-limited) -> checks -> fhirbolt R4
//!    (strict). See [`resource`] for the order of checks and the status and
//!    issue code each failure gets.
//! 2. [`events`]: one resource (with the Bundle it came in, for references)
//!    -> events. Mapping rules per type are in [`map`] and its children. Call
//!    it before journaling: its only errors are malformed dates (422 `value`).
//!
//! | resource | kind |
//! | --- | --- |
//! | Observation, DiagnosticReport | `Result` |
//! | ServiceRequest | `Order` |
//! | Encounter | `Admit` / `Register` / `Transfer` / `Discharge` / `CancelAdmit` / `Update` from its state |
//! | Flag, DetectedIssue | `Alarm` |
//! | Communication, CommunicationRequest | `Communication` |
//!
//! Invariants: no error produced here carries request content (the
//! diagnostics text is static; expressions are built from specification
//! names and indexes), and no input makes any stage panic or overflow the
//! stack (JSON deeper than [`MAX_DEPTH`] is refused before fhirbolt sees
//! it; serde_json itself stops at 128).
//!
//! fhirbolt-serde enables serde_json's `arbitrary_precision` and
//! `preserve_order` features for the whole build: `serde_json::Value`
//! numbers keep their text and maps keep insertion order.

mod bundle;
mod error;
pub mod map;
mod notification;
pub mod resource;
mod time;
pub mod xml;

#[cfg(test)]
mod tests;

pub use bundle::{Bundle, BundleContext, Entry, EntryRequest, parse_bundle};
pub use error::{FhirError, IssueType, information_outcome, operation_outcome};
pub use notification::{
    FhirVersionShape, Included, Notification, NotificationEvent, NotificationType,
    parse_notification,
};
pub use resource::{MAX_DEPTH, Resource, parse_resource};
pub use xml::{XmlRelease, xml_to_json};

use crate::event::ClinicalEvent;

/// The resource types accepted by `POST /fhir/{type}`.
pub const SUPPORTED_TYPES: &[&str] = &[
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Encounter",
    "Flag",
    "DetectedIssue",
    "Communication",
    "CommunicationRequest",
];

/// True for a type `POST /fhir/{type}` accepts and [`events`] maps.
pub fn supported_type(t: &str) -> bool {
    SUPPORTED_TYPES.contains(&t)
}

/// Per-request context.
#[derive(Clone, Copy, Debug)]
pub struct FhirContext<'a> {
    /// The configured FHIR client's name (goes into `SourceRef::sender`).
    pub source: &'a str,
    /// Time zone for dates and times without an offset.
    pub timezone: chrono_tz::Tz,
}

/// One resource into events (none for types that are not supported, such
/// as a Patient entry of a Bundle). `bundle`: the Bundle or notification it
/// came in, to resolve references (subject Patient, result Observations,
/// Locations, Practitioners).
pub fn events(
    resource: &Resource,
    bundle: Option<&BundleContext<'_>>,
    ctx: &FhirContext<'_>,
) -> Result<Vec<ClinicalEvent>, FhirError> {
    if !supported_type(&resource.type_name) {
        return Ok(Vec::new());
    }
    map::events(resource, bundle, ctx)
}
