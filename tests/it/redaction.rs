//! Redaction over the HL7 v2 corpus (issue #7): every identifier of the
//! patient that an event carries is gone from that event's scrubbed free
//! text, and none of them leaves under the `limited` profile.
//!
//! The identifier terms and the whole-word search here are written from the
//! scrubber's documented rules (`src/redact/mod.rs`), not from its code: each
//! name component and its tokens of 2 characters or more, every identifier
//! value (PID-3, merged MRG-1, PV1-19 visit number) and the birth date in
//! its documented renderings, matched whole word and case-insensitively.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeZone, Utc};
use switchboard::alert::model::{Alert, Reason, State};
use switchboard::event::ClinicalEvent;
use switchboard::parse::{self, Charset, EventContext, Header, Support};
use switchboard::redact::{self, ENVELOPE, Field, LIMITED, MARKER, Profile};
use switchboard::rules::{AlertPriority, EscalationPolicy, RouteTarget, Tier, TierTarget};

use crate::support::note;

/// Names and identifier values shorter than this are not searched for (the
/// scrubber's documented limit: an initial would wipe every one-letter word).
const MIN_TERM_CHARS: usize = 2;

/// The documented birth date renderings (`YYYYMMDD`, `YYYY-MM-DD`,
/// `MM/DD/YYYY`, `M/D/YY`, `DD.MM.YYYY`, `Jan 1, 1970`, `01-Jan-1970`).
const BIRTH_DATE_FORMATS: &[&str] = &[
    "%Y%m%d",
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%-m/%-d/%y",
    "%d.%m.%Y",
    "%b %-d, %Y",
    "%d-%b-%Y",
];

/// Every `.hl7` file under `../shared/corpus/hl7v2`, sorted; `None` (with a
/// skip line) when the corpus is not there.
fn corpus_files() -> Option<Vec<PathBuf>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/hl7v2");
    if !root.is_dir() {
        note(&format!(
            "corpus not found at {}: skipping the redaction corpus test",
            root.display()
        ));
        return None;
    }
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "hl7") {
                files.push(p);
            }
        }
    }
    files.sort();
    Some(files)
}

struct FileEvents {
    messages: usize,
    /// Messages the parser rejects (answered AR/AE, never routed).
    rejected: usize,
    events: Vec<ClinicalEvent>,
}

/// The events of one corpus file through the public parse stages (decode,
/// split, header, support, events), as the listener runs them. Messages of
/// types Switchboard does not route give none.
fn file_events(path: &Path) -> FileEvents {
    let bytes = std::fs::read(path).unwrap();
    let mut frame: &[u8] = &bytes;
    while let Some(rest) = frame
        .strip_suffix(b"\r")
        .or_else(|| frame.strip_suffix(b"\n"))
    {
        frame = rest;
    }
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let decoded = parse::decode_frame(frame, Charset::Utf8)
        .unwrap_or_else(|e| panic!("{name}: cannot decode: {e}"));
    let split = parse::split(&decoded.text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ctx = EventContext {
        sender: "corpus",
        timezone: chrono_tz::UTC,
    };
    let mut events = Vec::new();
    let mut messages = 0;
    let mut rejected = 0;
    for text in &split.messages {
        messages += 1;
        let header = Header::parse(text).unwrap_or_else(|e| panic!("{name}: header: {e}"));
        if parse::support(&header.message_code, &header.trigger) != Support::Supported {
            continue;
        }
        match parse::events(text, &header, &ctx) {
            Ok(evs) => events.extend(evs),
            // Rejected messages never become alerts: nothing to redact.
            Err(_) => rejected += 1,
        }
    }
    FileEvents {
        messages,
        rejected,
        events,
    }
}

/// A name part split into tokens: at every character that is neither a
/// letter, a digit nor an apostrophe (`O'Brien` stays one token).
fn name_tokens(part: &str) -> Vec<String> {
    part.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '\u{2019}')
        .map(str::to_string)
        .collect()
}

/// The patient's identifiers the event carries, per the scrubber's
/// documented rules, each with what it is (for messages), longest first.
fn identifier_terms(ev: &ClinicalEvent) -> Vec<(String, &'static str)> {
    let mut terms: Vec<(String, &'static str)> = Vec::new();
    if let Some(n) = &ev.patient.name {
        for part in [&n.given, &n.middle, &n.family] {
            let part = part.trim();
            terms.push((part.to_string(), "name"));
            for t in name_tokens(part) {
                terms.push((t, "name token"));
            }
        }
    }
    let ids = ev
        .patient
        .identifiers
        .iter()
        .chain(&ev.merged_identifiers)
        .chain(ev.visit.as_ref());
    for id in ids {
        terms.push((id.value.trim().to_string(), "identifier"));
    }
    if let Some(b) = &ev.patient.birth_date {
        let b = b.trim();
        terms.push((b.to_string(), "birth date"));
        if let Some(d) = b
            .get(..8)
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
        {
            for f in BIRTH_DATE_FORMATS {
                terms.push((d.format(f).to_string(), "birth date"));
            }
        }
    }
    terms.retain(|(t, _)| t.chars().count() >= MIN_TERM_CHARS);
    terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    terms.dedup_by(|a, b| a.0.eq_ignore_ascii_case(&b.0));
    terms
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// Whether `term` occurs in `text` as a whole word (no letter or digit
/// right before or after it), case-insensitively.
fn has_word(text: &str, term: &str) -> bool {
    let text = text.to_lowercase();
    let term = term.to_lowercase();
    if term.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(i) = text[from..].find(&term) {
        let start = from + i;
        let end = start + term.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !is_word_char(before) && !is_word_char(after) {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The event's free text: its notes, and the values of its free-text
/// observations (`ST`, `TX`, `FT`).
fn free_texts(ev: &ClinicalEvent) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ev
        .notes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("note {i}"), n.clone()))
        .collect();
    for (i, o) in ev.observations.iter().enumerate() {
        let t = o.value_type.trim().to_ascii_uppercase();
        if matches!(t.as_str(), "ST" | "TX" | "FT") {
            for (j, v) in o.values.iter().enumerate() {
                out.push((format!("OBX {i} ({t}) value {j}"), v.clone()));
            }
        }
    }
    out.retain(|(_, t)| !t.trim().is_empty());
    out
}

fn alert(ev: ClinicalEvent) -> Alert {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap();
    Alert {
        id: 424_242,
        rule: "corpus-rule".into(),
        priority: AlertPriority::Stat,
        target: RouteTarget::Role {
            role: "charge-nurse".into(),
            scope: None,
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
        late: false,
        count: 1,
        event_id: 1,
        event: ev,
        notified: Vec::new(),
        accepted_by: None,
        timeline: Vec::new(),
    }
}

/// Two templates: the envelope, one variable a line; and every field `p`
/// allows, one a line, values only (so a variable name is never mistaken
/// for a value).
fn templates(p: &Profile) -> (redact::Template, redact::Template) {
    let lines = |names: Vec<&str>| {
        names
            .into_iter()
            .map(|v| format!("{{{{ {v} }}}}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let envelope = lines(ENVELOPE.to_vec());
    let fields = lines(p.fields.iter().map(|f| f.name()).collect());
    (
        redact::compile("envelope", &envelope, p).expect("compiles"),
        redact::compile("fields", &fields, p).expect("compiles"),
    )
}

/// Words the payload's own structure and fixed vocabulary hold whatever the
/// event (the marker, the notice, status and priority names, the preview's
/// words, the view's field names). A patient named like one of them (the
/// corpus has a patient `Test`) cannot be told apart from them in the
/// envelope, the preview, the `Debug` output or those fixed-vocabulary
/// values; everywhere else such a term is checked like any other.
fn fixed_vocabulary() -> String {
    let mut v: Vec<String> = vec![
        MARKER.to_string(),
        redact::OPEN_SECURE_APP.to_string(),
        "corpus-rule stat urgent routine asap new false true late critical result message alert bed"
            .to_string(),
        "preliminary final corrected wrong-patient deleted cannot-obtain unknown".to_string(),
    ];
    v.extend(ENVELOPE.iter().map(|s| s.to_string()));
    v.extend(Field::ALL.iter().map(|f| format!("{} {f:?}", f.name())));
    v.join("\n")
}

#[test]
fn corpus_free_text_and_limited_payloads_hold_no_identifier_of_the_patient() {
    let Some(files) = corpus_files() else { return };
    assert!(!files.is_empty(), "the corpus folder holds no .hl7 file");
    let limited = redact::builtin(LIMITED).unwrap();
    let (envelope, fields) = templates(&limited);
    let vocabulary = fixed_vocabulary();

    let mut messages = 0usize;
    let mut rejected = 0usize;
    let mut events = 0usize;
    let mut texts_checked = 0usize;
    let mut occurrences = 0usize;
    let mut pairs_checked = 0usize;
    let mut payload_terms = 0usize;
    let mut synthetic_checked = 0usize;
    let mut vocabulary_terms = Vec::new();
    let mut failures = Vec::new();

    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let f = file_events(path);
        messages += f.messages;
        rejected += f.rejected;
        let evs = f.events;
        for (ei, ev) in evs.iter().enumerate() {
            events += 1;
            let terms = identifier_terms(ev);
            let scrubber = redact::Scrubber::new(ev);
            // Each free text: the identifiers it holds are all gone.
            for (what, text) in free_texts(ev) {
                texts_checked += 1;
                let scrubbed = redact::scrub(&text, ev);
                assert_eq!(
                    scrubbed,
                    scrubber.scrub(&text),
                    "{name} event {ei} {what}: scrub() and Scrubber::scrub agree"
                );
                for (term, kind) in &terms {
                    pairs_checked += 1;
                    if has_word(&text, term) {
                        occurrences += 1;
                    }
                    if has_word(&scrubbed, term) {
                        failures.push(format!(
                            "{name} event {ei} {what}: {kind} `{term}` survives scrubbing: {scrubbed:?}"
                        ));
                    }
                }
            }
            // Every identifier the event carries, written into one note the
            // way people write them: the detector finds each before
            // scrubbing, none after.
            if !terms.is_empty() {
                let synthetic = terms
                    .iter()
                    .map(|(t, _)| format!("pt {t}, ({}) {}'s", t.to_uppercase(), t.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join("; ");
                let scrubbed = scrubber.scrub(&synthetic);
                for (term, kind) in &terms {
                    synthetic_checked += 1;
                    assert!(has_word(&synthetic, term), "detector misses `{term}`");
                    if has_word(&scrubbed, term) {
                        failures.push(format!(
                            "{name} event {ei} synthetic note: {kind} `{term}` survives scrubbing: {scrubbed:?}"
                        ));
                    }
                }
            }
            // The whole payload under `limited`: no identifier anywhere.
            let view = redact::redact(&alert(ev.clone()), Reason::New, &limited);
            let v = view.get();
            // Each part of the payload, and whether a word of the fixed
            // vocabulary may stand in it.
            let mut payload: Vec<(String, String, bool)> = vec![
                (
                    "envelope rendering".into(),
                    envelope.render(&view).expect("renders"),
                    true,
                ),
                (
                    "fields rendering".into(),
                    fields.render(&view).expect("renders"),
                    false,
                ),
                ("preview".into(), v.preview.clone(), true),
                ("Debug".into(), format!("{v:?}"), true),
            ];
            payload.extend(v.values.iter().map(|(k, s)| {
                let fixed = *k == Field::ResultStatus.name() || *k == Field::Priority.name();
                (format!("value {k}"), s.clone(), fixed)
            }));
            for (term, kind) in &terms {
                let in_vocabulary = has_word(&vocabulary, term);
                if in_vocabulary {
                    vocabulary_terms.push(term.clone());
                }
                payload_terms += 1;
                for (what, s, fixed) in &payload {
                    if has_word(s, term) && !(in_vocabulary && *fixed) {
                        failures.push(format!(
                            "{name} event {ei}: {kind} `{term}` leaves under `limited` in the {what}: {s:?}"
                        ));
                    }
                }
            }
        }
    }
    vocabulary_terms.sort();
    vocabulary_terms.dedup();
    note(&format!(
        "redaction corpus: {} files, {messages} messages ({rejected} rejected by the parser), {events} events, {texts_checked} free-text fields, \
         {pairs_checked} (text, identifier) pairs, {occurrences} identifier occurrences in free text removed, \
         {synthetic_checked} identifiers removed from a note written with all of them, \
         {payload_terms} identifiers checked absent from `limited` payloads ({} of them words of the payload's \
         fixed vocabulary, checked only where that vocabulary cannot stand: {vocabulary_terms:?})",
        files.len(),
        vocabulary_terms.len(),
    ));
    assert!(
        failures.is_empty(),
        "{} leak(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The check can fail: the detector found each identifier of every event
    // in the unscrubbed note written with them (asserted above).
    assert!(events > 0, "no event parsed from the corpus");
    assert!(texts_checked > 0, "no free text in the corpus");
    assert!(synthetic_checked > 0, "no identifier in the corpus events");
}

#[test]
fn the_detector_finds_identifiers_whole_word_and_only_whole_word() {
    assert!(has_word("Pt EVERYMAN, Adam seen", "everyman"));
    assert!(has_word("Pt EVERYMAN, Adam seen", "ADAM"));
    assert!(has_word("ids: PATID1234.", "patid1234"));
    assert!(has_word("born 08/18/1988", "08/18/1988"));
    assert!(has_word("[redacted]'s and EVERYMAN's", "everyman"));
    assert!(!has_word("EVERYMANS", "everyman"));
    assert!(!has_word("XPATID1234", "patid1234"));
    assert!(!has_word("", "x"));
    assert!(!has_word("x", ""));
    assert_eq!(name_tokens("O'Brien-Nakamura"), ["O'Brien", "Nakamura"]);
}
