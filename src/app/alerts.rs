//! The alert tasks: the router (routes what the journal committed, woken by
//! the committer) and the timer (one task, one sleep until the earliest
//! deadline on tokio's clock). Both run the desk on the committer thread.
//! Every desk run ([`with_desk`], the one way alerts are written) bumps
//! `Shared::alerts_changed` afterwards, so live views (the console's alert
//! stream) see routing, deadlines, acknowledgements and receipts alike.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::alert::desk::{Desk, ROUTE_BATCH, World};
use crate::alert::engine::Ack;
use crate::alert::model::Alert;
use crate::journal::{JournalError, Storage, StorageError};
use crate::listener::connection::Shared;

/// How long the router lets committed events gather before routing them.
const ROUTE_GATHER: Duration = Duration::from_millis(2);

/// Runs `f` with the desk and the world as it is now, on the committer
/// thread; then tells live views that alerts may have changed (a watch
/// channel: never waits, keeps only the latest value, so a slow reader
/// cannot hold a writer; readers drop snapshots that did not change).
pub async fn with_desk<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Desk, &mut dyn Storage, &World<'_>) -> T + Send + 'static,
) -> Result<T, JournalError> {
    let desk = shared.desk.clone();
    let routing = shared.routing.clone();
    let census = shared.census.clone();
    let clock = shared.clock;
    let channels: Vec<String> = shared
        .config
        .backends
        .iter()
        .map(|b| b.contact.clone())
        .collect();
    let out = shared
        .journal
        .with_storage(move |s| {
            let set = routing.current();
            let census = census.read();
            let world = World {
                rules: &set.rules,
                rosters: &set.rosters,
                census: &census,
                channels: &channels,
                now: clock.now_utc(),
            };
            let mut desk = desk.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut desk, s, &world)
        })
        .await;
    if out.is_ok() {
        shared
            .alerts_changed
            .send_modify(|v| *v = v.wrapping_add(1));
    }
    out
}

/// Routes committed events into alerts until shutdown.
pub(super) async fn route(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        loop {
            match with_desk(&shared, |d, s, w| d.route_pending(s, w)).await {
                Ok(Ok(n)) => {
                    if n > 0 {
                        crate::failpoint::hit("alerts.after-write");
                        shared.timer_wake.notify_one();
                        shared.delivery_wake.notify_waiters();
                    }
                    if n < ROUTE_BATCH {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "routing into alerts failed; retrying");
                    break;
                }
                Err(_) => return,
            }
        }
        tokio::select! {
            _ = shared.alert_wake.notified() => {
                // Let a burst of commits gather so one routing transaction
                // (one fsync) takes many events; 2 ms is nothing next to a
                // STAT tier of two minutes, and keeps the end-to-end
                // latency (result in → page out) low.
                tokio::time::sleep(ROUTE_GATHER).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Fires alert deadlines until shutdown: one sleep until the earliest.
pub(super) async fn timers(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let next = shared
            .desk
            .lock()
            .map(|d| d.next_deadline())
            .unwrap_or(None);
        let wait = match next {
            Some(d) => (d - shared.clock.now_utc())
                .to_std()
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                match with_desk(&shared, |d, s, w| d.fire_due(s, w)).await {
                    Ok(Ok(n)) => {
                        if n > 0 {
                            shared.delivery_wake.notify_waiters();
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "alert deadlines could not be recorded; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Err(_) => return,
                }
            }
            _ = shared.timer_wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Applies an acknowledgement through the desk.
pub async fn acknowledge(
    shared: &Arc<Shared>,
    id: i64,
    ack: Ack,
) -> Result<Result<Alert, crate::alert::desk::DeskError>, JournalError> {
    let out = with_desk(shared, move |d, s, w| d.ack(s, w, id, &ack)).await;
    shared.timer_wake.notify_one();
    shared.delivery_wake.notify_waiters();
    out
}

/// [`acknowledge`] by an operator (`via` = `operator:NAME`), who is
/// written to the audit trail with it.
pub async fn acknowledge_via(
    shared: &Arc<Shared>,
    id: i64,
    ack: Ack,
    via: String,
) -> Result<Result<Alert, crate::alert::desk::DeskError>, JournalError> {
    let out = with_desk(shared, move |d, s, w| d.ack_via(s, w, id, &ack, Some(&via))).await;
    shared.timer_wake.notify_one();
    shared.delivery_wake.notify_waiters();
    out
}

/// Live alerts (open, or closed inside their windows) read from the journal.
pub async fn live_alerts(
    shared: &Arc<Shared>,
) -> Result<Result<Vec<Alert>, StorageError>, JournalError> {
    let now = shared.clock.now_utc();
    shared
        .journal
        .with_storage(move |s| s.alerts_live(now).map(|(a, _)| a))
        .await
}
