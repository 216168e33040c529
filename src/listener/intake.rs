//! Intake: one MLLP frame -> the journal records and acknowledgements for the
//! messages in it. Pure: no I/O, no clock (the caller passes `now`).
//!
//! Decision order for each message (the README table lists the answers):
//! 1. decode per MSH-18 and split batches (failures: the whole frame is one
//!    rejected message);
//! 2. MSH readable and complete (`Header::parse`);
//! 3. sender: MSH-3.1/MSH-4.1 claim a configured sender, and the connection
//!    is allowed for it (source network, client certificate identity);
//! 4. MSH-11 processing id allowed for that sender (202);
//! 5. MSH-12 version supported, 2.1 to 2.9 (203);
//! 6. message type and trigger routed; otherwise filtered (AA), or AR
//!    200/201 when the sender rejects unknown types;
//! 7. the body parses into events; otherwise AE with the 0357 code.
//!
//! Original mode answers AA/AE/AR on the connection. Enhanced mode (MSH-15
//! or MSH-16 present) answers the accept acknowledgement CA/CR per MSH-15,
//! and queues the application acknowledgement AA/AE/AR per MSH-16 in the
//! outbox, in the same transaction as the message.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ack::{self, AckCode, AckIds, AckOptions, BatchEcho, ErrReport};
use crate::config::SenderConfig;
use crate::event::{ClinicalEvent, Processing};
use crate::journal::{DedupKey, Fate, NewMessage, OutboxEntry};
use crate::parse::{
    self, BatchHeader, Charset, ErrorCode, ErrorLocation, EventContext, Header, ParseError, Support,
};

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Remote address.
    pub addr: SocketAddr,
    /// Identities of the TLS client certificate (subject CN and DNS SANs);
    /// empty without mutual TLS.
    pub identities: Vec<String>,
}

impl PeerInfo {
    /// How the peer is recorded in the journal.
    pub fn describe(&self) -> String {
        match self.identities.first() {
            Some(id) => format!("{} ({id})", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// One message ready for the journal, with what is needed to answer it if
/// the commit fails.
#[derive(Debug)]
pub struct Prepared {
    /// The record to commit (it carries the acknowledgement to send).
    pub message: NewMessage,
    /// The header as far as it could be read.
    pub header: Header,
    /// Enhanced acknowledgement mode.
    pub enhanced: bool,
}

/// Everything in one frame.
#[derive(Debug)]
pub struct PreparedFrame {
    /// The messages, in order.
    pub items: Vec<Prepared>,
    /// Present when the answer is an acknowledgement batch: (FHS, BHS).
    pub envelope: Option<(Option<BatchEcho>, BatchEcho)>,
}

/// What happened to one message before the journal.
enum Outcome {
    Accepted(Vec<ClinicalEvent>),
    Filtered(&'static str),
    /// Rejected at the header (sender, MSH-9/11/12): CR in enhanced mode.
    HeaderRejected(ErrReport),
    /// Rejected for its content: CA + application AE in enhanced mode.
    ContentRejected(ErrReport),
}

fn report(e: &ParseError) -> ErrReport {
    ErrReport {
        code: e.code,
        location: e.location.clone(),
        application_code: None,
        detail: e.detail,
    }
}

/// Shared inputs of intake.
pub struct Intake<'a> {
    /// The sender table.
    pub senders: &'a [SenderConfig],
    /// Receive time.
    pub now: DateTime<Utc>,
    /// Acknowledgement id source.
    pub ids: &'a AckIds,
    /// The connection's peer.
    pub peer: &'a PeerInfo,
}

impl Intake<'_> {
    /// Prepares every message of a complete frame.
    pub fn frame(&self, frame: &[u8]) -> PreparedFrame {
        let sniffed = sniff_raw(frame);
        let claimed = self.claimed(&sniffed);
        let default_charset = claimed
            .and_then(|s| Charset::from_msh18(&s.default_charset))
            .unwrap_or(Charset::Utf8);
        let decoded = match parse::decode_frame(frame, default_charset) {
            Ok(d) => d,
            Err(e) => return self.whole_frame_rejected(frame, sniffed, &e),
        };
        let split = match parse::split(&decoded.text) {
            Ok(s) => s,
            Err(e) => return self.whole_frame_rejected(frame, sniffed, &e),
        };
        let batched = split.messages.len() > 1 || split.batch.is_some() || split.file.is_some();
        let batch_ref = split
            .batch
            .as_ref()
            .or(split.file.as_ref())
            .map(|b| b.control_id.clone())
            .filter(|s| !s.is_empty());
        let mut items = Vec::with_capacity(split.messages.len());
        for text in &split.messages {
            let (raw, raw_charset) = if batched {
                (text.as_bytes().to_vec(), "UTF-8")
            } else {
                (frame.to_vec(), "frame")
            };
            let mut p = self.message(text, raw, raw_charset);
            p.message.batch_ref = batch_ref.clone();
            items.push(p);
        }
        let envelope = batched.then(|| {
            let first = items.first().map(|p| p.header.clone()).unwrap_or_default();
            let echo = |b: &BatchHeader| BatchEcho {
                segment: b.segment,
                field_sep: b.field_sep,
                encoding: b.encoding.clone(),
                sending_application: b.sending_application.clone(),
                sending_facility: b.sending_facility.clone(),
                receiving_application: b.receiving_application.clone(),
                receiving_facility: b.receiving_facility.clone(),
                control_id: b.control_id.clone(),
            };
            let bhs = split.batch.as_ref().map(echo).unwrap_or(BatchEcho {
                segment: "BHS",
                field_sep: first.field_sep,
                encoding: first.encoding.clone(),
                sending_application: first.sending_application.clone(),
                sending_facility: first.sending_facility.clone(),
                receiving_application: first.receiving_application.clone(),
                receiving_facility: first.receiving_facility.clone(),
                control_id: String::new(),
            });
            (split.file.as_ref().map(echo), bhs)
        });
        if items.is_empty() {
            // A batch envelope without messages: answer it as one empty message.
            let e = ParseError::new(
                ErrorCode::SegmentSequence,
                ErrorLocation::segment("MSH", 1),
                "batch holds no message",
            );
            return self.whole_frame_rejected(frame, sniffed, &e);
        }
        PreparedFrame { items, envelope }
    }

    /// Prepares the answer to a frame that exceeded `max_frame_bytes`: only
    /// its head was kept.
    pub fn oversized(&self, head: &[u8]) -> PreparedFrame {
        let e = ParseError::new(
            ErrorCode::ValueTooLong,
            ErrorLocation::default(),
            "frame larger than the configured maximum; not processed",
        );
        self.whole_frame_rejected(head, sniff_raw(head), &e)
    }

    fn claimed(&self, h: &Header) -> Option<&SenderConfig> {
        self.senders
            .iter()
            .find(|s| s.claims(&h.sending_application_id, &h.sending_facility_id))
    }

    fn whole_frame_rejected(&self, frame: &[u8], header: Header, e: &ParseError) -> PreparedFrame {
        let sender = self.claimed(&header).map(|s| s.name.clone());
        let outcome = if e.code.is_reject() {
            Outcome::HeaderRejected(report(e))
        } else {
            Outcome::ContentRejected(report(e))
        };
        let p = self.finish(
            header,
            sender.as_deref(),
            None,
            outcome,
            frame.to_vec(),
            "frame",
            Sha256::digest(frame).into(),
        );
        PreparedFrame {
            items: vec![p],
            envelope: None,
        }
    }

    fn message(&self, text: &str, raw: Vec<u8>, raw_charset: &'static str) -> Prepared {
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let header = match Header::parse(text) {
            Ok(h) => h,
            Err(e) => {
                let sniffed = Header::sniff(text);
                let sender = self.claimed(&sniffed).map(|s| s.name.clone());
                // A broken MSH is a header problem: CR in enhanced mode.
                let outcome = Outcome::HeaderRejected(report(&e));
                return self.finish(
                    sniffed,
                    sender.as_deref(),
                    None,
                    outcome,
                    raw,
                    raw_charset,
                    hash,
                );
            }
        };
        let Some(sender) = self.claimed(&header) else {
            let r = ErrReport {
                code: ErrorCode::Other,
                location: ErrorLocation::field("MSH", 1, 3),
                application_code: Some("UNKNOWN-SENDER"),
                detail: "no configured sender claims this MSH-3/MSH-4",
            };
            return self.finish(
                header,
                None,
                None,
                Outcome::HeaderRejected(r),
                raw,
                raw_charset,
                hash,
            );
        };
        if !self.allowed(sender) {
            let r = ErrReport {
                code: ErrorCode::Other,
                location: ErrorLocation::field("MSH", 1, 3),
                application_code: Some("UNAUTHORIZED-SOURCE"),
                detail: "this connection is not allowed to send for this sender",
            };
            return self.finish(
                header,
                None,
                None,
                Outcome::HeaderRejected(r),
                raw,
                raw_charset,
                hash,
            );
        }
        let name = sender.name.as_str();
        let processing = Processing::from_code(&header.processing_id);
        if !processing.is_some_and(|p| sender.processing_ids.contains(&p)) {
            let e = ParseError::new(
                ErrorCode::UnsupportedProcessingId,
                ErrorLocation::field("MSH", 1, 11),
                "processing id not accepted from this sender",
            );
            return self.finish(
                header,
                Some(name),
                Some(sender),
                Outcome::HeaderRejected(report(&e)),
                raw,
                raw_charset,
                hash,
            );
        }
        if !supported_version(&header.version) {
            let e = ParseError::new(
                ErrorCode::UnsupportedVersionId,
                ErrorLocation::field("MSH", 1, 12),
                "HL7 version not supported (2.1 to 2.9 are)",
            );
            return self.finish(
                header,
                Some(name),
                Some(sender),
                Outcome::HeaderRejected(report(&e)),
                raw,
                raw_charset,
                hash,
            );
        }
        let outcome = match parse::support(&header.message_code, &header.trigger) {
            Support::Supported => {
                let ctx = EventContext {
                    sender: name,
                    timezone: sender.timezone,
                };
                match parse::events(text, &header, &ctx) {
                    Ok(events) => Outcome::Accepted(events),
                    Err(e) if e.code.is_reject() => Outcome::HeaderRejected(report(&e)),
                    Err(e) => Outcome::ContentRejected(report(&e)),
                }
            }
            Support::UnsupportedType if sender.reject_unknown_types => {
                let e = ParseError::new(
                    ErrorCode::UnsupportedMessageType,
                    ErrorLocation::field("MSH", 1, 9),
                    "message type not routed by this gateway",
                );
                Outcome::HeaderRejected(report(&e))
            }
            Support::UnsupportedTrigger if sender.reject_unknown_types => {
                let e = ParseError::new(
                    ErrorCode::UnsupportedEventCode,
                    ErrorLocation::field("MSH", 1, 9),
                    "trigger event not routed by this gateway",
                );
                Outcome::HeaderRejected(report(&e))
            }
            Support::UnsupportedType => Outcome::Filtered("message type not routed"),
            Support::UnsupportedTrigger => Outcome::Filtered("trigger event not routed"),
        };
        self.finish(
            header,
            Some(name),
            Some(sender),
            outcome,
            raw,
            raw_charset,
            hash,
        )
    }

    /// True when the connection may speak for `sender`.
    fn allowed(&self, sender: &SenderConfig) -> bool {
        let by_network = sender.networks.is_empty()
            || sender
                .networks
                .iter()
                .any(|n| n.contains(&self.peer.addr.ip()));
        let by_cert = sender.certificates.is_empty()
            || sender.certificates.iter().any(|c| {
                self.peer
                    .identities
                    .iter()
                    .any(|i| i.eq_ignore_ascii_case(c))
            });
        by_network && by_cert
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        header: Header,
        sender_name: Option<&str>,
        sender: Option<&SenderConfig>,
        outcome: Outcome,
        raw: Vec<u8>,
        raw_charset: &str,
        hash: [u8; 32],
    ) -> Prepared {
        let enhanced = header.enhanced_mode();
        let (fate, reason, err, events) = match outcome {
            Outcome::Accepted(ev) => (Fate::Accepted, None, None, ev),
            Outcome::Filtered(why) => (Fate::Filtered, Some(why.to_string()), None, vec![]),
            Outcome::HeaderRejected(r) => (
                Fate::Rejected,
                Some(r.detail.to_string()),
                Some((r, true)),
                vec![],
            ),
            Outcome::ContentRejected(r) => (
                Fate::Rejected,
                Some(r.detail.to_string()),
                Some((r, false)),
                vec![],
            ),
        };
        let err_ref = err.as_ref().map(|(r, _)| r);
        let header_stage = err.as_ref().is_some_and(|(_, h)| *h);
        // Original mode: AR for reasons unrelated to content (unsupported
        // type/trigger/processing id/version, an unknown or unauthorised
        // sender); AE for errors in the content.
        let original_code = match &err {
            None => AckCode::AA,
            Some((r, _)) if r.code.is_reject() || r.application_code.is_some() => AckCode::AR,
            Some(_) => AckCode::AE,
        };

        let (ack_code, ack_bytes, app_ack) = if !enhanced {
            let bytes = ack::build(
                &header,
                original_code,
                err_ref,
                self.now,
                &self.ids.next_id(),
                AckOptions::default(),
            );
            (Some(original_code), bytes, None)
        } else {
            let accept = if header_stage {
                AckCode::CR
            } else {
                AckCode::CA
            };
            let send_accept = match header.accept_ack_type.as_str() {
                "NE" => false,
                "ER" => accept != AckCode::CA,
                "SU" => accept == AckCode::CA,
                _ => true,
            };
            let (code, bytes) = if send_accept {
                let accept_err = if header_stage { err_ref } else { None };
                (
                    Some(accept),
                    ack::build(
                        &header,
                        accept,
                        accept_err,
                        self.now,
                        &self.ids.next_id(),
                        AckOptions::default(),
                    ),
                )
            } else {
                (None, Vec::new())
            };
            let send_app = !header_stage
                && match header.application_ack_type.as_str() {
                    "AL" => true,
                    "ER" => original_code != AckCode::AA,
                    "SU" => original_code == AckCode::AA,
                    _ => false,
                };
            let app = match (send_app, sender) {
                (true, Some(s)) => {
                    let id = self.ids.next_id();
                    let await_answer = s.return_destination.as_ref().is_none_or(|d| d.await_answer);
                    let opts = AckOptions {
                        accept_ack_type: if await_answer { "AL" } else { "NE" },
                        application_ack_type: "NE",
                    };
                    Some(OutboxEntry {
                        destination: s.name.clone(),
                        payload: ack::build(&header, original_code, err_ref, self.now, &id, opts),
                        control_id: id,
                    })
                }
                _ => None,
            };
            (code, bytes, app)
        };

        let message = NewMessage {
            received_at: self.now,
            peer: self.peer.describe(),
            sender: sender_name.map(str::to_string),
            key: DedupKey {
                msh3: header.sending_application.clone(),
                msh4: header.sending_facility.clone(),
                control_id: header.control_id.clone(),
            },
            message_type: header.message_code.clone(),
            trigger: header.trigger.clone(),
            processing_id: header.processing_id.clone(),
            raw,
            raw_charset: raw_charset.to_string(),
            body_sha256: hash,
            fate,
            reason,
            error_code: err_ref.map(|r| r.code.code()),
            error_location: err_ref
                .map(|r| r.location.to_err2('^'))
                .filter(|s| !s.is_empty()),
            events,
            ack_code: ack_code.map(|c| c.as_str().to_string()),
            ack: ack_bytes,
            app_ack,
            batch_ref: None,
        };
        Prepared {
            message,
            header,
            enhanced,
        }
    }
}

/// The answer when the journal cannot commit: AR (CE in enhanced mode) with
/// ERR 207. Never AA/CA.
pub fn storage_failure_ack(p: &Prepared, now: DateTime<Utc>, ids: &AckIds) -> Vec<u8> {
    let code = if p.enhanced { AckCode::CE } else { AckCode::AR };
    let r = ErrReport {
        code: ErrorCode::ApplicationInternal,
        location: ErrorLocation::default(),
        application_code: None,
        detail: "message could not be stored; resend later",
    };
    ack::build(
        &p.header,
        code,
        Some(&r),
        now,
        &ids.next_id(),
        AckOptions::default(),
    )
}

/// MSH-12 versions Switchboard accepts: 2.1 through 2.9.x.
fn supported_version(v: &str) -> bool {
    let mut it = v.split('.');
    let major = it.next().and_then(|m| m.parse::<u32>().ok());
    let minor = it.next().and_then(|m| m.parse::<u32>().ok());
    matches!((major, minor), (Some(2), Some(1..=9)))
}

/// Reads the first MSH of raw bytes (ASCII-compatible in every supported
/// charset) without decoding the rest, so even an undecodable frame can be
/// answered with its own MSH-10.
fn sniff_raw(frame: &[u8]) -> Header {
    let start = frame.windows(3).position(|w| w == b"MSH").unwrap_or(0);
    let end = frame[start..]
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .map_or(frame.len(), |e| start + e);
    let first = String::from_utf8_lossy(&frame[start..end]);
    Header::sniff(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["2.1", "2.3.1", "2.5.1", "2.9", "2.8.2"] {
            assert!(supported_version(ok), "{ok}");
        }
        for bad in ["2.0", "3.0", "", "2", "x.y", "2.10"] {
            assert!(!supported_version(bad), "{bad}");
        }
    }
}
