//! The routing set (rosters + mappings) and its live reload.
//!
//! Rosters come from two places that never fight: files in the roster
//! folder (file-managed, edited by GitOps) and rosters saved through the API
//! or `switchboard rosters import` (console-managed, kept with every
//! revision in the journal). A name may be in only one of them: loading
//! both with the same name is a validation error. Console rosters appear in
//! errors as `console:NAME`.
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
use crate::journal::RosterRevision;
use crate::roster::{OnCallChange, Roster, Rosters};
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
    /// The console-managed rosters in it: (name, revision).
    pub console: Vec<(String, u64)>,
}

/// The pseudo-path a console-managed roster is loaded (and reported) under.
pub fn console_path(name: &str) -> PathBuf {
    PathBuf::from(format!("console:{name}"))
}

/// True when `roster` came from the journal, not from a file.
pub fn is_console(roster: &Roster) -> bool {
    roster.source.to_string_lossy().starts_with("console:")
}

/// A validated candidate set (not yet serving).
pub struct Candidate {
    /// Rosters.
    pub rosters: Rosters,
    /// Rules.
    pub rules: Rules,
    /// Fingerprint of every source.
    pub fingerprint: [u8; 32],
    /// Console rosters: (name, revision).
    pub console: Vec<(String, u64)>,
}

/// Every source of a routing set, read but not validated.
struct Sources {
    rosters: Vec<(PathBuf, String)>,
    mappings: Vec<(PathBuf, String)>,
    fingerprint: [u8; 32],
    console: Vec<(String, u64)>,
}

fn read_sources(
    rosters_dir: &Path,
    mappings_dir: &Path,
    console: &[RosterRevision],
) -> Result<Sources, Vec<ConfigError>> {
    let mut rosters: Vec<(PathBuf, String)> = Vec::new();
    if rosters_dir.is_dir() {
        for s in crate::roster::read_dir(rosters_dir)? {
            rosters.push((s.path, s.text));
        }
    }
    let mut console_list = Vec::new();
    for c in console.iter().filter(|c| !c.retired) {
        rosters.push((console_path(&c.name), c.text.clone()));
        console_list.push((c.name.clone(), c.revision));
    }
    let mut mappings: Vec<(PathBuf, String)> = Vec::new();
    if mappings_dir.is_dir() {
        for s in crate::roster::read_dir(mappings_dir)? {
            mappings.push((s.path, s.text));
        }
    }
    let mut h = Sha256::new();
    for (p, t) in rosters.iter().chain(&mappings) {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update((t.len() as u64).to_be_bytes());
        h.update(t.as_bytes());
    }
    Ok(Sources {
        rosters,
        mappings,
        fingerprint: h.finalize().into(),
        console: console_list,
    })
}

/// Reads the roster and mapping folders and validates them together with
/// the console-managed rosters `console`, exactly as start-up does.
pub fn validate(
    rosters_dir: &Path,
    mappings_dir: &Path,
    console: &[RosterRevision],
) -> Result<Candidate, Vec<ConfigError>> {
    let src = read_sources(rosters_dir, mappings_dir, console)?;
    let roster_sources = src.rosters;
    let mapping_sources = src.mappings;
    let rosters = crate::roster::load_files(&roster_sources)?;
    let misnamed: Vec<ConfigError> = console
        .iter()
        .filter(|c| !c.retired)
        .filter_map(|c| {
            let path = console_path(&c.name);
            let r = rosters.rosters().iter().find(|r| r.source == path)?;
            (r.name != c.name).then(|| ConfigError {
                file: path,
                line: None,
                column: None,
                field: "name".into(),
                problem: format!("must be `{}`, the name it is stored under", c.name),
            })
        })
        .collect();
    if !misnamed.is_empty() {
        return Err(misnamed);
    }
    let rules = crate::rules::load_files(&mapping_sources, &rosters)?;
    Ok(Candidate {
        rosters,
        rules,
        fingerprint: src.fingerprint,
        console: src.console,
    })
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
    /// Serialises roster edits (validate, save, reload) from the API.
    pub edits: tokio::sync::Mutex<()>,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Refused reloads.
    pub refused: AtomicU64,
    last_errors: Mutex<Vec<ConfigError>>,
}

impl LiveRouting {
    /// Starts from the set the configuration was validated with (its
    /// folders and the console-managed rosters `console`).
    pub fn new(config: &Config, at: DateTime<Utc>, console: &[RosterRevision]) -> Self {
        let sources = read_sources(&config.rosters_dir, &config.mappings_dir, console).ok();
        let fingerprint = sources.as_ref().map(|s| s.fingerprint).unwrap_or_default();
        let console = sources.map(|s| s.console).unwrap_or_default();
        LiveRouting {
            current: RwLock::new(Arc::new(RoutingSet {
                rosters: config.rosters.clone(),
                rules: config.rules.clone(),
                revision: 1,
                loaded_at: at,
                fingerprint,
                console,
            })),
            rosters_dir: config.rosters_dir.clone(),
            mappings_dir: config.mappings_dir.clone(),
            reloading: Mutex::new(()),
            edits: tokio::sync::Mutex::new(()),
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

    /// Validates the folders with `console` rosters without swapping.
    pub fn validate(&self, console: &[RosterRevision]) -> Result<Candidate, Vec<ConfigError>> {
        validate(&self.rosters_dir, &self.mappings_dir, console)
    }

    /// Reads, validates and (when valid and changed) swaps in the files and
    /// the console-managed rosters `console`.
    pub fn reload(&self, at: DateTime<Utc>, console: &[RosterRevision]) -> ReloadOutcome {
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
        let c = match self.validate(console) {
            Ok(c) => c,
            Err(errors) => return refuse(errors),
        };
        if c.fingerprint == old.fingerprint {
            return ReloadOutcome::Unchanged {
                revision: old.revision,
            };
        }
        let Candidate {
            rosters,
            rules,
            fingerprint: fp,
            console,
        } = c;
        let changes = old.rosters.on_call_changes(&rosters, at);
        let revision = old.revision + 1;
        let set = Arc::new(RoutingSet {
            rosters: Arc::new(rosters),
            rules: Arc::new(rules),
            revision,
            loaded_at: at,
            fingerprint: fp,
            console,
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
