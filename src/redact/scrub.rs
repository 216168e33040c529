//! The free-text scrubber: every identifier of the patient that the message
//! itself carries, then pattern rules for identifier-like strings.

use std::fmt;
use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::{Captures, Regex};

use crate::event::{ClinicalEvent, Identifier};

/// What a removed identifier is replaced with.
pub const MARKER: &str = "[redacted]";

/// Names and identifier values shorter than this (in characters) are not
/// searched for: an initial would wipe every one-letter word.
const MIN_TERM_CHARS: usize = 2;

/// Terms per compiled alternation (keeps each regex small).
const TERMS_PER_REGEX: usize = 64;

/// A scrubber for one event: its patient's identifiers, compiled once, plus
/// the pattern rules. Build one per event and reuse it for all its text.
/// Its `Debug` shows no term (they are PHI).
#[derive(Clone)]
pub struct Scrubber {
    /// Case-insensitive alternations of the terms, longest first, between
    /// non-alphanumeric boundaries (group 1 is the term); empty when the
    /// event names no identifier.
    terms: Vec<Regex>,
    /// A term could not be compiled: every text is replaced whole.
    poisoned: bool,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("term_sets", &self.terms.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Scrubber {
    /// Collects the patient's identifiers from `ev`: each name component and
    /// each of its tokens (2 characters or more), each identifier value
    /// (PID-3, the merged MRG-1 identifiers, PV1-19 visit number, the
    /// order's placer and filler numbers), and the birth date in its common
    /// renderings.
    pub fn new(ev: &ClinicalEvent) -> Scrubber {
        let mut terms: Vec<String> = Vec::new();
        if let Some(n) = &ev.patient.name {
            for part in [&n.given, &n.middle, &n.family] {
                name_terms(part, &mut terms);
            }
        }
        let ids = ev
            .patient
            .identifiers
            .iter()
            .chain(&ev.merged_identifiers)
            .chain(ev.visit.as_ref());
        for id in ids {
            identifier_terms(id, &mut terms);
        }
        // Order numbers identify the patient's order (an `order_number`
        // field): free text naming them is scrubbed too.
        if let Some(o) = &ev.order {
            for v in [&o.placer_id, &o.filler_id] {
                identifier_terms(
                    &Identifier {
                        value: v.clone(),
                        ..Identifier::default()
                    },
                    &mut terms,
                );
            }
        }
        if let Some(b) = &ev.patient.birth_date {
            birth_date_terms(b, &mut terms);
        }
        terms.retain(|t| t.chars().count() >= MIN_TERM_CHARS);
        terms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        terms.dedup();
        let mut compiled = Vec::new();
        for chunk in terms.chunks(TERMS_PER_REGEX) {
            match term_regex(chunk) {
                Some(re) => compiled.push(re),
                // Escaped literals always compile unless absurdly large: then
                // fail closed (every text is replaced by the marker).
                None => {
                    return Scrubber {
                        terms: Vec::new(),
                        poisoned: true,
                    };
                }
            }
        }
        Scrubber {
            terms: compiled,
            poisoned: false,
        }
    }

    /// Removes the patient's identifiers and identifier-like strings:
    /// labelled identifiers (`MRN: …`, `DOB …`, `SSN …`, `acct …`), email
    /// addresses, SSN-like (`123-45-6789`), phone-like (North American with
    /// or without country code, `(555) 010-9999`, `555.010.9999`, local
    /// `555-0199`, international `+44 20 7946 0958`) and MRN-like strings
    /// (letters with 6 digits or more, or 7 digits or more in a row).
    pub fn scrub(&self, text: &str) -> String {
        let s = self.scrub_identifiers(text);
        let s = LABELLED.replace_all(&s, |c: &Captures| {
            let value = &c[3];
            if value.chars().count() >= 3 && value.chars().any(|ch| ch.is_ascii_digit()) {
                format!("{}{}{MARKER}", &c[1], &c[2])
            } else {
                c[0].to_string()
            }
        });
        let s = EMAIL.replace_all(&s, MARKER);
        let s = SSN.replace_all(&s, MARKER);
        let s = PHONE_INTL.replace_all(&s, |c: &Captures| {
            if c[0].chars().filter(char::is_ascii_digit).count() >= 8 {
                MARKER.to_string()
            } else {
                c[0].to_string()
            }
        });
        let s = PHONE_NA.replace_all(&s, MARKER);
        let s = PHONE_LOCAL.replace_all(&s, MARKER);
        let s = MRN_LIKE.replace_all(&s, |c: &Captures| {
            let m = &c[0];
            let letters = m.chars().any(|ch| ch.is_ascii_alphabetic());
            let run = longest_digit_run(m);
            if (letters && run >= 6) || run >= 7 {
                MARKER.to_string()
            } else {
                m.to_string()
            }
        });
        s.into_owned()
    }

    /// Removes only the patient's own identifiers (names, identifier values,
    /// birth date), not the patterns: for structured numeric values, where a
    /// 7-digit count is a count, not an MRN.
    pub fn scrub_identifiers(&self, text: &str) -> String {
        if self.poisoned {
            return if text.trim().is_empty() {
                text.to_string()
            } else {
                MARKER.to_string()
            };
        }
        let mut text = text.to_string();
        for re in &self.terms {
            text = replace_terms(re, &text);
        }
        text
    }
}

/// Replaces every match of group 1 of `re` by the marker.
fn replace_terms(re: &Regex, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    while let Some(m) = re.captures_at(text, last).and_then(|c| c.get(1)) {
        out.push_str(&text[last..m.start()]);
        out.push_str(MARKER);
        // Terms are never empty, so this moves on; the next search starts at
        // the term's end, so the boundary character after it can be the
        // boundary before the next term.
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// Scrubs `text` against the identifiers in `ev` and the pattern rules
/// ([`Scrubber::scrub`]). Build a [`Scrubber`] to scrub several texts of one
/// event.
pub fn scrub(text: &str, ev: &ClinicalEvent) -> String {
    Scrubber::new(ev).scrub(text)
}

fn term_regex(terms: &[String]) -> Option<Regex> {
    let alternation = terms
        .iter()
        .map(|t| regex::escape(t))
        .collect::<Vec<_>>()
        .join("|");
    Regex::new(&format!(
        r"(?i)(?:^|[^\p{{L}}\p{{N}}])({alternation})(?:$|[^\p{{L}}\p{{N}}])"
    ))
    .ok()
}

fn name_terms(part: &str, out: &mut Vec<String>) {
    let part = part.trim();
    if part.is_empty() {
        return;
    }
    push_with_apostrophes(part, out);
    for tok in part.split(|c: char| {
        c.is_whitespace() || matches!(c, '-' | ',' | '.' | '/' | '^' | '(' | ')' | '"' | '&')
    }) {
        push_with_apostrophes(tok, out);
    }
}

/// `O'Brien` is also written `O’Brien` and `OBrien`.
fn push_with_apostrophes(s: &str, out: &mut Vec<String>) {
    if s.is_empty() {
        return;
    }
    out.push(s.to_string());
    if s.contains(['\'', '\u{2019}']) {
        out.push(s.replace('\u{2019}', "'"));
        out.push(s.replace('\'', "\u{2019}"));
        out.push(s.replace(['\'', '\u{2019}'], ""));
    }
}

fn identifier_terms(id: &Identifier, out: &mut Vec<String>) {
    let v = id.value.trim();
    if v.is_empty() {
        return;
    }
    out.push(v.to_string());
    // `00012345` is also written `12345`.
    let unpadded = v.trim_start_matches('0');
    if unpadded.len() >= 4 && unpadded.len() < v.len() {
        out.push(unpadded.to_string());
    }
    // `12-345-678` is also written `12345678`.
    let compact: String = v.chars().filter(|c| c.is_alphanumeric()).collect();
    if compact.len() >= 4 && compact.len() < v.len() {
        out.push(compact);
    }
}

/// The birth date as given, and when it holds a full date (HL7 `YYYYMMDD…`
/// or `YYYY-MM-DD…`) in the renderings people write.
fn birth_date_terms(raw: &str, out: &mut Vec<String>) {
    let raw = raw.trim();
    if raw.chars().count() >= 4 {
        out.push(raw.to_string());
    }
    let date = raw
        .get(..8)
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
        .or_else(|| {
            raw.get(..10)
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        });
    let Some(d) = date else {
        return;
    };
    const FORMATS: &[&str] = &[
        "%Y%m%d",
        "%Y-%m-%d",
        "%Y/%m/%d",
        "%Y.%m.%d",
        "%m/%d/%Y",
        "%-m/%-d/%Y",
        "%m-%d-%Y",
        "%-m-%-d-%Y",
        "%m/%d/%y",
        "%-m/%-d/%y",
        "%d/%m/%Y",
        "%-d/%-m/%Y",
        "%d.%m.%Y",
        "%-d.%-m.%Y",
        "%d-%m-%Y",
        "%B %-d, %Y",
        "%B %d, %Y",
        "%b %-d, %Y",
        "%b %d, %Y",
        "%b. %-d, %Y",
        "%-d %B %Y",
        "%d %B %Y",
        "%-d %b %Y",
        "%d %b %Y",
        "%d-%b-%Y",
        "%-d-%b-%Y",
        "%d%b%Y",
    ];
    for f in FORMATS {
        out.push(d.format(f).to_string());
    }
}

fn longest_digit_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn rule(pattern: &str) -> Regex {
    // The patterns are constants, tested below; a typo fails every test.
    Regex::new(pattern).unwrap_or_else(|e| panic!("redaction pattern does not compile: {e}"))
}

/// A label that announces an identifier, then its value (group 3).
static LABELLED: LazyLock<Regex> = LazyLock::new(|| {
    rule(
        r"(?i)\b(mrn|mr\s?#|mr\s?no\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|ssn|social\s+security(?:\s+(?:number|no\.?|#))?|acct\.?|account(?:\s+(?:number|no\.?|#))?|dob|d\.o\.b\.?|date\s+of\s+birth|birth\s*date)(\s*[:#]?\s*)([A-Za-z0-9][A-Za-z0-9/.\-]*)",
    )
});

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| rule(r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b"));

static SSN: LazyLock<Regex> = LazyLock::new(|| rule(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b"));

/// `+CC` then groups of digits (digits counted by the caller: 8 or more).
static PHONE_INTL: LazyLock<Regex> =
    LazyLock::new(|| rule(r"\+\d{1,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}"));

/// `(555) 010-9999`, `555-010-9999`, `555.010.9999`, `+1 555 010 9999`, `1-555-010-9999`.
static PHONE_NA: LazyLock<Regex> = LazyLock::new(|| {
    rule(r"(?:\+?\b1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b")
});

/// `555-0199`, `555.0199`.
static PHONE_LOCAL: LazyLock<Regex> = LazyLock::new(|| rule(r"\b\d{3}[.\-]\d{4}\b"));

/// A token of letters and 6 digits or more, or of 7 digits or more (the
/// caller decides which).
static MRN_LIKE: LazyLock<Regex> = LazyLock::new(|| rule(r"\b[A-Za-z]*-?\d{6,}(?:-?[A-Za-z]+)?\b"));
