//! Raw mapping files -> validated [`Rules`], checked against the rosters.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::matcher::normal_system;
use super::raw::{RawMappings, RawMatch, RawPolicy, RawRoute, RawTier};
use super::{
    AlertPriority, DEFAULT_POLICY, DedupPart, EscalationPolicy, Glob, Match, Relation, RouteSpec,
    Rule, Rules, Scope, Target, Tier, TierTarget,
};
use crate::config::ConfigError;
use crate::config::locate::{FieldPath, Locator};
use crate::event::{EventKind, Priority, ResultStatus};
use crate::roster::{Reporter, Rosters, Source, parse_toml};

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
            let matcher = c.matcher(&p.key("match"), &r.matcher);
            let route = match &r.route {
                Some(route) => c.route(&p.key("route"), route, &policies, &policy_files),
                None => {
                    c.err(
                        &p.key("route"),
                        "required: route = { role = ..., priority = ..., escalation = ... }",
                    );
                    None
                }
            };
            if let (Some(name), Some(route)) = (name, route) {
                rules.push(Rule {
                    name: name.to_string(),
                    source: f.path.clone(),
                    matcher,
                    continue_: r.continue_,
                    route,
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
        out
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
            Scope::EventUnit if !unscoped => self.err(
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
                    "must not be empty: \"unit\" (the event's unit) or a unit name",
                );
                Scope::None
            }
            Some("unit") => Scope::EventUnit,
            Some(u) => Scope::Unit(u.to_string()),
        }
    }

    fn route(
        &mut self,
        p: &FieldPath,
        r: &RawRoute,
        policies: &BTreeMap<String, Arc<EscalationPolicy>>,
        policy_files: &HashMap<String, PathBuf>,
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
        if r.scope.is_some() && r.role.is_none() {
            self.err(&p.key("scope"), "only meaningful with `role`");
        }
        if r.fallback.is_some() && r.relation.is_none() {
            self.err(&p.key("fallback"), "only meaningful with `relation`");
        }
        let target = if let Some(role) = &r.role {
            let scope = self.scope(&p.key("scope"), &r.scope);
            self.role(&p.key("role"), role.trim(), &scope);
            Some(Target::Role {
                role: role.trim().to_string(),
                scope,
            })
        } else if let Some(rel) = &r.relation {
            let relation = Relation::parse(rel);
            if relation.is_none() {
                self.err(
                    &p.key("relation"),
                    format!("`{rel}` is not a care-team relation ({RELATIONS})"),
                );
            }
            let fallback = r.fallback.as_ref().and_then(|f| {
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
        } else if let Some(person) = &r.person {
            self.person(&p.key("person"), person.trim());
            Some(Target::Person {
                id: person.trim().to_string(),
            })
        } else {
            None
        };
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
        Some(RouteSpec {
            target: target?,
            priority,
            template,
            escalation: escalation?,
            dedup_window,
            dedup_key,
            group_window,
        })
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
