//! The patient census: who is where, under whose care, kept from ADT.
//!
//! Input: [`ClinicalEvent`]s of the ADT family (A01 A02 A03 A04 A06 A07 A08
//! A11 A12 A13 A17 A40), applied **in journal order** by [`Census::apply`];
//! nurse assignments through [`Census::assign`]. Output: per patient its
//! [`PatientState`] (encounter status, class, location, prior location,
//! care team), the bed index ([`Census::occupant`]) and care-team relations
//! resolved to roster members ([`Census::relation_members`]).
//!
//! **The census is derived state: replaying the journal's events in id order
//! rebuilds it** ([`Census::from_events`]). A serde snapshot
//! ([`CensusSnapshot`], also `Census`'s own serde form) only saves the replay;
//! nurse assignments are not ADT events and are kept only in the snapshot.
//!
//! # Identity
//!
//! A patient is keyed by ([`PatientKey`]) assigning authority and identifier
//! value (both trimmed, compared exactly: the same value under two
//! authorities is two patients). A record carries every identifier it was
//! seen with; each one finds it. An event whose identifiers find two records
//! is applied to the first and reported ([`Warning::IdentityConflict`]); an
//! A40 merge folds the prior identifiers' records into the survivor, and the
//! old identifiers then find the survivor.
//!
//! # Beds
//!
//! A bed is (facility, unit, room, bed) ([`Bed`]); locations without a bed
//! (a unit, an ED room) are recorded but not indexed. The same names in two
//! facilities are two beds. One patient per bed: when an admit, transfer,
//! registration or update puts a patient in a bed the index holds for someone
//! else, the newcomer takes it (the newer message wins) and the previous
//! occupant is marked [`PatientState::displaced`]; a cancel (A12, A13)
//! restores and never evicts, so there the occupant keeps the bed and the
//! returning patient is displaced. Both are reported as
//! [`Warning::BedOccupied`].
//!
//! # Semantics (per event kind)
//!
//! | event | effect |
//! | --- | --- |
//! | A01 admit | status inpatient, class (default `I`), location, visit, care team replaced; prior cleared; admit of an inpatient is reported and applied |
//! | A04 register | status registered, as A01 otherwise |
//! | A06 outpatient → inpatient | status inpatient (class default `I`); location if given (prior = old) |
//! | A07 inpatient → outpatient | status outpatient (class default `O`); location if given (prior = old) |
//! | A02 transfer | location = new, prior = old; unknown patient: created (inpatient) and reported; discharged / cancelled patient: reported, not moved |
//! | A03 discharge | status discharged, bed freed, prior = last location; twice: reported, no change |
//! | A08 update | location (if given; no prior change), class, visit, care team roles named; unknown patient: created (status unknown) and reported; not moved when discharged or cancelled |
//! | A11 cancel admit | status not-admitted, location, class, visit and care team cleared, bed freed |
//! | A12 cancel transfer | back to PV1-3 (the pre-transfer location), else the census's prior location; prior cleared |
//! | A13 cancel discharge | status and location before the discharge (PV1-3 if given); the bed back if free, else a conflict |
//! | A17 bed swap | two events, one per patient, applied in order; see below |
//! | A40 merge | prior identifiers' records folded into the survivor (see below) |
//! | others (results, orders, alarms, communications) | ignored |
//!
//! Providers: PV1-7/8/9/17 and ROL entries (with their ROL-3 role code) are
//! kept by id only (names are never stored). A01/A04 replace the care team;
//! other events replace, per role (and per role code for ROL), the roles
//! they name. Ordering providers are per order and not kept.
//!
//! Events that are not production (MSH-11 `T`/`D`) are ignored: a training
//! discharge must not empty a real bed.
//!
//! **A17.** Each event's PV1-3 is the patient's new location: the first
//! event moves its patient into the bed and the bed's occupant into the
//! first patient's old location — the swap is complete after the first event
//! and the second (the other patient, already there) confirms it. Senders
//! that put each patient's *current* location in PV1-3 are handled too: the
//! first event then names where the patient already is and is held until the
//! second event of the same message, when the two patients' locations are
//! exchanged. A held half that is not followed by its pair is reported
//! ([`Warning::IncompleteSwap`]) and changes nothing.
//!
//! **A40.** The survivor (PID-3) is found or, when only a prior identifier
//! (MRG-1) is known, the prior record becomes the survivor. Each other prior
//! record is folded in: identifiers added, care team merged (survivor's
//! first), status and location taken from the prior record when the survivor
//! has no active encounter (the location alone when it has one but no
//! location); when both have a location, the survivor keeps its own and the
//! other's bed is freed ([`Warning::MergeBedConflict`]). Prior identifiers
//! nobody knew become aliases of the survivor. Nurse assignments to a prior
//! identifier follow the survivor.
//!
//! # Privacy
//!
//! Names, birth dates and sex are never stored. [`Warning`]s and
//! [`CensusError`]s carry identifiers, beds and kinds only.

mod apply;
mod ops;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{ClinicalEvent, EventKind, Identifier, Location, ProviderRole};
use crate::roster::Rosters;
use crate::rules::Relation;

pub use ops::CensusOp;

/// A patient identifier: (assigning authority, value), both trimmed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PatientKey {
    /// CX.4.1 assigning authority (may be empty).
    pub authority: String,
    /// CX.1 identifier value.
    pub value: String,
}

impl PatientKey {
    /// A key from an authority and a value (trimmed).
    pub fn new(authority: &str, value: &str) -> Self {
        PatientKey {
            authority: authority.trim().to_string(),
            value: value.trim().to_string(),
        }
    }

    /// The key of an event identifier; `None` when the value is empty.
    pub fn of(id: &Identifier) -> Option<Self> {
        let k = PatientKey::new(&id.authority, &id.value);
        (!k.value.is_empty()).then_some(k)
    }
}

impl fmt::Display for PatientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}^^^{}", self.value, self.authority)
    }
}

/// A bed: facility (PL.4), unit (PL.1), room (PL.2), bed (PL.3), trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bed {
    /// PL.4 facility.
    pub facility: String,
    /// PL.1 point of care.
    pub unit: String,
    /// PL.2 room.
    pub room: String,
    /// PL.3 bed.
    pub bed: String,
}

impl Bed {
    /// A bed from its parts (trimmed).
    pub fn new(facility: &str, unit: &str, room: &str, bed: &str) -> Self {
        Bed {
            facility: facility.trim().to_string(),
            unit: unit.trim().to_string(),
            room: room.trim().to_string(),
            bed: bed.trim().to_string(),
        }
    }

    /// The bed of a location; `None` when PL.3 is empty.
    pub fn of(loc: &Location) -> Option<Self> {
        let b = Bed::new(&loc.facility, &loc.unit, &loc.room, &loc.bed);
        (!b.bed.is_empty()).then_some(b)
    }
}

impl fmt::Display for Bed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.facility, self.unit, self.room, self.bed
        )
    }
}

/// A location trimmed; `None` when every part is empty.
pub(crate) fn norm_location(loc: Option<&Location>) -> Option<Location> {
    let l = loc?;
    let out = Location {
        facility: l.facility.trim().to_string(),
        unit: l.unit.trim().to_string(),
        room: l.room.trim().to_string(),
        bed: l.bed.trim().to_string(),
    };
    let empty =
        out.facility.is_empty() && out.unit.is_empty() && out.room.is_empty() && out.bed.is_empty();
    (!empty).then_some(out)
}

/// Where a patient's encounter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncounterStatus {
    /// Known only from an update, transfer-less swap or merge: no admit or
    /// registration seen (typical just after the census starts on a live feed).
    Unknown,
    /// A04: registered (outpatient, emergency, pre-admitted).
    Registered,
    /// A01 / A06: admitted inpatient.
    Inpatient,
    /// A07: changed to outpatient.
    Outpatient,
    /// A03: discharged.
    Discharged,
    /// A11: the admit or registration was cancelled.
    NotAdmitted,
}

impl EncounterStatus {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EncounterStatus::Unknown => "unknown",
            EncounterStatus::Registered => "registered",
            EncounterStatus::Inpatient => "inpatient",
            EncounterStatus::Outpatient => "outpatient",
            EncounterStatus::Discharged => "discharged",
            EncounterStatus::NotAdmitted => "not-admitted",
        }
    }

    /// True while the patient has a current encounter (may be moved).
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            EncounterStatus::Discharged | EncounterStatus::NotAdmitted
        )
    }
}

/// A provider of a patient's care team, by id only (never by name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    /// Why the provider is named (PV1-7/8/9/17 or ROL).
    pub role: ProviderRole,
    /// ROL-3 role code for `CareTeam` entries, else empty.
    pub role_code: String,
    /// XCN.1 with authority (XCN.9) and type (XCN.13).
    pub id: Identifier,
}

/// What a patient had before a discharge, for A13.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Status before the discharge.
    pub status: EncounterStatus,
    /// Location before the discharge.
    pub location: Option<Location>,
    /// Prior location before the discharge.
    pub prior_location: Option<Location>,
}

/// One patient's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientState {
    /// Every identifier of the patient; the first is its primary key (the
    /// first identifier it was seen with, or the A40 survivor's).
    pub identifiers: Vec<PatientKey>,
    /// Encounter status.
    pub status: EncounterStatus,
    /// PV1-2 patient class as last given (`I`, `O`, `E`, ...).
    pub patient_class: String,
    /// Current location (none when discharged, cancelled or never given).
    pub location: Option<Location>,
    /// True when `location` names a bed the index gives to another patient
    /// (a bed conflict was reported; the feed has to settle it).
    pub displaced: bool,
    /// Prior location (PV1-6 semantics: where the patient was before the
    /// last move).
    pub prior_location: Option<Location>,
    /// PV1-19 visit number.
    pub visit: Option<Identifier>,
    /// Care team: PV1 providers and ROL entries.
    pub care_team: Vec<ProviderRef>,
    /// What an A13 restores.
    pub before_discharge: Option<Resume>,
    /// `occurred_at` of the last event applied to the patient.
    pub updated_at: Option<DateTime<Utc>>,
}

impl PatientState {
    /// The primary key.
    pub fn key(&self) -> &PatientKey {
        &self.identifiers[0]
    }

    /// The bed the patient is in (not displaced, location with a bed).
    pub fn bed(&self) -> Option<Bed> {
        if self.displaced {
            return None;
        }
        self.location.as_ref().and_then(Bed::of)
    }

    fn new(keys: Vec<PatientKey>) -> Self {
        PatientState {
            identifiers: keys,
            status: EncounterStatus::Unknown,
            patient_class: String::new(),
            location: None,
            displaced: false,
            prior_location: None,
            visit: None,
            care_team: Vec::new(),
            before_discharge: None,
            updated_at: None,
        }
    }
}

/// What a nurse assignment covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssignTarget {
    /// Whoever is in the bed.
    Bed(Bed),
    /// The patient (any of their identifiers; follows merges).
    Patient(PatientKey),
}

/// A nurse-to-bed or nurse-to-patient assignment over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Roster member id.
    pub member: String,
    /// Bed or patient.
    pub target: AssignTarget,
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

/// The first half of an A17 pair, waiting for the second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSwap {
    /// Sender of the A17 message.
    pub sender: String,
    /// MSH-10 of the A17 message.
    pub control_id: String,
    /// The first half's patient.
    pub patient: PatientKey,
    /// True when the first half already swapped (PV1-3 = new location).
    pub executed: bool,
}

/// Why an event left the census untouched on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ignored {
    /// Not an ADT event (result, order, alarm, communication).
    NotAdt,
    /// MSH-11 `T` or `D`.
    NotProduction,
}

/// How a bed conflict was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BedResolution {
    /// The incoming patient took the bed; the occupant is displaced.
    IncomingTookBed,
    /// The occupant kept the bed; the incoming patient is displaced.
    OccupantKept,
}

/// Something inconsistent or out of order in the feed, applied as far as
/// safe. Carries identifiers, beds and kinds only — never names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "warning")]
pub enum Warning {
    /// The event has no patient identifier; ignored.
    NoIdentifier {
        /// Event kind.
        kind: EventKind,
    },
    /// The patient was not in the census.
    UnknownPatient {
        /// Event kind.
        kind: EventKind,
        /// The event's first identifier.
        patient: PatientKey,
        /// Whether a record was created for it.
        created: bool,
    },
    /// The event's identifiers find two different records.
    IdentityConflict {
        /// The record the event was applied to.
        patient: PatientKey,
        /// The identifier belonging to another record (left there).
        other: PatientKey,
    },
    /// The event needs a location and has none.
    NoLocation {
        /// Event kind.
        kind: EventKind,
        /// The patient.
        patient: PatientKey,
    },
    /// A move of a patient without a current encounter; not moved.
    NotActive {
        /// Event kind.
        kind: EventKind,
        /// The patient.
        patient: PatientKey,
        /// The patient's status.
        status: EncounterStatus,
    },
    /// An admit or registration of a patient already admitted (applied).
    AlreadyAdmitted {
        /// Event kind.
        kind: EventKind,
        /// The patient.
        patient: PatientKey,
    },
    /// A discharge of a discharged patient; no change.
    AlreadyDischarged {
        /// The patient.
        patient: PatientKey,
    },
    /// A cancel with nothing to cancel; no change.
    NothingToCancel {
        /// Event kind.
        kind: EventKind,
        /// The patient.
        patient: PatientKey,
        /// The patient's status.
        status: EncounterStatus,
    },
    /// A bed the index gave to another patient.
    BedOccupied {
        /// The bed.
        bed: Bed,
        /// Who was in it.
        occupant: PatientKey,
        /// Who the event put in it.
        incoming: PatientKey,
        /// Who has it now.
        resolution: BedResolution,
    },
    /// The first half of an A17 (naming the patient's current location) was
    /// not followed by its pair; nothing swapped. Reported in the outcome of
    /// the event that ended the wait.
    IncompleteSwap {
        /// The first half's patient.
        patient: PatientKey,
    },
    /// Both merged records were in beds: the survivor keeps its own, the
    /// merged record's bed is freed.
    MergeBedConflict {
        /// The survivor.
        survivor: PatientKey,
        /// The merged record's primary key.
        merged: PatientKey,
        /// The bed freed.
        freed: Bed,
    },
}

impl Warning {
    /// The warning's kind (its serde tag), safe to log: no identifier.
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::NoIdentifier { .. } => "no-identifier",
            Warning::UnknownPatient { .. } => "unknown-patient",
            Warning::IdentityConflict { .. } => "identity-conflict",
            Warning::NoLocation { .. } => "no-location",
            Warning::NotActive { .. } => "not-active",
            Warning::AlreadyAdmitted { .. } => "already-admitted",
            Warning::AlreadyDischarged { .. } => "already-discharged",
            Warning::NothingToCancel { .. } => "nothing-to-cancel",
            Warning::BedOccupied { .. } => "bed-occupied",
            Warning::IncompleteSwap { .. } => "incomplete-swap",
            Warning::MergeBedConflict { .. } => "merge-bed-conflict",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoIdentifier { kind } => {
                write!(f, "{}: no patient identifier; ignored", kind.as_str())
            }
            Warning::UnknownPatient {
                kind,
                patient,
                created,
            } => write!(
                f,
                "{}: patient {patient} not in the census{}",
                kind.as_str(),
                if *created { "; created" } else { "; ignored" }
            ),
            Warning::IdentityConflict { patient, other } => write!(
                f,
                "identifiers of patient {patient} include {other}, which belongs to another record"
            ),
            Warning::NoLocation { kind, patient } => {
                write!(f, "{}: patient {patient}: no location", kind.as_str())
            }
            Warning::NotActive {
                kind,
                patient,
                status,
            } => write!(
                f,
                "{}: patient {patient} is {}; not moved",
                kind.as_str(),
                status.as_str()
            ),
            Warning::AlreadyAdmitted { kind, patient } => {
                write!(f, "{}: patient {patient} already admitted", kind.as_str())
            }
            Warning::AlreadyDischarged { patient } => {
                write!(f, "discharge: patient {patient} already discharged")
            }
            Warning::NothingToCancel {
                kind,
                patient,
                status,
            } => write!(
                f,
                "{}: patient {patient} ({}): nothing to cancel",
                kind.as_str(),
                status.as_str()
            ),
            Warning::BedOccupied {
                bed,
                occupant,
                incoming,
                resolution,
            } => write!(
                f,
                "bed {bed} held by patient {occupant} when patient {incoming} came in; {}",
                match resolution {
                    BedResolution::IncomingTookBed => "incoming took the bed",
                    BedResolution::OccupantKept => "occupant kept the bed",
                }
            ),
            Warning::IncompleteSwap { patient } => {
                write!(
                    f,
                    "bed-swap: patient {patient}: pair never arrived; nothing swapped"
                )
            }
            Warning::MergeBedConflict {
                survivor,
                merged,
                freed,
            } => write!(
                f,
                "merge: {merged} into {survivor}: both in beds; bed {freed} freed"
            ),
        }
    }
}

/// The outcome of [`Census::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The primary key of the patient the event was applied to.
    pub patient: Option<PatientKey>,
    /// Set when the event was ignored on purpose.
    pub ignored: Option<Ignored>,
    /// What was inconsistent, in order.
    pub warnings: Vec<Warning>,
}

/// A refused assignment or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CensusError {
    /// `to` is not after `from`.
    #[error("assignment of member `{member}`: end is not after start")]
    EmptyInterval {
        /// Member id.
        member: String,
    },
    /// An empty member id or patient identifier, or a bed without PL.3.
    #[error("assignment: empty member id, patient identifier or bed")]
    EmptyTarget,
    /// A snapshot where one identifier names two patients.
    #[error("snapshot: identifier {0} belongs to two patients")]
    DuplicateIdentifier(PatientKey),
    /// A snapshot where one bed holds two patients.
    #[error("snapshot: bed {0} holds two patients")]
    DuplicateBed(Bed),
    /// A snapshot with a patient without identifiers.
    #[error("snapshot: a patient has no identifier")]
    NoIdentifier,
    /// A snapshot of another format version.
    #[error("snapshot: unsupported version {0}")]
    Version(u32),
}

/// The serialisable form of a [`Census`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CensusSnapshot {
    /// Format version ([`CensusSnapshot::VERSION`]).
    pub version: u32,
    /// Every patient, in creation order.
    pub patients: Vec<PatientState>,
    /// Nurse assignments.
    pub assignments: Vec<Assignment>,
    /// A held A17 half.
    pub pending_swap: Option<PendingSwap>,
}

impl CensusSnapshot {
    /// The current format version.
    pub const VERSION: u32 = 1;
}

/// The current census. See the module documentation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(into = "CensusSnapshot", try_from = "CensusSnapshot")]
pub struct Census {
    records: BTreeMap<u64, PatientState>,
    ids: BTreeMap<PatientKey, u64>,
    beds: BTreeMap<Bed, u64>,
    assignments: Vec<Assignment>,
    pending_swap: Option<PendingSwap>,
    next_record: u64,
    /// ROL-3 codes whose providers count as the assigned nurse (configuration,
    /// not state: not in the snapshot).
    nurse_role_codes: Vec<String>,
}

impl PartialEq for Census {
    /// Same patients (in order), assignments and held swap.
    fn eq(&self, other: &Self) -> bool {
        self.records.values().eq(other.records.values())
            && self.assignments == other.assignments
            && self.pending_swap == other.pending_swap
    }
}

impl From<Census> for CensusSnapshot {
    fn from(c: Census) -> Self {
        c.snapshot()
    }
}

impl TryFrom<CensusSnapshot> for Census {
    type Error = CensusError;
    fn try_from(s: CensusSnapshot) -> Result<Self, CensusError> {
        Census::from_snapshot(s)
    }
}

/// ROL-3 role codes (HL7 table 0443) that also name a PV1 relation.
fn rol_code(relation: Relation) -> Option<&'static str> {
    match relation {
        Relation::Attending => Some("AT"),
        Relation::Admitting => Some("AD"),
        Relation::Consulting => Some("CP"),
        Relation::Referring => Some("RP"),
        Relation::Ordering | Relation::AssignedNurse => None,
    }
}

fn pv1_role(relation: Relation) -> Option<ProviderRole> {
    match relation {
        Relation::Attending => Some(ProviderRole::Attending),
        Relation::Admitting => Some(ProviderRole::Admitting),
        Relation::Consulting => Some(ProviderRole::Consulting),
        Relation::Referring => Some(ProviderRole::Referring),
        Relation::Ordering => Some(ProviderRole::Ordering),
        Relation::AssignedNurse => None,
    }
}

impl Census {
    /// An empty census.
    pub fn new() -> Self {
        Census::default()
    }

    /// ROL-3 role codes whose care-team entries count as the patient's
    /// assigned nurse (sites that send nurse assignments in ROL).
    pub fn with_nurse_role_codes<I, S>(mut self, codes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nurse_role_codes = codes.into_iter().map(Into::into).collect();
        self
    }

    /// Replays events in order (the journal's events in id order).
    pub fn from_events<'a, I>(events: I) -> Self
    where
        I: IntoIterator<Item = &'a ClinicalEvent>,
    {
        let mut c = Census::new();
        c.apply_all(events);
        c
    }

    /// Applies events in order; returns every outcome.
    pub fn apply_all<'a, I>(&mut self, events: I) -> Vec<Applied>
    where
        I: IntoIterator<Item = &'a ClinicalEvent>,
    {
        events.into_iter().map(|e| self.apply(e)).collect()
    }

    /// The patient an identifier finds.
    pub fn patient(&self, authority: &str, id: &str) -> Option<&PatientState> {
        self.record_of(&PatientKey::new(authority, id))
            .and_then(|r| self.records.get(&r))
    }

    /// The patient a key finds.
    pub fn patient_by_key(&self, key: &PatientKey) -> Option<&PatientState> {
        self.record_of(key).and_then(|r| self.records.get(&r))
    }

    /// The patient named by an event (its first identifier the census knows).
    pub fn patient_of_event(&self, ev: &ClinicalEvent) -> Option<&PatientState> {
        ev.patient
            .identifiers
            .iter()
            .filter_map(PatientKey::of)
            .find_map(|k| self.patient_by_key(&k))
    }

    /// Every patient, in creation order.
    pub fn patients(&self) -> impl Iterator<Item = &PatientState> {
        self.records.values()
    }

    /// The primary key of the patient in a bed.
    pub fn occupant(&self, bed: &Bed) -> Option<PatientKey> {
        let r = self.beds.get(bed)?;
        self.records.get(r).map(|p| p.key().clone())
    }

    /// Every occupied bed with its patient, in bed order.
    pub fn beds(&self) -> impl Iterator<Item = (&Bed, &PatientKey)> {
        self.beds
            .iter()
            .filter_map(|(b, r)| self.records.get(r).map(|p| (b, p.key())))
    }

    /// The care team entries holding a relation: the PV1 role first, then
    /// ROL entries with the matching table 0443 code (`AT`, `AD`, `CP`, `RP`);
    /// for `AssignedNurse`, ROL entries with a configured nurse role code.
    /// `Ordering` is per order, never in the census: empty.
    pub fn care_team(&self, patient: &PatientKey, relation: Relation) -> Vec<ProviderRef> {
        let Some(p) = self.patient_by_key(patient) else {
            return Vec::new();
        };
        let mut out: Vec<ProviderRef> = Vec::new();
        if let Some(role) = pv1_role(relation) {
            out.extend(p.care_team.iter().filter(|c| c.role == role).cloned());
        }
        let codes: Vec<&str> = match relation {
            Relation::AssignedNurse => self.nurse_role_codes.iter().map(|s| s.as_str()).collect(),
            r => rol_code(r).into_iter().collect(),
        };
        for c in &p.care_team {
            if c.role == ProviderRole::CareTeam
                && codes.iter().any(|k| c.role_code.eq_ignore_ascii_case(k))
                && !out.contains(c)
            {
                out.push(c.clone());
            }
        }
        out
    }

    /// ROL care-team entries with a role code (case-insensitive).
    pub fn care_team_by_code(&self, patient: &PatientKey, code: &str) -> Vec<ProviderRef> {
        self.patient_by_key(patient)
            .map(|p| {
                p.care_team
                    .iter()
                    .filter(|c| {
                        c.role == ProviderRole::CareTeam && c.role_code.eq_ignore_ascii_case(code)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Roster member ids holding a relation for a patient at `at`, in order,
    /// without repeats. Providers resolve through
    /// [`Rosters::member_by_provider_id`]; `AssignedNurse` is the nurses
    /// assigned to the patient, then to the patient's bed, then ROL entries
    /// with a nurse role code.
    pub fn relation_members(
        &self,
        patient: &PatientKey,
        relation: Relation,
        rosters: &Rosters,
        at: DateTime<Utc>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if relation == Relation::AssignedNurse {
            let bed = self.patient_by_key(patient).and_then(|p| p.bed());
            push_unique(&mut out, self.assigned(Some(patient), bed.as_ref(), at));
        }
        push_unique(
            &mut out,
            resolve(rosters, self.care_team(patient, relation).iter()),
        );
        out
    }

    /// Roster member ids holding a relation for an event's patient: the
    /// census first; when it has nobody, the providers named on the event
    /// (always so for `Ordering`), and for `AssignedNurse` the nurses
    /// assigned to the event's bed when the patient is not in a bed.
    pub fn event_relation_members(
        &self,
        ev: &ClinicalEvent,
        relation: Relation,
        rosters: &Rosters,
        at: DateTime<Utc>,
    ) -> Vec<String> {
        let patient = self.patient_of_event(ev).map(|p| p.key().clone());
        let mut out = match &patient {
            Some(k) => self.relation_members(k, relation, rosters, at),
            None => Vec::new(),
        };
        if !out.is_empty() {
            return out;
        }
        match relation {
            Relation::AssignedNurse => {
                let bed = norm_location(ev.location.as_ref()).and_then(|l| Bed::of(&l));
                push_unique(&mut out, self.assigned(None, bed.as_ref(), at));
            }
            r => {
                if let Some(role) = pv1_role(r) {
                    let named = ev.providers.iter().filter(|p| p.role == role);
                    let refs: Vec<ProviderRef> = named
                        .map(|p| ProviderRef {
                            role: p.role,
                            role_code: p.role_code.clone(),
                            id: p.id.clone(),
                        })
                        .collect();
                    push_unique(&mut out, resolve(rosters, refs.iter()));
                }
            }
        }
        out
    }

    /// Assigns a nurse (roster member id) to a bed or a patient over
    /// `[from, to)`.
    pub fn assign(
        &mut self,
        member: &str,
        target: AssignTarget,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), CensusError> {
        let member = member.trim();
        let target = match target {
            AssignTarget::Bed(b) => {
                let b = Bed::new(&b.facility, &b.unit, &b.room, &b.bed);
                if b.bed.is_empty() {
                    return Err(CensusError::EmptyTarget);
                }
                AssignTarget::Bed(b)
            }
            AssignTarget::Patient(k) => {
                let k = PatientKey::new(&k.authority, &k.value);
                if k.value.is_empty() {
                    return Err(CensusError::EmptyTarget);
                }
                AssignTarget::Patient(k)
            }
        };
        if member.is_empty() {
            return Err(CensusError::EmptyTarget);
        }
        if to <= from {
            return Err(CensusError::EmptyInterval {
                member: member.to_string(),
            });
        }
        let a = Assignment {
            member: member.to_string(),
            target,
            from,
            to,
        };
        if !self.assignments.contains(&a) {
            self.assignments.push(a);
        }
        Ok(())
    }

    /// Removes a member's assignments to a target (all periods).
    pub fn unassign(&mut self, member: &str, target: &AssignTarget) -> usize {
        let before = self.assignments.len();
        self.assignments
            .retain(|a| !(a.member == member.trim() && &a.target == target));
        before - self.assignments.len()
    }

    /// Drops assignments that ended at or before `before`.
    pub fn prune_assignments(&mut self, before: DateTime<Utc>) {
        self.assignments.retain(|a| a.to > before);
    }

    /// Every assignment.
    pub fn assignments(&self) -> &[Assignment] {
        &self.assignments
    }

    /// Members assigned at `at` to the patient (any identifier of its record,
    /// so merges are followed), then to the bed.
    fn assigned(
        &self,
        patient: Option<&PatientKey>,
        bed: Option<&Bed>,
        at: DateTime<Utc>,
    ) -> Vec<String> {
        let record = patient.and_then(|k| self.record_of(k));
        let live = |a: &&Assignment| a.from <= at && at < a.to;
        let mut out: Vec<String> = Vec::new();
        for a in self.assignments.iter().filter(live) {
            if let AssignTarget::Patient(k) = &a.target {
                let same = match record {
                    Some(r) => self.record_of(k) == Some(r),
                    None => Some(k) == patient,
                };
                if same {
                    out.push(a.member.clone());
                }
            }
        }
        for a in self.assignments.iter().filter(live) {
            if let AssignTarget::Bed(b) = &a.target
                && Some(b) == bed
            {
                out.push(a.member.clone());
            }
        }
        out
    }

    /// The serialisable snapshot.
    pub fn snapshot(&self) -> CensusSnapshot {
        CensusSnapshot {
            version: CensusSnapshot::VERSION,
            patients: self.records.values().cloned().collect(),
            assignments: self.assignments.clone(),
            pending_swap: self.pending_swap.clone(),
        }
    }

    /// Rebuilds a census (and its indexes) from a snapshot, checking that no
    /// identifier or bed belongs to two patients.
    pub fn from_snapshot(s: CensusSnapshot) -> Result<Self, CensusError> {
        if s.version != CensusSnapshot::VERSION {
            return Err(CensusError::Version(s.version));
        }
        let mut c = Census {
            assignments: s.assignments,
            pending_swap: s.pending_swap,
            ..Census::default()
        };
        for p in s.patients {
            if p.identifiers.is_empty() {
                return Err(CensusError::NoIdentifier);
            }
            let r = c.next_record;
            c.next_record += 1;
            for k in &p.identifiers {
                if c.ids.insert(k.clone(), r).is_some() {
                    return Err(CensusError::DuplicateIdentifier(k.clone()));
                }
            }
            if let Some(b) = p.bed()
                && c.beds.insert(b.clone(), r).is_some()
            {
                return Err(CensusError::DuplicateBed(b));
            }
            c.records.insert(r, p);
        }
        Ok(c)
    }

    /// Checks the indexes against the records (for tests and after loading).
    pub fn check(&self) -> Result<(), String> {
        for (k, r) in &self.ids {
            let p = self.records.get(r).ok_or(format!("id {k}: no record"))?;
            if !p.identifiers.contains(k) {
                return Err(format!("id {k}: record lacks it"));
            }
        }
        for (r, p) in &self.records {
            if p.identifiers.is_empty() {
                return Err("record without identifiers".into());
            }
            for k in &p.identifiers {
                if self.ids.get(k) != Some(r) {
                    return Err(format!("id {k}: not indexed to its record"));
                }
            }
            match p.bed() {
                Some(b) if self.beds.get(&b) != Some(r) => {
                    return Err(format!("bed {b}: not indexed to {}", p.key()));
                }
                _ => {}
            }
            if !p.status.is_active() && p.location.is_some() {
                return Err(format!("{}: inactive with a location", p.key()));
            }
        }
        for (b, r) in &self.beds {
            let p = self.records.get(r).ok_or(format!("bed {b}: no record"))?;
            if p.bed().as_ref() != Some(b) {
                return Err(format!("bed {b}: record {} elsewhere", p.key()));
            }
        }
        Ok(())
    }

    pub(crate) fn record_of(&self, key: &PatientKey) -> Option<u64> {
        self.ids.get(key).copied()
    }
}

fn resolve<'a>(rosters: &Rosters, refs: impl Iterator<Item = &'a ProviderRef>) -> Vec<String> {
    refs.filter_map(|p| rosters.member_by_provider_id(p.id.value.trim(), p.id.authority.trim()))
        .map(|m| m.id.clone())
        .collect()
}

fn push_unique(out: &mut Vec<String>, more: Vec<String>) {
    for m in more {
        if !out.contains(&m) {
            out.push(m);
        }
    }
}
