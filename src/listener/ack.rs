//! Building HL7 acknowledgements, exactly.
//!
//! The ACK's MSH swaps sender and receiver (MSH-3/4 <-> MSH-5/6), echoes the
//! inbound field separator and encoding characters, MSH-11, MSH-12 and
//! MSH-18, and says `ACK^<trigger>^ACK` in MSH-9; MSA-2 is the inbound MSH-10.
//! Error answers carry an ERR segment: for v2.5 and later ERR-2 location,
//! ERR-3 table 0357 code, ERR-4 severity `E`, ERR-8 a fixed explanation;
//! for v2.1–2.4 the older ERR-1 (segment^sequence^field^code&text&HL70357)
//! and MSA-3 text. Echoed values are copied raw (still escaped), so the
//! answer is valid in the sender's own encoding. Nothing from the message
//! body is ever copied into an acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::parse::{ErrorCode, ErrorLocation, Header};

/// The acknowledgement codes of HL7 table 0008.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Original mode: accepted.
    AA,
    /// Original mode: error in content.
    AE,
    /// Original mode: rejected for reasons unrelated to content; resend.
    AR,
    /// Enhanced mode: committed.
    CA,
    /// Enhanced mode: could not commit; resend.
    CE,
    /// Enhanced mode: MSH-9, MSH-11 or MSH-12 unacceptable.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }
}

/// The error reported in an ERR segment: content free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrReport {
    /// Table 0357 code.
    pub code: ErrorCode,
    /// ERR-2 location.
    pub location: ErrorLocation,
    /// Local application error (ERR-5), e.g. `UNAUTHORIZED-SENDER`.
    pub application_code: Option<&'static str>,
    /// ERR-8 user message: fixed text.
    pub detail: &'static str,
}

/// Generates acknowledgement control ids (MSH-10 of our ACKs): unique across
/// restarts (start time in µs, hex) and within a run (a counter).
#[derive(Debug)]
pub struct AckIds {
    prefix: String,
    next: AtomicU64,
}

impl AckIds {
    /// Ids prefixed by the start time.
    pub fn new(start: DateTime<Utc>) -> Self {
        AckIds {
            prefix: format!("{:013X}", start.timestamp_micros().max(0)),
            next: AtomicU64::new(1),
        }
    }

    /// The next id (20 characters for the first 268 million).
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{:07X}", self.prefix, n)
    }
}

/// Formats an HL7 DTM in UTC with an explicit offset.
pub fn hl7_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S%.3f+0000").to_string()
}

/// True when the version uses the v2.5+ ERR layout (ERR-2..ERR-8).
fn modern_err(version: &str) -> bool {
    let mut it = version.split('.');
    let major: u32 = it.next().and_then(|m| m.parse().ok()).unwrap_or(2);
    let minor: u32 = it
        .next()
        .and_then(|m| {
            m.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(5);
    major > 2 || minor >= 5
}

/// The options that differ between an accept/original ACK and an
/// application acknowledgement sent through the outbox.
#[derive(Clone, Copy, Debug, Default)]
pub struct AckOptions {
    /// MSH-15 of the acknowledgement itself (`AL` to ask the receiver to
    /// confirm an application acknowledgement), empty for none.
    pub accept_ack_type: &'static str,
    /// MSH-16 of the acknowledgement itself.
    pub application_ack_type: &'static str,
}

/// Builds one acknowledgement for the message with header `h`.
pub fn build(
    h: &Header,
    code: AckCode,
    err: Option<&ErrReport>,
    now: DateTime<Utc>,
    ack_id: &str,
    opts: AckOptions,
) -> Vec<u8> {
    let f = if h.field_sep == '\0' {
        '|'
    } else {
        h.field_sep
    };
    let enc = if h.encoding.is_empty() {
        "^~\\&"
    } else {
        h.encoding.as_str()
    };
    let comp = enc.chars().next().unwrap_or('^');
    let sub = enc.chars().nth(3).unwrap_or('&');
    let trigger = if h.trigger.is_empty() {
        ""
    } else {
        h.trigger.as_str()
    };
    let version = if h.version_raw.is_empty() {
        "2.5.1"
    } else {
        h.version_raw.as_str()
    };
    let processing = match (h.processing_id.as_str(), h.processing_mode.as_str()) {
        ("", _) => "P".to_string(),
        (id, "") => id.to_string(),
        (id, mode) => format!("{id}{comp}{mode}"),
    };
    let mut msh: Vec<String> = vec![
        "MSH".into(),
        enc.into(),
        h.receiving_application.clone(),
        h.receiving_facility.clone(),
        h.sending_application.clone(),
        h.sending_facility.clone(),
        hl7_timestamp(now),
        String::new(),
        format!("ACK{comp}{trigger}{comp}ACK"),
        ack_id.into(),
        processing,
        version.into(),
        String::new(),
        String::new(),
        opts.accept_ack_type.into(),
        opts.application_ack_type.into(),
        String::new(),
        h.charset.clone(),
    ];
    while msh.len() > 12 && msh.last().is_some_and(|s| s.is_empty()) {
        msh.pop();
    }
    // MSH-1 is the separator itself: "MSH" + sep + MSH-2 ...
    let mut out = String::with_capacity(256);
    out.push_str("MSH");
    out.push(f);
    out.push_str(&msh[1..].join(&f.to_string()));
    out.push('\r');

    let modern = modern_err(&h.version);
    out.push_str("MSA");
    out.push(f);
    out.push_str(code.as_str());
    out.push(f);
    out.push_str(&h.control_id);
    if let (Some(e), false) = (err, modern) {
        out.push(f);
        out.push_str(e.code.text());
    }
    out.push('\r');

    if let Some(e) = err {
        out.push_str("ERR");
        out.push(f);
        if modern {
            // ERR-1 (empty) | ERR-2 location | ERR-3 code | ERR-4 severity | ERR-5 app code | ERR-6 | ERR-7 | ERR-8 message
            out.push(f);
            out.push_str(&e.location.to_err2(comp));
            out.push(f);
            out.push_str(&format!(
                "{}{comp}{}{comp}HL70357",
                e.code.code(),
                e.code.text()
            ));
            out.push(f);
            out.push('E');
            out.push(f);
            if let Some(app) = e.application_code {
                out.push_str(app);
            }
            out.push(f);
            out.push(f);
            out.push(f);
            out.push_str(e.detail);
        } else {
            // ERR-1 ELD: segment^sequence^field^code&text&HL70357
            let loc = &e.location;
            let num = |n: u32| if n == 0 { String::new() } else { n.to_string() };
            out.push_str(&format!(
                "{}{comp}{}{comp}{}{comp}{}{sub}{}{sub}HL70357",
                loc.segment,
                num(loc.sequence),
                num(loc.field),
                e.code.code(),
                e.code.text()
            ));
        }
        out.push('\r');
    }
    encode_as(&h.charset, out)
}

/// The acknowledgement in the character set its MSH-18 declares (the
/// sender's own), so echoed fields such as MSA-2 come back byte for byte.
/// ISO 8859 parts use the same WHATWG encodings the decoder uses; UTF-8,
/// ASCII and unknown names stay UTF-8.
fn encode_as(charset: &str, text: String) -> Vec<u8> {
    match crate::parse::Charset::from_msh18(charset) {
        Some(crate::parse::Charset::Iso8859(n)) => {
            match encoding_rs::Encoding::for_label(format!("iso-8859-{n}").as_bytes()) {
                Some(enc) => enc.encode(&text).0.into_owned(),
                None => text.into_bytes(),
            }
        }
        _ => text.into_bytes(),
    }
}

/// A batch header echoed in an acknowledgement batch.
#[derive(Clone, Debug)]
pub struct BatchEcho {
    /// `FHS` or `BHS`.
    pub segment: &'static str,
    /// Field separator.
    pub field_sep: char,
    /// Encoding characters.
    pub encoding: String,
    /// Their sending application / facility, our receiving ones.
    pub sending_application: String,
    /// See `sending_application`.
    pub sending_facility: String,
    /// Their receiving application / facility, our sending ones.
    pub receiving_application: String,
    /// See `receiving_application`.
    pub receiving_facility: String,
    /// Their batch control id (FHS-11/BHS-11), echoed in FHS-12/BHS-12.
    pub control_id: String,
}

/// Wraps acknowledgements in an acknowledgement batch: optional FHS, BHS,
/// the ACK messages, BTS with the count, optional FTS.
pub fn build_batch(
    file: Option<&BatchEcho>,
    batch: &BatchEcho,
    acks: &[&[u8]],
    now: DateTime<Utc>,
    ids: &AckIds,
) -> Vec<u8> {
    let header = |b: &BatchEcho, seg: &str| -> String {
        let f = b.field_sep;
        let enc = if b.encoding.is_empty() {
            "^~\\&"
        } else {
            &b.encoding
        };
        let fields = [
            enc.to_string(),
            b.receiving_application.clone(),
            b.receiving_facility.clone(),
            b.sending_application.clone(),
            b.sending_facility.clone(),
            hl7_timestamp(now),
            String::new(),
            String::new(),
            String::new(),
            ids.next_id(),
            b.control_id.clone(),
        ];
        format!("{seg}{f}{}\r", fields.join(&f.to_string()))
    };
    let mut out = Vec::new();
    if let Some(fhs) = file {
        out.extend_from_slice(header(fhs, "FHS").as_bytes());
    }
    out.extend_from_slice(header(batch, "BHS").as_bytes());
    for a in acks {
        out.extend_from_slice(a);
    }
    out.extend_from_slice(format!("BTS{}{}\r", batch.field_sep, acks.len()).as_bytes());
    if let Some(fhs) = file {
        out.extend_from_slice(format!("FTS{}1\r", fhs.field_sep).as_bytes());
    }
    out
}
