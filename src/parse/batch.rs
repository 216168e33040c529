//! Stage 2: one decoded frame into its messages.
//!
//! Guarantees of [`split`]:
//! - every returned message is a slice of the input starting at its `MSH`
//!   and ending before the CR that precedes the next `MSH`, `BHS`, `BTS`,
//!   `FHS` or `FTS` (or at the end of the text);
//! - a frame whose first segment is not `MSH`, `FHS` or `BHS`, or that has
//!   a segment outside any message which is not an envelope segment, is
//!   refused with `SegmentSequence`;
//! - envelope headers are returned so the caller can answer with an
//!   acknowledgement batch. A file carrying several batches reports the
//!   first `BHS`; the messages of all batches are returned in order.
//!
//! The input must be normalised (CR-separated) text from
//! [`decode_frame`](super::decode_frame).

use super::error::{ErrorCode, ErrorLocation, ParseError};

/// A batch envelope's header (FHS or BHS), as needed to answer with an
/// acknowledgement batch. Values raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// `"FHS"` or `"BHS"`.
    pub segment: &'static str,
    /// FHS-1 / BHS-1.
    pub field_sep: char,
    /// FHS-2 / BHS-2 as sent.
    pub encoding: String,
    /// FHS-3 / BHS-3 raw.
    pub sending_application: String,
    /// FHS-4 / BHS-4 raw.
    pub sending_facility: String,
    /// FHS-5 / BHS-5 raw.
    pub receiving_application: String,
    /// FHS-6 / BHS-6 raw.
    pub receiving_facility: String,
    /// FHS-11 / BHS-11 control id.
    pub control_id: String,
}

impl BatchHeader {
    fn read(segment: &'static str, seg: &str) -> BatchHeader {
        let sep = seg
            .chars()
            .nth(3)
            .filter(char::is_ascii_punctuation)
            .unwrap_or('|');
        let parts: Vec<&str> = seg.split(sep).collect();
        // parts[k] is field k+1 (field 1 is the separator itself).
        let f = |n: usize| parts.get(n - 1).copied().unwrap_or("").to_string();
        BatchHeader {
            segment,
            field_sep: sep,
            encoding: f(2),
            sending_application: f(3),
            sending_facility: f(4),
            receiving_application: f(5),
            receiving_facility: f(6),
            control_id: f(11),
        }
    }
}

/// A frame split into messages, with its envelope headers if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The FHS, when the frame is a file.
    pub file: Option<BatchHeader>,
    /// The (first) BHS, when the frame is a batch.
    pub batch: Option<BatchHeader>,
    /// Each message's text, from its MSH up to (not including) the next
    /// MSH/BHS/BTS/FHS/FTS.
    pub messages: Vec<&'a str>,
}

fn seq_error(id: &str, seen: &[(&str, u32)]) -> ParseError {
    let id = ErrorLocation::known_segment(id);
    let n = seen.iter().find(|(s, _)| *s == id).map_or(0, |(_, n)| *n) + 1;
    ParseError::new(
        ErrorCode::SegmentSequence,
        if id.is_empty() {
            ErrorLocation::default()
        } else {
            ErrorLocation::segment(id, n)
        },
        "segment outside any message",
    )
}

/// Splits decoded text into messages; see the module documentation.
pub fn split(text: &str) -> Result<Split<'_>, ParseError> {
    let mut out = Split {
        file: None,
        batch: None,
        messages: Vec::new(),
    };
    let mut seen: Vec<(&str, u32)> = Vec::new();
    let mut current: Option<(usize, usize)> = None; // message start, end (bytes)
    let mut offset = 0usize;
    let mut first = true;
    for seg in text.split('\r') {
        let start = offset;
        offset += seg.len() + 1;
        if seg.is_empty() {
            continue;
        }
        let id = seg.get(..3).unwrap_or(seg);
        let is_header = matches!(id, "MSH" | "FHS" | "BHS" | "BTS" | "FTS");
        if first && !matches!(id, "MSH" | "FHS" | "BHS") {
            return Err(seq_error(id, &seen));
        }
        first = false;
        if is_header {
            if let Some((s, e)) = current.take() {
                out.messages.push(text.get(s..e).unwrap_or(""));
            }
            match id {
                "MSH" => current = Some((start, start + seg.len())),
                "FHS" if out.file.is_none() && out.batch.is_none() => {
                    out.file = Some(BatchHeader::read("FHS", seg))
                }
                "BHS" if out.batch.is_none() => out.batch = Some(BatchHeader::read("BHS", seg)),
                "BHS" | "BTS" | "FTS" => {}
                _ => return Err(seq_error(id, &seen)),
            }
        } else if let Some((_, e)) = current.as_mut() {
            *e = start + seg.len();
        } else {
            return Err(seq_error(id, &seen));
        }
        let known = ErrorLocation::known_segment(id);
        match seen.iter_mut().find(|(s, _)| *s == known) {
            Some((_, n)) => *n += 1,
            None => seen.push((known, 1)),
        }
    }
    if let Some((s, e)) = current {
        out.messages.push(text.get(s..e).unwrap_or(""));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_message() {
        let s = split("MSH|^~\\&|A\rPID|1").unwrap();
        assert_eq!(s.messages, vec!["MSH|^~\\&|A\rPID|1"]);
        assert!(s.file.is_none() && s.batch.is_none());
    }

    #[test]
    fn two_msh() {
        let s = split("MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2").unwrap();
        assert_eq!(s.messages, vec!["MSH|^~\\&|A\rPID|1", "MSH|^~\\&|B\rPID|2"]);
    }

    #[test]
    fn file_and_batch() {
        let t = "FHS|^~\\&|FAPP|FFAC|RAPP|RFAC|20240101||||FCTL\rBHS|^~\\&|BAPP|BFAC|||||||BCTL\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\rBTS|2\rFTS|1";
        let s = split(t).unwrap();
        assert_eq!(s.messages, vec!["MSH|^~\\&|A\rPID|1", "MSH|^~\\&|B\rPID|2"]);
        let f = s.file.unwrap();
        assert_eq!(f.segment, "FHS");
        assert_eq!(f.sending_application, "FAPP");
        assert_eq!(f.receiving_facility, "RFAC");
        assert_eq!(f.control_id, "FCTL");
        let b = s.batch.unwrap();
        assert_eq!((b.segment, b.sending_facility.as_str()), ("BHS", "BFAC"));
        assert_eq!(b.control_id, "BCTL");
        assert_eq!(b.encoding, "^~\\&");
        // an empty batch is valid
        assert!(split("BHS|^~\\&\rBTS|0").unwrap().messages.is_empty());
    }

    #[test]
    fn errors() {
        let e = split("PID|1\rMSH|^~\\&").unwrap_err();
        assert_eq!(e.code, ErrorCode::SegmentSequence);
        assert_eq!(e.location.to_err2('^'), "PID^1");
        let e = split("ZQ9|1").unwrap_err();
        assert_eq!(e.location.to_err2('^'), "");
        let e = split("BHS|^~\\&\rPID|1").unwrap_err();
        assert_eq!(e.location.to_err2('^'), "PID^1");
        let e = split("MSH|^~\\&\rBTS|1\rOBX|1").unwrap_err();
        assert_eq!(e.location.to_err2('^'), "OBX^1");
        assert!(split("é").is_err());
        assert!(split("").unwrap().messages.is_empty());
    }
}
