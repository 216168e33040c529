//! 100,000 open alerts with timers: memory per live alert in the desk's
//! index, the time to load them at start-up, and timer lateness (how long
//! after its deadline each escalation is recorded) while all of them are
//! due over a 20-second span, on a real SQLite journal with sealing.
//!
//! `cargo bench --bench alerts` (ALERTS=N to change the count). Prints one
//! JSON line and a summary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use switchboard::alert::desk::{Desk, World};
use switchboard::census::Census;
use switchboard::config::AlertsConfig;
use switchboard::event::{
    ClinicalEvent, Code, EventKind, Identifier, Location, Observation, Order, Patient, Priority,
    Processing, ResultStatus, SourceRef,
};
use switchboard::journal::record::{DedupKey, Fate, NewMessage};
use switchboard::journal::{Protection, SqliteStorage, Storage};

const ROSTER: &str = r#"
name = "ward"
timezone = "America/New_York"
[[members]]
id = "rn-a"
contacts = { matrix = "@rn-a:localhost" }
[[members]]
id = "sup"
contacts = { matrix = "@sup:localhost" }
[[roles]]
name = "charge-nurse"
[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1
[failsafe]
member = "sup"
"#;

const MAPPING: &str = r#"
[[rules]]
name = "critical"
match = { kind = "result", flags = ["HH"] }
route = { role = "charge-nurse", priority = "stat", escalation = "bench" }
[escalations.bench]
tiers = [{ route = true, timeout_secs = 30 }, { failsafe = true, timeout_secs = 600 }]
"#;

fn event(i: usize) -> ClinicalEvent {
    ClinicalEvent {
        kind: EventKind::Result,
        source: SourceRef {
            sender: "lab".into(),
            message_type: "ORU".into(),
            trigger: "R01".into(),
            control_id: format!("B{i}"),
            index: 0,
        },
        processing: Processing::Production,
        occurred_at: None,
        patient: Patient {
            identifiers: vec![Identifier {
                value: format!("MRN{i}"),
                authority: "HOSP".into(),
                type_code: "MR".into(),
            }],
            ..Patient::default()
        },
        location: Some(Location {
            facility: "HOSP".into(),
            unit: "ICU".into(),
            room: format!("{}", i % 500),
            bed: "A".into(),
        }),
        prior_location: None,
        patient_class: "I".into(),
        visit: None,
        providers: Vec::new(),
        priority: Priority::Routine,
        order: Some(Order::default()),
        observations: vec![Observation {
            set_id: "1".into(),
            value_type: "NM".into(),
            code: Code {
                code: "2823-3".into(),
                text: String::new(),
                system: "LN".into(),
            },
            sub_id: String::new(),
            values: vec!["6.9".into()],
            units: None,
            reference_range: String::new(),
            flags: vec!["HH".into()],
            status: ResultStatus::Final,
            observed_at: None,
        }],
        alarm: None,
        merged_identifiers: Vec::new(),
        notes: Vec::new(),
    }
}

fn message(i: usize, at: DateTime<Utc>) -> NewMessage {
    let id = format!("B{i}");
    NewMessage {
        received_at: at,
        peer: "127.0.0.1:1".into(),
        sender: Some("lab".into()),
        key: DedupKey {
            msh3: "LAB".into(),
            msh4: "HOSP".into(),
            control_id: id.clone(),
        },
        message_type: "ORU".into(),
        trigger: "R01".into(),
        processing_id: "P".into(),
        raw: id.into_bytes(),
        raw_charset: "frame".into(),
        body_sha256: [0; 32],
        fate: Fate::Accepted,
        reason: None,
        error_code: None,
        error_location: None,
        events: vec![event(i)],
        ack_code: Some("AA".into()),
        ack: b"ACK".to_vec(),
        app_ack: None,
        batch_ref: None,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[allow(clippy::disallowed_methods)]
fn main() {
    let n: usize = std::env::var("ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    // Wall clock on purpose: lateness is measured against real time.
    let wall = || Utc::now();
    let mut s =
        SqliteStorage::open(&path, Protection::ephemeral("bench").unwrap(), wall()).unwrap();
    let rosters =
        switchboard::roster::load_files(&[(PathBuf::from("ward.toml"), ROSTER.into())]).unwrap();
    let rules =
        switchboard::rules::load_files(&[(PathBuf::from("m.toml"), MAPPING.into())], &rosters)
            .unwrap();
    let census = Census::new();
    let channels = vec!["matrix".to_string()];
    let cfg = AlertsConfig {
        late_after: Duration::from_secs(86_400),
        storm_threshold: 0,
        storm_window: Duration::from_secs(60),
        outbox_max_per_backend: usize::MAX,
    };

    // Journal n messages, 1,000 per transaction.
    let t = Instant::now();
    let base = wall();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<NewMessage> = chunk.iter().map(|i| message(*i, base)).collect();
        s.commit(&batch, base, Duration::from_secs(3600)).unwrap();
    }
    let journal_secs = t.elapsed().as_secs_f64();

    // Route them. Alert i is raised "at" start + 20 s × i/n - 30 s + 10 s,
    // so its 30 s tier-0 deadline falls 10 to 30 s from the start, in order.
    let mut desk = Desk::load(&mut s, cfg.clone(), wall()).unwrap();
    let rss_before = rss_kib();
    let t = Instant::now();
    let start = wall();
    let mut routed = 0;
    while routed < n {
        let frac = routed as f64 / n as f64;
        let now = start + TimeDelta::milliseconds((20_000.0 * frac) as i64 - 20_000);
        let w = World {
            rules: &rules,
            rosters: &rosters,
            census: &census,
            channels: &channels,
            now,
        };
        let k = desk.route_pending(&mut s, &w).unwrap();
        assert!(k > 0);
        routed += k;
    }
    let route_secs = t.elapsed().as_secs_f64();
    let live = desk.live();
    let rss_after = rss_kib();
    drop(desk);

    // Start-up: load the live alerts into a fresh desk.
    let t = Instant::now();
    let mut desk = Desk::load(&mut s, cfg, wall()).unwrap();
    let load_secs = t.elapsed().as_secs_f64();
    let first = desk.next_deadline().unwrap();

    // The timer loop of the gateway, against the wall clock: sleep until
    // the earliest deadline, fire everything due, record each lateness.
    let mut lateness_ms: Vec<f64> = Vec::with_capacity(n);
    let mut fired = 0;
    let stop = Instant::now() + Duration::from_secs(60);
    while fired < n && Instant::now() < stop {
        let Some(next) = desk.next_deadline() else {
            break;
        };
        if next > first + TimeDelta::seconds(60) {
            break; // only tier 1's deadlines are left
        }
        let wait = (next - wall()).to_std().unwrap_or(Duration::ZERO);
        std::thread::sleep(wait);
        let now = wall();
        let w = World {
            rules: &rules,
            rosters: &rosters,
            census: &census,
            channels: &channels,
            now,
        };
        let before = desk.next_deadline();
        let k = desk.fire_due(&mut s, &w).unwrap();
        let done = wall();
        // Every alert fired in this round was due between `before` and `now`;
        // its escalation was recorded at `done`.
        if let Some(b) = before {
            let spread = (now - b).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            let work = (done - now).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            for j in 0..k {
                // Due times are spread evenly over [b, now]; the earliest waited longest.
                let waited = spread * (1.0 - j as f64 / k.max(1) as f64);
                lateness_ms.push(waited + work);
            }
        }
        fired += k;
    }
    lateness_ms.sort_by(|a, b| a.total_cmp(b));
    let per_alert = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / live.max(1) as f64;
    let report = serde_json::json!({
        "alerts": n,
        "journal_secs": journal_secs,
        "route_secs": route_secs,
        "routed_per_sec": n as f64 / route_secs,
        "live_indexed": live,
        "rss_growth_kib": rss_after.saturating_sub(rss_before),
        "index_bytes_per_alert": per_alert,
        "load_secs": load_secs,
        "fired": fired,
        "lateness_ms_p50": percentile(&lateness_ms, 0.5),
        "lateness_ms_p99": percentile(&lateness_ms, 0.99),
        "lateness_ms_max": lateness_ms.last().copied().unwrap_or(0.0),
    });
    println!("{report}");
    eprintln!(
        "{n} alerts: routed {:.0}/s; index ≈ {per_alert:.0} B per live alert; start-up load {load_secs:.2} s; \
         {fired} escalations fired, lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / route_secs,
        percentile(&lateness_ms, 0.5),
        percentile(&lateness_ms, 0.99),
        lateness_ms.last().copied().unwrap_or(0.0)
    );
}
