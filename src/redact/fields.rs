//! The catalogue of fields a backend's PHI profile may allow.

use std::fmt;

/// One field of an alert that may leave the gateway, by its template
/// variable name ([`Field::name`]).
///
/// Direct identifiers ([`Field::is_identifier`]) name the patient; the rest
/// is clinical context, which never names the patient on its own. Every
/// non-identifier value is scrubbed ([`super::scrub`]) before it is put in a
/// view; identifier values are taken as they are, and only under a profile
/// that allows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Direct identifier. PID-5: given, middle and family name (`patient_name`).
    PatientName,
    /// Direct identifier. The medical record number: the PID-3 repetition of
    /// type `MR`, else the first (`mrn`).
    PatientId,
    /// Direct identifier. Every PID-3 repetition, `TYPE:VALUE` (`patient_ids`).
    PatientIds,
    /// Direct identifier. PID-7, as `YYYY-MM-DD` when it has a full date (`birth_date`).
    BirthDate,
    /// Direct identifier. PV1-19 visit (account) number (`visit`).
    Visit,
    /// Direct identifier. The filler (accession) order number, else the
    /// placer's (`order_number`).
    OrderNumber,
    /// PID-8 administrative sex (`sex`). Not a direct identifier, but
    /// demographic rather than clinical: no shipped profile but
    /// `clinician-secure` carries it.
    Sex,
    /// PV1-3.4 facility (`facility`).
    Facility,
    /// PV1-3.1 point of care (nursing unit) (`unit`).
    Unit,
    /// PV1-3.2 room (`room`).
    Room,
    /// PV1-3.3 bed (`bed`).
    Bed,
    /// The event kind and message type, e.g. `result ORU^R01` (`event`).
    EventClass,
    /// The main observation's test (OBX-3 text, else its code; without
    /// observations the ordered service) (`test`).
    Test,
    /// The main observation's value(s) (`value`). Free-text values (`ST`,
    /// `TX`, `FT`) are scrubbed like notes.
    Value,
    /// The main observation's units (`units`).
    Units,
    /// The main observation's abnormal flags, e.g. `HH` (`flag`).
    Flag,
    /// The main observation's reference range (`reference_range`).
    ReferenceRange,
    /// The main observation's result status, e.g. `final`, `corrected`
    /// (`result_status`).
    ResultStatus,
    /// Every observation as `TEST VALUE UNITS FLAGS`, `; `-separated (`results`).
    Results,
    /// The event's own normalised priority: `stat`, `urgent`, `routine`
    /// (`event_priority`). The alert's priority is always available as
    /// `priority`.
    Priority,
    /// The ordering provider's name (ORC-12 / OBR-16) (`ordering_provider`).
    OrderingProvider,
    /// The device alarm's kind (text, else code) (`alarm`).
    AlarmKind,
    /// NTE and other free text, scrubbed, one note per line (`notes`).
    Notes,
}

impl Field {
    /// Every field, in catalogue order.
    pub const ALL: [Field; 23] = [
        Field::PatientName,
        Field::PatientId,
        Field::PatientIds,
        Field::BirthDate,
        Field::Visit,
        Field::OrderNumber,
        Field::Sex,
        Field::Facility,
        Field::Unit,
        Field::Room,
        Field::Bed,
        Field::EventClass,
        Field::Test,
        Field::Value,
        Field::Units,
        Field::Flag,
        Field::ReferenceRange,
        Field::ResultStatus,
        Field::Results,
        Field::Priority,
        Field::OrderingProvider,
        Field::AlarmKind,
        Field::Notes,
    ];

    /// Location: unit, room, bed and facility.
    pub const LOCATION: [Field; 4] = [Field::Facility, Field::Unit, Field::Room, Field::Bed];

    /// Clinical context without location and without free-text notes.
    pub const CLINICAL: [Field; 11] = [
        Field::EventClass,
        Field::Test,
        Field::Value,
        Field::Units,
        Field::Flag,
        Field::ReferenceRange,
        Field::ResultStatus,
        Field::Results,
        Field::Priority,
        Field::OrderingProvider,
        Field::AlarmKind,
    ];

    /// The template variable (and configuration) name.
    pub fn name(self) -> &'static str {
        match self {
            Field::PatientName => "patient_name",
            Field::PatientId => "mrn",
            Field::PatientIds => "patient_ids",
            Field::BirthDate => "birth_date",
            Field::Visit => "visit",
            Field::OrderNumber => "order_number",
            Field::Sex => "sex",
            Field::Facility => "facility",
            Field::Unit => "unit",
            Field::Room => "room",
            Field::Bed => "bed",
            Field::EventClass => "event",
            Field::Test => "test",
            Field::Value => "value",
            Field::Units => "units",
            Field::Flag => "flag",
            Field::ReferenceRange => "reference_range",
            Field::ResultStatus => "result_status",
            Field::Results => "results",
            Field::Priority => "event_priority",
            Field::OrderingProvider => "ordering_provider",
            Field::AlarmKind => "alarm",
            Field::Notes => "notes",
        }
    }

    /// Parses [`Field::name`].
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// True for direct identifiers of the patient: such a field is never in
    /// a preview line, and a profile that allows one requires an end-to-end
    /// encrypted channel.
    pub fn is_identifier(self) -> bool {
        matches!(
            self,
            Field::PatientName
                | Field::PatientId
                | Field::PatientIds
                | Field::BirthDate
                | Field::Visit
                | Field::OrderNumber
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
