//! Status and replies from a WCTP carrier: one task per WCTP backend sends
//! `wctp-PollForMessages` every `poll_secs` (or sooner while messages keep
//! coming; never sooner than the carrier's `minNextPollInterval`) and
//! applies what comes back to the notification its `responseToMessageID`
//! names:
//!
//! - `wctp-StatusInfo` `DELIVERED` / `READ` become receipts
//!   ([`Reply::Delivered`], [`Reply::Read`]); `QUEUED` is ignored;
//! - a `wctp-StatusInfo` with `wctp-Failure` (the device could not be
//!   reached) makes the member undeliverable — an escalation input — unless
//!   another backend delivered the same notice;
//! - a `wctp-MessageReply` whose text is the Accept or Decline choice is
//!   [`Reply::Accept`] / [`Reply::Decline`], applied only when it comes
//!   from the device that was paged; any other text changes nothing.
//!
//! Guarantees:
//! - **Each status is applied once.** A carrier redelivers what was not
//!   acknowledged, and the same status may come twice; before applying, the
//!   alert's timeline (in the journal) is checked for the same step by the
//!   same member since this notice, so a repeat adds nothing.
//! - **Nothing acknowledged before it is applied.** A message is
//!   acknowledged (`wctp-MessageReceived`, on the next poll) only once it
//!   is applied or known to need nothing; when the journal is unavailable
//!   it stays with the carrier. A status that arrives before the
//!   submission's answer was recorded waits (up to [`UNKNOWN_GRACE`]).
//! - **No PHI in logs**: reply text is never kept (see
//!   [`super::xml::reply_word`]); logs carry backend, alert and member ids
//!   and WCTP codes.
//! - Stops with the shutdown token; sleeps on tokio's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::xml::{self, DeviceStatus, InboundEvent, ReplyWord};
use crate::alert::engine::Ack;
use crate::alert::model::Alert;
use crate::delivery::{Backend, Reply, ReplyError, already_applied, step_of};
use crate::journal::NotificationRow;
use crate::listener::connection::Shared;

/// Most messages asked for per poll (`maxMessagesInBatch`).
pub const BATCH: usize = 25;
/// How long a status or reply naming an unknown `messageID` is kept with
/// the carrier (the submission's answer may not be recorded yet) before it
/// is acknowledged and dropped.
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(120);
/// Largest poll answer read.
const MAX_ANSWER: usize = 1024 * 1024;
/// The pause before asking again after a batch (acknowledging it).
const AGAIN: Duration = Duration::from_millis(200);

/// What became of one polled message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Applied, or needs nothing: acknowledge it.
    Done,
    /// No notification is known by its `messageID` (yet).
    Unknown,
    /// The journal is unavailable: leave it with the carrier.
    Later,
}

/// The notification a backend knows as `message_id`, its alert, and the
/// other notifications of that alert.
async fn lookup(
    shared: &Arc<Shared>,
    contact: &str,
    message_id: &str,
) -> Result<Option<(NotificationRow, Alert, Vec<NotificationRow>)>, ()> {
    let (c, r) = (contact.to_string(), message_id.to_string());
    let found = shared
        .journal
        .with_storage(move |s| {
            let Some(row) = s.notification_by_ref(&c, &r)? else {
                return Ok(None);
            };
            let Some(alert) = s.alert(row.alert_id)? else {
                return Ok(None);
            };
            let all = s.notifications(Some(row.alert_id))?;
            Ok::<_, crate::journal::StorageError>(Some((row, alert, all)))
        })
        .await;
    match found {
        Ok(Ok(v)) => Ok(v),
        _ => Err(()),
    }
}

/// Applies a receipt or an answer once.
async fn once(
    shared: &Arc<Shared>,
    b: &Backend,
    message_id: &str,
    from: Option<&str>,
    reply: Reply,
) -> Step {
    let (row, alert) = match lookup(shared, &b.cfg.contact, message_id).await {
        Ok(Some((row, alert, _))) => (row, alert),
        Ok(None) => return Step::Unknown,
        Err(()) => return Step::Later,
    };
    let (by, what) = step_of(reply, &row.member);
    if already_applied(&alert, &row, &by, &what) {
        return Step::Done;
    }
    match crate::delivery::apply_reply(shared, &b.cfg.contact, message_id, from, reply).await {
        Ok(_) => {
            tracing::info!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, reply = ?reply, "WCTP status applied");
            Step::Done
        }
        Err(ReplyError::Journal) => Step::Later,
        Err(ReplyError::Unknown) => Step::Unknown,
        Err(e) => {
            tracing::warn!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, reply = ?reply, error = %e, "WCTP status not applied");
            Step::Done
        }
    }
}

/// The carrier could not deliver to the device: an escalation input
/// unless another backend delivered the same notice.
async fn device_failed(shared: &Arc<Shared>, b: &Backend, message_id: &str, code: u16) -> Step {
    let (row, alert, all) = match lookup(shared, &b.cfg.contact, message_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return Step::Unknown,
        Err(()) => return Step::Later,
    };
    let what = format!("could not be delivered to {}", row.member);
    if already_applied(&alert, &row, "delivery", &what) {
        return Step::Done;
    }
    let elsewhere = all
        .iter()
        .any(|n| n.seq == row.seq && n.backend != row.backend && n.state == "delivered");
    if elsewhere {
        tracing::warn!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, code, "WCTP device unreachable; another backend delivered this notice");
        return Step::Done;
    }
    tracing::error!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, code, "WCTP device unreachable: the member is undeliverable; escalating");
    let ack = Ack::Undeliverable {
        member: row.member.clone(),
    };
    match crate::app::alerts::acknowledge(shared, row.alert_id, ack).await {
        Ok(_) => Step::Done,
        Err(_) => Step::Later,
    }
}

/// Applies one polled message.
async fn apply(shared: &Arc<Shared>, b: &Backend, event: &InboundEvent) -> Step {
    match event {
        InboundEvent::Other => Step::Done,
        InboundEvent::Status {
            message_id, status, ..
        } => match status {
            DeviceStatus::Queued => Step::Done,
            DeviceStatus::Delivered => once(shared, b, message_id, None, Reply::Delivered).await,
            DeviceStatus::Read => once(shared, b, message_id, None, Reply::Read).await,
            DeviceStatus::Failed(code) => device_failed(shared, b, message_id, *code).await,
        },
        InboundEvent::Reply {
            message_id,
            from,
            word,
        } => {
            let reply = match word {
                Some(ReplyWord::Accept) => Reply::Accept,
                Some(ReplyWord::Decline) => Reply::Decline,
                None => {
                    tracing::info!(backend = %b.cfg.name, "WCTP reply is neither Accept nor Decline: nothing applied");
                    return Step::Done;
                }
            };
            once(shared, b, message_id, Some(from), reply).await
        }
    }
}

/// Polls one WCTP backend until `shutdown`.
pub async fn run(shared: Arc<Shared>, b: Arc<Backend>, shutdown: CancellationToken) {
    let (Some(w), Some(url)) = (b.cfg.wctp.clone(), b.cfg.url.clone()) else {
        return;
    };
    let headers = super::headers(None);
    // Sequence numbers to acknowledge on the next poll.
    let mut received: Vec<String> = Vec::new();
    // Messages naming an unknown messageID: when first seen.
    let mut unknown: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = w.poll;
        let code = match super::security_code(&w) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(backend = %b.cfg.name, why = %why, "WCTP poll skipped");
                continue;
            }
        };
        let body = xml::poll_for_messages(&w.sender_id, code.as_deref(), BATCH, &received);
        let sent = tokio::select! {
            r = b.http.send(Method::POST, &url, &headers, body, MAX_ANSWER) => r,
            _ = shutdown.cancelled() => return,
        };
        let resp = match sent {
            Ok(r) if (200..300).contains(&r.status) => r,
            Ok(r) => {
                tracing::warn!(backend = %b.cfg.name, status = r.status, "WCTP poll answered with an HTTP error; polling again later");
                continue;
            }
            Err(e) => {
                tracing::warn!(backend = %b.cfg.name, error = %e, "WCTP poll failed; polling again later");
                continue;
            }
        };
        let answer = match xml::parse(&resp.body).and_then(|root| xml::poll_response(&root)) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(backend = %b.cfg.name, error = %e, "WCTP poll answer unreadable; polling again later");
                continue;
            }
        };
        // The carrier read the acknowledgements it was sent.
        received.clear();
        if let Some(code) = answer.failure {
            tracing::error!(backend = %b.cfg.name, code, "WCTP poll refused by the carrier; replies and receipts wait");
            wait = wait.max(answer.min_next_poll.unwrap_or_default());
            continue;
        }
        let mut waiting = false;
        let mut any = false;
        for m in answer.messages {
            if shutdown.is_cancelled() {
                return;
            }
            any = true;
            match apply(&shared, &b, &m.event).await {
                Step::Done => {
                    unknown.remove(&m.sequence_no);
                    received.push(m.sequence_no);
                }
                Step::Later => waiting = true,
                Step::Unknown => {
                    let now = shared.clock.now_utc();
                    let first = *unknown.entry(m.sequence_no.clone()).or_insert(now);
                    if (now - first).to_std().unwrap_or_default() >= UNKNOWN_GRACE {
                        tracing::warn!(backend = %b.cfg.name, "WCTP status or reply for a message this gateway does not know: dropped");
                        unknown.remove(&m.sequence_no);
                        received.push(m.sequence_no);
                    } else {
                        waiting = true;
                    }
                }
            }
        }
        // Forget what the carrier stopped sending.
        let now = shared.clock.now_utc();
        unknown.retain(|_, first| (now - *first).to_std().unwrap_or_default() < 2 * UNKNOWN_GRACE);
        // More may be waiting: acknowledge and ask again soon, unless
        // something must wait (then the carrier would hand it back now).
        wait = if any && !waiting {
            answer.min_next_poll.unwrap_or(AGAIN)
        } else {
            w.poll.max(answer.min_next_poll.unwrap_or_default())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::engine::Recipients;
    use crate::alert::model::State;
    use crate::rules::{AlertPriority, EscalationPolicy, RouteTarget, Tier, TierTarget};

    struct Two;

    impl Recipients for Two {
        fn tier(&self, _: &Alert, tier: usize) -> Vec<String> {
            match tier {
                0 => vec!["rn-a".into()],
                1 => vec!["rn-b".into()],
                _ => Vec::new(),
            }
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn alert() -> Alert {
        let tier = |target| Tier {
            target,
            timeout: Some(Duration::from_secs(600)),
        };
        Alert {
            id: 7,
            rule: "critical".into(),
            priority: AlertPriority::Stat,
            target: RouteTarget::Person { id: "rn-a".into() },
            policy: EscalationPolicy {
                name: "slow".into(),
                tiers: vec![tier(TierTarget::Route), tier(TierTarget::Failsafe)],
                repeats: 1,
                renotify: None,
            },
            clear: None,
            dedup_key: "k".into(),
            dedup_until: None,
            group_key: None,
            group_until: None,
            state: State::Notifying,
            tier: 0,
            round: 0,
            deadline: None,
            created_at: t(0),
            late: false,
            count: 1,
            event_id: 1,
            event: crate::rules::tests::result_event(),
            notified: Vec::new(),
            accepted_by: None,
            timeline: Vec::new(),
        }
    }

    fn row(seq: usize) -> NotificationRow {
        NotificationRow {
            id: 1,
            alert_id: 7,
            seq,
            member: "rn-a".into(),
            backend: "pager".into(),
            handle: "5551234".into(),
            tier: 0,
            reason: "new".into(),
            state: "delivered".into(),
            idempotency_key: "k".into(),
            remote_ref: Some("m".into()),
        }
    }

    fn read(member: &str) -> Ack {
        Ack::Read {
            member: member.into(),
        }
    }

    #[test]
    fn a_status_already_on_the_timeline_since_the_notice_is_not_applied_again() {
        let mut a = alert();
        a.start(t(0), &Two);
        let (by, what) = step_of(Reply::Read, "rn-a");
        assert!(!already_applied(&a, &row(0), &by, &what));
        a.on_ack(&read("rn-a"), t(5), &Two).unwrap();
        assert!(already_applied(&a, &row(0), &by, &what));
        // The engine itself records a repeated receipt again: the check
        // above is what keeps a redelivered READ from doubling the timeline.
        let before = a.timeline.len();
        a.on_ack(&read("rn-a"), t(6), &Two).unwrap();
        assert_eq!(a.timeline.len(), before + 1);
        // Another member's step, or another kind, does not count.
        let (by_b, what_b) = step_of(Reply::Read, "rn-b");
        assert!(!already_applied(&a, &row(0), &by_b, &what_b));
        let (by_d, what_d) = step_of(Reply::Decline, "rn-a");
        assert!(!already_applied(&a, &row(0), &by_d, &what_d));
        // The decline escalates once; a second one would escalate again.
        a.on_ack(
            &Ack::Decline {
                member: "rn-a".into(),
            },
            t(7),
            &Two,
        )
        .unwrap();
        assert!(already_applied(&a, &row(0), &by_d, &what_d));
        assert_eq!(a.tier, 1);
        // A later notice to the same member (the repeat round) is new.
        a.on_deadline(t(700), &Two);
        assert_eq!(a.notified.len(), 3, "{:?}", a.notified);
        assert_eq!(a.notified[2].member, "rn-a");
        assert!(!already_applied(&a, &row(2), &by, &what));
        assert!(!already_applied(&a, &row(2), &by_d, &what_d));
        // The words are the engine's.
        let steps: Vec<&str> = a.timeline.iter().map(|s| s.what.as_str()).collect();
        assert!(steps.contains(&"read by rn-a"), "{steps:?}");
        assert!(steps.contains(&"declined by rn-a"), "{steps:?}");
        a.on_ack(
            &Ack::Delivered {
                member: "rn-a".into(),
            },
            t(701),
            &Two,
        )
        .unwrap();
        assert!(already_applied(
            &a,
            &row(2),
            "member:rn-a",
            &step_of(Reply::Delivered, "rn-a").1
        ));
        a.on_ack(
            &Ack::Accept {
                member: "rn-a".into(),
                on_behalf_by: None,
            },
            t(702),
            &Two,
        )
        .unwrap();
        assert!(already_applied(
            &a,
            &row(2),
            "member:rn-a",
            &step_of(Reply::Accept, "rn-a").1
        ));
        a.on_ack(
            &Ack::Undeliverable {
                member: "rn-a".into(),
            },
            t(703),
            &Two,
        )
        .unwrap();
        assert!(already_applied(
            &a,
            &row(2),
            "delivery",
            "could not be delivered to rn-a"
        ));
    }
}
