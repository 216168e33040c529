//! Roster loading, validation errors and resolution (the DST sweep lives in
//! `dst_tests`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

pub(super) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

pub(super) fn load(files: &[(&str, &str)]) -> Rosters {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    match load_files(&files) {
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

fn errors(text: &str) -> Vec<ConfigError> {
    match load_files(&[(PathBuf::from("r.toml"), text.to_string())]) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

/// The one error whose field is `field`, with its position.
fn error_at(errs: &[ConfigError], field: &str) -> ConfigError {
    errs.iter()
        .find(|e| e.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("no error at `{field}` in {errs:#?}"))
}

fn ids(v: &[OnCall]) -> Vec<&str> {
    v.iter().map(|o| o.member.id.as_str()).collect()
}

const MEMBERS: &str = r#"
[[members]]
id = "a"
display = "A"
contacts = { matrix = "@a:localhost" }
ids = [{ value = "111", authority = "NPI" }]

[[members]]
id = "b"
contacts = { pager = "222" }

[[members]]
id = "c"
contacts = { webhook = "http://127.0.0.1:9/c" }
"#;

fn roster(body: &str) -> String {
    format!(
        "name = \"t\"\ntimezone = \"America/New_York\"\n{MEMBERS}\n[failsafe]\nmember = \"c\"\n{body}"
    )
}

const DAY_NIGHT: &str = r#"
[[roles]]
name = "nurse"

[[shifts]]
role = "nurse"
member = "a"
from = "07:00"
to = "19:00"

[[shifts]]
role = "nurse"
member = "b"
from = "19:00"
to = "07:00"
"#;

#[test]
fn demo_rosters_load_and_cover_2026() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rosters"));
    let r = load_dir(dir).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(r.rosters().len() >= 2);
    let gaps = r.coverage_gaps(utc("2026-01-05T12:00:00Z"), utc("2028-01-01T00:00:00Z"));
    assert!(
        gaps.is_empty(),
        "{:#?}",
        gaps.iter().map(|g| g.to_string()).collect::<Vec<_>>()
    );
    for role in ["hospitalist", "house-supervisor", "charge-nurse"] {
        let who = r.on_call(role, Some("ICU"), utc("2026-03-08T07:30:00Z"));
        assert_eq!(who.len(), 1, "{role}: {who:?}");
        assert!(!who[0].failsafe);
        assert!(!who[0].member.contacts.is_empty());
    }
}

#[test]
fn tzdata_version_is_pinned() {
    // A new tzdata changes DST rules (Casablanca, Santiago ... change often):
    // bump this on purpose and re-read the DST tests' expectations.
    assert_eq!(TZDB_VERSION, "2025b");
    assert_eq!(chrono_tz::IANA_TZDB_VERSION, "2025b");
}

#[test]
fn day_night_shifts_resolve_with_contacts_and_source() {
    let r = load(&[("t.toml", &roster(DAY_NIGHT))]);
    let day = r.on_call("nurse", None, utc("2026-06-01T15:00:00Z")); // 11:00 EDT
    assert_eq!(ids(&day), ["a"]);
    assert_eq!(day[0].via, Via::Shift(0));
    assert_eq!(day[0].member.contacts["matrix"], "@a:localhost");
    assert_eq!(day[0].member.display, "A");
    assert_eq!(
        day[0].span,
        Some(Span {
            start: utc("2026-06-01T11:00:00Z"),
            end: utc("2026-06-01T23:00:00Z")
        })
    );
    // Hand-off instant belongs to the incoming person.
    assert_eq!(
        ids(&r.on_call("nurse", None, utc("2026-06-01T23:00:00Z"))),
        ["b"]
    );
    assert_eq!(
        ids(&r.on_call("nurse", None, utc("2026-06-01T22:59:59Z"))),
        ["a"]
    );
    // Member display defaults to the id.
    assert_eq!(r.member("b").map(|m| m.display.as_str()), Some("b"));
    assert!(
        r.on_call("nobody", None, utc("2026-06-01T15:00:00Z"))
            .is_empty()
    );
}

#[test]
fn scoped_roles_prefer_the_unit_then_fall_back() {
    let icu = r#"
name = "icu"
timezone = "Europe/Berlin"
[[members]]
id = "icu-rn"
contacts = { matrix = "@icu:localhost" }
[[roles]]
name = "charge-nurse"
scope = "ICU"
[[rotations]]
role = "charge-nurse"
members = ["icu-rn"]
start = "2026-01-01T00:00"
length_days = 1
[failsafe]
member = "icu-rn"
"#;
    let house = r#"
name = "house"
timezone = "Europe/Berlin"
[[members]]
id = "house-rn"
contacts = { matrix = "@house:localhost" }
[[roles]]
name = "charge-nurse"
[[rotations]]
role = "charge-nurse"
members = ["house-rn"]
start = "2026-01-01T00:00"
length_days = 1
[failsafe]
member = "house-rn"
"#;
    let r = load(&[("icu.toml", icu), ("house.toml", house)]);
    let at = utc("2026-05-01T10:00:00Z");
    assert_eq!(ids(&r.on_call("charge-nurse", Some("ICU"), at)), ["icu-rn"]);
    assert_eq!(ids(&r.on_call("charge-nurse", Some("icu"), at)), ["icu-rn"]);
    assert_eq!(
        ids(&r.on_call("charge-nurse", Some("4W"), at)),
        ["house-rn"]
    );
    assert_eq!(ids(&r.on_call("charge-nurse", None, at)), ["house-rn"]);
    assert_eq!(r.role_scopes("charge-nurse"), vec![None, Some("ICU")]);
    assert!(r.has_role("charge-nurse", Some("ER")));
}

#[test]
fn overrides_replace_and_may_cross_a_transition() {
    // 2026-03-08 00:00–06:00 New York spans the 02:00→03:00 gap: 5 real hours.
    let body = format!(
        "{DAY_NIGHT}\n[[overrides]]\nrole = \"nurse\"\nmember = \"c\"\nstart = \"2026-03-08T00:00\"\nend = \"2026-03-08T06:00\"\nreason = \"swap\"\n"
    );
    let r = load(&[("t.toml", &roster(&body))]);
    assert_eq!(
        ids(&r.on_call("nurse", None, utc("2026-03-08T04:59:59Z"))),
        ["b"]
    );
    let o = r.on_call("nurse", None, utc("2026-03-08T05:00:00Z"));
    assert_eq!(ids(&o), ["c"]);
    assert_eq!(o[0].via, Via::Override(0));
    assert!(!o[0].failsafe);
    assert_eq!(
        ids(&r.on_call("nurse", None, utc("2026-03-08T09:59:59Z"))),
        ["c"]
    );
    assert_eq!(
        ids(&r.on_call("nurse", None, utc("2026-03-08T10:00:00Z"))),
        ["b"]
    );
    let spans = r.shifts_between(
        "nurse",
        None,
        utc("2026-03-08T04:00:00Z"),
        utc("2026-03-08T12:00:00Z"),
    );
    let summary: Vec<(String, Via, String)> = spans
        .iter()
        .map(|s| (s.member.id.clone(), s.via, show_length(s.length())))
        .collect();
    assert_eq!(
        summary,
        [
            ("b".to_string(), Via::Shift(1), "5h".to_string()), // 19:00 EST .. 00:00 EST
            ("c".to_string(), Via::Override(0), "5h".to_string()), // 00:00 EST .. 06:00 EDT
            ("b".to_string(), Via::Shift(1), "1h".to_string()), // 06:00 .. 07:00 EDT
            ("a".to_string(), Via::Shift(0), "12h".to_string()),
        ]
    );
    // An override crossing the fold: 2026-11-01 00:00–03:00 is 4 real hours.
    let body = format!(
        "{DAY_NIGHT}\n[[overrides]]\nrole = \"nurse\"\nmember = \"c\"\nstart = \"2026-11-01T00:00\"\nend = \"2026-11-01T03:00\"\n"
    );
    let r = load(&[("t.toml", &roster(&body))]);
    let o = r.on_call("nurse", None, utc("2026-11-01T06:30:00Z")); // 01:30 EST, second pass
    assert_eq!(ids(&o), ["c"]);
    let span = o[0].span.expect("span");
    assert_eq!(span.end - span.start, Duration::hours(4));
}

#[test]
fn failsafe_covers_gaps_and_gaps_are_reported() {
    let body = r#"
[[roles]]
name = "nurse"
[[shifts]]
role = "nurse"
member = "a"
from = "08:00"
to = "16:00"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
"#;
    let r = load(&[("t.toml", &roster(body))]);
    let night = r.on_call("nurse", None, utc("2026-06-02T03:00:00Z"));
    assert_eq!(ids(&night), ["c"]);
    assert!(night[0].failsafe);
    assert_eq!(night[0].via, Via::Failsafe);
    assert!(
        r.scheduled("nurse", None, utc("2026-06-02T03:00:00Z"))
            .is_empty()
    );
    // Monday 2026-06-01 .. Wednesday 00:00 EDT.
    let gaps = r.coverage_gaps(utc("2026-06-01T04:00:00Z"), utc("2026-06-03T04:00:00Z"));
    let g: Vec<(String, String)> = gaps
        .iter()
        .map(|g| {
            (
                g.start_local.format("%a %H:%M %Z").to_string(),
                g.end_local.format("%a %H:%M %Z").to_string(),
            )
        })
        .collect();
    assert_eq!(
        g,
        [
            ("Mon 00:00 EDT".into(), "Mon 08:00 EDT".into()),
            ("Mon 16:00 EDT".into(), "Tue 08:00 EDT".into()),
            ("Tue 16:00 EDT".into(), "Wed 00:00 EDT".into()),
        ]
    );
    assert_eq!(gaps[0].start, utc("2026-06-01T04:00:00Z"));
    assert_eq!(gaps[0].failsafe, "failsafe member `c`");
    assert!(
        gaps[0].to_string().contains("nobody scheduled"),
        "{}",
        gaps[0]
    );
    // The weekend is all gap.
    let weekend = r.coverage_gaps(utc("2026-06-06T04:00:00Z"), utc("2026-06-08T04:00:00Z"));
    assert_eq!(weekend.len(), 1);
    assert_eq!(weekend[0].end - weekend[0].start, Duration::hours(48));
}

#[test]
fn failsafe_role_follows_the_chain() {
    let ward = r#"
name = "ward"
timezone = "America/Chicago"
[[members]]
id = "w"
contacts = { matrix = "@w:localhost" }
[[roles]]
name = "ward-nurse"
[failsafe]
role = "supervisor"
"#;
    let sup = r#"
name = "sup"
timezone = "America/Chicago"
[[members]]
id = "s"
contacts = { pager = "1" }
[[members]]
id = "director"
contacts = { pager = "2" }
[[roles]]
name = "supervisor"
[[shifts]]
role = "supervisor"
member = "s"
from = "08:00"
to = "20:00"
[failsafe]
member = "director"
"#;
    let r = load(&[("ward.toml", ward), ("sup.toml", sup)]);
    let day = r.on_call("ward-nurse", None, utc("2026-06-01T15:00:00Z"));
    assert_eq!(ids(&day), ["s"]);
    assert!(day[0].failsafe);
    assert_eq!(day[0].role, "supervisor");
    let night = r.on_call("ward-nurse", None, utc("2026-06-01T05:00:00Z"));
    assert_eq!(ids(&night), ["director"]);
    assert!(night[0].failsafe);
    assert_eq!(
        ids(&r.failsafe("ward-nurse", None, utc("2026-06-01T15:00:00Z"))),
        ["s"]
    );
}

#[test]
fn rotations_hand_off_at_local_time() {
    let body = r#"
[[roles]]
name = "doc"
[[rotations]]
role = "doc"
members = ["a", "b", "c"]
start = "2026-01-05"
handoff = "07:00"
length_days = 7
"#;
    let r = load(&[("t.toml", &roster(body))]);
    // Week 0: a; week 1: b; 2026-03-09 is week 9 -> a (9 mod 3 = 0).
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-05T12:00:00Z"))),
        ["a"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-12T11:59:59Z"))),
        ["a"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-12T12:00:00Z"))),
        ["b"]
    );
    // After spring-forward the 07:00 hand-off is 11:00 UTC.
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-03-09T10:59:59Z"))),
        ["c"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-03-09T11:00:00Z"))),
        ["a"]
    );
    // Before the start: nobody scheduled, failsafe.
    assert!(r.on_call("doc", None, utc("2026-01-01T00:00:00Z"))[0].failsafe);
    // The week spanning the transition is 167 h.
    let w = r.shifts_between(
        "doc",
        None,
        utc("2026-03-04T00:00:00Z"),
        utc("2026-03-04T00:00:01Z"),
    );
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].length(), Duration::hours(167));
    assert_eq!(w[0].nominal, Duration::hours(168));
}

#[test]
fn weekend_rotation_and_weekday_shifts_share_a_role() {
    let body = r#"
[[roles]]
name = "doc"
[[shifts]]
role = "doc"
member = "a"
from = "08:00"
to = "08:00"
weekdays = ["mon"]
"#;
    // `to` equal to `from` is refused (ambiguous 0 h / 24 h).
    let e = errors(&roster(body));
    assert!(error_at(&e, "shifts[0].to").problem.contains("rotation"));

    let body = r#"
[[roles]]
name = "doc"
[[rotations]]
role = "doc"
members = ["a"]
start = "2026-01-05T08:00"
length_days = 1
weekdays = ["mon", "tue", "wed", "thu", "fri"]
[[rotations]]
role = "doc"
members = ["b", "c"]
start = "2026-01-03T08:00"
length_days = 7
weekdays = ["Saturday", "sun"]
"#;
    let r = load(&[("t.toml", &roster(body))]);
    let gaps = r.coverage_gaps(utc("2026-01-05T13:00:00Z"), utc("2027-01-01T00:00:00Z"));
    assert!(gaps.is_empty(), "{gaps:?}");
    // Saturday 2026-01-03 08:00 EST starts b's weekend; Monday 08:00 ends it.
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-04T20:00:00Z"))),
        ["b"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-05T12:59:59Z"))),
        ["b"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-05T13:00:00Z"))),
        ["a"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-10T13:00:00Z"))),
        ["c"]
    );
    let weekend = r.shifts_between(
        "doc",
        None,
        utc("2026-01-10T14:00:00Z"),
        utc("2026-01-10T15:00:00Z"),
    );
    assert_eq!(weekend.len(), 1);
    assert_eq!(weekend[0].length(), Duration::hours(48));
}

#[test]
fn layers_and_allowed_overlaps() {
    let body = r#"
[[roles]]
name = "doc"
[[rotations]]
role = "doc"
members = ["a", "b"]
start = "2026-01-05T07:00"
length_days = 7
[[shifts]]
role = "doc"
member = "c"
from = "12:00"
to = "13:00"
weekdays = ["wed"]
layer = 1
"#;
    let r = load(&[("t.toml", &roster(body))]);
    // Wednesday 2026-01-07 12:30 EST: the layer-1 shift wins.
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-07T17:30:00Z"))),
        ["c"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-07T18:00:00Z"))),
        ["a"]
    );
    let spans = r.shifts_between(
        "doc",
        None,
        utc("2026-01-07T00:00:00Z"),
        utc("2026-01-08T00:00:00Z"),
    );
    let who: Vec<&str> = spans.iter().map(|s| s.member.id.as_str()).collect();
    assert_eq!(who, ["a", "c", "a"]);

    let overlapping = body.replace("layer = 1", "layer = 0");
    let e = errors(&roster(&overlapping));
    let err = error_at(&e, "shifts[0].role");
    assert!(err.problem.contains("overlaps rotations[0]"), "{err}");
    assert!(
        err.problem.contains("2026-01-07 12:00 America/New_York"),
        "{err}"
    );
    assert!(err.line.is_some() && err.column.is_some(), "{err}");

    let allowed = overlapping.replace("name = \"doc\"", "name = \"doc\"\nallow_overlap = true");
    let r = load(&[("t.toml", &roster(&allowed))]);
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-07T17:30:00Z"))),
        ["a", "c"]
    );

    // Two overrides of one role at once.
    let body = format!(
        "{DAY_NIGHT}\n[[overrides]]\nrole = \"nurse\"\nmember = \"c\"\nstart = \"2026-03-08T00:00\"\nend = \"2026-03-08T06:00\"\n\
         [[overrides]]\nrole = \"nurse\"\nmember = \"a\"\nstart = \"2026-03-08T05:00\"\nend = \"2026-03-08T09:00\"\n"
    );
    let e = errors(&roster(&body));
    assert!(
        error_at(&e, "overrides[1].role")
            .problem
            .contains("overlaps overrides[0]")
    );
}

#[test]
fn overlapping_rotations_are_found_in_a_later_cycle() {
    // Two 3-day rotations of one layer that only collide when their cycles line up.
    let body = r#"
[[roles]]
name = "doc"
[[rotations]]
role = "doc"
members = ["a"]
start = "2026-01-05T07:00"
length_days = 2
end = "2026-01-07T07:00"
[[rotations]]
role = "doc"
members = ["b"]
start = "2026-01-07T07:00"
length_days = 3
"#;
    let r = load(&[("t.toml", &roster(body))]);
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-01-06T12:00:00Z"))),
        ["a"]
    );
    assert_eq!(
        ids(&r.on_call("doc", None, utc("2026-03-06T12:00:00Z"))),
        ["b"]
    );
    let e = errors(&roster(&body.replace("end = \"2026-01-07T07:00\"\n", "")));
    assert!(
        error_at(&e, "rotations[1].role")
            .problem
            .contains("overlaps rotations[0]")
    );
}

#[test]
fn errors_name_file_line_column_and_field() {
    // Unknown field.
    let e = errors(&roster(&format!("{DAY_NIGHT}\nshoe_size = 3\n")));
    assert_eq!(e.len(), 1);
    assert!(e[0].problem.contains("unknown field"), "{}", e[0]);
    assert_eq!(e[0].field, "shoe_size");
    assert!(e[0].line.is_some());
    assert_eq!(e[0].file, PathBuf::from("r.toml"));

    // Bad zone.
    let text = roster(DAY_NIGHT).replace("America/New_York", "America/Gotham");
    let e = errors(&text);
    let z = error_at(&e, "timezone");
    assert_eq!((z.line, z.column), (Some(2), Some(12)));
    assert!(
        z.to_string()
            .starts_with("r.toml:2:12: field `timezone`: `America/Gotham` is not an IANA")
    );

    // Unknown member in a rotation, unknown role in a shift.
    let body = r#"
[[roles]]
name = "doc"
[[rotations]]
role = "doc"
members = ["a", "zed"]
start = "2026-01-05T07:00"
length_days = 7
[[shifts]]
role = "dcotor"
member = "a"
from = "07:00"
to = "19:00"
"#;
    let e = errors(&roster(body));
    let m = error_at(&e, "rotations[0].members[1]");
    assert!(m.problem.contains("unknown member `zed`"), "{m}");
    assert_eq!(m.column, Some(17));
    let r = error_at(&e, "shifts[0].role");
    assert!(r.problem.contains("unknown role `dcotor`"), "{r}");

    // Malformed times, bad weekday, missing length, unknown backend, no contacts.
    let text = r#"
name = "x"
timezone = "UTC"
[[members]]
id = "a"
contacts = { matirx = "@a:localhost" }
[[members]]
id = "b"
[[roles]]
name = "doc"
[[shifts]]
role = "doc"
member = "a"
from = "7am"
to = "19:00"
weekdays = ["mon", "funday"]
[[rotations]]
role = "doc"
members = ["a"]
start = "2026-01-05T07:00"
[failsafe]
member = "a"
"#;
    let e = errors(text);
    assert!(
        error_at(&e, "members[0].contacts.matirx")
            .problem
            .contains("unknown contact backend")
    );
    assert!(
        error_at(&e, "members[1].contacts")
            .problem
            .contains("at least one contact")
    );
    assert!(
        error_at(&e, "shifts[0].from")
            .problem
            .contains("`7am` is not a local time")
    );
    assert!(
        error_at(&e, "shifts[0].weekdays[1]")
            .problem
            .contains("not a day")
    );
    assert!(error_at(&e, "rotations[0]").problem.contains("length_days"));

    // Missing failsafe; failsafe loop; unknown failsafe role.
    let text = roster(DAY_NIGHT).replace("[failsafe]\nmember = \"c\"\n", "");
    assert!(
        error_at(&errors(&text), "failsafe")
            .problem
            .contains("required")
    );
    let a = "name = \"ra\"\ntimezone = \"UTC\"\n[[members]]\nid = \"x\"\ncontacts = { pager = \"1\" }\n[[roles]]\nname = \"ra\"\n[failsafe]\nrole = \"rb\"\n";
    let b = "name = \"rb\"\ntimezone = \"UTC\"\n[[members]]\nid = \"x\"\ncontacts = { pager = \"1\" }\n[[roles]]\nname = \"rb\"\n[failsafe]\nrole = \"ra\"\n";
    let e = load_files(&[
        (PathBuf::from("a.toml"), a.to_string()),
        (PathBuf::from("b.toml"), b.to_string()),
    ])
    .expect_err("loop");
    let l = error_at(&e, "failsafe.role");
    assert!(l.problem.contains("loops"), "{l}");
    assert_eq!(l.line, Some(9));
    let e = errors(&a.replace("rb", "nope"));
    assert!(
        error_at(&e, "failsafe.role")
            .problem
            .contains("not an unscoped role")
    );
}

#[test]
fn cross_file_conflicts() {
    let one = roster(DAY_NIGHT);
    let two = roster(DAY_NIGHT).replace("name = \"t\"", "name = \"u\"");
    let e = load_files(&[
        (PathBuf::from("1.toml"), one.clone()),
        (PathBuf::from("2.toml"), two),
    ])
    .expect_err("duplicate role");
    let d = error_at(&e, "roles[0].name");
    assert_eq!(d.file, PathBuf::from("2.toml"));
    assert!(d.problem.contains("also defined by roster `t`"), "{d}");

    // Same member id, different contacts.
    let three = roster("[[roles]]\nname = \"other\"\n")
        .replace("name = \"t\"", "name = \"v\"")
        .replace("@a:localhost", "@someone-else:localhost");
    let e = load_files(&[
        (PathBuf::from("1.toml"), one),
        (PathBuf::from("3.toml"), three),
    ])
    .expect_err("conflict");
    assert!(
        error_at(&e, "members[0].id")
            .problem
            .contains("defined differently")
    );
}

#[test]
fn provider_ids_find_members() {
    let r = load(&[("t.toml", &roster(DAY_NIGHT))]);
    assert_eq!(
        r.member_by_provider_id("111", "NPI").map(|m| m.id.as_str()),
        Some("a")
    );
    assert_eq!(
        r.member_by_provider_id("111", "npi").map(|m| m.id.as_str()),
        Some("a")
    );
    assert_eq!(
        r.member_by_provider_id("111", "").map(|m| m.id.as_str()),
        Some("a")
    );
    assert!(r.member_by_provider_id("111", "LOCAL").is_none());
}

#[test]
fn reload_while_a_shift_is_in_progress() {
    let before = load(&[("t.toml", &roster(DAY_NIGHT))]);
    let at = utc("2026-06-01T15:00:00Z"); // a's day shift, in progress
    // A coordinator adds a future override and a new member: nothing changes now.
    let edited = roster(&format!(
        "{DAY_NIGHT}\n[[overrides]]\nrole = \"nurse\"\nmember = \"c\"\nstart = \"2026-06-10T07:00\"\nend = \"2026-06-10T19:00\"\n"
    ))
    .replace("[failsafe]", "[[members]]\nid = \"d\"\ncontacts = { pager = \"9\" }\n\n[failsafe]");
    let after = load(&[("t.toml", &edited)]);
    assert_eq!(ids(&after.on_call("nurse", None, at)), ["a"]);
    assert!(before.on_call_changes(&after, at).is_empty());
    assert_eq!(
        ids(&after.on_call("nurse", None, utc("2026-06-10T15:00:00Z"))),
        ["c"]
    );
    // An edit that would swap the person mid-shift is reported before reload.
    let swapped = roster(&DAY_NIGHT.replacen("member = \"a\"", "member = \"c\"", 1));
    let after = load(&[("t.toml", &swapped)]);
    let changes = before.on_call_changes(&after, at);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].before.clone(), changes[0].after.clone()),
        (vec!["a".to_string()], vec!["c".to_string()])
    );
}

#[test]
fn dst_adjustments_are_listed_for_check() {
    let text = r#"
name = "santiago"
timezone = "America/Santiago"
[[members]]
id = "a"
contacts = { pager = "1" }
[[members]]
id = "b"
contacts = { pager = "2" }
[[roles]]
name = "doc"
[[shifts]]
role = "doc"
member = "a"
from = "00:00"
to = "12:00"
[[shifts]]
role = "doc"
member = "b"
from = "12:00"
to = "00:00"
[failsafe]
member = "a"
"#;
    let r = load(&[("s.toml", text)]);
    let adj = r.dst_adjustments(utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
    let lines: Vec<String> = adj.iter().map(|a| a.to_string()).collect();
    // Spring (gap at 00:00 on 09-06): both shifts' boundary moves to 01:00.
    assert!(
        lines.iter().any(|l| l.contains("shifts[0]")
            && l.contains("2026-09-06 00:00 America/Santiago does not exist")
            && l.contains("2026-09-06 01:00 -03")),
        "{lines:#?}"
    );
    // Autumn: 04-05 00:00 is the end of the second pass of 23:xx, not in the fold;
    // no boundary is inside 23:00-23:59 on 04-04.
    assert!(
        adj.iter().all(|a| a.resolution == Resolution::Gap),
        "{lines:#?}"
    );
    assert!(DST_POLICY.contains("first valid instant after the gap"));
    assert!(DST_POLICY.contains("earliest"));
}

#[test]
fn resolve_policy_gap_and_fold() {
    let ny: chrono_tz::Tz = "America/New_York".parse().expect("zone");
    let t = |s: &str| schedule::parse_datetime(s).expect("time");
    assert_eq!(
        schedule::resolve(ny, t("2026-03-08T02:30")),
        (utc("2026-03-08T07:00:00Z"), Resolution::Gap)
    );
    assert_eq!(
        schedule::resolve(ny, t("2026-11-01T01:30")),
        (
            utc("2026-11-01T05:30:00Z"),
            Resolution::Fold {
                later: utc("2026-11-01T06:30:00Z")
            }
        )
    );
    assert_eq!(
        schedule::resolve(ny, t("2026-07-01T12:00")),
        (utc("2026-07-01T16:00:00Z"), Resolution::Exact)
    );
    // Apia skipped 2011-12-30 entirely: any wall time that day -> 2011-12-31 00:00 +14.
    let apia: chrono_tz::Tz = "Pacific/Apia".parse().expect("zone");
    let (i, r) = schedule::resolve(apia, t("2011-12-30T12:00"));
    assert_eq!(r, Resolution::Gap);
    assert_eq!(i, utc("2011-12-30T10:00:00Z"));
    assert_eq!(
        i.with_timezone(&apia).format("%Y-%m-%d %H:%M").to_string(),
        "2011-12-31 00:00"
    );
}

/// Property test: random rotations in random zones; at random instants exactly
/// one person is on call, and it agrees with `shifts_between`.
#[test]
fn random_rotations_agree_with_reports() {
    let zones = [
        "America/New_York",
        "America/St_Johns",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/Santiago",
        "Africa/Casablanca",
        "Antarctica/Troll",
        "Europe/Dublin",
    ];
    let mut rng = StdRng::seed_from_u64(0x5b0a_2026);
    for case in 0..60 {
        let zone = zones[rng.random_range(0..zones.len())];
        let n = rng.random_range(1..=3);
        let members: Vec<&str> = ["a", "b", "c"][..n].to_vec();
        let (len_key, len) = if rng.random_bool(0.5) {
            ("length_hours", rng.random_range(1..=36))
        } else {
            ("length_days", rng.random_range(1..=8))
        };
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("t")
            + Duration::minutes(rng.random_range(0..(60 * 24 * 40)));
        let text = format!(
            "name = \"p\"\ntimezone = \"{zone}\"\n{MEMBERS}\n[failsafe]\nmember = \"c\"\n[[roles]]\nname = \"r\"\n[[rotations]]\nrole = \"r\"\nmembers = {:?}\nstart = \"{}\"\n{len_key} = {len}\n",
            members,
            start.format("%Y-%m-%dT%H:%M")
        );
        let r = load(&[("p.toml", &text)]);
        let lo = utc("2026-03-01T00:00:00Z");
        for _ in 0..200 {
            let at = lo + Duration::seconds(rng.random_range(0..(3600 * 24 * 300)));
            let who = r.on_call("r", None, at);
            assert_eq!(who.len(), 1, "case {case} {zone} {text} at {at}: {who:?}");
            assert!(!who[0].failsafe, "case {case} {zone} at {at}");
            let spans = r.shifts_between("r", None, at, at + Duration::seconds(1));
            assert_eq!(spans.len(), 1, "case {case} at {at}: {spans:?}");
            assert_eq!(spans[0].member.id, who[0].member.id);
            assert!(spans[0].start <= at && at < spans[0].end);
        }
    }
}

#[test]
fn a_directory_roster_needs_no_failsafe_and_resolves_provider_ids() {
    let dir = format!("name = \"attendings\"\ntimezone = \"UTC\"\n{MEMBERS}");
    let r = load(&[("attendings.toml", &dir)]);
    assert_eq!(r.roster("attendings").unwrap().failsafe, Failsafe::None);
    assert_eq!(r.member_by_provider_id("111", "NPI").unwrap().id, "a");
    assert!(
        r.coverage_gaps(utc("2026-01-01T00:00:00Z"), utc("2026-02-01T00:00:00Z"))
            .is_empty()
    );
}

#[test]
fn a_roster_with_roles_still_needs_a_failsafe() {
    let text =
        format!("name = \"t\"\ntimezone = \"UTC\"\n{MEMBERS}\n[[roles]]\nname = \"nurse\"\n");
    let e = error_at(&errors(&text), "failsafe");
    assert!(e.problem.contains("required"), "{e}");
}
