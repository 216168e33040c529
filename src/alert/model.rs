//! The alert record: what it is about, where it stands, who was told, and
//! every step it took. Stored sealed (it carries the triggering event, which
//! is PHI); the columns beside it (state, deadline, keys) hold none.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::ClinicalEvent;
use crate::rules::{AlertPriority, ClearOn, EscalationPolicy, RouteTarget};

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// In a delay-then-cancel window: not sent yet.
    Held,
    /// Sent to the current tier; no receipt yet.
    Notifying,
    /// A backend confirmed delivery to a recipient.
    Delivered,
    /// A recipient read it (not an acknowledgement).
    Read,
    /// Someone accepted it; re-notified while unresolved when the policy says.
    Accepted,
    /// Done.
    Resolved,
    /// The failsafe tier was reached and nobody answered: operator alarm.
    Exhausted,
    /// Cleared before it was sent, or retracted.
    Cancelled,
}

impl State {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Held => "held",
            State::Notifying => "notifying",
            State::Delivered => "delivered",
            State::Read => "read",
            State::Accepted => "accepted",
            State::Resolved => "resolved",
            State::Exhausted => "exhausted",
            State::Cancelled => "cancelled",
        }
    }

    /// Parses [`State::as_str`].
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Held,
            State::Notifying,
            State::Delivered,
            State::Read,
            State::Accepted,
            State::Resolved,
            State::Exhausted,
            State::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Not resolved, exhausted or cancelled.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Resolved | State::Exhausted | State::Cancelled)
    }

    /// Waiting for an acknowledgement from the current tier.
    pub fn awaits_ack(self) -> bool {
        matches!(self, State::Notifying | State::Delivered | State::Read)
    }
}

/// Why people are notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The first notification.
    New,
    /// The previous tier did not answer in time.
    Escalation,
    /// Someone declined: the next tier at once.
    Declined,
    /// The tiers run again (`repeats`).
    Repeat,
    /// Accepted but unresolved: a reminder.
    Renotify,
    /// The result was corrected.
    Correction,
    /// The result was retracted (wrong patient, deleted) or the order cancelled.
    Retraction,
    /// A later value is worse.
    Worsened,
    /// The event is older than the late threshold (a replayed backlog).
    Late,
}

impl Reason {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Escalation => "escalation",
            Reason::Declined => "declined",
            Reason::Repeat => "repeat",
            Reason::Renotify => "renotify",
            Reason::Correction => "correction",
            Reason::Retraction => "retraction",
            Reason::Worsened => "worsened",
            Reason::Late => "late",
        }
    }

    /// Parses [`Reason::as_str`].
    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::New,
            Reason::Escalation,
            Reason::Declined,
            Reason::Repeat,
            Reason::Renotify,
            Reason::Correction,
            Reason::Retraction,
            Reason::Worsened,
            Reason::Late,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One notification decided (delivery is the backends' work).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Roster member id.
    pub member: String,
    /// Tier index (for corrections: the tier they were told in).
    pub tier: usize,
    /// When.
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: Reason,
}

/// One step of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When.
    pub at: DateTime<Utc>,
    /// The state after the step.
    pub state: State,
    /// Who or what caused it: `member:ID`, `operator:NAME`, `timer`,
    /// `event:ID`, `gateway`.
    pub by: String,
    /// What happened (fixed words and ids; no PHI).
    pub what: String,
}

/// An alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Journal id.
    pub id: i64,
    /// The rule that raised it (`storm:UNIT` for a storm summary).
    pub rule: String,
    /// Priority.
    pub priority: AlertPriority,
    /// Who the route reaches (tier `route`).
    pub target: RouteTarget,
    /// The escalation policy as it was when the alert was raised.
    pub policy: EscalationPolicy,
    /// What clears it while held.
    pub clear: Option<ClearOn>,
    /// De-duplication key (hex SHA-256 of the rule and the key parts).
    pub dedup_key: String,
    /// The de-duplication window's end.
    pub dedup_until: Option<DateTime<Utc>>,
    /// Group key (patient and unit), when the route groups.
    pub group_key: Option<String>,
    /// The grouping window's end.
    pub group_until: Option<DateTime<Utc>>,
    /// Where it stands.
    pub state: State,
    /// Current tier.
    pub tier: usize,
    /// How many times the tiers ran again.
    pub round: u32,
    /// When the timer acts next.
    pub deadline: Option<DateTime<Utc>>,
    /// Raised at.
    pub created_at: DateTime<Utc>,
    /// The event was older than the late threshold.
    pub late: bool,
    /// Events folded into it (duplicates, grouped, storm members), itself included.
    pub count: u32,
    /// Journal id of the triggering event.
    pub event_id: i64,
    /// The event it is about (the latest, when duplicates replace).
    pub event: ClinicalEvent,
    /// Everyone told, in order.
    pub notified: Vec<Notice>,
    /// Who accepted (and on whose behalf).
    pub accepted_by: Option<String>,
    /// Every step.
    pub timeline: Vec<Step>,
}

impl Alert {
    /// An alert as `route` would raise it, never stored (id 0): for dry
    /// runs and previews.
    pub fn transient(route: &crate::rules::Route, ev: &ClinicalEvent, at: DateTime<Utc>) -> Alert {
        Alert {
            id: 0,
            rule: route.rule.clone(),
            priority: route.priority,
            target: route.target.clone(),
            policy: (*route.escalation).clone(),
            clear: route.hold.map(|h| h.clear),
            dedup_key: String::new(),
            dedup_until: None,
            group_key: None,
            group_until: None,
            state: State::Notifying,
            tier: 0,
            round: 0,
            deadline: None,
            created_at: at,
            late: false,
            count: 1,
            event_id: 0,
            event: ev.clone(),
            notified: Vec::new(),
            accepted_by: None,
            timeline: Vec::new(),
        }
    }

    /// Members told so far, in order, without repeats.
    pub fn told(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.notified {
            if !out.contains(&n.member) {
                out.push(n.member.clone());
            }
        }
        out
    }

    pub(crate) fn step(&mut self, at: DateTime<Utc>, state: State, by: &str, what: String) {
        self.state = state;
        self.timeline.push(Step {
            at,
            state,
            by: by.to_string(),
            what,
        });
    }
}
