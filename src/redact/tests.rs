//! Profiles, the scrubber, views, previews and templates — with a PHI canary.

use chrono::{TimeZone, Utc};

use super::*;
use crate::alert::model::{Alert, Reason, State};
use crate::event::{
    ClinicalEvent, Code, Identifier, Observation, Patient, PersonName, Priority, Provider,
    ProviderRole, ResultStatus,
};
use crate::rules::tests::result_event;
use crate::rules::{AlertPriority, EscalationPolicy, RouteTarget, Tier, TierTarget};

/// Free text holding every kind of canary.
const CANARY_TEXT: &str = "Pt Zzcanary Phi (MRN ZZ12345678, DOB 01/01/1970, SSN 123-45-6789) \
     home (555) 010-9999, zz@example.org; born 1970-01-01 aka 19700101. ZZCANARY, PHI called.";

/// Strings that must never leave under `limited` or `none`.
const CANARIES: &[&str] = &[
    "zzcanary",
    "zz12345678",
    "12345678",
    "1970-01-01",
    "19700101",
    "01/01/1970",
    "123-45-6789",
    "010-9999",
    "zz@example.org",
    "example.org",
];

/// Every canary found in `s` (case-insensitive; the family name `Phi` as a
/// whole word).
fn leaks(s: &str) -> Vec<String> {
    let lower = s.to_lowercase();
    let mut out: Vec<String> = CANARIES
        .iter()
        .filter(|c| lower.contains(*c))
        .map(|c| c.to_string())
        .collect();
    if lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w == "phi")
    {
        out.push("Phi".to_string());
    }
    out
}

fn assert_clean(what: &str, s: &str) {
    let l = leaks(s);
    assert!(l.is_empty(), "{what} leaks {l:?}: {s}");
}

fn obs(value_type: &str, text: &str, values: &[&str], flags: &[&str]) -> Observation {
    Observation {
        set_id: "1".into(),
        value_type: value_type.into(),
        code: Code {
            code: "X".into(),
            text: text.into(),
            system: "LN".into(),
        },
        sub_id: String::new(),
        values: values.iter().map(|v| v.to_string()).collect(),
        units: None,
        reference_range: String::new(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        status: ResultStatus::Final,
        observed_at: None,
    }
}

/// The demo result (ICU 12-A, potassium 6.9 HH) with the canary patient,
/// the canary in the notes and in an `ST` observation.
fn canary_event() -> ClinicalEvent {
    let mut ev = result_event();
    ev.patient = Patient {
        identifiers: vec![
            Identifier {
                value: "ZZ12345678".into(),
                authority: "HOSP".into(),
                type_code: "MR".into(),
            },
            Identifier {
                value: "123-45-6789".into(),
                authority: "SSA".into(),
                type_code: "SS".into(),
            },
        ],
        name: Some(PersonName {
            family: "Phi".into(),
            given: "Zzcanary".into(),
            middle: "Q".into(),
        }),
        birth_date: Some("19700101".into()),
        sex: Some("F".into()),
    };
    ev.priority = Priority::Stat;
    let mut k = obs("NM", "Potassium", &["6.9"], &["HH"]);
    k.units = Some(Code {
        code: "mmol/L".into(),
        text: String::new(),
        system: "UCUM".into(),
    });
    k.reference_range = "3.5-5.1".into();
    ev.observations = vec![
        obs("NM", "Sodium", &["140"], &["N"]),
        k,
        obs("ST", "Comment", &[CANARY_TEXT], &[]),
    ];
    ev.providers = vec![Provider {
        role: ProviderRole::Ordering,
        role_code: String::new(),
        id: Identifier {
            value: "NPI1".into(),
            authority: String::new(),
            type_code: "NPI".into(),
        },
        name: PersonName {
            family: "Adams".into(),
            given: "Ann".into(),
            middle: String::new(),
        },
    }];
    ev.notes = vec![
        CANARY_TEXT.to_string(),
        "Called to Dr. Adams at 14:05, read back.".to_string(),
    ];
    ev
}

fn alert(ev: ClinicalEvent) -> Alert {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap();
    Alert {
        id: 7,
        rule: "critical-potassium".into(),
        priority: AlertPriority::Stat,
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
        late: false,
        count: 1,
        event_id: 1,
        event: ev,
        notified: Vec::new(),
        accepted_by: None,
        timeline: Vec::new(),
    }
}

fn profile(name: &str) -> Profile {
    builtin(name).expect("builtin profile")
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

// ---- profiles ----

#[test]
fn shipped_profiles_carry_what_the_issue_says() {
    let cs = profile(CLINICIAN_SECURE);
    assert!(cs.requires_e2e);
    let ids: Vec<Field> = cs
        .fields
        .iter()
        .copied()
        .filter(|f| f.is_identifier())
        .collect();
    assert!(ids.len() >= 2, "two patient identifiers: {ids:?}");
    for f in [Field::PatientName, Field::PatientId, Field::BirthDate] {
        assert!(cs.allows(f), "{f}");
    }
    for f in Field::LOCATION.into_iter().chain(Field::CLINICAL) {
        assert!(cs.allows(f), "{f}");
    }

    let limited = profile(LIMITED);
    assert!(!limited.requires_e2e);
    assert!(!limited.has_identifiers());
    assert!(
        !limited.allows(Field::Notes),
        "free text stays out of role rooms"
    );
    for f in [
        Field::Unit,
        Field::Room,
        Field::Bed,
        Field::Test,
        Field::Value,
        Field::Flag,
    ] {
        assert!(limited.allows(f), "{f}");
    }

    let none = profile(NONE);
    assert!(none.fields.is_empty());
    assert!(!none.has_clinical_content());

    assert_eq!(DEFAULT_PROFILE, LIMITED);
    assert!(builtin("everything").is_none());
    for name in BUILTIN {
        assert_eq!(profile(name).name, name);
    }
}

#[test]
fn clinician_secure_is_refused_on_a_channel_that_is_not_end_to_end() {
    let cs = profile(CLINICIAN_SECURE);
    let e = check_backend(&cs, false).unwrap_err();
    assert!(
        e.contains("clinician-secure") && e.contains("end-to-end"),
        "{e}"
    );
    assert!(check_backend(&cs, true).is_ok());
    assert!(check_backend(&profile(LIMITED), false).is_ok());
    assert!(check_backend(&profile(NONE), false).is_ok());
    // Any identifier needs E2E, whatever the flag says.
    let sneaky = Profile {
        name: "sneaky".into(),
        fields: [Field::PatientId, Field::Unit].into(),
        requires_e2e: false,
    };
    let e = check_backend(&sneaky, false).unwrap_err();
    assert!(e.contains("`mrn`") || e.contains("mrn"), "{e}");
}

#[test]
fn configured_profiles_name_unknown_fields_and_derive_e2e() {
    let p = Profile::custom("ward-board", &["location", "test", "flag"]).unwrap();
    assert!(!p.requires_e2e);
    assert!(p.allows(Field::Room) && p.allows(Field::Test) && !p.allows(Field::Value));
    let p = Profile::custom("desk", &["mrn", "clinical"]).unwrap();
    assert!(p.requires_e2e, "an identifier requires E2E");
    let e = Profile::custom("x", &["unit", "ssn"]).unwrap_err();
    assert!(e.contains("`ssn`"), "{e}");
    let e = Profile::custom("limited", &["unit"]).unwrap_err();
    assert!(e.contains("shipped"), "{e}");
}

#[test]
fn field_names_are_unique_and_parse_back() {
    let mut names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    for f in Field::ALL {
        assert_eq!(Field::parse(f.name()), Some(f));
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Field::ALL.len());
    for v in ENVELOPE {
        assert!(Field::parse(v).is_none(), "{v} is envelope, not a field");
    }
    assert_eq!(Field::PatientId.name(), "mrn");
    assert!(Field::PatientName.is_identifier() && Field::BirthDate.is_identifier());
    assert!(!Field::Unit.is_identifier() && !Field::Notes.is_identifier());
}

// ---- scrubber ----

#[test]
fn scrub_removes_every_kind_of_identifier() {
    let ev = canary_event();
    let out = scrub(CANARY_TEXT, &ev);
    assert_clean("scrubbed text", &out);
    assert!(out.contains(MARKER));
    assert!(
        out.starts_with("Pt [redacted] [redacted] (MRN [redacted]"),
        "{out}"
    );

    let cases: &[(&str, &str)] = &[
        // the patient's names, any case, whole word, possessive
        (
            "seen ZZCANARY and zzcanary",
            "seen [redacted] and [redacted]",
        ),
        ("phi's daughter", "[redacted]'s daughter"),
        // ... but not inside other words, and not initials
        ("Philip uses graphics; Q", "Philip uses graphics; Q"),
        // the patient's identifiers
        ("ref ZZ12345678.", "ref [redacted]."),
        // the birth date, however written
        ("b. 1/1/1970", "b. [redacted]"),
        ("born Jan 1, 1970", "born [redacted]"),
        ("born 01-JAN-1970", "born [redacted]"),
        ("born 1970/01/01", "born [redacted]"),
        // pattern rules, for what the event does not name
        ("ssn 987-65-4321", "ssn [redacted]"),
        ("call 555-010-1234", "call [redacted]"),
        ("call 555.010.1234", "call [redacted]"),
        ("call +1 555 010 1234", "call [redacted]"),
        ("call +44 20 7946 0958", "call [redacted]"),
        ("call (555)010-1234 now", "call [redacted] now"),
        ("ext 555-0199", "ext [redacted]"),
        ("mail a.b-c@mail.hospital.example", "mail [redacted]"),
        ("other chart AB1234567", "other chart [redacted]"),
        ("acct 99887766", "acct [redacted]"),
        ("MRN: 4455", "MRN: [redacted]"),
        ("DOB 3/4/1982", "DOB [redacted]"),
        // clinical text survives
        (
            "K 6.9 mmol/L at 14:05, range 3.5-5.1, BP 120/80, PLT 150000 on 2026-03-10",
            "K 6.9 mmol/L at 14:05, range 3.5-5.1, BP 120/80, PLT 150000 on 2026-03-10",
        ),
        (
            "Called to Dr. Adams, read back",
            "Called to Dr. Adams, read back",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(scrub(input, &ev), *want, "input: {input}");
    }
}

#[test]
fn scrub_uses_every_identifier_the_event_carries() {
    let mut ev = result_event();
    ev.patient.name = Some(PersonName {
        family: "O'Brien-Nakamura".into(),
        given: "Mary Ann".into(),
        middle: "J".into(),
    });
    ev.patient.identifiers[0].value = "00042".into();
    ev.merged_identifiers = vec![Identifier {
        value: "OLD77".into(),
        ..Identifier::default()
    }];
    ev.visit = Some(Identifier {
        value: "V9911".into(),
        ..Identifier::default()
    });
    ev.patient.birth_date = Some("1982-03-04".into());
    let text = "Mary Annabel? no: Mary Ann O’Brien (Nakamura), OBrien; ids 00042 42 old77 v9911; 03/04/1982";
    assert_eq!(
        scrub(text, &ev),
        "[redacted] Annabel? no: [redacted] [redacted] ([redacted]), [redacted]; \
         ids [redacted] 42 [redacted] [redacted]; [redacted]"
    );
    // A patient with nothing known: only the patterns apply.
    let mut bare = result_event();
    bare.patient = Patient::default();
    bare.visit = None;
    assert_eq!(scrub("Smith 123-45-6789", &bare), "Smith [redacted]");
}

#[test]
fn scrubber_debug_shows_no_term() {
    let s = Scrubber::new(&canary_event());
    assert_clean("Scrubber Debug", &format!("{s:?}"));
}

// ---- views ----

#[test]
fn limited_and_none_let_no_canary_out() {
    // The detector itself finds every canary.
    assert_eq!(leaks(CANARY_TEXT).len(), CANARIES.len() + 1);
    for name in [LIMITED, NONE] {
        let p = profile(name);
        let a = alert(canary_event());
        for reason in [Reason::New, Reason::Escalation, Reason::Correction] {
            let v = redact(&a, reason, &p);
            assert_clean(&format!("{name} Debug"), &format!("{v:?}"));
            assert_clean(&format!("{name} preview"), &v.get().preview);
            for (k, val) in &v.get().values {
                assert_clean(&format!("{name} {k}"), val);
            }
            let text = everything(&p).render(&v).unwrap();
            assert_clean(&format!("{name} rendering"), &text);
            if name == LIMITED {
                assert!(
                    text.contains("test=Potassium") && text.contains("unit=ICU"),
                    "{text}"
                );
            } else {
                assert!(text.contains("open the secure app"), "{text}");
            }
        }
    }
    // The ST observation as the main one: its value is free text, scrubbed.
    let mut ev = canary_event();
    ev.observations = vec![obs("ST", "Comment", &[CANARY_TEXT], &["A"])];
    let v = redact(&alert(ev), Reason::New, &profile(LIMITED));
    let value = &v.get().values["value"];
    assert!(value.contains("called"), "{value}");
    assert_clean("ST value", value);
}

#[test]
fn limited_view_carries_location_and_clinical_context() {
    let v = redact(&alert(canary_event()), Reason::New, &profile(LIMITED));
    let v = v.get();
    assert_eq!(v.preview, "STAT critical result ICU 12-A");
    assert_eq!(v.priority, "stat");
    assert_eq!(v.reason, "new");
    assert_eq!(v.rule, "critical-potassium");
    assert_eq!(v.values["unit"], "ICU");
    assert_eq!(v.values["room"], "12");
    assert_eq!(v.values["bed"], "A");
    assert_eq!(v.values["test"], "Potassium");
    assert_eq!(v.values["value"], "6.9");
    assert_eq!(v.values["units"], "mmol/L");
    assert_eq!(v.values["flag"], "HH");
    assert_eq!(v.values["reference_range"], "3.5-5.1");
    assert_eq!(v.values["result_status"], "final");
    assert_eq!(v.values["event"], "result ORU^R01");
    assert_eq!(v.values["event_priority"], "stat");
    assert_eq!(v.values["ordering_provider"], "Ann Adams");
    assert!(v.values["results"].starts_with("Sodium 140 N; Potassium 6.9 mmol/L HH; Comment "));
    assert!(!v.values.contains_key("notes"));
    assert!(!v.values.contains_key("mrn"));
    let keys: Vec<&str> = v.values.keys().copied().collect();
    let mut sent: Vec<&str> = v.fields_sent.iter().map(|f| f.name()).collect();
    sent.sort();
    assert_eq!(keys, sent, "fields_sent is what the view carries");
    assert!(v.fields_sent.iter().all(|f| !f.is_identifier()));
    assert_eq!(
        v.preview_fields,
        [
            Field::Unit,
            Field::Room,
            Field::Bed,
            Field::EventClass,
            Field::Flag
        ]
    );
}

#[test]
fn none_carries_only_the_notice() {
    let v = redact(&alert(canary_event()), Reason::New, &profile(NONE));
    let v = v.get();
    assert!(v.values.is_empty() && v.fields_sent.is_empty() && v.preview_fields.is_empty());
    assert_eq!(v.preview, "STAT alert: open the secure app");
    assert_eq!(v.rule, "", "rule names name the finding");
    assert_eq!(v.alert_id, 7);
    let t = compile(
        "n",
        "[{{ priority|upper }}] alert {{ alert_id }}: {{ preview }}",
        &profile(NONE),
    )
    .unwrap();
    let v = redact(&alert(canary_event()), Reason::Escalation, &profile(NONE));
    assert_eq!(
        t.render(&v).unwrap(),
        "[STAT] alert 7: STAT alert: open the secure app (escalation)"
    );
}

#[test]
fn clinician_secure_keeps_identifiers_in_their_own_fields() {
    let p = profile(CLINICIAN_SECURE);
    let v = redact(&alert(canary_event()), Reason::New, &p);
    let view = v.get();
    assert_eq!(view.values["patient_name"], "Zzcanary Q Phi");
    assert_eq!(view.values["mrn"], "ZZ12345678");
    assert_eq!(view.values["birth_date"], "1970-01-01");
    assert_eq!(view.values["sex"], "F");
    assert_clean("preview", &view.preview);
    assert_eq!(view.preview, "STAT critical result ICU 12-A");
    let notes = &view.values["notes"];
    assert!(notes.contains("Called to Dr. Adams at 14:05"), "{notes}");
    assert_clean("notes", notes);
    for (k, val) in &view.values {
        if !matches!(*k, "patient_name" | "mrn" | "birth_date") {
            assert_clean(k, val);
        }
    }
    assert!(
        !view.values.contains_key("patient_ids"),
        "the SSN stays behind"
    );
    let t = compile(
        "secure",
        "{{ patient_name }} ({{ mrn }}, {{ birth_date }}): {{ test }} {{ value }} {{ flag }}",
        &p,
    )
    .unwrap();
    assert_eq!(
        t.render(&v).unwrap(),
        "Zzcanary Q Phi (ZZ12345678, 1970-01-01): Potassium 6.9 HH"
    );
    assert_eq!(
        t.fields_sent(&v),
        [
            Field::PatientName,
            Field::PatientId,
            Field::BirthDate,
            Field::Test,
            Field::Value,
            Field::Flag
        ]
    );
}

#[test]
fn the_preview_never_holds_an_identifier_even_where_the_location_names_the_patient() {
    let mut ev = canary_event();
    if let Some(l) = ev.location.as_mut() {
        l.unit = "Phi".into();
        l.room = "ZZ12345678".into();
    }
    for name in BUILTIN {
        let v = redact(&alert(ev.clone()), Reason::New, &profile(name));
        assert_clean(name, &v.get().preview);
        assert!(v.get().preview.chars().count() <= PREVIEW_MAX_CHARS);
    }
}

#[test]
fn preview_says_why_and_when_late() {
    let mut a = alert(canary_event());
    a.late = true;
    let v = redact(&a, Reason::Correction, &profile(LIMITED));
    assert_eq!(
        v.get().preview,
        "STAT critical result ICU 12-A (correction) (late)"
    );
    assert!(v.get().late);
    let mut ev = canary_event();
    ev.observations.clear();
    ev.kind = crate::event::EventKind::Alarm;
    let v = redact(&alert(ev), Reason::New, &profile(LIMITED));
    assert_eq!(v.get().preview, "STAT alarm ICU 12-A");
}

#[test]
fn numbers_are_kept_and_free_text_numbers_are_not() {
    let mut ev = canary_event();
    ev.observations = vec![obs("NM", "WBC", &["1234567"], &["HH"])];
    let v = redact(&alert(ev.clone()), Reason::New, &profile(LIMITED));
    assert_eq!(v.get().values["value"], "1234567");
    ev.observations = vec![obs("ST", "Note", &["1234567"], &["HH"])];
    let v = redact(&alert(ev.clone()), Reason::New, &profile(LIMITED));
    assert_eq!(v.get().values["value"], MARKER);
    // A numeric value equal to the patient's identifier is still removed.
    ev.patient.identifiers[0].value = "4242".into();
    ev.observations = vec![obs("NM", "X", &["4242"], &[])];
    let v = redact(&alert(ev), Reason::New, &profile(LIMITED));
    assert_eq!(v.get().values["value"], MARKER);
}

// ---- templates ----

#[test]
fn templates_reaching_past_their_profile_are_refused_naming_the_variable() {
    let limited = profile(LIMITED);
    let e = compile("page", "{{ unit }} {{ mrn }}", &limited).unwrap_err();
    match &e {
        TemplateError::Variables {
            not_allowed,
            unknown,
            profile,
            template,
        } => {
            assert_eq!(not_allowed, &["mrn"]);
            assert!(unknown.is_empty());
            assert_eq!(profile, "limited");
            assert_eq!(template, "page");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("`mrn`"), "{e}");

    // Hidden in a branch never taken, a loop or a filter argument: still found.
    for src in [
        "{% if false %}{{ patient_name }}{% endif %}",
        "{% for x in [1] %}{{ birth_date }}{% endfor %}",
        "{{ unit|default(mrn) }}",
        "{% set x = notes %}{{ x }}",
    ] {
        let e = compile("t", src, &limited).unwrap_err();
        assert!(
            matches!(&e, TemplateError::Variables { not_allowed, .. } if not_allowed.len() == 1),
            "{src}: {e:?}"
        );
    }
    // Unknown names and built-in functions are refused too.
    let e = compile("t", "{{ ssn }} {{ range(3) }} {{ mrn }}", &limited).unwrap_err();
    match &e {
        TemplateError::Variables {
            not_allowed,
            unknown,
            ..
        } => {
            assert_eq!(not_allowed, &["mrn"]);
            assert_eq!(unknown, &["range", "ssn"]);
        }
        other => panic!("{other:?}"),
    }
    // `none` allows nothing clinical.
    assert!(compile("t", "{{ unit }}", &profile(NONE)).is_err());
    // No includes, imports or macros.
    for src in [
        "{% include 'other' %}",
        "{% import 'x' as y %}",
        "{% macro m() %}{% endmacro %}",
        "{{ unit ",
    ] {
        let e = compile("t", src, &limited).unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { .. }), "{src}: {e:?}");
    }
}

#[test]
fn allowed_templates_render_with_filters_and_blank_missing_fields() {
    let limited = profile(LIMITED);
    let t = compile(
        "page",
        "{{ priority|upper }} {{ test }} {{ value }} {{ units }} {{ flag }} {{ unit }} {{ room }}-{{ bed }}\
         {% if alarm %} alarm {{ alarm }}{% endif %}{% if late %} LATE{% endif %} #{{ alert_id }} {{ rule }} ({{ reason }})",
        &limited,
    )
    .unwrap();
    assert_eq!(t.name(), "page");
    assert_eq!(t.profile(), "limited");
    let v = redact(&alert(canary_event()), Reason::New, &limited);
    assert_eq!(
        t.render(&v).unwrap(),
        "STAT Potassium 6.9 mmol/L HH ICU 12-A #7 critical-potassium (new)"
    );
    assert!(
        !t.fields_sent(&v).contains(&Field::AlarmKind),
        "absent: not sent"
    );
    // Rendering with a wider profile's view is fine.
    let wide = redact(
        &alert(canary_event()),
        Reason::New,
        &profile(CLINICIAN_SECURE),
    );
    assert!(t.render(&wide).is_ok());
    // The preview's fields leave with it.
    let t = compile("p", "{{ preview }}", &limited).unwrap();
    assert_eq!(t.fields_sent(&v), v.get().preview_fields);
}

#[test]
fn a_view_of_a_narrower_profile_is_refused() {
    let t = compile("secure", "{{ patient_name }}", &profile(CLINICIAN_SECURE)).unwrap();
    let v = redact(&alert(canary_event()), Reason::New, &profile(LIMITED));
    let e = t.render(&v).unwrap_err();
    assert!(
        matches!(
            &e,
            TemplateError::ProfileMismatch {
                variable: "patient_name",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("limited"), "{e}");
}

#[test]
fn template_errors_carry_no_phi() {
    let p = profile(CLINICIAN_SECURE);
    let v = redact(&alert(canary_event()), Reason::New, &p);
    for src in [
        "{{ notes.x.y }}",
        "{{ patient_name + 1 }}",
        "{{ mrn|int + patient_name }}",
    ] {
        let t = compile("t", src, &p).unwrap();
        let e = t.render(&v).unwrap_err();
        assert!(matches!(e, TemplateError::Render { .. }), "{src}: {e:?}");
        assert_clean("render error", &e.to_string());
        assert_clean("render error Debug", &format!("{e:?}"));
    }
    assert_clean("template Debug", &format!("{:?}", everything(&p)));
}

#[test]
fn templates_can_be_shared_between_delivery_workers() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Template>();
    shared::<Redacted<AlertView>>();
    shared::<Profile>();
}

#[test]
fn order_numbers_in_free_text_are_scrubbed() {
    let mut ev = crate::rules::tests::result_event();
    ev.order.as_mut().unwrap().placer_id = "CX1234".into();
    ev.order.as_mut().unwrap().filler_id = "JZ48213".into();
    let out = crate::redact::scrub("accession JZ48213 drawn; placer CX1234 re-run", &ev);
    assert!(!out.contains("JZ48213") && !out.contains("CX1234"), "{out}");
    assert!(out.contains("drawn"), "{out}");
}
