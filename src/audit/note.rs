//! C2SP signed notes (Ed25519) and checkpoint bodies.
//!
//! A note is UTF-8 text: a body of one or more lines, each ending in `\n`,
//! a blank line, then signature lines `— <name> <base64(key id || sig)>\n`.
//! The key id is the first 4 bytes of SHA-256(name || "\n" || 0x01 ||
//! public key); the signature is Ed25519 over the body bytes. A verifier key
//! is written `<name>+<hex key id>+<base64(0x01 || public key)>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::AuditError;

const ED25519_ALG: u8 = 0x01;
const DASH: &str = "\u{2014} ";
/// Longest note we parse (checkpoints and endorsements are far smaller).
pub(crate) const MAX_NOTE_BYTES: usize = 16 * 1024;

/// The C2SP key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_ALG]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public key with its name: what a verifier needs to check notes.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key's name (the log origin).
    pub name: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    /// `<name>+<hex key id>+<base64(0x01 || key)>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &self.key)),
            B64.encode(raw)
        )
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<VerifierKey, AuditError> {
        // The name has no `+`, the id is hex; the base64 key may hold `+`.
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuditError::Note("verifier key: expected name+id+key"));
        };
        let raw = B64
            .decode(key)
            .map_err(|_| AuditError::Note("verifier key: bad base64"))?;
        let [ED25519_ALG, rest @ ..] = raw.as_slice() else {
            return Err(AuditError::Note("verifier key: not Ed25519"));
        };
        let bytes: [u8; 32] = rest
            .try_into()
            .map_err(|_| AuditError::Note("verifier key: bad length"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| AuditError::Note("verifier key: invalid point"))?;
        if !valid_name(name) {
            return Err(AuditError::Note("verifier key: bad name"));
        }
        let vk = VerifierKey {
            name: name.to_string(),
            key,
        };
        if hex::encode(key_id(name, &vk.key)) != id {
            return Err(AuditError::Note("verifier key: key id mismatch"));
        }
        Ok(vk)
    }
}

/// A key name (origin): non-empty, no whitespace, no `+`, printable.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// Signs `body` (lines ending in `\n`) as a note.
pub(crate) fn sign(body: &str, name: &str, key: &SigningKey) -> String {
    debug_assert!(body.ends_with('\n') && !body.contains("\n\n"));
    let sig: Signature = key.sign(body.as_bytes());
    let mut raw = key_id(name, &key.verifying_key()).to_vec();
    raw.extend_from_slice(&sig.to_bytes());
    format!("{body}\n{DASH}{name} {}\n", B64.encode(raw))
}

/// A note split into its body and signature lines.
#[derive(Debug)]
pub(crate) struct Note<'a> {
    pub body: &'a str,
    pub signatures: Vec<(&'a str, [u8; 4], Vec<u8>)>,
}

/// Splits a note; `None` when it is not a well-formed signed note.
pub(crate) fn parse(text: &str) -> Option<Note<'_>> {
    if text.len() > MAX_NOTE_BYTES
        || !text.ends_with('\n')
        || text.chars().any(|c| c.is_control() && c != '\n')
    {
        return None;
    }
    let split = text.rfind("\n\n")?;
    let body = &text[..split + 1];
    let sigs = &text[split + 2..];
    if body.is_empty() || sigs.is_empty() {
        return None;
    }
    let mut signatures = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        let rest = line.strip_prefix(DASH)?;
        let (name, b64) = rest.split_once(' ')?;
        if !valid_name(name) {
            return None;
        }
        let raw = B64.decode(b64).ok()?;
        if raw.len() < 5 {
            return None;
        }
        let id: [u8; 4] = raw[..4].try_into().ok()?;
        signatures.push((name, id, raw[4..].to_vec()));
    }
    Some(Note { body, signatures })
}

impl Note<'_> {
    /// True when one of the signatures is a valid one by `key`.
    pub fn verified_by(&self, key: &VerifierKey) -> bool {
        let id = key_id(&key.name, &key.key);
        self.signatures.iter().any(|(name, sig_id, sig)| {
            *name == key.name
                && *sig_id == id
                && Signature::from_slice(sig)
                    .is_ok_and(|s| key.key.verify_strict(self.body.as_bytes(), &s).is_ok())
        })
    }
}

/// A parsed checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

/// The checkpoint body: origin, size, base64 root, one per line.
pub(crate) fn checkpoint_body(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Parses a checkpoint body (extension lines after the root are ignored).
pub(crate) fn parse_checkpoint(body: &str) -> Option<Checkpoint> {
    let mut lines = body.strip_suffix('\n')?.split('\n');
    let origin = lines.next()?;
    let size = lines.next()?;
    let root = lines.next()?;
    if origin.is_empty() || size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if size.len() > 1 && size.starts_with('0') {
        return None;
    }
    let size: u64 = size.parse().ok()?;
    let root: [u8; 32] = B64.decode(root).ok()?.try_into().ok()?;
    Some(Checkpoint {
        origin: origin.to_string(),
        size,
        root,
    })
}

/// The body of a key endorsement: key `id` with `key` is valid from
/// `valid_from_seq` for `origin`. Signed by key `id - 1`.
pub(crate) fn endorsement_body(
    origin: &str,
    id: u64,
    key: &VerifyingKey,
    valid_from_seq: u64,
) -> String {
    format!(
        "switchboard.audit.key-rotation.v1\n{origin}\nkey {id}\n{}\nvalid-from {valid_from_seq}\n",
        B64.encode(key.as_bytes())
    )
}

/// Hex SHA-256 of a public key: the fingerprint in `audit.key-rotated` records.
pub(crate) fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn sign_parse_verify_roundtrip() {
        let k = key(1);
        let vk = VerifierKey {
            name: "example.org/audit".into(),
            key: k.verifying_key(),
        };
        let body = checkpoint_body("example.org/audit", 42, &[7; 32]);
        let text = sign(&body, "example.org/audit", &k);
        assert!(text.starts_with("example.org/audit\n42\n"));
        assert!(text.contains("\n\n\u{2014} example.org/audit "));
        let note = parse(&text).unwrap();
        assert_eq!(note.body, body);
        assert!(note.verified_by(&vk));
        let cp = parse_checkpoint(note.body).unwrap();
        assert_eq!((cp.size, cp.root), (42, [7; 32]));
        // Another key, another name, an edited body: all refused.
        let other = VerifierKey {
            name: "example.org/audit".into(),
            key: key(2).verifying_key(),
        };
        assert!(!note.verified_by(&other));
        let renamed = VerifierKey {
            name: "other".into(),
            key: k.verifying_key(),
        };
        assert!(!note.verified_by(&renamed));
        let edited = text.replace("\n42\n", "\n43\n");
        assert!(!parse(&edited).unwrap().verified_by(&vk));
    }

    #[test]
    fn verifier_key_text_roundtrip() {
        let vk = VerifierKey {
            name: "example.org/audit".into(),
            key: key(3).verifying_key(),
        };
        let s = vk.to_string();
        assert!(s.starts_with("example.org/audit+"));
        let back: VerifierKey = s.parse().unwrap();
        assert_eq!(back, vk);
        let mut bad = s.clone();
        bad.replace_range(18..19, if &s[18..19] == "0" { "1" } else { "0" });
        assert!(bad.parse::<VerifierKey>().is_err());
        assert!("nonsense".parse::<VerifierKey>().is_err());
    }

    #[test]
    fn malformed_notes_do_not_parse() {
        for t in [
            "",
            "a\n",
            "a\n\n",
            "a\n\nnot a signature\n",
            "a\n\n\u{2014} name !!!\n",
            "a\r\n\n\u{2014} name AAAAAAAA\n",
            "a\n\n\u{2014} name AAAAAAAA",
        ] {
            assert!(parse(t).is_none(), "{t:?}");
        }
        for b in [
            "o\n1\n",
            "o\n01\nAAAA\n",
            "\n1\nAAAA\n",
            "o\n-1\nAAAA\n",
            "o\n1\nAAAA\n",
        ] {
            assert!(parse_checkpoint(b).is_none(), "{b:?}");
        }
    }

    /// Regression: a verifier key whose base64 part holds `+` did not parse
    /// (it was split from the right).
    #[test]
    fn verifier_key_with_plus_in_base64_round_trips() {
        let mut seen_plus = 0;
        for b in 0..=255u8 {
            let vk = VerifierKey {
                name: "example.org/audit".into(),
                key: key(b).verifying_key(),
            };
            let text = vk.to_string();
            if text
                .rsplit('+')
                .next()
                .is_some_and(|_| text.matches('+').count() > 2)
            {
                seen_plus += 1;
            }
            let back: VerifierKey = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, vk);
        }
        assert!(seen_plus > 0, "the sweep covers keys with + in base64");
    }
}
