//! Mapping rules: a [`ClinicalEvent`] -> the routes of the alerts it raises.
//!
//! Input: `mappings/*.toml` (format below), validated by [`load_dir`] against
//! the loaded [`Rosters`] into [`Rules`] — which therefore only exists when
//! every rule's role, person and escalation policy exists and every policy
//! ends in a failsafe tier. Output: [`Rules::route`] -> [`Decision`].
//! Nothing here looks at the clock, the census or a backend: targets are
//! returned unresolved (a role and scope, a care-team relation, a person) for
//! the escalation stage to resolve at the instant it notifies.
//!
//! # Invariants
//!
//! - Rules are evaluated in order: files by name, rules in file order. The
//!   first matching rule stops evaluation unless it says `continue = true`.
//! - An event whose MSH-11 is not `P` is only matched by rules with
//!   `allow_test = true`, and then yields [`Decision::Test`], never
//!   [`Decision::Routed`]: test and debug messages cannot reach production
//!   recipients through this API.
//!
//! # File format
//!
//! ```toml
//! [[rules]]
//! name = "critical-potassium"              # unique over all mapping files
//! continue = false                         # default: the first match stops
//! [rules.match]                            # every criterion given must hold (all optional)
//! kind = "result"                          # or a list: event kinds (admit, transfer, result, alarm, ...)
//! message_type = ["ORU^R01"]               # MSH-9 as TYPE or TYPE^TRIGGER
//! sender = ["lab"]                         # configured sender names
//! codes = ["LN|2823-3"]                    # SYSTEM|CODE of OBX-3 (or OBR-4 / alarm kind without flags)
//! flags = ["HH", "LL"]                     # OBX-8, on the same observation as `codes`
//! priority_at_least = "urgent"             # routine < urgent (= asap) < stat
//! units = ["ICU*"]                         # glob on PV1-3.1 (point of care)
//! locations = ["ICU/1*/*"]                 # glob on unit/room/bed
//! facilities = ["HOSP"]                    # glob on PV1-3.4
//! result_status = ["final", "corrected"]   # OBX-11 (OBR-25 without observations)
//! allow_test = false                       # also match MSH-11 T/D (-> Decision::Test)
//! [rules.route]
//! role = "hospitalist"                     # one of: role, relation, person
//! scope = "unit"                           # with role: "unit" = the event's unit, or a unit name
//! # relation = "attending"                 # attending, admitting, ordering, referring,
//! #                                        #   consulting, assigned-nurse
//! # fallback = { role = "charge-nurse", scope = "unit" }   # with relation: when nobody holds it
//! # person = "member-id"                   # a roster member
//! priority = "stat"                        # routine, urgent, asap, stat (default: from the event)
//! template = "critical-result"             # template name (the redaction stage checks it)
//! escalation = "stat-default"              # policy name (default: built-in "default")
//! dedup_window_secs = 300                  # one alert per dedup key within the window
//! dedup_key = ["patient", "code"]          # patient, code, unit, order, alarm (default: all of these)
//! group_window_secs = 60                   # group alerts per patient and unit
//!
//! [escalations.stat-default]
//! tiers = [
//!   { route = true, timeout_secs = 120 },  # the rule's own target
//!   { role = "house-supervisor" },         # timeout by priority when not given
//!   { failsafe = true },                   # required, last: the roster failsafe
//! ]
//! repeats = 0                              # times the tiers run again before "exhausted"
//! renotify_secs = 900                      # accepted but unresolved: notify again
//! ```
//!
//! Tier timeouts default by the alert's priority: STAT 2 minutes, ASAP 5,
//! urgent 10, routine 30 ([`default_tier_timeout`]). An accepted but unresolved
//! STAT alert re-notifies every 15 minutes unless the policy says otherwise
//! ([`EscalationPolicy::renotify_for`]). The built-in policy `default` is
//! `[{ route = true }, { failsafe = true }]`; a file may redefine it.

mod glob;
mod load;
mod matcher;
mod raw;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use glob::Glob;

use crate::config::ConfigError;
use crate::event::{ClinicalEvent, EventKind, Priority, Processing, ResultStatus};
use crate::roster::Rosters;

/// Name of the built-in escalation policy used when a route names none.
pub const DEFAULT_POLICY: &str = "default";

/// Alert priority of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertPriority {
    /// Routine.
    Routine,
    /// Urgent.
    Urgent,
    /// As soon as possible.
    Asap,
    /// STAT.
    Stat,
}

impl AlertPriority {
    /// `routine`, `urgent`, `asap`, `stat`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertPriority::Routine => "routine",
            AlertPriority::Urgent => "urgent",
            AlertPriority::Asap => "asap",
            AlertPriority::Stat => "stat",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "routine" => Some(AlertPriority::Routine),
            "urgent" => Some(AlertPriority::Urgent),
            "asap" => Some(AlertPriority::Asap),
            "stat" => Some(AlertPriority::Stat),
            _ => None,
        }
    }

    /// The alert priority an event's own priority implies.
    pub fn from_event(p: Priority) -> Self {
        match p {
            Priority::Stat => AlertPriority::Stat,
            Priority::Urgent => AlertPriority::Urgent,
            Priority::Routine | Priority::Unspecified => AlertPriority::Routine,
        }
    }
}

/// Tier timeout when a tier gives none: STAT 2 min, ASAP 5, urgent 10, routine 30.
pub fn default_tier_timeout(p: AlertPriority) -> Duration {
    Duration::from_secs(match p {
        AlertPriority::Stat => 120,
        AlertPriority::Asap => 300,
        AlertPriority::Urgent => 600,
        AlertPriority::Routine => 1800,
    })
}

/// A care-team relation of the event's patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relation {
    /// PV1-7.
    Attending,
    /// PV1-17.
    Admitting,
    /// ORC-12 / OBR-16.
    Ordering,
    /// PV1-8.
    Referring,
    /// PV1-9.
    Consulting,
    /// The nurse assigned to the patient or bed this shift.
    AssignedNurse,
}

impl Relation {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "attending" => Some(Relation::Attending),
            "admitting" => Some(Relation::Admitting),
            "ordering" => Some(Relation::Ordering),
            "referring" => Some(Relation::Referring),
            "consulting" => Some(Relation::Consulting),
            "assigned-nurse" => Some(Relation::AssignedNurse),
            _ => None,
        }
    }

    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Attending => "attending",
            Relation::Admitting => "admitting",
            Relation::Ordering => "ordering",
            Relation::Referring => "referring",
            Relation::Consulting => "consulting",
            Relation::AssignedNurse => "assigned-nurse",
        }
    }
}

/// Which unit a role target covers, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The unscoped role.
    None,
    /// `scope = "unit"`: the event's unit (PV1-3.1), falling back to the unscoped role.
    EventUnit,
    /// A fixed unit.
    Unit(String),
}

/// A configured target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A roster role.
    Role {
        /// Role name.
        role: String,
        /// Scope.
        scope: Scope,
    },
    /// A care-team relation, with an optional target when nobody holds it.
    Relation {
        /// The relation.
        relation: Relation,
        /// Used when the relation resolves to nobody reachable.
        fallback: Option<Box<Target>>,
    },
    /// A roster member by id.
    Person {
        /// Member id.
        id: String,
    },
}

/// A target for one event: the scope is resolved to a unit name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// `Rosters::on_call(role, scope, at)`.
    Role {
        /// Role name.
        role: String,
        /// The unit, or `None` for the unscoped role.
        scope: Option<String>,
    },
    /// Resolve through the census, else the fallback.
    Relation {
        /// The relation.
        relation: Relation,
        /// Used when the relation resolves to nobody reachable.
        fallback: Option<Box<RouteTarget>>,
    },
    /// `Rosters::member(id)`.
    Person {
        /// Member id.
        id: String,
    },
}

/// Who a tier notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierTarget {
    /// The route's own target.
    Route,
    /// A roster role.
    Role {
        /// Role name.
        role: String,
        /// Scope.
        scope: Scope,
    },
    /// A care-team relation.
    Relation(Relation),
    /// A member by id.
    Person(String),
    /// The failsafe of the route target's roster (`Rosters::failsafe`).
    Failsafe,
}

/// One escalation tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Who.
    pub target: TierTarget,
    /// How long to wait for an acknowledgement; `None`: by priority.
    pub timeout: Option<Duration>,
}

impl Tier {
    /// This tier's timeout for an alert of priority `p`.
    pub fn timeout_for(&self, p: AlertPriority) -> Duration {
        self.timeout.unwrap_or_else(|| default_tier_timeout(p))
    }
}

/// An escalation policy: ordered tiers ending in the failsafe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// Name.
    pub name: String,
    /// Tiers, the last always [`TierTarget::Failsafe`].
    pub tiers: Vec<Tier>,
    /// How many times the tiers run again before the alert is exhausted.
    pub repeats: u32,
    /// Re-notify interval for an accepted but unresolved alert, when set.
    pub renotify: Option<Duration>,
}

impl EscalationPolicy {
    /// Re-notify interval for an accepted but unresolved alert of priority
    /// `p`: the policy's, else 15 minutes for STAT, else none.
    pub fn renotify_for(&self, p: AlertPriority) -> Option<Duration> {
        match (self.renotify, p) {
            (Some(d), _) => Some(d),
            (None, AlertPriority::Stat) => Some(Duration::from_secs(15 * 60)),
            (None, _) => None,
        }
    }

    fn builtin_default() -> Self {
        EscalationPolicy {
            name: DEFAULT_POLICY.to_string(),
            tiers: vec![
                Tier {
                    target: TierTarget::Route,
                    timeout: None,
                },
                Tier {
                    target: TierTarget::Failsafe,
                    timeout: None,
                },
            ],
            repeats: 0,
            renotify: None,
        }
    }
}

/// A part of the de-duplication key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DedupPart {
    /// The patient (first identifier).
    Patient,
    /// The matched code.
    Code,
    /// The unit.
    Unit,
    /// The order (placer / filler id).
    Order,
    /// The alarm id.
    Alarm,
}

impl DedupPart {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "patient" => Some(DedupPart::Patient),
            "code" => Some(DedupPart::Code),
            "unit" => Some(DedupPart::Unit),
            "order" => Some(DedupPart::Order),
            "alarm" => Some(DedupPart::Alarm),
            _ => None,
        }
    }
}

/// What a rule matches (every given criterion must hold).
#[derive(Clone, Debug, Default)]
pub struct Match {
    /// Event kinds.
    pub kinds: Vec<EventKind>,
    /// (MSH-9.1, optional MSH-9.2).
    pub message_types: Vec<(String, Option<String>)>,
    /// Sender names.
    pub senders: Vec<String>,
    /// (system, code).
    pub codes: Vec<(String, String)>,
    /// OBX-8 flags.
    pub flags: Vec<String>,
    /// Lowest event priority.
    pub priority_at_least: Option<Priority>,
    /// Globs on PV1-3.1.
    pub units: Vec<Glob>,
    /// Globs on `unit/room/bed`.
    pub locations: Vec<Glob>,
    /// Globs on PV1-3.4.
    pub facilities: Vec<Glob>,
    /// Result statuses.
    pub result_status: Vec<ResultStatus>,
    /// Also match training / debugging messages.
    pub allow_test: bool,
}

/// The route a rule produces.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Target.
    pub target: Target,
    /// Priority; `None`: from the event.
    pub priority: Option<AlertPriority>,
    /// Template name.
    pub template: Option<String>,
    /// Escalation policy.
    pub escalation: Arc<EscalationPolicy>,
    /// De-duplication window.
    pub dedup_window: Option<Duration>,
    /// De-duplication key parts.
    pub dedup_key: Vec<DedupPart>,
    /// Grouping window.
    pub group_window: Option<Duration>,
}

/// One validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// File it came from.
    pub source: PathBuf,
    /// Criteria.
    pub matcher: Match,
    /// `continue = true`: evaluation goes on after this rule matches.
    pub continue_: bool,
    /// What it produces.
    pub route: RouteSpec,
}

/// One alert to raise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The rule that produced it.
    pub rule: String,
    /// Who, for this event.
    pub target: RouteTarget,
    /// Priority.
    pub priority: AlertPriority,
    /// Template name.
    pub template: Option<String>,
    /// Escalation policy.
    pub escalation: Arc<EscalationPolicy>,
    /// De-duplication window.
    pub dedup_window: Option<Duration>,
    /// De-duplication key parts.
    pub dedup_key: Vec<DedupPart>,
    /// Grouping window.
    pub group_window: Option<Duration>,
}

/// Why an event raises nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterReason {
    /// No rule matched.
    NoRuleMatched,
    /// A training / debugging message, and no rule with `allow_test` matched.
    NotProduction(Processing),
}

impl std::fmt::Display for FilterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterReason::NoRuleMatched => write!(f, "no rule matched"),
            FilterReason::NotProduction(p) => write!(
                f,
                "processing id {} is not production and no rule with allow_test matched",
                p.code()
            ),
        }
    }
}

/// The outcome of routing one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A production event: raise these alerts.
    Routed {
        /// Names of the rules that matched, in order.
        matched: Vec<String>,
        /// One route per matched rule.
        routes: Vec<Route>,
    },
    /// A training / debugging event matched `allow_test` rules: these routes
    /// must only go to test destinations, never to production recipients.
    Test {
        /// MSH-11 of the event.
        processing: Processing,
        /// Names of the rules that matched, in order.
        matched: Vec<String>,
        /// One route per matched rule.
        routes: Vec<Route>,
    },
    /// Nothing to raise.
    Filtered {
        /// Why.
        reason: FilterReason,
    },
}

/// One rule's verdict on an event, for `switchboard route` explanations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCheck {
    /// Rule name.
    pub rule: String,
    /// `None` when it matched, else the criterion that failed
    /// (`kind`, `codes`, `processing`, ...).
    pub failed: Option<&'static str>,
    /// False when an earlier first-match rule stopped evaluation before it.
    pub evaluated: bool,
}

/// Every validated rule and policy.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    policies: BTreeMap<String, Arc<EscalationPolicy>>,
}

/// Reads and validates every `*.toml` mapping file in `dir` against `rosters`.
pub fn load_dir(dir: &Path, rosters: &Rosters) -> Result<Rules, Vec<ConfigError>> {
    let sources = crate::roster::read_dir(dir)?;
    load::load(&sources, rosters)
}

/// Validates mapping files given as (path, text).
pub fn load_files(
    files: &[(PathBuf, String)],
    rosters: &Rosters,
) -> Result<Rules, Vec<ConfigError>> {
    let sources: Vec<crate::roster::Source> = files
        .iter()
        .map(|(p, t)| crate::roster::Source {
            path: p.clone(),
            text: t.clone(),
        })
        .collect();
    load::load(&sources, rosters)
}

impl Rules {
    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// An escalation policy by name (including the built-in `default`).
    pub fn policy(&self, name: &str) -> Option<&Arc<EscalationPolicy>> {
        self.policies.get(name)
    }

    /// Routes one event.
    pub fn route(&self, event: &ClinicalEvent) -> Decision {
        let mut matched = Vec::new();
        let mut routes = Vec::new();
        for rule in &self.rules {
            if rule.matcher.check(event).is_err() {
                continue;
            }
            matched.push(rule.name.clone());
            routes.push(rule.route.for_event(&rule.name, event));
            if !rule.continue_ {
                break;
            }
        }
        match (event.processing, matched.is_empty()) {
            (Processing::Production, false) => Decision::Routed { matched, routes },
            (Processing::Production, true) => Decision::Filtered {
                reason: FilterReason::NoRuleMatched,
            },
            (p, false) => Decision::Test {
                processing: p,
                matched,
                routes,
            },
            (p, true) => Decision::Filtered {
                reason: FilterReason::NotProduction(p),
            },
        }
    }

    /// Every rule's verdict on `event`, in order (for explanations).
    pub fn explain(&self, event: &ClinicalEvent) -> Vec<RuleCheck> {
        let mut stopped = false;
        self.rules
            .iter()
            .map(|rule| {
                let failed = rule.matcher.check(event).err();
                let check = RuleCheck {
                    rule: rule.name.clone(),
                    failed,
                    evaluated: !stopped,
                };
                if !stopped && failed.is_none() && !rule.continue_ {
                    stopped = true;
                }
                check
            })
            .collect()
    }
}

impl RouteSpec {
    fn for_event(&self, rule: &str, event: &ClinicalEvent) -> Route {
        Route {
            rule: rule.to_string(),
            target: resolve_target(&self.target, event),
            priority: self
                .priority
                .unwrap_or_else(|| AlertPriority::from_event(event.priority)),
            template: self.template.clone(),
            escalation: self.escalation.clone(),
            dedup_window: self.dedup_window,
            dedup_key: self.dedup_key.clone(),
            group_window: self.group_window,
        }
    }
}

/// The event's unit (PV1-3.1), when it has one.
fn event_unit(event: &ClinicalEvent) -> Option<String> {
    event
        .location
        .as_ref()
        .map(|l| l.unit.trim())
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

fn resolve_target(t: &Target, event: &ClinicalEvent) -> RouteTarget {
    match t {
        Target::Role { role, scope } => RouteTarget::Role {
            role: role.clone(),
            scope: match scope {
                Scope::None => None,
                Scope::EventUnit => event_unit(event),
                Scope::Unit(u) => Some(u.clone()),
            },
        },
        Target::Relation { relation, fallback } => RouteTarget::Relation {
            relation: *relation,
            fallback: fallback
                .as_ref()
                .map(|f| Box::new(resolve_target(f, event))),
        },
        Target::Person { id } => RouteTarget::Person { id: id.clone() },
    }
}
