//! The group committer: one thread owns the [`Storage`] and commits whatever
//! has queued up since its last commit in a single durable transaction.
//! Under load many messages from many connections share one fsync, so
//! durability does not serialise senders; when idle a lone message commits
//! at once. The queue in front of it is bounded: when it is full, callers
//! wait, and senders are slowed instead of memory growing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Health;
use super::record::{Committed, NewMessage};
use super::storage::{Storage, StorageError};

/// Work for the committer thread.
pub(super) enum Command {
    /// Commit a message and answer.
    Commit(Box<NewMessage>, oneshot::Sender<Result<Committed, ()>>),
    /// Run something else against the storage, in queue order.
    Run(StorageTask),
}

/// A closure run on the committer thread against the storage.
pub(super) type StorageTask = Box<dyn FnOnce(&mut dyn Storage) + Send>;

/// Called on the committer thread after each successful commit, before any
/// answer is released, with the batch and its answers in journal order.
/// Derived state kept from it (the census) therefore sees every committed
/// message exactly once, in id order, and is never behind an ACK.
pub type AfterCommit = Box<dyn FnMut(&[NewMessage], &[Committed]) + Send>;

pub(super) fn spawn(
    storage: Box<dyn Storage>,
    rx: mpsc::Receiver<Command>,
    batch_max: usize,
    dedup_window: Duration,
    health: Arc<Health>,
    hook: Option<AfterCommit>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("journal-commit".into())
        .spawn(move || run(storage, rx, batch_max, dedup_window, health, hook))
        .expect("spawn the journal committer thread")
}

fn run(
    mut storage: Box<dyn Storage>,
    mut rx: mpsc::Receiver<Command>,
    batch_max: usize,
    dedup_window: Duration,
    health: Arc<Health>,
    mut hook: Option<AfterCommit>,
) {
    let mut msgs: Vec<NewMessage> = Vec::with_capacity(batch_max);
    let mut replies: Vec<oneshot::Sender<Result<Committed, ()>>> = Vec::with_capacity(batch_max);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Commit(m, reply) => {
                    msgs.push(*m);
                    replies.push(reply);
                }
                Command::Run(f) => {
                    flush(
                        &mut *storage,
                        &mut msgs,
                        &mut replies,
                        dedup_window,
                        &health,
                        &mut hook,
                    );
                    f(&mut *storage);
                }
            }
            if msgs.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        flush(
            &mut *storage,
            &mut msgs,
            &mut replies,
            dedup_window,
            &health,
            &mut hook,
        );
    }
}

fn flush(
    storage: &mut dyn Storage,
    msgs: &mut Vec<NewMessage>,
    replies: &mut Vec<oneshot::Sender<Result<Committed, ()>>>,
    dedup_window: Duration,
    health: &Health,
    hook: &mut Option<AfterCommit>,
) {
    if msgs.is_empty() {
        return;
    }
    let now = msgs
        .iter()
        .map(|m| m.received_at)
        .max()
        .expect("batch is not empty");
    match storage.commit(msgs, now, dedup_window) {
        Ok(answers) => {
            health.healthy.store(true, Ordering::SeqCst);
            health.batches.fetch_add(1, Ordering::Relaxed);
            health
                .committed
                .fetch_add(msgs.len() as u64, Ordering::Relaxed);
            crate::failpoint::hit("journal.after-commit");
            if let Some(h) = hook.as_mut() {
                h(msgs, &answers);
            }
            for (answer, reply) in answers.into_iter().zip(replies.drain(..)) {
                if matches!(answer, Committed::Duplicate { .. }) {
                    health.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            health.healthy.store(false, Ordering::SeqCst);
            health.failures.fetch_add(1, Ordering::Relaxed);
            log_failure(&e, msgs.len());
            for reply in replies.drain(..) {
                let _ = reply.send(Err(()));
            }
        }
    }
    msgs.clear();
    replies.clear();
}

fn log_failure(e: &StorageError, count: usize) {
    tracing::error!(error = %e, messages = count, "journal commit failed; answering AR/CE 207 until it recovers");
}
