//! Operator alarms: the conditions someone running the gateway must act on —
//! a feed gone silent, a backend down, an outbox aging, an escalation
//! exhausted, the journal failing, notifications dead-lettered — and the
//! heartbeat that lets an external monitor notice a dead gateway.
//!
//! Guarantees:
//! - **Independent channel.** Alarms go to `[operator_alarms] url`, their
//!   own endpoint with its own HTTP client — never through a clinical
//!   backend, so a dead backend cannot swallow the alarm about itself.
//!   Every alarm is also an ERROR log line (ids and names only, no PHI), an
//!   audit record and a metric.
//! - **One alarm per condition.** A condition (kind + subject: a sender, a
//!   backend, an alert id) is raised once and stays raised until it clears;
//!   checking it again while it holds sends nothing. Clearing sends one
//!   `cleared` notice. Exhausted escalations are one-shot (one per alert).
//! - **Not lost while the channel is down.** Notices queue in order and are
//!   retried with backoff until the endpoint accepts them; the queue is
//!   bounded (overflow is counted, logged and written to the audit trail).
//! - **Heartbeat.** While the gateway runs it POSTs to `heartbeat_url`
//!   every `heartbeat_secs` with its status and open alarms; silence there
//!   is the alarm for a gateway that is down altogether.

pub mod watch;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditRecord;
use crate::config::OperatorAlarmsConfig;
use crate::delivery::http::{Client, TlsSettings};
use crate::listener::connection::Shared;
use crate::telemetry::Metrics;

/// Notices waiting for the channel before new ones are counted and dropped.
pub const QUEUE_MAX: usize = 1000;

/// What needs an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A sender sent nothing for longer than its `silent_after_secs`.
    FeedSilent,
    /// A backend's circuit opened (consecutive failures).
    BackendDown,
    /// A backend's oldest waiting notification is older than `outbox_age_secs`.
    OutboxAging,
    /// Notifications of a backend were dead-lettered.
    DeadLetter,
    /// An alert reached its failsafe and nobody answered (one-shot).
    EscalationExhausted,
    /// The journal is failing commits.
    StorageFailing,
}

impl Kind {
    /// The name in notices, logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FeedSilent => "feed_silent",
            Kind::BackendDown => "backend_down",
            Kind::OutboxAging => "outbox_aging",
            Kind::DeadLetter => "dead_letter",
            Kind::EscalationExhausted => "escalation_exhausted",
            Kind::StorageFailing => "storage_failing",
        }
    }

    /// One-shot kinds are never "active": each raise is its own alarm.
    fn one_shot(self) -> bool {
        matches!(self, Kind::EscalationExhausted)
    }
}

/// One notice for the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What.
    pub kind: Kind,
    /// Which sender, backend, alert (`alert:17`) or `journal`.
    pub subject: String,
    /// Raised (true) or cleared.
    pub raised: bool,
    /// When.
    pub at: DateTime<Utc>,
    /// Fixed text with ids and counts; never message content.
    pub detail: String,
}

impl Notice {
    /// A key the receiver can drop repeats by (same on every retry).
    pub fn key(&self) -> String {
        let h = Sha256::digest(
            format!(
                "{}\0{}\0{}\0{}",
                self.kind.as_str(),
                self.subject,
                self.raised,
                self.at.timestamp_micros()
            )
            .as_bytes(),
        );
        hex::encode(&h[..16])
    }
}

#[derive(Debug, Default)]
struct State {
    active: HashMap<(Kind, String), DateTime<Utc>>,
    queue: VecDeque<Notice>,
    overflow: u64,
}

/// The operator alarm register. Cheap to call from any thread (the alert
/// desk raises from the committer thread); sending happens in [`run`].
#[derive(Debug)]
pub struct Alarms {
    state: Mutex<State>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Alarms {
    /// An empty register counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Alarms {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises `kind` for `subject`; true when it was not already raised
    /// (then one notice is queued).
    pub fn raise(&self, kind: Kind, subject: &str, detail: &str, at: DateTime<Utc>) -> bool {
        let mut st = self.lock();
        if !kind.one_shot() {
            let key = (kind, subject.to_string());
            if st.active.contains_key(&key) {
                return false;
            }
            st.active.insert(key, at);
        }
        tracing::error!(
            alarm = kind.as_str(),
            subject,
            detail,
            "operator alarm raised"
        );
        Metrics::inc(&self.metrics.operator_alarms_raised);
        Self::push(
            &mut st,
            Notice {
                kind,
                subject: subject.to_string(),
                raised: true,
                at,
                detail: detail.to_string(),
            },
        );
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Clears `kind` for `subject`; true when it was raised (then one
    /// `cleared` notice is queued).
    pub fn clear(&self, kind: Kind, subject: &str, at: DateTime<Utc>) -> bool {
        let mut st = self.lock();
        if st.active.remove(&(kind, subject.to_string())).is_none() {
            return false;
        }
        tracing::info!(alarm = kind.as_str(), subject, "operator alarm cleared");
        Self::push(
            &mut st,
            Notice {
                kind,
                subject: subject.to_string(),
                raised: false,
                at,
                detail: String::new(),
            },
        );
        drop(st);
        self.wake.notify_one();
        true
    }

    fn push(st: &mut State, n: Notice) {
        if st.queue.len() >= QUEUE_MAX {
            st.overflow += 1;
            tracing::error!(
                alarm = n.kind.as_str(),
                dropped = st.overflow,
                "operator alarm queue full; notice dropped from the channel (it is in the log)"
            );
            return;
        }
        st.queue.push_back(n);
    }

    /// Conditions raised now, oldest first.
    pub fn active(&self) -> Vec<(Kind, String, DateTime<Utc>)> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .active
            .iter()
            .map(|((k, s), at)| (*k, s.clone(), *at))
            .collect();
        v.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.1.cmp(&b.1)));
        v
    }

    /// Notices not yet accepted by the channel.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn front(&self) -> Option<Notice> {
        self.lock().queue.front().cloned()
    }

    fn pop_front(&self, n: &Notice) {
        let mut st = self.lock();
        if st.queue.front() == Some(n) {
            st.queue.pop_front();
        }
    }
}

fn client(cfg: &OperatorAlarmsConfig) -> Result<Client, String> {
    Client::new(
        &TlsSettings {
            ca: cfg.ca.clone(),
            identity: cfg.client_cert.clone().zip(cfg.client_key.clone()),
        },
        cfg.timeout,
    )
    .map_err(|e| format!("operator alarms: {e}"))
}

fn signed_headers(
    cfg: &OperatorAlarmsConfig,
    key: &str,
    ts: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("idempotency-key", key.to_string()),
        ("x-switchboard-timestamp", ts.to_string()),
    ];
    if let Some(secret) = cfg
        .secret_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|s| !s.is_empty())
    {
        headers.push((
            "x-switchboard-signature",
            crate::delivery::webhook::signature(secret.as_bytes(), ts, body),
        ));
    }
    headers
}

/// Sends queued notices to the channel (and audits each) until shutdown.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let cfg = shared.config.operator_alarms.clone();
    let http = match client(&cfg) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "operator alarm channel unusable; alarms go to the log and audit trail only");
            None
        }
    };
    let alarms = shared.alarms.clone();
    let mut failures = 0u32;
    loop {
        let wake = alarms.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let Some(n) = alarms.front() else {
            tokio::select! {
                _ = &mut wake => continue,
                _ = shutdown.cancelled() => return,
            }
        };
        let sent = match (&cfg.url, &http) {
            (Some(url), Some(http)) => {
                let body = serde_json::to_vec(&serde_json::json!({
                    "alarm": n.kind.as_str(),
                    "subject": n.subject,
                    "state": if n.raised { "raised" } else { "cleared" },
                    "at": n.at.to_rfc3339(),
                    "detail": n.detail,
                    "id": n.key(),
                }))
                .unwrap_or_default();
                let ts = shared.clock.now_utc().timestamp();
                let headers = signed_headers(&cfg, &n.key(), ts, &body);
                match http
                    .send(Method::POST, url, &headers, body, 16 * 1024)
                    .await
                {
                    Ok(r) if (200..300).contains(&r.status) => true,
                    Ok(r) => {
                        tracing::warn!(
                            status = r.status,
                            "operator alarm channel refused a notice; retrying"
                        );
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "operator alarm channel unreachable; retrying");
                        false
                    }
                }
            }
            _ => true,
        };
        if !sent {
            failures += 1;
            let wait = Duration::from_millis(500)
                .saturating_mul(2u32.saturating_pow(failures.min(7)))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        failures = 0;
        let rec = AuditRecord::new(
            shared.clock.now_utc(),
            "gateway".to_string(),
            if n.raised {
                "operator.alarm.raised"
            } else {
                "operator.alarm.cleared"
            },
            n.subject.clone(),
            n.kind.as_str().to_string(),
            if cfg.url.is_some() {
                "sent to the operator channel".to_string()
            } else {
                "no operator channel configured (log only)".to_string()
            },
        );
        let _ = shared.journal.with_storage(move |s| s.audit(&rec)).await;
        alarms.pop_front(&n);
    }
}

/// POSTs the heartbeat every `heartbeat` until shutdown (when configured).
pub async fn heartbeat(shared: Arc<Shared>, shutdown: CancellationToken) {
    let cfg = shared.config.operator_alarms.clone();
    let Some(url) = cfg.heartbeat_url.clone() else {
        return;
    };
    let http = match client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat channel unusable");
            return;
        }
    };
    loop {
        let now = shared.clock.now_utc();
        let active = shared.alarms.active();
        let healthy = shared.journal.health().is_healthy();
        let body = serde_json::to_vec(&serde_json::json!({
            "status": if healthy && active.is_empty() { "ok" } else { "degraded" },
            "at": now.to_rfc3339(),
            "journal": if healthy { "ok" } else { "failing" },
            "alarms": active.iter().map(|(k, s, _)| format!("{}:{s}", k.as_str())).collect::<Vec<_>>(),
        }))
        .unwrap_or_default();
        let key = format!("heartbeat-{}", now.timestamp_micros());
        let headers = signed_headers(&cfg, &key, now.timestamp(), &body);
        if let Err(e) = http
            .send(Method::POST, &url, &headers, body, 16 * 1024)
            .await
        {
            tracing::warn!(error = %e, "heartbeat not delivered");
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.heartbeat) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_condition_is_raised_once_until_it_clears() {
        let a = Alarms::new(Arc::new(Metrics::default()));
        assert!(a.raise(Kind::FeedSilent, "lab", "silent 600 s", t(0)));
        assert!(!a.raise(Kind::FeedSilent, "lab", "silent 615 s", t(15)));
        assert!(a.raise(Kind::FeedSilent, "adt", "silent 600 s", t(20)));
        assert_eq!(a.queued(), 2);
        assert!(a.clear(Kind::FeedSilent, "lab", t(30)));
        assert!(!a.clear(Kind::FeedSilent, "lab", t(31)));
        assert_eq!(a.queued(), 3);
        assert!(a.raise(Kind::FeedSilent, "lab", "silent again", t(40)));
        assert_eq!(a.active().len(), 2);
    }

    #[test]
    fn exhausted_escalations_are_one_alarm_each_and_never_active() {
        let a = Alarms::new(Arc::new(Metrics::default()));
        assert!(a.raise(Kind::EscalationExhausted, "alert:1", "x", t(0)));
        assert!(a.raise(Kind::EscalationExhausted, "alert:2", "x", t(0)));
        assert!(a.active().is_empty());
        assert_eq!(a.queued(), 2);
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_dropped() {
        let a = Alarms::new(Arc::new(Metrics::default()));
        for i in 0..(QUEUE_MAX + 5) {
            a.raise(Kind::EscalationExhausted, &format!("alert:{i}"), "x", t(0));
        }
        assert_eq!(a.queued(), QUEUE_MAX);
        assert_eq!(a.lock().overflow, 5);
    }

    #[test]
    fn a_notice_key_is_stable_and_distinct() {
        let n = Notice {
            kind: Kind::BackendDown,
            subject: "pager".into(),
            raised: true,
            at: t(0),
            detail: String::new(),
        };
        assert_eq!(n.key(), n.clone().key());
        let mut m = n.clone();
        m.raised = false;
        assert_ne!(n.key(), m.key());
    }
}
