//! Key-encryption keys: the trait, and [`LocalKek`] (a 32-byte key from a
//! file or an environment variable).

use std::fmt;
use std::io::Read;
use std::path::Path;

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SealError;
use super::format;

/// The environment variable [`LocalKek::from_env`] reads by convention.
pub const DEFAULT_KEK_ENV: &str = "SWITCHBOARD_KEK";

/// A key-encryption key: wraps and unwraps 32-byte keys, never sees PHI.
///
/// Implement it for an external KMS; `aad` must be bound to the wrapping
/// (unwrap with another `aad` must fail). Errors name the KEK id, never key
/// bytes.
pub trait KeyEncryptionKey: Send + Sync {
    /// Stable id, stored next to everything it wrapped.
    fn id(&self) -> &str;
    /// Encrypts `plaintext_key` bound to `aad`.
    fn wrap(&self, plaintext_key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, SealError>;
    /// Decrypts what [`KeyEncryptionKey::wrap`] returned for the same `aad`.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError>;
}

/// A KEK held in this process: 32 bytes, XChaCha20-Poly1305 wrapping with a
/// random nonce (format in the module docs). `Debug` shows only the id.
pub struct LocalKek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Checks that `id` can name a key file and be compared as text.
pub(super) fn validate_id(id: &str) -> Result<(), SealError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SealError::InvalidKeyId(id.chars().take(80).collect()))
    }
}

/// 64 hex digits (surrounding whitespace ignored) -> 32 bytes. The error
/// never quotes the input.
fn parse_hex_key(text: &str) -> Result<Zeroizing<[u8; 32]>, &'static str> {
    let text = text.trim();
    if text.len() != 64 {
        return Err("expected 64 hex digits (a 32-byte key)");
    }
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, &mut *key).map_err(|_| "expected 64 hex digits (a 32-byte key)")?;
    Ok(key)
}

/// 32 bytes from the operating system's CSPRNG.
pub(super) fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut *key);
    key
}

impl LocalKek {
    /// A KEK with the given id and key bytes.
    pub fn from_bytes(
        id: impl Into<String>,
        key: Zeroizing<[u8; 32]>,
    ) -> Result<LocalKek, SealError> {
        let id = id.into();
        validate_id(&id)?;
        Ok(LocalKek { id, key })
    }

    /// A new random KEK.
    pub fn generate(id: impl Into<String>) -> Result<LocalKek, SealError> {
        LocalKek::from_bytes(id, random_key())
    }

    /// A fresh id for a KEK created at `now`: `YYYYMMDDTHHMMSSZ-<4 random hex>`.
    pub fn new_id(now: DateTime<Utc>) -> String {
        let mut r = [0u8; 2];
        OsRng.fill_bytes(&mut r);
        format!("{}-{}", now.format("%Y%m%dT%H%M%S%6fZ"), hex::encode(r))
    }

    /// Reads a key file `kek-<id>.key` (64 hex digits). Refuses a file that
    /// group or others may access (mode must be 0600 or stricter), naming it.
    pub fn from_file(path: &Path) -> Result<LocalKek, SealError> {
        let bad = |problem: &str| SealError::KeyFile {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        };
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kek-"))
            .and_then(|n| n.strip_suffix(".key"))
            .ok_or_else(|| bad("the name must be kek-<id>.key"))?;
        validate_id(id).map_err(|_| bad("the id in the name must be 1-64 of A-Z a-z 0-9 _ -"))?;
        let mut file = std::fs::File::open(path).map_err(|e| SealError::io(path, &e))?;
        // Checked on the open file, so the checked file is the one read.
        let meta = file.metadata().map_err(|e| SealError::io(path, &e))?;
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        check_private(path, &meta)?;
        // Read into a fixed buffer that is wiped on drop (no reallocation copies).
        let mut buf = Zeroizing::new([0u8; 160]);
        let mut len = 0;
        loop {
            if len == buf.len() {
                return Err(bad("too large for a key file"));
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SealError::io(path, &e)),
            }
        }
        let text = std::str::from_utf8(&buf[..len]).map_err(|_| bad("not text"))?;
        let key = parse_hex_key(text).map_err(bad)?;
        LocalKek::from_bytes(id, key)
    }

    /// Reads a KEK from the environment variable `var` (64 hex digits). Its
    /// id is `env-` and the first 16 hex digits of a SHA-256 fingerprint of
    /// the key, so it is stable across restarts and changes with the key.
    pub fn from_env(var: &str) -> Result<LocalKek, SealError> {
        LocalKek::from_env_value(var, std::env::var_os(var))
    }

    pub(super) fn from_env_value(
        var: &str,
        value: Option<std::ffi::OsString>,
    ) -> Result<LocalKek, SealError> {
        let bad = |problem| SealError::KeyEnv {
            var: var.to_string(),
            problem,
        };
        let value = value.ok_or(bad("not set"))?;
        let text = Zeroizing::new(value.into_string().map_err(|_| bad("not valid UTF-8"))?);
        let key = parse_hex_key(&text).map_err(bad)?;
        let mut h = Sha256::new();
        h.update(b"switchboard/seal/kek-id\0");
        h.update(&key[..]);
        let id = format!("env-{}", &hex::encode(h.finalize())[..16]);
        LocalKek::from_bytes(id, key)
    }

    /// The key as hex, for writing a key file (wiped on drop).
    pub(super) fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(65));
        for b in self.key.iter() {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        s.push('\n');
        s
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), SealError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SealError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), SealError> {
    Ok(())
}

impl KeyEncryptionKey for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, plaintext_key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        format::wrap_key(&self.key, plaintext_key, aad).ok_or_else(|| SealError::Kek {
            kek_id: self.id.clone(),
            problem: "wrapping failed".into(),
        })
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
        format::unwrap_key(&self.key, wrapped, aad).ok_or_else(|| SealError::Unwrap {
            kek_id: self.id.clone(),
            key: "a key".into(),
        })
    }
}
