//! Redaction: what of an alert may leave the gateway, per backend.
//!
//! Every backend has a **PHI profile** ([`Profile`]): the fields of the
//! catalogue ([`Field`]) it may carry. The catalogue has direct identifiers
//! ([`Field::is_identifier`]: name, MRN and other ids, birth date, visit and
//! order numbers) and clinical context (facility, unit, room, bed, event
//! class, test, value, units, flag, reference range, result status, all
//! results, event priority, ordering provider, alarm kind, scrubbed notes;
//! and sex, demographic). Shipped profiles ([`builtin`]):
//!
//! | profile | carries | channel |
//! | --- | --- | --- |
//! | `clinician-secure` | name, MRN, birth date, sex, location, clinical context, scrubbed notes | end-to-end encrypted only |
//! | `limited` (default, [`DEFAULT_PROFILE`]) | location and clinical context; no identifier, no notes | any (role rooms, pagers, lock screens) |
//! | `none` | nothing: alert id, priority and a notice to open the secure app | any |
//!
//! A configured profile is built with [`Profile::custom`]. The alert
//! envelope (id, rule, alert priority, reason, late, preview line) is not a
//! field: every profile carries it (the rule name is blank under a profile
//! with no clinical content).
//!
//! # API
//!
//! ```text
//! builtin(name) -> Option<Profile>                    clinician-secure, limited, none
//! Profile::custom(name, &[field names]) -> Result<Profile, String>
//! check_backend(&Profile, end_to_end) -> Result<(), String>
//! redact(&Alert, Reason, &Profile) -> Redacted<AlertView>
//! compile(name, source, &Profile) -> Result<Template, TemplateError>
//! Template::render(&Redacted<AlertView>) -> Result<String, TemplateError>
//! Template::fields_sent(&Redacted<AlertView>) -> Vec<Field>
//! scrub(text, &ClinicalEvent) -> String               (Scrubber::new(ev).scrub(text))
//! ```
//!
//! Delivery sends a [`Redacted<AlertView>`]: the view's `values` (the
//! profile's fields the event has, by [`Field::name`]), its `preview` line,
//! and/or a template's rendering of it; `fields_sent` (or
//! [`Template::fields_sent`] when only the text leaves) is the list the
//! audit trail records.
//!
//! # Guarantees
//!
//! - **Only redaction makes a [`Redacted`].** Its field is private and it
//!   has no constructor outside this module (nor `Default`, `Deserialize`,
//!   or mutable access): holding one proves it came from [`redact`].
//! - **A view carries only its profile's fields.** [`redact`] reads only the
//!   fields the profile allows; everything else of the event stays behind.
//! - **Every non-identifier value is scrubbed** ([`scrub`]): the patient's
//!   identifiers the message itself carries (each name component and its
//!   tokens of 2 characters or more, whole word, case-insensitive; every
//!   identifier value, merged identifier and the visit number; the birth
//!   date as `YYYYMMDD`, `YYYY-MM-DD`, `MM/DD/YYYY`, `M/D/YY`, `DD.MM.YYYY`,
//!   `Jan 1, 1970`, `01-Jan-1970`, ...) are replaced by [`MARKER`], then
//!   labelled identifiers (`MRN: …`, `DOB …`), emails, SSN-, phone- and
//!   MRN-like strings. Notes and free-text observation values (`ST`, `TX`,
//!   `FT`) are scrubbed like all text; a plain number (`NM`) is only checked
//!   against the patient's identifiers, and so is a reference range (both
//!   look like phone numbers). Identifier fields go out as they are, and
//!   only under a profile that allows them.
//! - **The preview line never holds an identifier**, under any profile: it
//!   is made of the alert priority and non-identifier fields the profile
//!   allows (event class, a critical flag, unit, room, bed), already
//!   scrubbed.
//! - **Templates cannot reach past their profile.** [`compile`] refuses a
//!   template that reads any variable outside the envelope and the profile's
//!   fields (MiniJinja's static analysis, all branches), naming each; at
//!   render time the template sees only the variables it uses, and a view
//!   of a narrower profile is refused. No includes, imports or macros.
//! - **Identifiers travel only end-to-end encrypted.** [`check_backend`]
//!   refuses `clinician-secure` — and any profile with an identifier — on a
//!   channel that is not end-to-end encrypted.
//! - **No PHI in errors or `Debug` of the machinery.** Errors name
//!   templates, profiles, fields and variables, never a value; a
//!   [`Scrubber`]'s `Debug` shows no term; a render error reports its kind,
//!   not its details.
//!
//! # Known gaps
//!
//! The event model has no patient address, phone, email, next of kin (NK1)
//! or FHIR `Patient.telecom`/`address`: those cannot be matched exactly and
//! are only caught by the pattern rules (phones, emails); a next of kin's
//! name in a note is not removed. This is why `limited` carries no notes.

mod fields;
mod profile;
mod scrub;
mod template;
mod view;

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod tests;

pub use fields::Field;
pub use profile::{
    BUILTIN, CLINICIAN_SECURE, DEFAULT_PROFILE, LIMITED, NONE, Profile, builtin, check_backend,
};
pub use scrub::{MARKER, Scrubber, scrub};
pub use template::{ENVELOPE, Template, TemplateError, compile};
pub use view::{AlertView, OPEN_SECURE_APP, PREVIEW_MAX_CHARS, redact};

/// A value that went through redaction. Only this module makes one (the
/// field is private); [`Redacted::get`] reads it.
///
/// ```compile_fail
/// // Outside `redact`, nothing can wrap a value as redacted:
/// let _ = switchboard::redact::Redacted(1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// The redacted value.
    pub fn get(&self) -> &T {
        &self.0
    }
}
