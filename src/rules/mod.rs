//! Mapping rules: a [`ClinicalEvent`] -> the routes of the alerts it raises.
//!
//! Input: `mappings/*.toml` (format below), validated by [`load_dir`] against
//! the loaded [`Rosters`] into [`Rules`] — which therefore only exists when
//! every rule's role, person and escalation policy exists, every policy ends
//! in a failsafe tier and no rule is clinically unsafe (below). Output:
//! [`Rules::route_in`] -> [`Decision`], [`Rules::explain_in`] -> one
//! [`RuleCheck`] per rule.
//!
//! Nothing here reads a clock or a backend: the routing instant and the
//! patient census come in a [`RouteContext`]. The instant decides `during`
//! windows; the census (optional) decides re-routes and `census-unit` scopes.
//! Targets are returned unresolved (a role and scope, a care-team relation, a
//! person) for the escalation stage to resolve at the instant it notifies.
//!
//! # Invariants
//!
//! - Rules are evaluated in order: files by name, rules in file order. The
//!   first matching rule stops evaluation unless it says `continue = true`.
//! - An event whose MSH-11 is not `P` is only matched by rules with
//!   `allow_test = true`, and then yields [`Decision::Test`], never
//!   [`Decision::Routed`]. Such rules must declare `test_destination = true`
//!   on their route, which makes them match *only* MSH-11 `T`/`D` events and
//!   gives them the built-in [`TEST_POLICY`] (the route's own target, no
//!   production escalation tier, no failsafe): test and debug messages cannot
//!   reach production recipients, and production messages never reach a
//!   test destination.
//! - A re-route never drops an alert: it replaces the target, and the
//!   [`Route`] records what it replaced ([`Route::rerouted`]).
//! - No rule that can match a critical result or a high-priority alarm holds,
//!   collapses or replaces its alerts (refused at load, and not applied at
//!   routing time to an event that is one: see "Clinical safety").
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
//! alarm_priority = ["PM", "PL"]            # IHE PCD ACM alarm priority as sent: PH, PM, PL, PN
//!                                          #   (only alarms have one)
//! during = [                               # the routing instant is in one of these windows
//!   { timezone = "America/New_York", days = ["sat", "sun"], from = "19:00", to = "07:00" },
//! ]                                        # days: the day a window starts (default: every day);
//!                                          # `to` not after `from` wraps past midnight;
//!                                          # no from/to: the whole of each day
//! allow_test = false                       # also match MSH-11 T/D (-> Decision::Test); requires
//!                                          #   test_destination = true on the route
//! [rules.route]
//! role = "hospitalist"                     # one of: role, relation, person
//! scope = "unit"                           # with role: "unit" = the event's unit,
//!                                          #   "census-unit" = the patient's unit per the census
//!                                          #   (else the event's), or a unit name
//! # relation = "attending"                 # attending, admitting, ordering, referring,
//! #                                        #   consulting, assigned-nurse
//! # fallback = { role = "charge-nurse", scope = "unit" }   # with relation: when nobody holds it
//! # person = "member-id"                   # a roster member
//! priority = "stat"                        # routine, urgent, asap, stat (default: from the event)
//! template = "critical-result"             # template name (the redaction stage checks it)
//! escalation = "stat-default"              # policy name (default: built-in "default")
//! dedup_window_secs = 300                  # one alert per dedup key within the window
//! dedup_key = ["patient", "code"]          # patient, code, unit, order, alarm (default: all of these)
//! dedup_keep = "first"                     # with dedup_window_secs: "first" (later duplicates are
//!                                          #   suppressed, and recorded) or "latest" (the newest
//!                                          #   duplicate replaces the pending alert)
//! group_window_secs = 60                   # storm collapse: group alerts per patient and unit
//! delay_secs = 30                          # delay-then-cancel: hold the alert this long (<= 600) ...
//! clear = "alarm-end"                      # ... and drop it if this arrives first: "alarm-end"
//!                                          #   (alarm rules) or "order-cancel" (result/order rules)
//! test_destination = false                 # the target is a test destination (with allow_test)
//!
//! [[rules.reroute]]                        # ordered: the first whose condition holds applies
//! when = "discharged"                      # census: the encounter is discharged or cancelled (A03, A11)
//! role = "house-supervisor"                # the new target: role (+ scope), relation (+ fallback), person
//! [[rules.reroute]]
//! when = "moved"                           # census: the patient is in another unit than the event says
//! scope = "census-unit"                    # `scope` alone: the route's role, in this scope
//!
//! [escalations.stat-default]
//! tiers = [
//!   { route = true, timeout_secs = 120 },  # the rule's own target (after any re-route)
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
//! `[{ route = true }, { failsafe = true }]`; a file may redefine it. The name
//! [`TEST_POLICY`] is reserved. `mappings/device-alarms.toml` uses
//! time windows, re-routes and delay-then-cancel against the demo rosters.
//!
//! # Time windows
//!
//! `during` is checked against the routing instant ([`RouteContext::at`]),
//! not the event's own time: it says who should be told *now*. Each window
//! occurrence starts on a listed day at `from` and ends at `to` (the next day
//! when `to` is not after `from`), both local wall times in the window's
//! zone, mapped to instants by the roster DST policy
//! ([`crate::roster::schedule::resolve`]): a wall time inside a DST gap
//! moves to the *first valid instant after the gap*, one inside a fold uses
//! the *earliest* instant. So a 22:00–07:00 window is 8 h long on
//! spring-forward night and 10 h on fall-back night; a window ending at
//! 01:30 on fall-back night ends at the first 01:30; a window whose both ends
//! fall into one gap is empty that day. Any listed window holding is enough;
//! a failed `during` is reported as the criterion `during`.
//!
//! # Re-routes (census)
//!
//! With a census in the [`RouteContext`], a matched rule's `reroute` entries
//! are tried in order against the census's state of the event's patient
//! ([`Census::patient_of_event`]); the first whose condition holds replaces
//! the target, and [`Route::rerouted`] records the condition and the target
//! it replaced:
//!
//! - `discharged`: the encounter is discharged (A03) or the admission was
//!   cancelled (A11) — e.g. a telemetry alarm for a patient who has left goes
//!   to the monitoring technician or house supervisor, not to nobody;
//! - `moved`: the encounter is active and the census places the patient in a
//!   unit (PV1-3.1, compared case-insensitively) other than the event's, or
//!   the event names no unit — e.g. an alarm from the sending unit's monitor
//!   after a transfer goes to the receiving unit.
//!
//! A re-route target is written as a route target, or as `scope` alone (the
//! route's role in that scope; the route must target a role). Without a
//! census, or when the census does not know the patient, no re-route applies
//! and [`RuleCheck::reroute`] says which ([`RerouteCheck`]). Re-route targets
//! are validated against the rosters like route targets. Escalation tiers
//! with `route = true` notify the re-routed target.
//!
//! # Delay-then-cancel, de-duplication, storm collapse
//!
//! `delay_secs` holds the alert ([`Route::hold`]); an event that clears it
//! ([`Hold::clears`]) within the window cancels it, else it is sent when the
//! window ends. `clear = "alarm-end"` (rules matching only alarms): the same
//! alarm (sender and alarm id) ends (phase `end` or state `inactive`).
//! `clear = "order-cancel"` (rules matching only results and orders): the
//! same order (placer or filler number, same patient) is cancelled (ORC-1
//! `CA`/`OC`/`DC`/`OD`) or its result retracted (`X`/`D`/`W`). An event
//! without an alarm id (resp. order number) gets no hold: nothing could
//! cancel it. The alert lifecycle stage applies `dedup_keep` and
//! `group_window_secs`; this module only carries them.
//!
//! # Clinical safety
//!
//! Loading refuses, with file, line, column and field, `delay_secs`,
//! `group_window_secs` and `dedup_keep = "latest"` on a rule that **can
//! match a critical result** or **can match a high-priority alarm**. The
//! "can match" predicates are conservative over-approximations:
//!
//! - *critical result*: the rule can match events of kind `result` (its
//!   `kind` list is empty or names `result`, and it has no `alarm_priority`)
//!   and any of: its route priority is `stat`; `priority_at_least = "stat"`;
//!   it has no `flags` criterion; its `flags` list a critical flag
//!   ([`CRITICAL_FLAGS`]: `HH`, `LL`, `AA`, `HU`, `LU`, `>`, `<`).
//! - *high-priority alarm*: the rule can match events of kind `alarm` (its
//!   `kind` list is empty or names `alarm`) and any of: its route priority is
//!   `stat` or `asap`; it has no `alarm_priority` criterion; its
//!   `alarm_priority` lists `PH`.
//!
//! A `flags` criterion cannot exclude critical values (it holds when *one*
//! observation has a listed flag), so routing adds a guard: when the event
//! itself is critical ([`critical_event`]: an observation with a critical
//! flag, a STAT result, an alarm with priority `PH` or STAT), a route gets no
//! hold, no grouping window and `dedup_keep = "first"`, and
//! [`Route::safety_override`] says so.
//!
//! Test messages: `allow_test = true` without `test_destination = true`, and
//! `test_destination = true` without `allow_test`, with a care-team relation
//! target (always the patient's real clinicians), with an `escalation` policy
//! (every policy ends in a production failsafe) or with re-routes, are
//! refused.

mod glob;
mod load;
mod matcher;
mod raw;
mod safety;
mod window;

#[cfg(test)]
mod context_tests;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use glob::Glob;
pub use safety::{ALARM_PRIORITIES, CRITICAL_FLAGS, HIGH_ALARM_PRIORITY, critical_event};
pub use window::Window;

use crate::census::{Census, PatientState};
use crate::config::ConfigError;
use crate::event::{ClinicalEvent, EventKind, Priority, Processing, ResultStatus};
use crate::roster::Rosters;

/// Name of the built-in escalation policy used when a route names none.
pub const DEFAULT_POLICY: &str = "default";

/// Name of the built-in policy of test-destination routes: the route's own
/// target only, no failsafe (reserved: a file may not define it).
pub const TEST_POLICY: &str = "test-only";

/// Alert priority of a route.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// The unscoped role.
    None,
    /// `scope = "unit"`: the event's unit (PV1-3.1), falling back to the unscoped role.
    EventUnit,
    /// `scope = "census-unit"`: the patient's current unit per the census
    /// (active encounter with a location), else the event's unit, falling
    /// back to the unscoped role.
    CensusUnit,
    /// A fixed unit.
    Unit(String),
}

impl Scope {
    /// The unit this scope names for `event`, given the census's state of
    /// its patient (`None`: no census, or the patient is unknown to it).
    pub fn unit_for(
        &self,
        event: &ClinicalEvent,
        patient: Option<&PatientState>,
    ) -> Option<String> {
        match self {
            Scope::None => None,
            Scope::EventUnit => event_unit(event),
            Scope::CensusUnit => patient.and_then(census_unit).or_else(|| event_unit(event)),
            Scope::Unit(u) => Some(u.clone()),
        }
    }
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EscalationPolicy {
    /// Name.
    pub name: String,
    /// Tiers, the last always [`TierTarget::Failsafe`] — except in the
    /// built-in [`TEST_POLICY`], whose one tier is the (test) route target.
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

    fn builtin_test() -> Self {
        EscalationPolicy {
            name: TEST_POLICY.to_string(),
            tiers: vec![Tier {
                target: TierTarget::Route,
                timeout: None,
            }],
            repeats: 0,
            renotify: None,
        }
    }
}

/// Which alert of a duplicate set is kept within the dedup window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DedupKeep {
    /// The first: later duplicates are suppressed (and recorded).
    #[default]
    First,
    /// The latest: a newer duplicate replaces the pending alert.
    Latest,
}

impl DedupKeep {
    /// `first`, `latest`.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupKeep::First => "first",
            DedupKeep::Latest => "latest",
        }
    }
}

/// What cancels a held alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ClearOn {
    /// `alarm-end`: the same alarm ends.
    AlarmEnd,
    /// `order-cancel`: the same order is cancelled or its result retracted.
    OrderCancel,
}

impl ClearOn {
    /// `alarm-end`, `order-cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClearOn::AlarmEnd => "alarm-end",
            ClearOn::OrderCancel => "order-cancel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "alarm-end" => Some(ClearOn::AlarmEnd),
            "order-cancel" => Some(ClearOn::OrderCancel),
            _ => None,
        }
    }
}

/// Longest `delay_secs`: a hold is a debounce of seconds, not a deferral.
pub const MAX_DELAY_SECS: u64 = 600;

/// Delay-then-cancel: hold the alert for `window`; a clearing event
/// ([`Hold::clears`]) within it cancels the alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// How long the alert is held.
    pub window: Duration,
    /// What cancels it.
    pub clear: ClearOn,
}

impl Hold {
    /// When a hold that started at `held_at` ends and the alert is sent.
    pub fn release_at(&self, held_at: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.window)
            .ok()
            .and_then(|d| held_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Why an event counts as critical (see "Clinical safety").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Critical {
    /// A critical result: a critical flag, or a STAT result.
    Result,
    /// A high-priority alarm: `PH`, or STAT.
    Alarm,
}

impl Critical {
    /// `critical-result`, `high-priority-alarm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Critical::Result => "critical-result",
            Critical::Alarm => "high-priority-alarm",
        }
    }
}

/// The census condition of a re-route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RerouteWhen {
    /// The encounter is discharged (A03) or cancelled (A11).
    Discharged,
    /// The census places the patient in another unit than the event.
    Moved,
}

impl RerouteWhen {
    /// `discharged`, `moved`.
    pub fn as_str(self) -> &'static str {
        match self {
            RerouteWhen::Discharged => "discharged",
            RerouteWhen::Moved => "moved",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "discharged" => Some(RerouteWhen::Discharged),
            "moved" => Some(RerouteWhen::Moved),
            _ => None,
        }
    }

    /// Whether the condition holds for `event` given its patient's census state.
    pub fn holds(self, event: &ClinicalEvent, patient: &PatientState) -> bool {
        match self {
            RerouteWhen::Discharged => !patient.status.is_active(),
            RerouteWhen::Moved => {
                patient.status.is_active()
                    && census_unit(patient).is_some_and(|c| {
                        event_unit(event).is_none_or(|e| !e.eq_ignore_ascii_case(&c))
                    })
            }
        }
    }
}

/// Where a re-route sends the alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RerouteTo {
    /// A target of its own.
    Target(Target),
    /// The route's role, in another scope.
    Scope(Scope),
}

/// One configured re-route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RerouteSpec {
    /// Condition.
    pub when: RerouteWhen,
    /// New target.
    pub to: RerouteTo,
}

/// A re-route applied to a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reroute {
    /// The condition that held.
    pub when: RerouteWhen,
    /// The target the rule gave, which the re-route replaced.
    pub from: RouteTarget,
}

/// Whether a matched rule's re-routes applied, for explanations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RerouteCheck {
    /// No census in the context: no re-route applied.
    NoCensus,
    /// The census does not know the patient: no re-route applied.
    PatientUnknown,
    /// The census knows the patient and no condition holds.
    NotNeeded,
    /// This condition held and its re-route was applied.
    Applied(RerouteWhen),
}

impl std::fmt::Display for RerouteCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RerouteCheck::NoCensus => write!(f, "census not available: no re-route applied"),
            RerouteCheck::PatientUnknown => {
                write!(f, "patient not in the census: no re-route applied")
            }
            RerouteCheck::NotNeeded => write!(f, "census: no re-route condition holds"),
            RerouteCheck::Applied(w) => write!(f, "re-routed: {}", w.as_str()),
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
    /// ACM alarm priorities (upper-case: `PH`, `PM`, `PL`, `PN`).
    pub alarm_priority: Vec<String>,
    /// Time windows of the routing instant; any one is enough.
    pub during: Vec<Window>,
    /// Also match training / debugging messages.
    pub allow_test: bool,
    /// Match *only* training / debugging messages (`test_destination`).
    pub test_only: bool,
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
    /// Which duplicate is kept.
    pub dedup_keep: DedupKeep,
    /// Grouping window.
    pub group_window: Option<Duration>,
    /// Delay-then-cancel.
    pub hold: Option<Hold>,
    /// The target is a test destination (only MSH-11 T/D reach it).
    pub test_destination: bool,
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
    /// Census re-routes, in order.
    pub reroutes: Vec<RerouteSpec>,
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
    /// Which duplicate is kept.
    pub dedup_keep: DedupKeep,
    /// Grouping window.
    pub group_window: Option<Duration>,
    /// Delay-then-cancel, when the rule asks for it and the event carries
    /// what could clear it.
    pub hold: Option<Hold>,
    /// The re-route applied, with the target it replaced.
    pub rerouted: Option<Reroute>,
    /// A test destination (the route of a [`Decision::Test`]).
    pub test_destination: bool,
    /// Set when the rule asked for a hold, grouping or `dedup_keep =
    /// "latest"` but the event is critical: none of them was applied.
    pub safety_override: Option<Critical>,
}

/// The routing instant and, when available, the patient census.
#[derive(Clone, Copy)]
pub struct RouteContext<'a> {
    /// The instant `during` windows are checked at.
    pub at: DateTime<Utc>,
    /// The census, for re-routes and `census-unit` scopes.
    pub census: Option<&'a Census>,
}

impl std::fmt::Debug for RouteContext<'_> {
    /// The instant and whether there is a census: never the census's content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteContext")
            .field("at", &self.at)
            .field("census", &self.census.map(|_| "present"))
            .finish()
    }
}

impl<'a> RouteContext<'a> {
    /// A context at `at`, without a census.
    pub fn new(at: DateTime<Utc>) -> Self {
        RouteContext { at, census: None }
    }

    /// The same context with a census.
    pub fn with_census(self, census: &'a Census) -> Self {
        RouteContext {
            census: Some(census),
            ..self
        }
    }
}

/// What the census says about one event's patient.
#[derive(Clone, Copy)]
enum PatientView<'a> {
    NoCensus,
    Unknown,
    Known(&'a PatientState),
}

impl<'a> PatientView<'a> {
    fn of(ctx: &RouteContext<'a>, event: &ClinicalEvent) -> Self {
        match ctx.census {
            None => PatientView::NoCensus,
            Some(c) => c
                .patient_of_event(event)
                .map_or(PatientView::Unknown, PatientView::Known),
        }
    }

    fn patient(self) -> Option<&'a PatientState> {
        match self {
            PatientView::Known(p) => Some(p),
            _ => None,
        }
    }
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
    /// For a matched rule with re-routes: whether one applied, or why none could.
    pub reroute: Option<RerouteCheck>,
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

    /// Routes one event at `ctx.at`, with the census of `ctx` when given.
    pub fn route_in(&self, event: &ClinicalEvent, ctx: &RouteContext<'_>) -> Decision {
        let view = PatientView::of(ctx, event);
        let mut matched = Vec::new();
        let mut routes = Vec::new();
        for rule in &self.rules {
            if rule.matcher.check(event, ctx.at).is_err() {
                continue;
            }
            matched.push(rule.name.clone());
            routes.push(rule.route_for(event, view));
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

    /// Every rule's verdict on `event` at `ctx.at`, in order (for explanations).
    pub fn explain_in(&self, event: &ClinicalEvent, ctx: &RouteContext<'_>) -> Vec<RuleCheck> {
        let view = PatientView::of(ctx, event);
        let mut stopped = false;
        self.rules
            .iter()
            .map(|rule| {
                let failed = rule.matcher.check(event, ctx.at).err();
                let check = RuleCheck {
                    rule: rule.name.clone(),
                    failed,
                    evaluated: !stopped,
                    reroute: if failed.is_none() && !stopped {
                        rule.reroute_check(event, view).map(|(c, _)| c)
                    } else {
                        None
                    },
                };
                if !stopped && failed.is_none() && !rule.continue_ {
                    stopped = true;
                }
                check
            })
            .collect()
    }
}

impl Rule {
    /// Whether the rule's re-routes apply to `event`, and which one does.
    fn reroute_check(
        &self,
        event: &ClinicalEvent,
        view: PatientView<'_>,
    ) -> Option<(RerouteCheck, Option<&RerouteSpec>)> {
        if self.reroutes.is_empty() {
            return None;
        }
        Some(match view {
            PatientView::NoCensus => (RerouteCheck::NoCensus, None),
            PatientView::Unknown => (RerouteCheck::PatientUnknown, None),
            PatientView::Known(p) => match self.reroutes.iter().find(|r| r.when.holds(event, p)) {
                Some(r) => (RerouteCheck::Applied(r.when), Some(r)),
                None => (RerouteCheck::NotNeeded, None),
            },
        })
    }

    fn route_for(&self, event: &ClinicalEvent, view: PatientView<'_>) -> Route {
        let spec = &self.route;
        let patient = view.patient();
        let given = resolve_target(&spec.target, event, patient);
        let (target, rerouted) = match self.reroute_check(event, view) {
            Some((_, Some(r))) => {
                let to = match &r.to {
                    RerouteTo::Target(t) => resolve_target(t, event, patient),
                    RerouteTo::Scope(scope) => match &given {
                        RouteTarget::Role { role, .. } => RouteTarget::Role {
                            role: role.clone(),
                            scope: scope.unit_for(event, patient),
                        },
                        // Validation only allows a scope re-route on a role target.
                        other => other.clone(),
                    },
                };
                (
                    to,
                    Some(Reroute {
                        when: r.when,
                        from: given,
                    }),
                )
            }
            _ => (given, None),
        };
        let hold = spec.hold.filter(|h| h.clear.can_clear(event));
        let asks =
            hold.is_some() || spec.group_window.is_some() || spec.dedup_keep == DedupKeep::Latest;
        let critical = critical_event(event).filter(|_| asks);
        Route {
            rule: self.name.clone(),
            target,
            priority: spec
                .priority
                .unwrap_or_else(|| AlertPriority::from_event(event.priority)),
            template: spec.template.clone(),
            escalation: spec.escalation.clone(),
            dedup_window: spec.dedup_window,
            dedup_key: spec.dedup_key.clone(),
            dedup_keep: if critical.is_some() {
                DedupKeep::First
            } else {
                spec.dedup_keep
            },
            group_window: spec.group_window.filter(|_| critical.is_none()),
            hold: hold.filter(|_| critical.is_none()),
            rerouted,
            test_destination: spec.test_destination,
            safety_override: critical,
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

/// The patient's current unit per the census: an active encounter with a unit.
fn census_unit(p: &PatientState) -> Option<String> {
    if !p.status.is_active() {
        return None;
    }
    p.location
        .as_ref()
        .map(|l| l.unit.trim())
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

fn resolve_target(
    t: &Target,
    event: &ClinicalEvent,
    patient: Option<&PatientState>,
) -> RouteTarget {
    match t {
        Target::Role { role, scope } => RouteTarget::Role {
            role: role.clone(),
            scope: scope.unit_for(event, patient),
        },
        Target::Relation { relation, fallback } => RouteTarget::Relation {
            relation: *relation,
            fallback: fallback
                .as_ref()
                .map(|f| Box::new(resolve_target(f, event, patient))),
        },
        Target::Person { id } => RouteTarget::Person { id: id.clone() },
    }
}
