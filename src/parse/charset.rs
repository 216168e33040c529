//! Stage 1: the bytes of one MLLP frame to text.
//!
//! Guarantees of [`decode_frame`]:
//! - a leading UTF-8 byte order mark is removed;
//! - each message is decoded in the character set its own MSH-18 names (read
//!   from the raw bytes: MSH is ASCII in every supported character set), else
//!   in the sender's configured default: in a batch (FHS/BHS … MSH … MSH …)
//!   the bytes from one MSH up to the next MSH are one message's, and
//!   envelope segments before the first MSH go with the first message. An
//!   unknown name is refused, never guessed;
//! - bytes that are invalid in that character set are refused, never replaced
//!   (in a batch this refuses the whole frame, as any decoding error does);
//! - the text uses CR as the only segment terminator: CRLF, LF and CR all
//!   become CR; empty (and blank) segments are dropped, and there is no
//!   trailing terminator, so `text.split('\r')` yields exactly the segments.
//!
//! ISO-8859-n are decoded with the WHATWG encodings of `encoding_rs`. WHATWG
//! maps the label ISO-8859-1 to windows-1252 (a superset on the printable
//! range: 0x80..0x9F become typographic characters instead of C1 controls)
//! and ISO-8859-9 / ISO-8859-11 to windows-1254 / windows-874 likewise. This
//! is accepted: C1 controls never carry meaning in HL7 text.

use super::error::{ErrorCode, ErrorLocation, ParseError};

/// Character sets named by MSH-18 (HL7 table 0211) that Switchboard accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Charset {
    /// `ASCII` (also `ISO IR6`): 7-bit only.
    Ascii,
    /// `8859/n`, n in 1..=16 except 12 (which does not exist).
    Iso8859(u8),
    /// `UNICODE UTF-8` (also `UTF-8`, `UTF8`).
    Utf8,
}

impl Charset {
    /// From an MSH-18 value (`ASCII`, `8859/1`..`8859/16`, `UNICODE UTF-8`;
    /// also `UTF-8`, `UTF8`, `ISO IR6`), case-insensitively and ignoring
    /// surrounding blanks; `None` when unknown.
    pub fn from_msh18(name: &str) -> Option<Charset> {
        let n = name.trim().to_ascii_uppercase();
        match n.as_str() {
            "ASCII" | "ISO IR6" => Some(Charset::Ascii),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" => Some(Charset::Utf8),
            _ => {
                let num: u8 = n.strip_prefix("8859/")?.parse().ok()?;
                ((1..=16).contains(&num) && num != 12).then_some(Charset::Iso8859(num))
            }
        }
    }

    /// The canonical MSH-18 spelling (`ASCII`, `8859/1`, `UNICODE UTF-8`).
    pub fn msh18_name(self) -> String {
        match self {
            Charset::Ascii => "ASCII".to_string(),
            Charset::Iso8859(n) => format!("8859/{n}"),
            Charset::Utf8 => "UNICODE UTF-8".to_string(),
        }
    }

    fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Ascii => bytes
                .is_ascii()
                .then(|| String::from_utf8_lossy(bytes).into_owned()),
            Charset::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
            Charset::Iso8859(n) => {
                let label = format!("iso-8859-{n}");
                let enc = encoding_rs::Encoding::for_label(label.as_bytes())?;
                enc.decode_without_bom_handling_and_without_replacement(bytes)
                    .map(|c| c.into_owned())
            }
        }
    }
}

/// A frame decoded to text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedFrame {
    /// The text: segments separated by a single CR, no trailing CR.
    pub text: String,
    /// The character set of the first message (each message of a batch
    /// was decoded in its own).
    pub charset: Charset,
    /// The first message's raw MSH-18 value as sent (first repetition,
    /// untrimmed), echoed in the ACK; empty when MSH-18 was empty and the
    /// default was used.
    pub charset_name: String,
}

fn msh18_loc() -> ErrorLocation {
    ErrorLocation::field("MSH", 1, 18)
}

/// Bytes of one MLLP frame to text; see the module documentation.
///
/// Errors (no content ever quoted):
/// - empty or blank frame: `SegmentSequence`, no location;
/// - unknown MSH-18 name: `UnsupportedVersionId` at `MSH^1^18` (the message
///   is rejected, `AR`, rather than decoded with a guessed charset);
/// - bytes invalid for the character set: `DataType` at `MSH^1^18`.
pub fn decode_frame(bytes: &[u8], default: Charset) -> Result<DecodedFrame, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::new(
            ErrorCode::SegmentSequence,
            ErrorLocation::default(),
            "empty frame",
        ));
    }
    let mut text = String::with_capacity(bytes.len());
    let mut first: Option<(Charset, String)> = None;
    for run in message_runs(bytes) {
        let (charset, name) = run_charset(run, default)?;
        let decoded = charset.decode(run).ok_or_else(|| {
            ParseError::new(
                ErrorCode::DataType,
                msh18_loc(),
                match charset {
                    Charset::Ascii => "non-ASCII bytes in a message declared ASCII",
                    Charset::Utf8 => "bytes are not valid UTF-8",
                    Charset::Iso8859(_) => {
                        "bytes are not valid in the declared ISO-8859 character set"
                    }
                },
            )
        })?;
        text.push_str(&decoded);
        first.get_or_insert((charset, name));
    }
    let (charset, charset_name) = first.unwrap_or((default, String::new()));
    Ok(DecodedFrame {
        text: normalise_segments(&text),
        charset,
        charset_name,
    })
}

/// The character set of one message's bytes: its MSH-18 (first
/// repetition), else `default` when MSH-18 is absent or blank.
fn run_charset(run: &[u8], default: Charset) -> Result<(Charset, String), ParseError> {
    match raw_msh18(run) {
        Some(raw) if !raw.iter().all(|b| *b == b' ') => {
            match std::str::from_utf8(raw).ok().and_then(Charset::from_msh18) {
                Some(cs) => Ok((cs, String::from_utf8_lossy(raw).into_owned())),
                None => Err(ParseError::new(
                    ErrorCode::UnsupportedVersionId,
                    msh18_loc(),
                    "MSH-18 names an unsupported character set",
                )),
            }
        }
        _ => Ok((default, String::new())),
    }
}

/// Splits raw frame bytes into per-message runs: a new run starts at every
/// line that begins with `MSH` except the first such line, so the first run
/// also holds any envelope before it (FHS/BHS) and each run ends with the
/// line terminator before the next MSH. Concatenated, the runs are the
/// input. CR and LF never occur inside a multi-byte character of any
/// supported character set, so line starts are found on the raw bytes.
fn message_runs(bytes: &[u8]) -> Vec<&[u8]> {
    let mut runs = Vec::new();
    let mut run_start = 0usize;
    let mut seen_msh = false;
    let mut line_start = 0usize;
    loop {
        if bytes[line_start..].starts_with(b"MSH") {
            if seen_msh {
                runs.push(&bytes[run_start..line_start]);
                run_start = line_start;
            }
            seen_msh = true;
        }
        match bytes[line_start..]
            .iter()
            .position(|b| *b == b'\r' || *b == b'\n')
        {
            Some(p) => line_start += p + 1,
            None => break,
        }
    }
    runs.push(&bytes[run_start..]);
    runs
}

/// CRLF, LF and CR become one CR; empty and blank segments are dropped; no
/// trailing terminator.
pub(crate) fn normalise_segments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for seg in text.split(['\r', '\n']) {
        if seg.chars().all(|c| c == ' ' || c == '\t') {
            continue;
        }
        if !out.is_empty() {
            out.push('\r');
        }
        out.push_str(seg);
    }
    out
}

/// MSH-18 (first repetition) of the first MSH, from the raw bytes. `None`
/// when there is no MSH or it has no 18th field.
fn raw_msh18(bytes: &[u8]) -> Option<&[u8]> {
    let seg = bytes
        .split(|b| *b == b'\r' || *b == b'\n')
        .find(|s| s.starts_with(b"MSH"))?;
    let sep = *seg.get(3)?;
    // parts[0] = "MSH", parts[k] = MSH-(k+1).
    let field = seg.split(|b| *b == sep).nth(17)?;
    let rep_sep = seg
        .split(|b| *b == sep)
        .nth(1)
        .and_then(|enc| enc.get(1))
        .copied();
    Some(match rep_sep {
        Some(r) if r != sep => field.split(|b| *b == r).next().unwrap_or(field),
        _ => field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh(charset: &str) -> String {
        format!("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||{charset}\rPID|||1")
    }

    #[test]
    fn names() {
        assert_eq!(Charset::from_msh18("ascii"), Some(Charset::Ascii));
        assert_eq!(Charset::from_msh18("8859/1"), Some(Charset::Iso8859(1)));
        assert_eq!(Charset::from_msh18("8859/15"), Some(Charset::Iso8859(15)));
        assert_eq!(Charset::from_msh18("8859/12"), None);
        assert_eq!(Charset::from_msh18("8859/17"), None);
        assert_eq!(Charset::from_msh18("unicode utf-8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_msh18("UTF8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_msh18("EBCDIC"), None);
        for n in (1..=16).filter(|n| *n != 12) {
            // every accepted ISO-8859 part has a WHATWG encoding
            assert!(Charset::Iso8859(n).decode(b"abc").is_some(), "8859/{n}");
        }
    }

    #[test]
    fn latin1_e_acute() {
        let mut bytes = msh("8859/1").into_bytes();
        bytes.extend_from_slice(b"^^^^^ZZTEST\xE9");
        let f = decode_frame(&bytes, Charset::Utf8).unwrap();
        assert!(f.text.ends_with("ZZTEST\u{e9}"));
        assert_eq!(f.charset, Charset::Iso8859(1));
        assert_eq!(f.charset_name, "8859/1");
    }

    #[test]
    fn invalid_utf8_is_data_type() {
        let mut bytes = msh("UNICODE UTF-8").into_bytes();
        bytes.push(0xE9);
        let e = decode_frame(&bytes, Charset::Ascii).unwrap_err();
        assert_eq!(e.code, ErrorCode::DataType);
        assert_eq!(e.location.to_err2('^'), "MSH^1^18");
        // default charset applies when MSH-18 is empty
        let mut bytes = msh("").into_bytes();
        bytes.push(0xE9);
        let e = decode_frame(&bytes, Charset::Utf8).unwrap_err();
        assert_eq!(e.code, ErrorCode::DataType);
        assert!(decode_frame(&bytes, Charset::Iso8859(1)).is_ok());
    }

    #[test]
    fn non_ascii_under_ascii() {
        let e =
            decode_frame(msh("ASCII").replace("PID", "PÏD").as_bytes(), Charset::Utf8).unwrap_err();
        assert_eq!(e.code, ErrorCode::DataType);
        assert_eq!(e.location.to_err2('^'), "MSH^1^18");
    }

    #[test]
    fn unknown_charset_rejected() {
        let e = decode_frame(msh("KLINGON").as_bytes(), Charset::Utf8).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersionId);
        assert_eq!(e.location.to_err2('^'), "MSH^1^18");
        assert!(e.code.is_reject());
    }

    #[test]
    fn bom_and_line_endings() {
        let f = decode_frame(
            b"\xEF\xBB\xBFMSH|^~\\&|A\r\nEVN|A01\nPID|1\rPV1|1\r\n\r\n\n",
            Charset::Utf8,
        )
        .unwrap();
        assert_eq!(f.text, "MSH|^~\\&|A\rEVN|A01\rPID|1\rPV1|1");
        assert_eq!(f.text.split('\r').count(), 4);
    }

    #[test]
    fn empty_frame() {
        for b in [&b""[..], b" \r\n\t"] {
            let e = decode_frame(b, Charset::Utf8).unwrap_err();
            assert_eq!(e.code, ErrorCode::SegmentSequence);
            assert_eq!(e.location.to_err2('^'), "");
        }
    }

    /// A batch whose messages declare different character sets: each is
    /// decoded in its own (the first MSH-18 used to decode the whole frame,
    /// so a Latin-1 second message was refused as invalid UTF-8, and UTF-8
    /// after a Latin-1 first message became mojibake).
    #[test]
    fn batch_messages_are_decoded_in_their_own_msh18_charset() {
        let mut bytes = b"BHS|^~\\&|LAB|HOSP\r".to_vec();
        bytes.extend_from_slice(msh("UNICODE UTF-8").as_bytes());
        bytes.extend_from_slice("^^^^^Ren\u{e9}U\r".as_bytes());
        bytes.extend_from_slice(msh("8859/1").as_bytes());
        bytes.extend_from_slice(b"^^^^^Ren\xE9L\r");
        bytes.extend_from_slice(msh("").as_bytes());
        bytes.extend_from_slice("^^^^^Ren\u{e9}D\rBTS|3".as_bytes());
        let f = decode_frame(&bytes, Charset::Utf8).unwrap();
        let names: Vec<&str> = f
            .text
            .split('\r')
            .filter(|s| s.starts_with("PID"))
            .collect();
        assert_eq!(
            names,
            [
                "PID|||1^^^^^Ren\u{e9}U",
                "PID|||1^^^^^Ren\u{e9}L",
                "PID|||1^^^^^Ren\u{e9}D"
            ]
        );
        assert_eq!(f.charset, Charset::Utf8, "the first message's charset");
        assert!(f.text.starts_with("BHS|") && f.text.ends_with("BTS|3"));

        // Latin-1 first, UTF-8 second: the UTF-8 bytes stay one character.
        let mut bytes = msh("8859/1").into_bytes();
        bytes.extend_from_slice(b"^^^^^\xE9\r");
        bytes.extend_from_slice(msh("UNICODE UTF-8").as_bytes());
        bytes.extend_from_slice("^^^^^\u{e9}".as_bytes());
        let f = decode_frame(&bytes, Charset::Utf8).unwrap();
        assert_eq!(f.charset, Charset::Iso8859(1));
        assert_eq!(f.text.matches('\u{e9}').count(), 2, "{:?}", f.text);
        assert!(!f.text.contains('\u{c3}'), "no mojibake: {:?}", f.text);

        // A later message's bytes are checked against its own MSH-18 too.
        let mut bytes = msh("8859/1").into_bytes();
        bytes.extend_from_slice(b"\r");
        bytes.extend_from_slice(msh("UNICODE UTF-8").as_bytes());
        bytes.push(0xE9);
        let e = decode_frame(&bytes, Charset::Utf8).unwrap_err();
        assert_eq!(e.code, ErrorCode::DataType);
        let mut bytes = msh("").into_bytes();
        bytes.extend_from_slice(b"\r");
        bytes.extend_from_slice(msh("KLINGON").as_bytes());
        let e = decode_frame(&bytes, Charset::Utf8).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersionId);
    }

    #[test]
    fn message_runs_cover_the_input_and_start_at_each_later_msh() {
        let bytes = b"FHS|x\r\nBHS|y\nMSH|a\rPID|1\rMSH|b\r\nMSHX\rBTS|2";
        let runs = message_runs(bytes);
        assert_eq!(runs.concat(), bytes.to_vec());
        assert_eq!(
            runs,
            [
                &b"FHS|x\r\nBHS|y\nMSH|a\rPID|1\r"[..],
                &b"MSH|b\r\n"[..],
                &b"MSHX\rBTS|2"[..]
            ]
        );
        assert_eq!(message_runs(b"PID|1"), [&b"PID|1"[..]]);
        assert_eq!(message_runs(b""), [&b""[..]]);
        // "MSH" inside a line does not start a message
        assert_eq!(message_runs(b"MSH|a|MSH\rZ|MSH").len(), 1);
    }

    #[test]
    fn msh18_after_fhs_and_repetitions() {
        let bytes = b"FHS|^~\\&|X\rBHS|^~\\&\rMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/2~UNICODE UTF-8\rPID|||1";
        let f = decode_frame(bytes, Charset::Utf8).unwrap();
        assert_eq!(f.charset, Charset::Iso8859(2));
        assert_eq!(f.charset_name, "8859/2");
    }
}
