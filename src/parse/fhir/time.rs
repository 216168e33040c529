//! FHIR `date`, `dateTime` and `instant` values to UTC instants.
//!
//! Accepted: `YYYY`, `YYYY-MM`, `YYYY-MM-DD` (the start of that period, a
//! local time in the source's zone), and `YYYY-MM-DDThh:mm:ss[.f…]` with
//! `Z` or `±hh:mm` (exact). A time without an offset (invalid FHIR, but sent
//! by some systems) is read as a local time in the source's zone, with the
//! HL7 rules for gaps and folds (see `parse::hl7::time`). Fractions longer
//! than nanoseconds are truncated. Anything else is an error the caller
//! reports as 422 `value` at the element it read.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::parse::hl7::time::parse_dtm;

/// Why a value was refused (no content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadDateTime;

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a FHIR date/dateTime/instant; `Ok(None)` for an empty value.
pub(crate) fn parse(raw: &str, tz: Tz) -> Result<Option<DateTime<Utc>>, BadDateTime> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if !s.is_ascii() {
        return Err(BadDateTime);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let ok_lens = matches!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>().as_slice(),
        [4] | [4, 2] | [4, 2, 2]
    );
    if !ok_lens || !parts.iter().all(|p| all_digits(p)) {
        return Err(BadDateTime);
    }
    let Some(time) = time else {
        if parts.len() < 3 {
            // Partial dates: start of the year/month, local.
            return parse_dtm(&parts.concat(), tz).map_err(|_| BadDateTime);
        }
        return parse_dtm(&parts.concat(), tz).map_err(|_| BadDateTime);
    };
    if parts.len() != 3 {
        return Err(BadDateTime);
    }
    let has_offset = time.ends_with('Z') || time.contains(['+', '-']);
    if has_offset {
        // Normalise long fractions (chrono takes at most 9 digits).
        let fixed = match time.split_once('.') {
            Some((hms, rest)) => {
                let n = rest.bytes().take_while(u8::is_ascii_digit).count();
                let (frac, zone) = rest.split_at(n);
                if frac.is_empty() {
                    return Err(BadDateTime);
                }
                format!("{hms}.{}{zone}", &frac[..frac.len().min(9)])
            }
            None => time.to_string(),
        };
        let t =
            DateTime::parse_from_rfc3339(&format!("{date}T{fixed}")).map_err(|_| BadDateTime)?;
        return Ok(Some(t.with_timezone(&Utc)));
    }
    // Local time without offset: hh:mm:ss[.ffff] to an HL7 DTM.
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) if all_digits(f) => (h, Some(&f[..f.len().min(4)])),
        Some(_) => return Err(BadDateTime),
        None => (time, None),
    };
    let hp: Vec<&str> = hms.split(':').collect();
    if !matches!(hp.len(), 2 | 3) || !hp.iter().all(|p| p.len() == 2 && all_digits(p)) {
        return Err(BadDateTime);
    }
    let mut dtm = format!("{}{}", parts.concat(), hp.concat());
    if hp.len() == 2 {
        dtm.push_str("00");
    }
    if let Some(f) = frac {
        dtm.push('.');
        dtm.push_str(f);
    }
    parse_dtm(&dtm, tz).map_err(|_| BadDateTime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<String> {
        parse(s, chrono_tz::Europe::Amsterdam)
            .unwrap()
            .map(|t| t.to_rfc3339())
    }

    #[test]
    fn forms() {
        assert_eq!(p(""), None);
        assert_eq!(p("2013").unwrap(), "2012-12-31T23:00:00+00:00");
        assert_eq!(p("2013-04").unwrap(), "2013-03-31T22:00:00+00:00");
        assert_eq!(p("2013-04-02").unwrap(), "2013-04-01T22:00:00+00:00");
        assert_eq!(
            p("2013-04-02T09:30:10+01:00").unwrap(),
            "2013-04-02T08:30:10+00:00"
        );
        assert_eq!(
            p("2017-02-01T17:23:07Z").unwrap(),
            "2017-02-01T17:23:07+00:00"
        );
        assert_eq!(
            p("2020-04-17T10:24:13.1882432-05:00").unwrap(),
            "2020-04-17T15:24:13.188243200+00:00"
        );
        assert_eq!(
            p("2013-04-02T09:30:10").unwrap(),
            "2013-04-02T07:30:10+00:00"
        );
        for bad in [
            "2013-4-02",
            "13-04-02",
            "2013-04-02T25:00:00Z",
            "2013-02-30",
            "2013-04-02T09:30:10+1",
            "2013-04-02T09.30",
            "2013-04-02T09:30:10.Z",
            "2013-04-02T09:30:10.x",
            "2013-13",
            "ZZCANARY",
            "2013-04-02 09:30:10Z",
            "２０１３",
        ] {
            assert!(parse(bad, chrono_tz::UTC).is_err(), "{bad}");
        }
    }
}
