//! Routing with a context: `during` windows (DST included), census
//! re-routes, `census-unit` scopes, delay-then-cancel holds and what clears
//! them, dedup modes, and the routing-time guard for critical events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::tests::{POLICY, ctx, obs, result_event, rules};
use super::*;
use crate::event::{Alarm, Code, EventKind, Identifier, Location, Order, Priority, Processing};
use crate::roster;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("instant")
        .with_timezone(&Utc)
}

fn at(s: &str) -> RouteContext<'static> {
    RouteContext::new(utc(s))
}

/// Rules with one rule `r` (the given match) to the hospitalist.
fn windowed(during: &str) -> Rules {
    rules(&format!(
        "[[rules]]\nname = \"r\"\nmatch = {{ kind = \"result\", during = [{during}] }}\nroute = {{ role = \"hospitalist\", escalation = \"p\" }}\n{POLICY}"
    ))
}

fn routed(r: &Rules, ev: &ClinicalEvent, c: &RouteContext<'_>) -> bool {
    match r.route_in(ev, c) {
        Decision::Routed { .. } => true,
        Decision::Filtered { .. } => {
            assert_eq!(r.explain_in(ev, c)[0].failed, Some("during"));
            false
        }
        d => panic!("unexpected {d:?}"),
    }
}

#[test]
fn during_window_wraps_past_midnight_and_starts_on_the_listed_days() {
    let r = windowed(
        "{ timezone = \"America/New_York\", days = [\"mon\", \"tue\"], from = \"22:00\", to = \"07:00\" }",
    );
    let ev = result_event();
    let yes = |s: &str| assert!(routed(&r, &ev, &at(s)), "{s} must be in the window");
    let no = |s: &str| assert!(!routed(&r, &ev, &at(s)), "{s} must be outside the window");
    // 2026-03-09 is a Monday (EDT, after spring forward).
    no("2026-03-09T21:59:59-04:00");
    yes("2026-03-09T22:00:00-04:00");
    yes("2026-03-10T06:59:59-04:00"); // Monday's window, on Tuesday
    no("2026-03-10T07:00:00-04:00");
    yes("2026-03-10T23:30:00-04:00");
    yes("2026-03-11T06:00:00-04:00"); // Tuesday's window, on Wednesday
    no("2026-03-11T23:00:00-04:00"); // Wednesday: not a listed day
    no("2026-03-12T06:00:00-04:00");
    // The zone is the window's, not UTC: 22:30 New York is 02:30 UTC.
    yes("2026-03-10T02:30:00Z");
}

#[test]
fn during_without_times_covers_whole_days_and_any_window_is_enough() {
    let r = windowed("{ timezone = \"America/New_York\", days = [\"sat\", \"sun\"] }");
    let ev = result_event();
    // 2026-03-14 is a Saturday.
    assert!(!routed(&r, &ev, &at("2026-03-13T23:59:59-04:00")));
    assert!(routed(&r, &ev, &at("2026-03-14T00:00:00-04:00")));
    assert!(routed(&r, &ev, &at("2026-03-15T23:59:59-04:00")));
    assert!(!routed(&r, &ev, &at("2026-03-16T00:00:00-04:00")));

    // Office hours in Tokyo or in New York.
    let r = windowed(
        "{ timezone = \"Asia/Tokyo\", from = \"09:00\", to = \"17:00\" }, \
         { timezone = \"America/New_York\", from = \"09:00\", to = \"17:00\" }",
    );
    assert!(routed(&r, &ev, &at("2026-03-10T15:00:00Z"))); // 11:00 New York
    assert!(routed(&r, &ev, &at("2026-03-10T01:00:00Z"))); // 10:00 Tokyo
    assert!(!routed(&r, &ev, &at("2026-03-10T23:00:00Z"))); // 19:00 NY, 08:00 Tokyo
}

#[test]
fn during_dst_gap_moves_to_the_first_instant_after_and_fold_uses_the_earliest() {
    let ev = result_event();
    // Spring forward, New York 2026-03-08: 02:00 EST -> 03:00 EDT.
    // A window starting in the gap starts at 03:00 EDT (07:00 UTC).
    let r = windowed(
        "{ timezone = \"America/New_York\", days = [\"sun\"], from = \"02:30\", to = \"04:00\" }",
    );
    assert!(!routed(&r, &ev, &at("2026-03-08T06:59:59Z")));
    assert!(routed(&r, &ev, &at("2026-03-08T07:00:00Z")));
    assert!(routed(&r, &ev, &at("2026-03-08T07:59:59Z")));
    assert!(!routed(&r, &ev, &at("2026-03-08T08:00:00Z")));
    // Both ends in the gap: empty that day.
    let r = windowed(
        "{ timezone = \"America/New_York\", days = [\"sun\"], from = \"02:10\", to = \"02:50\" }",
    );
    for s in [
        "2026-03-08T06:59:59Z",
        "2026-03-08T07:00:00Z",
        "2026-03-08T07:30:00Z",
    ] {
        assert!(!routed(&r, &ev, &at(s)), "{s}");
    }
    // A night window is 8 h on spring-forward night: 22:00 EST .. 07:00 EDT.
    let night = windowed(
        "{ timezone = \"America/New_York\", days = [\"sat\"], from = \"22:00\", to = \"07:00\" }",
    );
    assert!(routed(&night, &ev, &at("2026-03-08T03:00:00Z")));
    assert!(routed(&night, &ev, &at("2026-03-08T10:59:59Z")));
    assert!(!routed(&night, &ev, &at("2026-03-08T11:00:00Z")));

    // Fall back, New York 2026-11-01: 02:00 EDT -> 01:00 EST; 01:00-02:00
    // happens twice. A window ending at 01:30 ends at the first 01:30.
    let r = windowed(
        "{ timezone = \"America/New_York\", days = [\"sun\"], from = \"00:00\", to = \"01:30\" }",
    );
    assert!(routed(&r, &ev, &at("2026-11-01T05:29:59Z"))); // 01:29 EDT
    assert!(!routed(&r, &ev, &at("2026-11-01T05:30:00Z"))); // 01:30 EDT
    assert!(!routed(&r, &ev, &at("2026-11-01T06:15:00Z"))); // 01:15 EST: wall time inside, instant after
    // A window starting at 01:30 starts at the first 01:30 and runs through
    // the repeated hour to 03:00 EST.
    let r = windowed(
        "{ timezone = \"America/New_York\", days = [\"sun\"], from = \"01:30\", to = \"03:00\" }",
    );
    assert!(!routed(&r, &ev, &at("2026-11-01T05:29:59Z")));
    assert!(routed(&r, &ev, &at("2026-11-01T05:30:00Z")));
    assert!(routed(&r, &ev, &at("2026-11-01T06:15:00Z"))); // 01:15 EST
    assert!(routed(&r, &ev, &at("2026-11-01T07:59:59Z")));
    assert!(!routed(&r, &ev, &at("2026-11-01T08:00:00Z")));
}

// ------------------------------------------------------------ census

/// Rosters with an unscoped and an ICU charge nurse and a monitor tech.
fn census_rosters() -> Rosters {
    let text = r#"
name = "n"
timezone = "America/New_York"
[[members]]
id = "rn"
contacts = { matrix = "@rn:localhost" }
[[members]]
id = "tech"
contacts = { matrix = "@tech:localhost" }
[[roles]]
name = "charge-nurse"
[[roles]]
name = "monitor-tech"
[[roles]]
name = "house-supervisor"
[failsafe]
member = "rn"
"#;
    let icu = r#"
name = "icu"
timezone = "America/New_York"
[[members]]
id = "icu-rn"
contacts = { matrix = "@icu-rn:localhost" }
[[roles]]
name = "charge-nurse"
scope = "ICU"
[failsafe]
member = "icu-rn"
"#;
    roster::load_files(&[
        (PathBuf::from("icu.toml"), icu.to_string()),
        (PathBuf::from("n.toml"), text.to_string()),
    ])
    .expect("rosters")
}

fn census_rules(text: &str) -> Rules {
    match load_files(
        &[(PathBuf::from("m.toml"), format!("{text}\n{POLICY}"))],
        &census_rosters(),
    ) {
        Ok(r) => r,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

const ALARM_RULE: &str = r#"
[[rules]]
name = "alarm"
match = { kind = "alarm" }
route = { role = "charge-nurse", scope = "unit", escalation = "p" }
[[rules.reroute]]
when = "discharged"
role = "monitor-tech"
[[rules.reroute]]
when = "moved"
scope = "census-unit"
"#;

fn location(unit: &str) -> Location {
    Location {
        facility: "HOSP".into(),
        unit: unit.into(),
        room: "1".into(),
        bed: "A".into(),
    }
}

/// An ADT event for patient 123^^^HOSP.
fn adt(kind: EventKind, unit: Option<&str>) -> ClinicalEvent {
    let mut ev = result_event();
    ev.kind = kind;
    ev.source.sender = "adt".into();
    ev.source.message_type = "ADT".into();
    ev.observations.clear();
    ev.order = None;
    ev.location = unit.map(location);
    ev
}

/// A medium-priority alarm `AL-1` from `monitor` for patient 123^^^HOSP in ICU.
fn alarm_event() -> ClinicalEvent {
    let mut ev = result_event();
    ev.kind = EventKind::Alarm;
    ev.source.sender = "monitor".into();
    ev.source.message_type = "ORU".into();
    ev.source.trigger = "R40".into();
    ev.observations.clear();
    ev.order = None;
    ev.priority = Priority::Urgent;
    ev.alarm = Some(Alarm {
        id: "AL-1".into(),
        phase: "start".into(),
        priority: "PM".into(),
        kind: Code {
            code: "196648".into(),
            text: "MDC_EVT_HI".into(),
            system: "MDC".into(),
        },
        source: "monitor-1".into(),
        state: "active".into(),
    });
    ev
}

fn census(events: &[ClinicalEvent]) -> Census {
    Census::from_events(events)
}

fn one_route(r: &Rules, ev: &ClinicalEvent, c: &RouteContext<'_>) -> Route {
    match r.route_in(ev, c) {
        Decision::Routed { mut routes, .. } => routes.remove(0),
        d => panic!("expected a route, got {d:?}"),
    }
}

fn icu() -> RouteTarget {
    RouteTarget::Role {
        role: "charge-nurse".into(),
        scope: Some("ICU".into()),
    }
}

#[test]
fn moved_patient_is_rerouted_to_the_receiving_unit() {
    let r = census_rules(ALARM_RULE);
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Transfer, Some("5W")),
    ]);
    let ctx = ctx().with_census(&c);
    let route = one_route(&r, &alarm_event(), &ctx);
    assert_eq!(
        route.target,
        RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("5W".into())
        }
    );
    assert_eq!(
        route.rerouted,
        Some(Reroute {
            when: RerouteWhen::Moved,
            from: icu()
        })
    );
    assert_eq!(
        r.explain_in(&alarm_event(), &ctx)[0].reroute,
        Some(RerouteCheck::Applied(RerouteWhen::Moved))
    );
    // An event naming no unit: the census unit too.
    let mut nowhere = alarm_event();
    nowhere.location = None;
    let route = one_route(&r, &nowhere, &ctx);
    assert_eq!(
        route.rerouted.map(|x| x.from),
        Some(RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: None
        })
    );
    assert_eq!(
        route.target,
        RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("5W".into())
        }
    );
}

#[test]
fn discharged_or_cancelled_patient_is_rerouted_never_dropped() {
    let r = census_rules(ALARM_RULE);
    for last in [
        adt(EventKind::Discharge, Some("ICU")),
        adt(EventKind::CancelAdmit, None),
    ] {
        let c = census(&[adt(EventKind::Admit, Some("ICU")), last.clone()]);
        let ctx = ctx().with_census(&c);
        let route = one_route(&r, &alarm_event(), &ctx);
        assert_eq!(
            route.target,
            RouteTarget::Role {
                role: "monitor-tech".into(),
                scope: None
            },
            "{:?}",
            last.kind
        );
        assert_eq!(
            route.rerouted,
            Some(Reroute {
                when: RerouteWhen::Discharged,
                from: icu()
            })
        );
    }
}

#[test]
fn without_census_or_patient_no_reroute_applies_and_explain_says_why() {
    let r = census_rules(ALARM_RULE);
    let ev = alarm_event();
    // No census.
    let route = one_route(&r, &ev, &ctx());
    assert_eq!((route.target.clone(), route.rerouted), (icu(), None));
    assert_eq!(
        r.explain_in(&ev, &ctx())[0].reroute,
        Some(RerouteCheck::NoCensus)
    );
    // A census that does not know the patient.
    let mut other = adt(EventKind::Admit, Some("5W"));
    other.patient.identifiers = vec![Identifier {
        value: "999".into(),
        authority: "HOSP".into(),
        type_code: "MR".into(),
    }];
    let c = census(&[other]);
    let with = ctx().with_census(&c);
    assert_eq!(one_route(&r, &ev, &with).rerouted, None);
    assert_eq!(
        r.explain_in(&ev, &with)[0].reroute,
        Some(RerouteCheck::PatientUnknown)
    );
    // The patient is where the event says: nothing to do.
    let c = census(&[adt(EventKind::Admit, Some("icu"))]);
    let with = ctx().with_census(&c);
    let route = one_route(&r, &ev, &with);
    assert_eq!((route.target, route.rerouted), (icu(), None));
    assert_eq!(
        r.explain_in(&ev, &with)[0].reroute,
        Some(RerouteCheck::NotNeeded)
    );
    // Rules without re-routes, or not matched, say nothing.
    let plain = census_rules(
        "[[rules]]\nname = \"a\"\nmatch = { kind = \"admit\" }\nroute = { role = \"monitor-tech\", escalation = \"p\" }\n",
    );
    assert_eq!(plain.explain_in(&ev, &with)[0].reroute, None);
    assert_eq!(r.explain_in(&result_event(), &with)[0].reroute, None);
}

#[test]
fn reroute_to_a_relation_or_person_and_census_unit_scope_on_the_route() {
    let r = census_rules(
        r#"
[[rules]]
name = "r"
match = { kind = "alarm" }
route = { role = "charge-nurse", scope = "census-unit", escalation = "p" }
[[rules.reroute]]
when = "discharged"
person = "tech"
"#,
    );
    let ev = alarm_event();
    // No census: the event's unit.
    assert_eq!(one_route(&r, &ev, &ctx()).target, icu());
    // Census: the patient's unit, without a re-route.
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Transfer, Some("5W")),
    ]);
    let route = one_route(&r, &ev, &ctx().with_census(&c));
    assert_eq!(
        route.target,
        RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("5W".into())
        }
    );
    assert_eq!(route.rerouted, None);
    // Discharged: the person, recording the census-unit target it replaced
    // (the event's unit: a discharged patient has no census unit).
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Discharge, Some("ICU")),
    ]);
    let route = one_route(&r, &ev, &ctx().with_census(&c));
    assert_eq!(route.target, RouteTarget::Person { id: "tech".into() });
    assert_eq!(route.rerouted.map(|x| x.from), Some(icu()));

    let r = census_rules(
        r#"
[[rules]]
name = "r"
match = { kind = "alarm" }
route = { role = "charge-nurse", scope = "unit", escalation = "p" }
[[rules.reroute]]
when = "moved"
relation = "attending"
fallback = { role = "charge-nurse", scope = "census-unit" }
"#,
    );
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Transfer, Some("5W")),
    ]);
    let route = one_route(&r, &ev, &ctx().with_census(&c));
    assert_eq!(
        route.target,
        RouteTarget::Relation {
            relation: Relation::Attending,
            fallback: Some(Box::new(RouteTarget::Role {
                role: "charge-nurse".into(),
                scope: Some("5W".into())
            }))
        }
    );
}

// ------------------------------------------------------------ holds

const HELD_ALARM: &str = r#"
[[rules]]
name = "held"
match = { kind = "alarm", alarm_priority = ["PM", "PL"] }
route = { role = "charge-nurse", scope = "unit", priority = "urgent", escalation = "p", delay_secs = 30, clear = "alarm-end", dedup_window_secs = 120, dedup_key = ["alarm"], dedup_keep = "latest" }
"#;

#[test]
fn delay_then_cancel_holds_the_alarm_until_it_ends() {
    let r = census_rules(HELD_ALARM);
    let held = alarm_event();
    let route = one_route(&r, &held, &ctx());
    let hold = route.hold.expect("held");
    assert_eq!(
        hold,
        Hold {
            window: Duration::from_secs(30),
            clear: ClearOn::AlarmEnd
        }
    );
    assert_eq!(
        hold.release_at(utc("2026-03-10T15:00:00Z")),
        utc("2026-03-10T15:00:30Z")
    );
    assert_eq!(route.dedup_keep, DedupKeep::Latest);
    assert_eq!(route.safety_override, None);

    let later = |f: &dyn Fn(&mut ClinicalEvent)| {
        let mut e = alarm_event();
        f(&mut e);
        hold.clears(&held, &e)
    };
    let set_phase =
        |p: &'static str| move |e: &mut ClinicalEvent| e.alarm.as_mut().unwrap().phase = p.into();
    assert!(later(&set_phase("end")));
    assert!(later(
        &|e| e.alarm.as_mut().unwrap().state = "inactive".into()
    ));
    // Without patient identifiers, sender and alarm id suffice.
    assert!(later(&|e| {
        set_phase("end")(e);
        e.patient.identifiers.clear()
    }));
    // Not an end, or not the same alarm: the alert stays held.
    assert!(!later(&|_| {}));
    assert!(!later(&set_phase("continue")));
    assert!(!later(&|e| {
        set_phase("end")(e);
        e.alarm.as_mut().unwrap().id = "AL-2".into()
    }));
    assert!(!later(&|e| {
        set_phase("end")(e);
        e.source.sender = "other-monitor".into()
    }));
    assert!(!later(&|e| {
        set_phase("end")(e);
        e.patient.identifiers[0].value = "999".into()
    }));
    // A training message never clears a production alert.
    assert!(!later(&|e| {
        set_phase("end")(e);
        e.processing = Processing::Training
    }));
    // An alarm without an id cannot be cleared: no hold.
    let mut anonymous = alarm_event();
    anonymous.alarm.as_mut().unwrap().id = " ".into();
    assert_eq!(one_route(&r, &anonymous, &ctx()).hold, None);
}

#[test]
fn order_cancel_clears_a_held_result() {
    let r = rules(&format!(
        r#"
[[rules]]
name = "abnormal"
match = {{ kind = ["result", "order"], flags = ["H", "L"] }}
route = {{ role = "hospitalist", priority = "urgent", escalation = "p", delay_secs = 60, clear = "order-cancel" }}
{POLICY}"#
    ));
    let mut held = result_event();
    held.observations = vec![obs("LN", "2951-2", &["H"], ResultStatus::Final)];
    held.order = Some(Order {
        placer_id: "PL1".into(),
        filler_id: "FL1".into(),
        result_status: "F".into(),
        ..Order::default()
    });
    let hold = one_route(&r, &held, &ctx()).hold.expect("held");
    assert_eq!(hold.clear, ClearOn::OrderCancel);
    let cancel = |control: &str, placer: &str| {
        let mut e = adt(EventKind::Order, Some("ICU"));
        e.order = Some(Order {
            control: control.into(),
            placer_id: placer.into(),
            ..Order::default()
        });
        e
    };
    for c in ["CA", "oc", "DC", "OD"] {
        assert!(hold.clears(&held, &cancel(c, "PL1")), "{c}");
    }
    assert!(!hold.clears(&held, &cancel("NW", "PL1")));
    assert!(!hold.clears(&held, &cancel("CA", "PL2")));
    let mut stranger = cancel("CA", "PL1");
    stranger.patient.identifiers[0].authority = "OTHER".into();
    assert!(!hold.clears(&held, &stranger));
    // A retraction of the result: OBR-25 X / D / W, or every OBX-11 W.
    for status in ["X", "D", "W"] {
        let mut e = held.clone();
        e.observations.clear();
        e.order.as_mut().unwrap().result_status = status.into();
        assert!(hold.clears(&held, &e), "{status}");
    }
    let mut e = held.clone();
    e.order.as_mut().unwrap().result_status = "C".into();
    assert!(!hold.clears(&held, &e));
    e.observations[0].status = ResultStatus::WrongPatient;
    assert!(hold.clears(&held, &e));
    // Matched by the filler number alone.
    let mut e = cancel("OC", "");
    e.order.as_mut().unwrap().filler_id = "FL1".into();
    assert!(hold.clears(&held, &e));
    // A result without an order number gets no hold.
    let mut bare = held.clone();
    bare.order = None;
    assert_eq!(one_route(&r, &bare, &ctx()).hold, None);
}

#[test]
fn critical_events_are_never_held_grouped_or_replaced() {
    // Flags H/L cannot exclude a critical value on another observation.
    let r = rules(&format!(
        r#"
[[rules]]
name = "abnormal"
match = {{ kind = "result", flags = ["H", "L"] }}
route = {{ role = "hospitalist", priority = "urgent", escalation = "p", delay_secs = 60, clear = "order-cancel", group_window_secs = 120, dedup_window_secs = 300, dedup_keep = "latest" }}
{POLICY}"#
    ));
    let mut ev = result_event();
    ev.order.as_mut().unwrap().placer_id = "PL1".into();
    ev.observations = vec![
        obs("LN", "2951-2", &["H"], ResultStatus::Final),
        obs("LN", "2823-3", &["HH"], ResultStatus::Final),
    ];
    let route = one_route(&r, &ev, &ctx());
    assert_eq!(route.safety_override, Some(Critical::Result));
    assert_eq!(
        (route.hold, route.group_window, route.dedup_keep),
        (None, None, DedupKeep::First)
    );
    assert_eq!(route.dedup_window, Some(Duration::from_secs(300)));
    // Without the critical value, all three apply.
    ev.observations.truncate(1);
    let route = one_route(&r, &ev, &ctx());
    assert_eq!(route.safety_override, None);
    assert!(route.hold.is_some());
    assert_eq!(route.group_window, Some(Duration::from_secs(120)));
    assert_eq!(route.dedup_keep, DedupKeep::Latest);
    // A STAT result counts as critical too.
    ev.priority = Priority::Stat;
    assert_eq!(
        one_route(&r, &ev, &ctx()).safety_override,
        Some(Critical::Result)
    );

    // An alarm whose event priority is STAT, whatever its ACM code says.
    let r = census_rules(HELD_ALARM);
    let mut alarm = alarm_event();
    alarm.priority = Priority::Stat;
    let route = one_route(&r, &alarm, &ctx());
    assert_eq!(route.safety_override, Some(Critical::Alarm));
    assert_eq!((route.hold, route.dedup_keep), (None, DedupKeep::First));

    // Nothing asked, nothing overridden.
    let plain = rules(&format!(
        "[[rules]]\nname = \"r\"\nroute = {{ role = \"hospitalist\", escalation = \"p\" }}\n{POLICY}"
    ));
    assert_eq!(
        one_route(&plain, &result_event(), &ctx()).safety_override,
        None
    );
    assert_eq!(critical_event(&result_event()), Some(Critical::Result));
}

#[test]
fn dedup_keep_defaults_to_first() {
    let r = rules(&format!(
        "[[rules]]\nname = \"r\"\nroute = {{ role = \"hospitalist\", escalation = \"p\", dedup_window_secs = 60 }}\n{POLICY}"
    ));
    let route = one_route(&r, &result_event(), &ctx());
    assert_eq!(route.dedup_keep, DedupKeep::First);
    assert_eq!(route.dedup_window, Some(Duration::from_secs(60)));
    assert_eq!(route.hold, None);
}

// ------------------------------------------------------------ example mapping

/// The demo rosters and mappings (`mappings/critical-results.toml` then
/// `mappings/device-alarms.toml`).
fn demo() -> (Rosters, Rules) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rosters = roster::load_dir(&root.join("rosters")).unwrap_or_else(|e| panic!("{e:?}"));
    let rules = super::load_dir(&root.join("mappings"), &rosters).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    (rosters, rules)
}

#[test]
fn example_alarm_rules_hold_low_alarms_and_reroute_with_the_census() {
    let (_, r) = demo();
    let mut high = alarm_event();
    high.alarm.as_mut().unwrap().priority = "PH".into();
    high.priority = Priority::Stat;
    let route = one_route(&r, &high, &ctx());
    assert_eq!(route.rule, "high-priority-alarm");
    assert_eq!(route.priority, AlertPriority::Stat);
    assert_eq!((route.hold, route.group_window), (None, None));
    assert_eq!(route.target, icu());

    let route = one_route(&r, &alarm_event(), &ctx());
    assert_eq!(route.rule, "transient-alarm");
    assert_eq!(route.hold.map(|h| h.window), Some(Duration::from_secs(30)));
    assert_eq!(route.dedup_keep, DedupKeep::Latest);

    let mut unknown = alarm_event();
    unknown.alarm.as_mut().unwrap().priority = String::new();
    unknown.priority = Priority::Unspecified;
    let route = one_route(&r, &unknown, &ctx());
    assert_eq!((route.rule.as_str(), route.hold), ("other-alarm", None));

    // Discharged: the house supervisor; moved: the receiving unit's charge nurse.
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Discharge, Some("ICU")),
    ]);
    let route = one_route(&r, &high, &ctx().with_census(&c));
    assert_eq!(
        route.target,
        RouteTarget::Role {
            role: "house-supervisor".into(),
            scope: None
        }
    );
    assert_eq!(
        route.rerouted.map(|x| x.when),
        Some(RerouteWhen::Discharged)
    );
    let c = census(&[
        adt(EventKind::Admit, Some("ICU")),
        adt(EventKind::Transfer, Some("5W")),
    ]);
    let route = one_route(&r, &alarm_event(), &ctx().with_census(&c));
    assert_eq!(
        route.target,
        RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("5W".into())
        }
    );
}

#[test]
fn example_overnight_icu_admission_also_tells_the_house_supervisor() {
    let (_, r) = demo();
    let admit = adt(EventKind::Admit, Some("ICU"));
    let matched = |s: &str| match r.route_in(&admit, &at(s)) {
        Decision::Routed { matched, .. } => matched,
        d => panic!("{d:?}"),
    };
    assert_eq!(matched("2026-03-10T11:00:00-04:00"), ["icu-admission"]);
    assert_eq!(
        matched("2026-03-10T23:00:00-04:00"),
        ["icu-admission", "icu-admission-overnight"]
    );
    let checks = r.explain_in(&admit, &at("2026-03-10T11:00:00-04:00"));
    let overnight = checks
        .iter()
        .find(|c| c.rule == "icu-admission-overnight")
        .expect("rule");
    assert_eq!(overnight.failed, Some("during"));
}
