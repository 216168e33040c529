//! The state machine, step by step, with time as a parameter.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::engine::{Ack, AckError, Recipients, Related};
use super::model::{Alert, Reason, State};
use crate::event::{ClinicalEvent, ResultStatus};
use crate::rules::tests::{obs, result_event};
use crate::rules::{AlertPriority, EscalationPolicy, RouteTarget, Tier, TierTarget};

/// Tier 0: the route (rn-a, rn-b), tier 1: the supervisor, tier 2: failsafe.
struct Fixed(Vec<Vec<&'static str>>);

impl Recipients for Fixed {
    fn tier(&self, _: &Alert, tier: usize) -> Vec<String> {
        self.0
            .get(tier)
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }
}

fn staff() -> Fixed {
    Fixed(vec![vec!["rn-a", "rn-b"], vec!["sup"], vec!["fs"]])
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn policy(repeats: u32, renotify: Option<u64>) -> EscalationPolicy {
    let tier = |target, timeout: Option<u64>| Tier {
        target,
        timeout: timeout.map(Duration::from_secs),
    };
    EscalationPolicy {
        name: "stat".into(),
        tiers: vec![
            tier(TierTarget::Route, Some(120)),
            tier(TierTarget::Person("sup".into()), None),
            tier(TierTarget::Failsafe, Some(60)),
        ],
        repeats,
        renotify: renotify.map(Duration::from_secs),
    }
}

fn alert(priority: AlertPriority, p: EscalationPolicy) -> Alert {
    Alert {
        id: 7,
        rule: "critical".into(),
        priority,
        target: RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("ICU".into()),
        },
        policy: p,
        clear: None,
        dedup_key: "k".into(),
        dedup_until: None,
        group_key: None,
        group_until: None,
        state: State::Notifying,
        tier: 0,
        round: 0,
        deadline: None,
        created_at: t0(),
        late: false,
        count: 1,
        event_id: 1,
        event: result_event(),
        notified: Vec::new(),
        accepted_by: None,
        timeline: Vec::new(),
    }
}

fn members(fx: &super::engine::Effects) -> Vec<Vec<String>> {
    fx.notify.iter().map(|n| n.members.clone()).collect()
}

#[test]
fn stat_escalates_tier_by_tier_on_time_then_exhausts_with_an_operator_alarm() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    let fx = a.start(t0(), &staff());
    assert_eq!(members(&fx), [["rn-a", "rn-b"]]);
    assert_eq!(a.deadline, Some(at(120)), "tier 0 timeout given");
    let fx = a.on_deadline(at(120), &staff());
    assert_eq!(members(&fx), [["sup"]]);
    assert_eq!(fx.notify[0].reason, Reason::Escalation);
    assert_eq!(a.deadline, Some(at(240)), "tier 1: STAT default 2 min");
    let fx = a.on_deadline(at(240), &staff());
    assert_eq!(members(&fx), [["fs"]]);
    assert_eq!(a.deadline, Some(at(300)));
    let fx = a.on_deadline(at(300), &staff());
    assert!(fx.notify.is_empty());
    assert_eq!(a.state, State::Exhausted);
    assert!(fx.operator_alarm.as_deref().unwrap().contains("exhausted"));
    assert_eq!(a.deadline, None);
    assert_eq!(a.told(), ["rn-a", "rn-b", "sup", "fs"]);
}

#[test]
fn routine_tiers_default_to_thirty_minutes() {
    let mut p = policy(0, None);
    p.tiers[1].timeout = None;
    let mut a = alert(AlertPriority::Routine, p);
    a.start(t0(), &staff());
    a.on_deadline(at(120), &staff());
    assert_eq!(a.deadline, Some(at(120 + 1800)));
}

#[test]
fn repeats_run_the_tiers_again_before_exhaustion() {
    let mut a = alert(AlertPriority::Stat, policy(1, None));
    a.start(t0(), &staff());
    a.on_deadline(at(120), &staff());
    a.on_deadline(at(240), &staff());
    let fx = a.on_deadline(at(300), &staff());
    assert_eq!(fx.notify[0].reason, Reason::Repeat);
    assert_eq!(members(&fx), [["rn-a", "rn-b"]]);
    assert_eq!((a.round, a.tier, a.state), (1, 0, State::Notifying));
}

#[test]
fn a_tier_that_reaches_nobody_is_skipped_at_once() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    let nobody_first = Fixed(vec![vec![], vec!["sup"], vec!["fs"]]);
    let fx = a.start(t0(), &nobody_first);
    assert_eq!(members(&fx), [["sup"]]);
    assert!(
        a.timeline
            .iter()
            .any(|s| s.what.contains("tier 0 reaches nobody"))
    );
    let none = Fixed(vec![vec![], vec![], vec![]]);
    let mut b = alert(AlertPriority::Stat, policy(0, None));
    let fx = b.start(t0(), &none);
    assert_eq!(
        b.state,
        State::Exhausted,
        "nobody at all is an operator alarm, never silence"
    );
    assert!(fx.operator_alarm.is_some());
}

#[test]
fn receipts_move_forward_but_are_not_acknowledgements() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    let d = Ack::Delivered {
        member: "rn-a".into(),
    };
    a.on_ack(&d, at(5), &staff()).unwrap();
    assert_eq!(a.state, State::Delivered);
    a.on_ack(
        &Ack::Read {
            member: "rn-b".into(),
        },
        at(10),
        &staff(),
    )
    .unwrap();
    assert_eq!(a.state, State::Read);
    // A late delivery receipt does not move it back.
    a.on_ack(&d, at(11), &staff()).unwrap();
    assert_eq!(a.state, State::Read);
    // The timer still runs: read is not accepted.
    let fx = a.on_deadline(at(120), &staff());
    assert_eq!(members(&fx), [["sup"]]);
}

#[test]
fn accept_stops_pending_notifications_and_stat_renotifies_until_resolved() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    let fx = a
        .on_ack(
            &Ack::Accept {
                member: "rn-b".into(),
                on_behalf_by: None,
            },
            at(30),
            &staff(),
        )
        .unwrap();
    assert!(fx.cancel_pending);
    assert_eq!(a.state, State::Accepted);
    assert_eq!(
        a.deadline,
        Some(at(30 + 900)),
        "STAT default re-notify: 15 min"
    );
    let fx = a.on_deadline(at(930), &staff());
    assert_eq!(members(&fx), [["rn-b"]]);
    assert_eq!(fx.notify[0].reason, Reason::Renotify);
    assert_eq!(a.state, State::Accepted);
    // Accepting again is harmless.
    let fx = a
        .on_ack(
            &Ack::Accept {
                member: "rn-b".into(),
                on_behalf_by: None,
            },
            at(931),
            &staff(),
        )
        .unwrap();
    assert!(fx.notify.is_empty());
    a.on_ack(
        &Ack::Resolve {
            by: "member:rn-b".into(),
        },
        at(1000),
        &staff(),
    )
    .unwrap();
    assert_eq!((a.state, a.deadline), (State::Resolved, None));
    let e = a.on_ack(
        &Ack::Decline {
            member: "rn-a".into(),
        },
        at(1001),
        &staff(),
    );
    assert_eq!(e, Err(AckError::Closed("resolved")));
}

#[test]
fn urgent_accepted_alerts_are_not_renotified_unless_the_policy_says() {
    let mut a = alert(AlertPriority::Urgent, policy(0, None));
    a.start(t0(), &staff());
    a.on_ack(
        &Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: None,
        },
        at(1),
        &staff(),
    )
    .unwrap();
    assert_eq!(a.deadline, None);
    let mut b = alert(AlertPriority::Urgent, policy(0, Some(600)));
    b.start(t0(), &staff());
    b.on_ack(
        &Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: None,
        },
        at(1),
        &staff(),
    )
    .unwrap();
    assert_eq!(b.deadline, Some(at(601)));
}

#[test]
fn only_recipients_accept_others_act_on_behalf_and_it_is_recorded() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    let e = a.on_ack(
        &Ack::Accept {
            member: "sup".into(),
            on_behalf_by: None,
        },
        at(1),
        &staff(),
    );
    assert_eq!(e, Err(AckError::NotARecipient), "sup was not told yet");
    let e = a.on_ack(
        &Ack::Decline {
            member: "stranger".into(),
        },
        at(1),
        &staff(),
    );
    assert_eq!(e, Err(AckError::NotARecipient));
    a.on_ack(
        &Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: Some("operator:charge".into()),
        },
        at(2),
        &staff(),
    )
    .unwrap();
    assert_eq!(
        a.accepted_by.as_deref(),
        Some("rn-a (on behalf, by operator:charge)")
    );
    let last = a.timeline.last().unwrap();
    assert_eq!(last.by, "operator:charge");
    // Re-notify goes to the member, not to the one who acted for them.
    let fx = a.on_deadline(at(2 + 900), &staff());
    assert_eq!(members(&fx), [["rn-a"]]);
}

#[test]
fn an_earlier_tier_may_still_accept_after_escalation() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    a.on_deadline(at(120), &staff());
    a.on_ack(
        &Ack::Accept {
            member: "rn-a".into(),
            on_behalf_by: None,
        },
        at(130),
        &staff(),
    )
    .unwrap();
    assert_eq!(a.state, State::Accepted);
}

#[test]
fn a_decline_escalates_at_once() {
    let mut a = alert(AlertPriority::Urgent, policy(0, None));
    a.start(t0(), &staff());
    let fx = a
        .on_ack(
            &Ack::Decline {
                member: "rn-a".into(),
            },
            at(3),
            &staff(),
        )
        .unwrap();
    assert_eq!(members(&fx), [["sup"]]);
    assert_eq!(fx.notify[0].reason, Reason::Declined);
    assert_eq!(a.deadline, Some(at(3 + 600)), "urgent default 10 min");
    // The one who accepted declining hands it on too.
    a.on_ack(
        &Ack::Accept {
            member: "sup".into(),
            on_behalf_by: None,
        },
        at(4),
        &staff(),
    )
    .unwrap();
    let fx = a
        .on_ack(
            &Ack::Decline {
                member: "sup".into(),
            },
            at(5),
            &staff(),
        )
        .unwrap();
    assert_eq!(members(&fx), [["fs"]]);
    // Someone else declining an accepted alert changes nothing.
    a.on_ack(
        &Ack::Accept {
            member: "fs".into(),
            on_behalf_by: None,
        },
        at(6),
        &staff(),
    )
    .unwrap();
    let fx = a
        .on_ack(
            &Ack::Decline {
                member: "rn-b".into(),
            },
            at(7),
            &staff(),
        )
        .unwrap();
    assert!(fx.notify.is_empty());
    assert_eq!(a.state, State::Accepted);
}

fn with_status(ev: &ClinicalEvent, status: ResultStatus, value: &str) -> ClinicalEvent {
    let mut e = ev.clone();
    for o in &mut e.observations {
        o.status = status;
        if o.code.code == "2823-3" {
            o.values = vec![value.into()];
        }
    }
    e
}

#[test]
fn corrections_retractions_and_worse_values_tell_everyone_told() {
    let base = result_event();
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    a.on_deadline(at(120), &staff());
    // Same value again: a duplicate, nobody paged.
    let dup = with_status(&base, ResultStatus::Final, "6.9");
    assert_eq!(a.classify(&dup), Related::Duplicate);
    assert!(
        a.on_related(&dup, 2, false, at(121), &staff())
            .notify
            .is_empty()
    );
    assert_eq!(a.count, 2);
    // Worse: 7.4 > 6.9 on an HH potassium.
    let worse = with_status(&base, ResultStatus::Final, "7.4");
    let fx = a.on_related(&worse, 3, false, at(122), &staff());
    assert_eq!(fx.notify[0].reason, Reason::Worsened);
    assert_eq!(members(&fx), [["rn-a", "rn-b", "sup"]]);
    // Better is not news.
    let better = with_status(&base, ResultStatus::Final, "6.0");
    assert_eq!(a.classify(&better), Related::Duplicate);
    // Corrected.
    let corrected = with_status(&base, ResultStatus::Corrected, "5.9");
    let fx = a.on_related(&corrected, 4, false, at(123), &staff());
    assert_eq!(fx.notify[0].reason, Reason::Correction);
    assert_eq!(a.state, State::Notifying);
    // Wrong patient: everyone told hears it, and the alert ends.
    let wrong = with_status(&base, ResultStatus::WrongPatient, "5.9");
    let fx = a.on_related(&wrong, 5, false, at(124), &staff());
    assert_eq!(fx.notify[0].reason, Reason::Retraction);
    assert_eq!(members(&fx), [["rn-a", "rn-b", "sup"]]);
    assert!(fx.cancel_pending);
    assert_eq!((a.state, a.deadline), (State::Cancelled, None));
}

#[test]
fn a_held_alert_is_cancelled_by_its_clear_and_released_when_worse() {
    use crate::rules::ClearOn;
    let mut alarm = crate::event::ClinicalEvent {
        kind: crate::event::EventKind::Alarm,
        alarm: Some(crate::event::Alarm {
            id: "A-1".into(),
            phase: "start".into(),
            ..Default::default()
        }),
        ..result_event()
    };
    alarm.observations.clear();
    let mut a = alert(AlertPriority::Urgent, policy(0, None));
    a.event = alarm.clone();
    a.clear = Some(ClearOn::AlarmEnd);
    a.state = State::Held;
    a.deadline = Some(at(30));
    assert!(a.start(t0(), &staff()).notify.is_empty());
    let mut end = alarm.clone();
    end.alarm.as_mut().unwrap().phase = "end".into();
    let fx = a.on_related(&end, 2, false, at(10), &staff());
    assert_eq!(a.state, State::Cancelled);
    assert!(fx.notify.is_empty(), "never sent");
    assert!(a.told().is_empty());

    // Held, not cleared: sent when the window ends.
    let mut b = alert(AlertPriority::Urgent, policy(0, None));
    b.event = alarm;
    b.clear = Some(ClearOn::AlarmEnd);
    b.state = State::Held;
    b.deadline = Some(at(30));
    b.start(t0(), &staff());
    let fx = b.on_deadline(at(30), &staff());
    assert_eq!(members(&fx), [["rn-a", "rn-b"]]);
    assert_eq!(fx.notify[0].reason, Reason::New);

    // A held result that gets worse is sent at once.
    let mut c = alert(AlertPriority::Urgent, policy(0, None));
    c.state = State::Held;
    c.deadline = Some(at(30));
    let fx = c.on_related(
        &with_status(&result_event(), ResultStatus::Final, "8.0"),
        2,
        false,
        at(5),
        &staff(),
    );
    assert_eq!(fx.notify[0].reason, Reason::Worsened);
    assert_eq!(c.state, State::Notifying);
}

#[test]
fn a_late_alert_is_marked_and_told_once_unless_critical() {
    let mut a = alert(AlertPriority::Routine, policy(0, None));
    let mut normal = result_event();
    normal.observations = vec![obs("LN", "2951-2", &["H"], ResultStatus::Final)];
    a.event = normal;
    a.late = true;
    let fx = a.start(t0(), &staff());
    assert_eq!(fx.notify[0].reason, Reason::Late);
    assert_eq!(
        a.deadline, None,
        "a replayed backlog is not escalated as if new"
    );
    let mut b = alert(AlertPriority::Stat, policy(0, None));
    b.late = true;
    b.start(t0(), &staff());
    assert_eq!(
        b.deadline,
        Some(at(120)),
        "a critical late alert still escalates"
    );
}

#[test]
fn every_step_names_who_or_what_caused_it() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    a.on_deadline(at(120), &staff());
    a.on_ack(
        &Ack::Accept {
            member: "sup".into(),
            on_behalf_by: None,
        },
        at(150),
        &staff(),
    )
    .unwrap();
    let by: Vec<&str> = a.timeline.iter().map(|s| s.by.as_str()).collect();
    assert_eq!(by, ["gateway", "timer", "member:sup"]);
    let states: Vec<State> = a.timeline.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [State::Notifying, State::Notifying, State::Accepted]
    );
    assert!(a.timeline.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn an_undeliverable_notification_escalates_at_once() {
    let mut a = alert(AlertPriority::Stat, policy(0, None));
    a.start(t0(), &staff());
    let fx = a
        .on_ack(
            &Ack::Undeliverable {
                member: "rn-a".into(),
            },
            at(5),
            &staff(),
        )
        .unwrap();
    assert_eq!(members(&fx), [["sup"]]);
    assert!(
        a.timeline
            .iter()
            .any(|s| s.what == "could not be delivered to rn-a")
    );
    // A failure for someone of an earlier tier does not skip another tier.
    let fx = a
        .on_ack(
            &Ack::Undeliverable {
                member: "rn-b".into(),
            },
            at(6),
            &staff(),
        )
        .unwrap();
    assert!(fx.notify.is_empty());
    assert_eq!(a.tier, 1);
}
