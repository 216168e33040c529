//! Queries over validated rosters: who is on call, coverage gaps, the
//! effective shifts of a period, DST adjustments and on-call changes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::schedule::{Piece, Rank, Resolution, Via, local, resolve};
use super::{Failsafe, Member, Rosters, show_instant, show_length, show_local};

/// Wall time searched before and after an instant. A boundary in a fold can
/// be up to the fold's size (2 h at most in current tzdata: Antarctica/Troll)
/// later in wall time than an instant it already covers.
const FOLD_MARGIN: Duration = Duration::hours(3);

/// Longest failsafe chain followed (load rejects loops).
const MAX_FAILSAFE_DEPTH: usize = 16;

/// A UTC interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First instant covered.
    pub start: DateTime<Utc>,
    /// First instant not covered.
    pub end: DateTime<Utc>,
}

/// Someone on call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnCall {
    /// Roster (team) name.
    pub roster: String,
    /// Role they hold (for a failsafe role, that role).
    pub role: String,
    /// Unit scope of that role.
    pub scope: Option<String>,
    /// The person, with contact handles.
    pub member: Arc<Member>,
    /// The definition that put them here.
    pub via: Via,
    /// The covering interval of that definition (`None` for a failsafe member).
    pub span: Option<Span>,
    /// True when nobody was scheduled for the requested role and this is its failsafe.
    pub failsafe: bool,
}

/// A stretch of time in which a role has nobody scheduled (only its failsafe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Roster name.
    pub roster: String,
    /// Role name.
    pub role: String,
    /// Unit scope of the role.
    pub scope: Option<String>,
    /// First uncovered instant.
    pub start: DateTime<Utc>,
    /// First covered instant again (or the end of the window asked for).
    pub end: DateTime<Utc>,
    /// `start` in the roster's zone.
    pub start_local: DateTime<Tz>,
    /// `end` in the roster's zone.
    pub end_local: DateTime<Tz>,
    /// Who gets paged meanwhile (`failsafe member x` / `failsafe role y`).
    pub failsafe: String,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "roster `{}` role `{}`{}: nobody scheduled from {} ({} UTC) to {} ({} UTC), {}; only the {} covers",
            self.roster,
            self.role,
            self.scope
                .as_ref()
                .map(|s| format!(" (scope {s})"))
                .unwrap_or_default(),
            self.start_local.format("%Y-%m-%d %H:%M %Z"),
            self.start.format("%Y-%m-%d %H:%M"),
            self.end_local.format("%Y-%m-%d %H:%M %Z"),
            self.end.format("%Y-%m-%d %H:%M"),
            show_length(self.end - self.start),
            self.failsafe
        )
    }
}

/// One stretch of effective on-call duty (after overrides and layers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftSpan {
    /// Roster name.
    pub roster: String,
    /// Role name.
    pub role: String,
    /// Unit scope of the role.
    pub scope: Option<String>,
    /// The person.
    pub member: Arc<Member>,
    /// The definition.
    pub via: Via,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC, exclusive).
    pub end: DateTime<Utc>,
    /// Start in the roster's zone.
    pub start_local: DateTime<Tz>,
    /// End in the roster's zone.
    pub end_local: DateTime<Tz>,
    /// Wall-clock length as written (e.g. 12 h for 20:00–08:00), before DST
    /// and before being cut by overrides or higher layers.
    pub nominal: TimeDelta,
}

impl ShiftSpan {
    /// Absolute length: 11 h for a 20:00–08:00 night on spring-forward night.
    pub fn length(&self) -> TimeDelta {
        self.end - self.start
    }
}

impl fmt::Display for ShiftSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} -> {} {} ({}",
            self.role,
            self.member.id,
            self.start_local.format("%Y-%m-%d %H:%M %Z"),
            self.end_local.format("%Y-%m-%d %H:%M %Z"),
            self.via,
            show_length(self.length())
        )?;
        if self.length() != self.nominal {
            write!(f, "; {} as written, DST or cut", show_length(self.nominal))?;
        }
        write!(f, ")")
    }
}

/// A boundary the DST policy moved (for `switchboard check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstAdjustment {
    /// Roster name.
    pub roster: String,
    /// Role name.
    pub role: String,
    /// Definition whose boundary it is.
    pub via: Via,
    /// The wall time as written.
    pub wall: NaiveDateTime,
    /// The roster's zone.
    pub timezone: Tz,
    /// Gap or fold.
    pub resolution: Resolution,
    /// The instant used.
    pub instant: DateTime<Utc>,
}

impl fmt::Display for DstAdjustment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = show_local(self.timezone, self.wall);
        let used = show_instant(self.timezone, self.instant);
        match self.resolution {
            Resolution::Gap => write!(
                f,
                "roster `{}` {} ({}): {wall} does not exist (DST gap); it takes effect at {used}, the first instant after the gap",
                self.roster, self.via, self.role
            ),
            Resolution::Fold { later } => write!(
                f,
                "roster `{}` {} ({}): {wall} happens twice (DST fold); the earliest, {used}, is used, not {}",
                self.roster,
                self.via,
                self.role,
                show_instant(self.timezone, later)
            ),
            Resolution::Exact => write!(f, "roster `{}` {}: {wall}", self.roster, self.via),
        }
    }
}

/// A role whose on-call people differ between two versions of the rosters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnCallChange {
    /// Role name.
    pub role: String,
    /// Unit scope.
    pub scope: Option<String>,
    /// Member ids on call before.
    pub before: Vec<String>,
    /// Member ids on call after.
    pub after: Vec<String>,
}

impl Rosters {
    /// Who is on call for `role` (in `scope`, else the unscoped role) at `at`:
    /// the scheduled people, or when there are none the role's failsafe
    /// (marked `failsafe`). Empty only for an unknown role.
    pub fn on_call(&self, role: &str, scope: Option<&str>, at: DateTime<Utc>) -> Vec<OnCall> {
        let Some((ri, rl)) = self.find_role(role, scope) else {
            return Vec::new();
        };
        let s = self.scheduled_in(ri, rl, at);
        if s.is_empty() {
            self.failsafe_in(ri, at, 0)
        } else {
            s
        }
    }

    /// Who is scheduled (rotation, shift or override) — no failsafe.
    pub fn scheduled(&self, role: &str, scope: Option<&str>, at: DateTime<Utc>) -> Vec<OnCall> {
        match self.find_role(role, scope) {
            Some((ri, rl)) => self.scheduled_in(ri, rl, at),
            None => Vec::new(),
        }
    }

    /// The failsafe of the roster owning `role` (in `scope`), at `at` — the
    /// last tier of every escalation policy.
    pub fn failsafe(&self, role: &str, scope: Option<&str>, at: DateTime<Utc>) -> Vec<OnCall> {
        match self.find_role(role, scope) {
            Some((ri, _)) => self.failsafe_in(ri, at, 0),
            None => Vec::new(),
        }
    }

    fn scheduled_in(&self, ri: usize, rl: usize, at: DateTime<Utc>) -> Vec<OnCall> {
        let r = &self.rosters[ri];
        let tz = r.timezone;
        let l = local(tz, at);
        let pieces = self.pieces(ri, rl, l, l + FOLD_MARGIN);
        let mut best: Option<Rank> = None;
        let mut out: Vec<OnCall> = Vec::new();
        for p in pieces {
            if best.is_some_and(|b| p.rank < b) {
                continue;
            }
            let (s, _) = resolve(tz, p.start);
            if s > at {
                continue;
            }
            let (e, _) = resolve(tz, p.end);
            if e <= at {
                continue;
            }
            if best.is_none_or(|b| p.rank > b) {
                best = Some(p.rank);
                out.clear();
            }
            out.push(self.on_call_entry(ri, rl, &p, Some(Span { start: s, end: e }), false));
        }
        out.sort_by(|a, b| a.member.id.cmp(&b.member.id).then(a.via.cmp(&b.via)));
        out
    }

    fn failsafe_in(&self, ri: usize, at: DateTime<Utc>, depth: usize) -> Vec<OnCall> {
        let r = &self.rosters[ri];
        match &r.failsafe {
            Failsafe::Member(m) => vec![OnCall {
                roster: r.name.clone(),
                role: "failsafe".to_string(),
                scope: None,
                member: r.members[*m].clone(),
                via: Via::Failsafe,
                span: None,
                failsafe: true,
            }],
            Failsafe::Role(name) => {
                let Some(&(fr, frl)) = self.roles.get(&(name.clone(), None)) else {
                    return Vec::new();
                };
                let mut s = self.scheduled_in(fr, frl, at);
                if s.is_empty() && depth < MAX_FAILSAFE_DEPTH {
                    s = self.failsafe_in(fr, at, depth + 1);
                }
                for o in &mut s {
                    o.failsafe = true;
                }
                s
            }
            Failsafe::None => Vec::new(),
        }
    }

    fn on_call_entry(
        &self,
        ri: usize,
        rl: usize,
        p: &Piece,
        span: Option<Span>,
        failsafe: bool,
    ) -> OnCall {
        let r = &self.rosters[ri];
        OnCall {
            roster: r.name.clone(),
            role: r.roles[rl].name.clone(),
            scope: r.roles[rl].scope.clone(),
            member: r.members[p.member].clone(),
            via: p.via,
            span,
            failsafe,
        }
    }

    /// Naive pieces of every definition of a role intersecting `[a, b)`.
    pub(crate) fn pieces(
        &self,
        ri: usize,
        rl: usize,
        a: NaiveDateTime,
        b: NaiveDateTime,
    ) -> Vec<Piece> {
        let r = &self.rosters[ri];
        let mut out = Vec::new();
        for (i, x) in r.rotations.iter().enumerate().filter(|(_, x)| x.role == rl) {
            x.pieces(i, a, b, &mut out);
        }
        for (i, x) in r.shifts.iter().enumerate().filter(|(_, x)| x.role == rl) {
            x.pieces(i, a, b, &mut out);
        }
        for (i, x) in r.overrides.iter().enumerate().filter(|(_, x)| x.role == rl) {
            x.pieces(i, a, b, &mut out);
        }
        out
    }

    /// Pieces whose UTC interval is non-empty and intersects `[from, to)`, with that interval.
    fn utc_pieces(
        &self,
        ri: usize,
        rl: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(Span, Piece)> {
        let tz = self.rosters[ri].timezone;
        let a = local(tz, from) - FOLD_MARGIN;
        let b = local(tz, to) + FOLD_MARGIN;
        let mut out: Vec<(Span, Piece)> = self
            .pieces(ri, rl, a, b)
            .into_iter()
            .filter_map(|p| {
                let s = resolve(tz, p.start).0;
                let e = resolve(tz, p.end).0;
                (s < e && s < to && e > from).then_some((Span { start: s, end: e }, p))
            })
            .collect();
        out.sort_by_key(|(s, p)| (s.start, s.end, p.via));
        out
    }

    /// Every stretch of `[from, to)` in which a role has nobody scheduled.
    pub fn coverage_gaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Gap> {
        let mut gaps = Vec::new();
        for (ri, r) in self.rosters.iter().enumerate() {
            for (rl, role) in r.roles.iter().enumerate() {
                let mut cursor = from;
                let mut push = |s: DateTime<Utc>, e: DateTime<Utc>| {
                    gaps.push(Gap {
                        roster: r.name.clone(),
                        role: role.name.clone(),
                        scope: role.scope.clone(),
                        start: s,
                        end: e,
                        start_local: s.with_timezone(&r.timezone),
                        end_local: e.with_timezone(&r.timezone),
                        failsafe: match &r.failsafe {
                            Failsafe::Member(m) => {
                                format!("failsafe member `{}`", r.members[*m].id)
                            }
                            Failsafe::Role(x) => format!("failsafe role `{x}`"),
                            Failsafe::None => "no failsafe".to_string(),
                        },
                    })
                };
                for (span, _) in self.utc_pieces(ri, rl, from, to) {
                    if span.start > cursor {
                        push(cursor, span.start);
                    }
                    cursor = cursor.max(span.end);
                }
                if cursor < to {
                    push(cursor, to);
                }
            }
        }
        gaps
    }

    /// The effective duty stretches of a role intersecting `[from, to)`, after
    /// overrides and layers, whole (not clipped to the window), in time order.
    pub fn shifts_between(
        &self,
        role: &str,
        scope: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<ShiftSpan> {
        let Some((ri, rl)) = self.find_role(role, scope) else {
            return Vec::new();
        };
        let first = self.utc_pieces(ri, rl, from, to);
        let (Some(lo), Some(hi)) = (
            first.iter().map(|x| x.0.start).min(),
            first.iter().map(|x| x.0.end).max(),
        ) else {
            return Vec::new();
        };
        // Everything that can compete with the pieces found, over their extent.
        let all = self.utc_pieces(ri, rl, lo, hi);
        let mut bounds: Vec<DateTime<Utc>> = all
            .iter()
            .flat_map(|(s, _)| [s.start, s.end])
            .filter(|t| *t >= lo && *t <= hi)
            .collect();
        bounds.sort();
        bounds.dedup();
        let mut segments: Vec<(usize, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        let mut open: Vec<(usize, DateTime<Utc>)> = Vec::new();
        let mut next = 0;
        let mut active: Vec<usize> = Vec::new();
        for w in bounds.windows(2) {
            let (x, y) = (w[0], w[1]);
            active.retain(|&i| all[i].0.end > x);
            while next < all.len() && all[next].0.start <= x {
                if all[next].0.end > x {
                    active.push(next);
                }
                next += 1;
            }
            let top = active.iter().map(|&i| all[i].1.rank).max();
            let winners: Vec<usize> = active
                .iter()
                .copied()
                .filter(|&i| Some(all[i].1.rank) == top)
                .collect();
            open.retain(|&(i, s)| {
                let keep = winners.contains(&i);
                if !keep {
                    segments.push((i, s, x));
                }
                keep
            });
            for &i in &winners {
                if !open.iter().any(|&(j, _)| j == i) {
                    open.push((i, x));
                }
            }
            let _ = y;
        }
        if let Some(&end) = bounds.last() {
            for (i, s) in open {
                segments.push((i, s, end));
            }
        }
        let r = &self.rosters[ri];
        let mut out: Vec<ShiftSpan> = segments
            .into_iter()
            .filter(|&(_, s, e)| s < to && e > from && s < e)
            .map(|(i, s, e)| {
                let p = &all[i].1;
                ShiftSpan {
                    roster: r.name.clone(),
                    role: r.roles[rl].name.clone(),
                    scope: r.roles[rl].scope.clone(),
                    member: r.members[p.member].clone(),
                    via: p.via,
                    start: s,
                    end: e,
                    start_local: s.with_timezone(&r.timezone),
                    end_local: e.with_timezone(&r.timezone),
                    nominal: p.end - p.start,
                }
            })
            .collect();
        out.sort_by_key(|a| (a.start, a.via));
        out
    }

    /// Every boundary in `[from, to)` that the DST policy moved (gap) or
    /// chose (fold), for `switchboard check`.
    pub fn dst_adjustments(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DstAdjustment> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (ri, r) in self.rosters.iter().enumerate() {
            let tz = r.timezone;
            for rl in 0..r.roles.len() {
                let a = local(tz, from) - FOLD_MARGIN;
                let b = local(tz, to) + FOLD_MARGIN;
                for p in self.pieces(ri, rl, a, b) {
                    for wall in [p.start, p.end] {
                        let (instant, resolution) = resolve(tz, wall);
                        if resolution == Resolution::Exact
                            || instant < from
                            || instant >= to
                            || !seen.insert((ri, p.via, wall))
                        {
                            continue;
                        }
                        out.push(DstAdjustment {
                            roster: r.name.clone(),
                            role: r.roles[rl].name.clone(),
                            via: p.via,
                            wall,
                            timezone: tz,
                            resolution,
                            instant,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.instant, &a.roster, a.via).cmp(&(b.instant, &b.roster, b.via)));
        out
    }

    /// Roles whose on-call people at `at` differ in `newer` — to show before
    /// a reload replaces who is on call mid-shift.
    pub fn on_call_changes(&self, newer: &Rosters, at: DateTime<Utc>) -> Vec<OnCallChange> {
        let mut keys: Vec<(String, Option<String>)> = self
            .rosters
            .iter()
            .chain(newer.rosters.iter())
            .flat_map(|r| r.roles.iter().map(|x| (x.name.clone(), x.scope.clone())))
            .collect();
        keys.sort();
        keys.dedup();
        let ids = |r: &Rosters, role: &str, scope: Option<&str>| -> Vec<String> {
            let Some((ri, rl)) = r
                .roles
                .get(&(role.to_string(), scope.map(str::to_ascii_lowercase)))
                .copied()
            else {
                return Vec::new();
            };
            let mut s = r.scheduled_in(ri, rl, at);
            if s.is_empty() {
                s = r.failsafe_in(ri, at, 0);
            }
            s.into_iter().map(|o| o.member.id.clone()).collect()
        };
        keys.into_iter()
            .filter_map(|(role, scope)| {
                let before = ids(self, &role, scope.as_deref());
                let after = ids(newer, &role, scope.as_deref());
                (before != after).then_some(OnCallChange {
                    role,
                    scope,
                    before,
                    after,
                })
            })
            .collect()
    }
}
