//! The Ed25519 checkpoint signing key: its file, its registration in
//! `audit_keys`, and rotation.
//!
//! # Key file
//!
//! Text, mode 0600, written with tmp file + fsync + rename + fsync of the
//! directory:
//!
//! ```text
//! # switchboard audit checkpoint signing key (Ed25519); keep secret
//! origin <origin>
//! ed25519 <hex of the 32-byte secret key>
//! ```
//!
//! A key file readable by group or others is refused, as ssh does.
//!
//! # Rotation order
//!
//! 1. `let next = Signer::generate(origin)` and `next.save(new_path)`
//!    (the new key is on disk before anything refers to it);
//! 2. in one transaction: [`rotate_signer`] (+ usually a [`checkpoint`]
//!    with `next`), commit;
//! 3. point the configuration at `new_path` (or rename it over the old
//!    file) and destroy the old key file.
//!
//! A crash between 1 and 2 leaves an unused key file; between 2 and 3 the
//! old signer gets [`AuditError::NotCurrentKey`] from [`checkpoint`], which
//! names the problem instead of signing with a retired key.
//!
//! [`checkpoint`]: super::checkpoint()

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};

use super::chain::Chain;
use super::note::{self, VerifierKey};
use super::{ACTION_KEY_ROTATED, AuditError, AuditRecord};

const HEADER: &str = "# switchboard audit checkpoint signing key (Ed25519); keep secret";

/// Signs checkpoints for one origin (e.g. `switchboard.example-hospital/audit`).
pub struct Signer {
    origin: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("Signer")
            .field("verifier_key", &self.verifier_key().to_string())
            .finish()
    }
}

impl Signer {
    /// A new random key for `origin` (not yet saved).
    pub fn generate(origin: &str) -> Result<Signer, AuditError> {
        check_origin(origin)?;
        Ok(Signer {
            origin: origin.to_string(),
            key: SigningKey::generate(&mut rand_core::OsRng),
        })
    }

    /// A signer from raw secret bytes (tests, key escrow tooling).
    pub fn from_secret(origin: &str, secret: [u8; 32]) -> Result<Signer, AuditError> {
        check_origin(origin)?;
        Ok(Signer {
            origin: origin.to_string(),
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Loads the key at `path`, or generates and saves one when the file
    /// does not exist. The file's origin must be `origin`.
    pub fn load_or_generate(path: &Path, origin: &str) -> Result<Signer, AuditError> {
        match std::fs::metadata(path) {
            Ok(_) => Signer::load(path, origin),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = Signer::generate(origin)?;
                s.save(path)?;
                Ok(s)
            }
            Err(e) => Err(AuditError::io("stat", path, e)),
        }
    }

    /// Loads the key at `path`; refuses a file readable by group or others.
    pub fn load(path: &Path, origin: &str) -> Result<Signer, AuditError> {
        let bad = |problem: &str| AuditError::KeyFile {
            path: path.display().to_string(),
            problem: problem.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(|e| AuditError::io("stat", path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(bad("readable by group or others (chmod 600)"));
            }
        }
        if meta.len() > 4096 {
            return Err(bad("too large"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io("read", path, e))?;
        let mut file_origin = None;
        let mut secret = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            match line.split_once(' ') {
                Some(("origin", v)) => file_origin = Some(v.trim().to_string()),
                Some(("ed25519", v)) => {
                    let mut bytes = [0u8; 32];
                    hex::decode_to_slice(v.trim(), &mut bytes)
                        .map_err(|_| bad("ed25519: expected 64 hex digits"))?;
                    secret = Some(bytes);
                }
                _ => return Err(bad("unknown line")),
            }
        }
        let file_origin = file_origin.ok_or_else(|| bad("no origin line"))?;
        let secret = secret.ok_or_else(|| bad("no ed25519 line"))?;
        if file_origin != origin {
            return Err(bad("origin differs from the configured one"));
        }
        Signer::from_secret(origin, secret)
    }

    /// Saves the key to `path` (mode 0600, atomically, durably).
    pub fn save(&self, path: &Path) -> Result<(), AuditError> {
        let text = format!(
            "{HEADER}\norigin {}\ned25519 {}\n",
            self.origin,
            hex::encode(self.key.to_bytes())
        );
        write_durably(path, text.as_bytes(), 0o600)
    }

    /// The origin (also the key name in notes).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public half, as verifiers write it
    /// (`<origin>+<hex key id>+<base64 key>`): give it to the off-box
    /// verifier to pin the genesis key.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.origin.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note body.
    pub(crate) fn sign_note(&self, body: &str) -> String {
        note::sign(body, &self.origin, &self.key)
    }

    pub(crate) fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

fn check_origin(origin: &str) -> Result<(), AuditError> {
    if note::valid_name(origin) {
        Ok(())
    } else {
        Err(AuditError::InvalidField {
            field: "origin",
            problem: "empty, too long, or contains whitespace, control characters or '+'",
        })
    }
}

/// Writes `bytes` to `path` via a tmp file: fsync, rename, fsync the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| AuditError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(&tmp)
        .map_err(|e| AuditError::io("create", &tmp, e))?;
    #[cfg(unix)]
    {
        // An older tmp file keeps its mode on truncate: set it explicitly.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| AuditError::io("chmod", &tmp, e))?;
    }
    f.write_all(bytes)
        .map_err(|e| AuditError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| AuditError::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| AuditError::io("rename", path, e))?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("fsync directory", dir, e))?;
    Ok(())
}

/// The current (newest) registered key: id and public key bytes.
pub(crate) fn current_key(conn: &Connection) -> Result<Option<(u64, Vec<u8>)>, AuditError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT id, public_key FROM audit_keys ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((id, key)) => {
            let id = u64::try_from(id).map_err(|_| AuditError::Corrupt("audit key id".into()))?;
            Ok(Some((id, key)))
        }
    }
}

/// Makes sure `signer` is the current key, registering it as key 1 (the
/// genesis key, valid from seq 1) when no key is registered yet. Returns
/// its id.
pub(crate) fn ensure_current(conn: &Connection, signer: &Signer) -> Result<u64, AuditError> {
    match current_key(conn)? {
        Some((id, key)) => {
            if key.as_slice() == signer.public().as_bytes() {
                Ok(id)
            } else {
                Err(AuditError::NotCurrentKey { current: id })
            }
        }
        None => {
            conn.execute(
                "INSERT INTO audit_keys (id, name, public_key, valid_from_seq, endorsement)
                 VALUES (1, ?1, ?2, 1, NULL)",
                params![signer.origin, &signer.public().as_bytes()[..]],
            )?;
            Ok(1)
        }
    }
}

/// Rotates the checkpoint signing key from `current` to `next`, inside the
/// caller's transaction: appends an `audit.key-rotated` record (object
/// `audit-key:<id>:<hex SHA-256 of the public key>`) and registers `next`
/// in `audit_keys`, valid from that record's seq, with an endorsement note
/// signed by `current`. Checkpoints of that size and later must be signed by
/// `next`. Returns the seq of the rotation record.
pub fn rotate_signer(
    tx: &Connection,
    chain: &mut Chain,
    current: &Signer,
    next: &Signer,
    at: DateTime<Utc>,
    actor: &str,
    source: &str,
) -> Result<u64, AuditError> {
    if current.origin != next.origin {
        return Err(AuditError::Origin);
    }
    let cur_id = ensure_current(tx, current)?;
    let new_id = cur_id + 1;
    let seq = chain.append(
        tx,
        &AuditRecord::new(
            at,
            actor,
            ACTION_KEY_ROTATED,
            format!("audit-key:{new_id}:{}", note::fingerprint(&next.public())),
            source,
            "ok",
        ),
    )?;
    let endorsement = current.sign_note(&note::endorsement_body(
        &next.origin,
        new_id,
        &next.public(),
        seq,
    ));
    tx.execute(
        "INSERT INTO audit_keys (id, name, public_key, valid_from_seq, endorsement)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            new_id as i64,
            next.origin,
            &next.public().as_bytes()[..],
            seq as i64,
            endorsement
        ],
    )?;
    Ok(seq)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let a = Signer::load_or_generate(&path, "site.example/audit").unwrap();
        let b = Signer::load_or_generate(&path, "site.example/audit").unwrap();
        assert_eq!(a.verifier_key(), b.verifier_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Signer::load(&path, "site.example/audit"),
                Err(AuditError::KeyFile { .. })
            ));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            Signer::load(&path, "other.example/audit"),
            Err(AuditError::KeyFile { .. })
        ));
        // The secret never shows in Debug.
        let secret = hex::encode(a.key.to_bytes());
        assert!(!format!("{a:?}").contains(&secret));
        assert!(Signer::generate("has space").is_err());
    }
}
