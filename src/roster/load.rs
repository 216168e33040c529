//! Raw roster files -> validated [`Rosters`], collecting every problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use chrono_tz::Tz;

use super::raw::{RawFailsafe, RawOverride, RawRoster, RawRotation, RawShift};
use super::schedule::{Length, Override, Piece, Rotation, Shift, Weekdays};
use super::{
    CONTACT_BACKENDS, Failsafe, Member, ProviderId, Reporter, Role, Roster, Rosters, Source,
    parse_toml, show_local,
};
use crate::config::ConfigError;
use crate::config::locate::{FieldPath, Locator};

/// Longest stretch of wall time searched for overlapping definitions.
const OVERLAP_HORIZON_DAYS: i64 = 3 * 366;

pub(crate) fn load(sources: &[Source]) -> Result<Rosters, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut rosters = Vec::new();
    // Per roster: the file's locator, for errors found across files.
    let mut locators = Vec::new();
    for src in sources {
        let locator = Locator::new(&src.text);
        let raw: RawRoster = match parse_toml(&src.path, &src.text, &locator) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let rep = Reporter {
            file: &src.path,
            locator: &locator,
        };
        if let Some(r) = roster(&rep, raw, &mut errors) {
            rosters.push(r);
            locators.push((src.path.clone(), locator));
        }
    }
    let mut index = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut people: HashMap<String, (usize, Arc<Member>)> = HashMap::new();
    let mut provider_ids: HashMap<(String, String), String> = HashMap::new();
    for (ri, r) in rosters.iter().enumerate() {
        let rep = Reporter {
            file: &locators[ri].0,
            locator: &locators[ri].1,
        };
        let root = FieldPath::root();
        if let Some(first) = names.insert(r.name.clone(), ri) {
            errors.push(rep.at(
                &root.key("name"),
                format!(
                    "roster name `{}` is also used by {}",
                    r.name,
                    rosters[first].source.display()
                ),
            ));
        }
        for (i, role) in r.roles.iter().enumerate() {
            let key = (
                role.name.clone(),
                role.scope.as_ref().map(|s| s.to_ascii_lowercase()),
            );
            if let Some((other, _)) = index.insert(key, (ri, i)) {
                errors.push(rep.at(
                    &root.key("roles").index(i).key("name"),
                    format!(
                        "role `{}`{} is also defined by roster `{}`: one role, one roster",
                        role.name,
                        scope_text(&role.scope),
                        rosters[other].name
                    ),
                ));
            }
        }
        for (i, m) in r.members.iter().enumerate() {
            match people.get(&m.id) {
                Some((other, first)) if **first != **m => errors.push(rep.at(
                    &root.key("members").index(i).key("id"),
                    format!(
                        "member `{}` is defined differently by roster `{}`: the same id must describe the same person",
                        m.id, rosters[*other].name
                    ),
                )),
                Some(_) => {}
                None => {
                    people.insert(m.id.clone(), (ri, m.clone()));
                }
            }
            for (j, id) in m.ids.iter().enumerate() {
                let key = (id.value.clone(), id.authority.to_ascii_lowercase());
                if let Some(owner) = provider_ids.get(&key) {
                    if *owner != m.id {
                        errors.push(rep.at(
                            &root.key("members").index(i).key("ids").index(j),
                            format!(
                                "provider id {}^{} already belongs to member `{owner}`",
                                id.value, id.authority
                            ),
                        ));
                    }
                } else {
                    provider_ids.insert(key, m.id.clone());
                }
            }
        }
    }
    let out = Rosters {
        rosters,
        roles: index,
    };
    // Failsafe roles must exist (unscoped) and the chain must end in a person.
    for (ri, r) in out.rosters.iter().enumerate() {
        let Failsafe::Role(role) = &r.failsafe else {
            continue;
        };
        let rep = Reporter {
            file: &locators[ri].0,
            locator: &locators[ri].1,
        };
        let path = FieldPath::root().key("failsafe").key("role");
        let mut seen = vec![r.name.clone()];
        let mut next = role.clone();
        loop {
            let Some(&(fr, _)) = out.roles.get(&(next.clone(), None)) else {
                errors.push(rep.at(
                    &path,
                    format!(
                        "failsafe role `{next}` is not an unscoped role of any roster: {}",
                        known_roles(&out)
                    ),
                ));
                break;
            };
            let target = &out.rosters[fr];
            if seen.contains(&target.name) {
                seen.push(target.name.clone());
                errors.push(rep.at(
                    &path,
                    format!(
                        "failsafe chain loops without reaching a person: {}",
                        seen.join(" -> ")
                    ),
                ));
                break;
            }
            seen.push(target.name.clone());
            match &target.failsafe {
                Failsafe::Member(_) | Failsafe::None => break,
                Failsafe::Role(r2) => next = r2.clone(),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn scope_text(scope: &Option<String>) -> String {
    match scope {
        Some(s) => format!(" (scope `{s}`)"),
        None => String::new(),
    }
}

fn known_roles(r: &Rosters) -> String {
    let mut names: Vec<&str> = r
        .rosters
        .iter()
        .flat_map(|r| r.roles.iter())
        .filter(|r| r.scope.is_none())
        .map(|r| r.name.as_str())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        "no unscoped roles are defined".to_string()
    } else {
        format!("known: {}", names.join(", "))
    }
}

struct Ctx<'a, 'b> {
    rep: &'a Reporter<'b>,
    errors: &'a mut Vec<ConfigError>,
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

    fn datetime(&mut self, p: &FieldPath, v: &Option<String>) -> Option<NaiveDateTime> {
        let s = self.required(p, v, "a local date and time such as \"2026-01-05T07:00\"")?;
        let t = super::schedule::parse_datetime(s);
        if t.is_none() {
            self.err(
                p,
                format!("`{s}` is not a local date and time such as \"2026-01-05T07:00\""),
            );
        }
        t
    }

    fn time(&mut self, p: &FieldPath, v: &Option<String>) -> Option<NaiveTime> {
        let s = self.required(p, v, "a local time such as \"07:00\"")?;
        let t = super::schedule::parse_time(s);
        if t.is_none() {
            self.err(p, format!("`{s}` is not a local time such as \"07:00\""));
        }
        t
    }

    fn weekdays(&mut self, p: &FieldPath, v: &Option<Vec<String>>) -> Weekdays {
        let Some(list) = v else {
            return Weekdays::ALL;
        };
        if list.is_empty() {
            self.err(
                p,
                "must name at least one day (or leave it out for every day)",
            );
            return Weekdays::ALL;
        }
        let mut mask = 0u8;
        for (i, d) in list.iter().enumerate() {
            match Weekdays::parse_day(d) {
                Some(n) if mask & (1 << n) != 0 => {
                    self.err(&p.index(i), format!("`{d}` is listed twice"))
                }
                Some(n) => mask |= 1 << n,
                None => self.err(
                    &p.index(i),
                    format!("`{d}` is not a day (mon, tue, ... sun)"),
                ),
            }
        }
        Weekdays(mask)
    }

    fn member(&mut self, p: &FieldPath, v: &str, members: &[Arc<Member>]) -> Option<usize> {
        let i = members.iter().position(|m| m.id == v);
        if i.is_none() {
            let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
            self.err(
                p,
                format!(
                    "unknown member `{v}` (members of this roster: {})",
                    ids.join(", ")
                ),
            );
        }
        i
    }

    fn role(&mut self, p: &FieldPath, v: &Option<String>, roles: &[Role]) -> Option<usize> {
        let name = self.required(p, v, "the role this covers")?;
        let i = roles.iter().position(|r| r.name == name);
        if i.is_none() {
            let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            self.err(
                p,
                format!(
                    "unknown role `{name}`: declare it under [[roles]] (roles of this roster: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
        i
    }
}

fn roster(rep: &Reporter<'_>, raw: RawRoster, errors: &mut Vec<ConfigError>) -> Option<Roster> {
    let before = errors.len();
    let mut c = Ctx { rep, errors };
    let root = FieldPath::root();
    let name = c
        .required(&root.key("name"), &raw.name, "the team's name")
        .unwrap_or("")
        .to_string();
    let timezone = match c.required(
        &root.key("timezone"),
        &raw.timezone,
        "an IANA time zone such as America/New_York",
    ) {
        Some(z) => match z.parse::<Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                c.err(
                    &root.key("timezone"),
                    format!("`{z}` is not an IANA time zone name (e.g. America/New_York)"),
                );
                chrono_tz::UTC
            }
        },
        None => chrono_tz::UTC,
    };

    let mut members: Vec<Arc<Member>> = Vec::new();
    let mut seen_ids = HashSet::new();
    for (i, m) in raw.members.iter().enumerate() {
        let p = root.key("members").index(i);
        let Some(id) = c.required(&p.key("id"), &m.id, "a stable member id") else {
            continue;
        };
        if !seen_ids.insert(id.to_string()) {
            c.err(&p.key("id"), format!("member `{id}` is listed twice"));
        }
        let mut contacts = BTreeMap::new();
        for (backend, handle) in &m.contacts {
            if !CONTACT_BACKENDS.contains(&backend.as_str()) {
                c.err(
                    &p.key("contacts").key(backend),
                    format!(
                        "unknown contact backend `{backend}` (known: {})",
                        CONTACT_BACKENDS.join(", ")
                    ),
                );
            } else if handle.trim().is_empty() {
                c.err(&p.key("contacts").key(backend), "must not be empty");
            } else {
                contacts.insert(backend.clone(), handle.trim().to_string());
            }
        }
        if m.contacts.is_empty() {
            c.err(
                &p.key("contacts"),
                "required: at least one contact handle (e.g. contacts = { matrix = \"@name:example.org\" }); a member nobody can reach cannot be on call",
            );
        }
        let mut ids = Vec::new();
        for (j, pid) in m.ids.iter().enumerate() {
            let pp = p.key("ids").index(j);
            if let Some(v) = c.required(&pp.key("value"), &pid.value, "the identifier (XCN.1)") {
                ids.push(ProviderId {
                    value: v.to_string(),
                    authority: pid.authority.trim().to_string(),
                    type_code: pid.type_code.trim().to_string(),
                });
            }
        }
        members.push(Arc::new(Member {
            id: id.to_string(),
            display: m
                .display
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .unwrap_or(id)
                .to_string(),
            contacts,
            ids,
        }));
    }

    let mut roles: Vec<Role> = Vec::new();
    for (i, r) in raw.roles.iter().enumerate() {
        let p = root.key("roles").index(i);
        let Some(n) = c.required(&p.key("name"), &r.name, "the role's name") else {
            continue;
        };
        let scope = match r.scope.as_deref().map(str::trim) {
            Some("") => {
                c.err(
                    &p.key("scope"),
                    "must not be empty (leave it out for no scope)",
                );
                None
            }
            s => s.map(str::to_string),
        };
        if roles.iter().any(|x| x.name == n) {
            c.err(
                &p.key("name"),
                format!("role `{n}` is declared twice in this roster"),
            );
        }
        roles.push(Role {
            name: n.to_string(),
            scope,
            allow_overlap: r.allow_overlap,
        });
    }

    let rotations: Vec<Rotation> = raw
        .rotations
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rotation(&mut c, &root.key("rotations").index(i), r, &members, &roles))
        .collect();
    let shifts: Vec<Shift> = raw
        .shifts
        .iter()
        .enumerate()
        .filter_map(|(i, s)| shift(&mut c, &root.key("shifts").index(i), s, &members, &roles))
        .collect();
    let overrides: Vec<Override> = raw
        .overrides
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            overrider(&mut c, &root.key("overrides").index(i), o, &members, &roles)
        })
        .collect();
    let failsafe = if raw.failsafe.is_none() && roles.is_empty() {
        // A directory: members only.
        Some(Failsafe::None)
    } else {
        failsafe(&mut c, raw.failsafe.as_ref(), &members)
    };
    let has_errors = c.errors.len() > before;
    if has_errors || failsafe.is_none() {
        return None;
    }
    let roster = Roster {
        source: rep.file.to_path_buf(),
        name,
        timezone,
        members,
        roles,
        rotations,
        shifts,
        overrides,
        failsafe: failsafe?,
    };
    overlaps(&mut c, &roster);
    if c.errors.len() > before {
        None
    } else {
        Some(roster)
    }
}

fn rotation(
    c: &mut Ctx<'_, '_>,
    p: &FieldPath,
    r: &RawRotation,
    members: &[Arc<Member>],
    roles: &[Role],
) -> Option<Rotation> {
    let role = c.role(&p.key("role"), &r.role, roles);
    let mut ms = Vec::new();
    if r.members.is_empty() {
        c.err(
            &p.key("members"),
            "required: the members taking turns, in order",
        );
    }
    for (j, m) in r.members.iter().enumerate() {
        if let Some(i) = c.member(&p.key("members").index(j), m, members) {
            ms.push(i);
        }
    }
    let start_path = p.key("start");
    let start_text = c.required(
        &start_path,
        &r.start,
        "the first hand-off: \"2026-01-05T07:00\", or a date with `handoff`",
    );
    let handoff = match &r.handoff {
        Some(_) => c.time(&p.key("handoff"), &r.handoff),
        None => None,
    };
    let start = start_text.and_then(|s| {
        if let Some(dt) = super::schedule::parse_datetime(s) {
            if let Some(h) = handoff
                && h != dt.time()
            {
                c.err(
                    &p.key("handoff"),
                    format!(
                        "`start` already says the hand-off is at {}",
                        dt.time().format("%H:%M")
                    ),
                );
            }
            Some(dt)
        } else if let Some(d) = super::schedule::parse_date(s) {
            match handoff {
                Some(h) => Some(d.and_time(h)),
                None if r.handoff.is_none() => {
                    c.err(
                        &p.key("handoff"),
                        "required when `start` is a date: the local hand-off time, e.g. \"07:00\"",
                    );
                    None
                }
                None => None,
            }
        } else {
            c.err(
                &start_path,
                format!("`{s}` is not a local date and time such as \"2026-01-05T07:00\""),
            );
            None
        }
    });
    let length = match (r.length_days, r.length_hours) {
        (Some(d), None) if d > 0 && d <= 366 => Some(Length::Days(d)),
        (None, Some(h)) if h > 0 && h <= 24 * 366 => Some(Length::Hours(h)),
        (Some(_), None) => {
            c.err(&p.key("length_days"), "must be between 1 and 366");
            None
        }
        (None, Some(_)) => {
            c.err(&p.key("length_hours"), "must be between 1 and 8784");
            None
        }
        (Some(_), Some(_)) => {
            c.err(
                &p.key("length_hours"),
                "give `length_days` or `length_hours`, not both",
            );
            None
        }
        (None, None) => {
            c.err(p, "required: `length_days` or `length_hours` (one turn)");
            None
        }
    };
    let weekdays = c.weekdays(&p.key("weekdays"), &r.weekdays);
    let end = match &r.end {
        Some(_) => c.datetime(&p.key("end"), &r.end),
        None => None,
    };
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        c.err(&p.key("end"), "must be after `start`");
    }
    Some(Rotation {
        role: role?,
        members: ms,
        start: start?,
        length: length?,
        weekdays,
        end,
        layer: r.layer,
    })
    .filter(|r| !r.members.is_empty())
}

fn shift(
    c: &mut Ctx<'_, '_>,
    p: &FieldPath,
    s: &RawShift,
    members: &[Arc<Member>],
    roles: &[Role],
) -> Option<Shift> {
    let role = c.role(&p.key("role"), &s.role, roles);
    let member = c
        .required(&p.key("member"), &s.member, "the member working this shift")
        .and_then(|m| c.member(&p.key("member"), m, members));
    let from = c.time(&p.key("from"), &s.from);
    let to = c.time(&p.key("to"), &s.to);
    if let (Some(f), Some(t)) = (from, to)
        && f == t
    {
        c.err(
            &p.key("to"),
            "equals `from`: for round-the-clock cover use a rotation with length_days = 1",
        );
        return None;
    }
    let weekdays = c.weekdays(&p.key("weekdays"), &s.weekdays);
    Some(Shift {
        role: role?,
        member: member?,
        from: from?,
        to: to?,
        weekdays,
        layer: s.layer,
    })
}

fn overrider(
    c: &mut Ctx<'_, '_>,
    p: &FieldPath,
    o: &RawOverride,
    members: &[Arc<Member>],
    roles: &[Role],
) -> Option<Override> {
    let role = c.role(&p.key("role"), &o.role, roles);
    let member = c
        .required(&p.key("member"), &o.member, "the member taking over")
        .and_then(|m| c.member(&p.key("member"), m, members));
    let start = c.datetime(&p.key("start"), &o.start);
    let end = c.datetime(&p.key("end"), &o.end);
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        c.err(&p.key("end"), "must be after `start`");
        return None;
    }
    Some(Override {
        role: role?,
        member: member?,
        start: start?,
        end: end?,
        reason: o.reason.clone(),
    })
}

fn failsafe(
    c: &mut Ctx<'_, '_>,
    f: Option<&RawFailsafe>,
    members: &[Arc<Member>],
) -> Option<Failsafe> {
    let p = FieldPath::root().key("failsafe");
    let Some(f) = f else {
        c.err(
            &p,
            "required: [failsafe] with `member` (of this roster) or `role` — who is paged when nobody is on call",
        );
        return None;
    };
    match (&f.member, &f.role) {
        (Some(m), None) => c.member(&p.key("member"), m, members).map(Failsafe::Member),
        (None, Some(r)) if !r.trim().is_empty() => Some(Failsafe::Role(r.trim().to_string())),
        (None, Some(_)) => {
            c.err(&p.key("role"), "must not be empty");
            None
        }
        (Some(_), Some(_)) => {
            c.err(&p.key("role"), "give `member` or `role`, not both");
            None
        }
        (None, None) => {
            c.err(&p, "required: `member` (of this roster) or `role`");
            None
        }
    }
}

/// Two definitions of one role and layer covering the same wall time (for
/// different members or from different definitions) is an error unless the
/// role allows overlaps. Overrides are checked among themselves.
fn overlaps(c: &mut Ctx<'_, '_>, r: &Roster) {
    for (ri, role) in r.roles.iter().enumerate() {
        if role.allow_overlap {
            continue;
        }
        let mut layers: Vec<i32> = r
            .rotations
            .iter()
            .filter(|x| x.role == ri)
            .map(|x| x.layer)
            .chain(r.shifts.iter().filter(|x| x.role == ri).map(|x| x.layer))
            .collect();
        layers.sort();
        layers.dedup();
        for layer in layers {
            let rots: Vec<(usize, &Rotation)> = r
                .rotations
                .iter()
                .enumerate()
                .filter(|(_, x)| x.role == ri && x.layer == layer)
                .collect();
            let shifts: Vec<(usize, &Shift)> = r
                .shifts
                .iter()
                .enumerate()
                .filter(|(_, x)| x.role == ri && x.layer == layer)
                .collect();
            if rots.len() + shifts.len() < 2 {
                continue;
            }
            // Window: from the earliest rotation start (or any Monday) over one
            // common period of every pattern (shifts repeat weekly).
            let monday = NaiveDate::from_ymd_opt(2026, 1, 5)
                .unwrap_or_default()
                .and_time(NaiveTime::MIN);
            let first = rots.iter().map(|(_, x)| x.start).min().unwrap_or(monday);
            let last = rots.iter().map(|(_, x)| x.start).max().unwrap_or(monday);
            let mut period_mins: i64 = 7 * 24 * 60;
            for (_, x) in &rots {
                period_mins = lcm(period_mins, x.period().num_minutes().max(1));
                if period_mins > OVERLAP_HORIZON_DAYS * 24 * 60 {
                    period_mins = OVERLAP_HORIZON_DAYS * 24 * 60;
                    break;
                }
            }
            let a = first - Duration::days(1);
            let b = last + Duration::minutes(period_mins) + Duration::days(8);
            let mut pieces: Vec<Piece> = Vec::new();
            for (i, x) in &rots {
                x.pieces(*i, a, b, &mut pieces);
            }
            for (i, x) in &shifts {
                x.pieces(*i, a, b, &mut pieces);
            }
            report_overlaps(c, r, ri, &mut pieces, |v| {
                FieldPath::root().key(match v {
                    super::Via::Rotation(_) => "rotations",
                    _ => "shifts",
                })
            });
        }
        let mut ov: Vec<Piece> = Vec::new();
        for (i, o) in r.overrides.iter().enumerate().filter(|(_, o)| o.role == ri) {
            o.pieces(i, NaiveDateTime::MIN, NaiveDateTime::MAX, &mut ov);
        }
        report_overlaps(c, r, ri, &mut ov, |_| FieldPath::root().key("overrides"));
    }
}

fn report_overlaps(
    c: &mut Ctx<'_, '_>,
    r: &Roster,
    role: usize,
    pieces: &mut [Piece],
    table: impl Fn(super::Via) -> FieldPath,
) {
    pieces.sort_by_key(|p| (p.start, p.end));
    let mut reported = HashSet::new();
    let mut open: Option<Piece> = None;
    for p in pieces.iter() {
        if let Some(o) = open {
            if p.start < o.end && o.via != p.via && reported.insert((o.via, p.via)) {
                let idx = match p.via {
                    super::Via::Rotation(i) | super::Via::Shift(i) | super::Via::Override(i) => i,
                    super::Via::Failsafe => 0,
                };
                c.err(
                    &table(p.via).index(idx).key("role"),
                    format!(
                        "overlaps {} for role `{}` from {}: `{}` and `{}` would both be on call; \
                         put one in a higher `layer`, or set `allow_overlap = true` on the role if intended",
                        o.via,
                        r.roles[role].name,
                        show_local(r.timezone, p.start.max(o.start)),
                        r.members[o.member].id,
                        r.members[p.member].id,
                    ),
                );
            }
            if p.end > o.end {
                open = Some(*p);
            }
        } else {
            open = Some(*p);
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: i64, b: i64) -> i64 {
    (a / gcd(a, b)).saturating_mul(b)
}
