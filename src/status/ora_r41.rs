//! IHE PCD ACM "Report Alert Status" [PCD-05]: an ORA^R41 to the alarm
//! reporter an alarm came from, over MLLP (optionally TLS), for each status
//! of the alert it raised — delivered, read, accepted, declined (sent as
//! `Rejected`), resolved and cancelled.
//!
//! The message (HL7 v2.6, UTF-8):
//!
//! ```text
//! MSH|^~\&|<application>|<facility>|<their MSH-3>|<their MSH-4>|<now>||ORA^R41^ORA_R41|<id>|<their MSH-11>|2.6|||AL|NE||UNICODE UTF-8
//! MSA|AA|<MSH-10 of their ORU^R40>
//! PRT|1|UC||RCT^Result Copies To^HL70912|<member id>^<name>^^^^^^^<authority>||||||<status time>
//! OBR|1||<alarm id (their OBR-3)>|<alarm type (their event identification OBX-3)>|||<status time>
//! OBX|1|ST|ALERT_STATUS^Alert Status^L||<Delivered|Read|Accepted|Rejected|Resolved|Cancelled>||||||F|||<status time>
//! ```
//!
//! Structure, and what was verified: HL7 v2.8+ defines ORA_R41 as MSH,
//! [SFT], [UAC], MSA, [ERR], [{PRT}] ("Participation (Acknowledging
//! User)"); MSA-2 names the ORU^R40 the status is about, and PRT names the
//! recipient the status is about (PRT is left out when no person is, e.g.
//! cancelled). The OBR (the alarm, by the filler order number the reporter
//! gave it in its R40) and OBX (the status word) after them follow the
//! PCD-04 layout so the reporter can match the status to the alarm; the IHE
//! PCD TF-2 text of PCD-05 could not be consulted while writing this, so
//! these two segments are this gateway's reading of it and should be
//! checked against TF-2 before claiming conformance.
//!
//! Every value taken from the alert or the roster is HL7-escaped; MSH-5 and
//! MSH-6 echo the reporter's own MSH-3 and MSH-4 as it sent them (already
//! escaped in its encoding). Nothing else of the alarm (patient, location,
//! values) is sent back. The answer must be an acknowledgement whose MSA-2
//! is this message's MSH-10: `AA`/`CA` is done, `AE`/`AR`/`CR` is a refusal
//! (dead-lettered), `CE` or no answer is retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::{Status, StatusRow};
use crate::alert::model::Alert;
use crate::config::AlarmSourceConfig;
use crate::delivery::Outcome;
use crate::event::{Code, Processing};
use crate::listener::ack::hl7_timestamp;
use crate::listener::codec::{self, Frame, MllpCodec};
use crate::listener::connection::Shared;

/// The status word of OBX-5.
pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Notified => "Notified",
        Status::Delivered => "Delivered",
        Status::Read => "Read",
        Status::Accepted => "Accepted",
        Status::Declined => "Rejected",
        Status::Resolved => "Resolved",
        Status::Cancelled => "Cancelled",
        Status::Exhausted => "Unanswered",
    }
}

/// Escapes text for a field of a message using `|^~\&`: the delimiters
/// become escape sequences, line breaks a space.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The person a status is about (PRT-5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Participant {
    /// Provider id (XCN.1), else the roster member id.
    pub id: String,
    /// Name shown (XCN.2).
    pub name: String,
    /// Assigning authority (XCN.9), e.g. `NPI`; `SWITCHBOARD` for a roster id.
    pub authority: String,
}

/// Everything one ORA^R41 says.
#[derive(Clone, Debug)]
pub struct Report<'a> {
    /// Our MSH-10 (the same on every attempt).
    pub control_id: &'a str,
    /// MSH-7.
    pub now: DateTime<Utc>,
    /// Our MSH-3 / MSH-4 (validated: no delimiters).
    pub application: &'a str,
    /// See `application`.
    pub facility: &'a str,
    /// Their MSH-3 / MSH-4 as sent (already escaped), our MSH-5 / MSH-6.
    pub receiving_application: &'a str,
    /// See `receiving_application`.
    pub receiving_facility: &'a str,
    /// MSH-11: their processing id.
    pub processing: Processing,
    /// MSA-2: MSH-10 of their ORU^R40.
    pub original_control_id: &'a str,
    /// OBR-3: the alarm id (their filler order number).
    pub alarm_id: &'a str,
    /// OBR-4: the alarm type.
    pub alarm_kind: &'a Code,
    /// OBX-5.
    pub status: Status,
    /// When the status happened (PRT-11, OBR-7, OBX-14).
    pub at: DateTime<Utc>,
    /// PRT-5, when the status is a person's.
    pub participant: Option<Participant>,
}

fn coded(c: &Code, fallback: (&str, &str, &str)) -> String {
    let (code, text, system) = if c.code.trim().is_empty() && c.text.trim().is_empty() {
        fallback
    } else {
        (c.code.as_str(), c.text.as_str(), c.system.as_str())
    };
    format!("{}^{}^{}", escape(code), escape(text), escape(system))
}

/// Builds the message (segments ended by CR, UTF-8).
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let at = hl7_timestamp(r.at);
    let mut segs: Vec<String> = Vec::with_capacity(5);
    segs.push(format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ORA^R41^ORA_R41|{}|{}|2.6|||AL|NE||UNICODE UTF-8",
        r.application,
        r.facility,
        r.receiving_application,
        r.receiving_facility,
        hl7_timestamp(r.now),
        escape(r.control_id),
        r.processing.code(),
    ));
    segs.push(format!("MSA|AA|{}", escape(r.original_control_id)));
    if let Some(p) = &r.participant {
        segs.push(format!(
            "PRT|1|UC||RCT^Result Copies To^HL70912|{}^{}^^^^^^^{}||||||{at}",
            escape(&p.id),
            escape(&p.name),
            escape(&p.authority),
        ));
    }
    segs.push(format!(
        "OBR|1||{}|{}|||{at}",
        escape(r.alarm_id),
        coded(r.alarm_kind, ("196616", "MDC_EVT_ALARM", "MDC")),
    ));
    segs.push(format!(
        "OBX|1|ST|ALERT_STATUS^Alert Status^L||{}||||||F|||{at}",
        status_word(r.status)
    ));
    let mut out = segs.join("\r");
    out.push('\r');
    out.into_bytes()
}

/// How an acknowledgement of report `control_id` ends it.
pub fn judge(frame: &[u8], control_id: &str) -> Outcome {
    let text = String::from_utf8_lossy(frame);
    let sep = text.get(3..4).and_then(|s| s.chars().next()).unwrap_or('|');
    let Some(msa) = text.split(['\r', '\n']).find(|seg| seg.starts_with("MSA")) else {
        return Outcome::Retry {
            why: "answer has no MSA segment".into(),
            retry_after: None,
        };
    };
    let mut fields = msa.split(sep);
    let code = fields.nth(1).unwrap_or("").trim();
    let refers_to = fields.next().unwrap_or("");
    if refers_to != control_id {
        return Outcome::Retry {
            why: "answer MSA-2 does not name this report".into(),
            retry_after: None,
        };
    }
    match code {
        "AA" | "CA" => Outcome::Delivered {
            status: 200,
            remote_ref: None,
        },
        "CE" => Outcome::Retry {
            why: "alarm source answered CE".into(),
            retry_after: None,
        },
        "AE" | "AR" | "CR" => Outcome::Permanent(format!("alarm source answered {code}")),
        _ => Outcome::Retry {
            why: "answer MSA-1 is not an acknowledgement code".into(),
            retry_after: None,
        },
    }
}

/// The participant of a member: the first provider id of the roster
/// member, else its roster id.
fn participant(shared: &Shared, member: &str) -> Participant {
    let routing = shared.routing.current();
    match routing.rosters.member(member) {
        Some(m) => match m.ids.first() {
            Some(id) => Participant {
                id: id.value.clone(),
                name: m.display.clone(),
                authority: id.authority.clone(),
            },
            None => Participant {
                id: m.id.clone(),
                name: m.display.clone(),
                authority: "SWITCHBOARD".into(),
            },
        },
        None => Participant {
            id: member.to_string(),
            name: String::new(),
            authority: "SWITCHBOARD".into(),
        },
    }
}

/// Sends one report to the alarm source and judges its answer.
pub async fn send(
    shared: &Arc<Shared>,
    src: &AlarmSourceConfig,
    alert: &Alert,
    row: &StatusRow,
) -> Outcome {
    let Some(alarm) = alert.event.alarm.as_ref() else {
        return Outcome::Permanent("the alert's event is not an alarm".into());
    };
    let (their_app, their_fac) = row.origin.clone().unwrap_or_default();
    let r = &row.report;
    let report = Report {
        control_id: &r.control_id,
        now: shared.clock.now_utc(),
        application: &src.application,
        facility: &src.facility,
        receiving_application: &their_app,
        receiving_facility: &their_fac,
        processing: alert.event.processing,
        original_control_id: &alert.event.source.control_id,
        alarm_id: &alarm.id,
        alarm_kind: &alarm.kind,
        status: r.status,
        at: r.at,
        participant: r.member.as_deref().map(|m| participant(shared, m)),
    };
    let message = build(&report);
    let tcp = match tokio::time::timeout(src.connect_timeout, TcpStream::connect(&src.mllp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Outcome::Retry {
                why: format!("connect: {}", e.kind()),
                retry_after: None,
            };
        }
        Err(_) => {
            return Outcome::Retry {
                why: "connect timed out".into(),
                retry_after: None,
            };
        }
    };
    let _ = tcp.set_nodelay(true);
    if !src.tls {
        return exchange(tcp, &message, &r.control_id, src.answer_timeout).await;
    }
    let Some(ca) = &src.ca else {
        return Outcome::Permanent("tls without a CA".into());
    };
    let config = match crate::listener::tls::client_config(ca) {
        Ok(c) => c,
        Err(e) => return Outcome::Permanent(format!("tls: {e}")),
    };
    let host = src.server_name.clone().unwrap_or_else(|| {
        src.mllp
            .rsplit_once(':')
            .map(|x| x.0)
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string()
    });
    let Ok(name) = ServerName::try_from(host) else {
        return Outcome::Permanent("invalid TLS server name".into());
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(src.connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => exchange(s, &message, &r.control_id, src.answer_timeout).await,
        Ok(Err(e)) => Outcome::Retry {
            why: format!("tls: {}", e.kind()),
            retry_after: None,
        },
        Err(_) => Outcome::Retry {
            why: "TLS handshake timed out".into(),
            retry_after: None,
        },
    }
}

async fn exchange<S>(mut s: S, message: &[u8], control_id: &str, timeout: Duration) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = s.write_all(&codec::frame(message)).await {
        return Outcome::Retry {
            why: format!("write: {}", e.kind()),
            retry_after: None,
        };
    }
    if let Err(e) = s.flush().await {
        return Outcome::Retry {
            why: format!("write: {}", e.kind()),
            retry_after: None,
        };
    }
    let answer = tokio::time::timeout(timeout, read_frame(&mut s)).await;
    let _ = s.shutdown().await;
    match answer {
        Err(_) => Outcome::Retry {
            why: "no answer in time".into(),
            retry_after: None,
        },
        Ok(None) => Outcome::Retry {
            why: "connection closed without an answer".into(),
            retry_after: None,
        },
        Ok(Some(frame)) => judge(&frame, control_id),
    }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut codec = MllpCodec::new(1024 * 1024, false);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Ok(Some(Frame::Message(f))) = codec.decode(&mut buf) {
            return Some(f.to_vec());
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn report<'a>(kind: &'a Code, status: Status, who: Option<Participant>) -> Report<'a> {
        Report {
            control_id: "SB0123456789ABCDEF01",
            now: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 5).unwrap(),
            application: "SWITCHBOARD",
            facility: "HOSP",
            receiving_application: "GW^EUI",
            receiving_facility: "FAC",
            processing: Processing::Production,
            original_control_id: "A1|X",
            alarm_id: "ALARM-42&9",
            alarm_kind: kind,
            status,
            at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 1).unwrap(),
            participant: who,
        }
    }

    fn fields<'a>(msg: &'a str, seg: &str) -> Vec<&'a str> {
        msg.split('\r')
            .find(|s| s.starts_with(seg))
            .unwrap_or_else(|| panic!("no {seg} in {msg:?}"))
            .split('|')
            .collect()
    }

    #[test]
    fn an_accepted_report_has_every_required_segment_in_order() {
        let kind = Code {
            code: "196648".into(),
            text: "MDC_EVT_HI".into(),
            system: "MDC".into(),
        };
        let who = Participant {
            id: "9990000101".into(),
            name: "Dr A^B (fictional)".into(),
            authority: "NPI".into(),
        };
        let msg = String::from_utf8(build(&report(&kind, Status::Accepted, Some(who)))).unwrap();
        let names: Vec<&str> = msg
            .split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| &s[..3])
            .collect();
        assert_eq!(names, ["MSH", "MSA", "PRT", "OBR", "OBX"]);
        assert!(msg.ends_with('\r'));
        let msh = fields(&msg, "MSH");
        // MSH-n is msh[n - 1] (MSH-1 is the separator itself).
        assert_eq!(msh[1], "^~\\&");
        assert_eq!((msh[2], msh[3]), ("SWITCHBOARD", "HOSP"));
        assert_eq!(
            (msh[4], msh[5]),
            ("GW^EUI", "FAC"),
            "their MSH-3/4 echoed raw"
        );
        assert_eq!(msh[6], "20261123120005.000+0000");
        assert_eq!(msh[8], "ORA^R41^ORA_R41");
        assert_eq!(msh[9], "SB0123456789ABCDEF01");
        assert_eq!((msh[10], msh[11]), ("P", "2.6"));
        assert_eq!((msh[14], msh[15], msh[17]), ("AL", "NE", "UNICODE UTF-8"));
        assert_eq!(fields(&msg, "MSA")[1..], ["AA", "A1\\F\\X"]);
        let prt = fields(&msg, "PRT");
        assert_eq!(prt[4], "RCT^Result Copies To^HL70912");
        assert_eq!(
            prt[5], "9990000101^Dr A\\S\\B (fictional)^^^^^^^NPI",
            "names are escaped"
        );
        assert_eq!(prt[11], "20261123120001.000+0000");
        let obr = fields(&msg, "OBR");
        assert_eq!(obr[3], "ALARM-42\\T\\9");
        assert_eq!(obr[4], "196648^MDC_EVT_HI^MDC");
        let obx = fields(&msg, "OBX");
        assert_eq!(
            (obx[2], obx[3], obx[5]),
            ("ST", "ALERT_STATUS^Alert Status^L", "Accepted")
        );
        assert_eq!((obx[11], obx[14]), ("F", "20261123120001.000+0000"));
    }

    #[test]
    fn a_report_about_nobody_has_no_prt_and_a_default_alarm_type() {
        let msg =
            String::from_utf8(build(&report(&Code::default(), Status::Cancelled, None))).unwrap();
        assert!(!msg.contains("\rPRT|"), "{msg}");
        assert_eq!(fields(&msg, "OBR")[4], "196616^MDC_EVT_ALARM^MDC");
        assert_eq!(fields(&msg, "OBX")[5], "Cancelled");
        assert_eq!(status_word(Status::Declined), "Rejected");
    }

    #[test]
    fn escaping_covers_every_delimiter_and_line_breaks() {
        assert_eq!(
            escape("a|b^c~d\\e&f\rg\nh"),
            "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f g h"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn answers_are_judged_by_msa() {
        let ok = |code: &str, id: &str| {
            judge(format!("MSH|^~\\&|X\rMSA|{code}|{id}\r").as_bytes(), "C1")
        };
        assert!(matches!(ok("AA", "C1"), Outcome::Delivered { .. }));
        assert!(matches!(ok("CA", "C1"), Outcome::Delivered { .. }));
        assert!(matches!(ok("AE", "C1"), Outcome::Permanent(_)));
        assert!(matches!(ok("AR", "C1"), Outcome::Permanent(_)));
        assert!(matches!(ok("CR", "C1"), Outcome::Permanent(_)));
        assert!(matches!(ok("CE", "C1"), Outcome::Retry { .. }));
        assert!(
            matches!(ok("AA", "C2"), Outcome::Retry { .. }),
            "another message's answer"
        );
        assert!(matches!(
            judge(b"MSH|^~\\&|X\r", "C1"),
            Outcome::Retry { .. }
        ));
    }
}
