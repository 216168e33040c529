//! `ClinicalEvent`: the one internal currency.
//!
//! HL7 v2 (and, later, FHIR) map into this type; rules, rosters and redaction
//! never look at raw HL7 or FHIR again. Every value here is decoded text
//! (charset applied, HL7 escape sequences resolved). Many fields are PHI: the
//! type deliberately does not implement `Display`, and its `Debug` output must
//! never reach a log (log ids and kinds instead).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened, in clinical terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// ADT A01: admit / visit notification.
    Admit,
    /// ADT A02: transfer.
    Transfer,
    /// ADT A03: discharge / end visit.
    Discharge,
    /// ADT A04: register a patient (outpatient / emergency).
    Register,
    /// ADT A06: change an outpatient to an inpatient.
    OutpatientToInpatient,
    /// ADT A07: change an inpatient to an outpatient.
    InpatientToOutpatient,
    /// ADT A08: update patient information.
    Update,
    /// ADT A11: cancel admit / visit notification.
    CancelAdmit,
    /// ADT A12: cancel transfer.
    CancelTransfer,
    /// ADT A13: cancel discharge.
    CancelDischarge,
    /// ADT A17: swap patients (one event per patient of the swap).
    BedSwap,
    /// ADT A40: merge patient identifier lists.
    Merge,
    /// ORU^R01: an observation result (one event per OBR group).
    Result,
    /// ORM^O01 / OML^O21: an order or order-control message.
    Order,
    /// ORU^R40 (IHE PCD ACM): a device alarm.
    Alarm,
    /// FHIR Communication / CommunicationRequest: a message sent, or a
    /// request that someone be told something.
    Communication,
}

impl EventKind {
    /// Stable lower-case name, as stored in the journal and shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Admit => "admit",
            EventKind::Transfer => "transfer",
            EventKind::Discharge => "discharge",
            EventKind::Register => "register",
            EventKind::OutpatientToInpatient => "outpatient-to-inpatient",
            EventKind::InpatientToOutpatient => "inpatient-to-outpatient",
            EventKind::Update => "update",
            EventKind::CancelAdmit => "cancel-admit",
            EventKind::CancelTransfer => "cancel-transfer",
            EventKind::CancelDischarge => "cancel-discharge",
            EventKind::BedSwap => "bed-swap",
            EventKind::Merge => "merge",
            EventKind::Result => "result",
            EventKind::Order => "order",
            EventKind::Alarm => "alarm",
            EventKind::Communication => "communication",
        }
    }

    /// True for the ADT kinds the patient census applies.
    pub fn is_adt(self) -> bool {
        matches!(
            self,
            EventKind::Admit
                | EventKind::Transfer
                | EventKind::Discharge
                | EventKind::Register
                | EventKind::OutpatientToInpatient
                | EventKind::InpatientToOutpatient
                | EventKind::Update
                | EventKind::CancelAdmit
                | EventKind::CancelTransfer
                | EventKind::CancelDischarge
                | EventKind::BedSwap
                | EventKind::Merge
        )
    }

    /// Every ADT kind's stored name (for journal queries).
    pub const ADT: [EventKind; 12] = [
        EventKind::Admit,
        EventKind::Transfer,
        EventKind::Discharge,
        EventKind::Register,
        EventKind::OutpatientToInpatient,
        EventKind::InpatientToOutpatient,
        EventKind::Update,
        EventKind::CancelAdmit,
        EventKind::CancelTransfer,
        EventKind::CancelDischarge,
        EventKind::BedSwap,
        EventKind::Merge,
    ];
}

/// MSH-11 processing id. Only `Production` events may ever page production
/// recipients; `Training` and `Debugging` are journaled and shown, never paged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Processing {
    /// `P`
    Production,
    /// `T`
    Training,
    /// `D`
    Debugging,
}

impl Processing {
    /// Maps the first component of MSH-11; `None` for anything else.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "P" => Some(Processing::Production),
            "T" => Some(Processing::Training),
            "D" => Some(Processing::Debugging),
            _ => None,
        }
    }

    /// The HL7 code (`P`, `T`, `D`).
    pub fn code(self) -> &'static str {
        match self {
            Processing::Production => "P",
            Processing::Training => "T",
            Processing::Debugging => "D",
        }
    }
}

/// Clinical urgency, normalised from ORC-7/TQ1-9/OBR-27/OBR-5, alarm priority
/// or FHIR `priority`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    /// No priority given.
    Unspecified,
    /// `R`: routine.
    Routine,
    /// `A` / ASAP / urgent.
    Urgent,
    /// `S` / STAT / emergency.
    Stat,
}

/// Where the message came from: enough to find it in the journal again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Configured sender name.
    pub sender: String,
    /// MSH-9.1 / MSH-9.2, e.g. `ORU` / `R01`.
    pub message_type: String,
    /// MSH-9.2 trigger event.
    pub trigger: String,
    /// MSH-10 message control id.
    pub control_id: String,
    /// Position of this event among the events of its message (0-based).
    pub index: u32,
}

/// An identifier with its assigning authority (CX / XCN / EI).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// CX.1 / XCN.1 / EI.1.
    pub value: String,
    /// Assigning authority (CX.4.1 / XCN.9.1 / EI.2), empty when absent.
    pub authority: String,
    /// Identifier type code (CX.5 / XCN.13), e.g. `MR`, `NPI`; empty when absent.
    pub type_code: String,
}

/// A person's name (XPN / XCN name components).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName {
    /// Family name.
    pub family: String,
    /// Given name.
    pub given: String,
    /// Middle names or initials.
    pub middle: String,
}

/// The patient the event is about (PID).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// PID-3 repetitions (and PID-2 when present).
    pub identifiers: Vec<Identifier>,
    /// PID-5 first repetition.
    pub name: Option<PersonName>,
    /// PID-7 as given (HL7 DTM text, no time zone conversion).
    pub birth_date: Option<String>,
    /// PID-8 administrative sex.
    pub sex: Option<String>,
}

/// A physical location (PL): facility, point of care (unit), room, bed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// PL.4 facility.
    pub facility: String,
    /// PL.1 point of care (nursing unit).
    pub unit: String,
    /// PL.2 room.
    pub room: String,
    /// PL.3 bed.
    pub bed: String,
}

/// Why a provider is named on the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderRole {
    /// PV1-7.
    Attending,
    /// PV1-8.
    Referring,
    /// PV1-9.
    Consulting,
    /// PV1-17.
    Admitting,
    /// ORC-12 / OBR-16.
    Ordering,
    /// ROL segment, with its role code kept in `Provider::role_code`.
    CareTeam,
}

/// A provider (XCN) named on the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Why this provider is named.
    pub role: ProviderRole,
    /// ROL-3 role code when `role` is `CareTeam`, else empty.
    pub role_code: String,
    /// XCN.1 with authority and type.
    pub id: Identifier,
    /// XCN.2.. name components.
    pub name: PersonName,
}

/// A coded element (CE / CWE / CNE): code, text, coding system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// Identifier, e.g. a LOINC code.
    pub code: String,
    /// Display text.
    pub text: String,
    /// Coding system, e.g. `LN`.
    pub system: String,
}

/// OBX-11 / FHIR status of a result value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultStatus {
    /// `P`/`R`/`S`/`I`: preliminary or partial.
    Preliminary,
    /// `F`: final.
    Final,
    /// `C`: corrected (a changed final result: news, not silence).
    Corrected,
    /// `W`: posted to the wrong patient (a retraction).
    WrongPatient,
    /// `D`: deleted.
    Deleted,
    /// `X`: results cannot be obtained.
    CannotObtain,
    /// Anything else, or absent.
    Unknown,
}

/// One OBX of a result (or alarm).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// OBX-1.
    pub set_id: String,
    /// OBX-2 value type (`NM`, `ST`, `CWE`, ...).
    pub value_type: String,
    /// OBX-3 observation identifier (e.g. LOINC).
    pub code: Code,
    /// OBX-4 sub-id.
    pub sub_id: String,
    /// OBX-5 value(s), decoded; repetitions joined by `~` are kept apart.
    pub values: Vec<String>,
    /// OBX-6 units.
    pub units: Option<Code>,
    /// OBX-7 reference range.
    pub reference_range: String,
    /// OBX-8 abnormal flags, every repetition (`H`, `HH`, `LL`, `AA`, ...).
    pub flags: Vec<String>,
    /// OBX-11 result status.
    pub status: ResultStatus,
    /// OBX-14 time of the observation, in UTC.
    pub observed_at: Option<DateTime<Utc>>,
}

/// The order (ORC/OBR) an event belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// ORC-1 order control (`NW`, `CA`, `XO`, `SC`, ...), empty for results without ORC.
    pub control: String,
    /// ORC-2 / OBR-2 placer order number.
    pub placer_id: String,
    /// ORC-3 / OBR-3 filler order number.
    pub filler_id: String,
    /// OBR-4 universal service identifier.
    pub service: Code,
    /// ORC-5 order status.
    pub status: String,
    /// OBR-7 observation time / requested time, in UTC.
    pub observed_at: Option<DateTime<Utc>>,
    /// OBR-25 result status (`F`, `C`, `X`, ...).
    pub result_status: String,
}

/// IHE PCD ACM alarm details (ORU^R40).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Alarm identifier (OBR-3 filler id, unique per alarm instance).
    pub id: String,
    /// Event phase (`start`, `continue`, `end`, `present`, ...).
    pub phase: String,
    /// Alarm priority as sent (`PH`, `PM`, `PL`, `PN`).
    pub priority: String,
    /// Alarm type / event identification code.
    pub kind: Code,
    /// Source device (equipment instance id or MDC code text).
    pub source: String,
    /// Alarm state (`active`, `inactive`, ...), empty when absent.
    pub state: String,
}

/// One normalised clinical event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClinicalEvent {
    /// What happened.
    pub kind: EventKind,
    /// Where it came from.
    pub source: SourceRef,
    /// MSH-11.
    pub processing: Processing,
    /// When it happened (EVN-6, EVN-2, OBR-7/OBX-14 or MSH-7), in UTC.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The patient.
    pub patient: Patient,
    /// Current (or new) location: PV1-3.
    pub location: Option<Location>,
    /// Prior location (PV1-6), for transfers and their cancels.
    pub prior_location: Option<Location>,
    /// PV1-2 patient class (`I`, `O`, `E`, ...).
    pub patient_class: String,
    /// PV1-19 visit number.
    pub visit: Option<Identifier>,
    /// Providers named on the event (PV1, ROL, ORC-12, OBR-16).
    pub providers: Vec<Provider>,
    /// Normalised priority.
    pub priority: Priority,
    /// The order context (results and orders).
    pub order: Option<Order>,
    /// Result values, one per OBX.
    pub observations: Vec<Observation>,
    /// Device alarm details (ORU^R40).
    pub alarm: Option<Alarm>,
    /// For merges (A40): the prior patient identifiers (MRG-1).
    pub merged_identifiers: Vec<Identifier>,
    /// NTE and other free text, decoded. PHI: scrubbed before any use.
    pub notes: Vec<String>,
}
