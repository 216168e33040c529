//! The alert state machine. Pure: time is a parameter, recipients come from
//! a [`Recipients`] lookup, and every transition returns its [`Effects`]
//! (who to notify, pending notifications to cancel, an operator alarm) for
//! the caller to persist in one transaction.
//!
//! ```text
//! created ─▶ held ──(window ends)──▶ notifying tier 0 ─▶ delivered ─▶ read
//!              │                         │   ▲ (timeout / decline: next tier;
//!              └─(clearing event)─▶ cancelled  after the last: repeat, then exhausted)
//! notifying/delivered/read ─(accept)─▶ accepted ─(resolve)─▶ resolved
//!                                         └─(renotify interval)─▶ reminder
//! any open state ─(retraction)─▶ cancelled, everyone told is told again
//! ```
//!
//! Rules kept here:
//! - A tier that reaches nobody is recorded and skipped at once; past the
//!   last tier the policy's `repeats` run the tiers again; then the alert is
//!   **exhausted** and an operator alarm is raised — never silence.
//! - A read receipt is not an acknowledgement: it moves the state forward
//!   but the timer keeps running.
//! - Only a current or earlier recipient may accept or decline; anyone else
//!   only *on behalf* (the caller checks the permission), recorded as such.
//!   An acceptance cancels every pending notification of the alert.
//! - A decline escalates at once.
//! - Corrections, retractions and worsening values notify everyone already
//!   told; a worsening value releases a held alert at once.
//! - A late alert (a replayed backlog) is marked and told to its first tier
//!   only, unless it is critical, which escalates as usual.

use chrono::{DateTime, Utc};

use super::model::{Alert, Notice, Reason, State};
use crate::event::{ClinicalEvent, EventKind, ResultStatus};
use crate::rules::{AlertPriority, Hold, critical_event};

/// Who a tier of an alert reaches now (member ids, in order).
pub trait Recipients {
    /// Members of tier `tier`.
    fn tier(&self, alert: &Alert, tier: usize) -> Vec<String>;
}

/// People to notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Tier told.
    pub tier: usize,
    /// Member ids.
    pub members: Vec<String>,
    /// Why.
    pub reason: Reason,
}

/// What a transition asks the caller to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Notifications to send.
    pub notify: Vec<Notify>,
    /// Cancel every pending notification of the alert (on every backend).
    pub cancel_pending: bool,
    /// Raise an operator alarm (fixed text, no PHI).
    pub operator_alarm: Option<String>,
}

/// An acknowledgement or receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// A backend delivered it to `member`.
    Delivered {
        /// Member id.
        member: String,
    },
    /// `member` read it.
    Read {
        /// Member id.
        member: String,
    },
    /// `member` accepts; `on_behalf_by` when someone else acts for them.
    Accept {
        /// Member id (who takes it).
        member: String,
        /// Who acknowledged on their behalf (`operator:NAME`, `member:ID`).
        on_behalf_by: Option<String>,
    },
    /// `member` declines.
    Decline {
        /// Member id.
        member: String,
    },
    /// Done.
    Resolve {
        /// Who.
        by: String,
    },
    /// Every backend failed to deliver to `member` (dead-lettered): an
    /// escalation input, never a silent drop.
    Undeliverable {
        /// Member id.
        member: String,
    },
}

impl Ack {
    /// What it is and for whom, without content (`accept for member:rn-a`).
    pub fn describe(&self) -> String {
        match self {
            Ack::Delivered { member } => format!("delivered for member:{member}"),
            Ack::Read { member } => format!("read for member:{member}"),
            Ack::Accept {
                member,
                on_behalf_by: None,
            } => format!("accept for member:{member}"),
            Ack::Accept {
                member,
                on_behalf_by: Some(by),
            } => format!("accept on behalf of member:{member} by {by}"),
            Ack::Decline { member } => format!("decline for member:{member}"),
            Ack::Resolve { by } => format!("resolve ({by})"),
            Ack::Undeliverable { member } => format!("undeliverable to member:{member}"),
        }
    }
}

/// Why an acknowledgement was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The alert is resolved, exhausted or cancelled.
    #[error("the alert is {0}")]
    Closed(&'static str),
    /// The member was never told of it (acknowledge on behalf instead).
    #[error("this member was not notified of the alert; acknowledge on behalf instead")]
    NotARecipient,
}

/// How a later event relates to an open alert with the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Related {
    /// It clears the held alert.
    Clears,
    /// A retraction: wrong patient, deleted, cannot obtain, order cancelled.
    Retraction,
    /// A corrected result.
    Correction,
    /// A worse value.
    Worsened,
    /// Nothing new.
    Duplicate,
}

fn secs(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Alert {
    /// The first transition of a new alert: held (deadline = end of the
    /// window, set by the caller) or told to tier 0.
    pub fn start(&mut self, now: DateTime<Utc>, rec: &dyn Recipients) -> Effects {
        if self.state == State::Held {
            let what = format!(
                "held until {}",
                self.deadline.map(|d| d.to_rfc3339()).unwrap_or_default()
            );
            self.step(now, State::Held, "gateway", what);
            return Effects::default();
        }
        let reason = if self.late { Reason::Late } else { Reason::New };
        self.notify_from(0, now, rec, reason, "gateway")
    }

    fn is_critical(&self) -> bool {
        self.priority == AlertPriority::Stat || critical_event(&self.event).is_some()
    }

    /// Tells tier `from` (or the first later tier that reaches anyone).
    fn notify_from(
        &mut self,
        from: usize,
        now: DateTime<Utc>,
        rec: &dyn Recipients,
        reason: Reason,
        by: &str,
    ) -> Effects {
        let mut fx = Effects::default();
        let mut t = from;
        while t < self.policy.tiers.len() {
            let members = rec.tier(self, t);
            if members.is_empty() {
                self.timeline.push(super::model::Step {
                    at: now,
                    state: self.state,
                    by: by.to_string(),
                    what: format!("tier {t} reaches nobody: skipped"),
                });
                t += 1;
                continue;
            }
            for m in &members {
                self.notified.push(Notice {
                    member: m.clone(),
                    tier: t,
                    at: now,
                    reason,
                });
            }
            self.tier = t;
            let timeout = self.policy.tiers[t].timeout_for(self.priority);
            self.deadline = if self.late && !self.is_critical() {
                None
            } else {
                Some(now + secs(timeout))
            };
            let what = format!("{} tier {t}: {}", reason.as_str(), members.join(", "));
            self.step(now, State::Notifying, by, what);
            fx.notify.push(Notify {
                tier: t,
                members,
                reason,
            });
            return fx;
        }
        self.exhaust(now, by, &mut fx);
        fx
    }

    fn exhaust(&mut self, now: DateTime<Utc>, by: &str, fx: &mut Effects) {
        self.deadline = None;
        self.step(
            now,
            State::Exhausted,
            by,
            "every tier, failsafe included, went unanswered".into(),
        );
        fx.operator_alarm = Some(format!(
            "alert {} ({}, {}) exhausted its escalation unanswered",
            self.id,
            self.rule,
            self.priority.as_str()
        ));
    }

    /// The next tier, a repeat, or exhaustion.
    fn escalate(
        &mut self,
        now: DateTime<Utc>,
        rec: &dyn Recipients,
        reason: Reason,
        by: &str,
    ) -> Effects {
        let next = self.tier + 1;
        if next < self.policy.tiers.len() {
            return self.notify_from(next, now, rec, reason, by);
        }
        if self.round < self.policy.repeats {
            self.round += 1;
            return self.notify_from(0, now, rec, Reason::Repeat, by);
        }
        let mut fx = Effects::default();
        self.exhaust(now, by, &mut fx);
        fx
    }

    /// The deadline passed (or passed while the gateway was down).
    pub fn on_deadline(&mut self, now: DateTime<Utc>, rec: &dyn Recipients) -> Effects {
        match self.state {
            State::Held => {
                self.state = State::Notifying;
                let reason = if self.late { Reason::Late } else { Reason::New };
                self.notify_from(0, now, rec, reason, "timer")
            }
            s if s.awaits_ack() => self.escalate(now, rec, Reason::Escalation, "timer"),
            State::Accepted => {
                let Some(member) = self.accepted_member() else {
                    self.deadline = None;
                    return Effects::default();
                };
                self.notified.push(Notice {
                    member: member.clone(),
                    tier: self.tier,
                    at: now,
                    reason: Reason::Renotify,
                });
                self.deadline = self
                    .policy
                    .renotify_for(self.priority)
                    .map(|d| now + secs(d));
                self.step(now, State::Accepted, "timer", format!("renotify: {member}"));
                Effects {
                    notify: vec![Notify {
                        tier: self.tier,
                        members: vec![member],
                        reason: Reason::Renotify,
                    }],
                    ..Effects::default()
                }
            }
            _ => {
                self.deadline = None;
                Effects::default()
            }
        }
    }

    fn accepted_member(&self) -> Option<String> {
        self.accepted_by
            .as_deref()
            .map(|a| a.split(" (on behalf").next().unwrap_or(a).to_string())
    }

    /// An acknowledgement or receipt from `member` (or on their behalf).
    pub fn on_ack(
        &mut self,
        ack: &Ack,
        now: DateTime<Utc>,
        rec: &dyn Recipients,
    ) -> Result<Effects, AckError> {
        let told = self.told();
        if !self.state.is_open() {
            // Repeating the acceptance that closed nothing is harmless.
            return Err(AckError::Closed(self.state.as_str()));
        }
        match ack {
            Ack::Delivered { member } | Ack::Read { member } => {
                if !told.contains(member) {
                    return Err(AckError::NotARecipient);
                }
                let (to, word) = match ack {
                    Ack::Delivered { .. } => (State::Delivered, "delivered to"),
                    _ => (State::Read, "read by"),
                };
                let next = match (self.state, to) {
                    (State::Notifying, x) => x,
                    (State::Delivered, State::Read) => State::Read,
                    (s, _) => s,
                };
                self.step(
                    now,
                    next,
                    &format!("member:{member}"),
                    format!("{word} {member}"),
                );
                Ok(Effects::default())
            }
            Ack::Accept {
                member,
                on_behalf_by,
            } => {
                if on_behalf_by.is_none() && !told.contains(member) {
                    return Err(AckError::NotARecipient);
                }
                if self.state == State::Accepted
                    && self.accepted_member().as_deref() == Some(member)
                {
                    return Ok(Effects::default());
                }
                let (by, who) = match on_behalf_by {
                    Some(b) => (b.clone(), format!("{member} (on behalf, by {b})")),
                    None => (format!("member:{member}"), member.clone()),
                };
                self.accepted_by = Some(who.clone());
                self.deadline = self
                    .policy
                    .renotify_for(self.priority)
                    .map(|d| now + secs(d));
                self.step(now, State::Accepted, &by, format!("accepted by {who}"));
                Ok(Effects {
                    cancel_pending: true,
                    ..Effects::default()
                })
            }
            Ack::Decline { member } => {
                if !told.contains(member) {
                    return Err(AckError::NotARecipient);
                }
                let by = format!("member:{member}");
                self.timeline.push(super::model::Step {
                    at: now,
                    state: self.state,
                    by: by.clone(),
                    what: format!("declined by {member}"),
                });
                if self.state == State::Accepted
                    && self.accepted_member().as_deref() != Some(member)
                {
                    // Someone else has it: nothing to escalate.
                    return Ok(Effects::default());
                }
                self.accepted_by = None;
                Ok(self.escalate(now, rec, Reason::Declined, &by))
            }
            Ack::Undeliverable { member } => {
                if !told.contains(member) {
                    return Err(AckError::NotARecipient);
                }
                let current = self
                    .notified
                    .iter()
                    .rev()
                    .take_while(|n| n.tier == self.tier)
                    .any(|n| &n.member == member);
                self.timeline.push(super::model::Step {
                    at: now,
                    state: self.state,
                    by: "delivery".into(),
                    what: format!("could not be delivered to {member}"),
                });
                if self.state.awaits_ack() && current {
                    return Ok(self.escalate(now, rec, Reason::Escalation, "delivery"));
                }
                Ok(Effects::default())
            }
            Ack::Resolve { by } => {
                self.deadline = None;
                self.step(now, State::Resolved, by, "resolved".into());
                Ok(Effects {
                    cancel_pending: true,
                    ..Effects::default()
                })
            }
        }
    }

    /// How `ev` (same de-duplication key, later) relates to this alert.
    pub fn classify(&self, ev: &ClinicalEvent) -> Related {
        if self.state == State::Held
            && let Some(clear) = self.clear
            && (Hold {
                window: std::time::Duration::ZERO,
                clear,
            })
            .clears(&self.event, ev)
        {
            return Related::Clears;
        }
        if is_retraction(ev) {
            return Related::Retraction;
        }
        if ev
            .observations
            .iter()
            .any(|o| o.status == ResultStatus::Corrected)
        {
            return Related::Correction;
        }
        if worse(&self.event, ev) {
            return Related::Worsened;
        }
        Related::Duplicate
    }

    /// A later event with the same key: fold it in and tell whoever needs
    /// to know. `keep_latest`: a duplicate replaces the stored event.
    pub fn on_related(
        &mut self,
        ev: &ClinicalEvent,
        event_id: i64,
        keep_latest: bool,
        now: DateTime<Utc>,
        rec: &dyn Recipients,
    ) -> Effects {
        self.count += 1;
        let by = format!("event:{event_id}");
        let related = self.classify(ev);
        match related {
            Related::Clears => {
                self.deadline = None;
                self.step(
                    now,
                    State::Cancelled,
                    &by,
                    "cleared while held: never sent".into(),
                );
                Effects {
                    cancel_pending: true,
                    ..Effects::default()
                }
            }
            Related::Retraction | Related::Correction | Related::Worsened => {
                let reason = match related {
                    Related::Retraction => Reason::Retraction,
                    Related::Correction => Reason::Correction,
                    _ => Reason::Worsened,
                };
                self.event = ev.clone();
                self.event_id = event_id;
                if self.state == State::Held {
                    if related == Related::Retraction {
                        self.deadline = None;
                        self.step(
                            now,
                            State::Cancelled,
                            &by,
                            "retracted while held: never sent".into(),
                        );
                        return Effects::default();
                    }
                    // Worse or corrected before anyone was told: tell now.
                    self.state = State::Notifying;
                    return self.notify_from(0, now, rec, reason, &by);
                }
                let told = self.told();
                for m in &told {
                    self.notified.push(Notice {
                        member: m.clone(),
                        tier: self.tier,
                        at: now,
                        reason,
                    });
                }
                let mut fx = Effects {
                    notify: vec![Notify {
                        tier: self.tier,
                        members: told.clone(),
                        reason,
                    }],
                    ..Effects::default()
                };
                if related == Related::Retraction {
                    self.deadline = None;
                    fx.cancel_pending = true;
                    self.step(
                        now,
                        State::Cancelled,
                        &by,
                        format!("retracted; told again: {}", told.join(", ")),
                    );
                } else {
                    let state = self.state;
                    self.step(
                        now,
                        state,
                        &by,
                        format!("{}; told again: {}", reason.as_str(), told.join(", ")),
                    );
                }
                fx
            }
            Related::Duplicate => {
                if keep_latest {
                    self.event = ev.clone();
                    self.event_id = event_id;
                }
                let state = self.state;
                self.step(
                    now,
                    state,
                    &by,
                    format!("duplicate folded in (count {})", self.count),
                );
                Effects::default()
            }
        }
    }
}

fn is_retraction(ev: &ClinicalEvent) -> bool {
    let retracted = |s: ResultStatus| {
        matches!(
            s,
            ResultStatus::WrongPatient | ResultStatus::Deleted | ResultStatus::CannotObtain
        )
    };
    match ev.kind {
        EventKind::Result => {
            !ev.observations.is_empty() && ev.observations.iter().all(|o| retracted(o.status))
        }
        EventKind::Order => ev.order.as_ref().is_some_and(|o| {
            ["CA", "OC", "DC", "OD"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(o.control.trim()))
        }),
        _ => false,
    }
}

/// True when an observation of `later` with the same code as one of
/// `earlier` moved further in the direction its flag points (high: up,
/// low: down).
pub fn worse(earlier: &ClinicalEvent, later: &ClinicalEvent) -> bool {
    let value = |v: &[String]| v.first().and_then(|x| x.trim().parse::<f64>().ok());
    later.observations.iter().any(|n| {
        let dir = n.flags.iter().find_map(|f| match f.trim() {
            "H" | "HH" | "HU" | ">" => Some(1.0),
            "L" | "LL" | "LU" | "<" => Some(-1.0),
            _ => None,
        });
        let (Some(dir), Some(nv)) = (dir, value(&n.values)) else {
            return false;
        };
        earlier.observations.iter().any(|o| {
            o.code.code == n.code.code
                && o.code.system == n.code.system
                && value(&o.values).is_some_and(|ov| (nv - ov) * dir > 0.0)
        })
    })
}
