//! End-to-end tests of the parse pipeline: synthetic fixtures for every
//! supported message, every error path, the corpus, and a no-panic fuzz.

use super::*;
use crate::event::{ClinicalEvent, EventKind, Priority, Processing, ProviderRole, ResultStatus};

const NY: chrono_tz::Tz = chrono_tz::America::New_York;

fn ctx() -> EventContext<'static> {
    EventContext {
        sender: "lab-a",
        timezone: NY,
    }
}

/// Full pipeline on CR-joined segments.
fn run(segments: &[&str]) -> Result<Vec<ClinicalEvent>, ParseError> {
    let text = segments.join("\r");
    let frame = decode_frame(text.as_bytes(), Charset::Utf8)?;
    let split = split(&frame.text)?;
    assert_eq!(split.messages.len(), 1);
    let msg = split.messages[0];
    let header = Header::parse(msg)?;
    assert_eq!(
        support(&header.message_code, &header.trigger),
        Support::Supported
    );
    events(msg, &header, &ctx())
}

fn err(segments: &[&str]) -> (ErrorCode, String) {
    let e = run(segments).unwrap_err();
    // Display never quotes content: only code, text, location, detail.
    assert!(e.to_string().starts_with("HL7 error "));
    (e.code, e.location.to_err2('^'))
}

fn msh(kind: &str) -> String {
    format!("MSH|^~\\&|SAPP|SFAC|RAPP|RFAC|20240115120000||{kind}|CTL1|P|2.5.1")
}

const PID: &str =
    "PID|1|ALT9^^^OLD|MRN1^^^HOSP&1.2&ISO^MR~SSN9^^^SSA^SS||ZZTEST^PATIENT^Q||19700101|F";
const PV1: &str = "PV1|1|I|WARD1^R12^B3^MAIN||||111^DOC^ATTENDING^A^^^^^NPI&x&y^^^^NPI|222^DOC^REFERRING|333^DOC^CONSULTING||||||||444^DOC^ADMITTING||V100^^^HOSP^VN";

#[test]
fn adt_admit_full() {
    let evs = run(&[
        &msh("ADT^A01^ADT_A01"),
        "EVN|A01|20240115113000||||20240115110000-0500",
        PID,
        PV1,
        "ROL|1|AD|PP^Primary^HL70443|555^CARE^TEAM",
        "NTE|1||first\\.br\\line~second",
    ])
    .unwrap();
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.kind, EventKind::Admit);
    assert_eq!(e.source.sender, "lab-a");
    assert_eq!(
        (e.source.message_type.as_str(), e.source.trigger.as_str()),
        ("ADT", "A01")
    );
    assert_eq!(e.source.control_id, "CTL1");
    assert_eq!(e.source.index, 0);
    assert_eq!(e.processing, Processing::Production);
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T16:00:00+00:00"
    );
    let ids = &e.patient.identifiers;
    assert_eq!(ids.len(), 3);
    assert_eq!(
        (
            ids[0].value.as_str(),
            ids[0].authority.as_str(),
            ids[0].type_code.as_str()
        ),
        ("MRN1", "HOSP", "MR")
    );
    assert_eq!(ids[1].value, "SSN9");
    assert_eq!(
        (ids[2].value.as_str(), ids[2].authority.as_str()),
        ("ALT9", "OLD")
    );
    let n = e.patient.name.as_ref().unwrap();
    assert_eq!(
        (n.family.as_str(), n.given.as_str(), n.middle.as_str()),
        ("ZZTEST", "PATIENT", "Q")
    );
    assert_eq!(e.patient.birth_date.as_deref(), Some("19700101"));
    assert_eq!(e.patient.sex.as_deref(), Some("F"));
    assert_eq!(e.patient_class, "I");
    let l = e.location.as_ref().unwrap();
    assert_eq!(
        (
            l.unit.as_str(),
            l.room.as_str(),
            l.bed.as_str(),
            l.facility.as_str()
        ),
        ("WARD1", "R12", "B3", "MAIN")
    );
    assert!(e.prior_location.is_none());
    assert_eq!(e.visit.as_ref().unwrap().value, "V100");
    let roles: Vec<_> = e.providers.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            ProviderRole::Attending,
            ProviderRole::Referring,
            ProviderRole::Consulting,
            ProviderRole::Admitting,
            ProviderRole::CareTeam
        ]
    );
    assert_eq!(e.providers[0].id.value, "111");
    assert_eq!(e.providers[0].id.authority, "NPI");
    assert_eq!(e.providers[0].name.family, "DOC");
    assert_eq!(e.providers[0].name.given, "ATTENDING");
    assert_eq!(
        (
            e.providers[4].role_code.as_str(),
            e.providers[4].id.value.as_str()
        ),
        ("PP", "555")
    );
    assert_eq!(e.notes, vec!["first\nline\nsecond".to_string()]);
    assert_eq!(e.priority, Priority::Unspecified);
}

#[test]
fn adt_every_trigger() {
    for (t, k) in [
        ("A01", EventKind::Admit),
        ("A02", EventKind::Transfer),
        ("A03", EventKind::Discharge),
        ("A04", EventKind::Register),
        ("A06", EventKind::OutpatientToInpatient),
        ("A07", EventKind::InpatientToOutpatient),
        ("A08", EventKind::Update),
        ("A11", EventKind::CancelAdmit),
        ("A12", EventKind::CancelTransfer),
        ("A13", EventKind::CancelDischarge),
    ] {
        let evs = run(&[
            &msh(&format!("ADT^{t}")),
            &format!("EVN|{t}|20240115113000"),
            PID,
            "PV1|1|E|ER^1^2||||||||||||||||||||||||||||||||||||||||||||",
        ])
        .unwrap();
        assert_eq!(evs.len(), 1, "{t}");
        assert_eq!(evs[0].kind, k, "{t}");
        // EVN-2 local time in New York
        assert_eq!(
            evs[0].occurred_at.unwrap().to_rfc3339(),
            "2024-01-15T16:30:00+00:00"
        );
    }
    // no EVN: MSH-7; transfer keeps prior location; bare segment ids are empty segments
    let evs = run(&[&msh("ADT^A02"), PID, "PV1|1|I|NEW^1^1|||OLD^2^2", "PV2"]).unwrap();
    assert_eq!(
        evs[0].occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T17:00:00+00:00"
    );
    assert_eq!(evs[0].prior_location.as_ref().unwrap().unit, "OLD");
}

#[test]
fn adt_a17_two_patients() {
    let evs = run(&[
        &msh("ADT^A17"),
        "EVN|A17|20240115113000",
        "PID|1||MRN1^^^H^MR||ZZTEST^ONE",
        "PV1|1|I|W^1^A",
        "PID|2||MRN2^^^H^MR||ZZTEST^TWO",
        "PV1|1|I|W^1^B",
    ])
    .unwrap();
    assert_eq!(evs.len(), 2);
    assert!(evs.iter().all(|e| e.kind == EventKind::BedSwap));
    assert_eq!(evs[0].patient.identifiers[0].value, "MRN1");
    assert_eq!(evs[1].patient.identifiers[0].value, "MRN2");
    assert_eq!(evs[1].location.as_ref().unwrap().bed, "B");
    assert_eq!((evs[0].source.index, evs[1].source.index), (0, 1));
    assert_eq!(
        err(&[
            &msh("ADT^A17"),
            "PID|1||MRN1",
            "PV1|1|I",
            "PID|2||",
            "PV1|1|I"
        ]),
        (ErrorCode::RequiredFieldMissing, "PID^2^3".into())
    );
}

#[test]
fn adt_a40_merge() {
    let evs = run(&[
        &msh("ADT^A40"),
        "EVN|A40|20240115113000",
        "PID|1||NEW1^^^H^MR||ZZTEST^MERGED",
        "MRG|OLD1^^^H^MR~OLD2^^^H^MR",
        "PID|2||NEW2^^^H^MR",
        "MRG|OLD3^^^H^MR",
    ])
    .unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].kind, EventKind::Merge);
    let m: Vec<_> = evs[0]
        .merged_identifiers
        .iter()
        .map(|i| i.value.as_str())
        .collect();
    assert_eq!(m, ["OLD1", "OLD2"]);
    assert_eq!(evs[1].merged_identifiers[0].value, "OLD3");
    assert_eq!(
        err(&[&msh("ADT^A40"), PID]),
        (ErrorCode::SegmentSequence, "MRG^1".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A40"), PID, "MRG|X", "PID|2||Y"]),
        (ErrorCode::SegmentSequence, "MRG^2".into())
    );
}

#[test]
fn adt_errors() {
    assert_eq!(
        err(&[&msh("ADT^A01"), "EVN|A01"]),
        (ErrorCode::SegmentSequence, "PID^1".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), "PID|1||^^^H"]),
        (ErrorCode::RequiredFieldMissing, "PID^1^3".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), PID, "PV1|1|Q"]),
        (ErrorCode::TableValueNotFound, "PV1^1^2".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), "EVN|A01|2024011599", PID]),
        (ErrorCode::DataType, "EVN^1^2".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), "EVN|A01|||||x", PID]),
        (ErrorCode::DataType, "EVN^1^6".into())
    );
    let bad7 = "MSH|^~\\&|S|F|R|RF|notadate||ADT^A01|C|P|2.5";
    assert_eq!(err(&[bad7, PID]), (ErrorCode::DataType, "MSH^1^7".into()));
    // a segment hl7-parser cannot read is reported, not silently dropped
    assert_eq!(
        err(&[&msh("ADT^A01"), PID, "PV1^1"]),
        (ErrorCode::SegmentSequence, "PV1^1".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), PID, "P^D|1"]),
        (ErrorCode::SegmentSequence, "".into())
    );
    assert_eq!(
        err(&[&msh("ADT^A01"), PID, "NTE", "OBX#1"]),
        (ErrorCode::SegmentSequence, "OBX^1".into())
    );
}

const OBR: &str = "OBR|1|PL1^PLACER|FL1^FILLER|24331-1^Lipid panel^LN|||20240115100000-0500|||||||||777^ORDER^DOC|||||||||F";

#[test]
fn oru_result() {
    let evs = run(&[
        &msh("ORU^R01^ORU_R01"),
        PID,
        PV1,
        "ORC|RE|PL1|FL1||CM||^^^^^S||20240115|||777^ORDER^DOC",
        OBR,
        "NTE|1||panel \\T\\ note",
        "OBX|1|NM|2093-3^Cholesterol^LN||250|mg/dL^milligram per deciliter^UCUM|<200|H~HH|||F|||20240115093000-0500",
        "OBX|2|NM|2571-8^Triglyceride^LN||40||>50|L^Low^HL70078~LL^LL|||C",
        "OBX|3|CWE|X^Y^LN||POS^Positive^L~NEG^^L|||AA|||W",
        "OBX|4|ST|Z^Z^LN||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41\\|||A^A^HL7nnnn~B^B|||P",
    ])
    .unwrap();
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.kind, EventKind::Result);
    assert_eq!(e.priority, Priority::Stat);
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T15:00:00+00:00"
    );
    let o = e.order.as_ref().unwrap();
    assert_eq!(
        (
            o.control.as_str(),
            o.placer_id.as_str(),
            o.filler_id.as_str()
        ),
        ("RE", "PL1", "FL1")
    );
    assert_eq!(
        (
            o.service.code.as_str(),
            o.service.text.as_str(),
            o.service.system.as_str()
        ),
        ("24331-1", "Lipid panel", "LN")
    );
    assert_eq!(o.result_status, "F");
    // ORC-12 and OBR-16 name the same provider: kept once
    assert_eq!(
        e.providers
            .iter()
            .filter(|p| p.role == ProviderRole::Ordering)
            .count(),
        1
    );
    assert_eq!(e.notes, vec!["panel & note".to_string()]);
    let obs = &e.observations;
    assert_eq!(obs.len(), 4);
    assert_eq!(obs[0].values, vec!["250"]);
    assert_eq!(obs[0].flags, vec!["H", "HH"]);
    assert_eq!(obs[0].units.as_ref().unwrap().code, "mg/dL");
    assert_eq!(obs[0].reference_range, "<200");
    assert_eq!(obs[0].status, ResultStatus::Final);
    assert_eq!(
        obs[0].observed_at.unwrap().to_rfc3339(),
        "2024-01-15T14:30:00+00:00"
    );
    assert_eq!(obs[1].flags, vec!["L", "LL"]);
    assert_eq!(obs[1].status, ResultStatus::Corrected);
    assert_eq!(obs[2].values, vec!["Positive", "NEG"]);
    assert_eq!(obs[2].flags, vec!["AA"]);
    assert_eq!(obs[2].status, ResultStatus::WrongPatient);
    assert_eq!(obs[3].values, vec!["a|b^c&d~e\\fA"]);
    assert_eq!(obs[3].flags, vec!["A", "B"]);
    assert_eq!(obs[3].status, ResultStatus::Preliminary);
    assert_eq!(
        (
            obs[0].set_id.as_str(),
            obs[0].value_type.as_str(),
            obs[0].code.code.as_str()
        ),
        ("1", "NM", "2093-3")
    );
}

#[test]
fn oru_groups_and_priorities() {
    let evs = run(&[
        &msh("ORU^R01"),
        PID,
        "OBR|1|||A^A^L|||20240115",
        "TQ1|1||||||||S",
        "OBX|1|NM|A^A^L||1",
        "OBR|2|||B^B^L|||||||||||||||||||||||^^^^^A",
        "OBX|1|NM|B^B^L||2",
        "OBR|3|||C^C^L|R",
        "OBR|4|||D^D^L",
    ])
    .unwrap();
    assert_eq!(evs.len(), 4);
    let p: Vec<_> = evs.iter().map(|e| e.priority).collect();
    assert_eq!(
        p,
        [
            Priority::Stat,
            Priority::Urgent,
            Priority::Routine,
            Priority::Unspecified
        ]
    );
    assert_eq!(evs[0].observations.len(), 1);
    assert_eq!(evs[1].observations[0].values, vec!["2"]);
    assert!(evs[2].observations.is_empty());
    // OBR-7 date only, local: midnight New York
    assert_eq!(
        evs[0].occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T05:00:00+00:00"
    );
}

#[test]
fn oru_errors() {
    assert_eq!(
        err(&[&msh("ORU^R01"), PID]),
        (ErrorCode::SegmentSequence, "OBR^1".into())
    );
    assert_eq!(
        err(&[&msh("ORU^R01"), OBR]),
        (ErrorCode::SegmentSequence, "PID^1".into())
    );
    assert_eq!(
        err(&[&msh("ORU^R01"), PID, OBR, "OBX|1|NM|A||1", "OBX|2|NM|A||<5"]),
        (ErrorCode::DataType, "OBX^2^5".into())
    );
    assert_eq!(
        err(&[&msh("ORU^R01"), PID, OBR, "OBX|1|NM|A||1~1.2.3"]),
        (ErrorCode::DataType, "OBX^1^5".into())
    );
    assert_eq!(
        err(&[
            &msh("ORU^R01"),
            PID,
            OBR,
            "OBX|1|ST|A||x||||||F|||2024-01-01"
        ]),
        (ErrorCode::DataType, "OBX^1^14".into())
    );
    assert_eq!(
        err(&[&msh("ORU^R01"), PID, "OBR|1|||A|||yesterday"]),
        (ErrorCode::DataType, "OBR^1^7".into())
    );
}

#[test]
fn orders() {
    let evs = run(&[
        &msh("ORM^O01"),
        PID,
        PV1,
        "ORC|NW|P1^PL|F1^FL||SC||^^^^^S|||||888^ORDERING^DOC",
        "OBR|1|||71045^Chest X-ray^C4||||||||||||999^OTHER^DOC",
        "NTE|1||order note",
        "ORC|CA|P2|||CA",
        "TQ1|1||||||||A",
        "RXO|RX1^Drug^L",
        "ORC|XO|P3",
        "OBR|1|||X^X^L|||||||||||||||||||||||^^^^^R",
    ])
    .unwrap();
    assert_eq!(evs.len(), 3);
    assert!(
        evs.iter()
            .all(|e| e.kind == EventKind::Order && e.patient.identifiers[0].value == "MRN1")
    );
    let o = evs[0].order.as_ref().unwrap();
    assert_eq!(
        (
            o.control.as_str(),
            o.placer_id.as_str(),
            o.filler_id.as_str(),
            o.status.as_str()
        ),
        ("NW", "P1", "F1", "SC")
    );
    assert_eq!(o.service.text, "Chest X-ray");
    assert_eq!(evs[0].priority, Priority::Stat);
    let ordering: Vec<_> = evs[0]
        .providers
        .iter()
        .filter(|p| p.role == ProviderRole::Ordering)
        .map(|p| p.id.value.as_str())
        .collect();
    assert_eq!(ordering, ["888", "999"]);
    assert_eq!(evs[0].notes, vec!["order note".to_string()]);
    assert_eq!(evs[0].location.as_ref().unwrap().unit, "WARD1");
    assert_eq!(evs[1].order.as_ref().unwrap().control, "CA");
    assert_eq!(evs[1].order.as_ref().unwrap().service.code, "RX1");
    assert_eq!(evs[1].priority, Priority::Urgent);
    assert_eq!(evs[2].priority, Priority::Routine);
    assert_eq!(
        evs[2].occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T17:00:00+00:00"
    );

    let evs = run(&[
        &msh("OML^O21^OML_O21"),
        PID,
        "ORC|NW|P9|||||||20240115080000",
        "OBR|1|||LAB^Lab^L",
    ])
    .unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].order.as_ref().unwrap().service.code, "LAB");
    assert_eq!(
        evs[0].occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T13:00:00+00:00"
    );

    assert_eq!(
        err(&[&msh("ORM^O01"), PID, "OBR|1"]),
        (ErrorCode::SegmentSequence, "ORC^1".into())
    );
    assert_eq!(
        err(&[&msh("ORM^O01"), PID, "ORC|NW", "ORC||X"]),
        (ErrorCode::RequiredFieldMissing, "ORC^2^1".into())
    );
    assert_eq!(
        err(&[&msh("OML^O21"), "ORC|NW"]),
        (ErrorCode::SegmentSequence, "PID^1".into())
    );
    assert_eq!(
        err(&[&msh("ORM^O01"), PID, "ORC|NW||||||||bad"]),
        (ErrorCode::DataType, "ORC^1^9".into())
    );
}

#[test]
fn alarm_r40() {
    let evs = run(&[
        "MSH|^~\\&|GW^EUI|FAC|AM|RF|20240115120000-0500||ORU^R40^ORU_R40|A1|P|2.6|||AL|NE",
        "PID|||||ZZTEST^PATIENT",
        "PV1||I|ICU^5^1",
        "OBR|1|PL^GW|ALARM-42^GW|196616^MDC_EVT_ALARM^MDC|||20240115115959-0500",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||MON-7^EUI-64",
        "OBX|2|ST|196648^MDC_EVT_HI^MDC|1.3.1.150456.1|HR high|||PH~SP|||F",
        "OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.3.1.150456.2|180|264864^/min^MDC|50-120|H|||F",
        "OBX|4|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.3.1.150456.3|start||||||F",
        "OBX|5|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.3.1.150456.4|active||||||F",
        "OBX|6|ST|68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC|1.3.1.150456.5|enabled||||||F",
    ])
    .unwrap();
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.kind, EventKind::Alarm);
    assert_eq!(e.priority, Priority::Stat);
    let a = e.alarm.as_ref().unwrap();
    assert_eq!(a.id, "ALARM-42");
    assert_eq!(
        (a.kind.code.as_str(), a.kind.text.as_str()),
        ("196648", "MDC_EVT_HI")
    );
    assert_eq!(a.phase, "start");
    assert_eq!(a.state, "active");
    assert_eq!(a.priority, "PH");
    assert_eq!(a.source, "MON-7");
    assert_eq!(e.location.as_ref().unwrap().unit, "ICU");
    assert!(e.patient.identifiers.is_empty());
    assert_eq!(e.patient.name.as_ref().unwrap().family, "ZZTEST");
    let codes: Vec<_> = e
        .observations
        .iter()
        .map(|o| o.code.code.as_str())
        .collect();
    assert_eq!(codes, ["147842", "68483"]);
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-01-15T16:59:59+00:00"
    );

    // no patient, no OBX-18: source from the device row, PM -> urgent
    let evs = run(&[
        &msh("ORU^R40"),
        "OBR|1||AL-1|196616^MDC_EVT_ALARM^MDC",
        "OBX|1||70000^MDC_DEV_PUMP^MDC|1.0.0.0",
        "OBX|2|ST|0^MDC_EVT_OCCL^MDC|1.1.1.1.1||||PM",
        "OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.1.1.1.3|end",
    ])
    .unwrap();
    let a = evs[0].alarm.as_ref().unwrap();
    assert_eq!(
        (a.source.as_str(), a.phase.as_str(), a.priority.as_str()),
        ("MDC_DEV_PUMP", "end", "PM")
    );
    assert_eq!(evs[0].priority, Priority::Urgent);
    assert_eq!(
        err(&[&msh("ORU^R40"), "PID|||"]),
        (ErrorCode::SegmentSequence, "OBR^1".into())
    );
}

#[test]
fn support_table() {
    assert_eq!(support("ADT", "A17"), Support::Supported);
    assert_eq!(support("ADT", "A05"), Support::UnsupportedTrigger);
    assert_eq!(support("ORU", "R40"), Support::Supported);
    assert_eq!(support("ORU", "R30"), Support::UnsupportedTrigger);
    assert_eq!(support("ORM", "O01"), Support::Supported);
    assert_eq!(support("OML", "O21"), Support::Supported);
    assert_eq!(support("OML", "O33"), Support::UnsupportedTrigger);
    assert_eq!(support("ACK", "A01"), Support::UnsupportedType);
    assert_eq!(support("SIU", "S12"), Support::UnsupportedType);
}

#[test]
fn processing_and_custom_separators() {
    let t = "MSH#$*!@#S#F#R#RF#20240115##ADT$A08#C7#T#2.5\rPID###M1$$$H$MR##ZZ!S!TEST$PAT";
    let h = Header::parse(t).unwrap();
    let evs = events(t, &h, &ctx()).unwrap();
    assert_eq!(evs[0].processing, Processing::Training);
    assert_eq!(evs[0].patient.name.as_ref().unwrap().family, "ZZ$TEST");
    assert_eq!(evs[0].patient.identifiers[0].authority, "H");
    // v2.7+ truncation character in MSH-2
    let t = "MSH|^~\\&#|S|F|R|RF|20240115||ADT^A04|C8|P|2.7\rPID|||M2^^^H";
    let h = Header::parse(t).unwrap();
    assert_eq!(
        (h.sending_application.as_str(), h.trigger.as_str()),
        ("S", "A04")
    );
    let evs = events(t, &h, &ctx()).unwrap();
    assert_eq!(evs[0].kind, EventKind::Register);
    assert_eq!(evs[0].patient.identifiers[0].value, "M2");
}

#[test]
fn batch_pipeline_and_two_msh() {
    let text = format!(
        "FHS|^~\\&|F|FF|||20240115||||FC1\rBHS|^~\\&|B|BF|||||||BC1\r{}\r{PID}\r{}\r{PID}\rBTS|2\rFTS|1",
        msh("ADT^A08"),
        msh("ADT^A03")
    );
    let f = decode_frame(text.replace('\r', "\r\n").as_bytes(), Charset::Ascii).unwrap();
    let s = split(&f.text).unwrap();
    assert_eq!(s.file.as_ref().unwrap().control_id, "FC1");
    assert_eq!(s.batch.as_ref().unwrap().control_id, "BC1");
    assert_eq!(s.messages.len(), 2);
    let kinds: Vec<_> = s
        .messages
        .iter()
        .map(|m| events(m, &Header::parse(m).unwrap(), &ctx()).unwrap()[0].kind)
        .collect();
    assert_eq!(kinds, [EventKind::Update, EventKind::Discharge]);
    let two = format!("{}\n{PID}\n{}\n{PID}\n", msh("ADT^A01"), msh("ADT^A04"));
    let f = decode_frame(two.as_bytes(), Charset::Utf8).unwrap();
    assert_eq!(split(&f.text).unwrap().messages.len(), 2);
}

#[test]
fn latin1_end_to_end() {
    let mut bytes = msh("ADT^A01").into_bytes();
    bytes.extend_from_slice(b"||||||8859/1\rPID|||M1||ZZTEST^Ren\xE9");
    let f = decode_frame(&bytes, Charset::Utf8).unwrap();
    let h = Header::parse(&f.text).unwrap();
    assert_eq!(h.charset, "8859/1");
    let evs = events(&f.text, &h, &ctx()).unwrap();
    assert_eq!(evs[0].patient.name.as_ref().unwrap().given, "René");
}

// ---------------------------------------------------------------- corpus

fn corpus_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/hl7v2/fhir-converter"
    ))
}

fn corpus() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = corpus_dir();
    let rd = std::fs::read_dir(&dir).ok()?;
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "hl7"))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect();
    files.sort();
    Some(files)
}

/// Corpus files whose content is genuinely invalid for our rules, with the
/// exact error they must produce.
fn expected_corpus_failure(name: &str) -> Option<(ErrorCode, &'static str)> {
    match name {
        // The line break before ORC is missing: `GT1|...|Walmart^LORC|NW|...`,
        // so the message has no ORC segment at all.
        "MDHHS-OML-O21-1.hl7" => Some((ErrorCode::SegmentSequence, "ORC^1")),
        _ => None,
    }
}

#[test]
fn corpus_files() {
    let Some(files) = corpus() else {
        // Written to stderr directly: libtest's capture would hide a print!.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "corpus not found at {}: skipping corpus test",
            corpus_dir().display()
        );
        return;
    };
    assert_eq!(files.len(), 139);
    let mut supported = 0;
    for (name, bytes) in &files {
        let f = decode_frame(bytes, Charset::Utf8).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines = String::from_utf8_lossy(bytes)
            .split(['\r', '\n'])
            .filter(|l| !l.trim_start_matches('\u{feff}').trim().is_empty())
            .count();
        assert_eq!(f.text.split('\r').count(), lines, "{name}: segment count");
        let s = split(&f.text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.messages.len(), 1, "{name}");
        let h = Header::parse(s.messages[0]).unwrap_or_else(|e| panic!("{name}: {e}"));
        if support(&h.message_code, &h.trigger) != Support::Supported {
            continue;
        }
        supported += 1;
        let result = events(s.messages[0], &h, &ctx());
        if let Some((code, loc)) = expected_corpus_failure(name) {
            let e = result.expect_err(name);
            assert_eq!(
                (e.code, e.location.to_err2('^').as_str()),
                (code, loc),
                "{name}"
            );
            continue;
        }
        let evs = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!evs.is_empty(), "{name}");
        let expect = match (h.message_code.as_str(), h.trigger.as_str()) {
            ("ORU", "R01") => EventKind::Result,
            ("ORU", _) => EventKind::Alarm,
            ("ORM" | "OML", _) => EventKind::Order,
            ("ADT", "A40") => EventKind::Merge,
            ("ADT", "A17") => EventKind::BedSwap,
            ("ADT", "A01") => EventKind::Admit,
            ("ADT", "A02") => EventKind::Transfer,
            ("ADT", "A03") => EventKind::Discharge,
            ("ADT", "A04") => EventKind::Register,
            ("ADT", "A06") => EventKind::OutpatientToInpatient,
            ("ADT", "A07") => EventKind::InpatientToOutpatient,
            ("ADT", "A08") => EventKind::Update,
            ("ADT", "A11") => EventKind::CancelAdmit,
            ("ADT", "A12") => EventKind::CancelTransfer,
            _ => EventKind::CancelDischarge,
        };
        assert!(evs.iter().all(|e| e.kind == expect), "{name}");
        assert!(
            evs.iter().all(|e| !e.patient.identifiers.is_empty()),
            "{name}"
        );
    }
    assert!(supported >= 30, "only {supported} supported corpus files");
}

// ---------------------------------------------------------------- fuzz

/// Every stage on arbitrary input: may fail, must not panic.
fn pipeline(bytes: &[u8]) {
    let Ok(f) = decode_frame(bytes, Charset::Utf8) else {
        return;
    };
    let Ok(s) = split(&f.text) else {
        return;
    };
    for m in s.messages {
        let sniffed = Header::sniff(m);
        let _ = sniffed.enhanced_mode();
        let h = Header::parse(m).unwrap_or(sniffed);
        let _ = support(&h.message_code, &h.trigger);
        // also on headers that did not validate: events must stay total
        if let Err(e) = events(m, &h, &ctx()) {
            let _ = (e.to_string(), e.location.to_err2('^'));
        }
    }
}

#[test]
fn no_panic_on_random_input() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(20_240_115);
    let mut seeds: Vec<Vec<u8>> = corpus()
        .unwrap_or_default()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    seeds.push(
        [
            msh("ORU^R40"),
            "OBR|1||A|B".into(),
            "OBX|1|NM|68481^MDC_ATTR_EVENT_PHASE^MDC|1.1|x|||PH".into(),
        ]
        .join("\r")
        .into_bytes(),
    );
    seeds.push(
        [msh("ADT^A40"), PID.into(), "MRG|X".into(), PV1.into()]
            .join("\r")
            .into_bytes(),
    );
    seeds.push(
        format!(
            "FHS|^~\\&\rBHS|^~\\&\r{}\r{PID}\rBTS|1\rFTS|1",
            msh("ADT^A17")
        )
        .into_bytes(),
    );
    const ALPHABET: &[u8] = b"|^~\\&\r\n#MSHPIDOBXRCV0123456789.+-XFSTEbr \xC3\xA9\xE9\xFF";
    for i in 0..20_000u32 {
        let mut b: Vec<u8> = if i % 10 == 0 {
            (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        } else {
            let seed = &seeds[rng.random_range(0..seeds.len())];
            let mut b = seed.clone();
            for _ in 0..rng.random_range(1..6) {
                if b.is_empty() {
                    break;
                }
                let at = rng.random_range(0..b.len());
                match rng.random_range(0..4) {
                    0 => b[at] = ALPHABET[rng.random_range(0..ALPHABET.len())],
                    1 => b.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
                    2 => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        };
        if i % 7 == 0 {
            let cut = rng.random_range(0..=b.len());
            b.truncate(cut);
        }
        pipeline(&b);
    }
}
