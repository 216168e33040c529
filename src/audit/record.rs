//! The audit record, its validation and its hash.

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::AuditError;

/// Longest accepted field, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;

/// Domain separation tag of the record hash.
pub(crate) const RECORD_TAG: &[u8] = b"switchboard.audit.record.v1";

/// `prev` of record 1.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// One audit event as the caller describes it. Ids only, never clinical
/// content (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened (stored with µs precision).
    pub at: DateTime<Utc>,
    /// Who: `sender:lab`, `user:alice`, `system`, `peer:127.0.0.1:5000`.
    pub actor: String,
    /// What: `message.received`, `hold.placed`, `audit.recovered` …
    pub action: String,
    /// To which object, by id: `message:123`, `data-key:raw/2026-11-23`.
    pub object: String,
    /// From where: source address, device, `cli`.
    pub source: String,
    /// How it ended: `ok`, `AA`, `AE`, `refused` …
    pub outcome: String,
}

impl AuditRecord {
    /// A record; validated when appended.
    pub fn new(
        at: DateTime<Utc>,
        actor: impl Into<String>,
        action: impl Into<String>,
        object: impl Into<String>,
        source: impl Into<String>,
        outcome: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            at,
            actor: actor.into(),
            action: action.into(),
            object: object.into(),
            source: source.into(),
            outcome: outcome.into(),
        }
    }

    /// Checks every field: at most [`MAX_FIELD_BYTES`], no control
    /// characters (CR, LF, NUL, tab …), `action` not empty.
    pub fn validate(&self) -> Result<(), AuditError> {
        for (field, value) in self.fields() {
            check_field(field, value)?;
        }
        if self.action.is_empty() {
            return Err(AuditError::InvalidField {
                field: "action",
                problem: "empty",
            });
        }
        Ok(())
    }

    fn fields(&self) -> [(&'static str, &str); 5] {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("object", &self.object),
            ("source", &self.source),
            ("outcome", &self.outcome),
        ]
    }

    /// The hash this record gets as record `seq` after `prev`.
    pub fn hash(&self, seq: u64, prev: &[u8; 32]) -> [u8; 32] {
        leaf_hash(
            seq,
            prev,
            self.at.timestamp_micros(),
            [
                self.actor.as_bytes(),
                self.action.as_bytes(),
                self.object.as_bytes(),
                self.source.as_bytes(),
                self.outcome.as_bytes(),
            ],
        )
    }
}

fn check_field(field: &'static str, value: &str) -> Result<(), AuditError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(AuditError::InvalidField {
            field,
            problem: "longer than 512 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(AuditError::InvalidField {
            field,
            problem: "contains a control character (CR, LF, …)",
        });
    }
    Ok(())
}

/// The record hash over raw column bytes (see the module docs).
pub(crate) fn leaf_hash(seq: u64, prev: &[u8; 32], at_micros: i64, fields: [&[u8]; 5]) -> [u8; 32] {
    let mut h = Sha256::new();
    lp(&mut h, RECORD_TAG);
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(at_micros.to_be_bytes());
    for f in fields {
        lp(&mut h, f);
    }
    h.finalize().into()
}

fn lp(h: &mut Sha256, bytes: &[u8]) {
    // Fields are at most 512 bytes when written; a longer value read from a
    // tampered database still hashes deterministically (saturated length).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

/// A record as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To which object (ids only).
    pub object: String,
    /// From where.
    pub source: String,
    /// How it ended.
    pub outcome: String,
    /// Hash of record `seq - 1`.
    #[serde(with = "hex_bytes")]
    pub prev: [u8; 32],
    /// Hash of this record.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// µs since the Unix epoch; `None` outside chrono's range.
pub(crate) fn from_micros(v: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(v).single()
}

/// A 32-byte hash from a column value.
pub(crate) fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod unit {
    use super::*;

    fn rec() -> AuditRecord {
        AuditRecord::new(
            Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
            "sender:lab",
            "message.received",
            "message:1",
            "127.0.0.1:5000",
            "AA",
        )
    }

    #[test]
    fn validation_rejects_long_and_control_fields() {
        rec().validate().unwrap();
        let mut r = rec();
        r.object = "x".repeat(512);
        r.validate().unwrap();
        r.object = "x".repeat(513);
        assert!(matches!(
            r.validate(),
            Err(AuditError::InvalidField {
                field: "object",
                ..
            })
        ));
        for bad in ["a\rb", "a\nb", "a\0", "tab\there"] {
            let mut r = rec();
            r.actor = bad.into();
            assert!(
                matches!(
                    r.validate(),
                    Err(AuditError::InvalidField { field: "actor", .. })
                ),
                "{bad:?}"
            );
        }
        let mut r = rec();
        r.action.clear();
        assert!(r.validate().is_err());
    }

    #[test]
    fn hash_is_length_prefixed_and_covers_every_field() {
        let r = rec();
        let base = r.hash(7, &ZERO_HASH);
        assert_eq!(base, r.hash(7, &ZERO_HASH));
        assert_ne!(base, r.hash(8, &ZERO_HASH));
        assert_ne!(base, r.hash(7, &[1; 32]));
        let mut shifted = r.clone();
        // Moving a byte between adjacent fields changes the hash.
        shifted.actor = "sender:la".into();
        shifted.action = "bmessage.received".into();
        assert_ne!(base, shifted.hash(7, &ZERO_HASH));
        let mut later = r.clone();
        later.at += chrono::Duration::microseconds(1);
        assert_ne!(base, later.hash(7, &ZERO_HASH));
        for i in 0..5 {
            let mut m = r.clone();
            [
                &mut m.actor,
                &mut m.action,
                &mut m.object,
                &mut m.source,
                &mut m.outcome,
            ][i]
                .push('x');
            assert_ne!(base, m.hash(7, &ZERO_HASH), "field {i}");
        }
    }

    #[test]
    fn hash_matches_the_documented_encoding() {
        let r = rec();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(RECORD_TAG.len() as u32).to_be_bytes());
        bytes.extend_from_slice(RECORD_TAG);
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(&[9; 32]);
        bytes.extend_from_slice(&r.at.timestamp_micros().to_be_bytes());
        for f in [&r.actor, &r.action, &r.object, &r.source, &r.outcome] {
            bytes.extend_from_slice(&(f.len() as u32).to_be_bytes());
            bytes.extend_from_slice(f.as_bytes());
        }
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(r.hash(3, &[9; 32]), want);
    }
}
