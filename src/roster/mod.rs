//! On-call rosters in IANA time zones: who is on call for a role, at an instant.
//!
//! Input: `rosters/*.toml`, one team per file (format below), validated by
//! [`load_dir`] into [`Rosters`] — which therefore only exists when valid.
//! Output: [`Rosters::on_call`] (who, how to reach them, which definition put
//! them there), [`Rosters::coverage_gaps`], [`Rosters::shifts_between`] for
//! reports, [`Rosters::dst_adjustments`] for `switchboard check`.
//! Time is always a parameter (`DateTime<Utc>`): nothing here reads a clock
//! or the host's time zone.
//!
//! # File format
//!
//! ```toml
//! name = "icu-nursing"                    # unique over all roster files
//! timezone = "America/New_York"           # IANA zone of every local time below
//!
//! [[members]]
//! id = "rn-day"                           # unique in the file; the same id in two files
//! display = "Charge RN Day"               #   must describe the same person identically
//! contacts = { matrix = "@rn-day:example.org", pager = "4711" }   # backend -> handle, at least one
//! ids = [{ value = "1234567890", authority = "NPI" }]             # provider ids as in HL7 XCN
//!
//! [[roles]]
//! name = "charge-nurse"
//! scope = "ICU"                           # optional: the unit (PV1-3.1) this role covers
//! allow_overlap = false                   # true: several people may be on call at once
//!
//! [[rotations]]                           # members take turns
//! role = "charge-nurse"
//! members = ["rn-day", "rn-night"]
//! start = "2026-01-05T07:00"              # first hand-off (or a date plus `handoff = "07:00"`)
//! length_days = 7                         # or length_hours = 12
//! weekdays = ["sat", "sun"]               # optional: only these days (hand-off to hand-off)
//! end = "2027-01-04T07:00"                # optional
//! layer = 0                               # optional precedence: higher replaces lower
//!
//! [[shifts]]                              # the same person at the same wall times
//! role = "charge-nurse"
//! member = "rn-night"
//! from = "19:00"
//! to = "07:00"                            # not after `from`: wraps to the next day
//! weekdays = ["mon", "tue"]               # optional: days on which the shift starts
//! layer = 0
//!
//! [[overrides]]                           # replaces whoever else is on call
//! role = "charge-nurse"
//! member = "rn-day"
//! start = "2026-03-07T19:00"
//! end = "2026-03-08T07:00"
//! reason = "swap"
//!
//! [failsafe]                              # required with roles: who gets it when nobody is scheduled
//! member = "rn-day"                       # a member of this roster, or
//! # role = "house-supervisor"             # an unscoped role of any roster
//! ```
//!
//! A file with `members` and no `roles` is a **directory**: people who are
//! not on a rotation here (attendings, consultants) but must be reachable
//! when a message names them (PV1-7, ROL) — their provider `ids` and
//! `contacts` are what care-team relations resolve to. It needs no
//! `[failsafe]`.
//!
//! Validation (every error names file, line, column and field): unknown
//! fields, bad time zone, malformed dates and times, unknown members and
//! roles, duplicate ids, a role defined (name and scope) in two rosters, a
//! failsafe chain that loops, and two definitions of one layer that would put
//! two people on call for one role at once (unless `allow_overlap`). Overlaps
//! are checked in wall time over one full common period of the role's
//! patterns (at most three years after the last rotation start); wall-time
//! and UTC overlaps are the same thing because of the monotone mapping below.
//!
//! # DST policy
//!
//! Every boundary (shift start and end, rotation hand-off, override start and
//! end) is a local wall time in the roster's zone, resolved to UTC with
//! chrono's `MappedLocalTime` ([`schedule::resolve`]):
//!
//! - **gap** (the wall time does not exist, clocks jump forward): the boundary
//!   moves to the *first valid instant after the gap* — a daily "00:00" shift in
//!   America/Santiago on 2026-09-06 starts at 01:00;
//! - **fold** (the wall time happens twice, clocks go back): the *earliest*
//!   instant is used.
//!
//! The mapping is monotone, so a hand-off in a gap or fold never opens a gap
//! or an overlap between the outgoing and incoming person; shifts simply last
//! their absolute length (a 20:00–08:00 night is 11 h on spring-forward night
//! and 13 h on fall-back night, see [`ShiftSpan::length`]).
//! [`Rosters::dst_adjustments`] lists every boundary the policy moved, for
//! `switchboard check`. [`DST_POLICY`] is the sentence to echo.
//!
//! # Resolution
//!
//! For a role (and optional unit scope — the scoped role when one exists, else
//! the unscoped role), the definitions covering the instant with the highest
//! precedence win: overrides, then the highest `layer`. When nobody is
//! scheduled, [`Rosters::on_call`] returns the roster's failsafe (marked
//! `failsafe: true`), following a failsafe role to its own roster's failsafe
//! when that role is uncovered too.

mod files;
mod load;
mod raw;
mod resolve;
pub mod schedule;

#[cfg(test)]
mod dst_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

pub(crate) use files::{Reporter, Source, one_or_many, parse_toml, read_dir};
pub use resolve::{DstAdjustment, Gap, OnCall, OnCallChange, ShiftSpan, Span};
pub use schedule::{Length, Override, Resolution, Rotation, Shift, Via, Weekdays};

use crate::config::ConfigError;

/// The DST policy, as `switchboard check` should state it.
pub const DST_POLICY: &str = "shift boundaries are local wall times in the roster's time zone; \
a boundary inside a DST gap moves to the first valid instant after the gap, \
a boundary inside a DST fold uses the earliest instant";

/// Contact backends a member may have a handle for.
pub const CONTACT_BACKENDS: &[&str] =
    &["matrix", "pager", "wctp", "webhook", "sms", "email", "fhir"];

/// The tz database compiled into this build (chrono-tz); a test pins it so a
/// silent tzdata change (new DST rules) is noticed.
pub const TZDB_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// A provider identifier as it appears in HL7 XCN fields (XCN.1, XCN.9, XCN.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderId {
    /// XCN.1.
    pub value: String,
    /// XCN.9 assigning authority, e.g. `NPI`; may be empty.
    pub authority: String,
    /// XCN.13 identifier type code; may be empty.
    pub type_code: String,
}

/// A person who can be on call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable id, referenced by rotations, shifts, overrides and rules.
    pub id: String,
    /// Name shown to operators.
    pub display: String,
    /// Contact handle per backend (`matrix`, `pager`, ...).
    pub contacts: BTreeMap<String, String>,
    /// Provider identifiers (NPI, local ids).
    pub ids: Vec<ProviderId>,
}

/// A role of a roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Role name, e.g. `charge-nurse`.
    pub name: String,
    /// Unit the role covers (e.g. `ICU`), or `None` for everywhere.
    pub scope: Option<String>,
    /// Whether several people may be on call at once.
    pub allow_overlap: bool,
}

/// Who takes a role when nobody is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failsafe {
    /// A member of the same roster (index).
    Member(usize),
    /// An unscoped role, possibly of another roster.
    Role(String),
    /// A directory roster (members only, no roles): nothing to cover, so
    /// no failsafe; never consulted.
    None,
}

/// One validated roster file.
#[derive(Clone, Debug)]
pub struct Roster {
    /// File it came from.
    pub source: PathBuf,
    /// Team name.
    pub name: String,
    /// Zone of every local time in the file.
    pub timezone: Tz,
    /// Members.
    pub members: Vec<Arc<Member>>,
    /// Roles.
    pub roles: Vec<Role>,
    /// Rotations.
    pub rotations: Vec<Rotation>,
    /// Shifts.
    pub shifts: Vec<Shift>,
    /// Overrides.
    pub overrides: Vec<Override>,
    /// Failsafe.
    pub failsafe: Failsafe,
}

/// Every roster, validated and indexed.
#[derive(Clone, Debug, Default)]
pub struct Rosters {
    rosters: Vec<Roster>,
    /// (role name, lower-cased scope) -> (roster, role).
    roles: HashMap<(String, Option<String>), (usize, usize)>,
}

/// Reads and validates every `*.toml` roster in `dir`.
pub fn load_dir(dir: &Path) -> Result<Rosters, Vec<ConfigError>> {
    let sources = read_dir(dir)?;
    load::load(&sources)
}

/// Validates roster files given as (path, text) — for tests and for rosters
/// kept elsewhere than a folder.
pub fn load_files(files: &[(PathBuf, String)]) -> Result<Rosters, Vec<ConfigError>> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(p, t)| Source {
            path: p.clone(),
            text: t.clone(),
        })
        .collect();
    load::load(&sources)
}

impl Rosters {
    /// The rosters, in file-name order.
    pub fn rosters(&self) -> &[Roster] {
        &self.rosters
    }

    /// Finds a roster by name.
    pub fn roster(&self, name: &str) -> Option<&Roster> {
        self.rosters.iter().find(|r| r.name == name)
    }

    /// Every scope a role name is defined with (`None` = unscoped).
    pub fn role_scopes(&self, role: &str) -> Vec<Option<&str>> {
        let mut out: Vec<Option<&str>> = self
            .rosters
            .iter()
            .flat_map(|r| r.roles.iter())
            .filter(|r| r.name == role)
            .map(|r| r.scope.as_deref())
            .collect();
        out.sort();
        out
    }

    /// True when `role` exists for `scope` (or unscoped, which covers every unit).
    pub fn has_role(&self, role: &str, scope: Option<&str>) -> bool {
        self.find_role(role, scope).is_some()
    }

    /// A member by id (the same id names the same person in every roster).
    pub fn member(&self, id: &str) -> Option<&Arc<Member>> {
        self.rosters
            .iter()
            .flat_map(|r| r.members.iter())
            .find(|m| m.id == id)
    }

    /// The member carrying a provider id (XCN.1 and XCN.9). An empty
    /// `authority` matches on the value alone when exactly one member has it.
    pub fn member_by_provider_id(&self, value: &str, authority: &str) -> Option<&Arc<Member>> {
        let mut found: Option<&Arc<Member>> = None;
        for m in self.rosters.iter().flat_map(|r| r.members.iter()) {
            let hit = m.ids.iter().any(|i| {
                i.value == value
                    && (authority.is_empty() || i.authority.eq_ignore_ascii_case(authority))
            });
            if hit {
                match found {
                    Some(f) if f.id != m.id => return None,
                    _ => found = Some(m),
                }
            }
        }
        found
    }

    /// (roster, role) serving `role` in `scope`: the scoped role, else the unscoped one.
    pub(crate) fn find_role(&self, role: &str, scope: Option<&str>) -> Option<(usize, usize)> {
        if let Some(s) = scope
            && let Some(x) = self
                .roles
                .get(&(role.to_string(), Some(s.to_ascii_lowercase())))
        {
            return Some(*x);
        }
        self.roles.get(&(role.to_string(), None)).copied()
    }
}

/// A local wall time in a roster's zone, for messages.
pub(crate) fn show_local(tz: Tz, t: NaiveDateTime) -> String {
    format!("{} {}", t.format("%Y-%m-%d %H:%M"), tz.name())
}

/// Formats an absolute duration as `11h`, `12h30m`.
pub fn show_length(d: TimeDelta) -> String {
    let m = d.num_minutes();
    match (m / 60, m % 60) {
        (h, 0) => format!("{h}h"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

/// The instant formatted in a zone: `2026-11-01 01:30 EDT (05:30 UTC)`.
pub fn show_instant(tz: Tz, at: DateTime<Utc>) -> String {
    let l = at.with_timezone(&tz);
    format!(
        "{} ({} UTC)",
        l.format("%Y-%m-%d %H:%M %Z"),
        at.format("%Y-%m-%d %H:%M")
    )
}
