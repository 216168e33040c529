//! Schedule math: rotations, shifts and overrides as intervals of local wall
//! time, and the one place where a local wall time becomes a UTC instant.
//!
//! Every definition first yields *pieces* `[start, end)` in naive local time
//! (wall-clock arithmetic: a "7-day" rotation hands off at the same wall time
//! a week later whatever the offset did in between). Each boundary is then
//! mapped to UTC by [`resolve`], which is monotone (non-decreasing): two
//! pieces that touch in wall time touch in UTC, so hand-offs never open a gap
//! or an overlap, even inside a DST transition. A piece whose both ends fall
//! into the same gap becomes empty and is dropped.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How a local wall time was mapped to an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The wall time exists exactly once.
    Exact,
    /// The wall time does not exist (clocks jumped forward over it): the
    /// first valid instant after the gap was used.
    Gap,
    /// The wall time exists twice (clocks went back): the earliest instant was
    /// used; `later` is the instant that was not used.
    Fold {
        /// The second occurrence, not used.
        later: DateTime<Utc>,
    },
}

/// Maps a local wall time in `tz` to a UTC instant under the roster DST policy:
/// a gap resolves to the first valid instant after it, a fold to its earliest
/// instant. Never reads the host's time zone.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> (DateTime<Utc>, Resolution) {
    use chrono::LocalResult;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (t.with_timezone(&Utc), Resolution::Exact),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            (a.min(b), Resolution::Fold { later: a.max(b) })
        }
        LocalResult::None => (gap_end(tz, local), Resolution::Gap),
    }
}

/// The first instant whose wall time in `tz` is at or after `local` (the
/// instant the clocks jumped over `local`). Bisection over ±26 h, to the second.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let wall = |t: i64| -> NaiveDateTime {
        let utc = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        utc.with_timezone(&tz).naive_local()
    };
    let as_utc = local.and_utc().timestamp();
    let (mut lo, mut hi) = (as_utc - 26 * 3600, as_utc + 26 * 3600);
    // Invariant: wall(lo) < local <= wall(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid) >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0).unwrap_or_default()
}

/// The wall time of an instant in `tz`.
pub fn local(tz: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&tz).naive_local()
}

/// A set of weekdays (bit 0 = Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weekdays(pub u8);

impl Weekdays {
    /// Every day.
    pub const ALL: Weekdays = Weekdays(0x7f);

    /// True when `date` falls on one of the days.
    pub fn contains(self, date: NaiveDate) -> bool {
        self.0 & (1 << date.weekday().num_days_from_monday()) != 0
    }

    /// Parses `mon`..`sun` (or full English names), case-insensitive.
    pub fn parse_day(s: &str) -> Option<u8> {
        let s = s.trim().to_ascii_lowercase();
        let days = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        days.iter()
            .position(|d| s.len() >= 3 && d.starts_with(&s) && (s.len() == 3 || s == *d))
            .map(|i| i as u8)
    }
}

/// Where a piece of coverage comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// `rotations[i]` of the roster.
    Rotation(usize),
    /// `shifts[i]` of the roster.
    Shift(usize),
    /// `overrides[i]` of the roster: replaces whoever else is on call.
    Override(usize),
    /// The roster's `failsafe`: nobody was scheduled for the role.
    Failsafe,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Rotation(i) => write!(f, "rotations[{i}]"),
            Via::Shift(i) => write!(f, "shifts[{i}]"),
            Via::Override(i) => write!(f, "overrides[{i}]"),
            Via::Failsafe => write!(f, "failsafe"),
        }
    }
}

/// Rotation length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// `length_days`: wall-clock days.
    Days(i64),
    /// `length_hours`: wall-clock hours.
    Hours(i64),
}

impl Length {
    pub(crate) fn step(self) -> Duration {
        match self {
            Length::Days(d) => Duration::days(d),
            Length::Hours(h) => Duration::hours(h),
        }
    }
}

/// A validated rotation: `members` take turns, each for `length`, handing
/// off at `start + k × length` (wall clock).
#[derive(Clone, Debug)]
pub struct Rotation {
    /// Index of the role in the roster.
    pub role: usize,
    /// Member indexes, in turn order.
    pub members: Vec<usize>,
    /// First hand-off (local wall time).
    pub start: NaiveDateTime,
    /// Length of one turn.
    pub length: Length,
    /// Days the rotation covers (a day runs from the hand-off time to the
    /// same time the next day); `ALL` when not given.
    pub weekdays: Weekdays,
    /// Last moment (exclusive, local wall time), if any.
    pub end: Option<NaiveDateTime>,
    /// Precedence layer: a higher layer replaces a lower one where both cover.
    pub layer: i32,
}

/// A validated shift: `member` covers `from`..`to` (local wall time) on each
/// of `weekdays`, wrapping past midnight when `to <= from`.
#[derive(Clone, Debug)]
pub struct Shift {
    /// Index of the role in the roster.
    pub role: usize,
    /// Member index.
    pub member: usize,
    /// Local start time.
    pub from: NaiveTime,
    /// Local end time (next day when not after `from`).
    pub to: NaiveTime,
    /// Days on which the shift *starts*.
    pub weekdays: Weekdays,
    /// Precedence layer.
    pub layer: i32,
}

/// A validated override: `member` replaces whoever is on call for the role.
#[derive(Clone, Debug)]
pub struct Override {
    /// Index of the role in the roster.
    pub role: usize,
    /// Member index.
    pub member: usize,
    /// Local start.
    pub start: NaiveDateTime,
    /// Local end (exclusive).
    pub end: NaiveDateTime,
    /// Free text for the coordinator.
    pub reason: Option<String>,
}

/// Precedence of a piece: overrides beat every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    pub(crate) is_override: bool,
    pub(crate) layer: i32,
}

/// One interval of coverage in local wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) start: NaiveDateTime,
    pub(crate) end: NaiveDateTime,
    pub(crate) member: usize,
    pub(crate) via: Via,
    pub(crate) rank: Rank,
}

impl Rotation {
    /// Pieces intersecting `[a, b)` (wall time), whole (not clipped).
    pub(crate) fn pieces(
        &self,
        index: usize,
        a: NaiveDateTime,
        b: NaiveDateTime,
        out: &mut Vec<Piece>,
    ) {
        let step = self.length.step();
        let rank = Rank {
            is_override: false,
            layer: self.layer,
        };
        let step_secs = step.num_seconds();
        let from = a.max(self.start);
        let mut k = (from - self.start).num_seconds().div_euclid(step_secs);
        let stop = match self.end {
            Some(e) => b.min(e),
            None => b,
        };
        let hand_off = self.start.time();
        loop {
            let s = self.start + Duration::seconds(k * step_secs);
            if s >= stop {
                break;
            }
            let mut e = s + step;
            if let Some(end) = self.end {
                e = e.min(end);
            }
            let member = self.members[(k as usize) % self.members.len()];
            if self.weekdays == Weekdays::ALL {
                if e > a {
                    out.push(Piece {
                        start: s,
                        end: e,
                        member,
                        via: Via::Rotation(index),
                        rank,
                    });
                }
            } else {
                // Intersect the turn with the covered days, merging adjacent days.
                let mut day = (s - Duration::days(1)).date();
                let mut current: Option<(NaiveDateTime, NaiveDateTime)> = None;
                while day.and_time(hand_off) < e {
                    let ws = day.and_time(hand_off);
                    let we = ws + Duration::days(1);
                    if self.weekdays.contains(day) {
                        let (ps, pe) = (ws.max(s), we.min(e));
                        if ps < pe {
                            current = match current {
                                Some((cs, ce)) if ce == ps => Some((cs, pe)),
                                Some((cs, ce)) => {
                                    push_if(out, cs, ce, a, member, Via::Rotation(index), rank);
                                    Some((ps, pe))
                                }
                                None => Some((ps, pe)),
                            };
                        }
                    }
                    day = day.succ_opt().unwrap_or(day);
                }
                if let Some((cs, ce)) = current {
                    push_if(out, cs, ce, a, member, Via::Rotation(index), rank);
                }
            }
            k += 1;
        }
    }

    /// Length of one full cycle of the rotation (all members once).
    pub(crate) fn period(&self) -> Duration {
        self.length.step() * self.members.len() as i32
    }
}

fn push_if(
    out: &mut Vec<Piece>,
    s: NaiveDateTime,
    e: NaiveDateTime,
    a: NaiveDateTime,
    member: usize,
    via: Via,
    rank: Rank,
) {
    if e > a {
        out.push(Piece {
            start: s,
            end: e,
            member,
            via,
            rank,
        });
    }
}

impl Shift {
    /// Pieces intersecting `[a, b)` (wall time), whole.
    pub(crate) fn pieces(
        &self,
        index: usize,
        a: NaiveDateTime,
        b: NaiveDateTime,
        out: &mut Vec<Piece>,
    ) {
        let rank = Rank {
            is_override: false,
            layer: self.layer,
        };
        let mut day = a.date() - Duration::days(1);
        while day.and_time(self.from) < b {
            if self.weekdays.contains(day) {
                let s = day.and_time(self.from);
                let e = if self.to > self.from {
                    day.and_time(self.to)
                } else {
                    (day + Duration::days(1)).and_time(self.to)
                };
                push_if(out, s, e, a, self.member, Via::Shift(index), rank);
            }
            day = day.succ_opt().unwrap_or(day);
            if day == NaiveDate::MAX {
                break;
            }
        }
    }
}

impl Override {
    /// The override's one piece, when it intersects `[a, b)`.
    pub(crate) fn pieces(
        &self,
        index: usize,
        a: NaiveDateTime,
        b: NaiveDateTime,
        out: &mut Vec<Piece>,
    ) {
        if self.end > a && self.start < b {
            out.push(Piece {
                start: self.start,
                end: self.end,
                member: self.member,
                via: Via::Override(index),
                rank: Rank {
                    is_override: true,
                    layer: i32::MAX,
                },
            });
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (a space may replace the `T`).
pub(crate) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// Parses `YYYY-MM-DD`.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Parses `HH:MM[:SS]`.
pub(crate) fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    ["%H:%M", "%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())
}
