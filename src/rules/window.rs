//! `during` time windows: local wall times in a named zone, resolved to
//! instants with the roster DST policy ([`schedule::resolve`]).

use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::roster::Weekdays;
use crate::roster::schedule;

/// One `during` window: on each listed day, from `from` to `to` local time
/// in `timezone` (past midnight when `to` is not after `from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Zone of `from` and `to`.
    pub timezone: Tz,
    /// Days on which the window starts.
    pub days: Weekdays,
    /// Start, local wall time.
    pub from: NaiveTime,
    /// End, local wall time; not after `from`: on the next day (equal: 24 hours).
    pub to: NaiveTime,
}

impl Window {
    /// True when `at` falls in one of the window's occurrences `[start, end)`.
    ///
    /// Each occurrence's start and end are wall times mapped to instants by
    /// [`schedule::resolve`] (gap: first instant after it; fold: earliest),
    /// which is monotone, so occurrences never overlap or leave holes that
    /// the wall times do not. An occurrence whose both ends fall into one gap
    /// is empty.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let day = schedule::local(self.timezone, at).date();
        // A window lasts at most 24 h of wall time; two days back and one
        // ahead cover every occurrence that can hold `at`, folds included.
        (-2..=1).any(|k| {
            let Some(start_day) = day.checked_add_signed(Duration::days(k)) else {
                return false;
            };
            if !self.days.contains(start_day) {
                return false;
            }
            let start = start_day.and_time(self.from);
            let end_day = if self.to > self.from {
                Some(start_day)
            } else {
                start_day.succ_opt()
            };
            let Some(end_day) = end_day else {
                return false;
            };
            let end = end_day.and_time(self.to);
            let (s, _) = schedule::resolve(self.timezone, start);
            let (e, _) = schedule::resolve(self.timezone, end);
            s <= at && at < e
        })
    }
}
