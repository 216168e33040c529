//! Who an alert's target or escalation tier reaches at an instant: roster
//! roles (with their failsafe), care-team relations through the census and
//! the event, and named people. Used by the alert engine when it notifies
//! and by `switchboard route` when it explains — one resolution for both.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::census::Census;
use crate::event::ClinicalEvent;
use crate::roster::{Member, OnCall, Roster, Rosters, Via};
use crate::rules::{Relation, Route, RouteTarget, Tier, TierTarget};

/// One person reached, and how.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// The roster member.
    pub member: Arc<Member>,
    /// `rotation`, `shift`, `override`, `failsafe`, `person` or `relation:<name>`.
    pub via: String,
    /// The roster definition (`rotations[0]`), when from a schedule.
    pub definition: Option<String>,
    /// The roster it came from.
    pub roster: Option<String>,
}

/// Who a target reached, and a note when it reached nobody or fell back.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// In order, without repeats.
    pub recipients: Vec<Recipient>,
    /// Why nobody, or which fallback served.
    pub note: Option<String>,
}

impl Resolved {
    /// Member ids, in order.
    pub fn member_ids(&self) -> Vec<String> {
        self.recipients
            .iter()
            .map(|r| r.member.id.clone())
            .collect()
    }
}

/// `rotation`, `shift`, `override` or `failsafe`.
pub fn via_kind(o: &OnCall) -> &'static str {
    if o.failsafe {
        return "failsafe";
    }
    match o.via {
        Via::Rotation(_) => "rotation",
        Via::Shift(_) => "shift",
        Via::Override(_) => "override",
        Via::Failsafe => "failsafe",
    }
}

/// Resolves targets against rosters and the census at one instant.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    /// The rosters.
    pub rosters: &'a Rosters,
    /// The instant.
    pub at: DateTime<Utc>,
    /// The census, when available.
    pub census: Option<&'a Census>,
}

impl Resolver<'_> {
    /// Who tier `tier` of `route` reaches for `ev`.
    pub fn tier(&self, route: &Route, tier: &Tier, ev: &ClinicalEvent) -> Resolved {
        self.tier_for(&route.target, tier, ev)
    }

    /// Who tier `tier` reaches for `ev` when the route's target is `target`.
    pub fn tier_for(&self, target: &RouteTarget, tier: &Tier, ev: &ClinicalEvent) -> Resolved {
        match &tier.target {
            TierTarget::Route => self.target(target, ev),
            TierTarget::Role { role, scope } => {
                let patient = self.census.and_then(|c| c.patient_of_event(ev));
                let t = RouteTarget::Role {
                    role: role.clone(),
                    scope: scope.unit_for(ev, patient),
                };
                self.target(&t, ev)
            }
            TierTarget::Relation(rel) => self.target(
                &RouteTarget::Relation {
                    relation: *rel,
                    fallback: None,
                },
                ev,
            ),
            TierTarget::Person(id) => self.target(&RouteTarget::Person { id: id.clone() }, ev),
            TierTarget::Failsafe => {
                let route_target = self.target(target, ev);
                self.failsafe(target, &route_target, ev)
            }
        }
    }

    fn on_call(&self, who: Vec<OnCall>) -> Resolved {
        Resolved {
            recipients: who
                .iter()
                .map(|o| Recipient {
                    member: o.member.clone(),
                    via: via_kind(o).to_string(),
                    definition: Some(o.via.to_string()),
                    roster: Some(o.roster.clone()),
                })
                .collect(),
            note: None,
        }
    }

    fn members(&self, members: Vec<Arc<Member>>, via: &str) -> Resolved {
        Resolved {
            recipients: members
                .into_iter()
                .map(|m| Recipient {
                    roster: self.roster_of(&m.id).map(|r| r.name.clone()),
                    member: m,
                    via: via.to_string(),
                    definition: None,
                })
                .collect(),
            note: None,
        }
    }

    fn roster_of(&self, member: &str) -> Option<&Roster> {
        self.rosters
            .rosters()
            .iter()
            .find(|r| r.members.iter().any(|m| m.id == member))
    }

    /// Who a route target reaches.
    pub fn target(&self, t: &RouteTarget, ev: &ClinicalEvent) -> Resolved {
        match t {
            RouteTarget::Role { role, scope } => {
                let mut r = self.on_call(self.rosters.on_call(role, scope.as_deref(), self.at));
                if r.recipients.is_empty() {
                    r.note = Some(format!("role `{role}` resolves to nobody"));
                }
                r
            }
            RouteTarget::Person { id } => match self.rosters.member(id) {
                Some(m) => self.members(vec![m.clone()], "person"),
                None => Resolved {
                    recipients: Vec::new(),
                    note: Some(format!("no roster member `{id}`")),
                },
            },
            RouteTarget::Relation { relation, fallback } => {
                let (members, why) = self.relation(*relation, ev);
                if !members.is_empty() {
                    return self.members(members, &format!("relation:{}", relation.as_str()));
                }
                match fallback {
                    Some(f) => {
                        let mut r = self.target(f, ev);
                        r.note = Some(format!("{why}; fallback: {}", describe(f)));
                        r
                    }
                    None => Resolved {
                        recipients: Vec::new(),
                        note: Some(why),
                    },
                }
            }
        }
    }

    /// Who holds a care-team relation: the census first (care team, nurse
    /// assignments), then the providers named on the event.
    fn relation(&self, rel: Relation, ev: &ClinicalEvent) -> (Vec<Arc<Member>>, String) {
        let empty = Census::new();
        let census = self.census.unwrap_or(&empty);
        let out: Vec<Arc<Member>> = census
            .event_relation_members(ev, rel, self.rosters, self.at)
            .iter()
            .filter_map(|id| self.rosters.member(id).cloned())
            .collect();
        let why = match (out.is_empty(), self.census.is_some()) {
            (false, _) => String::new(),
            (true, true) => format!(
                "{}: nobody reachable holds it in the census or on the event",
                rel.as_str()
            ),
            (true, false) if rel == Relation::AssignedNurse => {
                "assigned-nurse: census not available (nurse assignments come from the census)"
                    .to_string()
            }
            (true, false) => format!(
                "{}: no roster member named on the event; census not available",
                rel.as_str()
            ),
        };
        (out, why)
    }

    /// The failsafe of the route target's roster.
    fn failsafe(&self, t: &RouteTarget, resolved: &Resolved, ev: &ClinicalEvent) -> Resolved {
        match t {
            RouteTarget::Role { role, scope } => {
                let mut r = self.on_call(self.rosters.failsafe(role, scope.as_deref(), self.at));
                if r.recipients.is_empty() {
                    r.note = Some(format!("no failsafe for role `{role}`"));
                }
                r
            }
            RouteTarget::Relation {
                fallback: Some(f), ..
            } if resolved.recipients.is_empty() => {
                let inner = self.target(f, ev);
                self.failsafe(f, &inner, ev)
            }
            RouteTarget::Relation { .. } | RouteTarget::Person { .. } => {
                let role = resolved
                    .recipients
                    .first()
                    .and_then(|m| self.roster_of(&m.member.id))
                    .and_then(|r| r.roles.first());
                match role {
                    Some(role) => self.on_call(self.rosters.failsafe(
                        &role.name,
                        role.scope.as_deref(),
                        self.at,
                    )),
                    None => Resolved {
                        recipients: Vec::new(),
                        note: Some("no roster to take the failsafe from".to_string()),
                    },
                }
            }
        }
    }
}

/// A target in words, for explanations and timelines.
pub fn describe(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Role { role, scope: None } => format!("role {role}"),
        RouteTarget::Role {
            role,
            scope: Some(u),
        } => format!("role {role} (unit {u})"),
        RouteTarget::Relation {
            relation,
            fallback: None,
        } => format!("relation {}", relation.as_str()),
        RouteTarget::Relation {
            relation,
            fallback: Some(f),
        } => format!("relation {}, else {}", relation.as_str(), describe(f)),
        RouteTarget::Person { id } => format!("person {id}"),
    }
}
