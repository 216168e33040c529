//! Delivery: one worker per configured backend drains that backend's
//! notifications from the journal (the durable, per-backend outbox the alert
//! desk fills), turns each into the backend's redacted view, and sends it.
//!
//! Guarantees:
//! - **Only redacted content leaves.** A worker builds its payload from a
//!   [`crate::redact::Redacted`] view under the backend's PHI profile and
//!   nothing else; the fields that left are written to the audit trail with
//!   each delivery.
//! - **Nothing is dropped silently.** Retryable failures (transport errors,
//!   timeouts, 408/425/429/5xx) retry with jittered exponential backoff,
//!   honouring `Retry-After`; a permanent failure (another 4xx) or the last
//!   attempt dead-letters the notification with an ERROR log and an audit
//!   record for an operator. A dead-lettered or retrying notification never
//!   blocks the others (they are taken by due time).
//! - **Redeliveries are recognisable.** The idempotency key is fixed when the
//!   notification is created; every attempt sends the same key.
//! - **A dead backend does not stall the rest.** Each backend has its own
//!   worker and a circuit breaker: after `circuit_failures` consecutive
//!   retryable failures it pauses for `circuit_open`, then tries again.
//! - **Bounded work per loop.** A worker takes at most 64 due rows, sends up
//!   to `concurrency` of them at once, and records the batch's attempts and
//!   receipts in one transaction (dead letters, rare, on their own); a batch
//!   that cannot be recorded is sent again with the same idempotency keys.
//! - **An answer is applied once.** [`apply_reply`] ignores a receipt, read
//!   or decline a backend repeats for the same notice ([`already_applied`]).
//! - **An acceptance stops pending notifications** (the desk cancels them in
//!   the journal; a worker only takes `pending`/`retrying` rows and an
//!   attempt recorded after a cancellation writes nothing).

pub mod fhir;
pub mod http;
pub mod matrix;
pub mod wctp;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::alert::engine::Ack;
use crate::alert::model::Reason;
use crate::audit::AuditRecord;
use crate::config::{BackendConfig, BackendKind};
use crate::journal::{AttemptUpdate, NotificationRow};
use crate::listener::connection::Shared;
use crate::operator::Kind;
use crate::redact::{AlertView, Profile, Redacted, Template};
pub use webhook::Outcome;

/// A backend ready to deliver: its configuration, profile and template.
pub struct Backend {
    /// Configuration.
    pub cfg: BackendConfig,
    /// PHI profile.
    pub profile: Profile,
    /// Compiled template (else the preview line is the text).
    pub template: Option<Template>,
    /// HTTP client (TLS trust and client identity built once).
    pub http: http::Client,
    /// The Matrix connection (`kind = "matrix"`; set when the gateway
    /// starts, with the data folder it uses).
    pub matrix: Option<Arc<matrix::Link>>,
}

impl Backend {
    /// Resolves the profile and compiles the template (the configuration
    /// was validated, so this only fails on an inconsistent build).
    pub fn prepare(cfg: &BackendConfig) -> Result<Backend, String> {
        let profile = crate::redact::builtin(&cfg.profile)
            .ok_or_else(|| format!("backend {}: unknown profile", cfg.name))?;
        let template = match &cfg.template {
            Some(t) => Some(
                crate::redact::compile(&cfg.name, t, &profile)
                    .map_err(|e| format!("backend {}: template: {e}", cfg.name))?,
            ),
            None => None,
        };
        let http = http::Client::new(
            &http::TlsSettings {
                ca: cfg.ca.clone(),
                identity: cfg.client_cert.clone().zip(cfg.client_key.clone()),
            },
            cfg.timeout,
        )
        .map_err(|e| format!("backend {}: {e}", cfg.name))?;
        Ok(Backend {
            cfg: cfg.clone(),
            profile,
            template,
            http,
            matrix: None,
        })
    }
}

/// The signed per-alert callback token of a recipient on a backend:
/// `ALERT.MEMBER.BACKEND.SIG`, SIG = first 32 hex digits of
/// HMAC-SHA256(secret, `callback:ALERT:MEMBER:BACKEND`). It lets the
/// receiving system acknowledge for that recipient, and nothing else.
pub fn callback_token(secret: &[u8], backend: &str, alert_id: i64, member: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("callback:{alert_id}:{member}:{backend}").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("{alert_id}.{member}.{backend}.{}", &sig[..32])
}

/// Checks a callback token against the configured backends' secrets;
/// returns (alert id, member) when it is genuine.
pub fn verify_callback(token: &str, backends: &[BackendConfig]) -> Option<(i64, String)> {
    let mut parts = token.splitn(4, '.');
    let (alert, member, backend, _) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let alert_id: i64 = alert.parse().ok()?;
    let cfg = backends.iter().find(|b| b.name == backend)?;
    let secret = std::env::var(cfg.secret_env.as_ref()?)
        .ok()
        .filter(|s| !s.is_empty())?;
    let want = callback_token(secret.as_bytes(), backend, alert_id, member);
    let same = want.len() == token.len()
        && want
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then(|| (alert_id, member.to_string()))
}

/// Delay before attempt `attempts + 1`: `initial × 2^attempts`, capped,
/// spread ±20 % by a hash of the notification (no thundering herd), and
/// never shorter than the server's `Retry-After`.
pub fn backoff(
    cfg: &BackendConfig,
    id: i64,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let base = cfg
        .retry_initial
        .saturating_mul(2u32.saturating_pow(attempts.min(30)))
        .min(cfg.retry_max);
    let h = Sha256::digest(format!("{id}:{attempts}").as_bytes());
    let spread = 0.8 + 0.4 * (f64::from(h[0]) / 255.0);
    let jittered = base.mul_f64(spread);
    match retry_after {
        Some(r) if r > jittered => r,
        _ => jittered,
    }
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What a transport is handed for one notification: the journal row, the
/// redacted view under the backend's profile, and the rendered text. There
/// is no way to reach the unredacted alert from here.
pub struct Outgoing<'a> {
    /// The notification (recipient, handle, idempotency key, tier).
    pub row: &'a NotificationRow,
    /// The alert as this backend may see it.
    pub view: &'a Redacted<AlertView>,
    /// The template's output (else the preview line).
    pub text: &'a str,
    /// Now, on the injected clock.
    pub now: DateTime<Utc>,
}

/// Sends one notification of `alert`; returns the outcome and the fields
/// that left.
async fn deliver_one(
    b: &Backend,
    row: &NotificationRow,
    alert: Option<crate::alert::model::Alert>,
    now: DateTime<Utc>,
) -> (Outcome, Vec<String>) {
    let Some(alert) = alert else {
        return (Outcome::Permanent("alert not found".into()), Vec::new());
    };
    let reason = Reason::parse(&row.reason).unwrap_or(Reason::New);
    let view = crate::redact::redact(&alert, reason, &b.profile);
    drop(alert);
    let text = match &b.template {
        Some(t) => match t.render(&view) {
            Ok(s) => s,
            Err(e) => return (Outcome::Permanent(format!("template: {e}")), Vec::new()),
        },
        None => view.get().preview.clone(),
    };
    let fields: Vec<String> = view
        .get()
        .fields_sent
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let out = Outgoing {
        row,
        view: &view,
        text: &text,
        now,
    };
    let outcome = match b.cfg.kind {
        BackendKind::Webhook => webhook::deliver(b, &out).await,
        BackendKind::Wctp => wctp::deliver(b, &out).await,
        BackendKind::Matrix => matrix::deliver(b, &out).await,
        BackendKind::FhirCommunication => fhir::deliver(b, &out).await,
    };
    (outcome, fields)
}

/// What a backend reported back about a notification it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// It reached the recipient's device.
    Delivered,
    /// The recipient read it (not an acknowledgement).
    Read,
    /// The recipient accepts.
    Accept,
    /// The recipient declines (escalates at once).
    Decline,
}

/// True when `alert`'s timeline already holds the step `what` by `by`
/// since notice `row.seq` was sent: applying it again would add nothing
/// but a duplicate entry (or a second escalation).
pub fn already_applied(
    alert: &crate::alert::model::Alert,
    row: &NotificationRow,
    by: &str,
    what: &str,
) -> bool {
    let since = alert.notified.get(row.seq).map(|n| n.at);
    alert
        .timeline
        .iter()
        .any(|s| since.is_none_or(|t| s.at >= t) && s.by == by && s.what == what)
}

/// The timeline step a reply from `member` produces: (by, what).
pub fn step_of(reply: Reply, member: &str) -> (String, String) {
    let what = match reply {
        Reply::Delivered => format!("delivered to {member}"),
        Reply::Read => format!("read by {member}"),
        Reply::Accept => format!("accepted by {member}"),
        Reply::Decline => format!("declined by {member}"),
    };
    (format!("member:{member}"), what)
}

/// Why a backend's reply was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// No notification of this backend is known by that reference.
    #[error("no notification is known by this reference")]
    Unknown,
    /// The reply came from someone other than the notified recipient.
    #[error("the reply did not come from the notified recipient")]
    NotTheRecipient,
    /// The alert refused it (closed, ...).
    #[error(transparent)]
    Desk(#[from] crate::alert::desk::DeskError),
    /// The journal is unavailable.
    #[error("journal unavailable")]
    Journal,
}

/// Applies a backend's reply (a Matrix reaction, a WCTP reply, a FHIR
/// Communication status) to the notification the backend of contact kind
/// `contact` knows as `remote_ref`. `from` is the handle that answered when
/// the backend says; it must be the handle that was notified, so nobody
/// acknowledges for someone else through a backend.
pub async fn apply_reply(
    shared: &Arc<Shared>,
    contact: &str,
    remote_ref: &str,
    from: Option<&str>,
    reply: Reply,
) -> Result<crate::alert::model::Alert, ReplyError> {
    apply_reply_by(shared, contact, remote_ref, from, None, reply).await
}

/// [`apply_reply`] for a handle several people share (a Matrix room per
/// role): `on_behalf_by` names who answered (`matrix:@bob:hs`), and an
/// acceptance is recorded as theirs on behalf of the notified member.
pub async fn apply_reply_by(
    shared: &Arc<Shared>,
    contact: &str,
    remote_ref: &str,
    from: Option<&str>,
    on_behalf_by: Option<&str>,
    reply: Reply,
) -> Result<crate::alert::model::Alert, ReplyError> {
    let (c, r) = (contact.to_string(), remote_ref.to_string());
    let row = match shared
        .journal
        .with_storage(move |s| s.notification_by_ref(&c, &r))
        .await
    {
        Ok(Ok(Some(row))) => row,
        Ok(Ok(None)) => return Err(ReplyError::Unknown),
        _ => return Err(ReplyError::Journal),
    };
    if from.is_some_and(|f| f != row.handle) {
        return Err(ReplyError::NotTheRecipient);
    }
    let member = row.member.clone();
    let ack = match reply {
        Reply::Delivered => Ack::Delivered { member },
        Reply::Read => Ack::Read { member },
        Reply::Accept => Ack::Accept {
            member,
            on_behalf_by: on_behalf_by.map(str::to_string),
        },
        Reply::Decline => Ack::Decline { member },
    };
    // A backend may report the same thing twice (a re-polled status, a
    // second reaction): applied once, so a repeated decline never
    // escalates twice and the timeline holds no duplicates.
    let (by, what) = step_of(reply, &row.member);
    let direct = on_behalf_by.is_none();
    let id = row.alert_id;
    let out = crate::app::alerts::with_desk(shared, move |d, s, w| {
        if direct
            && let Some(a) = s.alert(id)?
            && already_applied(&a, &row, &by, &what)
        {
            return Ok(a);
        }
        d.ack(s, w, id, &ack)
    })
    .await;
    shared.timer_wake.notify_one();
    shared.delivery_wake.notify_waiters();
    match out {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(ReplyError::Desk(e)),
        Err(_) => Err(ReplyError::Journal),
    }
}

/// True when every backend's copy of this notice (same alert, same notice)
/// is dead-lettered.
async fn all_dead(shared: &Arc<Shared>, row: &NotificationRow) -> bool {
    let (id, seq) = (row.alert_id, row.seq);
    match shared
        .journal
        .with_storage(move |s| s.notifications(Some(id)))
        .await
    {
        Ok(Ok(rows)) => rows
            .iter()
            .filter(|n| n.seq == seq)
            .all(|n| n.state == "dead"),
        _ => false,
    }
}

/// Due notifications a worker takes at a time (one journal read and one
/// results transaction per batch).
const DUE_BATCH: usize = 64;

/// Runs one backend's worker until `shutdown`.
pub async fn run(shared: Arc<Shared>, b: Arc<Backend>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        // Registered before looking, so a wake-up while we look is not lost.
        let wake = shared.delivery_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let now = shared.clock.now_utc();
        let contact = b.cfg.contact.clone();
        let due = shared
            .journal
            .with_storage(move |s| s.notifications_due(&contact, now, DUE_BATCH))
            .await;
        let rows = match due {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(backend = %b.cfg.name, error = %e, "notifications could not be read; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            Err(_) => return,
        };
        if rows.is_empty() {
            let contact = b.cfg.contact.clone();
            let next = shared
                .journal
                .with_storage(move |s| s.notifications_next(&contact))
                .await;
            let wait = match next {
                Ok(Ok(Some(t))) => (t - shared.clock.now_utc())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(30)),
                _ => Duration::from_secs(30),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut wake => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        // One read for the batch's alerts; one transaction for its results.
        let ids: Vec<i64> = rows.iter().map(|(r, _)| r.alert_id).collect();
        let alerts = match shared
            .journal
            .with_storage(move |s| {
                let mut out = std::collections::HashMap::new();
                for id in ids {
                    if let std::collections::hash_map::Entry::Vacant(v) = out.entry(id) {
                        v.insert(s.alert(id)?);
                    }
                }
                Ok::<_, crate::journal::StorageError>(out)
            })
            .await
        {
            Ok(Ok(a)) => a,
            _ => {
                tracing::warn!(backend = %b.cfg.name, "alerts could not be read; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        // Up to `concurrency` sends in flight; results taken in row order.
        let sends: Vec<_> = rows
            .iter()
            .map(|(row, _)| {
                let alert = alerts.get(&row.alert_id).cloned().flatten();
                deliver_one(&b, row, alert, shared.clock.now_utc())
            })
            .collect();
        let mut results = futures_util::stream::iter(sends).buffered(b.cfg.concurrency.max(1));
        let mut batch = Batch::default();
        for (row, attempts) in rows.iter() {
            let attempts = *attempts;
            if shutdown.is_cancelled() {
                batch.flush(&shared).await;
                return;
            }
            let Some((outcome, fields)) = results.next().await else {
                break;
            };
            if matches!(outcome, Outcome::Delivered { .. }) {
                crate::failpoint::hit("delivery.after-send");
            }
            let now = shared.clock.now_utc();
            let actor = format!("backend:{}", b.cfg.name);
            let (state, next, error, audit) = match &outcome {
                Outcome::Delivered { status, .. } => {
                    failures = 0;
                    shared.alarms.clear(Kind::BackendDown, &b.cfg.name, now);
                    shared.alarms.clear(Kind::DeadLetter, &b.cfg.name, now);
                    crate::telemetry::Metrics::inc(&shared.metrics.deliveries_sent);
                    (
                        "delivered",
                        now,
                        None,
                        vec![AuditRecord::new(
                            now,
                            actor.clone(),
                            "delivery.sent",
                            format!("alert:{}", row.alert_id),
                            format!("member:{}", row.member),
                            format!(
                                "{status}; fields: {}",
                                if fields.is_empty() {
                                    "-".into()
                                } else {
                                    fields.join(",")
                                }
                            ),
                        )],
                    )
                }
                Outcome::Retry { why, retry_after } if attempts + 1 < b.cfg.max_attempts => {
                    failures += 1;
                    crate::telemetry::Metrics::inc(&shared.metrics.deliveries_retried);
                    let wait = backoff(&b.cfg, row.id, attempts, *retry_after);
                    tracing::warn!(backend = %b.cfg.name, alert = row.alert_id, notification = row.id, attempt = attempts + 1, why = %why, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                    ("retrying", after(now, wait), Some(why.clone()), Vec::new())
                }
                Outcome::Retry { why, .. } | Outcome::Permanent(why) => {
                    if matches!(outcome, Outcome::Retry { .. }) {
                        failures += 1;
                    }
                    crate::telemetry::Metrics::inc(&shared.metrics.deliveries_dead);
                    shared.alarms.raise(
                        Kind::DeadLetter,
                        &b.cfg.name,
                        &format!(
                            "notification {} of alert {} dead-lettered",
                            row.id, row.alert_id
                        ),
                        now,
                    );
                    tracing::error!(backend = %b.cfg.name, alert = row.alert_id, notification = row.id, member = %row.member, why = %why, "notification dead-lettered; operator action needed");
                    (
                        "dead",
                        now,
                        Some(why.clone()),
                        vec![AuditRecord::new(
                            now,
                            actor.clone(),
                            "delivery.dead",
                            format!("alert:{}", row.alert_id),
                            format!("member:{}", row.member),
                            why.clone(),
                        )],
                    )
                }
            };
            let update = AttemptUpdate {
                id: row.id,
                state,
                next_attempt_at: next,
                error,
                at: now,
                audit,
                remote_ref: match &outcome {
                    Outcome::Delivered { remote_ref, .. } => remote_ref.clone(),
                    _ => None,
                },
            };
            if state != "dead" {
                // Sent or retrying: recorded with the batch.
                if matches!(outcome, Outcome::Delivered { .. }) {
                    batch.acks.push((
                        row.alert_id,
                        Ack::Delivered {
                            member: row.member.clone(),
                        },
                    ));
                }
                batch.attempts.push(update);
            } else {
                // Dead letters are rare: in order, on their own.
                batch.flush(&shared).await;
                let recorded = shared
                    .journal
                    .with_storage(move |s| s.notification_attempt(&update))
                    .await;
                if matches!(recorded, Ok(Ok(true))) && all_dead(&shared, row).await {
                    // Nobody can reach this recipient: escalate, never drop.
                    let ack = Ack::Undeliverable {
                        member: row.member.clone(),
                    };
                    let _ = crate::app::alerts::acknowledge(&shared, row.alert_id, ack).await;
                }
            }
            if failures >= b.cfg.circuit_failures {
                batch.flush(&shared).await;
                tracing::error!(backend = %b.cfg.name, failures, pause_secs = b.cfg.circuit_open.as_secs(), "backend failing: circuit open");
                shared.alarms.raise(
                    Kind::BackendDown,
                    &b.cfg.name,
                    &format!("{failures} consecutive failures; circuit open"),
                    shared.clock.now_utc(),
                );
                failures = 0;
                tokio::select! {
                    _ = tokio::time::sleep(b.cfg.circuit_open) => {}
                    _ = shutdown.cancelled() => return,
                }
                break;
            }
        }
        batch.flush(&shared).await;
    }
}

/// A worker's results not yet written: attempts and the receipts they
/// produced, recorded in one transaction (one fsync for the batch).
#[derive(Default)]
struct Batch {
    acks: Vec<(i64, Ack)>,
    attempts: Vec<AttemptUpdate>,
}

impl Batch {
    async fn flush(&mut self, shared: &Arc<Shared>) {
        if self.attempts.is_empty() && self.acks.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut self.acks);
        let attempts = std::mem::take(&mut self.attempts);
        let n = attempts.len();
        match crate::app::alerts::with_desk(shared, move |d, s, w| {
            d.record_deliveries(s, w, &acks, attempts)
        })
        .await
        {
            Ok(Ok(_)) => {}
            _ => {
                // Not recorded: the rows stay due and are sent again with
                // the same idempotency keys.
                tracing::warn!(
                    attempts = n,
                    "delivery results could not be recorded; they will be retried"
                );
            }
        }
        shared.timer_wake.notify_one();
        // Status reports the receipts produced wait on the same wake-up.
        shared.delivery_wake.notify_waiters();
    }
}
