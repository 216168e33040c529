//! The census the gateway routes by.
//!
//! Guarantees: every ADT event of every message the journal stored as
//! accepted is applied exactly once, in journal id order, on the committer
//! thread right after its commit and before the sender's ACK is released —
//! so the census is never behind an acknowledged message. API changes are
//! journaled first and applied on the same thread, so their order relative
//! to ADT events is the journal's and a restart rebuilds the same state
//! ([`crate::journal::Storage::census_load`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::census::{Census, CensusError, CensusOp};
use crate::journal::AfterCommit;
use crate::journal::record::{Committed, Fate, NewMessage};

/// The live census and its counters.
#[derive(Debug, Default)]
pub struct LiveCensus {
    census: RwLock<Census>,
    changes: AtomicU64,
    saved: AtomicU64,
    events: AtomicU64,
    warnings: AtomicU64,
}

impl LiveCensus {
    /// Starts from a rebuilt census.
    pub fn new(census: Census) -> Arc<Self> {
        Arc::new(LiveCensus {
            census: RwLock::new(census),
            ..LiveCensus::default()
        })
    }

    /// The hook for [`crate::journal::Journal::start_with_hook`].
    pub fn after_commit(self: &Arc<Self>) -> AfterCommit {
        let me = self.clone();
        Box::new(move |batch: &[NewMessage], answers: &[Committed]| {
            for (m, a) in batch.iter().zip(answers) {
                if !matches!(a, Committed::Stored { .. }) || m.fate != Fate::Accepted {
                    continue;
                }
                if !m.events.iter().any(|e| e.kind.is_adt()) {
                    continue;
                }
                let mut c = me.write();
                for e in m.events.iter().filter(|e| e.kind.is_adt()) {
                    let applied = c.apply(e);
                    me.events.fetch_add(1, Ordering::Relaxed);
                    for w in &applied.warnings {
                        me.warnings.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(kind = w.kind(), sender = %e.source.sender, event = e.kind.as_str(), "census: inconsistent feed, applied as far as safe");
                    }
                }
                me.changes.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Reads the census.
    pub fn read(&self) -> RwLockReadGuard<'_, Census> {
        self.census.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Census> {
        self.census.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a change that the journal has recorded.
    pub fn apply_op(&self, op: &CensusOp) -> Result<usize, CensusError> {
        let n = self.write().apply_op(op)?;
        self.changes.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    /// The change counter now (pass it to [`LiveCensus::mark_saved`]).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// True when something changed since the last snapshot.
    pub fn dirty(&self) -> bool {
        self.changes() != self.saved.load(Ordering::Relaxed)
    }

    /// Records that a snapshot covers every change up to `changes`.
    pub fn mark_saved(&self, changes: u64) {
        self.saved.store(changes, Ordering::Relaxed);
    }

    /// ADT events applied since start.
    pub fn events_applied(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Warnings raised since start.
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }
}
