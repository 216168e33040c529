//! Property tests (issue #7, "Show it"): random events under random
//! profiles.
//!
//! For every case: nothing of a field the profile does not allow is in any
//! payload (a template's rendering of the envelope and every allowed field,
//! the `values` map, the preview line, the view's `Debug`); no identifier of
//! the patient is ever in the preview line; under `limited` and `none` no
//! identifier is anywhere; and the free text, which embeds the patient's own
//! name tokens, identifiers and birth date in the renderings the scrubber
//! documents (plus SSN-, phone-, email- and MRN-like strings), comes out of
//! [`scrub`] without any of them.
//!
//! Every generated value that may leave is a *canary*: a token no other
//! value can hold by accident. Tokens start with two letters of `cjqwxyz`,
//! which no syllable uses, distinct per kind of value (`Zq…` patient names,
//! `ZQ…` identifiers, `Cy…` units, …), so a token of one kind is never
//! inside a token of another; identifiers made of digits alone have 5 or
//! more, clinical numbers 4 digits in a row at most. Whether a canary may appear is worked
//! out, not assumed: the fields that carry it are those whose clean source
//! (the event's value, without the identifiers and patterns embedded in it,
//! which the scrubber must remove) contains it.
//!
//! Free text only embeds what the scrubber documents that it removes. Not
//! generated: order (accession) numbers in free text (the scrubber does not
//! search for them: a note quoting the order number leaves under a profile
//! with `notes` and without `order_number`), identifiers in undocumented
//! written forms (spaced, partly unpadded), name tokens joined by
//! characters the scrubber does not split names at.
//!
//! The names are synthetic syllables, never real data. The run is seeded:
//! case `n` uses its own generator seeded from `SEED` and `n`, and a failure
//! names it (`REDACT_PROPTEST_CASE=n` replays it alone;
//! `REDACT_PROPTEST_CASES=n` runs more).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::*;
use crate::alert::model::{Alert, Reason, State};
use crate::event::{
    Alarm, ClinicalEvent, Code, EventKind, Identifier, Location, Observation, Order, Patient,
    PersonName, Priority, Processing, Provider, ProviderRole, ResultStatus, SourceRef,
};
use crate::rules::{
    AlertPriority, CRITICAL_FLAGS, EscalationPolicy, RouteTarget, Tier, TierTarget,
};

/// Cases per run (each a random event, profile and reason).
const CASES: u64 = 2_000;
/// The run's seed.
const SEED: u64 = 0x5eed_0007_7ed4_c7ed;

const CONSONANTS: &[u8] = b"bdfghklmnprstv";
const VOWELS: &[u8] = b"aeiou";

/// Birth date renderings the scrubber documents (`YYYYMMDD`, `YYYY-MM-DD`,
/// `MM/DD/YYYY`, `M/D/YY`, `DD.MM.YYYY`, `Jan 1, 1970`, `01-Jan-1970`, and
/// the rest of "the renderings people write" it lists).
const DATE_FORMATS: &[&str] = &[
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

/// Clinical words for free text: none is a canary, none looks like an
/// identifier.
const WORDS: &[&str] = &[
    "Called",
    "to",
    "Dr.",
    "at",
    "14:05",
    "read",
    "back",
    "repeat",
    "draw",
    "specimen",
    "hemolyzed",
    "BP",
    "120/80",
    "on",
    "2026-03-10",
    "K",
    "6.9",
    "mmol/L",
    "per",
    "protocol",
    "notified",
    "charge",
    "nurse",
    "pt",
    "seen",
    "stable",
    "family",
    "aware",
    "result",
];

const SEPARATORS: &[&str] = &[" ", ", ", "; ", " - ", ". ", " (", ") ", ": ", "\n"];

// ---------------------------------------------------------------- canaries

/// What a canary is, for the properties that single some out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An identifier of the patient (name part or token, identifier value
    /// or a written form of one, birth date or a rendering of it).
    Patient,
    /// An order number: a direct identifier field, never in free text.
    OrderNumber,
    /// A pattern-rule string embedded in free text (SSN, phone, email,
    /// MRN-like): no field carries it, the scrubber removes it.
    Pattern,
    /// Any other value: clinical context, or something no field carries
    /// (authority, coding system, prior location, control id, ...).
    Other,
}

#[derive(Clone, Debug)]
struct Canary {
    /// Lower case (every search is case-insensitive).
    text: String,
    kind: Kind,
    /// Not in the event as such (the birth date as the view writes it).
    derived: bool,
}

/// A text that may embed identifiers or pattern strings: `raw` is what the
/// event holds; `clean` has the embedded pieces cut out (what may leave
/// once scrubbed).
#[derive(Clone, Debug, Default)]
struct Text {
    raw: String,
    clean: String,
}

impl Text {
    fn plain(s: &str) -> Text {
        Text {
            raw: s.to_string(),
            clean: s.to_string(),
        }
    }
    fn push(&mut self, s: &str) {
        self.raw.push_str(s);
        self.clean.push_str(s);
    }
    fn push_hidden(&mut self, s: &str) {
        self.raw.push_str(s);
        self.clean.push('\u{1}');
    }
}

/// The patient's identifiers, to write them into free text.
#[derive(Debug, Default)]
struct PatientIds {
    /// Name parts and their tokens, 2 characters or more.
    name_terms: Vec<String>,
    name: Option<PersonName>,
    /// Identifier values: PID-3, merged, visit.
    values: Vec<String>,
    /// Pure-digit identifier values (a plain number may equal one).
    numeric: Vec<String>,
    birth_raw: Option<String>,
    birth_date: Option<NaiveDate>,
}

/// One generated case.
struct Case {
    ev: ClinicalEvent,
    canaries: Vec<Canary>,
    /// Per field, the clean values it reads (lower case).
    sources: BTreeMap<Field, Vec<String>>,
    /// Every free text of the event (notes, free-text values, location
    /// parts that embed an identifier), raw, and the canaries embedded in it.
    free_text: Vec<(String, Vec<String>)>,
    alert_id: i64,
    late: bool,
    priority: AlertPriority,
}

struct Gen {
    rng: StdRng,
    canaries: Vec<Canary>,
    used: BTreeSet<String>,
}

impl Gen {
    fn new(case: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(SEED ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            canaries: Vec::new(),
            used: BTreeSet::new(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("non-empty")
    }

    fn canary(&mut self, text: &str, kind: Kind) {
        self.canaries.push(Canary {
            text: text.to_lowercase(),
            kind,
            derived: false,
        });
    }

    /// A fresh token: `prefix`, then 1 to 3 syllables.
    fn word(&mut self, prefix: &str) -> String {
        loop {
            let mut w = prefix.to_string();
            for _ in 0..self.rng.random_range(1..=3) {
                w.push(char::from(*self.pick(CONSONANTS)));
                w.push(char::from(*self.pick(VOWELS)));
            }
            if self.used.insert(w.to_lowercase()) {
                return w;
            }
        }
    }

    /// `n` random digits, the first not a zero.
    fn digits(&mut self, n: usize) -> String {
        let mut s = String::new();
        for i in 0..n {
            let lo = if i == 0 { 1 } else { 0 };
            s.push(char::from(b'0' + self.rng.random_range(lo..=9u8)));
        }
        s
    }

    /// Between `n.start()` and `n.end()` random digits, the first not a zero.
    fn some_digits(&mut self, n: std::ops::RangeInclusive<usize>) -> String {
        let n = self.rng.random_range(n);
        self.digits(n)
    }

    /// A fresh token: `prefix`, then `n` digits.
    fn coded(&mut self, prefix: &str, n: std::ops::RangeInclusive<usize>) -> String {
        loop {
            let n = self.rng.random_range(n.clone());
            let w = format!("{prefix}{}", self.digits(n));
            if self.used.insert(w.to_lowercase()) {
                return w;
            }
        }
    }

    /// An MRN-like identifier value, unique, never inside another.
    fn identifier_value(&mut self, ssn: bool) -> String {
        loop {
            let v = if ssn {
                format!(
                    "{}-{}-{}",
                    self.rng.random_range(100..900),
                    self.rng.random_range(10..100),
                    self.rng.random_range(1000..10000)
                )
            } else {
                match self.rng.random_range(0..5) {
                    0 | 1 => format!("ZQ{}", self.some_digits(4..=8)),
                    2 => format!("zq-{}-{}", self.digits(2), self.some_digits(4..=6)),
                    3 => format!(
                        "{}{}",
                        "0".repeat(self.rng.random_range(1..=4)),
                        self.some_digits(5..=7)
                    ),
                    _ => self.some_digits(5..=9),
                }
            };
            let lower = v.to_lowercase();
            let clash = self
                .used
                .iter()
                .any(|u| u.contains(&lower) || lower.contains(u.as_str()));
            if !clash {
                self.used.insert(lower);
                return v;
            }
        }
    }

    fn identifier(&mut self, type_code: &str) -> Identifier {
        let value = self.identifier_value(type_code == "SS");
        let authority = self.word("Wy");
        self.canary(&value, Kind::Patient);
        self.canary(&authority, Kind::Other);
        Identifier {
            value,
            authority,
            type_code: type_code.to_string(),
        }
    }

    fn name_part(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => format!("{}-{}", self.word("Zq"), self.word("Zq")),
            1 => format!("{}'{}", self.pick(&["O", "D"]), self.word("Zq")),
            2 => format!("D\u{2019}{}", self.word("Zq")),
            3 => format!("{} {}", self.word("Zq"), self.word("Zq")),
            _ => self.word("Zq"),
        }
    }

    // ------------------------------------------------------------ free text

    /// One of the patient's identifiers as people write it; adds the
    /// canary it holds and returns the text and that canary.
    fn identifier_rendering(&mut self, ids: &PatientIds) -> Option<(String, Vec<String>)> {
        let mut kinds = Vec::new();
        if !ids.name_terms.is_empty() {
            kinds.extend([0, 1]);
        }
        if !ids.values.is_empty() {
            kinds.extend([2, 2]);
        }
        if ids.birth_raw.is_some() {
            kinds.extend([3, 3]);
        }
        let kind = *kinds.choose(&mut self.rng)?;
        let (text, canaries) = match kind {
            0 => {
                let t = self.pick(&ids.name_terms).clone();
                let t = if t.contains(['\'', '\u{2019}']) {
                    match self.rng.random_range(0..4) {
                        0 => t.replace('\u{2019}', "'"),
                        1 => t.replace('\'', "\u{2019}"),
                        2 => t.replace(['\'', '\u{2019}'], ""),
                        _ => t,
                    }
                } else {
                    t
                };
                let shown = match self.rng.random_range(0..3) {
                    0 => t.to_uppercase(),
                    1 => t.to_lowercase(),
                    _ => t.clone(),
                };
                let suffix = if self.chance(0.2) { "'s" } else { "" };
                (format!("{shown}{suffix}"), vec![t])
            }
            1 => {
                let n = ids.name.clone().unwrap_or_default();
                let text = match self.rng.random_range(0..4) {
                    0 => format!("{} {}", n.given, n.family),
                    1 => format!("{}, {}", n.family.to_uppercase(), n.given.to_uppercase()),
                    2 => format!("{}^{}^{}", n.family, n.given, n.middle),
                    _ => format!("{} {} {}", n.given, n.middle, n.family),
                };
                let terms = ids
                    .name_terms
                    .iter()
                    .filter(|t| text.to_lowercase().contains(&t.to_lowercase()))
                    .cloned()
                    .collect();
                (text, terms)
            }
            2 => {
                let v = self.pick(&ids.values).clone();
                let unpadded = v.trim_start_matches('0').to_string();
                let compact: String = v.chars().filter(|c| c.is_alphanumeric()).collect();
                let form = match self.rng.random_range(0..6) {
                    0 if unpadded.len() >= 4 && unpadded.len() < v.len() => unpadded,
                    1 if compact.len() >= 4 && compact.len() < v.len() => compact,
                    2 => v.to_lowercase(),
                    3 => v.to_uppercase(),
                    _ => v,
                };
                let label =
                    *self.pick(&["", "", "MRN: ", "MRN ", "MRN:", "MR#", "#", "acct ", "id "]);
                (format!("{label}{form}"), vec![form])
            }
            _ => {
                let raw = ids.birth_raw.clone().unwrap_or_default();
                let form = match ids.birth_date {
                    Some(d) if self.chance(0.8) => {
                        let f = *self.pick(DATE_FORMATS);
                        let s = d.format(f).to_string();
                        if self.chance(0.2) {
                            s.to_uppercase()
                        } else {
                            s
                        }
                    }
                    _ => raw,
                };
                let label = *self.pick(&["", "", "DOB ", "DOB: ", "born ", "b. "]);
                (format!("{label}{form}"), vec![form])
            }
        };
        for c in &canaries {
            self.canary(c, Kind::Patient);
        }
        Some((text, canaries))
    }

    /// A string the pattern rules remove (SSN, phones, email, MRN-like,
    /// labelled), and the part of it that must go.
    fn pattern(&mut self) -> (String, String) {
        let d3 = |g: &mut Gen| g.digits(3);
        let (text, canary) = match self.rng.random_range(0..20) {
            // SSN-like.
            0 => {
                let sep = *self.pick(&["-", " "]);
                let s = format!("{}{sep}{}{sep}{}", d3(self), self.digits(2), self.digits(4));
                (s.clone(), s)
            }
            // North American phones.
            1 => {
                let s = format!("({}) {}-{}", d3(self), d3(self), self.digits(4));
                (s.clone(), s)
            }
            2 => {
                let sep = *self.pick(&["-", ".", " "]);
                let s = format!("{}{sep}{}{sep}{}", d3(self), d3(self), self.digits(4));
                (s.clone(), s)
            }
            3 => {
                let s = format!("+1 {} {} {}", d3(self), d3(self), self.digits(4));
                (s.clone(), s)
            }
            4 => {
                let s = format!("1-{}-{}-{}", d3(self), d3(self), self.digits(4));
                (s.clone(), s)
            }
            5 => {
                let s = format!("+1 ({}) {}-{}", d3(self), d3(self), self.digits(4));
                (s.clone(), s)
            }
            // Local and international phones.
            6 => {
                let sep = *self.pick(&["-", "."]);
                let s = format!("{}{sep}{}", d3(self), self.digits(4));
                (s.clone(), s)
            }
            7 => {
                let s = format!("+44 20 {} {}", self.digits(4), self.digits(4));
                (s.clone(), s)
            }
            8 => {
                let s = format!("+49 30 {}", self.digits(8));
                (s.clone(), s)
            }
            // Emails.
            9 | 10 => {
                let s = format!(
                    "{}.{}@{}.example",
                    self.word("Yc"),
                    self.word("Yc"),
                    self.word("Yc")
                );
                let s = if self.chance(0.3) {
                    s.to_uppercase()
                } else {
                    s.to_lowercase()
                };
                (s.clone(), s)
            }
            // MRN-like: letters and 6 digits or more, 7 digits or more.
            11 => {
                let s = format!("AB{}", self.some_digits(6..=9));
                (format!("other chart {s}"), s)
            }
            12 => {
                let s = self.some_digits(7..=10);
                (format!("ref {s}"), s)
            }
            // Labelled identifiers.
            13 => {
                let v = self.some_digits(5..=8);
                let label = *self.pick(&[
                    "MRN: ",
                    "MRN ",
                    "MRN#",
                    "MR# ",
                    "Medical record number: ",
                    "acct ",
                    "Account # ",
                ]);
                (format!("{label}{v}"), v)
            }
            14 => {
                let v = self.digits(9);
                (format!("SSN {v}"), v)
            }
            _ => {
                let d = NaiveDate::from_ymd_opt(
                    self.rng.random_range(1930..2000),
                    self.rng.random_range(1..=12),
                    self.rng.random_range(1..=28),
                )
                .expect("a valid date");
                let f = *self.pick(&["%-m/%-d/%Y", "%m/%d/%Y", "%Y-%m-%d"]);
                let v = d.format(f).to_string();
                let label =
                    *self.pick(&["DOB ", "DOB: ", "D.O.B. ", "date of birth ", "birth date "]);
                (format!("{label}{v}"), v)
            }
        };
        self.canary(&canary, Kind::Pattern);
        (text, canary)
    }

    /// Free text: clinical words, `prefix` tokens (canaries of the field
    /// that carries the text), the patient's identifiers and pattern strings.
    fn free_text(&mut self, ids: &PatientIds, prefix: &str) -> (Text, Vec<String>) {
        let mut t = Text::default();
        let mut embedded = Vec::new();
        let n = self.rng.random_range(2..=9);
        for i in 0..n {
            if i > 0 {
                let sep = *self.pick(SEPARATORS);
                t.push(sep);
            }
            let roll = self.rng.random_range(0..100);
            if roll < 30 {
                let w = *self.pick(WORDS);
                t.push(w);
            } else if roll < 55 {
                let w = self.word(prefix);
                self.canary(&w, Kind::Other);
                t.push(&w);
            } else if roll < 85 {
                match self.identifier_rendering(ids) {
                    Some((s, c)) => {
                        t.push_hidden(&s);
                        embedded.extend(c);
                    }
                    None => t.push("stable"),
                }
            } else {
                let (s, c) = self.pattern();
                t.push_hidden(&s);
                embedded.push(c);
            }
        }
        (t, embedded)
    }

    // ---------------------------------------------------------------- event

    fn case(&mut self) -> Case {
        let mut ids = PatientIds::default();
        let mut free_text: Vec<(String, Vec<String>)> = Vec::new();

        // The patient.
        let name = self.chance(0.95).then(|| PersonName {
            given: self.name_part(),
            middle: match self.rng.random_range(0..3) {
                0 => String::new(),
                1 => char::from(b'A' + self.rng.random_range(0..26u8)).to_string(),
                _ => self.word("Zq"),
            },
            family: self.name_part(),
        });
        if let Some(n) = &name {
            for part in [&n.given, &n.middle, &n.family] {
                let mut terms = vec![part.clone()];
                terms.extend(
                    part.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '\u{2019}')
                        .map(str::to_string),
                );
                for t in terms {
                    if t.chars().count() >= 2 && !ids.name_terms.contains(&t) {
                        self.canary(&t, Kind::Patient);
                        ids.name_terms.push(t);
                    }
                }
            }
            ids.name = Some(n.clone());
        }
        let types = ["MR", "PI", "AN", "PT", "SS"];
        let mut identifiers = Vec::new();
        // Now and then many PID-3 repetitions: more terms than one compiled
        // alternation of the scrubber holds.
        let count = if self.chance(0.05) {
            self.rng.random_range(15..=40)
        } else {
            self.rng.random_range(1..=3)
        };
        for i in 0..count {
            let t = if i == 0 && self.chance(0.7) {
                "MR"
            } else {
                *self.pick(&types)
            };
            identifiers.push(self.identifier(t));
        }
        let mut merged: Vec<Identifier> = Vec::new();
        if self.chance(0.25) {
            for _ in 0..self.rng.random_range(1..=2) {
                merged.push(self.identifier(""));
            }
        }
        let visit = self.chance(0.6).then(|| self.identifier("VN"));
        for id in identifiers.iter().chain(&merged).chain(visit.as_ref()) {
            ids.values.push(id.value.clone());
            if id.value.chars().all(|c| c.is_ascii_digit()) {
                ids.numeric.push(id.value.clone());
            }
        }
        let birth = self.chance(0.9).then(|| {
            let day = self.rng.random_range(0..(85 * 365));
            let d = NaiveDate::from_ymd_opt(1925, 1, 1).unwrap() + chrono::Days::new(day);
            let raw = match self.rng.random_range(0..10) {
                0..=5 => d.format("%Y%m%d").to_string(),
                6 | 7 => format!(
                    "{}{:02}{:02}",
                    d.format("%Y%m%d"),
                    self.rng.random_range(0..24),
                    self.rng.random_range(0..60)
                ),
                8 => d.format("%Y-%m-%d").to_string(),
                _ => d.format("%Y%m").to_string(),
            };
            (raw, d)
        });
        if let Some((raw, d)) = &birth {
            self.canary(raw, Kind::Patient);
            ids.birth_raw = Some(raw.clone());
            if raw.len() >= 8 {
                ids.birth_date = Some(*d);
            }
        }
        let birth_field = birth.as_ref().map(|(raw, d)| {
            if raw.len() == 6 {
                raw.clone()
            } else {
                format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
            }
        });
        if let Some(b) = &birth_field {
            self.canaries.push(Canary {
                text: b.to_lowercase(),
                kind: Kind::Patient,
                derived: true,
            });
        }
        let sex = self
            .chance(0.8)
            .then(|| self.pick(&["F", "M", "U", "O"]).to_string());

        // Where: each part a canary, unit or room now and then the
        // patient's identifier (scrubbed like any non-identifier value).
        let mut location_part = |g: &mut Gen, prefix: &str, digits: bool| -> Text {
            if g.chance(0.06)
                && let Some((s, c)) = g.identifier_rendering(&ids)
            {
                free_text.push((s.clone(), c));
                return Text {
                    raw: s,
                    clean: String::new(),
                };
            }
            let w = if digits {
                g.coded(prefix, 1..=3)
            } else {
                g.word(prefix)
            };
            g.canary(&w, Kind::Other);
            Text::plain(&w)
        };
        let location = self.chance(0.9).then(|| {
            let facility = location_part(self, "Jw", false);
            let unit = location_part(self, "Cy", false);
            let room = location_part(self, "Jc", true);
            let bed = location_part(self, "Xw", false);
            (facility, unit, room, bed)
        });
        let prior = self.chance(0.3).then(|| {
            let parts: Vec<String> = (0..4).map(|_| self.word("Qj")).collect();
            for p in &parts {
                self.canary(p, Kind::Other);
            }
            Location {
                facility: parts[0].clone(),
                unit: parts[1].clone(),
                room: parts[2].clone(),
                bed: parts[3].clone(),
            }
        });

        // Who.
        let roles = [
            ProviderRole::Attending,
            ProviderRole::Referring,
            ProviderRole::Consulting,
            ProviderRole::Admitting,
            ProviderRole::Ordering,
            ProviderRole::CareTeam,
        ];
        let providers: Vec<Provider> = (0..self.rng.random_range(0..=3))
            .map(|_| {
                let role = *self.pick(&roles);
                let given = self.word("Xc");
                let family = self.word("Xc");
                let id = self.coded("XC", 5..=8);
                for c in [&given, &family, &id] {
                    self.canary(c, Kind::Other);
                }
                Provider {
                    role,
                    role_code: String::new(),
                    id: Identifier {
                        value: id,
                        authority: String::new(),
                        type_code: "NPI".into(),
                    },
                    name: PersonName {
                        family,
                        given,
                        middle: String::new(),
                    },
                }
            })
            .collect();

        // The order.
        let order = self.chance(0.8).then(|| {
            let placer = self.coded("CX", 4..=5);
            let filler = if self.chance(0.7) {
                self.coded("JZ", 4..=5)
            } else {
                String::new()
            };
            let code = self.coded("YW", 4..=5);
            let text = self.word("Yw");
            self.canary(&placer, Kind::OrderNumber);
            if !filler.is_empty() {
                self.canary(&filler, Kind::OrderNumber);
            }
            self.canary(&code, Kind::Other);
            self.canary(&text, Kind::Other);
            Order {
                control: "NW".into(),
                placer_id: placer,
                filler_id: filler,
                service: Code {
                    code,
                    text,
                    system: "LN".into(),
                },
                status: "CM".into(),
                observed_at: None,
                result_status: "F".into(),
            }
        });

        // The observations, with their clean values kept beside them.
        let statuses = [
            ResultStatus::Preliminary,
            ResultStatus::Final,
            ResultStatus::Corrected,
            ResultStatus::WrongPatient,
            ResultStatus::Deleted,
            ResultStatus::CannotObtain,
            ResultStatus::Unknown,
        ];
        let flag_pool = ["N", "H", "L", "HH", "LL", "A", "AA", "HU", "LU", ">", "<"];
        let mut observations = Vec::new();
        let mut clean_values: Vec<Vec<String>> = Vec::new();
        let mut clean_ranges: Vec<String> = Vec::new();
        for i in 0..self.rng.random_range(1..=5) {
            let value_type = match self.rng.random_range(0..20) {
                0..=9 => "NM",
                10..=13 => "ST",
                14 | 15 => "TX",
                16 => "FT",
                _ => "CWE",
            };
            let mut values = Vec::new();
            let mut clean = Vec::new();
            match value_type {
                "NM" => {
                    if self.chance(0.08) && !ids.numeric.is_empty() {
                        // A number that happens to be the patient's identifier.
                        let v = self.pick(&ids.numeric).clone();
                        free_text.push((v.clone(), vec![v.clone()]));
                        values.push(v);
                        clean.push(String::new());
                    } else {
                        let v = match self.rng.random_range(0..4) {
                            0 => self.rng.random_range(0..10_000).to_string(),
                            1 => format!("{:.1}", self.rng.random_range(0.0..1000.0)),
                            2 => format!("{:.2}", self.rng.random_range(0.0..100.0)),
                            _ => format!(
                                "{}{:.2}",
                                self.pick(&["<", ">", "<=", ">="]),
                                self.rng.random_range(0.0..10.0)
                            ),
                        };
                        values.push(v.clone());
                        clean.push(v);
                    }
                }
                "CWE" => {
                    let w = self.word("Qc");
                    self.canary(&w, Kind::Other);
                    values.push(w.clone());
                    clean.push(w);
                }
                _ => {
                    for _ in 0..self.rng.random_range(1..=2) {
                        let (t, embedded) = self.free_text(&ids, "Qx");
                        free_text.push((t.raw.clone(), embedded));
                        values.push(t.raw);
                        clean.push(t.clean);
                    }
                }
            }
            let text = if self.chance(0.8) {
                self.word("Yx")
            } else {
                String::new()
            };
            let code_value = format!("{}-{}", self.coded("YQ", 4..=4), i % 10);
            let system = self.word("Wj");
            for c in [&text, &code_value, &system] {
                if !c.is_empty() {
                    self.canary(c, Kind::Other);
                }
            }
            let units = self.chance(0.6).then(|| {
                let code = self.word("Cz");
                let text = if self.chance(0.5) {
                    self.word("Jy")
                } else {
                    String::new()
                };
                self.canary(&code, Kind::Other);
                if !text.is_empty() {
                    self.canary(&text, Kind::Other);
                }
                Code {
                    code,
                    text,
                    system: "UCUM".into(),
                }
            });
            let (range, clean_range) = match self.rng.random_range(0..20) {
                0..=5 => (String::new(), String::new()),
                6 if !ids.numeric.is_empty() => {
                    let v = self.pick(&ids.numeric).clone();
                    free_text.push((v.clone(), vec![v.clone()]));
                    (v, String::new())
                }
                _ => {
                    let r = format!(
                        "{}.{}-{}.{}",
                        self.rng.random_range(0..10),
                        self.digits(3),
                        self.rng.random_range(10..100),
                        self.digits(3)
                    );
                    self.canary(&r, Kind::Other);
                    (r.clone(), r)
                }
            };
            let flags: Vec<String> = (0..self.rng.random_range(0..=2))
                .map(|_| self.pick(&flag_pool).to_string())
                .collect();
            observations.push(Observation {
                set_id: (i + 1).to_string(),
                value_type: value_type.into(),
                code: Code {
                    code: code_value,
                    text,
                    system,
                },
                sub_id: String::new(),
                values,
                units,
                reference_range: range,
                flags,
                status: *self.pick(&statuses),
                observed_at: None,
            });
            clean_values.push(clean);
            clean_ranges.push(clean_range);
        }

        let alarm = self.chance(0.25).then(|| {
            let id = self.coded("CZ", 4..=6);
            let code = self.coded("JQ", 4..=5);
            let text = if self.chance(0.7) {
                self.word("Jj")
            } else {
                String::new()
            };
            let source = self.word("Wz");
            for c in [&id, &code, &text, &source] {
                if !c.is_empty() {
                    self.canary(c, Kind::Other);
                }
            }
            Alarm {
                id,
                phase: "start".into(),
                priority: "PH".into(),
                kind: Code {
                    code,
                    text,
                    system: "MDC".into(),
                },
                source,
                state: "active".into(),
            }
        });

        let mut notes = Vec::new();
        let mut clean_notes = Vec::new();
        for _ in 0..self.rng.random_range(0..=3) {
            let (t, embedded) = self.free_text(&ids, "Qw");
            free_text.push((t.raw.clone(), embedded));
            notes.push(t.raw);
            clean_notes.push(t.clean);
        }

        let kinds = [
            EventKind::Result,
            EventKind::Result,
            EventKind::Alarm,
            EventKind::Order,
            EventKind::Admit,
            EventKind::Transfer,
            EventKind::Merge,
            EventKind::Communication,
        ];
        let kind = *self.pick(&kinds);
        let sender = self.word("Yy");
        let control_id = self.coded("YJ", 5..=8);
        self.canary(&sender, Kind::Other);
        self.canary(&control_id, Kind::Other);
        let (message_type, trigger) = *self.pick(&[
            ("ORU", "R01"),
            ("ORU", "R40"),
            ("ADT", "A01"),
            ("ORM", "O01"),
            ("ORU^R01", ""),
        ]);

        let (loc, loc_clean) = match location {
            Some((f, u, r, b)) => (
                Some(Location {
                    facility: f.raw,
                    unit: u.raw,
                    room: r.raw,
                    bed: b.raw,
                }),
                Some([f.clean, u.clean, r.clean, b.clean]),
            ),
            None => (None, None),
        };
        let ev = ClinicalEvent {
            kind,
            source: SourceRef {
                sender,
                message_type: message_type.into(),
                trigger: trigger.into(),
                control_id,
                index: 0,
            },
            processing: Processing::Production,
            occurred_at: None,
            patient: Patient {
                identifiers,
                name,
                birth_date: birth.map(|(raw, _)| raw),
                sex,
            },
            location: loc,
            prior_location: prior,
            patient_class: self.pick(&["I", "O", "E"]).to_string(),
            visit,
            providers,
            priority: *self.pick(&[
                Priority::Unspecified,
                Priority::Routine,
                Priority::Urgent,
                Priority::Stat,
            ]),
            order,
            observations,
            alarm,
            merged_identifiers: merged,
            notes,
        };
        let sources = sources(
            &ev,
            birth_field,
            loc_clean,
            &clean_values,
            &clean_ranges,
            &clean_notes,
        );
        Case {
            ev,
            canaries: std::mem::take(&mut self.canaries),
            sources,
            free_text,
            alert_id: self.rng.random_range(1..1000),
            late: self.chance(0.1),
            priority: *self.pick(&[
                AlertPriority::Routine,
                AlertPriority::Urgent,
                AlertPriority::Asap,
                AlertPriority::Stat,
            ]),
        }
    }

    fn profile(&mut self, case: u64) -> Profile {
        match self.rng.random_range(0..10) {
            0 => builtin(CLINICIAN_SECURE).unwrap(),
            1 => builtin(LIMITED).unwrap(),
            2 => builtin(NONE).unwrap(),
            _ => {
                let density = self.rng.random_range(0.0..1.0);
                let mut names: Vec<&str> = Field::ALL
                    .iter()
                    .filter(|_| self.chance(density))
                    .map(|f| f.name())
                    .collect();
                if self.chance(0.1) {
                    names.push("location");
                }
                if self.chance(0.1) {
                    names.push("clinical");
                }
                Profile::custom(&format!("random-{case}"), &names).expect("valid fields")
            }
        }
    }

    fn reason(&mut self) -> Reason {
        *self.pick(&[
            Reason::New,
            Reason::Escalation,
            Reason::Declined,
            Reason::Repeat,
            Reason::Renotify,
            Reason::Correction,
            Reason::Retraction,
            Reason::Worsened,
            Reason::Late,
        ])
    }
}

// ----------------------------------------------------------- field sources

/// The observation an alert is mostly about (as documented on
/// [`Field::Test`]): the first with a critical flag, else the first with an
/// abnormal flag, else the first.
fn main_observation(obs: &[Observation]) -> Option<usize> {
    let critical = |f: &String| {
        CRITICAL_FLAGS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(f.trim()))
    };
    let abnormal = |f: &String| !f.trim().is_empty() && !f.trim().eq_ignore_ascii_case("N");
    obs.iter()
        .position(|o| o.flags.iter().any(critical))
        .or_else(|| obs.iter().position(|o| o.flags.iter().any(abnormal)))
        .or(if obs.is_empty() { None } else { Some(0) })
}

fn label(c: &Code) -> String {
    if c.text.trim().is_empty() {
        c.code.clone()
    } else {
        c.text.clone()
    }
}

/// Per field, the clean values it reads (what may leave under it), lower
/// case. Identifier fields go out as they are; the rest are scrubbed, so
/// their clean text is without the embedded identifiers and patterns.
fn sources(
    ev: &ClinicalEvent,
    birth_field: Option<String>,
    location: Option<[String; 4]>,
    values: &[Vec<String>],
    ranges: &[String],
    notes: &[String],
) -> BTreeMap<Field, Vec<String>> {
    let mut s: BTreeMap<Field, Vec<String>> = BTreeMap::new();
    let mut add = |f: Field, v: &str| s.entry(f).or_default().push(v.to_lowercase());
    if let Some(n) = &ev.patient.name {
        for p in [&n.given, &n.middle, &n.family] {
            add(Field::PatientName, p);
        }
    }
    let ids = &ev.patient.identifiers;
    if let Some(mrn) = ids.iter().find(|i| i.type_code == "MR").or(ids.first()) {
        add(Field::PatientId, &mrn.value);
    }
    for i in ids {
        add(Field::PatientIds, &format!("{}:{}", i.type_code, i.value));
    }
    if let Some(b) = &birth_field {
        add(Field::BirthDate, b);
    }
    if let Some(v) = &ev.visit {
        add(Field::Visit, &v.value);
    }
    if let Some(o) = &ev.order {
        let n = if o.filler_id.is_empty() {
            &o.placer_id
        } else {
            &o.filler_id
        };
        add(Field::OrderNumber, n);
    }
    if let Some(x) = &ev.patient.sex {
        add(Field::Sex, x);
    }
    if let Some([f, u, r, b]) = &location {
        add(Field::Facility, f);
        add(Field::Unit, u);
        add(Field::Room, r);
        add(Field::Bed, b);
    }
    let mt = &ev.source.message_type;
    let message = if ev.source.trigger.is_empty() || mt.contains('^') {
        mt.clone()
    } else {
        format!("{mt}^{}", ev.source.trigger)
    };
    add(
        Field::EventClass,
        &format!("{} {message}", ev.kind.as_str()),
    );
    for (i, o) in ev.observations.iter().enumerate() {
        let main = main_observation(&ev.observations) == Some(i);
        let mut fields = vec![Field::Results];
        if main {
            fields.push(Field::Test);
        }
        for &f in &fields {
            add(f, &label(&o.code));
        }
        for v in &values[i] {
            add(Field::Results, v);
            if main {
                add(Field::Value, v);
            }
        }
        if let Some(u) = &o.units {
            add(Field::Results, &label(u));
            if main {
                add(Field::Units, &label(u));
            }
        }
        add(Field::Results, &o.flags.join(","));
        if main {
            add(Field::Flag, &o.flags.join(","));
            add(Field::ReferenceRange, &ranges[i]);
        }
    }
    if let Some(p) = ev
        .providers
        .iter()
        .find(|p| p.role == ProviderRole::Ordering)
    {
        for part in [&p.name.given, &p.name.middle, &p.name.family] {
            add(Field::OrderingProvider, part);
        }
    }
    if let Some(a) = &ev.alarm {
        add(Field::AlarmKind, &label(&a.kind));
    }
    for n in notes {
        add(Field::Notes, n);
    }
    s
}

// ------------------------------------------------------------------ checks

fn alert(c: &Case) -> Alert {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap();
    Alert {
        id: c.alert_id,
        rule: "critical-potassium".into(),
        priority: c.priority,
        target: RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: Some("ICU".into()),
        },
        policy: EscalationPolicy {
            name: "p".into(),
            tiers: vec![Tier {
                target: TierTarget::Failsafe,
                timeout: None,
            }],
            repeats: 0,
            renotify: None,
        },
        clear: None,
        dedup_key: "k".into(),
        dedup_until: None,
        group_key: None,
        group_until: None,
        state: State::Notifying,
        tier: 0,
        round: 0,
        deadline: None,
        created_at: t0,
        late: c.late,
        count: 1,
        event_id: 1,
        event: c.ev.clone(),
        notified: Vec::new(),
        accepted_by: None,
        timeline: Vec::new(),
    }
}

/// A template that prints the envelope and every field `p` allows.
fn everything(p: &Profile) -> Template {
    let mut src = ENVELOPE
        .iter()
        .map(|v| format!("{v}={{{{ {v} }}}}"))
        .collect::<Vec<_>>()
        .join("\n");
    for f in &p.fields {
        src.push_str(&format!("\n{0}={{{{ {0} }}}}", f.name()));
    }
    compile("everything", &src, p).expect("compiles")
}

/// Every canary of `canaries` in `haystack` (case-insensitive) for which
/// `forbidden` holds: the detector.
fn found<'a>(
    haystack: &str,
    canaries: &'a [Canary],
    forbidden: impl Fn(usize, &Canary) -> bool,
) -> Vec<&'a str> {
    let h = haystack.to_lowercase();
    canaries
        .iter()
        .enumerate()
        .filter(|(i, c)| forbidden(*i, c) && h.contains(&c.text))
        .map(|(_, c)| c.text.as_str())
        .collect()
}

#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    builtin: BTreeMap<String, u64>,
    custom: u64,
    canaries: u64,
    absent_checks: u64,
    present_checks: u64,
    free_texts: u64,
    embedded: u64,
    embedded_sent: u64,
    preview_checks: u64,
}

/// Runs case `n`; panics naming it when a property fails.
fn run_case(n: u64, tally: &mut Tally) {
    let mut g = Gen::new(n);
    let case = g.case();
    let profile = g.profile(n);
    let reason = g.reason();
    let at = |what: &str| {
        format!(
            "case {n} (profile `{}`, reason {reason:?}): {what}",
            profile.name
        )
    };

    // The detector finds every canary in the unredacted event (the birth
    // date as the view writes it aside), and every embedded identifier or
    // pattern string in the free text that holds it.
    let raw = format!("{:?}", case.ev).to_lowercase();
    let missing: Vec<&str> = case
        .canaries
        .iter()
        .filter(|c| !c.derived && !raw.contains(&c.text))
        .map(|c| c.text.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{}",
        at(&format!("detector misses {missing:?} in the event"))
    );
    for (text, embedded) in &case.free_text {
        for e in embedded {
            assert!(
                text.to_lowercase().contains(&e.to_lowercase()),
                "{}",
                at(&format!("detector misses {e:?} in {text:?}"))
            );
        }
    }

    // The carriers of each canary: the fields whose clean values hold it.
    let carriers: Vec<BTreeSet<Field>> = case
        .canaries
        .iter()
        .map(|c| {
            case.sources
                .iter()
                .filter(|(_, vs)| vs.iter().any(|v| v.contains(&c.text)))
                .map(|(f, _)| *f)
                .collect()
        })
        .collect();
    let may_leave = |i: usize| carriers[i].iter().any(|f| profile.allows(*f));

    // The scrubber on its own: no identifier of the patient and no pattern
    // string survives in any free text.
    let scrubber = Scrubber::new(&case.ev);
    for (text, _) in &case.free_text {
        let out = scrubber.scrub(text);
        let left = found(&out, &case.canaries, |_, c| {
            matches!(c.kind, Kind::Patient | Kind::Pattern)
        });
        assert!(
            left.is_empty(),
            "{}",
            at(&format!("scrub leaves {left:?}: {text:?} -> {out:?}"))
        );
        tally.free_texts += 1;
    }
    let dbg = format!("{scrubber:?}");
    assert!(
        found(&dbg, &case.canaries, |_, _| true).is_empty(),
        "{}",
        at("Scrubber Debug")
    );

    // The view and what leaves with it.
    let view = redact(&alert(&case), reason, &profile);
    let v = view.get();
    let rendered = everything(&profile).render(&view).expect("renders");
    for k in v.values.keys() {
        let f = Field::parse(k).expect("a catalogue field");
        assert!(
            profile.allows(f),
            "{}",
            at(&format!("value `{k}` not allowed"))
        );
    }
    assert!(
        v.fields_sent.iter().all(|f| profile.allows(*f)),
        "{}",
        at("fields_sent")
    );
    assert!(
        v.preview_fields
            .iter()
            .all(|f| profile.allows(*f) && !f.is_identifier()),
        "{}",
        at("preview_fields")
    );
    let mut payloads: Vec<(String, String)> = vec![
        ("rendering".into(), rendered.clone()),
        ("preview".into(), v.preview.clone()),
        ("Debug".into(), format!("{v:?}")),
    ];
    payloads.extend(
        v.values
            .iter()
            .map(|(k, s)| (format!("value `{k}`"), s.clone())),
    );
    let identifiers_barred = profile.name == LIMITED || profile.name == NONE;
    for (what, text) in &payloads {
        // (a) nothing of a field outside the profile.
        let leaks = found(text, &case.canaries, |i, _| !may_leave(i));
        assert!(
            leaks.is_empty(),
            "{}",
            at(&format!(
                "{what} holds {leaks:?}, which no allowed field carries: {text:?}"
            ))
        );
        tally.absent_checks += case.canaries.len() as u64;
        // (c) under `limited` and `none`, no identifier at all.
        if identifiers_barred {
            let ids = found(text, &case.canaries, |_, c| {
                matches!(c.kind, Kind::Patient | Kind::OrderNumber)
            });
            assert!(
                ids.is_empty(),
                "{}",
                at(&format!("{what} holds identifiers {ids:?}: {text:?}"))
            );
        }
    }
    // (b) the preview never holds an identifier, under any profile.
    let in_preview = found(&v.preview, &case.canaries, |_, c| {
        matches!(c.kind, Kind::Patient | Kind::OrderNumber)
    });
    assert!(
        in_preview.is_empty(),
        "{}",
        at(&format!("preview holds {in_preview:?}: {:?}", v.preview))
    );
    tally.preview_checks += 1;

    // And the detector sees what does leave: every canary an allowed
    // identifier field carries as it is, and every clinical canary an
    // allowed field carries, is in the rendering.
    let lower = rendered.to_lowercase();
    for (i, c) in case.canaries.iter().enumerate() {
        let allowed: Vec<Field> = carriers[i]
            .iter()
            .copied()
            .filter(|f| profile.allows(*f))
            .collect();
        let expect = allowed.iter().any(|f| f.is_identifier())
            || (c.kind == Kind::Other && !allowed.is_empty());
        if expect {
            assert!(
                lower.contains(&c.text),
                "{}",
                at(&format!(
                    "{:?} carried by allowed {allowed:?} is missing from the rendering: {rendered:?}",
                    c.text
                ))
            );
            tally.present_checks += 1;
        }
    }

    tally.cases += 1;
    tally.canaries += case.canaries.len() as u64;
    if BUILTIN.contains(&profile.name.as_str()) {
        *tally.builtin.entry(profile.name.clone()).or_default() += 1;
    } else {
        tally.custom += 1;
    }
    let sends_free_text = [
        Field::Notes,
        Field::Value,
        Field::Results,
        Field::Unit,
        Field::Room,
    ]
    .iter()
    .any(|f| profile.allows(*f));
    for (_, embedded) in &case.free_text {
        tally.embedded += embedded.len() as u64;
        if sends_free_text {
            tally.embedded_sent += embedded.len() as u64;
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs the cases of one half of the run (two tests, so that libtest runs
/// them side by side), reports the counts and checks the run exercised what
/// it claims to.
fn run_half(half: u64) {
    let mut tally = Tally::default();
    if let Some(n) = env_u64("REDACT_PROPTEST_CASE") {
        if half == 0 {
            run_case(n, &mut tally);
        }
        return;
    }
    let cases = env_u64("REDACT_PROPTEST_CASES").unwrap_or(CASES);
    let range = if half == 0 {
        0..cases / 2
    } else {
        cases / 2..cases
    };
    let expected = range.end - range.start;
    for n in range.clone() {
        run_case(n, &mut tally);
    }
    // Written past libtest's capture: the counts are the evidence.
    let _ = writeln!(
        std::io::stderr(),
        "redaction properties, cases {}..{}: {} cases ({} custom profiles, built-in {:?}), \
         {} canaries, {} absence checks, {} presence checks, {} preview checks, \
         {} free texts scrubbed, {} identifier/pattern strings embedded ({} under a \
         profile sending free text)",
        range.start,
        range.end,
        tally.cases,
        tally.custom,
        tally.builtin,
        tally.canaries,
        tally.absent_checks,
        tally.present_checks,
        tally.preview_checks,
        tally.free_texts,
        tally.embedded,
        tally.embedded_sent,
    );
    assert_eq!(tally.cases, expected);
    if cases >= CASES {
        for name in BUILTIN {
            let n = tally.builtin.get(name).copied().unwrap_or(0);
            assert!(n > 25, "{name}: {tally:?}");
        }
        assert!(tally.custom > 500, "{tally:?}");
        assert!(tally.embedded_sent > 500, "{tally:?}");
        assert!(tally.present_checks > 5_000, "{tally:?}");
    }
}

#[test]
fn random_events_and_profiles_let_nothing_out_beyond_the_profile_first_half() {
    run_half(0);
}

#[test]
fn random_events_and_profiles_let_nothing_out_beyond_the_profile_second_half() {
    run_half(1);
}

#[test]
fn the_detector_finds_embedded_identifiers_before_scrubbing_and_none_after() {
    // A case whose free text embeds identifiers: the detector finds them in
    // the free text before scrubbing, and would flag a payload that held it.
    let (case, n) = (0..)
        .map(|n| (Gen::new(n).case(), n))
        .find(|(c, _)| c.free_text.iter().any(|(_, e)| !e.is_empty()))
        .expect("some case embeds an identifier");
    let (text, embedded) = case
        .free_text
        .iter()
        .find(|(_, e)| !e.is_empty())
        .expect("found above");
    let hits = found(text, &case.canaries, |_, c| {
        matches!(c.kind, Kind::Patient | Kind::Pattern)
    });
    assert!(!hits.is_empty(), "case {n}: {text:?}");
    for e in embedded {
        assert!(
            hits.contains(&e.to_lowercase().as_str()),
            "case {n}: {e:?} not flagged in {text:?}"
        );
    }
    // The same text after scrubbing: nothing flagged.
    let out = scrub(text, &case.ev);
    assert!(
        found(&out, &case.canaries, |_, c| matches!(
            c.kind,
            Kind::Patient | Kind::Pattern
        ))
        .is_empty(),
        "{out}"
    );
}
