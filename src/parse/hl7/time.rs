//! HL7 DTM / TS values to UTC instants.
//!
//! Accepted: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]` (the TS
//! "degree of precision" component, if any, must be stripped by the caller:
//! pass component 1). Missing parts default to the start of the period.
//! With an offset the instant is exact; without one it is a local time in
//! the sender's time zone: in a DST gap it becomes the first valid instant
//! after the gap, in a fold the earlier of the two instants. Anything else
//! (out-of-range parts, stray characters) is an error; the caller reports it
//! as a data type error at the field it read.
//!
//! Parsed here rather than with hl7-parser's `datetime` module, whose chrono
//! conversion needs a crate feature this build does not enable, and so the
//! local-time rules above are explicit.

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// Why a timestamp was refused (no content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadTimestamp;

fn digits(s: &str, at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    if part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// Parses a DTM; `Ok(None)` for an empty value.
pub(crate) fn parse_dtm(raw: &str, tz: Tz) -> Result<Option<DateTime<Utc>>, BadTimestamp> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (body, offset) = match s.find(['+', '-']) {
        Some(i) => (
            s.get(..i).ok_or(BadTimestamp)?,
            Some(s.get(i..).ok_or(BadTimestamp)?),
        ),
        None => (s, None),
    };
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) || !main.is_ascii() {
        return Err(BadTimestamp);
    }
    if frac.is_some() && main.len() != 14 {
        return Err(BadTimestamp);
    }
    let year = digits(main, 0, 4).ok_or(BadTimestamp)?;
    let part = |at: usize, dflt: u32| -> Result<u32, BadTimestamp> {
        if main.len() > at {
            digits(main, at, 2).ok_or(BadTimestamp)
        } else {
            Ok(dflt)
        }
    };
    let (month, day, hour, minute, second) = (
        part(4, 1)?,
        part(6, 1)?,
        part(8, 0)?,
        part(10, 0)?,
        part(12, 0)?,
    );
    let nanos = match frac {
        None => 0,
        Some(f) if (1..=4).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            let v: u32 = f.parse().map_err(|_| BadTimestamp)?;
            v * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return Err(BadTimestamp),
    };
    let naive = NaiveDate::from_ymd_opt(year as i32, month, day)
        .and_then(|d| d.and_hms_nano_opt(hour, minute, second, nanos))
        .ok_or(BadTimestamp)?;
    match offset {
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let rest = o.get(1..).ok_or(BadTimestamp)?;
            if rest.len() != 4 {
                return Err(BadTimestamp);
            }
            let (h, m) = (
                digits(rest, 0, 2).ok_or(BadTimestamp)?,
                digits(rest, 2, 2).ok_or(BadTimestamp)?,
            );
            if h > 14 || m > 59 {
                return Err(BadTimestamp);
            }
            let off =
                FixedOffset::east_opt(sign * (h * 3600 + m * 60) as i32).ok_or(BadTimestamp)?;
            match off.from_local_datetime(&naive) {
                LocalResult::Single(t) => Ok(Some(t.with_timezone(&Utc))),
                _ => Err(BadTimestamp),
            }
        }
        None => local(naive, tz).map(Some),
    }
}

/// A local time in `tz` to UTC: earliest instant in a fold, first valid
/// instant after a gap.
fn local(naive: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, BadTimestamp> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => return Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => return Ok(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {}
    }
    // In a gap: walk forward minute by minute (transitions fall on minute
    // boundaries) from the start of this minute; gaps are at most a day.
    let start = naive
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .ok_or(BadTimestamp)?;
    for k in 1..=(26 * 60) {
        let t = start + Duration::minutes(k);
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return Ok(x.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => return Ok(a.min(b).with_timezone(&Utc)),
            LocalResult::None => {}
        }
    }
    Err(BadTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, tz: Tz) -> Option<String> {
        parse_dtm(s, tz).unwrap().map(|t| t.to_rfc3339())
    }

    #[test]
    fn forms() {
        let utc = chrono_tz::UTC;
        assert_eq!(p("", utc), None);
        assert_eq!(p("2024", utc).unwrap(), "2024-01-01T00:00:00+00:00");
        assert_eq!(p("20240315", utc).unwrap(), "2024-03-15T00:00:00+00:00");
        assert_eq!(p("202403151230", utc).unwrap(), "2024-03-15T12:30:00+00:00");
        assert_eq!(
            p("20240315123045.12-0500", utc).unwrap(),
            "2024-03-15T17:30:45.120+00:00"
        );
        assert_eq!(
            p("202110201126+0215", utc).unwrap(),
            "2021-10-20T09:11:00+00:00"
        );
        for bad in [
            "2024131",
            "20241301",
            "20240230",
            "2024031525",
            "abc",
            "2024-03",
            "20240315+05",
            "20240315.1",
            "20240315123045.12345",
            "2024031512304a",
        ] {
            assert!(parse_dtm(bad, utc).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_times() {
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            p("20240115120000", ny).unwrap(),
            "2024-01-15T17:00:00+00:00"
        );
        // gap: 2024-03-10 02:30 does not exist -> 03:00 EDT = 07:00Z
        assert_eq!(
            p("20240310023015", ny).unwrap(),
            "2024-03-10T07:00:00+00:00"
        );
        // fold: 2024-11-03 01:30 happens twice -> the earlier (EDT) = 05:30Z
        assert_eq!(p("202411030130", ny).unwrap(), "2024-11-03T05:30:00+00:00");
    }
}
