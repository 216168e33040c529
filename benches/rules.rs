//! Rule evaluation and on-call resolution: routing one event through 1,000
//! generated rules (first match at the end, no match, and `continue` with
//! 100 matches, some with `during` windows), `Rosters::on_call` at random
//! instants (rotations, a weekend layer, overrides, night shifts, New York
//! time with its DST transitions), and `Rosters::coverage_gaps` over 14 days.
//!
//! `cargo bench --bench rules`

use std::hint::black_box;
use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard::event::{
    ClinicalEvent, Code, EventKind, Identifier, Location, Observation, Order, Patient, Priority,
    Processing, ResultStatus, SourceRef,
};
use switchboard::roster::{self, Rosters};
use switchboard::rules::{self, Decision, RouteContext, Rules};

const RULES: usize = 1000;

/// Hospitalists: a weekly rotation of four, a weekend layer, 52 overrides.
/// ICU charge nurses: day and night shifts, 26 overrides. Radiology: weekday
/// office hours only (coverage gaps every night and weekend).
fn rosters() -> Rosters {
    let mut hosp = String::from(
        r#"
name = "hospitalist"
timezone = "America/New_York"
[[roles]]
name = "hospitalist"
[[roles]]
name = "house-supervisor"
[[rotations]]
role = "hospitalist"
members = ["h0", "h1", "h2", "h3"]
start = "2026-01-05T07:00"
length_days = 7
[[rotations]]
role = "hospitalist"
members = ["h4", "h5"]
start = "2026-01-03T07:00"
length_days = 1
weekdays = ["sat", "sun"]
layer = 1
[[rotations]]
role = "house-supervisor"
members = ["s0", "s1"]
start = "2026-01-01T07:00"
length_hours = 12
[failsafe]
member = "s0"
"#,
    );
    for m in ["h0", "h1", "h2", "h3", "h4", "h5", "s0", "s1"] {
        hosp.push_str(&format!(
            "[[members]]\nid = \"{m}\"\ncontacts = {{ matrix = \"@{m}:localhost\" }}\n"
        ));
    }
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 6).expect("date");
    for w in 0..52 {
        let d = start + Duration::days(7 * w + 1);
        hosp.push_str(&format!(
            "[[overrides]]\nrole = \"hospitalist\"\nmember = \"h{}\"\nstart = \"{}T19:00\"\nend = \"{}T07:00\"\nreason = \"swap\"\n",
            w % 4,
            d,
            d + Duration::days(1)
        ));
    }
    let mut icu = String::from(
        r#"
name = "icu"
timezone = "America/New_York"
[[members]]
id = "rn-day"
contacts = { matrix = "@rn-day:localhost" }
[[members]]
id = "rn-night"
contacts = { matrix = "@rn-night:localhost" }
[[roles]]
name = "charge-nurse"
scope = "ICU"
[[shifts]]
role = "charge-nurse"
member = "rn-day"
from = "07:00"
to = "19:00"
[[shifts]]
role = "charge-nurse"
member = "rn-night"
from = "19:00"
to = "07:00"
[failsafe]
role = "house-supervisor"
"#,
    );
    for w in 0..26 {
        let d = start + Duration::days(14 * w + 3);
        icu.push_str(&format!(
            "[[overrides]]\nrole = \"charge-nurse\"\nmember = \"rn-day\"\nstart = \"{d}T19:00\"\nend = \"{}T07:00\"\n",
            d + Duration::days(1)
        ));
    }
    let radiology = r#"
name = "radiology"
timezone = "America/New_York"
[[members]]
id = "rad"
contacts = { matrix = "@rad:localhost" }
[[roles]]
name = "radiologist"
[[shifts]]
role = "radiologist"
member = "rad"
from = "08:00"
to = "17:00"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
[failsafe]
role = "house-supervisor"
"#;
    roster::load_files(&[
        (PathBuf::from("hospitalist.toml"), hosp),
        (PathBuf::from("icu.toml"), icu),
        (PathBuf::from("radiology.toml"), radiology.to_string()),
    ])
    .unwrap_or_else(|e| panic!("{e:?}"))
}

/// A rule that fails on the bench event, at one of several criteria.
fn miss(i: usize, cont: bool) -> String {
    let m = match i % 5 {
        0 => "kind = \"admit\"".to_string(),
        1 => format!("kind = \"result\", sender = [\"ris-{i}\"]"),
        2 => format!(
            "kind = \"result\", codes = [\"LN|{i}-0\", \"LN|{i}-1\"], flags = [\"HH\", \"LL\"]"
        ),
        3 => format!("kind = \"result\", units = [\"W{i}*\", \"T{i}?\"]"),
        _ => format!(
            "kind = \"result\", codes = [\"LN|2823-3\"], flags = [\"HH\"], facilities = [\"CLINIC-{i}\"]"
        ),
    };
    format!(
        "[[rules]]\nname = \"miss-{i}\"\ncontinue = {cont}\nmatch = {{ {m} }}\nroute = {{ role = \"hospitalist\", priority = \"stat\" }}\n"
    )
}

/// A rule that matches the bench event; every other one through a `during`
/// window that holds at the bench instant.
fn hit(i: usize, cont: bool) -> String {
    let during = if i.is_multiple_of(2) {
        ", during = [{ timezone = \"America/New_York\", days = [\"tue\"], from = \"22:00\", to = \"07:00\" }, \
         { timezone = \"America/New_York\", from = \"07:00\", to = \"19:00\" }]"
    } else {
        ""
    };
    format!(
        "[[rules]]\nname = \"hit-{i}\"\ncontinue = {cont}\nmatch = {{ kind = \"result\", codes = [\"LN|2823-3\"], flags = [\"HH\", \"LL\"], units = [\"ICU*\"]{during} }}\n\
         route = {{ role = \"charge-nurse\", scope = \"ICU\", priority = \"stat\", dedup_window_secs = 300, dedup_key = [\"patient\", \"code\"] }}\n"
    )
}

fn load(text: String, rosters: &Rosters) -> Rules {
    rules::load_files(&[(PathBuf::from("bench.toml"), text)], rosters)
        .unwrap_or_else(|e| panic!("{}", e[0]))
}

fn event() -> ClinicalEvent {
    let obs = |code: &str, flag: &str| Observation {
        set_id: "1".into(),
        value_type: "NM".into(),
        code: Code {
            code: code.into(),
            text: String::new(),
            system: "LN".into(),
        },
        sub_id: String::new(),
        values: vec!["6.9".into()],
        units: None,
        reference_range: String::new(),
        flags: vec![flag.into()],
        status: ResultStatus::Final,
        observed_at: None,
    };
    ClinicalEvent {
        kind: EventKind::Result,
        source: SourceRef {
            sender: "lab".into(),
            message_type: "ORU".into(),
            trigger: "R01".into(),
            control_id: "B1".into(),
            index: 0,
        },
        processing: Processing::Production,
        occurred_at: None,
        patient: Patient {
            identifiers: vec![Identifier {
                value: "MRN1".into(),
                authority: "HOSP".into(),
                type_code: "MR".into(),
            }],
            ..Patient::default()
        },
        location: Some(Location {
            facility: "HOSP".into(),
            unit: "ICU".into(),
            room: "101".into(),
            bed: "A".into(),
        }),
        prior_location: None,
        patient_class: "I".into(),
        visit: None,
        providers: Vec::new(),
        priority: Priority::Routine,
        order: Some(Order {
            service: Code {
                code: "24323-8".into(),
                text: String::new(),
                system: "LN".into(),
            },
            placer_id: "PL1".into(),
            result_status: "F".into(),
            ..Order::default()
        }),
        observations: vec![
            obs("2951-2", "N"),
            obs("2075-0", "N"),
            obs("2028-9", "N"),
            obs("3094-0", "N"),
            obs("2160-0", "N"),
            obs("2345-7", "H"),
            obs("2823-3", "HH"),
        ],
        alarm: None,
        merged_identifiers: Vec::new(),
        notes: Vec::new(),
    }
}

fn routes(d: &Decision) -> usize {
    match d {
        Decision::Routed { routes, .. } => routes.len(),
        _ => 0,
    }
}

fn bench_rules(c: &mut Criterion) {
    let rosters = rosters();
    // Tuesday 2026-03-10 11:00 EDT: inside the 07:00-19:00 window.
    let at = Utc.with_ymd_and_hms(2026, 3, 10, 15, 0, 0).unwrap();
    let ctx = RouteContext::new(at);
    let ev = event();

    let last: String =
        (0..RULES - 1).map(|i| miss(i, false)).collect::<String>() + hit(RULES, false).as_str();
    let none: String = (0..RULES).map(|i| miss(i, false)).collect();
    let cont: String = (0..RULES)
        .map(|i| {
            if i % 10 == 9 {
                hit(i, true)
            } else {
                miss(i, true)
            }
        })
        .collect();
    let (last, none, cont) = (
        load(last, &rosters),
        load(none, &rosters),
        load(cont, &rosters),
    );
    assert_eq!(last.rules().len(), RULES);
    assert_eq!(routes(&last.route_in(&ev, &ctx)), 1);
    assert_eq!(routes(&none.route_in(&ev, &ctx)), 0);
    assert_eq!(routes(&cont.route_in(&ev, &ctx)), RULES / 10);

    let mut g = c.benchmark_group("route_1000_rules");
    g.bench_function("first_match_last", |b| {
        b.iter(|| black_box(last.route_in(black_box(&ev), &ctx)))
    });
    g.bench_function("no_match", |b| {
        b.iter(|| black_box(none.route_in(black_box(&ev), &ctx)))
    });
    g.bench_function("continue_100_matches", |b| {
        b.iter(|| black_box(cont.route_in(black_box(&ev), &ctx)))
    });
    g.bench_function("explain_first_match_last", |b| {
        b.iter(|| black_box(last.explain_in(black_box(&ev), &ctx)))
    });
    g.finish();
}

fn instants(n: usize) -> Vec<DateTime<Utc>> {
    let mut rng = StdRng::seed_from_u64(7);
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let end = Utc
        .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    (0..n)
        .map(|_| DateTime::<Utc>::from_timestamp(rng.random_range(start..end), 0).expect("instant"))
        .collect()
}

fn bench_rosters(c: &mut Criterion) {
    let rosters = rosters();
    let at = instants(4096);
    for t in &at {
        assert!(!rosters.on_call("hospitalist", None, *t).is_empty());
    }
    let mut g = c.benchmark_group("roster");
    for (name, role, scope) in [
        ("on_call_hospitalist", "hospitalist", None),
        ("on_call_icu_charge_nurse", "charge-nurse", Some("ICU")),
    ] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % at.len();
                black_box(rosters.on_call(role, scope, at[i]))
            })
        });
    }
    // Two weeks across the spring-forward transition (2026-03-08).
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 5, 0, 0).unwrap();
    let to = from + Duration::days(14);
    let gaps = rosters.coverage_gaps(from, to).len();
    assert!(gaps >= 10, "radiology leaves a gap every night: {gaps}");
    g.bench_function("coverage_gaps_14_days", |b| {
        b.iter(|| black_box(rosters.coverage_gaps(black_box(from), black_box(to))))
    });
    g.finish();
}

criterion_group!(benches, bench_rules, bench_rosters);
criterion_main!(benches);
