//! [`Census::apply`]: the ADT semantics (see the module documentation).

use crate::event::{ClinicalEvent, EventKind, Location, Processing, ProviderRole};

use super::{
    Applied, Bed, BedResolution, Census, EncounterStatus, Ignored, PatientKey, PatientState,
    PendingSwap, ProviderRef, Resume, Warning, norm_location,
};

/// Who wins a bed that the index gives to someone else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The newer message: the newcomer takes the bed.
    Evict,
    /// A restore (cancel, swap leftovers): the occupant keeps it.
    Keep,
}

impl Census {
    /// Applies one event (events must come in journal order). Never panics;
    /// inconsistencies are applied as far as safe and reported.
    pub fn apply(&mut self, ev: &ClinicalEvent) -> Applied {
        let mut out = Applied::default();
        if !ev.kind.is_adt() {
            out.ignored = Some(Ignored::NotAdt);
            return out;
        }
        if ev.processing != Processing::Production {
            out.ignored = Some(Ignored::NotProduction);
            return out;
        }
        // A held A17 half ends at any event that is not its pair.
        let paired = self.pending_swap.as_ref().is_some_and(|p| {
            ev.kind == EventKind::BedSwap
                && p.sender == ev.source.sender
                && p.control_id == ev.source.control_id
        });
        if !paired
            && let Some(p) = self.pending_swap.take()
            && !p.executed
        {
            out.warnings
                .push(Warning::IncompleteSwap { patient: p.patient });
        }
        let keys = event_keys(ev);
        if keys.is_empty() {
            out.warnings.push(Warning::NoIdentifier { kind: ev.kind });
            return out;
        }
        if ev.kind == EventKind::Merge {
            self.merge(ev, keys, &mut out);
            return out;
        }
        let found = self.find(&keys, &mut out.warnings);
        let creates = matches!(
            ev.kind,
            EventKind::Admit
                | EventKind::Register
                | EventKind::OutpatientToInpatient
                | EventKind::InpatientToOutpatient
                | EventKind::Transfer
                | EventKind::Update
                | EventKind::BedSwap
        );
        let r = match found {
            Some(r) => r,
            None if creates => {
                if !matches!(ev.kind, EventKind::Admit | EventKind::Register) {
                    out.warnings.push(Warning::UnknownPatient {
                        kind: ev.kind,
                        patient: keys[0].clone(),
                        created: true,
                    });
                }
                self.create(keys.clone())
            }
            None => {
                out.warnings.push(Warning::UnknownPatient {
                    kind: ev.kind,
                    patient: keys[0].clone(),
                    created: false,
                });
                return out;
            }
        };
        self.link(r, &keys);
        if let Some(p) = self.records.get_mut(&r) {
            if ev.occurred_at.is_some() {
                p.updated_at = ev.occurred_at;
            }
            out.patient = Some(p.key().clone());
        }
        let w = &mut out.warnings;
        match ev.kind {
            EventKind::Admit | EventKind::Register => self.admit(ev, r, w),
            EventKind::OutpatientToInpatient | EventKind::InpatientToOutpatient => {
                self.change_class(ev, r, w)
            }
            EventKind::Transfer => self.transfer(ev, r, w),
            EventKind::Discharge => self.discharge(r, w),
            EventKind::Update => self.update(ev, r, w),
            EventKind::CancelAdmit => self.cancel_admit(r, w),
            EventKind::CancelTransfer => self.cancel_transfer(ev, r, w),
            EventKind::CancelDischarge => self.cancel_discharge(ev, r, w),
            EventKind::BedSwap => self.swap(ev, r, w),
            _ => {}
        }
        out
    }

    fn key(&self, r: u64) -> PatientKey {
        self.records
            .get(&r)
            .map(|p| p.key().clone())
            .unwrap_or_else(|| PatientKey::new("", ""))
    }

    fn status(&self, r: u64) -> EncounterStatus {
        self.records
            .get(&r)
            .map(|p| p.status)
            .unwrap_or(EncounterStatus::Unknown)
    }

    fn location(&self, r: u64) -> Option<Location> {
        self.records.get(&r).and_then(|p| p.location.clone())
    }

    /// The first record any of the keys finds; keys finding another record
    /// are reported.
    fn find(&self, keys: &[PatientKey], w: &mut Vec<Warning>) -> Option<u64> {
        let mut found: Option<u64> = None;
        for k in keys {
            if let Some(r) = self.record_of(k) {
                match found {
                    None => found = Some(r),
                    Some(f) if f != r => w.push(Warning::IdentityConflict {
                        patient: self.key(f),
                        other: k.clone(),
                    }),
                    _ => {}
                }
            }
        }
        found
    }

    fn create(&mut self, keys: Vec<PatientKey>) -> u64 {
        let r = self.next_record;
        self.next_record += 1;
        let mut mine = Vec::new();
        for k in keys {
            if !self.ids.contains_key(&k) && !mine.contains(&k) {
                self.ids.insert(k.clone(), r);
                mine.push(k);
            }
        }
        self.records.insert(r, PatientState::new(mine));
        r
    }

    /// Adds the keys nobody has to record `r`.
    fn link(&mut self, r: u64, keys: &[PatientKey]) {
        for k in keys {
            if !self.ids.contains_key(k)
                && let Some(p) = self.records.get_mut(&r)
            {
                self.ids.insert(k.clone(), r);
                p.identifiers.push(k.clone());
            }
        }
    }

    /// Frees `r`'s bed (only if the index gives it to `r`).
    fn vacate(&mut self, r: u64) {
        if let Some(b) = self.records.get(&r).and_then(|p| p.bed())
            && self.beds.get(&b) == Some(&r)
        {
            self.beds.remove(&b);
        }
    }

    /// Puts `r` at `loc` (its old bed freed), settling a bed conflict per `claim`.
    fn place(&mut self, r: u64, loc: Option<Location>, claim: Claim, w: &mut Vec<Warning>) {
        self.vacate(r);
        let bed = loc.as_ref().and_then(Bed::of);
        let Some(p) = self.records.get_mut(&r) else {
            return;
        };
        p.location = loc;
        p.displaced = false;
        let Some(bed) = bed else {
            return;
        };
        match self.beds.get(&bed).copied() {
            None => {
                self.beds.insert(bed, r);
            }
            Some(o) if o == r => {}
            Some(o) => {
                let (occupant, incoming) = (self.key(o), self.key(r));
                let resolution = match claim {
                    Claim::Evict => {
                        if let Some(op) = self.records.get_mut(&o) {
                            op.displaced = true;
                        }
                        self.beds.insert(bed.clone(), r);
                        BedResolution::IncomingTookBed
                    }
                    Claim::Keep => {
                        if let Some(p) = self.records.get_mut(&r) {
                            p.displaced = true;
                        }
                        BedResolution::OccupantKept
                    }
                };
                w.push(Warning::BedOccupied {
                    bed,
                    occupant,
                    incoming,
                    resolution,
                });
            }
        }
    }

    /// Moves `r` to `loc` (prior = old location when it changes).
    fn move_to(&mut self, r: u64, loc: Location, claim: Claim, w: &mut Vec<Warning>) {
        let old = self.location(r);
        if old.as_ref() == Some(&loc) && !self.records.get(&r).is_some_and(|p| p.displaced) {
            return;
        }
        self.place(r, Some(loc.clone()), claim, w);
        if old.is_some()
            && old.as_ref() != Some(&loc)
            && let Some(p) = self.records.get_mut(&r)
        {
            p.prior_location = old;
        }
    }

    fn admit(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        if status == EncounterStatus::Inpatient {
            w.push(Warning::AlreadyAdmitted {
                kind: ev.kind,
                patient: self.key(r),
            });
        }
        let (new_status, default_class) = if ev.kind == EventKind::Admit {
            (EncounterStatus::Inpatient, "I")
        } else {
            (EncounterStatus::Registered, "")
        };
        self.place(r, norm_location(ev.location.as_ref()), Claim::Evict, w);
        if let Some(p) = self.records.get_mut(&r) {
            p.status = new_status;
            p.patient_class = class_or(ev, default_class);
            p.prior_location = None;
            p.visit = ev.visit.clone();
            p.before_discharge = None;
            p.care_team = providers(ev);
        }
    }

    fn change_class(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let (status, default_class) = if ev.kind == EventKind::OutpatientToInpatient {
            (EncounterStatus::Inpatient, "I")
        } else {
            (EncounterStatus::Outpatient, "O")
        };
        if !self.status(r).is_active() {
            // The patient had left: a new encounter of this class.
            self.place(r, None, Claim::Evict, w);
            if let Some(p) = self.records.get_mut(&r) {
                p.prior_location = None;
                p.before_discharge = None;
            }
        }
        if let Some(loc) = norm_location(ev.location.as_ref()) {
            self.move_to(r, loc, Claim::Evict, w);
        }
        if let Some(p) = self.records.get_mut(&r) {
            p.status = status;
            p.patient_class = class_or(ev, default_class);
            if ev.visit.is_some() {
                p.visit = ev.visit.clone();
            }
            update_team(&mut p.care_team, ev);
        }
    }

    fn transfer(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        if !status.is_active() {
            w.push(Warning::NotActive {
                kind: ev.kind,
                patient: self.key(r),
                status,
            });
            return;
        }
        let Some(loc) = norm_location(ev.location.as_ref()) else {
            w.push(Warning::NoLocation {
                kind: ev.kind,
                patient: self.key(r),
            });
            return;
        };
        let was_known = self.location(r).is_some();
        self.move_to(r, loc, Claim::Evict, w);
        if let Some(p) = self.records.get_mut(&r) {
            if !was_known {
                // First sight of the patient: PV1-6 is the best prior we have.
                p.prior_location = norm_location(ev.prior_location.as_ref());
            }
            if p.status == EncounterStatus::Unknown {
                p.status = EncounterStatus::Inpatient;
            }
            if !ev.patient_class.trim().is_empty() {
                p.patient_class = ev.patient_class.trim().to_string();
            }
            update_team(&mut p.care_team, ev);
        }
    }

    fn discharge(&mut self, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        match status {
            EncounterStatus::Discharged => {
                w.push(Warning::AlreadyDischarged {
                    patient: self.key(r),
                });
                return;
            }
            EncounterStatus::NotAdmitted => {
                w.push(Warning::NotActive {
                    kind: EventKind::Discharge,
                    patient: self.key(r),
                    status,
                });
                return;
            }
            _ => {}
        }
        self.vacate(r);
        if let Some(p) = self.records.get_mut(&r) {
            p.before_discharge = Some(Resume {
                status: p.status,
                location: p.location.clone(),
                prior_location: p.prior_location.clone(),
            });
            p.status = EncounterStatus::Discharged;
            p.prior_location = p.location.take().or(p.prior_location.take());
            p.displaced = false;
        }
    }

    fn update(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        if self.status(r).is_active()
            && let Some(loc) = norm_location(ev.location.as_ref())
        {
            let old = self.records.get(&r).and_then(|p| p.prior_location.clone());
            self.move_to(r, loc, Claim::Evict, w);
            // A08 corrects the location; it is not a move.
            if let Some(p) = self.records.get_mut(&r) {
                p.prior_location = old;
            }
        }
        if let Some(p) = self.records.get_mut(&r) {
            if !ev.patient_class.trim().is_empty() {
                p.patient_class = ev.patient_class.trim().to_string();
            }
            if ev.visit.is_some() {
                p.visit = ev.visit.clone();
            }
            update_team(&mut p.care_team, ev);
        }
    }

    fn cancel_admit(&mut self, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        if !status.is_active() {
            w.push(Warning::NothingToCancel {
                kind: EventKind::CancelAdmit,
                patient: self.key(r),
                status,
            });
            return;
        }
        self.vacate(r);
        if let Some(p) = self.records.get_mut(&r) {
            p.status = EncounterStatus::NotAdmitted;
            p.location = None;
            p.displaced = false;
            p.prior_location = None;
            p.patient_class.clear();
            p.visit = None;
            p.care_team.clear();
            p.before_discharge = None;
        }
    }

    fn cancel_transfer(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        let current = self.location(r);
        let target = norm_location(ev.location.as_ref())
            .or_else(|| self.records.get(&r).and_then(|p| p.prior_location.clone()));
        let target = match target {
            Some(t) if status.is_active() && current.as_ref() != Some(&t) => t,
            _ => {
                w.push(Warning::NothingToCancel {
                    kind: EventKind::CancelTransfer,
                    patient: self.key(r),
                    status,
                });
                return;
            }
        };
        self.place(r, Some(target), Claim::Keep, w);
        if let Some(p) = self.records.get_mut(&r) {
            p.prior_location = None;
        }
    }

    fn cancel_discharge(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let status = self.status(r);
        if status != EncounterStatus::Discharged {
            w.push(Warning::NothingToCancel {
                kind: EventKind::CancelDischarge,
                patient: self.key(r),
                status,
            });
            return;
        }
        let resume = self
            .records
            .get_mut(&r)
            .and_then(|p| p.before_discharge.take());
        let (status, loc, prior) = match resume {
            Some(x) => (x.status, x.location, x.prior_location),
            None => (EncounterStatus::Inpatient, None, None),
        };
        let loc = norm_location(ev.location.as_ref()).or(loc);
        if let Some(p) = self.records.get_mut(&r) {
            p.status = status;
            p.prior_location = prior;
        }
        self.place(r, loc, Claim::Keep, w);
    }

    fn swap(&mut self, ev: &ClinicalEvent, r: u64, w: &mut Vec<Warning>) {
        let held = self.pending_swap.take();
        let status = self.status(r);
        let target = norm_location(ev.location.as_ref());
        let refused = match &target {
            _ if !status.is_active() => Some(Warning::NotActive {
                kind: ev.kind,
                patient: self.key(r),
                status,
            }),
            None => Some(Warning::NoLocation {
                kind: ev.kind,
                patient: self.key(r),
            }),
            Some(_) => None,
        };
        let (Some(target), None) = (target, &refused) else {
            // A held half cannot pair with a refused one.
            if let Some(h) = held
                && !h.executed
            {
                w.push(Warning::IncompleteSwap { patient: h.patient });
            }
            w.extend(refused);
            return;
        };
        if let Some(p) = self.records.get_mut(&r) {
            if p.status == EncounterStatus::Unknown {
                p.status = EncounterStatus::Inpatient;
            }
            update_team(&mut p.care_team, ev);
        }
        let here = self.location(r).as_ref() == Some(&target)
            && !self.records.get(&r).is_some_and(|p| p.displaced);
        let other = held
            .as_ref()
            .and_then(|h| self.record_of(&h.patient))
            .filter(|o| *o != r);
        let paired = held.as_ref().is_some_and(|h| !h.executed) && other.is_some();
        let confirms = held.as_ref().is_some_and(|h| h.executed);
        if here && paired {
            // Second half, current-location convention: exchange now.
            if let Some(o) = other {
                self.exchange(r, o, w);
            }
            return;
        }
        if here && confirms {
            // Second half of a swap the first half already made.
            return;
        }
        if let Some(h) = held
            && !h.executed
            && here
        {
            // A held half this one cannot pair with.
            w.push(Warning::IncompleteSwap { patient: h.patient });
        }
        let pending = |executed| PendingSwap {
            sender: ev.source.sender.clone(),
            control_id: ev.source.control_id.clone(),
            patient: self.key(r),
            executed,
        };
        if here {
            // PV1-3 names where the patient already is: wait for the pair.
            self.pending_swap = Some(pending(false));
            return;
        }
        let pending = pending(true);
        let occupant = Bed::of(&target)
            .and_then(|b| self.beds.get(&b).copied())
            .filter(|o| *o != r);
        match occupant {
            Some(o) if self.location(r).is_some() => self.exchange(r, o, w),
            _ => self.move_to(r, target, Claim::Evict, w),
        }
        self.pending_swap = Some(pending);
    }

    /// Exchanges the locations of `a` and `b` (priors = their old locations).
    fn exchange(&mut self, a: u64, b: u64, w: &mut Vec<Warning>) {
        let (la, lb) = (self.location(a), self.location(b));
        self.vacate(a);
        self.vacate(b);
        for r in [a, b] {
            if let Some(p) = self.records.get_mut(&r) {
                p.location = None;
                p.displaced = false;
            }
        }
        self.place(a, lb.clone(), Claim::Keep, w);
        self.place(b, la.clone(), Claim::Keep, w);
        if let Some(p) = self.records.get_mut(&a) {
            p.prior_location = la;
        }
        if let Some(p) = self.records.get_mut(&b) {
            p.prior_location = lb;
        }
    }

    fn merge(&mut self, ev: &ClinicalEvent, keys: Vec<PatientKey>, out: &mut Applied) {
        let w = &mut out.warnings;
        let prior: Vec<PatientKey> = ev
            .merged_identifiers
            .iter()
            .filter_map(PatientKey::of)
            .filter(|k| !keys.contains(k))
            .collect();
        let mut folded: Vec<u64> = Vec::new();
        for k in &prior {
            if let Some(r) = self.record_of(k)
                && !folded.contains(&r)
            {
                folded.push(r);
            }
        }
        let survivor = match self.find(&keys, w) {
            Some(s) => s,
            None => match folded.first().copied() {
                // Only the prior record is known: it becomes the survivor,
                // with the survivor's identifiers first.
                Some(f) => {
                    folded.remove(0);
                    for k in &keys {
                        if !self.ids.contains_key(k) {
                            self.ids.insert(k.clone(), f);
                        }
                    }
                    if let Some(p) = self.records.get_mut(&f) {
                        let mut ids: Vec<PatientKey> = keys
                            .iter()
                            .filter(|k| self.ids.get(*k) == Some(&f))
                            .cloned()
                            .collect();
                        ids.extend(p.identifiers.drain(..).filter(|k| !keys.contains(k)));
                        p.identifiers = ids;
                    }
                    f
                }
                None => {
                    w.push(Warning::UnknownPatient {
                        kind: EventKind::Merge,
                        patient: keys[0].clone(),
                        created: true,
                    });
                    self.create(keys.clone())
                }
            },
        };
        self.link(survivor, &keys);
        folded.retain(|r| *r != survivor);
        for f in folded {
            self.fold(survivor, f, w);
        }
        for k in &prior {
            if !self.ids.contains_key(k) {
                self.ids.insert(k.clone(), survivor);
                if let Some(p) = self.records.get_mut(&survivor) {
                    p.identifiers.push(k.clone());
                }
            }
        }
        if let Some(p) = self.records.get_mut(&survivor) {
            if ev.occurred_at.is_some() {
                p.updated_at = ev.occurred_at;
            }
            out.patient = Some(p.key().clone());
        }
        if let Some(h) = &self.pending_swap
            && self.record_of(&h.patient).is_none()
        {
            self.pending_swap = None;
        }
    }

    /// Folds record `f` into `s`.
    fn fold(&mut self, s: u64, f: u64, w: &mut Vec<Warning>) {
        let Some(merged) = self.records.remove(&f) else {
            return;
        };
        let merged_bed = merged.bed().filter(|b| self.beds.get(b) == Some(&f));
        if let Some(b) = &merged_bed {
            self.beds.remove(b);
        }
        for k in &merged.identifiers {
            self.ids.insert(k.clone(), s);
        }
        let Some(sv) = self.records.get(&s).cloned() else {
            return;
        };
        let take_encounter = !sv.status.is_active() && merged.status.is_active()
            || sv.status == EncounterStatus::Unknown && sv.location.is_none();
        let mut sv = sv;
        sv.identifiers.extend(merged.identifiers.iter().cloned());
        for c in &merged.care_team {
            if !sv.care_team.contains(c) {
                sv.care_team.push(c.clone());
            }
        }
        if sv.visit.is_none() {
            sv.visit = merged.visit.clone();
        }
        if sv.updated_at < merged.updated_at {
            sv.updated_at = merged.updated_at;
        }
        let survivor_key = sv.key().clone();
        let mut relocate: Option<Option<Location>> = None;
        if take_encounter {
            sv.status = merged.status;
            sv.patient_class = merged.patient_class.clone();
            sv.prior_location = merged.prior_location.clone();
            sv.before_discharge = merged.before_discharge.clone();
            relocate = Some(merged.location.clone());
        } else if sv.status.is_active() && sv.location.is_none() && merged.location.is_some() {
            sv.prior_location = merged.prior_location.clone();
            relocate = Some(merged.location.clone());
        } else if let Some(b) = merged_bed {
            w.push(Warning::MergeBedConflict {
                survivor: survivor_key,
                merged: merged.key().clone(),
                freed: b,
            });
        }
        self.records.insert(s, sv);
        if let Some(loc) = relocate {
            self.place(s, loc, Claim::Keep, w);
        }
    }
}

/// The event's patient keys, in order, without repeats.
fn event_keys(ev: &ClinicalEvent) -> Vec<PatientKey> {
    let mut keys: Vec<PatientKey> = Vec::new();
    for k in ev.patient.identifiers.iter().filter_map(PatientKey::of) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

fn class_or(ev: &ClinicalEvent, default: &str) -> String {
    let c = ev.patient_class.trim();
    if c.is_empty() { default } else { c }.to_string()
}

/// The care-team entries of an event (ordering providers are per order).
fn providers(ev: &ClinicalEvent) -> Vec<ProviderRef> {
    let mut out: Vec<ProviderRef> = Vec::new();
    for p in &ev.providers {
        if p.role == ProviderRole::Ordering || p.id.value.trim().is_empty() {
            continue;
        }
        let r = ProviderRef {
            role: p.role,
            role_code: if p.role == ProviderRole::CareTeam {
                p.role_code.trim().to_string()
            } else {
                String::new()
            },
            id: crate::event::Identifier {
                value: p.id.value.trim().to_string(),
                authority: p.id.authority.trim().to_string(),
                type_code: p.id.type_code.trim().to_string(),
            },
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Replaces, per role (and per ROL code), the roles the event names.
fn update_team(team: &mut Vec<ProviderRef>, ev: &ClinicalEvent) {
    let new = providers(ev);
    if new.is_empty() {
        return;
    }
    let named = |c: &ProviderRef| {
        new.iter().any(|n| {
            n.role == c.role && (c.role != ProviderRole::CareTeam || n.role_code == c.role_code)
        })
    };
    team.retain(|c| !named(c));
    team.extend(new.iter().cloned());
}
