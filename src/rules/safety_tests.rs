//! One test per validation error of the routing features: time windows,
//! alarm priorities, dedup modes, holds, re-routes, test destinations and
//! the refusal of clinically unsafe rules. Each error must name the file,
//! line, column and field.

use std::path::PathBuf;

use super::tests::{POLICY, error_at, errors, rules};
use super::*;

/// A file with one rule `r` (match and route given as inline-table bodies)
/// and the test policy `p`.
fn rule(matcher: &str, route: &str) -> String {
    format!("[[rules]]\nname = \"r\"\nmatch = {{ {matcher} }}\nroute = {{ {route} }}\n{POLICY}")
}

/// The error at `field`, which must say `says` and be placed in m.toml.
fn refused(text: &str, field: &str, says: &str) -> ConfigError {
    let e = errors(text);
    let err = error_at(&e, field);
    assert!(err.problem.contains(says), "{err}");
    assert_eq!(err.file, PathBuf::from("m.toml"));
    assert!(err.line.is_some() && err.column.is_some(), "{err}");
    err
}

fn accepted(text: &str) -> Rules {
    rules(text)
}

const HOSP: &str = "role = \"hospitalist\", escalation = \"p\"";

// ------------------------------------------------------------ match

#[test]
fn bad_alarm_priority_is_refused() {
    let e = refused(
        &rule(
            "kind = \"alarm\", alarm_priority = [\"PM\", \"high\"]",
            HOSP,
        ),
        "rules[0].match.alarm_priority[1]",
        "`high` is not an IHE PCD ACM alarm priority",
    );
    assert_eq!(e.line, Some(3));
    // Codes are case-insensitive.
    accepted(&rule(
        "kind = \"alarm\", alarm_priority = [\"pm\", \"PL\"]",
        HOSP,
    ));
}

#[test]
fn during_bad_timezone_is_refused() {
    let e = refused(
        &rule(
            "during = [{ timezone = \"America/Nowhere\", from = \"22:00\", to = \"07:00\" }]",
            HOSP,
        ),
        "rules[0].match.during[0].timezone",
        "`America/Nowhere` is not an IANA time zone",
    );
    assert_eq!(e.line, Some(3));
}

#[test]
fn during_missing_timezone_is_refused() {
    refused(
        &rule("during = [{ from = \"22:00\", to = \"07:00\" }]", HOSP),
        "rules[0].match.during[0].timezone",
        "required: an IANA time zone",
    );
}

#[test]
fn during_bad_day_is_refused() {
    refused(
        &rule(
            "during = [{ timezone = \"UTC\", days = [\"mon\", \"funday\"] }]",
            HOSP,
        ),
        "rules[0].match.during[0].days[1]",
        "`funday` is not a day",
    );
}

#[test]
fn during_day_listed_twice_is_refused() {
    refused(
        &rule(
            "during = [{ timezone = \"UTC\", days = [\"mon\", \"Monday\"] }]",
            HOSP,
        ),
        "rules[0].match.during[0].days[1]",
        "listed twice",
    );
}

#[test]
fn during_empty_days_is_refused() {
    refused(
        &rule("during = [{ timezone = \"UTC\", days = [] }]", HOSP),
        "rules[0].match.during[0].days",
        "at least one day",
    );
}

#[test]
fn during_bad_time_is_refused() {
    let text = rule(
        "during = [{ timezone = \"UTC\", from = \"25:00\", to = \"7pm\" }]",
        HOSP,
    );
    refused(
        &text,
        "rules[0].match.during[0].from",
        "`25:00` is not a local time",
    );
    refused(
        &text,
        "rules[0].match.during[0].to",
        "`7pm` is not a local time",
    );
}

#[test]
fn during_from_equal_to_to_is_refused() {
    refused(
        &rule(
            "during = [{ timezone = \"UTC\", from = \"07:00\", to = \"07:00\" }]",
            HOSP,
        ),
        "rules[0].match.during[0].to",
        "equals `from`",
    );
}

#[test]
fn during_from_without_to_is_refused() {
    refused(
        &rule("during = [{ timezone = \"UTC\", from = \"07:00\" }]", HOSP),
        "rules[0].match.during[0].to",
        "required with `from`",
    );
    refused(
        &rule("during = [{ timezone = \"UTC\", to = \"07:00\" }]", HOSP),
        "rules[0].match.during[0].from",
        "required with `to`",
    );
}

#[test]
fn during_unknown_field_is_refused() {
    let e = errors(&rule(
        "during = [{ timezone = \"UTC\", form = \"07:00\", to = \"08:00\" }]",
        HOSP,
    ));
    assert!(
        e.iter().any(|e| e.problem.contains("unknown field `form`")),
        "{e:?}"
    );
}

// ------------------------------------------------------------ route

#[test]
fn dedup_keep_bad_value_is_refused() {
    refused(
        &rule(
            "kind = \"admit\"",
            "role = \"hospitalist\", escalation = \"p\", dedup_window_secs = 60, dedup_keep = \"last\"",
        ),
        "rules[0].route.dedup_keep",
        "`last` is not \"first\" or \"latest\"",
    );
}

#[test]
fn dedup_keep_without_dedup_window_is_refused() {
    refused(
        &rule(
            "kind = \"admit\"",
            "role = \"hospitalist\", escalation = \"p\", dedup_keep = \"first\"",
        ),
        "rules[0].route.dedup_keep",
        "only meaningful with `dedup_window_secs`",
    );
}

#[test]
fn delay_secs_zero_is_refused() {
    refused(
        &rule(
            "kind = \"alarm\", alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 0, clear = \"alarm-end\"",
        ),
        "rules[0].route.delay_secs",
        "at least 1",
    );
}

#[test]
fn delay_secs_above_the_maximum_is_refused() {
    refused(
        &rule(
            "kind = \"alarm\", alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 601, clear = \"alarm-end\"",
        ),
        "rules[0].route.delay_secs",
        "at most 600",
    );
    let r = accepted(&rule(
        "kind = \"alarm\", alarm_priority = \"PL\"",
        "role = \"hospitalist\", escalation = \"p\", delay_secs = 600, clear = \"alarm-end\"",
    ));
    assert_eq!(
        r.rules()[0].route.hold.map(|h| h.window.as_secs()),
        Some(MAX_DELAY_SECS)
    );
    // Far beyond any calendar: saturates, never panics.
    let hold = Hold {
        window: std::time::Duration::from_secs(u64::MAX),
        clear: ClearOn::AlarmEnd,
    };
    assert_eq!(
        hold.release_at(super::tests::at()),
        chrono::DateTime::<chrono::Utc>::MAX_UTC
    );
}

#[test]
fn delay_without_clear_is_refused() {
    refused(
        &rule(
            "kind = \"alarm\", alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30",
        ),
        "rules[0].route.delay_secs",
        "give `clear`",
    );
}

#[test]
fn clear_without_delay_is_refused() {
    refused(
        &rule(
            "kind = \"alarm\", alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", clear = \"alarm-end\"",
        ),
        "rules[0].route.clear",
        "only meaningful with `delay_secs`",
    );
}

#[test]
fn clear_bad_value_is_refused() {
    refused(
        &rule(
            "kind = \"alarm\", alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30, clear = \"silence\"",
        ),
        "rules[0].route.clear",
        "`silence` is not \"alarm-end\"",
    );
}

#[test]
fn alarm_end_on_a_rule_matching_other_kinds_is_refused() {
    refused(
        &rule(
            "kind = [\"alarm\", \"order\"]",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30, clear = \"alarm-end\"",
        ),
        "rules[0].route.clear",
        "`alarm-end` only cancels alarms, but the rule can also match order",
    );
    refused(
        &rule(
            "codes = [\"MDC|196648\"]",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30, clear = \"alarm-end\"",
        ),
        "rules[0].route.clear",
        "any kind",
    );
    // alarm_priority restricts a rule to alarms: `order` can never match.
    accepted(&rule(
        "kind = [\"alarm\", \"order\"], alarm_priority = \"PL\"",
        "role = \"hospitalist\", priority = \"urgent\", escalation = \"p\", delay_secs = 30, clear = \"alarm-end\"",
    ));
}

#[test]
fn order_cancel_on_a_rule_matching_other_kinds_is_refused() {
    refused(
        &rule(
            "kind = [\"result\", \"admit\"], flags = [\"H\"]",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30, clear = \"order-cancel\"",
        ),
        "rules[0].route.clear",
        "can also match admit",
    );
    refused(
        &rule(
            "alarm_priority = \"PL\"",
            "role = \"hospitalist\", escalation = \"p\", delay_secs = 30, clear = \"order-cancel\"",
        ),
        "rules[0].route.clear",
        "can also match alarm",
    );
}

#[test]
fn census_unit_scope_needs_an_unscoped_role() {
    refused(
        &rule(
            "kind = \"alarm\"",
            "role = \"charge-nurse\", scope = \"census-unit\", escalation = \"p\"",
        ),
        "rules[0].route.role",
        "only defined for units ICU",
    );
    accepted(&rule(
        "kind = \"alarm\"",
        "role = \"hospitalist\", scope = \"census-unit\", escalation = \"p\"",
    ));
}

// ------------------------------------------------------------ clinical safety

/// Each way a rule can match a critical result.
const CRITICAL_RESULT_MATCHES: &[(&str, &str, &str)] = &[
    ("kind = \"result\"", "urgent", "no `flags` criterion"),
    ("", "urgent", "no `kind` criterion"),
    (
        "kind = \"result\", flags = [\"H\", \"LL\"]",
        "urgent",
        "critical flag `LL`",
    ),
    (
        "kind = \"result\", flags = [\">\"]",
        "urgent",
        "critical flag `>`",
    ),
    (
        "kind = \"result\", flags = [\"H\"]",
        "stat",
        "route priority is stat",
    ),
    (
        "kind = \"result\", flags = [\"H\"], priority_at_least = \"stat\"",
        "urgent",
        "STAT results",
    ),
];

/// Each way a rule can match a high-priority alarm.
const HIGH_ALARM_MATCHES: &[(&str, &str, &str)] = &[
    (
        "kind = \"alarm\"",
        "urgent",
        "no `alarm_priority` criterion",
    ),
    (
        "kind = \"alarm\", alarm_priority = [\"PM\", \"PH\"]",
        "urgent",
        "lists PH",
    ),
    (
        "kind = \"alarm\", alarm_priority = [\"PM\"]",
        "stat",
        "route priority is stat",
    ),
    (
        "kind = \"alarm\", alarm_priority = [\"PL\"]",
        "asap",
        "route priority is asap",
    ),
];

fn check_refusals(cases: &[(&str, &str, &str)], extra: &str, field: &str, says: &str, what: &str) {
    for (matcher, priority, why) in cases {
        let text = rule(
            matcher,
            &format!(
                "role = \"hospitalist\", priority = \"{priority}\", escalation = \"p\", {extra}"
            ),
        );
        let e = refused(&text, &format!("rules[0].route.{field}"), says);
        assert!(e.problem.contains(what), "{matcher}: {e}");
        assert!(e.problem.contains(why), "{matcher}: {e}");
    }
}

#[test]
fn delay_on_a_critical_result_is_refused() {
    check_refusals(
        CRITICAL_RESULT_MATCHES,
        "delay_secs = 30, clear = \"order-cancel\"",
        "delay_secs",
        "delay-then-cancel is refused",
        "critical result",
    );
    // With the position of the field.
    let text = "[[rules]]\nname = \"k\"\n[rules.match]\nkind = \"result\"\n[rules.route]\nrole = \"hospitalist\"\nescalation = \"p\"\ndelay_secs = 30\nclear = \"order-cancel\"\n"
        .to_string()
        + POLICY;
    let e = refused(&text, "rules[0].route.delay_secs", "critical result");
    assert_eq!((e.line, e.column), (Some(8), Some(14)));
}

#[test]
fn storm_collapse_on_a_critical_result_is_refused() {
    check_refusals(
        CRITICAL_RESULT_MATCHES,
        "group_window_secs = 60",
        "group_window_secs",
        "storm collapse is refused",
        "critical result",
    );
}

#[test]
fn dedup_to_latest_on_a_critical_result_is_refused() {
    check_refusals(
        CRITICAL_RESULT_MATCHES,
        "dedup_window_secs = 60, dedup_keep = \"latest\"",
        "dedup_keep",
        "dedup_keep = \"latest\" is refused",
        "critical result",
    );
    // "first" is allowed: the first critical alert is kept.
    accepted(&rule(
        "kind = \"result\", flags = [\"HH\"]",
        "role = \"hospitalist\", priority = \"stat\", escalation = \"p\", dedup_window_secs = 60, dedup_keep = \"first\"",
    ));
}

#[test]
fn delay_on_a_high_priority_alarm_is_refused() {
    check_refusals(
        HIGH_ALARM_MATCHES,
        "delay_secs = 30, clear = \"alarm-end\"",
        "delay_secs",
        "delay-then-cancel is refused",
        "high-priority alarm",
    );
}

#[test]
fn storm_collapse_on_a_high_priority_alarm_is_refused() {
    check_refusals(
        HIGH_ALARM_MATCHES,
        "group_window_secs = 60",
        "group_window_secs",
        "storm collapse is refused",
        "high-priority alarm",
    );
}

#[test]
fn dedup_to_latest_on_a_high_priority_alarm_is_refused() {
    check_refusals(
        HIGH_ALARM_MATCHES,
        "dedup_window_secs = 60, dedup_keep = \"latest\"",
        "dedup_keep",
        "dedup_keep = \"latest\" is refused",
        "high-priority alarm",
    );
}

#[test]
fn rules_that_cannot_match_critical_events_may_hold_group_and_keep_latest() {
    let r = accepted(&format!(
        r#"
[[rules]]
name = "abnormal"
match = {{ kind = ["result", "order"], flags = ["H", "L", "A"] }}
route = {{ role = "hospitalist", priority = "urgent", escalation = "p", delay_secs = 30, clear = "order-cancel", group_window_secs = 60, dedup_window_secs = 60, dedup_key = ["order"], dedup_keep = "latest" }}
[[rules]]
name = "low-alarm"
match = {{ alarm_priority = ["PM", "PL", "PN"] }}
route = {{ role = "hospitalist", priority = "urgent", escalation = "p", delay_secs = 30, clear = "alarm-end", group_window_secs = 60, dedup_window_secs = 60, dedup_keep = "latest" }}
[[rules]]
name = "admissions"
match = {{ kind = "admit" }}
route = {{ role = "hospitalist", priority = "stat", escalation = "p", group_window_secs = 60, dedup_window_secs = 60, dedup_keep = "latest" }}
{POLICY}"#
    ));
    assert_eq!(r.rules().len(), 3);
    assert!(r.rules()[0].route.hold.is_some());
    assert_eq!(r.rules()[1].route.dedup_keep, DedupKeep::Latest);
}

// ------------------------------------------------------------ test messages

#[test]
fn allow_test_without_test_destination_is_refused() {
    let e = refused(
        &rule("kind = \"result\", allow_test = true", HOSP),
        "rules[0].match.allow_test",
        "a production recipient",
    );
    assert_eq!(e.line, Some(3));
}

#[test]
fn test_destination_without_allow_test_is_refused() {
    refused(
        &rule(
            "kind = \"result\"",
            "person = \"dr-x\", test_destination = true",
        ),
        "rules[0].route.test_destination",
        "set `allow_test = true`",
    );
}

#[test]
fn test_destination_to_a_relation_is_refused() {
    refused(
        &rule(
            "kind = \"result\", allow_test = true",
            "relation = \"attending\", test_destination = true",
        ),
        "rules[0].route.relation",
        "care-team relation is always the patient's real clinicians",
    );
}

#[test]
fn test_destination_with_escalation_is_refused() {
    refused(
        &rule(
            "kind = \"result\", allow_test = true",
            "role = \"hospitalist\", test_destination = true, escalation = \"p\"",
        ),
        "rules[0].route.escalation",
        "a test destination is not escalated",
    );
}

#[test]
fn test_destination_with_reroutes_is_refused() {
    let text = "[[rules]]\nname = \"t\"\nmatch = { allow_test = true }\nroute = { person = \"dr-x\", test_destination = true }\n[[rules.reroute]]\nwhen = \"discharged\"\nrole = \"house-supervisor\"\n";
    let e = refused(text, "rules[0].reroute", "cannot re-route");
    assert_eq!(e.line, Some(5));
}

#[test]
fn test_policy_name_is_reserved() {
    refused(
        "[escalations.test-only]\ntiers = [{ route = true }, { failsafe = true }]\n",
        "escalations.test-only",
        "built-in policy of test-destination routes",
    );
}

// ------------------------------------------------------------ re-routes

fn with_reroute(route: &str, reroute: &str) -> String {
    format!(
        "[[rules]]\nname = \"r\"\nmatch = {{ kind = \"alarm\" }}\nroute = {{ {route} }}\n{reroute}\n{POLICY}"
    )
}

const TO_HOSPITALIST: &str = "role = \"hospitalist\", scope = \"unit\", escalation = \"p\"";

#[test]
fn reroute_without_when_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nrole = \"house-supervisor\"",
        ),
        "rules[0].reroute[0].when",
        "required: the census condition",
    );
}

#[test]
fn reroute_unknown_condition_is_refused() {
    let e = refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"deceased\"\nrole = \"house-supervisor\"",
        ),
        "rules[0].reroute[0].when",
        "`deceased` is not a re-route condition",
    );
    assert_eq!((e.line, e.column), (Some(6), Some(8)));
}

#[test]
fn reroute_condition_listed_twice_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"moved\"\nscope = \"census-unit\"\n[[rules.reroute]]\nwhen = \"moved\"\nrole = \"house-supervisor\"",
        ),
        "rules[0].reroute[1].when",
        "already handled by reroute[0]",
    );
}

#[test]
fn reroute_needs_exactly_one_target() {
    refused(
        &with_reroute(TO_HOSPITALIST, "[[rules.reroute]]\nwhen = \"moved\""),
        "rules[0].reroute[0]",
        "give exactly one new target",
    );
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"moved\"\nrole = \"house-supervisor\"\nperson = \"dr-x\"",
        ),
        "rules[0].reroute[0]",
        "give exactly one new target",
    );
}

#[test]
fn reroute_to_unknown_role_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"discharged\"\nrole = \"monitor-tech\"",
        ),
        "rules[0].reroute[0].role",
        "unknown role `monitor-tech`",
    );
}

#[test]
fn reroute_to_unknown_person_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"discharged\"\nperson = \"nobody\"",
        ),
        "rules[0].reroute[0].person",
        "unknown person `nobody`",
    );
}

#[test]
fn reroute_to_unknown_relation_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"moved\"\nrelation = \"cousin\"",
        ),
        "rules[0].reroute[0].relation",
        "`cousin` is not a care-team relation",
    );
}

#[test]
fn reroute_scope_alone_needs_a_role_route() {
    refused(
        &with_reroute(
            "person = \"dr-x\", escalation = \"p\"",
            "[[rules.reroute]]\nwhen = \"moved\"\nscope = \"census-unit\"",
        ),
        "rules[0].reroute[0].scope",
        "the route has no `role`",
    );
}

#[test]
fn reroute_scope_unit_alone_is_refused() {
    refused(
        &with_reroute(
            TO_HOSPITALIST,
            "[[rules.reroute]]\nwhen = \"moved\"\nscope = \"unit\"",
        ),
        "rules[0].reroute[0].scope",
        "which the route already uses",
    );
}

#[test]
fn reroute_scope_to_a_role_without_unscoped_fallback_is_refused() {
    // The test rosters define charge-nurse for ICU only.
    refused(
        &with_reroute(
            "role = \"charge-nurse\", scope = \"ICU\", escalation = \"p\"",
            "[[rules.reroute]]\nwhen = \"moved\"\nscope = \"census-unit\"",
        ),
        "rules[0].reroute[0].scope",
        "only defined for units ICU",
    );
    // A unit that exists is fine.
    accepted(&with_reroute(
        "role = \"charge-nurse\", scope = \"ICU\", escalation = \"p\"",
        "[[rules.reroute]]\nwhen = \"discharged\"\nrole = \"house-supervisor\"",
    ));
}

#[test]
fn reroute_unknown_field_is_refused() {
    let e = errors(&with_reroute(
        TO_HOSPITALIST,
        "[[rules.reroute]]\nwhen = \"moved\"\nrole = \"house-supervisor\"\ndrop = true",
    ));
    assert!(
        e.iter().any(|e| e.problem.contains("unknown field `drop`")),
        "{e:?}"
    );
}
