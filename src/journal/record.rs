//! What goes into the journal and what comes back out.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::ClinicalEvent;

/// The duplicate-detection key of an accepted message: (MSH-3, MSH-4, MSH-10)
/// as sent (raw field values).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// MSH-3 as sent.
    pub msh3: String,
    /// MSH-4 as sent.
    pub msh4: String,
    /// MSH-10 as sent.
    pub control_id: String,
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Parsed into events; waiting for (or done with) routing.
    Accepted,
    /// Accepted but not a type Switchboard routes.
    Filtered,
    /// Answered with an error; the sender may resend.
    Rejected,
}

impl Fate {
    /// Stable name used in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Accepted => "accepted",
            Fate::Filtered => "filtered",
            Fate::Rejected => "rejected",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Fate::Accepted),
            "filtered" => Some(Fate::Filtered),
            "rejected" => Some(Fate::Rejected),
            _ => None,
        }
    }

    /// Accepted and filtered messages were taken (AA/CA): their key counts
    /// for duplicate detection. Rejected ones may be resent and processed afresh.
    pub fn is_taken(self) -> bool {
        !matches!(self, Fate::Rejected)
    }
}

/// An application acknowledgement to deliver later through the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Configured sender whose return destination receives it.
    pub destination: String,
    /// The HL7 message (without MLLP framing).
    pub payload: Vec<u8>,
    /// MSH-10 of `payload`, to match the receiver's answer.
    pub control_id: String,
}

/// A message ready to be committed.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Receive time.
    pub received_at: DateTime<Utc>,
    /// Where it came from: peer address, and certificate identity when TLS.
    pub peer: String,
    /// The configured sender, when one matched and was authorised.
    pub sender: Option<String>,
    /// MSH-3 / MSH-4 / MSH-10 as sent (empty when unreadable).
    pub key: DedupKey,
    /// MSH-9.1.
    pub message_type: String,
    /// MSH-9.2.
    pub trigger: String,
    /// MSH-11.1.
    pub processing_id: String,
    /// The message as received (see `raw_charset`).
    pub raw: Vec<u8>,
    /// `frame` when `raw` is the frame's bytes as received; `UTF-8` when it is
    /// the message's decoded text (messages split out of a batch).
    pub raw_charset: String,
    /// SHA-256 of the normalised message text, to tell a resend from a control-id reuse.
    pub body_sha256: [u8; 32],
    /// What happened.
    pub fate: Fate,
    /// Why it was filtered or rejected (fixed text, never content).
    pub reason: Option<String>,
    /// HL7 table 0357 code when rejected.
    pub error_code: Option<u16>,
    /// ERR-2 location when rejected.
    pub error_location: Option<String>,
    /// Events produced (accepted messages only).
    pub events: Vec<ClinicalEvent>,
    /// The acknowledgement code sent on the connection (`AA`, `AE`, `AR`,
    /// `CA`, `CE`, `CR`), or `None` when MSH-15 asked for none.
    pub ack_code: Option<String>,
    /// The acknowledgement payload (without MLLP framing); empty when none.
    pub ack: Vec<u8>,
    /// An application acknowledgement to deliver (enhanced mode).
    pub app_ack: Option<OutboxEntry>,
    /// The batch this message arrived in (BHS-11/FHS-11), if any.
    pub batch_ref: Option<String>,
}

/// The journal's answer for one committed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Stored as a new journal row.
    Stored {
        /// Journal sequence number.
        id: i64,
        /// True when an accepted message with the same key but another body
        /// existed: a control-id reuse, recorded and accepted as new.
        control_id_reuse: bool,
    },
    /// A resend of an accepted message: nothing new stored.
    Duplicate {
        /// The original message's id.
        original: i64,
        /// The acknowledgement stored with the original, byte for byte.
        ack: Vec<u8>,
        /// The original acknowledgement code.
        ack_code: Option<String>,
    },
}

/// One row of the message browser. Holds no PHI unless `raw` was asked for.
#[derive(Clone, Debug, Serialize)]
pub struct MessageSummary {
    /// Journal sequence number.
    pub id: i64,
    /// Receive time.
    pub received_at: DateTime<Utc>,
    /// Configured sender, if any.
    pub sender: Option<String>,
    /// Peer address.
    pub peer: String,
    /// MSH-9.1^MSH-9.2.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.1.
    pub processing_id: String,
    /// What happened.
    pub fate: Fate,
    /// Why (filtered / rejected), fixed text.
    pub reason: Option<String>,
    /// Table 0357 code when rejected.
    pub error_code: Option<u16>,
    /// ERR-2 location when rejected.
    pub error_location: Option<String>,
    /// Acknowledgement code sent.
    pub ack_code: Option<String>,
    /// Number of events.
    pub events: u32,
    /// Times a duplicate resend was answered with the stored acknowledgement.
    pub resends: u32,
    /// True when this message reused an accepted control id with another body.
    pub control_id_reuse: bool,
    /// The raw message (PHI), only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Filter for the message browser.
#[derive(Clone, Debug, Default)]
pub struct MessageQuery {
    /// Only this fate.
    pub fate: Option<Fate>,
    /// Only this sender.
    pub sender: Option<String>,
    /// Only this control id.
    pub control_id: Option<String>,
    /// Only this message type (`ORU` or `ORU^R01`).
    pub message_type: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// At most this many rows (newest first).
    pub limit: usize,
    /// Include raw content (PHI). Every message shown is audited as a PHI
    /// view by `viewer`.
    pub include_raw: bool,
    /// Who views the content and when, for the audit trail.
    pub viewer: Option<Viewer>,
}

/// Someone viewing PHI.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// `user:alice`.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An application acknowledgement waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Outbox row id.
    pub id: i64,
    /// The message it answers.
    pub message_id: i64,
    /// Configured sender name.
    pub destination: String,
    /// HL7 payload.
    pub payload: Vec<u8>,
    /// MSH-10 of the payload.
    pub control_id: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// State of an outbox row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxState {
    /// Waiting for delivery.
    Pending,
    /// Delivered (and answered, when required).
    Delivered,
    /// Given up on: the reason says why; an operator must act.
    Dead,
}

impl OutboxState {
    /// Stable name used in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }
}
