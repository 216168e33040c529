//! Rule loading, validation errors and matching.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::event::{
    Alarm, Code, EventKind, Identifier, Location, Observation, Order, Patient, Priority,
    Processing, ResultStatus, SourceRef,
};
use crate::roster;

/// A Tuesday, 11:00 New York time.
pub(super) fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-03-10T15:00:00Z")
        .expect("t")
        .with_timezone(&chrono::Utc)
}

/// The routing context of most tests: [`at`], no census.
pub(super) fn ctx() -> RouteContext<'static> {
    RouteContext::new(at())
}

pub(super) fn rosters() -> Rosters {
    let text = r#"
name = "t"
timezone = "America/New_York"
[[members]]
id = "dr-x"
contacts = { matrix = "@x:localhost" }
[[roles]]
name = "hospitalist"
[[roles]]
name = "house-supervisor"
[[rotations]]
role = "hospitalist"
members = ["dr-x"]
start = "2026-01-05T07:00"
length_days = 7
[failsafe]
member = "dr-x"
"#;
    let icu = r#"
name = "icu"
timezone = "America/New_York"
[[members]]
id = "rn"
contacts = { matrix = "@rn:localhost" }
[[roles]]
name = "charge-nurse"
scope = "ICU"
[failsafe]
member = "rn"
"#;
    roster::load_files(&[
        (PathBuf::from("t.toml"), text.to_string()),
        (PathBuf::from("icu.toml"), icu.to_string()),
    ])
    .expect("rosters")
}

pub(super) const POLICY: &str = r#"
[escalations.p]
tiers = [{ route = true, timeout_secs = 60 }, { role = "house-supervisor" }, { failsafe = true }]
"#;

pub(super) fn rules(text: &str) -> Rules {
    match load_files(&[(PathBuf::from("m.toml"), text.to_string())], &rosters()) {
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

pub(super) fn errors(text: &str) -> Vec<ConfigError> {
    match load_files(&[(PathBuf::from("m.toml"), text.to_string())], &rosters()) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

pub(super) fn error_at(errs: &[ConfigError], field: &str) -> ConfigError {
    errs.iter()
        .find(|e| e.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("no error at `{field}` in {errs:#?}"))
}

pub(crate) fn obs(system: &str, code: &str, flags: &[&str], status: ResultStatus) -> Observation {
    Observation {
        set_id: "1".into(),
        value_type: "NM".into(),
        code: Code {
            code: code.into(),
            text: String::new(),
            system: system.into(),
        },
        sub_id: String::new(),
        values: vec!["6.9".into()],
        units: None,
        reference_range: String::new(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        status,
        observed_at: None,
    }
}

/// A production ORU^R01 from `lab`: potassium 6.9 HH, final, in ICU bed 12-A.
pub(crate) fn result_event() -> ClinicalEvent {
    ClinicalEvent {
        kind: EventKind::Result,
        source: SourceRef {
            sender: "lab".into(),
            message_type: "ORU".into(),
            trigger: "R01".into(),
            control_id: "C1".into(),
            index: 0,
        },
        processing: Processing::Production,
        occurred_at: None,
        patient: Patient {
            identifiers: vec![Identifier {
                value: "123".into(),
                authority: "HOSP".into(),
                type_code: "MR".into(),
            }],
            ..Patient::default()
        },
        location: Some(Location {
            facility: "HOSP".into(),
            unit: "ICU".into(),
            room: "12".into(),
            bed: "A".into(),
        }),
        prior_location: None,
        patient_class: "I".into(),
        visit: None,
        providers: Vec::new(),
        priority: Priority::Routine,
        order: Some(Order {
            service: Code {
                code: "24320-4".into(),
                text: "BMP".into(),
                system: "LN".into(),
            },
            result_status: "F".into(),
            ..Order::default()
        }),
        observations: vec![
            obs("LN", "2951-2", &["N"], ResultStatus::Final),
            obs("LN", "2823-3", &["HH"], ResultStatus::Final),
        ],
        alarm: None,
        merged_identifiers: Vec::new(),
        notes: Vec::new(),
    }
}

pub(super) fn one_rule(matcher: &str) -> Rules {
    rules(&format!(
        "[[rules]]\nname = \"r\"\nmatch = {{ {matcher} }}\nroute = {{ role = \"hospitalist\", escalation = \"p\" }}\n{POLICY}"
    ))
}

pub(super) fn matches(matcher: &str, ev: &ClinicalEvent) -> bool {
    match one_rule(matcher).route_in(ev, &ctx()) {
        Decision::Routed { .. } => true,
        Decision::Filtered { .. } => false,
        d => panic!("unexpected {d:?}"),
    }
}

#[test]
fn demo_mappings_and_rosters_load() {
    let rosters = roster::load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rosters")))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let rules = load_dir(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings")),
        &rosters,
    )
    .unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(rules.rules().len() >= 3);
    let Decision::Routed { matched, routes } = rules.route_in(&result_event(), &ctx()) else {
        panic!("critical potassium must route");
    };
    assert_eq!(matched, ["critical-potassium"]);
    assert_eq!(
        routes[0].target,
        RouteTarget::Role {
            role: "hospitalist".into(),
            scope: Some("ICU".into())
        }
    );
    assert_eq!(routes[0].priority, AlertPriority::Stat);
    assert_eq!(routes[0].escalation.name, "stat-default");
    assert_eq!(
        routes[0].escalation.tiers.last().map(|t| &t.target),
        Some(&TierTarget::Failsafe)
    );
    // Every policy's roles resolve to someone in the demo rosters.
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-08T07:30:00Z")
        .expect("t")
        .with_timezone(&chrono::Utc);
    for rule in rules.rules() {
        if let Target::Role { role, .. } = &rule.route.target {
            assert!(!rosters.on_call(role, Some("ICU"), at).is_empty(), "{role}");
            assert!(
                !rosters.failsafe(role, Some("ICU"), at).is_empty(),
                "{role}"
            );
        }
    }
    // A normal result raises nothing.
    let mut normal = result_event();
    for o in &mut normal.observations {
        o.flags = vec!["N".into()];
    }
    assert_eq!(
        rules.route_in(&normal, &ctx()),
        Decision::Filtered {
            reason: FilterReason::NoRuleMatched
        }
    );
}

#[test]
fn matches_on_every_criterion() {
    let ev = result_event();
    assert!(matches("kind = \"result\"", &ev));
    assert!(matches("kind = [\"admit\", \"result\"]", &ev));
    assert!(!matches("kind = \"admit\"", &ev));
    assert!(matches("message_type = \"ORU\"", &ev));
    assert!(matches("message_type = [\"oru^r01\"]", &ev));
    assert!(!matches("message_type = \"ORU^R40\"", &ev));
    assert!(matches("sender = \"lab\"", &ev));
    assert!(!matches("sender = [\"ris\"]", &ev));
    assert!(matches("codes = [\"LN|2823-3\"]", &ev));
    assert!(matches("codes = [\"http://loinc.org|2823-3\"]", &ev));
    assert!(!matches("codes = [\"SCT|2823-3\"]", &ev));
    // Without flags, the order's service code counts too.
    assert!(matches("codes = [\"LOINC|24320-4\"]", &ev));
    // Flags must be on an observation with the code.
    assert!(matches("codes = [\"LN|2823-3\"], flags = [\"HH\"]", &ev));
    assert!(!matches("codes = [\"LN|2951-2\"], flags = [\"HH\"]", &ev));
    assert!(!matches("codes = [\"LN|24320-4\"], flags = [\"HH\"]", &ev));
    assert!(matches("flags = [\"hh\", \"LL\"]", &ev));
    assert!(!matches("flags = [\"LL\"]", &ev));
    let mut stat = ev.clone();
    stat.priority = Priority::Stat;
    assert!(!matches("priority_at_least = \"urgent\"", &ev));
    assert!(matches("priority_at_least = \"urgent\"", &stat));
    assert!(matches("priority_at_least = \"stat\"", &stat));
    assert!(matches("units = [\"ICU*\"]", &ev));
    assert!(matches("units = [\"4W\", \"i?u\"]", &ev));
    assert!(!matches("units = [\"MICU\"]", &ev));
    assert!(matches("locations = [\"ICU/1?/A\"]", &ev));
    assert!(!matches("locations = [\"ICU/1?/B\"]", &ev));
    assert!(matches("facilities = [\"HOSP\"]", &ev));
    assert!(!matches("facilities = [\"CLINIC\"]", &ev));
    let mut nowhere = ev.clone();
    nowhere.location = None;
    assert!(!matches("units = [\"*\"]", &nowhere));
    assert!(matches("result_status = \"final\"", &ev));
    assert!(!matches("result_status = [\"corrected\"]", &ev));
    assert!(matches(
        "codes = [\"LN|2823-3\"], flags = [\"HH\"], result_status = [\"final\", \"corrected\"]",
        &ev
    ));
    // Without observations, OBR-25 gives the status.
    let mut cancelled = ev.clone();
    cancelled.observations.clear();
    if let Some(o) = cancelled.order.as_mut() {
        o.result_status = "X".into();
    }
    assert!(matches("result_status = \"cannot-obtain\"", &cancelled));
    // An alarm kind matches codes.
    let mut alarm = ev.clone();
    alarm.kind = EventKind::Alarm;
    alarm.observations.clear();
    alarm.order = None;
    alarm.alarm = Some(Alarm {
        kind: Code {
            code: "196648".into(),
            text: String::new(),
            system: "MDC".into(),
        },
        ..Alarm::default()
    });
    assert!(matches(
        "kind = \"alarm\", codes = [\"MDC|196648\"]",
        &alarm
    ));
    // All criteria together.
    assert!(matches(
        "kind = \"result\", message_type = \"ORU^R01\", sender = \"lab\", codes = [\"LN|2823-3\"], flags = [\"HH\"], \
         priority_at_least = \"routine\", units = [\"ICU\"], result_status = \"final\"",
        &ev
    ));
    // Explanations name the failing criterion.
    let r = one_rule("kind = \"result\", units = [\"4W\"]");
    assert_eq!(r.explain_in(&ev, &ctx())[0].failed, Some("units"));
}

#[test]
fn first_match_stops_unless_continue() {
    let text = format!(
        r#"
[[rules]]
name = "a"
match = {{ kind = "result" }}
route = {{ role = "hospitalist", escalation = "p" }}
[[rules]]
name = "b"
match = {{ flags = ["HH"] }}
route = {{ role = "house-supervisor", escalation = "p" }}
{POLICY}"#
    );
    let Decision::Routed { matched, .. } = rules(&text).route_in(&result_event(), &ctx()) else {
        panic!()
    };
    assert_eq!(matched, ["a"]);
    let cont = text.replacen("name = \"a\"", "name = \"a\"\ncontinue = true", 1);
    let r = rules(&cont);
    let Decision::Routed { matched, routes } = r.route_in(&result_event(), &ctx()) else {
        panic!()
    };
    assert_eq!(matched, ["a", "b"]);
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[1].target,
        RouteTarget::Role {
            role: "house-supervisor".into(),
            scope: None
        }
    );
    let checks = rules(&text).explain_in(&result_event(), &ctx());
    assert_eq!(checks[0].failed, None);
    assert!(checks[0].evaluated);
    assert!(!checks[1].evaluated);
}

#[test]
fn test_and_debug_messages_never_route_to_production() {
    let mut ev = result_event();
    for p in [Processing::Training, Processing::Debugging] {
        ev.processing = p;
        let r = one_rule("kind = \"result\"");
        assert_eq!(
            r.route_in(&ev, &ctx()),
            Decision::Filtered {
                reason: FilterReason::NotProduction(p)
            }
        );
        assert_eq!(r.explain_in(&ev, &ctx())[0].failed, Some("processing"));
    }
    // A test rule routes T/D messages to its test destination, with the
    // built-in test policy: no production escalation tier, no failsafe.
    let text = format!(
        r#"
[[rules]]
name = "prod"
match = {{ kind = "result" }}
route = {{ role = "hospitalist", escalation = "p" }}
[[rules]]
name = "test"
match = {{ kind = "result", allow_test = true }}
route = {{ person = "dr-x", test_destination = true }}
{POLICY}"#
    );
    let r = rules(&text);
    for p in [Processing::Training, Processing::Debugging] {
        ev.processing = p;
        match r.route_in(&ev, &ctx()) {
            Decision::Test {
                processing,
                matched,
                routes,
            } => {
                assert_eq!(processing, p);
                assert_eq!(matched, ["test"]);
                assert_eq!(routes[0].target, RouteTarget::Person { id: "dr-x".into() });
                assert!(routes[0].test_destination);
                assert_eq!(routes[0].escalation.name, TEST_POLICY);
                assert_eq!(
                    routes[0]
                        .escalation
                        .tiers
                        .iter()
                        .map(|t| &t.target)
                        .collect::<Vec<_>>(),
                    [&TierTarget::Route]
                );
            }
            d => panic!("{p:?} must not produce {d:?}"),
        }
        let checks = r.explain_in(&ev, &ctx());
        assert_eq!(checks[0].failed, Some("processing"));
        assert_eq!(checks[1].failed, None);
    }
    // A production message never reaches the test destination.
    ev.processing = Processing::Production;
    let Decision::Routed { matched, routes } = r.route_in(&ev, &ctx()) else {
        panic!()
    };
    assert_eq!(matched, ["prod"]);
    assert!(!routes[0].test_destination);
    let only_test = rules(&text.replacen(
        "name = \"prod\"\nmatch = { kind = \"result\" }",
        "name = \"prod\"\nmatch = { kind = \"admit\" }",
        1,
    ));
    assert_eq!(
        only_test.route_in(&ev, &ctx()),
        Decision::Filtered {
            reason: FilterReason::NoRuleMatched
        }
    );
    assert_eq!(
        only_test.explain_in(&ev, &ctx())[1].failed,
        Some("processing")
    );
}

#[test]
fn defaults_priority_policy_and_timeouts() {
    let r = rules("[[rules]]\nname = \"r\"\nroute = { role = \"hospitalist\" }\n");
    let mut ev = result_event();
    ev.priority = Priority::Urgent;
    let Decision::Routed { routes, .. } = r.route_in(&ev, &ctx()) else {
        panic!()
    };
    let route = &routes[0];
    assert_eq!(route.priority, AlertPriority::Urgent);
    assert_eq!(route.escalation.name, DEFAULT_POLICY);
    assert_eq!(route.escalation.tiers.len(), 2);
    assert_eq!(
        route.escalation.tiers[0].timeout_for(AlertPriority::Stat),
        Duration::from_secs(120)
    );
    assert_eq!(
        route.escalation.tiers[0].timeout_for(AlertPriority::Urgent),
        Duration::from_secs(600)
    );
    assert_eq!(
        route.escalation.tiers[0].timeout_for(AlertPriority::Routine),
        Duration::from_secs(1800)
    );
    assert_eq!(
        route.escalation.renotify_for(AlertPriority::Stat),
        Some(Duration::from_secs(900))
    );
    assert_eq!(route.escalation.renotify_for(AlertPriority::Routine), None);
    let p = rules(POLICY);
    let p = p.policy("p").expect("policy");
    assert_eq!(
        p.tiers[0].timeout_for(AlertPriority::Stat),
        Duration::from_secs(60)
    );
    assert_eq!(
        p.tiers[1].target,
        TierTarget::Role {
            role: "house-supervisor".into(),
            scope: Scope::None
        }
    );
}

#[test]
fn relation_and_person_targets() {
    let r = rules(&format!(
        r#"
[[rules]]
name = "attending"
continue = true
match = {{ kind = "result" }}
route = {{ relation = "attending", fallback = {{ role = "charge-nurse", scope = "ICU" }}, escalation = "p" }}
[[rules]]
name = "person"
match = {{ kind = "result", flags = ["H"] }}
route = {{ person = "dr-x", priority = "asap", dedup_window_secs = 60, dedup_key = ["patient"], group_window_secs = 30 }}
{POLICY}"#
    ));
    // An abnormal (not critical) result: the grouping window applies.
    let mut ev = result_event();
    ev.observations[1].flags = vec!["H".into()];
    let Decision::Routed { routes, .. } = r.route_in(&ev, &ctx()) else {
        panic!()
    };
    assert_eq!(
        routes[0].target,
        RouteTarget::Relation {
            relation: Relation::Attending,
            fallback: Some(Box::new(RouteTarget::Role {
                role: "charge-nurse".into(),
                scope: Some("ICU".into())
            }))
        }
    );
    assert_eq!(routes[1].target, RouteTarget::Person { id: "dr-x".into() });
    assert_eq!(routes[1].priority, AlertPriority::Asap);
    assert_eq!(routes[1].dedup_window, Some(Duration::from_secs(60)));
    assert_eq!(routes[1].dedup_key, [DedupPart::Patient]);
    assert_eq!(routes[1].group_window, Some(Duration::from_secs(30)));
}

#[test]
fn errors_name_file_line_column_and_field() {
    // Unknown role, unknown policy, bad glob: each at its field.
    let text = r#"[[rules]]
name = "r"
match = { units = ["ICU["] }
route = { role = "hospitalst", escalation = "stat-defualt" }
"#;
    let e = errors(text);
    let role = error_at(&e, "rules[0].route.role");
    assert!(role.problem.contains("unknown role `hospitalst`"), "{role}");
    assert_eq!((role.line, role.column), (Some(4), Some(18)));
    assert!(
        role.to_string()
            .starts_with("m.toml:4:18: field `rules[0].route.role`: unknown role")
    );
    let pol = error_at(&e, "rules[0].route.escalation");
    assert!(
        pol.problem
            .contains("unknown escalation policy `stat-defualt`"),
        "{pol}"
    );
    assert_eq!((pol.line, pol.column), (Some(4), Some(45)));
    let glob = error_at(&e, "rules[0].match.units[0]");
    assert!(glob.problem.contains("bad glob `ICU[`"), "{glob}");
    assert_eq!((glob.line, glob.column), (Some(3), Some(20)));

    // Policy without failsafe; failsafe not last; unknown role in a tier.
    let text = r#"
[escalations.a]
tiers = [{ role = "hospitalist" }, { role = "house-supervisor" }]
[escalations.b]
tiers = [{ failsafe = true }, { role = "nobody" }]
"#;
    let e = errors(text);
    let a = error_at(&e, "escalations.a.tiers[1]");
    assert!(a.problem.contains("must end with a failsafe tier"), "{a}");
    assert_eq!(a.line, Some(3));
    assert!(
        error_at(&e, "escalations.b.tiers[0]")
            .problem
            .contains("must be the last")
    );
    assert!(
        error_at(&e, "escalations.b.tiers[1].role")
            .problem
            .contains("unknown role `nobody`")
    );
    assert!(
        error_at(&e, "escalations.b.tiers[1]")
            .problem
            .contains("must end with a failsafe")
    );

    // Unknown field, with the key's position.
    let e = errors(
        "[[rules]]\nname = \"r\"\nroute = { role = \"hospitalist\", pirority = \"stat\" }\n",
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].problem.contains("unknown field `pirority`"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, Some(3));

    // Other field errors.
    let text = r#"
[[rules]]
name = "r"
match = { kind = "reslt", codes = ["2823-3"], priority_at_least = "high", result_status = "done", message_type = "ORU^" }
route = { relation = "cousin", scope = "unit" }
[[rules]]
name = "r"
route = { role = "charge-nurse", scope = "unit" }
[[rules]]
name = "s"
route = { role = "charge-nurse" }
[[rules]]
name = "t"
route = { person = "nobody", dedup_window_secs = 0 }
"#;
    let e = errors(text);
    assert!(
        error_at(&e, "rules[0].match.kind[0]")
            .problem
            .contains("not an event kind")
    );
    assert!(
        error_at(&e, "rules[0].match.codes[0]")
            .problem
            .contains("SYSTEM|CODE")
    );
    assert!(
        error_at(&e, "rules[0].match.priority_at_least")
            .problem
            .contains("high")
    );
    assert!(
        error_at(&e, "rules[0].match.result_status[0]")
            .problem
            .contains("done")
    );
    assert!(
        error_at(&e, "rules[0].match.message_type[0]")
            .problem
            .contains("ORU^")
    );
    assert!(
        error_at(&e, "rules[0].route.relation")
            .problem
            .contains("cousin")
    );
    assert!(
        error_at(&e, "rules[0].route.scope")
            .problem
            .contains("only meaningful with `role`")
    );
    assert!(
        error_at(&e, "rules[1].name")
            .problem
            .contains("already defined")
    );
    let scoped = error_at(&e, "rules[1].route.role");
    assert!(
        scoped.problem.contains("only defined for units ICU"),
        "{scoped}"
    );
    assert!(scoped.problem.contains("unscoped"), "{scoped}");
    assert!(
        error_at(&e, "rules[2].route.role")
            .problem
            .contains("give `scope`")
    );
    assert!(
        error_at(&e, "rules[3].route.person")
            .problem
            .contains("unknown person `nobody`")
    );
    assert!(
        error_at(&e, "rules[3].route.dedup_window_secs")
            .problem
            .contains("at least 1")
    );
    for err in &e {
        assert_eq!(err.file, PathBuf::from("m.toml"));
        assert!(err.line.is_some() && err.column.is_some(), "{err}");
    }

    // A fixed unit scope that exists is fine; a policy defined in another file too.
    let ok = load_files(
        &[
            (
                PathBuf::from("a.toml"),
                "[[rules]]\nname = \"icu\"\nroute = { role = \"charge-nurse\", scope = \"ICU\", escalation = \"p\" }\n".to_string(),
            ),
            (PathBuf::from("b.toml"), POLICY.to_string()),
        ],
        &rosters(),
    );
    assert!(ok.is_ok(), "{ok:?}");
}
