//! Fuzz harness logic shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! and the stable replay test (`tests/it/fuzz_replay.rs`).
//!
//! Each function takes arbitrary bytes, drives one public API of Switchboard
//! and panics (via `assert!`) only when an invariant is broken. Only std and
//! dependencies of the main crate are used, so the integration tests can
//! include this file with `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use switchboard::listener::ack::{self, AckCode, AckOptions, ErrReport};
use switchboard::listener::codec::{Frame, MllpCodec, OVERSIZED_HEAD_BYTES};
use switchboard::parse::fhir::{self, XmlRelease};
use switchboard::parse::{
    Charset, ErrorCode, ErrorLocation, EventContext, Header, decode_frame, events, split,
};

/// Every target by name, for the replay test.
/// One harness entry point.
pub type Target = fn(&[u8]);

pub const TARGETS: &[(&str, Target)] = &[
    ("mllp_codec", mllp_codec),
    ("hl7_parse", hl7_parse),
    ("ack_roundtrip", ack_roundtrip),
    ("fhir_json", fhir_json),
    ("fhir_xml", fhir_xml),
    ("config", config),
    ("roster", roster),
    ("rules", rules),
];

/// What the MLLP decoder yielded, in order.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Message(Vec<u8>),
    Oversized(Vec<u8>),
    Error,
}

/// Feeds `chunks` one after the other into a fresh codec, decoding after
/// each until it asks for more bytes.
fn run_codec<'a>(
    max: usize,
    strict: bool,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Out>, u64) {
    let mut codec = MllpCodec::new(max, strict);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    'feed: for chunk in chunks {
        buf.extend_from_slice(chunk);
        // Bounded: every yield consumes at least one byte or clears buf.
        for _ in 0..=chunk.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => {
                    assert!(m.len() <= max, "frame over max_frame_bytes");
                    assert!(!m.contains(&0x1C), "payload contains an end block");
                    out.push(Out::Message(m.to_vec()));
                }
                Ok(Some(Frame::Oversized(h))) => {
                    assert!(h.len() <= OVERSIZED_HEAD_BYTES, "oversized head too big");
                    out.push(Out::Oversized(h.to_vec()));
                    // The caller closes the connection.
                    break 'feed;
                }
                Ok(None) => continue 'feed,
                Err(_) => {
                    out.push(Out::Error);
                    break 'feed;
                }
            }
        }
        panic!("decoder yielded more items than bytes fed");
    }
    (out, codec.junk_bytes())
}

/// MLLP framer: byte 0 picks strict mode and the frame limit, byte 1 seeds
/// the chunking; the rest is the stream. The same stream fed whole and fed
/// in random chunks must yield the same frames (up to the first oversized
/// frame or error, after which the connection is closed).
pub fn mllp_codec(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let strict = data[0] & 1 == 1;
    let max = match (data[0] >> 1) & 3 {
        0 => 0,
        1 => 16,
        2 => 300,
        _ => 1 << 20,
    };
    let seed = data[1];
    let stream = &data[2..];
    let (whole, junk_whole) = run_codec(max, strict, std::iter::once(stream));
    // Chunk sizes from a tiny LCG over the seed (1..=16 bytes).
    let mut chunks = Vec::new();
    let mut s = u32::from(seed) | 1;
    let mut rest = stream;
    while !rest.is_empty() {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (((s >> 16) % 16) as usize + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    let (chunked, _) = run_codec(max, strict, chunks.iter().copied());
    // One byte at a time, too.
    let (bytewise, _) = run_codec(max, strict, stream.chunks(1));
    let total: usize = whole
        .iter()
        .map(|o| match o {
            Out::Message(m) => m.len() + 2,
            _ => 0,
        })
        .sum();
    assert!(
        junk_whole as usize + total <= stream.len() + 1,
        "junk count too high"
    );
    for other in [&chunked, &bytewise] {
        let cut = |v: &[Out]| {
            v.iter()
                .position(|o| !matches!(o, Out::Message(_)))
                .unwrap_or(v.len())
        };
        let (a, b) = (cut(&whole), cut(other));
        let n = a.min(b);
        assert_eq!(&whole[..n], &other[..n], "chunking changed the frames");
        if a == whole.len() && b == other.len() {
            assert_eq!(&whole, other, "chunking changed the frames");
        }
    }
}

fn ctx() -> EventContext<'static> {
    EventContext {
        sender: "FUZZ",
        timezone: chrono_tz::America::New_York,
    }
}

/// One frame through the whole HL7 pipeline: decode_frame -> split ->
/// Header::sniff/parse -> events.
pub fn hl7_parse(data: &[u8]) {
    for default in [Charset::Utf8, Charset::Iso8859(1), Charset::Ascii] {
        let Ok(decoded) = decode_frame(data, default) else {
            continue;
        };
        let text = &decoded.text;
        assert!(!text.contains('\n'), "LF left after normalisation");
        assert!(!text.ends_with('\r'), "trailing CR after normalisation");
        assert_eq!(
            Charset::from_msh18(&decoded.charset.msh18_name()),
            Some(decoded.charset),
            "charset name does not round-trip"
        );
        let Ok(sp) = split(text) else {
            continue;
        };
        for msg in &sp.messages {
            let sniffed = Header::sniff(msg);
            let _ = sniffed.enhanced_mode();
            let Ok(h) = Header::parse(msg) else {
                continue;
            };
            assert_eq!(h, sniffed, "parse and sniff disagree");
            assert!(!h.control_id.trim().is_empty());
            assert!(!h.message_code.trim().is_empty());
            let _ = switchboard::parse::support(&h.message_code, &h.trigger);
            if let Ok(evs) = events(msg, &h, &ctx()) {
                for e in &evs {
                    let _ = format!("{e:?}");
                }
            }
        }
        if default != Charset::Utf8 {
            break;
        }
    }
}

fn msa2(ack_text: &str, sep: char) -> Option<String> {
    ack_text
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .map(|s| s.split(sep).nth(2).unwrap_or("").to_string())
}

/// ACK round trip: every message whose MSH parses gets an ACK (each code,
/// with and without ERR) that re-parses with the echoed separators, the
/// swapped applications, MSA-2 == MSH-10, MSH-12 and MSH-18 echoed.
pub fn ack_roundtrip(data: &[u8]) {
    let Ok(decoded) = decode_frame(data, Charset::Utf8) else {
        return;
    };
    let Ok(sp) = split(&decoded.text) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let err = ErrReport {
        code: ErrorCode::DataType,
        location: ErrorLocation::field("OBX", 1, 5),
        application_code: Some("FUZZ"),
        detail: "fuzz",
    };
    for msg in sp.messages.iter().take(4) {
        let Ok(h) = Header::parse(msg) else {
            continue;
        };
        for (code, e) in [
            (AckCode::AA, None),
            (AckCode::AE, Some(&err)),
            (AckCode::AR, Some(&err)),
            (AckCode::CA, None),
            (AckCode::CR, Some(&err)),
        ] {
            let opts = AckOptions {
                accept_ack_type: if e.is_some() { "" } else { "AL" },
                application_ack_type: "",
            };
            let bytes = ack::build(&h, code, e, now, "ACKID0001", opts);
            // The ACK is encoded in the charset its MSH-18 declares.
            let text = match Charset::from_msh18(&h.charset) {
                Some(Charset::Iso8859(_)) => {
                    decode_frame(&bytes, Charset::Utf8)
                        .expect("ACK decodes in its declared charset")
                        .text
                }
                _ => String::from_utf8(bytes.clone()).expect("ACK is UTF-8"),
            };
            assert!(!text.contains('\n'), "LF in ACK");
            // The ACK is itself a valid frame for our own parser, unless it
            // echoes an MSH-18 we do not know (a batched message's own MSH-18
            // is echoed as sent, and AR 203 answers echo it too).
            // 8859/n ACKs were decoded above; UTF-8/ASCII ones are
            // re-decoded as bytes here.
            let known = h.charset.bytes().all(|b| b == b' ')
                || matches!(Charset::from_msh18(&h.charset), Some(Charset::Utf8))
                || (Charset::from_msh18(&h.charset) == Some(Charset::Ascii) && text.is_ascii());
            let d_text = if known {
                decode_frame(&bytes, Charset::Utf8)
                    .expect("ACK decodes")
                    .text
            } else {
                text.trim_end_matches('\r').to_string()
            };
            let sp2 = split(&d_text).expect("ACK splits");
            assert_eq!(sp2.messages.len(), 1, "ACK is one message");
            let a = Header::parse(sp2.messages[0]).expect("ACK MSH parses");
            assert_eq!(a.field_sep, h.field_sep, "MSH-1 not echoed");
            assert_eq!(a.encoding, h.encoding, "MSH-2 not echoed");
            assert_eq!(a.sending_application, h.receiving_application);
            assert_eq!(a.sending_facility, h.receiving_facility);
            assert_eq!(a.receiving_application, h.sending_application);
            assert_eq!(a.receiving_facility, h.sending_facility);
            assert_eq!(a.message_code, "ACK");
            assert_eq!(a.trigger, h.trigger, "MSH-9.2 not echoed");
            assert_eq!(a.control_id, "ACKID0001");
            assert_eq!(a.processing_id, h.processing_id, "MSH-11 not echoed");
            assert_eq!(a.version_raw, h.version_raw, "MSH-12 not echoed");
            assert_eq!(a.charset, h.charset, "MSH-18 not echoed");
            assert_eq!(
                msa2(&d_text, h.field_sep).as_deref(),
                Some(h.control_id.as_str()),
                "MSA-2 != MSH-10"
            );
            let msa1 = d_text
                .split('\r')
                .find(|s| s.starts_with("MSA"))
                .and_then(|s| s.split(h.field_sep).nth(1))
                .unwrap_or("");
            assert_eq!(msa1, code.as_str(), "MSA-1 wrong");
        }
    }
}

/// FHIR JSON: resource (untyped and typed), Bundle and notification parsers.
pub fn fhir_json(data: &[u8]) {
    if let Ok(r) = fhir::parse_resource(data, None) {
        assert!(fhir::supported_type(&r.type_name) || !r.type_name.is_empty());
        let typed = fhir::parse_resource(data, Some(&r.type_name));
        assert!(typed.is_ok(), "typed parse rejects what untyped accepted");
    }
    let _ = fhir::parse_resource(data, Some("Observation"));
    if let Ok(b) = fhir::parse_bundle(data) {
        let ctx = b.context();
        for (_, r) in b.resources() {
            if let Some(id) = &r.id {
                let _ = ctx.resolve(&format!("{}/{}", r.type_name, id));
            }
        }
    }
    if let Ok(n) = fhir::parse_notification(data) {
        let _ = n.context();
    }
}

/// FHIR XML to JSON (both releases); the JSON produced must be well formed
/// and is fed to the JSON parsers.
pub fn fhir_xml(data: &[u8]) {
    for release in [XmlRelease::R4, XmlRelease::Notification] {
        if let Ok(json) = fhir::xml_to_json(data, release) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&json).is_ok(),
                "xml_to_json produced invalid JSON"
            );
            fhir_json(&json);
        }
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `switchboard.toml` parsing and validation.
pub fn config(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Err(e) = switchboard::config::parse(Path::new("fuzz/switchboard.toml"), t) {
        let _ = format!("{e}");
    }
}

/// A roster file.
pub fn roster(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Err(es) = switchboard::roster::load_files(&[(PathBuf::from("fuzz.toml"), t.into())]) {
        assert!(!es.is_empty(), "roster error list empty");
        for e in &es {
            let _ = format!("{e}");
        }
    }
}

/// The bundled rosters, which mapping rules refer to.
const ROSTERS: &[(&str, &str)] = &[
    (
        "hospitalist.toml",
        include_str!("../rosters/hospitalist.toml"),
    ),
    (
        "house-supervisor.toml",
        include_str!("../rosters/house-supervisor.toml"),
    ),
    (
        "icu-nursing.toml",
        include_str!("../rosters/icu-nursing.toml"),
    ),
];

/// A mapping-rules file, against the bundled rosters.
pub fn rules(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let files: Vec<(PathBuf, String)> = ROSTERS
        .iter()
        .map(|(p, s)| (PathBuf::from(p), (*s).to_string()))
        .collect();
    let rosters = switchboard::roster::load_files(&files).expect("bundled rosters load");
    if let Err(es) =
        switchboard::rules::load_files(&[(PathBuf::from("fuzz.toml"), t.into())], &rosters)
    {
        assert!(!es.is_empty(), "rules error list empty");
        for e in &es {
            let _ = format!("{e}");
        }
    }
}
