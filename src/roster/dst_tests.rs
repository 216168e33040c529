//! RELIABILITY §(g): for every zone of its table, rosters whose hand-offs
//! fall inside that zone's DST gaps and folds have exactly one person on call
//! at every instant of the sweep; plus the exact examples.
//!
//! Sweep: every `STEP` over the zone's two years, every transition instant
//! ±1 s and ±1 min, and every shift boundary ±1 s. The intervals reported by
//! `shifts_between` are checked to tile the whole range exactly (no gap, no
//! overlap), which covers every instant, not only the sampled ones.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::schedule::{Resolution, parse_datetime, resolve};
use super::tests::{load, utc};
use super::*;

/// Sampling step of the sweep (plus every transition and boundary).
const STEP_MINUTES: i64 = 5;

struct Zone {
    name: &'static str,
    /// Sweep years (inclusive).
    years: (i32, i32),
    /// First missing wall time of the spring transition (table), if any.
    gap: Option<&'static str>,
    /// A wall time that happens twice at the autumn transition (table), if any.
    fold: Option<&'static str>,
}

const ZONES: &[Zone] = &[
    Zone {
        name: "America/New_York",
        years: (2026, 2027),
        gap: Some("2026-03-08T02:00"),
        fold: Some("2026-11-01T01:15"),
    },
    Zone {
        name: "America/Chicago",
        years: (2026, 2027),
        gap: Some("2026-03-08T02:00"),
        fold: Some("2026-11-01T01:15"),
    },
    Zone {
        name: "America/Los_Angeles",
        years: (2026, 2027),
        gap: Some("2026-03-08T02:00"),
        fold: Some("2026-11-01T01:15"),
    },
    Zone {
        name: "America/St_Johns",
        years: (2026, 2027),
        gap: Some("2026-03-08T02:00"),
        fold: Some("2026-11-01T01:15"),
    },
    Zone {
        name: "America/Phoenix",
        years: (2026, 2027),
        gap: None,
        fold: None,
    },
    Zone {
        name: "Asia/Kolkata",
        years: (2026, 2027),
        gap: None,
        fold: None,
    },
    Zone {
        name: "Europe/London",
        years: (2026, 2027),
        gap: Some("2026-03-29T01:00"),
        fold: Some("2026-10-25T01:15"),
    },
    Zone {
        name: "Europe/Dublin",
        years: (2026, 2027),
        gap: Some("2026-03-29T01:00"),
        fold: Some("2026-10-25T01:15"),
    },
    Zone {
        name: "Europe/Berlin",
        years: (2026, 2027),
        gap: Some("2026-03-29T02:00"),
        fold: Some("2026-10-25T02:15"),
    },
    Zone {
        name: "Australia/Sydney",
        years: (2026, 2027),
        gap: Some("2026-10-04T02:00"),
        fold: Some("2026-04-05T02:15"),
    },
    Zone {
        name: "Australia/Lord_Howe",
        years: (2026, 2027),
        gap: Some("2026-10-04T02:00"),
        fold: Some("2026-04-05T01:45"),
    },
    Zone {
        name: "Pacific/Auckland",
        years: (2026, 2027),
        gap: Some("2026-09-27T02:00"),
        fold: Some("2026-04-05T02:15"),
    },
    Zone {
        name: "Pacific/Chatham",
        years: (2026, 2027),
        gap: Some("2026-09-27T02:45"),
        fold: Some("2026-04-05T03:00"),
    },
    Zone {
        name: "America/Santiago",
        years: (2026, 2027),
        gap: Some("2026-09-06T00:00"),
        fold: Some("2026-04-04T23:15"),
    },
    Zone {
        name: "Africa/Casablanca",
        years: (2026, 2027),
        gap: Some("2026-03-22T02:00"),
        fold: Some("2026-02-15T02:15"),
    },
    Zone {
        name: "Antarctica/Troll",
        years: (2026, 2027),
        gap: Some("2026-03-29T01:00"),
        fold: Some("2026-10-25T01:15"),
    },
    Zone {
        name: "Pacific/Apia",
        years: (2011, 2012),
        gap: Some("2011-12-30T00:00"),
        fold: Some("2011-04-02T03:15"),
    },
    Zone {
        name: "America/Sao_Paulo",
        years: (2018, 2019),
        gap: Some("2018-11-04T00:00"),
        fold: Some("2018-02-17T23:15"),
    },
];

fn tz(name: &str) -> Tz {
    name.parse().unwrap_or_else(|_| panic!("zone {name}"))
}

fn wall(s: &str) -> NaiveDateTime {
    parse_datetime(s).unwrap_or_else(|| panic!("wall time {s}"))
}

/// Every UTC offset change in `[from, to)`, to the second.
fn transitions(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let off = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let next = t + Duration::hours(1);
        if off(t) != off(next) {
            let (mut lo, mut hi) = (t, next);
            while hi - lo > Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if off(mid) == off(lo) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push(hi);
        }
        t = next;
    }
    out
}

/// Three rosters for a zone: day/night 08:00/20:00 shifts; shifts handing off
/// at the zone's gap and fold wall times; weekly rotations handing off on
/// Sundays at those times (most transitions are on Sundays).
fn rosters_for(z: &Zone) -> Rosters {
    let gap_t = z.gap.map(|g| &g[11..]).unwrap_or("02:00");
    let fold_t = z.fold.map(|f| &f[11..]).unwrap_or("01:15");
    let members = r#"
[[members]]
id = "a"
contacts = { pager = "1" }
[[members]]
id = "b"
contacts = { pager = "2" }
[[members]]
id = "c"
contacts = { pager = "3" }
[[members]]
id = "fs"
contacts = { pager = "0" }
[failsafe]
member = "fs"
"#;
    let first_sunday = {
        let mut d = chrono::NaiveDate::from_ymd_opt(z.years.0 - 1, 12, 20).expect("date");
        while d.format("%a").to_string() != "Sun" {
            d = d.succ_opt().expect("date");
        }
        d
    };
    let day_night = format!(
        "name = \"day-night\"\ntimezone = \"{}\"\n{members}\n[[roles]]\nname = \"dn\"\n\
         [[shifts]]\nrole = \"dn\"\nmember = \"a\"\nfrom = \"08:00\"\nto = \"20:00\"\n\
         [[shifts]]\nrole = \"dn\"\nmember = \"b\"\nfrom = \"20:00\"\nto = \"08:00\"\n",
        z.name
    );
    let edges = format!(
        "name = \"edges\"\ntimezone = \"{}\"\n{members}\n[[roles]]\nname = \"edge\"\n\
         [[shifts]]\nrole = \"edge\"\nmember = \"a\"\nfrom = \"{fold_t}\"\nto = \"{gap_t}\"\n\
         [[shifts]]\nrole = \"edge\"\nmember = \"b\"\nfrom = \"{gap_t}\"\nto = \"{fold_t}\"\n",
        z.name
    );
    let weekly = format!(
        "name = \"weekly\"\ntimezone = \"{}\"\n{members}\n[[roles]]\nname = \"wk-gap\"\n[[roles]]\nname = \"wk-fold\"\n\
         [[rotations]]\nrole = \"wk-gap\"\nmembers = [\"a\", \"b\", \"c\"]\nstart = \"{first_sunday}T{gap_t}\"\nlength_days = 7\n\
         [[rotations]]\nrole = \"wk-fold\"\nmembers = [\"a\", \"b\"]\nstart = \"{first_sunday}T{fold_t}\"\nlength_days = 7\n",
        z.name
    );
    load(&[
        ("day-night.toml", &day_night),
        ("edges.toml", &edges),
        ("weekly.toml", &weekly),
    ])
}

const ROLES: &[&str] = &["dn", "edge", "wk-gap", "wk-fold"];

fn sweep(z: &Zone) {
    let zone = tz(z.name);
    let from = Utc
        .with_ymd_and_hms(z.years.0, 1, 1, 0, 0, 0)
        .single()
        .expect("from");
    let to = Utc
        .with_ymd_and_hms(z.years.1 + 1, 1, 1, 0, 0, 0)
        .single()
        .expect("to");
    let r = rosters_for(z);

    // The table's transitions are what tzdata says.
    let trans = transitions(zone, from, to);
    match (z.gap, z.fold) {
        (None, None) => assert!(trans.is_empty(), "{}: {trans:?}", z.name),
        _ => assert!(trans.len() >= 2, "{}: {trans:?}", z.name),
    }
    if let Some(g) = z.gap {
        assert_eq!(
            resolve(zone, wall(g)).1,
            Resolution::Gap,
            "{} gap {g}",
            z.name
        );
    }
    if let Some(f) = z.fold {
        assert!(
            matches!(resolve(zone, wall(f)).1, Resolution::Fold { .. }),
            "{} fold {f}",
            z.name
        );
    }

    let mut instants: Vec<DateTime<Utc>> = Vec::new();
    let mut t = from;
    while t < to {
        instants.push(t);
        t += Duration::minutes(STEP_MINUTES);
    }
    for tr in &trans {
        for d in [-60, -1, 0, 1, 60] {
            instants.push(*tr + Duration::seconds(d));
        }
    }
    for role in ROLES {
        // Reported duty tiles the range exactly.
        let spans = r.shifts_between(role, None, from, to);
        assert!(
            spans[0].start <= from,
            "{} {role}: starts {}",
            z.name,
            spans[0].start
        );
        assert!(spans[spans.len() - 1].end >= to, "{} {role}", z.name);
        for w in spans.windows(2) {
            assert_eq!(
                w[0].end, w[1].start,
                "{} {role}: {} then {}",
                z.name, w[0], w[1]
            );
            assert!(w[0].length() > Duration::zero());
        }
        let mut all = instants.clone();
        for s in &spans {
            all.push(s.start - Duration::seconds(1));
            all.push(s.start);
        }
        for at in all.into_iter().filter(|t| *t >= from && *t < to) {
            let who = r.on_call(role, None, at);
            assert!(
                who.len() == 1 && !who[0].failsafe,
                "{} {role} at {at} ({}): {:?}",
                z.name,
                at.with_timezone(&zone),
                who.iter()
                    .map(|o| (&o.member.id, o.via))
                    .collect::<Vec<_>>()
            );
        }
    }
}

macro_rules! sweep_tests {
    ($($name:ident => $zone:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            let z = ZONES.iter().find(|z| z.name == $zone).expect("zone in table");
            sweep(z);
        }
    )*};
}

sweep_tests! {
    sweep_new_york => "America/New_York",
    sweep_chicago => "America/Chicago",
    sweep_los_angeles => "America/Los_Angeles",
    sweep_st_johns => "America/St_Johns",
    sweep_phoenix => "America/Phoenix",
    sweep_kolkata => "Asia/Kolkata",
    sweep_london => "Europe/London",
    sweep_dublin => "Europe/Dublin",
    sweep_berlin => "Europe/Berlin",
    sweep_sydney => "Australia/Sydney",
    sweep_lord_howe => "Australia/Lord_Howe",
    sweep_auckland => "Pacific/Auckland",
    sweep_chatham => "Pacific/Chatham",
    sweep_santiago => "America/Santiago",
    sweep_casablanca => "Africa/Casablanca",
    sweep_troll => "Antarctica/Troll",
    sweep_apia_2011 => "Pacific/Apia",
    sweep_sao_paulo_2018 => "America/Sao_Paulo",
}

#[test]
fn every_table_zone_has_a_sweep() {
    assert_eq!(ZONES.len(), 18);
}

fn day_night(zone: &str, day: (&str, &str), night: (&str, &str)) -> Rosters {
    let text = format!(
        "name = \"n\"\ntimezone = \"{zone}\"\n\
         [[members]]\nid = \"day\"\ncontacts = {{ pager = \"1\" }}\n\
         [[members]]\nid = \"night\"\ncontacts = {{ pager = \"2\" }}\n\
         [[roles]]\nname = \"doc\"\n\
         [[shifts]]\nrole = \"doc\"\nmember = \"day\"\nfrom = \"{}\"\nto = \"{}\"\n\
         [[shifts]]\nrole = \"doc\"\nmember = \"night\"\nfrom = \"{}\"\nto = \"{}\"\n\
         [failsafe]\nmember = \"day\"\n",
        day.0, day.1, night.0, night.1
    );
    load(&[("n.toml", &text)])
}

/// The night shift starting on `date` (local), from `shifts_between`.
fn night_of(r: &Rosters, zone: Tz, date: &str) -> ShiftSpan {
    let start = resolve(zone, wall(&format!("{date}T21:00"))).0;
    let spans = r.shifts_between("doc", None, start, start + Duration::seconds(1));
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].member.id, "night");
    spans[0].clone()
}

#[test]
fn new_york_night_shift_is_11h_and_13h() {
    let zone = tz("America/New_York");
    let r = day_night("America/New_York", ("08:00", "20:00"), ("20:00", "08:00"));
    let spring = night_of(&r, zone, "2026-03-07");
    assert_eq!(spring.length(), Duration::hours(11));
    assert_eq!(spring.nominal, Duration::hours(12));
    assert_eq!(spring.start, utc("2026-03-08T01:00:00Z"));
    assert_eq!(spring.end, utc("2026-03-08T12:00:00Z"));
    assert!(
        spring.to_string().contains("(11h; 12h as written"),
        "{spring}"
    );
    let autumn = night_of(&r, zone, "2026-10-31");
    assert_eq!(autumn.length(), Duration::hours(13));
    assert_eq!(
        autumn.start_local.format("%H:%M %Z").to_string(),
        "20:00 EDT"
    );
    assert_eq!(autumn.end_local.format("%H:%M %Z").to_string(), "08:00 EST");
    let normal = night_of(&r, zone, "2026-06-01");
    assert_eq!(normal.length(), Duration::hours(12));
}

#[test]
fn lord_howe_half_hour_shift() {
    let zone = tz("Australia/Lord_Howe");
    let r = day_night(
        "Australia/Lord_Howe",
        ("08:00", "20:00"),
        ("20:00", "08:00"),
    );
    assert_eq!(
        night_of(&r, zone, "2026-10-03").length(),
        Duration::minutes(11 * 60 + 30)
    );
    assert_eq!(
        night_of(&r, zone, "2026-04-04").length(),
        Duration::minutes(12 * 60 + 30)
    );
    // A hand-off inside the 30-minute gap (02:00-02:30) moves to 02:30.
    let r = day_night(
        "Australia/Lord_Howe",
        ("02:15", "14:00"),
        ("14:00", "02:15"),
    );
    let day = r.shifts_between(
        "doc",
        None,
        utc("2026-10-04T00:00:00Z"),
        utc("2026-10-04T00:00:01Z"),
    );
    assert_eq!(day[0].member.id, "day");
    assert_eq!(
        day[0].start_local.format("%Y-%m-%d %H:%M").to_string(),
        "2026-10-04 02:30"
    );
    assert_eq!(day[0].length(), Duration::minutes(11 * 60 + 30));
    // And inside the fold (01:30-02:00 twice) the earliest 01:45 is used.
    let r = day_night(
        "Australia/Lord_Howe",
        ("01:45", "14:00"),
        ("14:00", "01:45"),
    );
    let night = night_of(&r, zone, "2026-04-04");
    assert_eq!(night.length(), Duration::minutes(11 * 60 + 45));
    assert_eq!(
        night.end_local.format("%H:%M %:z").to_string(),
        "01:45 +11:00"
    );
}

#[test]
fn santiago_midnight_shift_starts_at_one() {
    let zone = tz("America/Santiago");
    let r = day_night("America/Santiago", ("00:00", "12:00"), ("12:00", "00:00"));
    // 2026-09-06 00:00 does not exist: the "00:00" shift starts at 01:00 local.
    let spans = r.shifts_between(
        "doc",
        None,
        utc("2026-09-06T05:00:00Z"),
        utc("2026-09-06T05:00:01Z"),
    );
    assert_eq!(spans.len(), 1);
    let day = &spans[0];
    assert_eq!(day.member.id, "day");
    assert_eq!(
        day.start_local.format("%Y-%m-%d %H:%M %:z").to_string(),
        "2026-09-06 01:00 -03:00"
    );
    assert_eq!(day.start, utc("2026-09-06T04:00:00Z"));
    assert_eq!(day.length(), Duration::hours(11));
    // The previous night runs until that instant: nobody is left out.
    let before = r.on_call("doc", None, utc("2026-09-06T03:59:59Z"));
    assert_eq!(before[0].member.id, "night");
    assert_eq!(
        r.on_call("doc", None, utc("2026-09-06T04:00:00Z"))[0]
            .member
            .id,
        "day"
    );
    // Autumn: 23:00-23:59 on 04-04 happens twice; the night shift ending at
    // "00:00" on 04-05 is 13 h.
    let night = night_of(&r, zone, "2026-04-04");
    assert_eq!(night.length(), Duration::hours(13));
}

#[test]
fn host_time_zone_is_never_read() {
    // Everything above must hold whatever TZ the host has (CI also runs the
    // suite under TZ=Pacific/Kiritimati); here the result is checked against
    // fixed UTC values, and the roster zone differs from any plausible host zone.
    let r = day_night("Asia/Kolkata", ("09:00", "21:00"), ("21:00", "09:00"));
    assert_eq!(
        r.on_call("doc", None, utc("2026-06-01T03:29:59Z"))[0]
            .member
            .id,
        "night"
    );
    assert_eq!(
        r.on_call("doc", None, utc("2026-06-01T03:30:00Z"))[0]
            .member
            .id,
        "day"
    );
}
