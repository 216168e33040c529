//! `ParseError`: why a message could not be turned into events, as HL7 wants
//! to hear it — a table 0357 condition code and an ERR-2 location — and never
//! the content that was wrong.

use std::fmt;

/// HL7 table 0357 message error condition codes used by Switchboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100 Segment sequence error (required segment missing, first segment not MSH, empty message).
    SegmentSequence,
    /// 101 Required field missing.
    RequiredFieldMissing,
    /// 102 Data type error (bad date, number, invalid bytes for the charset).
    DataType,
    /// 103 Table value not found.
    TableValueNotFound,
    /// 104 Value too long (frame larger than the configured limit).
    ValueTooLong,
    /// 199 Other error (bad MSH-1/MSH-2 encoding characters).
    Other,
    /// 200 Unsupported message type.
    UnsupportedMessageType,
    /// 201 Unsupported event code.
    UnsupportedEventCode,
    /// 202 Unsupported processing id.
    UnsupportedProcessingId,
    /// 203 Unsupported version id (also: unknown MSH-18 character set).
    UnsupportedVersionId,
    /// 207 Application internal error (journal could not commit: resend later).
    ApplicationInternal,
}

impl ErrorCode {
    /// The numeric code (ERR-3.1).
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::ValueTooLong => 104,
            ErrorCode::Other => 199,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::ApplicationInternal => 207,
        }
    }

    /// The table 0357 text (ERR-3.2).
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::Other => "Other error",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::ApplicationInternal => "Application internal error",
        }
    }

    /// True for codes that reject the message for reasons unrelated to its
    /// content (answered `AR`/`CR` rather than `AE`).
    pub fn is_reject(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedMessageType
                | ErrorCode::UnsupportedEventCode
                | ErrorCode::UnsupportedProcessingId
                | ErrorCode::UnsupportedVersionId
                | ErrorCode::ApplicationInternal
        )
    }
}

/// An ERR-2 error location: segment id, segment sequence (1-based occurrence
/// of that segment in the message), field, and optionally component.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ErrorLocation {
    /// Segment id, e.g. `PID`; empty when no segment can be named.
    pub segment: &'static str,
    /// 1-based occurrence of the segment in the message; 0 when unknown.
    pub sequence: u32,
    /// Field position; 0 when the whole segment is meant.
    pub field: u32,
    /// Component position; 0 when the whole field is meant.
    pub component: u32,
}

impl ErrorLocation {
    /// A location naming a field of the `sequence`-th occurrence of `segment`.
    pub fn field(segment: &'static str, sequence: u32, field: u32) -> Self {
        ErrorLocation {
            segment,
            sequence,
            field,
            component: 0,
        }
    }

    /// A location naming a whole segment.
    pub fn segment(segment: &'static str, sequence: u32) -> Self {
        ErrorLocation {
            segment,
            sequence,
            field: 0,
            component: 0,
        }
    }

    /// The `'static` spelling of a segment id Switchboard knows (so it can be
    /// named in an [`ErrorLocation`]); empty for anything else, including
    /// Z-segments and garbage, which keeps sender bytes out of errors.
    pub fn known_segment(id: &str) -> &'static str {
        const KNOWN: &[&str] = &[
            "MSH", "FHS", "BHS", "BTS", "FTS", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "NK1",
            "ROL", "PRT", "NTE", "ORC", "OBR", "OBX", "TQ1", "TQ2", "SPM", "RXO", "RXE", "ODS",
            "AL1", "DG1", "IN1", "IN2", "GT1", "SFT", "CTD", "FT1", "CTI", "TXA", "MSA", "ERR",
        ];
        KNOWN.iter().copied().find(|k| *k == id).unwrap_or("")
    }

    /// ERR-2 in the default encoding: `PID^1^3` (components joined by `^`),
    /// with empty trailing parts omitted. Empty when no segment is named.
    pub fn to_err2(&self, component_sep: char) -> String {
        if self.segment.is_empty() {
            return String::new();
        }
        let mut out = String::from(self.segment);
        let parts = [self.sequence, self.field, self.component];
        let last = parts.iter().rposition(|p| *p != 0);
        if let Some(last) = last {
            for p in &parts[..=last] {
                out.push(component_sep);
                if *p != 0 {
                    out.push_str(&p.to_string());
                }
            }
        }
        out
    }
}

/// A parse failure: a condition code and where. Carries no message content,
/// so it is safe to log and to put into an ERR segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Table 0357 code.
    pub code: ErrorCode,
    /// Where the problem is.
    pub location: ErrorLocation,
    /// A fixed, content-free explanation (ERR-8 user message), e.g.
    /// "PID-3 patient identifier list is empty".
    pub detail: &'static str,
}

impl ParseError {
    /// Builds an error.
    pub fn new(code: ErrorCode, location: ErrorLocation, detail: &'static str) -> Self {
        ParseError {
            code,
            location,
            detail,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HL7 error {} ({}) at {}: {}",
            self.code.code(),
            self.code.text(),
            if self.location.segment.is_empty() {
                "message".to_string()
            } else {
                self.location.to_err2('^')
            },
            self.detail
        )
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err2_omits_empty_tail() {
        assert_eq!(ErrorLocation::field("MSH", 1, 10).to_err2('^'), "MSH^1^10");
        assert_eq!(ErrorLocation::segment("OBR", 1).to_err2('^'), "OBR^1");
        assert_eq!(ErrorLocation::default().to_err2('^'), "");
        let loc = ErrorLocation {
            segment: "OBX",
            sequence: 2,
            field: 5,
            component: 1,
        };
        assert_eq!(loc.to_err2('^'), "OBX^2^5^1");
    }
}
