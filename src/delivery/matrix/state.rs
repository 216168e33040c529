//! What a Matrix backend keeps between runs besides the SDK's own SQLite
//! stores: the session (user, device, access token), the device id chosen
//! before the first login, the room of each handle, the sync position and
//! the ids of the replies already applied.
//!
//! Guarantees:
//! - **Encrypted at rest.** The file (`state.sealed`, mode 0600 in the
//!   backend's 0700 store folder) is XChaCha20-Poly1305 under a key derived
//!   from the store passphrase, bound to the backend's name; a wrong
//!   passphrase or an altered file fails to open (never a panic, never a
//!   fresh login over a store that holds another device).
//! - **Durable.** Every save writes a temporary file, fsyncs it, renames it
//!   over the old one and fsyncs the folder: a crash leaves the old or the
//!   new state, never half of one.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use matrix_sdk::authentication::matrix::MatrixSession;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// File format tag.
const MAGIC: &[u8; 4] = b"SBM1";
/// How many applied reply ids are remembered (replays after a crash are
/// recognised within this window).
const APPLIED_KEPT: usize = 1024;

/// The persisted state of one Matrix backend.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The device id used for the first login (chosen, and saved, before
    /// it, so a crash during the login logs in again as the same device).
    pub device_id: Option<String>,
    /// The session to restore.
    pub session: Option<MatrixSession>,
    /// Handle (`@user:server`, `#alias:server`) → room id.
    pub rooms: BTreeMap<String, String>,
    /// `next_batch` of the last sync whose events were all applied.
    pub since: Option<String>,
    /// Ids of replies, reactions and receipts already applied, newest last.
    pub applied: VecDeque<String>,
}

impl Saved {
    /// True when `key` (an event id, or `receipt:EVENT:USER`) was applied.
    pub fn was_applied(&self, key: &str) -> bool {
        self.applied.iter().any(|k| k == key)
    }

    /// Records `key` as applied.
    pub fn mark_applied(&mut self, key: String) {
        if !self.was_applied(&key) {
            self.applied.push_back(key);
        }
        while self.applied.len() > APPLIED_KEPT {
            self.applied.pop_front();
        }
    }
}

/// Why the state could not be read or written. Paths and kinds only.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not open under this passphrase (wrong passphrase,
    /// altered or truncated file).
    #[error("{0} does not open with the store passphrase (wrong passphrase, or altered)")]
    Sealed(PathBuf),
}

/// The sealed state file of a store folder.
pub struct StateFile {
    path: PathBuf,
    key: Zeroizing<[u8; 32]>,
    context: Vec<u8>,
}

impl StateFile {
    /// The state file in `dir` for backend `name`, sealed under `passphrase`.
    pub fn new(dir: &Path, name: &str, passphrase: &str) -> StateFile {
        let mut h = Sha256::new();
        h.update(b"switchboard/matrix/state\0");
        h.update(passphrase.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&h.finalize());
        let mut context = MAGIC.to_vec();
        context.extend_from_slice(b"\0backend\0");
        context.extend_from_slice(name.as_bytes());
        StateFile {
            path: dir.join("state.sealed"),
            key,
            context,
        }
    }

    /// Reads the state (the default when there is no file yet).
    pub fn load(&self) -> Result<Saved, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(source) => {
                return Err(StateError::Io {
                    what: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let sealed = || StateError::Sealed(self.path.clone());
        if bytes.len() < MAGIC.len() + 24 + 16 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(sealed());
        }
        let (nonce, ct) = bytes[MAGIC.len()..].split_at(24);
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: &self.context,
                    },
                )
                .map_err(|_| sealed())?,
        );
        serde_json::from_slice(&plain).map_err(|_| sealed())
    }

    /// Writes the state durably (0600).
    pub fn save(&self, state: &Saved) -> Result<(), StateError> {
        let plain = Zeroizing::new(serde_json::to_vec(state).unwrap_or_default());
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &self.context,
                },
            )
            .map_err(|_| StateError::Sealed(self.path.clone()))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        write_private(&self.path, &bytes)
    }
}

/// Creates `dir` (and its parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> Result<(), StateError> {
    let io = |what, source| StateError::Io {
        what,
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod", e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a 0600 temporary file, fsync, rename
/// and a folder fsync.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |what, p: &Path, source| StateError::Io {
        what,
        path: p.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io("create", &tmp, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("chmod", &tmp, e))?;
    }
    f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
    f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync", dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_sealed_and_refuses_another_passphrase_or_backend() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "mx", "correct horse battery staple");
        assert!(f.load().unwrap().since.is_none(), "no file: default");
        let mut s = Saved {
            since: Some("s72594_4483_1934".into()),
            device_id: Some("SBDEVICE".into()),
            ..Saved::default()
        };
        s.rooms
            .insert("@alice:localhost".into(), "!room:localhost".into());
        s.mark_applied("$ev1".into());
        f.save(&s).unwrap();
        let back = f.load().unwrap();
        assert_eq!(back.since.as_deref(), Some("s72594_4483_1934"));
        assert_eq!(back.rooms["@alice:localhost"], "!room:localhost");
        assert!(back.was_applied("$ev1") && !back.was_applied("$ev2"));
        let raw = std::fs::read(dir.path().join("state.sealed")).unwrap();
        assert!(
            !raw.windows(b"alice".len()).any(|w| w == b"alice"),
            "nothing readable at rest"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("state.sealed"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let wrong = StateFile::new(dir.path(), "mx", "another passphrase");
        assert!(matches!(wrong.load(), Err(StateError::Sealed(_))));
        let other = StateFile::new(dir.path(), "other-backend", "correct horse battery staple");
        assert!(matches!(other.load(), Err(StateError::Sealed(_))));
        let mut cut = raw.clone();
        cut.truncate(raw.len() - 1);
        std::fs::write(dir.path().join("state.sealed"), &cut).unwrap();
        assert!(matches!(f.load(), Err(StateError::Sealed(_))));
    }

    #[test]
    fn applied_ids_are_bounded_and_kept_newest() {
        let mut s = Saved::default();
        for i in 0..(APPLIED_KEPT + 10) {
            s.mark_applied(format!("$e{i}"));
        }
        s.mark_applied(format!("$e{}", APPLIED_KEPT + 9));
        assert_eq!(s.applied.len(), APPLIED_KEPT);
        assert!(!s.was_applied("$e0"));
        assert!(s.was_applied(&format!("$e{}", APPLIED_KEPT + 9)));
    }
}
