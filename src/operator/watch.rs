//! The condition watcher: every `[operator_alarms] check_secs` it looks at
//! each watched feed's last message, each backend's oldest waiting
//! notification and the journal's health, and raises or clears the
//! matching operator alarms (each at most once while it holds; see the
//! parent module). Backend circuits, dead letters and exhausted escalations
//! are raised where they happen (delivery worker, alert desk).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Kind;
use crate::listener::connection::Shared;

/// Checks conditions until shutdown.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let started = Instant::now();
    let cfg = shared.config.operator_alarms.clone();
    let mut failures_seen = shared.journal.health().failures.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.check) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = shared.clock.now_utc();
        let alarms = &shared.alarms;

        // Feeds: silence measured from the last message, or from start-up
        // for a feed that has sent nothing since.
        for s in &shared.config.senders {
            let Some(limit) = s.silent_after else {
                continue;
            };
            let last = shared
                .metrics
                .feed_seen
                .get(&s.name)
                .map_or(started, |e| *e.value());
            let quiet = Instant::now().saturating_duration_since(last);
            if quiet > limit {
                alarms.raise(
                    Kind::FeedSilent,
                    &s.name,
                    &format!(
                        "no message for {} s (limit {} s)",
                        quiet.as_secs(),
                        limit.as_secs()
                    ),
                    now,
                );
            } else {
                alarms.clear(Kind::FeedSilent, &s.name, now);
            }
        }

        // Outboxes: the oldest waiting notification per backend.
        if let Ok(Ok(backlog)) = shared
            .journal
            .with_storage(|s| s.notifications_backlog())
            .await
        {
            for b in &shared.config.backends {
                let oldest = backlog
                    .iter()
                    .find(|x| x.backend == b.contact)
                    .and_then(|x| x.oldest);
                let age = oldest
                    .and_then(|o| (now - o).to_std().ok())
                    .unwrap_or_default();
                if oldest.is_some() && age > cfg.outbox_age {
                    alarms.raise(
                        Kind::OutboxAging,
                        &b.name,
                        &format!(
                            "oldest waiting notification is {} s old (limit {} s)",
                            age.as_secs(),
                            cfg.outbox_age.as_secs()
                        ),
                        now,
                    );
                } else {
                    alarms.clear(Kind::OutboxAging, &b.name, now);
                }
            }
        }

        // The journal: unhealthy, or commits failed since the last look.
        let health = shared.journal.health();
        let failures = health.failures.load(Ordering::Relaxed);
        if !health.is_healthy() || failures > failures_seen {
            alarms.raise(
                Kind::StorageFailing,
                "journal",
                &format!(
                    "{} failed commits since the last check",
                    failures - failures_seen
                ),
                now,
            );
        } else {
            alarms.clear(Kind::StorageFailing, "journal", now);
        }
        failures_seen = failures;
    }
}
