//! Raw mapping files -> validated [`Rules`], checked against the rosters.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer;

use chrono::NaiveTime;
use chrono_tz::Tz;

use super::matcher::normal_system;
use super::raw::{
    RawFallback, RawMappings, RawMatch, RawPolicy, RawReroute, RawRoute, RawRule, RawTier,
    RawWindow,
};
use super::safety::{ALARM_PRIORITIES, critical_result_reason, high_alarm_reason};
use super::{
    AlertPriority, ClearOn, DEFAULT_POLICY, DedupKeep, DedupPart, EscalationPolicy, Glob, Hold,
    MAX_DELAY_SECS, Match, Relation, RerouteSpec, RerouteTo, RerouteWhen, RouteSpec, Rule, Rules,
    Scope, TEST_POLICY, Target, Tier, TierTarget, Window,
};
use crate::config::ConfigError;
use crate::config::locate::{FieldPath, Locator};
use crate::event::{EventKind, Priority, ResultStatus};
use crate::roster::schedule::parse_time;
use crate::roster::{Reporter, Rosters, Source, Weekdays, parse_toml};

const RELATIONS: &str = "attending, admitting, ordering, referring, consulting, assigned-nurse";

struct Parsed {
    path: PathBuf,
    locator: Locator,
    raw: RawMappings,
}

pub(crate) fn load(sources: &[Source], rosters: &Rosters) -> Result<Rules, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for src in sources {
        let locator = Locator::new(&src.text);
        match parse_toml::<RawMappings>(&src.path, &src.text, &locator) {
            Ok(raw) => files.push(Parsed {
                path: src.path.clone(),
                locator,
                raw,
            }),
            Err(e) => errors.push(e),
        }
    }
    // Policies first: rules in any file may name a policy of any file.
    let mut policies: BTreeMap<String, Arc<EscalationPolicy>> = BTreeMap::new();
    policies.insert(
        DEFAULT_POLICY.to_string(),
        Arc::new(EscalationPolicy::builtin_default()),
    );
    let mut policy_files: HashMap<String, PathBuf> = HashMap::new();
    for f in &files {
        let rep = Reporter {
            file: &f.path,
            locator: &f.locator,
        };
        let mut c = Ctx {
            rep: &rep,
            errors: &mut errors,
            rosters,
        };
        for (name, p) in &f.raw.escalations {
            let path = FieldPath::root().key("escalations").key(name);
            if name == TEST_POLICY {
                c.err(
                    &path,
                    format!(
                        "`{TEST_POLICY}` is the built-in policy of test-destination routes: choose another name"
                    ),
                );
                continue;
            }
            if let Some(first) = policy_files.get(name) {
                c.err(
                    &path,
                    format!(
                        "escalation policy `{name}` is already defined in {}",
                        first.display()
                    ),
                );
                continue;
            }
            policy_files.insert(name.clone(), f.path.clone());
            if let Some(policy) = c.policy(&path, name, p) {
                policies.insert(name.clone(), Arc::new(policy));
            }
        }
    }
    let test_policy = Arc::new(EscalationPolicy::builtin_test());
    let mut rules = Vec::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for f in &files {
        let rep = Reporter {
            file: &f.path,
            locator: &f.locator,
        };
        let mut c = Ctx {
            rep: &rep,
            errors: &mut errors,
            rosters,
        };
        for (i, r) in f.raw.rules.iter().enumerate() {
            let p = FieldPath::root().key("rules").index(i);
            let name = c.required(&p.key("name"), &r.name, "a unique rule name");
            if let Some(n) = name {
                if let Some(first) = names.get(n) {
                    c.err(
                        &p.key("name"),
                        format!("rule `{n}` is already defined in {}", first.display()),
                    );
                } else {
                    names.insert(n.to_string(), f.path.clone());
                }
            }
            let mut matcher = c.matcher(&p.key("match"), &r.matcher);
            let route = match &r.route {
                Some(route) => c.route(
                    &p.key("route"),
                    route,
                    &policies,
                    &policy_files,
                    &test_policy,
                ),
                None => {
                    c.err(
                        &p.key("route"),
                        "required: route = { role = ..., priority = ..., escalation = ... }",
                    );
                    None
                }
            };
            let reroutes = c.reroutes(&p, r, route.as_ref());
            if let Some(route) = &route {
                c.rule_safety(&p, r, &matcher, route);
                matcher.test_only = route.test_destination;
            }
            if let (Some(name), Some(route)) = (name, route) {
                rules.push(Rule {
                    name: name.to_string(),
                    source: f.path.clone(),
                    matcher,
                    continue_: r.continue_,
                    route,
                    reroutes,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(Rules { rules, policies })
    } else {
        Err(errors)
    }
}

/// The target fields of a route or re-route, as written.
struct TargetFields<'r> {
    role: &'r Option<String>,
    scope: &'r Option<String>,
    relation: &'r Option<String>,
    person: &'r Option<String>,
    fallback: &'r Option<RawFallback>,
}

struct Ctx<'a, 'b> {
    rep: &'a Reporter<'b>,
    errors: &'a mut Vec<ConfigError>,
    rosters: &'a Rosters,
}

impl Ctx<'_, '_> {
    fn err(&mut self, p: &FieldPath, problem: impl Into<String>) {
        self.errors.push(self.rep.at(p, problem));
    }

    fn required<'s>(
        &mut self,
        p: &FieldPath,
        v: &'s Option<String>,
        what: &str,
    ) -> Option<&'s str> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.err(p, format!("required: {what}"));
                None
            }
        }
    }

    fn globs(&mut self, p: &FieldPath, v: &[String]) -> Vec<Glob> {
        v.iter()
            .enumerate()
            .filter_map(|(i, g)| match Glob::new(g.trim()) {
                Ok(g) => Some(g),
                Err(e) => {
                    self.err(&p.index(i), format!("bad glob `{g}`: {e}"));
                    None
                }
            })
            .collect()
    }

    fn matcher(&mut self, p: &FieldPath, m: &RawMatch) -> Match {
        let mut out = Match {
            allow_test: m.allow_test,
            ..Match::default()
        };
        for (i, k) in m.kind.iter().enumerate() {
            match EventKind::deserialize(k.trim().into_deserializer())
                as Result<EventKind, serde::de::value::Error>
            {
                Ok(kind) => out.kinds.push(kind),
                Err(_) => self.err(
                    &p.key("kind").index(i),
                    format!(
                        "`{k}` is not an event kind (admit, transfer, discharge, register, update, \
                         cancel-admit, cancel-transfer, cancel-discharge, bed-swap, merge, result, order, alarm, ...)"
                    ),
                ),
            }
        }
        for (i, t) in m.message_type.iter().enumerate() {
            let mut parts = t.trim().splitn(2, '^');
            let ty = parts.next().unwrap_or("").trim();
            let trig = parts.next().map(str::trim);
            let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
            if ok(ty) && trig.is_none_or(ok) {
                out.message_types
                    .push((ty.to_string(), trig.map(str::to_string)));
            } else {
                self.err(
                    &p.key("message_type").index(i),
                    format!("`{t}` is not a message type such as ORU or ORU^R01"),
                );
            }
        }
        for (i, s) in m.sender.iter().enumerate() {
            if s.trim().is_empty() {
                self.err(&p.key("sender").index(i), "must not be empty");
            } else {
                out.senders.push(s.trim().to_string());
            }
        }
        for (i, c) in m.codes.iter().enumerate() {
            match c.split_once('|') {
                Some((sys, code)) if !sys.trim().is_empty() && !code.trim().is_empty() => {
                    out.codes
                        .push((normal_system(sys), code.trim().to_string()));
                }
                _ => self.err(
                    &p.key("codes").index(i),
                    format!("`{c}` is not SYSTEM|CODE such as LN|2823-3"),
                ),
            }
        }
        for (i, f) in m.flags.iter().enumerate() {
            if f.trim().is_empty() {
                self.err(&p.key("flags").index(i), "must not be empty");
            } else {
                out.flags.push(f.trim().to_string());
            }
        }
        if let Some(pr) = &m.priority_at_least {
            out.priority_at_least = match pr.trim().to_ascii_lowercase().as_str() {
                "routine" => Some(Priority::Routine),
                "urgent" | "asap" => Some(Priority::Urgent),
                "stat" => Some(Priority::Stat),
                _ => {
                    self.err(
                        &p.key("priority_at_least"),
                        format!("`{pr}` is not routine, urgent, asap or stat"),
                    );
                    None
                }
            };
        }
        out.units = self.globs(&p.key("units"), &m.units);
        out.locations = self.globs(&p.key("locations"), &m.locations);
        out.facilities = self.globs(&p.key("facilities"), &m.facilities);
        for (i, s) in m.result_status.iter().enumerate() {
            match ResultStatus::deserialize(s.trim().into_deserializer())
                as Result<ResultStatus, serde::de::value::Error>
            {
                Ok(st) => out.result_status.push(st),
                Err(_) => self.err(
                    &p.key("result_status").index(i),
                    format!(
                        "`{s}` is not a result status (preliminary, final, corrected, wrong-patient, deleted, cannot-obtain, unknown)"
                    ),
                ),
            }
        }
        for (i, a) in m.alarm_priority.iter().enumerate() {
            let code = a.trim().to_ascii_uppercase();
            if ALARM_PRIORITIES.contains(&code.as_str()) {
                out.alarm_priority.push(code);
            } else {
                self.err(
                    &p.key("alarm_priority").index(i),
                    format!(
                        "`{a}` is not an IHE PCD ACM alarm priority (PH high, PM medium, PL low, PN none)"
                    ),
                );
            }
        }
        for (i, w) in m.during.iter().enumerate() {
            if let Some(w) = self.window(&p.key("during").index(i), w) {
                out.during.push(w);
            }
        }
        out
    }

    fn window(&mut self, p: &FieldPath, w: &RawWindow) -> Option<Window> {
        let tz = match self.required(
            &p.key("timezone"),
            &w.timezone,
            "an IANA time zone such as America/New_York",
        ) {
            Some(z) => match z.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.err(
                        &p.key("timezone"),
                        format!("`{z}` is not an IANA time zone name (e.g. America/New_York)"),
                    );
                    None
                }
            },
            None => None,
        };
        let days = match &w.days {
            None => Some(Weekdays::ALL),
            Some(list) if list.is_empty() => {
                self.err(
                    &p.key("days"),
                    "must name at least one day (or leave it out for every day)",
                );
                None
            }
            Some(list) => {
                let mut mask = 0u8;
                let mut ok = true;
                for (i, d) in list.iter().enumerate() {
                    match Weekdays::parse_day(d) {
                        Some(n) if mask & (1 << n) != 0 => {
                            self.err(&p.key("days").index(i), format!("`{d}` is listed twice"));
                            ok = false;
                        }
                        Some(n) => mask |= 1 << n,
                        None => {
                            self.err(
                                &p.key("days").index(i),
                                format!("`{d}` is not a day (mon, tue, ... sun)"),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(Weekdays(mask))
            }
        };
        let time = |c: &mut Self, field: &str, v: &Option<String>| -> Option<Option<NaiveTime>> {
            match v {
                None => Some(None),
                Some(s) => match parse_time(s) {
                    Some(t) => Some(Some(t)),
                    None => {
                        c.err(
                            &p.key(field),
                            format!("`{s}` is not a local time such as \"22:00\""),
                        );
                        None
                    }
                },
            }
        };
        let from = time(self, "from", &w.from);
        let to = time(self, "to", &w.to);
        let (from, to) = match (from?, to?) {
            (None, None) => (NaiveTime::MIN, NaiveTime::MIN),
            (Some(f), Some(t)) if f == t => {
                self.err(&p.key("to"), "equals `from`: leave both out for whole days");
                return None;
            }
            (Some(f), Some(t)) => (f, t),
            (Some(_), None) => {
                self.err(&p.key("to"), "required with `from`: the local end time");
                return None;
            }
            (None, Some(_)) => {
                self.err(&p.key("from"), "required with `to`: the local start time");
                return None;
            }
        };
        Some(Window {
            timezone: tz?,
            days: days?,
            from,
            to,
        })
    }

    /// A role target must exist in the rosters for the scope it will be asked with.
    fn role(&mut self, p: &FieldPath, role: &str, scope: &Scope) {
        let scopes = self.rosters.role_scopes(role);
        if scopes.is_empty() {
            let mut known: Vec<String> = self
                .rosters
                .rosters()
                .iter()
                .flat_map(|r| r.roles.iter().map(|x| x.name.clone()))
                .collect();
            known.sort();
            known.dedup();
            self.err(
                p,
                format!(
                    "unknown role `{role}`: no roster defines it (roles: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            return;
        }
        let unscoped = scopes.contains(&None);
        match scope {
            Scope::None if !unscoped => self.err(
                p,
                format!(
                    "role `{role}` is only defined for units {}: give `scope` (\"unit\" or a unit name)",
                    show_scopes(&scopes)
                ),
            ),
            Scope::EventUnit | Scope::CensusUnit if !unscoped => self.err(
                p,
                format!(
                    "role `{role}` is only defined for units {}: events from other units would reach nobody; \
                     define an unscoped `{role}` role as the fallback",
                    show_scopes(&scopes)
                ),
            ),
            Scope::Unit(u) if !self.rosters.has_role(role, Some(u)) => self.err(
                p,
                format!(
                    "role `{role}` is not defined for unit `{u}` (units: {}) and has no unscoped fallback",
                    show_scopes(&scopes)
                ),
            ),
            _ => {}
        }
    }

    fn person(&mut self, p: &FieldPath, id: &str) {
        if self.rosters.member(id).is_none() {
            self.err(
                p,
                format!("unknown person `{id}`: no roster has a member with this id"),
            );
        }
    }

    fn scope(&mut self, p: &FieldPath, s: &Option<String>) -> Scope {
        match s.as_deref().map(str::trim) {
            None => Scope::None,
            Some("") => {
                self.err(
                    p,
                    "must not be empty: \"unit\" (the event's unit), \"census-unit\" or a unit name",
                );
                Scope::None
            }
            Some("unit") => Scope::EventUnit,
            Some("census-unit") => Scope::CensusUnit,
            Some(u) => Scope::Unit(u.to_string()),
        }
    }

    /// The target named by `role` (+ `scope`), `relation` (+ `fallback`) or
    /// `person`, checked against the rosters; the caller checks that exactly
    /// one is given.
    fn target(&mut self, p: &FieldPath, t: TargetFields<'_>) -> Option<Target> {
        if t.scope.is_some() && t.role.is_none() {
            self.err(&p.key("scope"), "only meaningful with `role`");
        }
        if t.fallback.is_some() && t.relation.is_none() {
            self.err(&p.key("fallback"), "only meaningful with `relation`");
        }
        if let Some(role) = t.role {
            let scope = self.scope(&p.key("scope"), t.scope);
            self.role(&p.key("role"), role.trim(), &scope);
            Some(Target::Role {
                role: role.trim().to_string(),
                scope,
            })
        } else if let Some(rel) = t.relation {
            let relation = Relation::parse(rel);
            if relation.is_none() {
                self.err(
                    &p.key("relation"),
                    format!("`{rel}` is not a care-team relation ({RELATIONS})"),
                );
            }
            let fallback = t.fallback.as_ref().and_then(|f| {
                let fp = p.key("fallback");
                match (&f.role, &f.person) {
                    (Some(role), None) => {
                        let scope = self.scope(&fp.key("scope"), &f.scope);
                        self.role(&fp.key("role"), role.trim(), &scope);
                        Some(Box::new(Target::Role {
                            role: role.trim().to_string(),
                            scope,
                        }))
                    }
                    (None, Some(person)) if f.scope.is_none() => {
                        self.person(&fp.key("person"), person.trim());
                        Some(Box::new(Target::Person {
                            id: person.trim().to_string(),
                        }))
                    }
                    _ => {
                        self.err(&fp, "give `role` (with optional `scope`) or `person`");
                        None
                    }
                }
            });
            relation.map(|relation| Target::Relation { relation, fallback })
        } else if let Some(person) = t.person {
            self.person(&p.key("person"), person.trim());
            Some(Target::Person {
                id: person.trim().to_string(),
            })
        } else {
            None
        }
    }

    fn route(
        &mut self,
        p: &FieldPath,
        r: &RawRoute,
        policies: &BTreeMap<String, Arc<EscalationPolicy>>,
        policy_files: &HashMap<String, PathBuf>,
        test_policy: &Arc<EscalationPolicy>,
    ) -> Option<RouteSpec> {
        let given = [r.role.is_some(), r.relation.is_some(), r.person.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given != 1 {
            self.err(
                p,
                "give exactly one target: `role` (with optional `scope`), `relation` or `person`",
            );
        }
        let target = self.target(
            p,
            TargetFields {
                role: &r.role,
                scope: &r.scope,
                relation: &r.relation,
                person: &r.person,
                fallback: &r.fallback,
            },
        );
        let priority = r.priority.as_ref().and_then(|s| {
            let x = AlertPriority::parse(s);
            if x.is_none() {
                self.err(
                    &p.key("priority"),
                    format!("`{s}` is not routine, urgent, asap or stat"),
                );
            }
            x
        });
        let template = match r.template.as_deref().map(str::trim) {
            Some("") => {
                self.err(
                    &p.key("template"),
                    "must not be empty (leave it out for the default)",
                );
                None
            }
            t => t.map(str::to_string),
        };
        let escalation = if r.test_destination {
            if r.escalation.is_some() {
                self.err(
                    &p.key("escalation"),
                    format!(
                        "a test destination is not escalated: every policy ends in a production \
                         failsafe (test routes use the built-in `{TEST_POLICY}` policy: their own target only)"
                    ),
                );
            }
            if r.relation.is_some() {
                self.err(
                    &p.key("relation"),
                    "a test destination must be a `role` or `person` set aside for tests: \
                     a care-team relation is always the patient's real clinicians",
                );
            }
            Some(test_policy.clone())
        } else {
            let policy_name = r
                .escalation
                .as_deref()
                .map(str::trim)
                .unwrap_or(DEFAULT_POLICY);
            let escalation = policies.get(policy_name).cloned();
            if escalation.is_none() && !policy_files.contains_key(policy_name) {
                let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                self.err(
                    &p.key("escalation"),
                    format!(
                        "unknown escalation policy `{policy_name}` (policies: {})",
                        known.join(", ")
                    ),
                );
            }
            escalation
        };
        let window = |c: &mut Self, field: &str, v: Option<u64>| -> Option<Duration> {
            match v {
                Some(0) => {
                    c.err(&p.key(field), "must be at least 1 (leave it out for none)");
                    None
                }
                v => v.map(Duration::from_secs),
            }
        };
        let dedup_window = window(self, "dedup_window_secs", r.dedup_window_secs);
        let group_window = window(self, "group_window_secs", r.group_window_secs);
        let delay = window(self, "delay_secs", r.delay_secs);
        if r.delay_secs.is_some_and(|d| d > MAX_DELAY_SECS) {
            self.err(
                &p.key("delay_secs"),
                format!(
                    "at most {MAX_DELAY_SECS}: delay-then-cancel debounces alerts that end by themselves \
                     within seconds; a longer hold only delays the alert"
                ),
            );
        }
        let mut dedup_key = Vec::new();
        match &r.dedup_key {
            None => {
                dedup_key = vec![
                    DedupPart::Patient,
                    DedupPart::Code,
                    DedupPart::Unit,
                    DedupPart::Order,
                    DedupPart::Alarm,
                ]
            }
            Some(parts) => {
                if parts.is_empty() {
                    self.err(&p.key("dedup_key"), "must name at least one part");
                }
                for (i, k) in parts.iter().enumerate() {
                    match DedupPart::parse(k) {
                        Some(d) => dedup_key.push(d),
                        None => self.err(
                            &p.key("dedup_key").index(i),
                            format!("`{k}` is not patient, code, unit, order or alarm"),
                        ),
                    }
                }
                if dedup_window.is_none() {
                    self.err(
                        &p.key("dedup_key"),
                        "only meaningful with `dedup_window_secs`",
                    );
                }
            }
        }
        let dedup_keep = match r.dedup_keep.as_deref().map(str::trim) {
            None => DedupKeep::First,
            Some(k) => {
                let keep = match k {
                    "first" => DedupKeep::First,
                    "latest" => DedupKeep::Latest,
                    _ => {
                        self.err(
                            &p.key("dedup_keep"),
                            format!("`{k}` is not \"first\" or \"latest\""),
                        );
                        DedupKeep::First
                    }
                };
                if r.dedup_window_secs.is_none() {
                    self.err(
                        &p.key("dedup_keep"),
                        "only meaningful with `dedup_window_secs`",
                    );
                }
                keep
            }
        };
        let clear = r.clear.as_ref().and_then(|c| {
            let x = ClearOn::parse(c);
            if x.is_none() {
                self.err(
                    &p.key("clear"),
                    format!(
                        "`{c}` is not \"alarm-end\" (the same alarm ends) or \"order-cancel\" \
                         (the same order is cancelled or its result retracted)"
                    ),
                );
            }
            x
        });
        if r.clear.is_some() && r.delay_secs.is_none() {
            self.err(&p.key("clear"), "only meaningful with `delay_secs`");
        }
        if r.delay_secs.is_some() && r.clear.is_none() {
            self.err(
                &p.key("delay_secs"),
                "give `clear`: what cancels the held alert (\"alarm-end\" or \"order-cancel\")",
            );
        }
        let hold = match (delay, clear) {
            (Some(window), Some(clear)) => Some(Hold { window, clear }),
            _ => None,
        };
        Some(RouteSpec {
            target: target?,
            priority,
            template,
            escalation: escalation?,
            dedup_window,
            dedup_key,
            dedup_keep,
            group_window,
            hold,
            test_destination: r.test_destination,
        })
    }

    fn reroutes(
        &mut self,
        rule: &FieldPath,
        r: &RawRule,
        route: Option<&RouteSpec>,
    ) -> Vec<RerouteSpec> {
        let mut out: Vec<RerouteSpec> = Vec::new();
        let mut seen: Vec<(RerouteWhen, usize)> = Vec::new();
        for (i, x) in r.reroute.iter().enumerate() {
            let p = rule.key("reroute").index(i);
            if let Some(spec) = self.reroute(&p, x, route) {
                if let Some((_, first)) = seen.iter().find(|(w, _)| *w == spec.when) {
                    self.err(
                        &p.key("when"),
                        format!(
                            "`{}` is already handled by reroute[{first}]: only the first re-route whose condition holds applies",
                            spec.when.as_str()
                        ),
                    );
                    continue;
                }
                seen.push((spec.when, i));
                out.push(spec);
            }
        }
        out
    }

    fn reroute(
        &mut self,
        p: &FieldPath,
        x: &RawReroute,
        route: Option<&RouteSpec>,
    ) -> Option<RerouteSpec> {
        let when = match x.when.as_deref().map(str::trim) {
            None | Some("") => {
                self.err(
                    &p.key("when"),
                    "required: the census condition, \"discharged\" or \"moved\"",
                );
                None
            }
            Some(w) => {
                let when = RerouteWhen::parse(w);
                if when.is_none() {
                    self.err(
                        &p.key("when"),
                        format!(
                            "`{w}` is not a re-route condition: \"discharged\" (discharged or admission cancelled) \
                             or \"moved\" (in another unit per the census)"
                        ),
                    );
                }
                when
            }
        };
        let given = [x.role.is_some(), x.relation.is_some(), x.person.is_some()]
            .iter()
            .filter(|v| **v)
            .count();
        let to = if given == 0 && x.scope.is_some() && x.fallback.is_none() {
            // `scope` alone: the route's role, in another scope.
            let scope = self.scope(&p.key("scope"), &x.scope);
            match route.map(|r| &r.target) {
                Some(Target::Role { role, .. }) => {
                    if scope == Scope::EventUnit {
                        self.err(
                            &p.key("scope"),
                            "\"unit\" is the event's unit, which the route already uses: \
                             give \"census-unit\" or a unit name",
                        );
                        None
                    } else {
                        let role = role.clone();
                        self.role(&p.key("scope"), &role, &scope);
                        Some(RerouteTo::Scope(scope))
                    }
                }
                Some(_) => {
                    self.err(
                        &p.key("scope"),
                        "`scope` alone re-scopes the route's role, but the route has no `role`: \
                         give a target (`role`, `relation` or `person`)",
                    );
                    None
                }
                // The route is invalid: reported there.
                None => None,
            }
        } else if given == 1 {
            self.target(
                p,
                TargetFields {
                    role: &x.role,
                    scope: &x.scope,
                    relation: &x.relation,
                    person: &x.person,
                    fallback: &x.fallback,
                },
            )
            .map(RerouteTo::Target)
        } else {
            self.err(
                p,
                "give exactly one new target: `role` (with optional `scope`), `relation`, \
                 `person`, or `scope` alone (the route's role in that scope)",
            );
            None
        };
        Some(RerouteSpec {
            when: when?,
            to: to?,
        })
    }

    /// Refuses clinically unsafe combinations (module doc, "Clinical safety").
    fn rule_safety(&mut self, p: &FieldPath, r: &RawRule, m: &Match, route: &RouteSpec) {
        let rp = p.key("route");
        let unsafe_for = |c: &mut Self, why: Option<String>, what: &str| {
            let Some(why) = why else { return };
            if route.hold.is_some() {
                c.err(
                    &rp.key("delay_secs"),
                    format!(
                        "delay-then-cancel is refused on a rule that can match a {what}: {why}; \
                         such alerts are never held (narrow the match or remove delay_secs)"
                    ),
                );
            }
            if route.group_window.is_some() {
                c.err(
                    &rp.key("group_window_secs"),
                    format!(
                        "storm collapse is refused on a rule that can match a {what}: {why}; \
                         such alerts are never grouped (narrow the match or remove group_window_secs)"
                    ),
                );
            }
            if route.dedup_keep == DedupKeep::Latest {
                c.err(
                    &rp.key("dedup_keep"),
                    format!(
                        "dedup_keep = \"latest\" is refused on a rule that can match a {what}: {why}; \
                         a pending alert of this kind is never replaced (use \"first\")"
                    ),
                );
            }
        };
        unsafe_for(
            self,
            critical_result_reason(m, route.priority),
            "critical result",
        );
        unsafe_for(
            self,
            high_alarm_reason(m, route.priority),
            "high-priority alarm",
        );
        if let Some(hold) = &route.hold {
            let allowed = |k: EventKind| match hold.clear {
                ClearOn::AlarmEnd => k == EventKind::Alarm,
                ClearOn::OrderCancel => matches!(k, EventKind::Result | EventKind::Order),
            };
            let others: Vec<&str> = if m.kinds.is_empty() && m.alarm_priority.is_empty() {
                vec!["any kind (no `kind` criterion)"]
            } else if m.kinds.is_empty() {
                // alarm_priority alone: only alarms.
                [EventKind::Alarm]
                    .into_iter()
                    .filter(|k| !allowed(*k))
                    .map(EventKind::as_str)
                    .collect()
            } else {
                m.kinds
                    .iter()
                    .copied()
                    .filter(|k| m.can_match_kind(*k) && !allowed(*k))
                    .map(EventKind::as_str)
                    .collect()
            };
            if !others.is_empty() {
                let (needs, fix) = match hold.clear {
                    ClearOn::AlarmEnd => ("alarms", "kind = \"alarm\""),
                    ClearOn::OrderCancel => {
                        ("results and orders", "kind = [\"result\", \"order\"]")
                    }
                };
                self.err(
                    &rp.key("clear"),
                    format!(
                        "`{}` only cancels {needs}, but the rule can also match {}: \
                         those would be delayed with nothing to cancel them (add {fix} to the match)",
                        hold.clear.as_str(),
                        others.join(", ")
                    ),
                );
            }
        }
        match (r.matcher.allow_test, route.test_destination) {
            (true, false) => self.err(
                &p.key("match").key("allow_test"),
                "allow_test routes training/debugging messages (MSH-11 T/D) to this rule's target, \
                 a production recipient: set `test_destination = true` on a route to a role or person \
                 set aside for tests (the rule then matches only T/D messages), or remove allow_test",
            ),
            (false, true) => self.err(
                &rp.key("test_destination"),
                "a test destination only receives training/debugging messages: \
                 set `allow_test = true` in the match (without it the rule matches nothing)",
            ),
            _ => {}
        }
        if route.test_destination && !r.reroute.is_empty() {
            self.err(
                &p.key("reroute"),
                "a test-destination rule cannot re-route: re-route targets are production recipients",
            );
        }
    }

    fn policy(&mut self, p: &FieldPath, name: &str, raw: &RawPolicy) -> Option<EscalationPolicy> {
        let tp = p.key("tiers");
        if raw.tiers.is_empty() {
            self.err(
                &tp,
                "required: at least one tier, the last being { failsafe = true }",
            );
            return None;
        }
        let mut tiers = Vec::new();
        let last = raw.tiers.len() - 1;
        for (i, t) in raw.tiers.iter().enumerate() {
            let ip = tp.index(i);
            if let Some(tier) = self.tier(&ip, t) {
                if tier.target == TierTarget::Failsafe && i != last {
                    self.err(&ip, "the failsafe tier must be the last tier");
                }
                tiers.push(tier);
            }
        }
        if !raw.tiers[last].failsafe {
            self.err(
                &tp.index(last),
                format!(
                    "escalation policy `{name}` must end with a failsafe tier: add {{ failsafe = true }} as its last tier"
                ),
            );
        }
        let renotify = match raw.renotify_secs {
            Some(0) => {
                self.err(
                    &p.key("renotify_secs"),
                    "must be at least 1 (leave it out for the default)",
                );
                None
            }
            v => v.map(Duration::from_secs),
        };
        let repeats = raw.repeats.unwrap_or(0);
        if repeats > 10 {
            self.err(
                &p.key("repeats"),
                "at most 10: after that the failsafe must act",
            );
        }
        (tiers.len() == raw.tiers.len()).then(|| EscalationPolicy {
            name: name.to_string(),
            tiers,
            repeats,
            renotify,
        })
    }

    fn tier(&mut self, p: &FieldPath, t: &RawTier) -> Option<Tier> {
        let given = [
            t.role.is_some(),
            t.relation.is_some(),
            t.person.is_some(),
            t.failsafe,
            t.route,
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            self.err(
                p,
                "give exactly one of `role`, `relation`, `person`, `route = true` or `failsafe = true`",
            );
            return None;
        }
        if t.scope.is_some() && t.role.is_none() {
            self.err(&p.key("scope"), "only meaningful with `role`");
        }
        let timeout = match t.timeout_secs {
            Some(0) => {
                self.err(&p.key("timeout_secs"), "must be at least 1 second");
                None
            }
            v => v.map(Duration::from_secs),
        };
        let target = if let Some(role) = &t.role {
            let scope = self.scope(&p.key("scope"), &t.scope);
            self.role(&p.key("role"), role.trim(), &scope);
            TierTarget::Role {
                role: role.trim().to_string(),
                scope,
            }
        } else if let Some(rel) = &t.relation {
            match Relation::parse(rel) {
                Some(r) => TierTarget::Relation(r),
                None => {
                    self.err(
                        &p.key("relation"),
                        format!("`{rel}` is not a care-team relation ({RELATIONS})"),
                    );
                    return None;
                }
            }
        } else if let Some(person) = &t.person {
            self.person(&p.key("person"), person.trim());
            TierTarget::Person(person.trim().to_string())
        } else if t.failsafe {
            TierTarget::Failsafe
        } else {
            TierTarget::Route
        };
        Some(Tier { target, timeout })
    }
}

fn show_scopes(scopes: &[Option<&str>]) -> String {
    scopes
        .iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}
