//! PHI profiles: which fields a backend may carry, and on which channels.

use std::collections::BTreeSet;

use super::fields::Field;

/// `clinician-secure`: two patient identifiers plus clinical context, for
/// authenticated, end-to-end encrypted channels to named clinicians.
pub const CLINICIAN_SECURE: &str = "clinician-secure";
/// `limited`: location and clinical context, no direct identifier.
pub const LIMITED: &str = "limited";
/// `none`: a notice to open the secure app, nothing clinical.
pub const NONE: &str = "none";
/// The profile of a backend that names none.
pub const DEFAULT_PROFILE: &str = LIMITED;
/// The shipped profiles' names.
pub const BUILTIN: [&str; 3] = [CLINICIAN_SECURE, LIMITED, NONE];

/// A PHI profile: the fields a backend may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Name (`clinician-secure`, `limited`, `none`, or a configured one).
    pub name: String,
    /// The fields allowed to leave. The envelope (alert id, rule, alert
    /// priority, reason, late, preview line) is not a field: every profile
    /// carries it.
    pub fields: BTreeSet<Field>,
    /// The channel must be end-to-end encrypted ([`check_backend`]).
    pub requires_e2e: bool,
}

impl Profile {
    /// True when `f` may leave under this profile.
    pub fn allows(&self, f: Field) -> bool {
        self.fields.contains(&f)
    }

    /// True when the profile allows a direct identifier.
    pub fn has_identifiers(&self) -> bool {
        self.fields.iter().any(|f| f.is_identifier())
    }

    /// True when the profile allows any clinical content (a field that is
    /// not a direct identifier). `none` allows none.
    pub fn has_clinical_content(&self) -> bool {
        self.fields.iter().any(|f| !f.is_identifier())
    }

    /// A configured profile over the catalogue: `fields` are
    /// [`Field::name`]s, or the groups `location` ([`Field::LOCATION`]) and
    /// `clinical` ([`Field::CLINICAL`]). A profile that allows a direct
    /// identifier requires an end-to-end encrypted channel. Refuses a shipped
    /// profile's name and an unknown field, naming it.
    pub fn custom<S: AsRef<str>>(name: &str, fields: &[S]) -> Result<Profile, String> {
        if BUILTIN.contains(&name) {
            return Err(format!(
                "profile `{name}` is a shipped profile and cannot be redefined"
            ));
        }
        let mut set = BTreeSet::new();
        for f in fields {
            match f.as_ref() {
                "location" => set.extend(Field::LOCATION),
                "clinical" => set.extend(Field::CLINICAL),
                other => match Field::parse(other) {
                    Some(field) => {
                        set.insert(field);
                    }
                    None => {
                        return Err(format!(
                            "unknown field `{other}` (known: {}, or the groups `location`, `clinical`)",
                            Field::ALL.map(Field::name).join(", ")
                        ));
                    }
                },
            }
        }
        let requires_e2e = set.iter().any(|f| f.is_identifier());
        Ok(Profile {
            name: name.to_string(),
            fields: set,
            requires_e2e,
        })
    }
}

/// A shipped profile by name: `clinician-secure`, `limited`, `none`.
///
/// - `clinician-secure`: name, MRN, birth date and sex (two identifiers or
///   more: name + MRN, name + birth date), location, clinical context and
///   scrubbed notes; requires an end-to-end encrypted channel.
/// - `limited`: location and clinical context; no direct identifier and no
///   free-text notes (a scrubber cannot know every name a note may hold:
///   next of kin, visitors).
/// - `none`: no field at all — the view carries the alert id, the alert
///   priority and a fixed notice to open the secure app.
pub fn builtin(name: &str) -> Option<Profile> {
    let (fields, requires_e2e): (Vec<Field>, bool) = match name {
        CLINICIAN_SECURE => {
            let mut f = vec![
                Field::PatientName,
                Field::PatientId,
                Field::BirthDate,
                Field::Sex,
                Field::Notes,
            ];
            f.extend(Field::LOCATION);
            f.extend(Field::CLINICAL);
            (f, true)
        }
        LIMITED => {
            let mut f = Vec::from(Field::LOCATION);
            f.extend(Field::CLINICAL);
            (f, false)
        }
        NONE => (Vec::new(), false),
        _ => return None,
    };
    Some(Profile {
        name: name.to_string(),
        fields: fields.into_iter().collect(),
        requires_e2e,
    })
}

/// Whether a backend may use `profile`: a profile that requires end-to-end
/// encryption, or allows any direct identifier, is refused on a channel
/// that is not end-to-end encrypted.
pub fn check_backend(profile: &Profile, end_to_end: bool) -> Result<(), String> {
    if end_to_end {
        return Ok(());
    }
    if profile.requires_e2e {
        return Err(format!(
            "profile `{}` requires an end-to-end encrypted channel; this backend is not one",
            profile.name
        ));
    }
    let ids: Vec<&str> = profile
        .fields
        .iter()
        .filter(|f| f.is_identifier())
        .map(|f| f.name())
        .collect();
    if !ids.is_empty() {
        return Err(format!(
            "profile `{}` allows direct identifiers ({}), which only an end-to-end encrypted channel may carry",
            profile.name,
            ids.join(", ")
        ));
    }
    Ok(())
}
