//! The alert desk: turns routed events into alerts, fires deadlines and
//! applies acknowledgements — each step written in one journal transaction
//! (alerts, notifications, cancellations, routing cursor, audit records).
//!
//! It runs on the journal's committer thread (through
//! [`crate::journal::Journal::with_storage`]), so its steps are serialised
//! with the commits that feed it. In memory it keeps only an index
//! ([`Book`]): keys, windows and deadlines of live alerts; every transition
//! loads the sealed alert, changes it and writes it back.
//!
//! Guarantees:
//! - **Exactly once from the journal.** Events are routed in id order after
//!   a cursor kept in the same transaction as the alerts they raise: a crash
//!   re-routes what was not written, and nothing twice.
//! - **No timer forgotten.** Deadlines are columns; at start every live
//!   alert is loaded, and one whose deadline passed while the gateway was
//!   down fires at once.
//! - **Noise control never hides danger.** De-duplication folds repeats into
//!   the open alert (corrections, retractions and worse values still tell
//!   everyone told); grouping and storm folding apply only to what the rules
//!   allow (never criticals); a clear that arrives before its alarm cancels
//!   the held alarm when it comes, never a critical one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::engine::{Ack, AckError, Effects, Recipients};
use super::model::{Alert, State};
use super::recipients::Resolver;
use crate::audit::AuditRecord;
use crate::census::Census;
use crate::config::AlertsConfig;
use crate::event::{ClinicalEvent, EventKind};
use crate::journal::{AlertWrite, NotificationRow, Storage, StorageError};
use crate::roster::Rosters;
use crate::rules::{
    AlertPriority, ClearOn, Decision, DedupKeep, DedupPart, Route, RouteContext, Rules,
    critical_event,
};

/// Events routed per transaction.
pub const ROUTE_BATCH: usize = 256;

/// How long a clear that came before its alarm is remembered.
const EARLY_CLEAR_MEMORY: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Clone, Debug)]
struct Entry {
    state: State,
    deadline: Option<DateTime<Utc>>,
    dedup_key: String,
    dedup_until: Option<DateTime<Utc>>,
    group_key: Option<String>,
    group_until: Option<DateTime<Utc>>,
}

/// The in-memory index of live alerts.
#[derive(Debug, Default)]
pub struct Book {
    entries: HashMap<i64, Entry>,
    by_key: HashMap<String, i64>,
    by_group: HashMap<String, i64>,
    timers: BTreeSet<(DateTime<Utc>, i64)>,
    /// Held alerts by the keys an event clearing them carries (the alarm's
    /// sender and id, or an order number), so a new event looks up only the
    /// held alerts it could clear.
    held: HashMap<String, BTreeSet<i64>>,
    held_keys: HashMap<i64, Vec<String>>,
    storms: HashMap<String, VecDeque<DateTime<Utc>>>,
    storm_alert: HashMap<String, i64>,
    early_clears: HashMap<String, DateTime<Utc>>,
}

impl Book {
    fn put(&mut self, a: &Alert) {
        self.forget_timer(a.id);
        if let Some(old) = self.entries.get(&a.id)
            && let Some(g) = &old.group_key
            && self.by_group.get(g) == Some(&a.id)
            && a.group_key.as_ref() != Some(g)
        {
            self.by_group.remove(g);
        }
        if let Some(keys) = self.held_keys.remove(&a.id) {
            for k in keys {
                if let Some(set) = self.held.get_mut(&k) {
                    set.remove(&a.id);
                    if set.is_empty() {
                        self.held.remove(&k);
                    }
                }
            }
        }
        if a.state == State::Held {
            let keys = clear_keys(&a.event);
            for k in &keys {
                self.held.entry(k.clone()).or_default().insert(a.id);
            }
            self.held_keys.insert(a.id, keys);
        }
        if let Some(d) = a.deadline {
            self.timers.insert((d, a.id));
        }
        self.by_key.insert(a.dedup_key.clone(), a.id);
        if let Some(g) = &a.group_key {
            self.by_group.insert(g.clone(), a.id);
        }
        self.entries.insert(
            a.id,
            Entry {
                state: a.state,
                deadline: a.deadline,
                dedup_key: a.dedup_key.clone(),
                dedup_until: a.dedup_until,
                group_key: a.group_key.clone(),
                group_until: a.group_until,
            },
        );
    }

    fn forget_timer(&mut self, id: i64) {
        if let Some(Entry {
            deadline: Some(d), ..
        }) = self.entries.get(&id)
        {
            self.timers.remove(&(*d, id));
        }
    }

    /// The live alert with this key: open, or closed inside its window.
    fn by_key(&self, key: &str, now: DateTime<Utc>) -> Option<i64> {
        let id = *self.by_key.get(key)?;
        let e = self.entries.get(&id)?;
        (e.state.is_open() || e.dedup_until.is_some_and(|u| u > now)).then_some(id)
    }

    fn by_group(&self, key: &str, now: DateTime<Utc>) -> Option<i64> {
        let id = *self.by_group.get(key)?;
        let e = self.entries.get(&id)?;
        (e.state.is_open() && e.group_until.is_some_and(|u| u > now)).then_some(id)
    }

    /// Drops closed alerts whose windows ended.
    fn prune(&mut self, now: DateTime<Utc>) {
        let gone: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                !e.state.is_open()
                    && e.dedup_until.is_none_or(|u| u <= now)
                    && e.group_until.is_none_or(|u| u <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(e) = self.entries.remove(&id) {
                if self.by_key.get(&e.dedup_key) == Some(&id) {
                    self.by_key.remove(&e.dedup_key);
                }
                if let Some(g) = e.group_key
                    && self.by_group.get(&g) == Some(&id)
                {
                    self.by_group.remove(&g);
                }
            }
        }
        self.early_clears
            .retain(|_, t| *t + EARLY_CLEAR_MEMORY > now);
    }

    /// Alerts whose deadline is at or before `now`, earliest first.
    fn due(&self, now: DateTime<Utc>) -> Vec<i64> {
        self.timers
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Live alerts indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Resolves tiers with the rosters and census serving now.
struct Live<'a> {
    resolver: Resolver<'a>,
}

impl Recipients for Live<'_> {
    fn tier(&self, alert: &Alert, tier: usize) -> Vec<String> {
        alert
            .policy
            .tiers
            .get(tier)
            .map(|t| {
                self.resolver
                    .tier_for(&alert.target, t, &alert.event)
                    .member_ids()
            })
            .unwrap_or_default()
    }
}

/// What the desk works with for one step.
pub struct World<'a> {
    /// Rules serving now.
    pub rules: &'a Rules,
    /// Rosters serving now.
    pub rosters: &'a Rosters,
    /// The census.
    pub census: &'a Census,
    /// Contact kinds a configured backend delivers to (notifications are
    /// made only for these).
    pub channels: &'a [String],
    /// Now.
    pub now: DateTime<Utc>,
}

impl World<'_> {
    fn recipients(&self) -> Live<'_> {
        Live {
            resolver: Resolver {
                rosters: self.rosters,
                at: self.now,
                census: Some(self.census),
            },
        }
    }
}

/// Why an acknowledgement through the desk failed.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// No such alert.
    #[error("no such alert")]
    NotFound,
    /// Refused by the state machine.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// The journal failed; nothing changed.
    #[error("journal: {0}")]
    Storage(#[from] StorageError),
}

/// The alert desk. See the module documentation.
#[derive(Debug)]
pub struct Desk {
    book: Book,
    next_id: i64,
    cursor: i64,
    cfg: AlertsConfig,
    /// Operator alarms raised (exhausted escalations).
    pub operator_alarms: u64,
    /// Where operator alarms go (none in tests and `route`).
    pub alarms: Option<std::sync::Arc<crate::operator::Alarms>>,
    /// Counters (time to accept), when running in the gateway.
    pub metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
    /// Which transitions owe status reports (alarm sources, EHR
    /// write-back); queued in the transition's own transaction.
    pub status: crate::status::Hooks,
}

/// One step's output, gathered before it is written.
struct Pending {
    write: AlertWrite,
    audit_from: HashMap<i64, usize>,
}

impl Pending {
    fn new(now: DateTime<Utc>, outbox_max: usize) -> Self {
        Pending {
            write: AlertWrite {
                at: now,
                outbox_max: Some(outbox_max),
                ..AlertWrite::default()
            },
            audit_from: HashMap::new(),
        }
    }

    /// Records the alert's state after a step and what it decided.
    fn record(&mut self, a: &Alert, fx: &Effects, w: &World<'_>, desk: &mut Desk) {
        let rosters = w.rosters;
        if fx.cancel_pending {
            self.write.cancel_pending.push(a.id);
        }
        if let Some(why) = &fx.operator_alarm {
            desk.operator_alarms += 1;
            tracing::error!(alert = a.id, rule = %a.rule, "{why}: operator action needed");
            if let Some(alarms) = &desk.alarms {
                alarms.raise(
                    crate::operator::Kind::EscalationExhausted,
                    &format!("alert:{}", a.id),
                    &format!(
                        "rule {}, priority {}: failsafe reached, unanswered",
                        a.rule,
                        a.priority.as_str()
                    ),
                    w.now,
                );
            }
        }
        // Notifications: each notice not yet written, per contact backend.
        let first_new = a.notified.len()
            - fx.notify
                .iter()
                .map(|n| n.members.len())
                .sum::<usize>()
                .min(a.notified.len());
        for (seq, n) in a.notified.iter().enumerate().skip(first_new) {
            let contacts: Vec<(String, String)> = rosters
                .member(&n.member)
                .map(|m| m.contacts.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|(kind, _)| w.channels.contains(kind))
                .collect();
            if contacts.is_empty() {
                tracing::warn!(alert = a.id, member = %n.member, "no configured backend reaches this member; the tier timeout will escalate");
            }
            for (backend, handle) in contacts {
                let key = hex::encode(Sha256::digest(
                    format!("{}\0{seq}\0{}\0{backend}", a.id, n.member).as_bytes(),
                ));
                self.write.notifications.push(NotificationRow {
                    id: 0,
                    alert_id: a.id,
                    seq,
                    member: n.member.clone(),
                    backend,
                    handle,
                    tier: n.tier,
                    reason: n.reason.as_str().to_string(),
                    state: "pending".into(),
                    idempotency_key: key,
                    remote_ref: None,
                });
            }
        }
        let from = *self.audit_from.get(&a.id).unwrap_or(&0);
        let reports = desk
            .status
            .reports(a, from.min(a.timeline.len()), first_new, w.now);
        self.write.status.extend(reports);
        for s in &a.timeline[from.min(a.timeline.len())..] {
            if s.state == State::Accepted
                && s.what.starts_with("accepted by ")
                && let Some(m) = &desk.metrics
            {
                m.accepted_after(
                    a.priority.as_str(),
                    (s.at - a.created_at).to_std().unwrap_or_default(),
                );
            }
            self.write.audit.push(AuditRecord::new(
                s.at,
                s.by.clone(),
                format!("alert.{}", s.state.as_str()),
                format!("alert:{}", a.id),
                "alerts",
                s.what.clone(),
            ));
        }
        self.audit_from.insert(a.id, a.timeline.len());
        self.write.alerts.retain(|x| x.id != a.id);
        self.write.alerts.push(a.clone());
        desk.book.put(a);
    }
}

fn key_of(parts: &[DedupPart], rule: &str, ev: &ClinicalEvent) -> String {
    let all = [
        DedupPart::Patient,
        DedupPart::Code,
        DedupPart::Unit,
        DedupPart::Order,
        DedupPart::Alarm,
    ];
    let parts = if parts.is_empty() { &all[..] } else { parts };
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    for p in parts {
        h.update([0]);
        let v = match p {
            DedupPart::Patient => ev
                .patient
                .identifiers
                .first()
                .map(|i| format!("{}|{}", i.authority.trim(), i.value.trim()))
                .unwrap_or_default(),
            DedupPart::Code => ev
                .observations
                .iter()
                .find(|o| {
                    o.flags
                        .iter()
                        .any(|f| !f.trim().is_empty() && f.trim() != "N")
                })
                .or(ev.observations.first())
                .map(|o| format!("{}|{}", o.code.system, o.code.code))
                .or_else(|| {
                    ev.alarm
                        .as_ref()
                        .map(|a| format!("{}|{}", a.kind.system, a.kind.code))
                })
                .or_else(|| {
                    ev.order
                        .as_ref()
                        .map(|o| format!("{}|{}", o.service.system, o.service.code))
                })
                .unwrap_or_default(),
            DedupPart::Unit => ev
                .location
                .as_ref()
                .map(|l| l.unit.trim().to_string())
                .unwrap_or_default(),
            DedupPart::Order => ev
                .order
                .as_ref()
                .map(|o| format!("{}|{}", o.placer_id.trim(), o.filler_id.trim()))
                .unwrap_or_default(),
            DedupPart::Alarm => ev
                .alarm
                .as_ref()
                .map(|a| a.id.trim().to_string())
                .unwrap_or_default(),
        };
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

fn group_key(ev: &ClinicalEvent) -> String {
    key_of(&[DedupPart::Patient, DedupPart::Unit], "group", ev)
}

/// The keys under which an event could clear, or be cleared by, another:
/// its alarm (sender and id) and its order numbers.
fn clear_keys(ev: &ClinicalEvent) -> Vec<String> {
    let mut out: Vec<String> = alarm_key(ev).into_iter().collect();
    if let Some(o) = &ev.order {
        for v in [&o.placer_id, &o.filler_id] {
            let v = v.trim();
            if !v.is_empty() {
                out.push(format!("order\0{v}"));
            }
        }
    }
    out
}

/// The key an alarm's clear is remembered under when it comes first.
fn alarm_key(ev: &ClinicalEvent) -> Option<String> {
    let a = ev.alarm.as_ref()?;
    let id = a.id.trim();
    (!id.is_empty()).then(|| format!("{}\0{id}", ev.source.sender))
}

fn alarm_ended(ev: &ClinicalEvent) -> bool {
    ev.alarm.as_ref().is_some_and(|a| {
        a.phase.trim().eq_ignore_ascii_case("end")
            || a.state.trim().eq_ignore_ascii_case("inactive")
    })
}

fn after(now: DateTime<Utc>, d: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    d.and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| now + d)
}

impl Desk {
    /// Loads the live alerts and the routing cursor (before the committer starts).
    pub fn load(
        storage: &mut dyn Storage,
        cfg: AlertsConfig,
        now: DateTime<Utc>,
    ) -> Result<Desk, StorageError> {
        let (alerts, max_id) = storage.alerts_live(now)?;
        let cursor = storage.alerts_cursor()?;
        let mut book = Book::default();
        for a in &alerts {
            book.put(a);
        }
        Ok(Desk {
            book,
            next_id: max_id + 1,
            cursor,
            cfg,
            operator_alarms: 0,
            alarms: None,
            metrics: None,
            status: crate::status::Hooks::default(),
        })
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.book.timers.first().map(|(d, _)| *d)
    }

    /// Live alerts indexed (open, or inside a window).
    pub fn live(&self) -> usize {
        self.book.len()
    }

    /// Routes up to [`ROUTE_BATCH`] journaled events after the cursor;
    /// returns how many were taken.
    pub fn route_pending(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
    ) -> Result<usize, StorageError> {
        let events = s.alerts_events_after(self.cursor, ROUTE_BATCH)?;
        let Some(&(last, _)) = events.last() else {
            return Ok(0);
        };
        let mut p = Pending::new(w.now, self.cfg.outbox_max_per_backend);
        let mut loaded: HashMap<i64, Alert> = HashMap::new();
        let saved_next = self.next_id;
        let result = (|| {
            for (id, ev) in &events {
                if let Some(ev) = ev {
                    self.route_one(s, w, &mut p, &mut loaded, *id, ev)?;
                }
            }
            Ok::<_, StorageError>(())
        })();
        if let Err(e) = result {
            self.reload_book(s, w.now);
            self.next_id = saved_next;
            return Err(e);
        }
        p.write.cursor = Some(last);
        if let Err(e) = s.alerts_write(&p.write) {
            // Nothing was written: rebuild the index from the journal.
            self.next_id = saved_next;
            self.reload_book(s, w.now);
            return Err(e);
        }
        self.cursor = last;
        self.book.prune(w.now);
        Ok(events.len())
    }

    fn reload_book(&mut self, s: &mut dyn Storage, now: DateTime<Utc>) {
        if let Ok(d) = Desk::load(s, self.cfg.clone(), now) {
            self.book = d.book;
            self.cursor = d.cursor;
        }
    }

    fn get(
        &self,
        s: &mut dyn Storage,
        loaded: &mut HashMap<i64, Alert>,
        id: i64,
    ) -> Result<Option<Alert>, StorageError> {
        if let Some(a) = loaded.get(&id) {
            return Ok(Some(a.clone()));
        }
        s.alert(id)
    }

    fn route_one(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
        p: &mut Pending,
        loaded: &mut HashMap<i64, Alert>,
        event_id: i64,
        ev: &ClinicalEvent,
    ) -> Result<(), StorageError> {
        let rec = w.recipients();
        // Held alerts this event clears, whatever rule it matches.
        let mut cleared_any = false;
        let candidates: BTreeSet<i64> = clear_keys(ev)
            .iter()
            .filter_map(|k| self.book.held.get(k))
            .flatten()
            .copied()
            .collect();
        for id in candidates {
            let Some(mut a) = self.get(s, loaded, id)? else {
                continue;
            };
            if a.classify(ev) == super::engine::Related::Clears {
                p.audit_from.entry(a.id).or_insert(a.timeline.len());
                let fx = a.on_related(ev, event_id, false, w.now, &rec);
                p.record(&a, &fx, w, self);
                loaded.insert(a.id, a);
                cleared_any = true;
            }
        }
        if !cleared_any
            && alarm_ended(ev)
            && let Some(k) = alarm_key(ev)
        {
            self.book.early_clears.insert(k, w.now);
        }
        let ctx = RouteContext {
            at: w.now,
            census: Some(w.census),
        };
        let routes = match w.rules.route_in(ev, &ctx) {
            Decision::Routed { routes, .. } | Decision::Test { routes, .. } => routes,
            Decision::Filtered { .. } => return Ok(()),
        };
        for route in &routes {
            self.route_alert(s, w, p, loaded, event_id, ev, route)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn route_alert(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
        p: &mut Pending,
        loaded: &mut HashMap<i64, Alert>,
        event_id: i64,
        ev: &ClinicalEvent,
        route: &Route,
    ) -> Result<(), StorageError> {
        let rec = w.recipients();
        let key = key_of(&route.dedup_key, &route.rule, ev);
        // The same key: fold into the live alert.
        if let Some(id) = self.book.by_key(&key, w.now)
            && let Some(mut a) = self.get(s, loaded, id)?
        {
            p.audit_from.entry(a.id).or_insert(a.timeline.len());
            let fx = if a.state.is_open() {
                a.on_related(
                    ev,
                    event_id,
                    route.dedup_keep == DedupKeep::Latest,
                    w.now,
                    &rec,
                )
            } else {
                a.count += 1;
                let st = a.state;
                a.step(
                    w.now,
                    st,
                    &format!("event:{event_id}"),
                    format!(
                        "duplicate after close, inside the window (count {})",
                        a.count
                    ),
                );
                Effects::default()
            };
            p.record(&a, &fx, w, self);
            loaded.insert(a.id, a);
            return Ok(());
        }
        // An alarm's end raises nothing of its own: it clears or closes
        // what its start raised (above), or waits for a start that comes late.
        if alarm_ended(ev) {
            return Ok(());
        }
        let critical = critical_event(ev).is_some() || route.priority == AlertPriority::Stat;
        // Grouping per patient and unit (never criticals: the rules drop it).
        let gkey = route.group_window.map(|_| group_key(ev));
        if let Some(g) = &gkey
            && let Some(id) = self.book.by_group(g, w.now)
            && let Some(mut a) = self.get(s, loaded, id)?
            && route.priority <= a.priority
        {
            p.audit_from.entry(a.id).or_insert(a.timeline.len());
            a.count += 1;
            let st = a.state;
            a.step(
                w.now,
                st,
                &format!("event:{event_id}"),
                format!("grouped: rule {} (count {})", route.rule, a.count),
            );
            p.record(&a, &Effects::default(), w, self);
            loaded.insert(a.id, a);
            return Ok(());
        }
        // Storms of non-critical alarms per unit fold into one summary.
        let unit = ev
            .location
            .as_ref()
            .map(|l| l.unit.trim().to_string())
            .unwrap_or_default();
        if ev.kind == EventKind::Alarm && !critical && self.cfg.storm_threshold > 0 {
            let window = chrono::Duration::from_std(self.cfg.storm_window).unwrap_or_default();
            let recent = self.book.storms.entry(unit.clone()).or_default();
            while recent.front().is_some_and(|t| *t + window <= w.now) {
                recent.pop_front();
            }
            let in_window = recent.len() as u32;
            if in_window >= self.cfg.storm_threshold {
                let open = self
                    .book
                    .storm_alert
                    .get(&unit)
                    .copied()
                    .filter(|id| self.book.entries.get(id).is_some_and(|e| e.state.is_open()));
                if let Some(id) = open
                    && let Some(mut a) = self.get(s, loaded, id)?
                {
                    p.audit_from.entry(a.id).or_insert(a.timeline.len());
                    a.count += 1;
                    let st = a.state;
                    a.step(
                        w.now,
                        st,
                        &format!("event:{event_id}"),
                        format!("storm: alarm folded in (count {})", a.count),
                    );
                    p.record(&a, &Effects::default(), w, self);
                    loaded.insert(a.id, a);
                    return Ok(());
                }
                let mut summary = self.new_alert(w, event_id, ev, route, key.clone(), None);
                summary.rule = format!("storm:{unit}");
                summary.dedup_key = key_of(&[DedupPart::Unit], "storm", ev);
                summary.priority = summary.priority.max(AlertPriority::Urgent);
                summary.state = State::Notifying;
                summary.deadline = None;
                summary.clear = None;
                summary.count = in_window + 1;
                self.book.storm_alert.insert(unit, summary.id);
                let fx = summary.start(w.now, &rec);
                if let Some(step) = summary.timeline.last_mut() {
                    step.what = format!("storm summary: {}", step.what);
                }
                p.audit_from.insert(summary.id, 0);
                p.record(&summary, &fx, w, self);
                loaded.insert(summary.id, summary);
                return Ok(());
            }
            self.book.storms.entry(unit).or_default().push_back(w.now);
        }
        let mut a = self.new_alert(w, event_id, ev, route, key, gkey);
        // A clear that came first cancels a held alarm on arrival.
        if a.state == State::Held
            && a.clear == Some(ClearOn::AlarmEnd)
            && let Some(k) = alarm_key(ev)
            && self.book.early_clears.remove(&k).is_some()
        {
            a.deadline = None;
            a.step(
                w.now,
                State::Cancelled,
                &format!("event:{event_id}"),
                "its clear arrived first: never sent".into(),
            );
            p.audit_from.insert(a.id, 0);
            p.record(&a, &Effects::default(), w, self);
            loaded.insert(a.id, a);
            return Ok(());
        }
        let fx = a.start(w.now, &rec);
        p.audit_from.insert(a.id, 0);
        p.record(&a, &fx, w, self);
        loaded.insert(a.id, a);
        Ok(())
    }

    fn new_alert(
        &mut self,
        w: &World<'_>,
        event_id: i64,
        ev: &ClinicalEvent,
        route: &Route,
        key: String,
        gkey: Option<String>,
    ) -> Alert {
        let id = self.next_id;
        self.next_id += 1;
        let late_after =
            chrono::Duration::from_std(self.cfg.late_after).unwrap_or(chrono::Duration::MAX);
        let late = ev.occurred_at.is_some_and(|t| t + late_after < w.now);
        let (state, deadline) = match route.hold {
            Some(h) => (State::Held, Some(h.release_at(w.now))),
            None => (State::Notifying, None),
        };
        Alert {
            id,
            rule: route.rule.clone(),
            priority: route.priority,
            target: route.target.clone(),
            policy: (*route.escalation).clone(),
            clear: route.hold.map(|h| h.clear),
            dedup_key: key,
            dedup_until: after(w.now, route.dedup_window),
            group_until: gkey.as_ref().and_then(|_| after(w.now, route.group_window)),
            group_key: gkey,
            state,
            tier: 0,
            round: 0,
            deadline,
            created_at: w.now,
            late,
            count: 1,
            event_id,
            event: ev.clone(),
            notified: Vec::new(),
            accepted_by: None,
            timeline: Vec::new(),
        }
    }

    /// Fires every deadline at or before `now`; returns how many.
    pub fn fire_due(&mut self, s: &mut dyn Storage, w: &World<'_>) -> Result<usize, StorageError> {
        let due = self.book.due(w.now);
        if due.is_empty() {
            return Ok(0);
        }
        let rec = w.recipients();
        let mut p = Pending::new(w.now, self.cfg.outbox_max_per_backend);
        for id in &due {
            let Some(mut a) = s.alert(*id)? else {
                self.book.forget_timer(*id);
                continue;
            };
            p.audit_from.insert(a.id, a.timeline.len());
            let fx = a.on_deadline(w.now, &rec);
            p.record(&a, &fx, w, self);
        }
        if let Err(e) = s.alerts_write(&p.write) {
            self.reload_book(s, w.now);
            return Err(e);
        }
        self.book.prune(w.now);
        Ok(due.len())
    }

    /// Applies an acknowledgement; returns the alert after it.
    pub fn ack(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
        id: i64,
        ack: &Ack,
    ) -> Result<Alert, DeskError> {
        self.ack_via(s, w, id, ack, None)
    }

    /// [`Desk::ack`] done by someone other than the member it names (an
    /// operator through the API or the console): `via` (`operator:NAME`) is
    /// written to the audit trail in the same transaction, so who pressed
    /// the button is on record beside the member the step names.
    pub fn ack_via(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
        id: i64,
        ack: &Ack,
        via: Option<&str>,
    ) -> Result<Alert, DeskError> {
        let mut a = s.alert(id)?.ok_or(DeskError::NotFound)?;
        let mut p = Pending::new(w.now, self.cfg.outbox_max_per_backend);
        p.audit_from.insert(a.id, a.timeline.len());
        let fx = a.on_ack(ack, w.now, &w.recipients())?;
        p.record(&a, &fx, w, self);
        if let Some(via) = via {
            p.write.audit.push(AuditRecord::new(
                w.now,
                via.to_string(),
                "alert.ack.via",
                format!("alert:{}", a.id),
                "alerts",
                ack.describe(),
            ));
        }
        if let Err(e) = s.alerts_write(&p.write) {
            self.reload_book(s, w.now);
            return Err(e.into());
        }
        self.book.prune(w.now);
        Ok(a)
    }

    /// Records a delivery worker's batch in **one** transaction: the
    /// attempts (sent, retrying) and the receipts they produced
    /// (`Ack::Delivered`, ...). An acknowledgement the alert refuses (it
    /// closed meanwhile) or for an alert that is gone is skipped; the rest
    /// is written. Returns how many acknowledgements applied.
    pub fn record_deliveries(
        &mut self,
        s: &mut dyn Storage,
        w: &World<'_>,
        acks: &[(i64, Ack)],
        attempts: Vec<crate::journal::AttemptUpdate>,
    ) -> Result<usize, DeskError> {
        let mut p = Pending::new(w.now, self.cfg.outbox_max_per_backend);
        let mut loaded: HashMap<i64, Alert> = HashMap::new();
        let mut applied = 0;
        for (id, ack) in acks {
            if !loaded.contains_key(id) {
                let Some(a) = s.alert(*id)? else { continue };
                p.audit_from.insert(a.id, a.timeline.len());
                loaded.insert(*id, a);
            }
            let Some(a) = loaded.get_mut(id) else {
                continue;
            };
            if let Ok(fx) = a.on_ack(ack, w.now, &w.recipients()) {
                p.record(a, &fx, w, self);
                applied += 1;
            }
        }
        p.write.attempts = attempts;
        if let Err(e) = s.alerts_write(&p.write) {
            self.reload_book(s, w.now);
            return Err(e.into());
        }
        self.book.prune(w.now);
        Ok(applied)
    }
}
