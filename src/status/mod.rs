//! Status flowing back out of the gateway: what became of an alert is told
//! to the EHR ([`fhir_writeback`]: a Task per alert, a Communication per
//! recipient) and to the device alarm source it came from ([`ora_r41`]: IHE
//! PCD ACM "Report Alert Status", ORA^R41 over MLLP).
//!
//! Guarantees:
//! - **Never lost between a transition and its report.** The desk decides
//!   the reports of a transition ([`Hooks::reports`]) and the journal writes
//!   them in the same transaction as the transition itself (a
//!   `status_reports` row each, schema version 4). A crash before the
//!   commit loses both; after it, the report is sent once the gateway is
//!   back. The row holds ids, a status word and a time — no PHI: the
//!   message is built from the sealed alert when it is sent.
//! - **In order, per destination.** A destination's reports are sent
//!   oldest first; while the oldest waits for a retry, the later ones wait
//!   behind it, so an alarm source sees `Delivered` before `Accepted`.
//! - **Retried, then dead-lettered loudly.** A transport failure, a timeout,
//!   a missing answer, HTTP 408/425/429/5xx or an HL7 `CE` is retried with
//!   jittered exponential backoff (honouring `Retry-After`); a refusal (HTTP
//!   4xx, HL7 `AE`/`AR`/`CR`) or a report still unsent `give_up_after`
//!   after it was queued is dead-lettered with an ERROR log, a
//!   `dead_letter` operator alarm and a `status.dead` audit record. Every
//!   report sent is audited (`status.sent`).
//! - **Idempotent on the wire.** An ORA^R41 keeps its MSH-10 over retries;
//!   the write-back uses `PUT` with client-assigned ids, so a repeat changes
//!   nothing.

pub mod fhir_writeback;
pub mod ora_r41;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::alert::model::{Alert, State};
use crate::audit::AuditRecord;
use crate::config::{AlarmSourceConfig, StatusConfig, StatusRetry};
use crate::delivery::Outcome;
use crate::event::EventKind;
use crate::listener::connection::Shared;

/// The write-back destination's name (`status_reports.target`).
pub const WRITEBACK: &str = "fhir-writeback";

/// The destination name of the alarm source of sender `sender`.
pub fn ora_target(sender: &str) -> String {
    format!("ora-r41:{sender}")
}

/// What happened to an alert that a destination is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// A member was notified (write-back only).
    Notified,
    /// A backend delivered it to a member's device.
    Delivered,
    /// A member read it.
    Read,
    /// A member accepted it.
    Accepted,
    /// A member declined it.
    Declined,
    /// It was resolved.
    Resolved,
    /// It was cancelled (cleared, retracted).
    Cancelled,
    /// Every tier went unanswered (write-back only).
    Exhausted,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 8] = [
        Status::Notified,
        Status::Delivered,
        Status::Read,
        Status::Accepted,
        Status::Declined,
        Status::Resolved,
        Status::Cancelled,
        Status::Exhausted,
    ];

    /// Stable name (stored).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Notified => "notified",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Accepted => "accepted",
            Status::Declined => "declined",
            Status::Resolved => "resolved",
            Status::Cancelled => "cancelled",
            Status::Exhausted => "exhausted",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One status report decided by the desk (a `status_reports` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The alert.
    pub alert_id: i64,
    /// The alert's event when the report was decided (its message header
    /// names the alarm source).
    pub event_id: i64,
    /// Destination: [`WRITEBACK`] or [`ora_target`].
    pub target: String,
    /// What happened.
    pub status: Status,
    /// The member it happened to or by (roster id), when it is a person's.
    pub member: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Unique per destination and fact: a repeat is not queued twice.
    pub dedup_key: String,
    /// The message id used on every attempt (ORA^R41 MSH-10).
    pub control_id: String,
}

/// A queued report with its delivery state: what a worker is handed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRow {
    /// Row id.
    pub id: i64,
    /// The report.
    pub report: StatusReport,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// MSH-3 and MSH-4 of the message the alert's event came in, as sent
    /// (for an ORA^R41's MSH-5 and MSH-6); `None` for a FHIR event.
    pub origin: Option<(String, String)>,
}

/// A destination's reports that are due now, oldest first, and when the
/// next one is due when the oldest is not yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDue {
    /// Due now, in queue order (stopping at the first that is not).
    pub rows: Vec<StatusRow>,
    /// When the oldest waiting report is due, when it is not due now.
    pub next: Option<DateTime<Utc>>,
}

/// The outcome of one attempt.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    /// Row id.
    pub id: i64,
    /// `done`, `retrying` or `dead`.
    pub state: &'static str,
    /// When to try again (for `retrying`).
    pub next_attempt_at: DateTime<Utc>,
    /// Why it failed (status or error kind; never content).
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// Audit records written with it.
    pub audit: Vec<AuditRecord>,
}

/// One change of an alert a destination may be told of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What.
    pub status: Status,
    /// To or by whom.
    pub member: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// What makes it unique within the alert (a receipt counts once per
    /// member; every other change once per timeline step or notice).
    pub key: String,
}

/// The changes of `a` since timeline step `steps_from` and notice
/// `notices_from` (what one desk transition added).
pub fn changes(a: &Alert, steps_from: usize, notices_from: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, n) in a.notified.iter().enumerate().skip(notices_from) {
        out.push(Change {
            status: Status::Notified,
            member: Some(n.member.clone()),
            at: n.at,
            key: format!("notice{i}"),
        });
    }
    let mut prev = steps_from
        .checked_sub(1)
        .and_then(|i| a.timeline.get(i))
        .map(|s| s.state);
    for (i, s) in a.timeline.iter().enumerate().skip(steps_from) {
        let by_member = s.by.strip_prefix("member:");
        let said = |word: &str| by_member.is_some_and(|m| s.what == format!("{word} {m}"));
        let change = if said("delivered to") {
            by_member.map(|m| {
                (
                    Status::Delivered,
                    Some(m.to_string()),
                    format!("delivered:{m}"),
                )
            })
        } else if said("read by") {
            by_member.map(|m| (Status::Read, Some(m.to_string()), format!("read:{m}")))
        } else if said("declined by") {
            by_member.map(|m| (Status::Declined, Some(m.to_string()), format!("step{i}")))
        } else if s.state == State::Accepted && s.what.starts_with("accepted by ") {
            let who = s.what.trim_start_matches("accepted by ");
            let member = who.split(" (on behalf").next().unwrap_or(who).to_string();
            Some((Status::Accepted, Some(member), format!("step{i}")))
        } else if prev != Some(s.state) {
            let member = by_member.map(str::to_string);
            match s.state {
                State::Resolved => Some((Status::Resolved, member, format!("step{i}"))),
                State::Cancelled => Some((Status::Cancelled, None, format!("step{i}"))),
                State::Exhausted => Some((Status::Exhausted, None, format!("step{i}"))),
                _ => None,
            }
        } else {
            None
        };
        if let Some((status, member, key)) = change {
            out.push(Change {
                status,
                member,
                at: s.at,
                key,
            });
        }
        prev = Some(s.state);
    }
    out
}

/// Which alerts report where: from the configuration, handed to the desk.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Senders whose alarms get ORA^R41 reports.
    alarm_sources: Vec<String>,
    /// The EHR write-back is configured.
    writeback: bool,
}

impl Hooks {
    /// The hooks of a configuration.
    pub fn new(cfg: &StatusConfig) -> Hooks {
        Hooks {
            alarm_sources: cfg.alarm_sources.iter().map(|a| a.sender.clone()).collect(),
            writeback: cfg.writeback.is_some(),
        }
    }

    /// True when nothing is reported anywhere.
    pub fn is_empty(&self) -> bool {
        self.alarm_sources.is_empty() && !self.writeback
    }

    /// The reports of what one transition changed in `a` (timeline steps
    /// from `steps_from`, notices from `notices_from`), decided at `now`.
    ///
    /// - The alarm source of an alarm alert (not a storm summary) hears of
    ///   delivered, read, accepted, declined, resolved and cancelled.
    /// - The write-back hears of everything of an alert that notified
    ///   someone (an alert cleared before it was sent stays out of the EHR).
    pub fn reports(
        &self,
        a: &Alert,
        steps_from: usize,
        notices_from: usize,
        now: DateTime<Utc>,
    ) -> Vec<StatusReport> {
        if self.is_empty() {
            return Vec::new();
        }
        let changes = changes(a, steps_from, notices_from);
        if changes.is_empty() {
            return Vec::new();
        }
        let mut targets: Vec<(String, bool)> = Vec::new();
        if a.event.kind == EventKind::Alarm
            && !a.rule.starts_with("storm:")
            && self.alarm_sources.contains(&a.event.source.sender)
        {
            targets.push((ora_target(&a.event.source.sender), true));
        }
        if self.writeback && !a.notified.is_empty() {
            targets.push((WRITEBACK.to_string(), false));
        }
        let mut out = Vec::new();
        for (target, ora) in &targets {
            for c in &changes {
                if *ora && matches!(c.status, Status::Notified | Status::Exhausted) {
                    continue;
                }
                let dedup_key = format!("{}:{target}:{}", a.id, c.key);
                let control_id = control_id(&dedup_key, now);
                out.push(StatusReport {
                    alert_id: a.id,
                    event_id: a.event_id,
                    target: target.clone(),
                    status: c.status,
                    member: c.member.clone(),
                    at: c.at,
                    dedup_key,
                    control_id,
                });
            }
        }
        out
    }
}

/// A message id unique across alerts, destinations and restarts: `SB` and
/// 18 hex digits of SHA-256 over the report's key and when it was decided.
fn control_id(dedup_key: &str, now: DateTime<Utc>) -> String {
    let h = Sha256::digest(format!("{dedup_key}\0{}", now.timestamp_micros()).as_bytes());
    format!("SB{}", &hex::encode_upper(h)[..18])
}

/// Delay before attempt `attempts + 1`: `initial × 2^attempts`, capped,
/// spread ±20 % by a hash of the row, never shorter than `retry_after`.
pub fn backoff(r: &StatusRetry, id: i64, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let base = r
        .initial
        .saturating_mul(2u32.saturating_pow(attempts.min(30)))
        .min(r.max);
    let h = Sha256::digest(format!("status:{id}:{attempts}").as_bytes());
    let jittered = base.mul_f64(0.8 + 0.4 * (f64::from(h[0]) / 255.0));
    match retry_after {
        Some(ra) if ra > jittered => ra,
        _ => jittered,
    }
}

/// A destination a worker sends to.
pub enum Target {
    /// The EHR's FHIR server.
    Writeback(fhir_writeback::Writer),
    /// An alarm source's MLLP listener.
    Ora(AlarmSourceConfig),
}

impl Target {
    /// The destination's name (`status_reports.target`).
    pub fn name(&self) -> String {
        match self {
            Target::Writeback(_) => WRITEBACK.to_string(),
            Target::Ora(src) => ora_target(&src.sender),
        }
    }

    fn retry(&self) -> StatusRetry {
        match self {
            Target::Writeback(w) => w.cfg.retry,
            Target::Ora(src) => src.retry,
        }
    }

    async fn send(&self, shared: &Arc<Shared>, row: &StatusRow) -> Outcome {
        let id = row.report.alert_id;
        let alert = match shared.journal.with_storage(move |s| s.alert(id)).await {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => return Outcome::Permanent("alert not found".into()),
            _ => {
                return Outcome::Retry {
                    why: "journal unavailable".into(),
                    retry_after: None,
                };
            }
        };
        match self {
            Target::Writeback(w) => w.send(shared, &alert, row).await,
            Target::Ora(src) => ora_r41::send(shared, src, &alert, row).await,
        }
    }
}

/// The destinations of a configuration.
pub fn targets(cfg: &crate::config::Config) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    if let Some(w) = &cfg.status.writeback {
        out.push(Target::Writeback(fhir_writeback::Writer::new(w, cfg)?));
    }
    for src in &cfg.status.alarm_sources {
        out.push(Target::Ora(src.clone()));
    }
    Ok(out)
}

/// Sends one destination's reports, in order, until `shutdown`.
pub async fn run(shared: Arc<Shared>, target: Arc<Target>, shutdown: CancellationToken) {
    let name = target.name();
    let retry = target.retry();
    loop {
        // Registered before looking, so a wake-up while we look is not lost.
        let wake = shared.delivery_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let now = shared.clock.now_utc();
        let n = name.clone();
        let due = match shared
            .journal
            .with_storage(move |s| s.status_due(&n, now, 16))
            .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(target = %name, error = %e, "status reports could not be read; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            Err(_) => return,
        };
        if due.rows.is_empty() {
            let wait = due
                .next
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(30))
                .min(Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut wake => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        for row in due.rows {
            if shutdown.is_cancelled() {
                return;
            }
            let outcome = target.send(&shared, &row).await;
            let now = shared.clock.now_utc();
            let r = &row.report;
            let actor = format!("status:{name}");
            let audit = |action: &str, outcome: String| {
                AuditRecord::new(
                    now,
                    actor.clone(),
                    action,
                    format!("alert:{}", r.alert_id),
                    format!(
                        "{}{}",
                        r.status.as_str(),
                        r.member
                            .as_deref()
                            .map(|m| format!(" member:{m}"))
                            .unwrap_or_default()
                    ),
                    outcome,
                )
            };
            let expired = chrono::Duration::from_std(retry.give_up_after)
                .is_ok_and(|g| now - row.created_at > g);
            let (state, next, error, records, stop) = match &outcome {
                Outcome::Delivered { status, .. } => {
                    tracing::info!(target = %name, alert = r.alert_id, status = r.status.as_str(), "status report sent");
                    (
                        "done",
                        now,
                        None,
                        vec![audit("status.sent", format!("{status}"))],
                        false,
                    )
                }
                Outcome::Retry { why, retry_after } if !expired => {
                    let wait = backoff(&retry, row.id, row.attempts, *retry_after);
                    tracing::warn!(target = %name, alert = r.alert_id, report = row.id, attempt = row.attempts + 1, why = %why, retry_in_ms = wait.as_millis() as u64, "status report not sent; will retry");
                    let at =
                        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    ("retrying", at, Some(why.clone()), Vec::new(), true)
                }
                Outcome::Retry { why, .. } | Outcome::Permanent(why) => {
                    let why = if matches!(outcome, Outcome::Retry { .. }) {
                        format!("gave up after {} attempts: {why}", row.attempts + 1)
                    } else {
                        why.clone()
                    };
                    shared.alarms.raise(
                        crate::operator::Kind::DeadLetter,
                        &name,
                        &format!(
                            "status report {} of alert {} dead-lettered",
                            row.id, r.alert_id
                        ),
                        now,
                    );
                    tracing::error!(target = %name, alert = r.alert_id, report = row.id, status = r.status.as_str(), why = %why, "status report dead-lettered; operator action needed");
                    (
                        "dead",
                        now,
                        Some(why.clone()),
                        vec![audit("status.dead", why)],
                        false,
                    )
                }
            };
            let update = StatusUpdate {
                id: row.id,
                state,
                next_attempt_at: next,
                error,
                at: now,
                audit: records,
            };
            if let Ok(Err(e)) = shared
                .journal
                .with_storage(move |s| s.status_attempt(&update))
                .await
            {
                tracing::warn!(target = %name, report = row.id, error = %e, "status report attempt could not be recorded");
                break;
            }
            if stop {
                // The oldest waits for its retry; the rest wait behind it.
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
