//! The key directory: KEK files `kek-<id>.key`, first-start creation, and
//! KEK rotation (protocol in the module docs of [`super`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::kek::LocalKek;
use super::keyring::{kek_in_use, rewrap_all};
use super::{KeyEncryptionKey, Keyring, SealError};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current KEK.
    pub new_kek_id: String,
    /// Its key file.
    pub new_key_file: PathBuf,
    /// Keys re-wrapped (live DEKs and `seal_meta` entries).
    pub rewrapped: usize,
    /// Older KEKs whose files were deleted.
    pub deleted: Vec<String>,
    /// Older KEKs kept because a live key still names them (a keyring that
    /// was not rebuilt after the rotation wrapped a new key with them); the
    /// next [`KeyDir::prune`] or rotation deletes them once unused.
    pub retained: Vec<String>,
}

/// The KEK files of one journal, newest (current) first.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    keks: Vec<Arc<LocalKek>>,
}

impl KeyDir {
    /// Loads every `kek-<id>.key` in `dir`; fails when there is none, when
    /// a file is readable by group or others, or when the directory is
    /// writable by them. Removes leftovers of interrupted key writes.
    pub fn load(dir: &Path) -> Result<KeyDir, SealError> {
        let kd = KeyDir::scan(dir)?;
        if kd.keks.is_empty() {
            return Err(SealError::KeyDir {
                path: dir.to_path_buf(),
                problem: "no key-encryption key (kek-<id>.key) in it".into(),
            });
        }
        Ok(kd)
    }

    /// Loads `dir`, or on first start creates it (mode 0700) with a new KEK
    /// (mode 0600). `true` when a key was created: log
    /// [`KeyDir::current_key_file`] so the operator knows what to back up.
    pub fn load_or_create(dir: &Path, now: DateTime<Utc>) -> Result<(KeyDir, bool), SealError> {
        if !dir.exists() {
            create_private_dir(dir)?;
        }
        let mut kd = KeyDir::scan(dir)?;
        if !kd.keks.is_empty() {
            return Ok((kd, false));
        }
        kd.add_kek(now)?;
        Ok((kd, true))
    }

    fn scan(dir: &Path) -> Result<KeyDir, SealError> {
        let meta = fs::metadata(dir).map_err(|e| SealError::io(dir, &e))?;
        if !meta.is_dir() {
            return Err(SealError::KeyDir {
                path: dir.to_path_buf(),
                problem: "not a directory".into(),
            });
        }
        check_dir_private(dir, &meta)?;
        let mut keks = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| SealError::io(dir, &e))? {
            let entry = entry.map_err(|e| SealError::io(dir, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".kek-") && name.ends_with(".key.tmp") {
                // Never renamed into place, so never used: wipe it.
                let _ = fs::remove_file(entry.path());
            } else if name.starts_with("kek-") && name.ends_with(".key") {
                keks.push(Arc::new(LocalKek::from_file(&entry.path())?));
            }
        }
        keks.sort_by(|a, b| b.id().cmp(a.id()));
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            keks,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The loaded KEKs, current (newest id) first.
    pub fn keks(&self) -> &[Arc<LocalKek>] {
        &self.keks
    }

    /// The KEK that wraps new keys.
    pub fn current(&self) -> &Arc<LocalKek> {
        &self.keks[0]
    }

    /// The file of KEK `id`.
    pub fn key_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("kek-{id}.key"))
    }

    /// The file of the current KEK.
    pub fn current_key_file(&self) -> PathBuf {
        self.key_file(self.current().id())
    }

    /// Rotation step 1: a new KEK, durably in its file (temporary name,
    /// fsync, rename, fsync the directory), made current.
    pub(super) fn add_kek(&mut self, now: DateTime<Utc>) -> Result<Arc<LocalKek>, SealError> {
        let id = LocalKek::new_id(now);
        if let Some(newest) = self.keks.first()
            && id.as_str() <= newest.id()
        {
            return Err(SealError::KeyDir {
                path: self.dir.clone(),
                problem: format!(
                    "the new key id {id} would not sort after the newest {}; is the clock behind?",
                    newest.id()
                ),
            });
        }
        let kek = Arc::new(LocalKek::generate(id)?);
        let path = self.key_file(kek.id());
        if path.exists() {
            return Err(SealError::KeyFile {
                path,
                problem: "already exists".into(),
            });
        }
        let tmp = self.dir.join(format!(".kek-{}.key.tmp", kek.id()));
        let written = (|| {
            let mut f = create_private_file(&tmp)?;
            f.write_all(kek.to_hex().as_bytes())?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(SealError::io(&path, &e));
        }
        sync_dir(&self.dir)?;
        self.keks.insert(0, kek.clone());
        Ok(kek)
    }

    /// Rotates the KEK: 1) writes a new KEK file (fsync), 2) re-wraps every
    /// live key with it in one transaction ([`rewrap_all`]), 3) only after
    /// the commit deletes the older KEK files no live key names
    /// ([`KeyDir::prune`]). On an error, every key is still readable with a
    /// keyring from this directory; run it again. Rebuild the journal's
    /// [`Keyring`] afterwards ([`Keyring::from_dir`]).
    pub fn rotate(
        &mut self,
        conn: &mut Connection,
        now: DateTime<Utc>,
    ) -> Result<RotationReport, SealError> {
        let new = self.add_kek(now)?;
        let keyring = Keyring::from_dir(self)?;
        let rewrapped = rewrap_all(conn, &keyring, &*new)?;
        let (deleted, retained) = self.prune_older(conn)?;
        Ok(RotationReport {
            new_kek_id: new.id().to_string(),
            new_key_file: self.key_file(new.id()),
            rewrapped,
            deleted,
            retained,
        })
    }

    /// Rotation step 3: deletes the files of older (non-current) KEKs that
    /// no live key in `conn` names, then fsyncs the directory. Finishes a
    /// rotation interrupted after its commit; harmless otherwise. Returns
    /// the deleted KEK ids.
    pub fn prune(&mut self, conn: &Connection) -> Result<Vec<String>, SealError> {
        Ok(self.prune_older(conn)?.0)
    }

    fn prune_older(&mut self, conn: &Connection) -> Result<(Vec<String>, Vec<String>), SealError> {
        let mut deleted = Vec::new();
        let mut retained = Vec::new();
        for kek in self.keks.iter().skip(1) {
            if kek_in_use(conn, kek.id())? {
                retained.push(kek.id().to_string());
                continue;
            }
            let path = self.key_file(kek.id());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SealError::io(&path, &e)),
            }
            deleted.push(kek.id().to_string());
        }
        if !deleted.is_empty() {
            sync_dir(&self.dir)?;
            self.keks.retain(|k| !deleted.iter().any(|d| d == k.id()));
        }
        Ok((deleted, retained))
    }
}

fn sync_dir(dir: &Path) -> Result<(), SealError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SealError::io(dir, &e))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), SealError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SealError::io(dir, &e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), SealError> {
    fs::create_dir_all(dir).map_err(|e| SealError::io(dir, &e))
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Refuses a key directory that group or others may write (they could
/// plant or delete keys).
#[cfg(unix)]
fn check_dir_private(dir: &Path, meta: &fs::Metadata) -> Result<(), SealError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SealError::KeyDir {
            path: dir.to_path_buf(),
            problem: format!(
                "mode {mode:04o} lets group or others write it; it must be 0700 (chmod 700 it)"
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_dir_private(_dir: &Path, _meta: &fs::Metadata) -> Result<(), SealError> {
    Ok(())
}
