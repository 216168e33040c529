//! The routing set (rosters + mappings) and its live reload.
//!
//! Guarantees: readers always see one complete, validated set (an `Arc`
//! swapped under a lock, never a half-loaded one). A reload reads both
//! folders, validates the rosters and then the mappings against them exactly
//! as start-up does; if anything is wrong the new files are refused with
//! every error (file, line, column, field) and the previous set keeps
//! serving. An unchanged set (same files, same bytes) is not reloaded.
//! Every reload and every refusal is logged, counted and audited, and a
//! reload logs which roles change who is on call at that instant.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::roster::{OnCallChange, Rosters};
use crate::rules::Rules;

/// One validated set of rosters and mappings.
#[derive(Debug)]
pub struct RoutingSet {
    /// The rosters.
    pub rosters: Arc<Rosters>,
    /// The mapping rules, validated against `rosters`.
    pub rules: Arc<Rules>,
    /// 1 at start, +1 per successful reload.
    pub revision: u64,
    /// When it was loaded.
    pub loaded_at: DateTime<Utc>,
    /// SHA-256 over the file names and contents it was loaded from.
    pub fingerprint: [u8; 32],
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The files are byte-for-byte what is loaded.
    Unchanged {
        /// Current revision.
        revision: u64,
    },
    /// The new set serves from now on.
    Reloaded {
        /// New revision.
        revision: u64,
        /// Roles whose on-call people changed at the reload instant.
        changes: Vec<OnCallChange>,
    },
    /// The files are broken; the previous set serves on.
    Refused {
        /// Revision still serving.
        revision: u64,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

/// The current routing set, swappable while the gateway runs.
#[derive(Debug)]
pub struct LiveRouting {
    current: RwLock<Arc<RoutingSet>>,
    rosters_dir: PathBuf,
    mappings_dir: PathBuf,
    /// Serialises reloads (SIGHUP, watcher and API may race).
    reloading: Mutex<()>,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Refused reloads.
    pub refused: AtomicU64,
    last_errors: Mutex<Vec<ConfigError>>,
}

impl LiveRouting {
    /// Starts from the set the configuration was validated with.
    pub fn new(config: &Config, at: DateTime<Utc>) -> Self {
        let fingerprint =
            fingerprint(&config.rosters_dir, &config.mappings_dir).unwrap_or_default();
        LiveRouting {
            current: RwLock::new(Arc::new(RoutingSet {
                rosters: config.rosters.clone(),
                rules: config.rules.clone(),
                revision: 1,
                loaded_at: at,
                fingerprint,
            })),
            rosters_dir: config.rosters_dir.clone(),
            mappings_dir: config.mappings_dir.clone(),
            reloading: Mutex::new(()),
            reloads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_errors: Mutex::new(Vec::new()),
        }
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<RoutingSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The errors of the last refused reload (empty after a good one).
    pub fn last_errors(&self) -> Vec<ConfigError> {
        self.last_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The folders watched.
    pub fn dirs(&self) -> [&Path; 2] {
        [&self.rosters_dir, &self.mappings_dir]
    }

    /// Reads, validates and (when valid and changed) swaps in the files.
    pub fn reload(&self, at: DateTime<Utc>) -> ReloadOutcome {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current();
        let refuse = |errors: Vec<ConfigError>| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            *self.last_errors.lock().unwrap_or_else(|p| p.into_inner()) = errors.clone();
            ReloadOutcome::Refused {
                revision: old.revision,
                errors,
            }
        };
        let fp = match fingerprint(&self.rosters_dir, &self.mappings_dir) {
            Ok(fp) => fp,
            Err(errors) => return refuse(errors),
        };
        if fp == old.fingerprint {
            return ReloadOutcome::Unchanged {
                revision: old.revision,
            };
        }
        let rosters = match load_rosters(&self.rosters_dir) {
            Ok(r) => r,
            Err(errors) => return refuse(errors),
        };
        let rules = match load_rules(&self.mappings_dir, &rosters) {
            Ok(r) => r,
            Err(errors) => return refuse(errors),
        };
        let changes = old.rosters.on_call_changes(&rosters, at);
        let revision = old.revision + 1;
        let set = Arc::new(RoutingSet {
            rosters: Arc::new(rosters),
            rules: Arc::new(rules),
            revision,
            loaded_at: at,
            fingerprint: fp,
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = set;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.last_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        ReloadOutcome::Reloaded { revision, changes }
    }
}

fn load_rosters(dir: &Path) -> Result<Rosters, Vec<ConfigError>> {
    if dir.is_dir() {
        crate::roster::load_dir(dir)
    } else {
        crate::roster::load_files(&[])
    }
}

fn load_rules(dir: &Path, rosters: &Rosters) -> Result<Rules, Vec<ConfigError>> {
    if dir.is_dir() {
        crate::rules::load_dir(dir, rosters)
    } else {
        crate::rules::load_files(&[], rosters)
    }
}

/// SHA-256 over every `*.toml` file's name and bytes, both folders in order.
fn fingerprint(rosters: &Path, mappings: &Path) -> Result<[u8; 32], Vec<ConfigError>> {
    let mut h = Sha256::new();
    for dir in [rosters, mappings] {
        h.update(dir.as_os_str().as_encoded_bytes());
        h.update([0]);
        if !dir.is_dir() {
            continue;
        }
        for s in crate::roster::read_dir(dir)? {
            h.update(s.path.as_os_str().as_encoded_bytes());
            h.update([0]);
            h.update((s.text.len() as u64).to_be_bytes());
            h.update(s.text.as_bytes());
        }
    }
    Ok(h.finalize().into())
}

/// Calls `reload` on SIGHUP and when a file in the routing folders changes
/// (changes within `settle` of each other count as one: editors write a
/// file in several steps), until `shutdown`.
pub async fn watch(
    dirs: Vec<PathBuf>,
    settle: Duration,
    shutdown: CancellationToken,
    mut reload: impl FnMut(&'static str) + Send,
) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            for d in dirs.iter().filter(|d| d.is_dir()) {
                if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch the folder; reload with SIGHUP");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no file watching; reload with SIGHUP");
            None
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => reload("sighup"),
            Some(()) = rx.recv() => {
                // Let the editor finish; fold the burst into one reload.
                tokio::time::sleep(settle).await;
                while rx.try_recv().is_ok() {}
                reload("file-change");
            }
        }
    }
}
