//! The desk over a real SQLite journal, with time as a parameter: noise
//! control (storms, grouping, clears before their alarm, holds), late
//! backlogs, and resuming after a restart without firing anything twice.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::desk::{Desk, World};
use super::model::State;
use crate::census::Census;
use crate::config::AlertsConfig;
use crate::event::{Alarm, ClinicalEvent, Code, EventKind};
use crate::journal::record::{DedupKey, Fate, NewMessage};
use crate::journal::{Protection, SqliteStorage, Storage};
use crate::roster::Rosters;
use crate::rules::Rules;
use crate::rules::tests::{obs, result_event};

const ROSTER: &str = r#"
name = "ward"
timezone = "America/New_York"
[[members]]
id = "rn-a"
contacts = { matrix = "@rn-a:localhost" }
[[members]]
id = "rn-b"
contacts = { matrix = "@rn-b:localhost" }
[[roles]]
name = "charge-nurse"
[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1
[failsafe]
member = "rn-b"
"#;

const MAPPING: &str = r#"
[[rules]]
name = "held-alarm"
match = { kind = "alarm", alarm_priority = ["PM"] }
route = { role = "charge-nurse", priority = "urgent", delay_secs = 30, clear = "alarm-end" }

[[rules]]
name = "low-alarm"
match = { kind = "alarm", alarm_priority = ["PL"] }
route = { role = "charge-nurse", priority = "routine" }

[[rules]]
name = "abnormal"
match = { kind = "result", flags = ["H"] }
route = { role = "charge-nurse", priority = "urgent", group_window_secs = 600 }

[[rules]]
name = "critical"
match = { kind = "result", flags = ["HH"] }
route = { role = "charge-nurse", priority = "stat", escalation = "two" }

[escalations.two]
tiers = [{ route = true, timeout_secs = 60 }, { failsafe = true, timeout_secs = 60 }]
"#;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    storage: SqliteStorage,
    rosters: Rosters,
    rules: Rules,
    census: Census,
    channels: Vec<String>,
    next: u32,
}

fn cfg(storm_threshold: u32) -> AlertsConfig {
    AlertsConfig {
        late_after: std::time::Duration::from_secs(3600),
        storm_threshold,
        storm_window: std::time::Duration::from_secs(60),
        outbox_max_per_backend: 10_000,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    let storage = SqliteStorage::open(&path, Protection::ephemeral("test").unwrap(), t0()).unwrap();
    let rosters =
        crate::roster::load_files(&[(PathBuf::from("ward.toml"), ROSTER.into())]).unwrap();
    let rules = crate::rules::load_files(&[(PathBuf::from("m.toml"), MAPPING.into())], &rosters)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Fixture {
        _dir: dir,
        path,
        storage,
        rosters,
        rules,
        census: Census::new(),
        channels: vec!["matrix".into()],
        next: 0,
    }
}

impl Fixture {
    fn commit(&mut self, ev: ClinicalEvent, when: DateTime<Utc>) {
        self.next += 1;
        let id = format!("M{}", self.next);
        let m = NewMessage {
            received_at: when,
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
            raw: id.as_bytes().to_vec(),
            raw_charset: "frame".into(),
            body_sha256: [self.next as u8; 32],
            fate: Fate::Accepted,
            reason: None,
            error_code: None,
            error_location: None,
            events: vec![ev],
            ack_code: Some("AA".into()),
            ack: b"ACK".to_vec(),
            app_ack: None,
            batch_ref: None,
        };
        self.storage
            .commit(&[m], when, std::time::Duration::from_secs(3600))
            .unwrap();
    }

    fn route(&mut self, desk: &mut Desk, now: DateTime<Utc>) -> usize {
        let w = World {
            rules: &self.rules,
            rosters: &self.rosters,
            census: &self.census,
            channels: &self.channels,
            now,
        };
        desk.route_pending(&mut self.storage, &w).unwrap()
    }

    fn fire(&mut self, desk: &mut Desk, now: DateTime<Utc>) -> usize {
        let w = World {
            rules: &self.rules,
            rosters: &self.rosters,
            census: &self.census,
            channels: &self.channels,
            now,
        };
        desk.fire_due(&mut self.storage, &w).unwrap()
    }

    fn alerts(&mut self) -> Vec<super::model::Alert> {
        // Everything, open or closed, for assertions.
        let ids: Vec<i64> = rusqlite::Connection::open(&self.path)
            .unwrap()
            .prepare("SELECT id FROM alerts ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ids.into_iter()
            .map(|id| self.storage.alert(id).unwrap().unwrap())
            .collect()
    }

    fn notified(&mut self) -> Vec<(i64, String, String)> {
        self.storage
            .notifications(None)
            .unwrap()
            .into_iter()
            .map(|n| (n.alert_id, n.member, n.reason))
            .collect()
    }

    fn desk(&mut self, c: AlertsConfig, now: DateTime<Utc>) -> Desk {
        Desk::load(&mut self.storage, c, now).unwrap()
    }
}

fn alarm(id: &str, priority: &str, phase: &str) -> ClinicalEvent {
    ClinicalEvent {
        kind: EventKind::Alarm,
        observations: Vec::new(),
        order: None,
        alarm: Some(Alarm {
            id: id.into(),
            phase: phase.into(),
            priority: priority.into(),
            kind: Code {
                code: "196670".into(),
                text: String::new(),
                system: "MDC".into(),
            },
            source: "monitor-1".into(),
            state: String::new(),
        }),
        ..result_event()
    }
}

fn abnormal(code: &str) -> ClinicalEvent {
    let mut ev = result_event();
    ev.observations = vec![obs("LN", code, &["H"], crate::event::ResultStatus::Final)];
    ev
}

#[test]
fn a_storm_of_low_priority_alarms_folds_into_one_summary() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(3), t0());
    for i in 0..6 {
        f.commit(alarm(&format!("L{i}"), "PL", "start"), at(i));
    }
    assert_eq!(f.route(&mut desk, at(6)), 6);
    let alerts = f.alerts();
    let rules: Vec<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
    assert_eq!(rules, ["low-alarm", "low-alarm", "low-alarm", "storm:ICU"]);
    assert_eq!(
        alerts[3].count, 6,
        "the summary counts every alarm of the storm"
    );
    // Four pages, not six.
    assert_eq!(f.notified().len(), 4);
}

#[test]
fn a_full_outbox_dead_letters_new_notifications_with_an_audit_record_instead_of_growing() {
    let mut f = fixture();
    let mut c = cfg(0);
    c.outbox_max_per_backend = 2;
    let mut desk = f.desk(c, t0());
    for (i, code) in ["2823-3", "2951-2", "2160-0"].iter().enumerate() {
        let mut crit = result_event();
        crit.observations = vec![obs("LN", code, &["HH"], crate::event::ResultStatus::Final)];
        f.commit(crit, at(i as i64));
    }
    f.route(&mut desk, at(5));
    let rows = f.storage.notifications(None).unwrap();
    assert_eq!(rows.len(), 3, "every notification is written");
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["pending", "pending", "dead"]);
    let audit = rusqlite::Connection::open(&f.path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM notifications WHERE last_error = 'outbox full'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(audit, 1);
    // The alert whose notification could not be queued still escalates on time.
    let third = f.alerts().into_iter().nth(2).unwrap();
    assert!(third.deadline.is_some(), "its tier timer runs");
}

#[test]
fn a_critical_is_never_folded_into_a_storm_or_a_group() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(1), t0());
    f.commit(abnormal("2951-2"), at(0));
    let mut crit = result_event();
    crit.observations = vec![obs(
        "LN",
        "2823-3",
        &["HH"],
        crate::event::ResultStatus::Final,
    )];
    f.commit(crit, at(1));
    f.route(&mut desk, at(2));
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1].rule, "critical");
    assert_eq!(alerts[1].count, 1);
}

#[test]
fn abnormal_results_of_one_patient_and_unit_are_grouped() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    f.commit(abnormal("2951-2"), at(0));
    f.commit(abnormal("2075-0"), at(10));
    f.route(&mut desk, at(11));
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 1, "one alert for the group");
    assert_eq!(alerts[0].count, 2);
    assert!(
        alerts[0]
            .timeline
            .iter()
            .any(|s| s.what.starts_with("grouped"))
    );
    assert_eq!(f.notified().len(), 1, "one page");
    // Outside the window: a new alert.
    f.commit(abnormal("2345-7"), at(700));
    f.route(&mut desk, at(700));
    assert_eq!(f.alerts().len(), 2);
}

#[test]
fn a_held_alarm_is_cancelled_by_its_end_or_sent_when_the_window_ends() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    f.commit(alarm("A1", "PM", "start"), at(0));
    f.commit(alarm("A2", "PM", "start"), at(0));
    f.route(&mut desk, at(0));
    assert_eq!(desk.next_deadline(), Some(at(30)));
    f.commit(alarm("A1", "PM", "end"), at(10));
    f.route(&mut desk, at(10));
    f.fire(&mut desk, at(30));
    let alerts = f.alerts();
    assert_eq!(
        alerts[0].state,
        State::Cancelled,
        "A1 ended inside its window"
    );
    assert_eq!(
        alerts[1].state,
        State::Notifying,
        "A2 was sent at the window's end"
    );
    let n = f.notified();
    assert_eq!(n, [(alerts[1].id, "rn-a".to_string(), "new".to_string())]);
}

#[test]
fn a_clear_that_arrives_before_its_alarm_cancels_it_on_arrival() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    f.commit(alarm("A9", "PM", "end"), at(0));
    f.commit(alarm("A9", "PM", "start"), at(1));
    f.route(&mut desk, at(1));
    let alerts = f.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, State::Cancelled);
    assert!(f.notified().is_empty());
}

#[test]
fn a_replayed_backlog_is_marked_late() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    let mut old = abnormal("2951-2");
    old.occurred_at = Some(at(-3 * 3600));
    f.commit(old, at(0));
    f.route(&mut desk, at(0));
    let a = &f.alerts()[0];
    assert!(a.late);
    assert_eq!(a.deadline, None, "not escalated as if new");
    assert_eq!(f.notified()[0].2, "late");
}

#[test]
fn after_a_restart_everything_resumes_once_and_overdue_deadlines_fire_at_once() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    let mut crit = result_event();
    crit.observations = vec![obs(
        "LN",
        "2823-3",
        &["HH"],
        crate::event::ResultStatus::Final,
    )];
    f.commit(crit, at(0));
    assert_eq!(f.route(&mut desk, at(0)), 1);
    assert_eq!(f.route(&mut desk, at(1)), 0, "the cursor moved");
    // "Restart": a new desk from the journal.
    let mut desk = f.desk(cfg(0), at(5));
    assert_eq!(f.route(&mut desk, at(5)), 0, "nothing routed twice");
    assert_eq!(desk.next_deadline(), Some(at(60)));
    // Down until long after the deadline: fires at once, one step.
    assert_eq!(f.fire(&mut desk, at(500)), 1);
    let mut desk2 = f.desk(cfg(0), at(501));
    assert_eq!(
        desk2.next_deadline(),
        Some(at(560)),
        "the failsafe tier's deadline"
    );
    assert_eq!(f.fire(&mut desk2, at(501)), 0, "nothing fires twice");
    let n = f.notified();
    assert_eq!(
        n.iter()
            .map(|x| (x.1.as_str(), x.2.as_str()))
            .collect::<Vec<_>>(),
        [("rn-a", "new"), ("rn-b", "escalation")]
    );
}

#[test]
fn routing_cursor_and_alerts_are_one_transaction() {
    let mut f = fixture();
    let mut desk = f.desk(cfg(0), t0());
    f.commit(abnormal("2951-2"), at(0));
    f.route(&mut desk, at(0));
    let conn = rusqlite::Connection::open(Path::new(&f.path)).unwrap();
    let cursor: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'alerts.routed_event'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let max_event: i64 = conn
        .query_row("SELECT MAX(id) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cursor, max_event.to_string());
}
