//! Stage 4: one HL7 v2 message into [`ClinicalEvent`]s.
//!
//! Guarantees of [`events`]:
//! - the structure comes from hl7-parser (`Message::parse` on the
//!   CR-normalised text) and the whole text must be understood: a segment
//!   hl7-parser cannot read (id not 3 alphanumerics, no field separator) is
//!   a `SegmentSequence` error at that segment rather than a silently
//!   truncated message. A bare segment id with no fields (`PV1`) is
//!   accepted as an empty segment;
//! - all text in events is decoded (see [`fields::decode`]); timestamps are
//!   UTC (see [`time`]);
//! - errors carry a table 0357 code and an ERR-2 location, never content
//!   (hl7-parser's own error, which quotes input, is never surfaced);
//! - no input makes it panic.
//!
//! Per-type rules are in [`adt`], [`result`], [`order`] and [`alarm`];
//! shared PID/PV1/ROL/NTE handling in [`patient`].

mod adt;
mod alarm;
pub(crate) mod fields;
mod order;
mod patient;
mod result;
pub(crate) mod time;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use hl7_parser::Message;

use crate::event::{ClinicalEvent, EventKind, Patient, Priority, Processing, SourceRef};
use crate::parse::error::{ErrorCode, ErrorLocation, ParseError};
use crate::parse::header::{Header, valid_separators};
use fields::Seg;

/// What the message is, for routing the decision "parse into events /
/// filter / reject".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Support {
    /// [`events`] understands it.
    Supported,
    /// The message type (MSH-9.1) is not handled (including `ACK`).
    UnsupportedType,
    /// The message type is handled but not this trigger event (MSH-9.2).
    UnsupportedTrigger,
}

/// Supported: ADT A01 A02 A03 A04 A06 A07 A08 A11 A12 A13 A17 A40; ORU R01
/// and R40; ORM O01; OML O21. Anything else (including `ACK`) is an
/// unsupported type, or an unsupported trigger of a known type.
pub fn support(message_code: &str, trigger: &str) -> Support {
    let trigger = trigger.trim();
    let ok = match message_code.trim() {
        "ADT" => matches!(
            trigger,
            "A01"
                | "A02"
                | "A03"
                | "A04"
                | "A06"
                | "A07"
                | "A08"
                | "A11"
                | "A12"
                | "A13"
                | "A17"
                | "A40"
        ),
        "ORU" => matches!(trigger, "R01" | "R40"),
        "ORM" => trigger == "O01",
        "OML" => trigger == "O21",
        _ => return Support::UnsupportedType,
    };
    if ok {
        Support::Supported
    } else {
        Support::UnsupportedTrigger
    }
}

/// Per-message context.
#[derive(Clone, Copy, Debug)]
pub struct EventContext<'a> {
    /// Configured sender name (goes into [`SourceRef::sender`]).
    pub sender: &'a str,
    /// Time zone for timestamps without an offset.
    pub timezone: chrono_tz::Tz,
}

/// Everything the per-type builders share.
pub(crate) struct Cx<'c, 'm> {
    pub(crate) header: &'c Header,
    pub(crate) ctx: &'c EventContext<'c>,
    /// All segments, MSH first.
    pub(crate) segs: &'c [Seg<'c, 'm>],
    /// MSH-7, validated.
    pub(crate) msh_time: Option<DateTime<Utc>>,
}

impl Cx<'_, '_> {
    /// A blank event of `kind` (index fixed up by [`events`]).
    pub(crate) fn event(&self, kind: EventKind) -> ClinicalEvent {
        ClinicalEvent {
            kind,
            source: SourceRef {
                sender: self.ctx.sender.to_string(),
                message_type: self.header.message_code.clone(),
                trigger: self.header.trigger.clone(),
                control_id: self.header.control_id.clone(),
                index: 0,
            },
            processing: Processing::from_code(&self.header.processing_id)
                .unwrap_or(Processing::Production),
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

    /// Field `n` (component 1) of `seg` as a UTC instant; a bad value is a
    /// data type error at that field.
    pub(crate) fn time(
        &self,
        seg: &Seg<'_, '_>,
        n: usize,
    ) -> Result<Option<DateTime<Utc>>, ParseError> {
        time::parse_dtm(seg.comp_raw(n, 1), self.ctx.timezone).map_err(|_| {
            ParseError::new(
                ErrorCode::DataType,
                seg.loc(n as u32),
                "timestamp is not a valid HL7 date/time",
            )
        })
    }
}

/// Maps a priority code (table 0027 / TQ1-9): `S` stat, `A` urgent, `R`
/// routine, anything else unspecified.
pub(crate) fn priority_code(code: &str) -> Priority {
    match code.trim() {
        "S" => Priority::Stat,
        "A" => Priority::Urgent,
        "R" => Priority::Routine,
        _ => Priority::Unspecified,
    }
}

/// Gives bare segment ids (`PV1` with no field separator) a field separator
/// so hl7-parser accepts them as empty segments.
fn fix_bare_segments(text: &str, sep: char) -> Cow<'_, str> {
    let bare = |s: &str| s.len() == 3 && s.chars().all(char::is_alphanumeric);
    if !text.split('\r').skip(1).any(bare) {
        return Cow::Borrowed(text);
    }
    let fixed: Vec<String> = text
        .split('\r')
        .enumerate()
        .map(|(i, s)| {
            if i > 0 && bare(s) {
                format!("{s}{sep}")
            } else {
                s.to_string()
            }
        })
        .collect();
    Cow::Owned(fixed.join("\r"))
}

/// The segment starting at or containing byte `pos`, as an error location.
fn location_at(text: &str, pos: usize) -> ErrorLocation {
    let mut start = 0;
    let mut counts: Vec<(&'static str, u32)> = Vec::new();
    for seg in text.split('\r') {
        let id = ErrorLocation::known_segment(seg.get(..3).unwrap_or(""));
        let n = match counts.iter_mut().find(|(s, _)| *s == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                counts.push((id, 1));
                1
            }
        };
        if pos <= start + seg.len() {
            return if id.is_empty() {
                ErrorLocation::default()
            } else {
                ErrorLocation::segment(id, n)
            };
        }
        start += seg.len() + 1;
    }
    ErrorLocation::default()
}

/// The whole message into events. Call only for [`Support::Supported`]
/// types, after [`Header::parse`] succeeded on the same text.
pub fn events(
    text: &str,
    header: &Header,
    ctx: &EventContext<'_>,
) -> Result<Vec<ClinicalEvent>, ParseError> {
    let first = text.split('\r').next().unwrap_or("");
    let sep = first.chars().nth(3).unwrap_or('\r');
    let enc = first.split(sep).nth(1).unwrap_or("");
    if !first.starts_with("MSH") || !valid_separators(sep, enc) {
        // Header::parse reports these precisely; stay total regardless.
        return Err(ParseError::new(
            ErrorCode::Other,
            ErrorLocation::field("MSH", 1, 2),
            "MSH-1/MSH-2 separators are missing or invalid",
        ));
    }
    let fixed = fix_bare_segments(text, sep);
    let msg = Message::parse(&fixed).map_err(|e| {
        let pos = match e {
            hl7_parser::parser::ParseError::FailedToParse { position, .. } => position,
            hl7_parser::parser::ParseError::IncompleteInput(_) => fixed.len(),
        };
        let loc = location_at(&fixed, pos);
        if loc.segment == "MSH" {
            ParseError::new(
                ErrorCode::Other,
                ErrorLocation::field("MSH", 1, 2),
                "MSH cannot be parsed",
            )
        } else {
            ParseError::new(ErrorCode::SegmentSequence, loc, "segment cannot be parsed")
        }
    })?;
    if msg.raw_value().len() < fixed.len() {
        // hl7-parser stops silently at the first segment it cannot read.
        let loc = location_at(&fixed, msg.raw_value().len() + 1);
        return Err(ParseError::new(
            ErrorCode::SegmentSequence,
            loc,
            "segment id or field separator missing",
        ));
    }
    let mut counts: Vec<(&str, u32)> = Vec::new();
    let segs: Vec<Seg<'_, '_>> = msg
        .segments
        .iter()
        .map(|s| {
            let n = match counts.iter_mut().find(|(id, _)| *id == s.name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((s.name, 1));
                    1
                }
            };
            Seg {
                seg: s,
                seps: &msg.separators,
                id: ErrorLocation::known_segment(s.name),
                occurrence: n,
            }
        })
        .collect();
    let msh_time = time::parse_dtm(
        header
            .timestamp
            .split(header.encoding.chars().next().unwrap_or('^'))
            .next()
            .unwrap_or(""),
        ctx.timezone,
    )
    .map_err(|_| {
        ParseError::new(
            ErrorCode::DataType,
            ErrorLocation::field("MSH", 1, 7),
            "MSH-7 is not a valid HL7 date/time",
        )
    })?;
    let cx = Cx {
        header,
        ctx,
        segs: &segs,
        msh_time,
    };
    let trigger = header.trigger.trim();
    let mut out = match header.message_code.trim() {
        "ADT" => adt::events(&cx, trigger)?,
        "ORU" if trigger == "R40" => alarm::events(&cx)?,
        "ORU" => result::events(&cx)?,
        "ORM" | "OML" => order::events(&cx)?,
        _ => {
            return Err(ParseError::new(
                ErrorCode::UnsupportedMessageType,
                ErrorLocation::field("MSH", 1, 9),
                "message type is not supported",
            ));
        }
    };
    for (i, ev) in out.iter_mut().enumerate() {
        ev.source.index = u32::try_from(i).unwrap_or(u32::MAX);
    }
    Ok(out)
}
