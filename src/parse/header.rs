//! Stage 3: the MSH fields needed to authorise and acknowledge a message.
//!
//! Guarantees:
//! - only the first segment is read, so a header is available even when
//!   later segments are broken;
//! - values are raw (escape sequences not decoded): the ACK echoes them;
//! - [`Header::sniff`] never fails (unreadable fields are empty) so the ACK
//!   to a broken message can still echo what is readable; [`Header::parse`]
//!   validates what an acknowledgement and routing depend on.
//!
//! MSH is split here by hand rather than with hl7-parser: hl7-parser 0.3
//! takes exactly five characters after `MSH` as separators, which misparses
//! an MSH-2 of four characters followed by a truncation character (v2.7+,
//! `^~\&#`) and cannot report *which* of MSH-1/MSH-2 is wrong.

use super::error::{ErrorCode, ErrorLocation, ParseError};

/// The MSH fields needed to authorise and acknowledge. Values are raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// MSH-1.
    pub field_sep: char,
    /// MSH-2 as sent, e.g. `^~\&` (5 characters in v2.7+ with the truncation character).
    pub encoding: String,
    /// MSH-3 raw.
    pub sending_application: String,
    /// MSH-4 raw.
    pub sending_facility: String,
    /// MSH-5 raw.
    pub receiving_application: String,
    /// MSH-6 raw.
    pub receiving_facility: String,
    /// MSH-3.1.
    pub sending_application_id: String,
    /// MSH-4.1.
    pub sending_facility_id: String,
    /// MSH-7 raw.
    pub timestamp: String,
    /// MSH-9.1.
    pub message_code: String,
    /// MSH-9.2.
    pub trigger: String,
    /// MSH-9.3.
    pub structure: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.1.
    pub processing_id: String,
    /// MSH-11.2.
    pub processing_mode: String,
    /// MSH-12.1.
    pub version: String,
    /// MSH-12 raw, echoed.
    pub version_raw: String,
    /// MSH-15.
    pub accept_ack_type: String,
    /// MSH-16.
    pub application_ack_type: String,
    /// MSH-18 raw, first repetition.
    pub charset: String,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            field_sep: '|',
            encoding: "^~\\&".to_string(),
            sending_application: String::new(),
            sending_facility: String::new(),
            receiving_application: String::new(),
            receiving_facility: String::new(),
            sending_application_id: String::new(),
            sending_facility_id: String::new(),
            timestamp: String::new(),
            message_code: String::new(),
            trigger: String::new(),
            structure: String::new(),
            control_id: String::new(),
            processing_id: String::new(),
            processing_mode: String::new(),
            version: String::new(),
            version_raw: String::new(),
            accept_ack_type: String::new(),
            application_ack_type: String::new(),
            charset: String::new(),
        }
    }
}

/// True when `field_sep` + `encoding` are usable separators: all ASCII
/// punctuation, pairwise distinct, 4 encoding characters (or 5 with the
/// v2.7 truncation character).
pub(crate) fn valid_separators(field_sep: char, encoding: &str) -> bool {
    let chars: Vec<char> = encoding.chars().collect();
    if !(chars.len() == 4 || chars.len() == 5) || !field_sep.is_ascii_punctuation() {
        return false;
    }
    let mut all = chars.clone();
    all.push(field_sep);
    all.iter().all(char::is_ascii_punctuation)
        && all
            .iter()
            .enumerate()
            .all(|(i, c)| !all.iter().skip(i + 1).any(|d| d == c))
}

/// The first segment of `text` (up to CR or LF).
fn first_segment(text: &str) -> &str {
    text.split(['\r', '\n']).next().unwrap_or("")
}

/// MSH split into raw fields; `field(n)` is MSH-n.
struct RawMsh<'a> {
    sep: char,
    parts: Vec<&'a str>,
    component: char,
    repetition: char,
}

impl<'a> RawMsh<'a> {
    /// `None` when the text does not start with MSH or MSH-1 is unusable.
    fn new(text: &'a str) -> Option<Self> {
        let seg = first_segment(text);
        let rest = seg.strip_prefix("MSH")?;
        let sep = rest.chars().next().filter(char::is_ascii_punctuation)?;
        let parts: Vec<&str> = seg.split(sep).collect();
        let enc: Vec<char> = parts.get(1).copied().unwrap_or("").chars().collect();
        let pick = |i: usize, dflt: char| {
            enc.get(i)
                .copied()
                .filter(|c| c.is_ascii_punctuation() && *c != sep)
                .unwrap_or(dflt)
        };
        Some(RawMsh {
            sep,
            component: pick(0, '^'),
            repetition: pick(1, '~'),
            parts,
        })
    }

    fn field(&self, n: usize) -> &'a str {
        match n {
            0 => "",
            1 => "",
            _ => self.parts.get(n - 1).copied().unwrap_or(""),
        }
    }

    fn comp(&self, n: usize, c: usize) -> &'a str {
        let first_rep = self.field(n).split(self.repetition).next().unwrap_or("");
        first_rep
            .split(self.component)
            .nth(c.saturating_sub(1))
            .unwrap_or("")
    }
}

fn required(value: &str, field: u32, detail: &'static str) -> Result<(), ParseError> {
    if value.trim().is_empty() {
        Err(ParseError::new(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("MSH", 1, field),
            detail,
        ))
    } else {
        Ok(())
    }
}

impl Header {
    /// Reads MSH of one message text without failing: fields that cannot be
    /// read are left empty, separators default to `|^~\&`.
    pub fn sniff(text: &str) -> Header {
        let Some(m) = RawMsh::new(text) else {
            return Header::default();
        };
        let s = |v: &str| v.to_string();
        Header {
            field_sep: m.sep,
            encoding: s(m.field(2)),
            sending_application: s(m.field(3)),
            sending_facility: s(m.field(4)),
            receiving_application: s(m.field(5)),
            receiving_facility: s(m.field(6)),
            sending_application_id: s(m.comp(3, 1)),
            sending_facility_id: s(m.comp(4, 1)),
            timestamp: s(m.field(7)),
            message_code: s(m.comp(9, 1)),
            trigger: s(m.comp(9, 2)),
            structure: s(m.comp(9, 3)),
            control_id: s(m.field(10)),
            processing_id: s(m.comp(11, 1)),
            processing_mode: s(m.comp(11, 2)),
            version: s(m.comp(12, 1)),
            version_raw: s(m.field(12)),
            accept_ack_type: s(m.field(15)),
            application_ack_type: s(m.field(16)),
            charset: s(m.field(18).split(m.repetition).next().unwrap_or("")),
        }
    }

    /// Parses and validates MSH of one message text (as produced by
    /// [`split`](super::split)).
    ///
    /// Errors: first segment not MSH: `SegmentSequence` at `MSH^1`; MSH-1 or
    /// MSH-2 unusable (missing, alphanumeric, repeated, fewer than 4 encoding
    /// characters): `Other` (199, "Other error" in v2.9 table 0357) at
    /// `MSH^1^2`; MSH-9.1/9.2, MSH-10, MSH-11, MSH-12 empty:
    /// `RequiredFieldMissing` at `MSH^1^9` / `^10` / `^11` / `^12`.
    pub fn parse(text: &str) -> Result<Header, ParseError> {
        if !first_segment(text).starts_with("MSH") {
            return Err(ParseError::new(
                ErrorCode::SegmentSequence,
                ErrorLocation::segment("MSH", 1),
                "message does not start with MSH",
            ));
        }
        let sep = first_segment(text).chars().nth(3).unwrap_or('\r');
        let enc = first_segment(text).split(sep).nth(1).unwrap_or("");
        if !valid_separators(sep, enc) {
            return Err(ParseError::new(
                ErrorCode::Other,
                ErrorLocation::field("MSH", 1, 2),
                "MSH-1/MSH-2 separators are missing or invalid",
            ));
        }
        let h = Header::sniff(text);
        required(&h.message_code, 9, "MSH-9.1 message code is missing")?;
        required(&h.trigger, 9, "MSH-9.2 trigger event is missing")?;
        required(&h.control_id, 10, "MSH-10 message control id is missing")?;
        required(&h.processing_id, 11, "MSH-11 processing id is missing")?;
        required(&h.version, 12, "MSH-12 version id is missing")?;
        Ok(h)
    }

    /// True when MSH-15 or MSH-16 is non-empty (enhanced acknowledgement mode).
    pub fn enhanced_mode(&self) -> bool {
        !self.accept_ack_type.trim().is_empty() || !self.application_ack_type.trim().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "MSH|^~\\&|APP^1.2^ISO|FAC|RAPP|RFAC|20240101120000+0100||ORU^R01^ORU_R01|CTL1|P^T|2.5.1^USA|||AL|NE||UNICODE UTF-8~8859/1\rPID|||1";

    fn err(text: &str) -> (ErrorCode, String) {
        let e = Header::parse(text).unwrap_err();
        (e.code, e.location.to_err2('^'))
    }

    #[test]
    fn parses_fields() {
        let h = Header::parse(GOOD).unwrap();
        assert_eq!(h.field_sep, '|');
        assert_eq!(h.encoding, "^~\\&");
        assert_eq!(h.sending_application, "APP^1.2^ISO");
        assert_eq!(h.sending_application_id, "APP");
        assert_eq!(h.sending_facility_id, "FAC");
        assert_eq!(h.receiving_application, "RAPP");
        assert_eq!(h.receiving_facility, "RFAC");
        assert_eq!(h.timestamp, "20240101120000+0100");
        assert_eq!(
            (
                h.message_code.as_str(),
                h.trigger.as_str(),
                h.structure.as_str()
            ),
            ("ORU", "R01", "ORU_R01")
        );
        assert_eq!(h.control_id, "CTL1");
        assert_eq!(
            (h.processing_id.as_str(), h.processing_mode.as_str()),
            ("P", "T")
        );
        assert_eq!(
            (h.version.as_str(), h.version_raw.as_str()),
            ("2.5.1", "2.5.1^USA")
        );
        assert_eq!(
            (h.accept_ack_type.as_str(), h.application_ack_type.as_str()),
            ("AL", "NE")
        );
        assert_eq!(h.charset, "UNICODE UTF-8");
        assert!(h.enhanced_mode());
    }

    #[test]
    fn truncation_character_and_custom_separators() {
        let h = Header::parse("MSH|^~\\&#|APP|FAC|||2024||ADT^A01|9|P|2.7").unwrap();
        assert_eq!(h.encoding, "^~\\&#");
        assert_eq!(h.sending_application, "APP");
        assert!(!h.enhanced_mode());
        let h = Header::parse("MSH#$*!@#APP$X#FAC#####ADT$A08#7#D#2.3").unwrap();
        assert_eq!(
            (h.sending_application_id.as_str(), h.message_code.as_str()),
            ("APP", "ADT")
        );
        assert_eq!((h.trigger.as_str(), h.processing_id.as_str()), ("A08", "D"));
    }

    #[test]
    fn errors() {
        assert_eq!(err("PID|1"), (ErrorCode::SegmentSequence, "MSH^1".into()));
        for bad in [
            "MSH",
            "MSHA^~\\&|",
            "MSH|^~|A||||||ADT^A01|1|P|2.5",
            "MSH|^^\\&|A||||||ADT^A01|1|P|2.5",
            "MSH|^~\\A|A||||||ADT^A01|1|P|2.5",
            "MSH|^~\\|&|A||||||ADT^A01|1|P|2.5",
        ] {
            assert_eq!(err(bad), (ErrorCode::Other, "MSH^1^2".into()), "{bad}");
        }
        let m = |f9: &str, f10: &str, f11: &str, f12: &str| {
            format!("MSH|^~\\&|A|B|C|D|2024||{f9}|{f10}|{f11}|{f12}")
        };
        let missing = (ErrorCode::RequiredFieldMissing, String::new());
        let at = |f: &str| (missing.0, format!("MSH^1^{f}"));
        assert_eq!(err(&m("ADT", "1", "P", "2.5")), at("9"));
        assert_eq!(err(&m("^A01", "1", "P", "2.5")), at("9"));
        assert_eq!(err(&m("ADT^A01", "", "P", "2.5")), at("10"));
        assert_eq!(err(&m("ADT^A01", "1", "", "2.5")), at("11"));
        assert_eq!(err(&m("ADT^A01", "1", "P", "")), at("12"));
        assert_eq!(err("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P"), at("12"));
    }

    #[test]
    fn sniff_never_fails() {
        let h = Header::sniff("MSH|^~|APP|FAC|R|RF|x||ADT^A01|C9|P|2.5");
        assert_eq!(h.sending_application, "APP");
        assert_eq!(h.control_id, "C9");
        assert_eq!(h.version_raw, "2.5");
        assert_eq!(Header::sniff("garbage"), Header::default());
        assert_eq!(Header::sniff(""), Header::default());
        assert_eq!(Header::sniff("MSH").control_id, "");
    }
}
