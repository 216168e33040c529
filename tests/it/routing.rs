//! `switchboard route` and `switchboard oncall` with the repository's demo
//! configuration, mappings and rosters: the corpus routed end to end, and
//! synthetic messages for what the corpus lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::{corpus_dir, note};

/// A Tuesday, 11:00 EDT: hospitalist week B, ICU day charge nurse, day supervisor.
const AT: &str = "2026-03-10T15:00:00Z";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn demo_config() -> PathBuf {
    repo().join("switchboard.toml")
}

fn sb(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `route --json` over `files` (one JSON object per line), with the demo config.
fn route(files: &[PathBuf], at: &str) -> (Option<i32>, Vec<Value>) {
    let config = demo_config();
    let mut args = vec![
        "route",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--at",
        at,
    ];
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(names);
    let out = sb(&args);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let values: Vec<Value> = if files.len() == 1 {
        vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))]
    } else {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    assert_eq!(values.len(), files.len(), "{}", stderr(&out));
    (out.status.code(), values)
}

fn route_one(file: &Path, at: &str) -> Value {
    let (code, mut v) = route(&[file.to_path_buf()], at);
    assert_eq!(code, Some(0), "{}", v[0]);
    v.remove(0)
}

/// `oncall ROLE --json` with the demo config.
fn oncall(config: &Path, role: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "oncall",
        role,
        "--json",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = sb(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Member ids of an `oncall` answer.
fn members(v: &Value) -> Vec<String> {
    v["on_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["member"].as_str().unwrap().to_string())
        .collect()
}

/// Member ids of a tier.
fn recipients(tier: &Value) -> Vec<String> {
    tier["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["member"].as_str().unwrap().to_string())
        .collect()
}

/// MSH fields of an HL7 text (MSH-1 is the separator: fields[n] is MSH-n
/// for n >= 2, as split by the separator).
fn segments(text: &str) -> Vec<&str> {
    text.trim_start_matches('\u{feff}')
        .split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .collect()
}

/// OBX-8 flags (first component of every repetition), per file, read
/// independently of the gateway's parser.
fn obx_flags(text: &str) -> BTreeSet<String> {
    let segs = segments(text);
    let Some(msh) = segs.iter().find(|s| s.starts_with("MSH")) else {
        return BTreeSet::new();
    };
    let sep = msh.chars().nth(3).unwrap_or('|');
    let enc: Vec<char> = msh.chars().skip(4).take(4).collect();
    let (comp, rep) = (
        enc.first().copied().unwrap_or('^'),
        enc.get(1).copied().unwrap_or('~'),
    );
    segs.iter()
        .filter(|s| s.starts_with("OBX"))
        .filter_map(|s| s.split(sep).nth(8).map(str::to_string))
        .flat_map(|f| {
            f.split(rep)
                .map(|r| r.split(comp).next().unwrap_or("").trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty())
        .collect()
}

/// The text with MSH-11 set to `P` (a training or debugging message made
/// production), to see how its content would route.
fn promote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive(['\r', '\n']).enumerate() {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = &line[body.len()..];
        if body.trim_start_matches('\u{feff}').starts_with("MSH") && i < 3 {
            let sep = body
                .trim_start_matches('\u{feff}')
                .chars()
                .nth(3)
                .unwrap_or('|');
            let mut f: Vec<String> = body.split(sep).map(str::to_string).collect();
            if f.len() > 10 {
                f[10] = "P".to_string();
            }
            out.push_str(&f.join(&sep.to_string()));
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    out
}

const CRITICAL: &[&str] = &["HH", "LL", "AA"];
const ABNORMAL: &[&str] = &["H", "L", "A"];

fn is_critical(flags: &BTreeSet<String>) -> bool {
    flags.iter().any(|f| CRITICAL.contains(&f.as_str()))
}

fn is_abnormal(flags: &BTreeSet<String>) -> bool {
    flags.iter().any(|f| ABNORMAL.contains(&f.as_str()))
}

/// Checks every alert of a routed file: covering role, priority from the
/// flags, someone in the first tier and the failsafe in the last.
fn check_alerts(name: &str, v: &Value, hospitalist: &[String], failsafe: &[String]) {
    for a in v["alerts"].as_array().unwrap() {
        let tiers = a["tiers"].as_array().unwrap();
        assert!(tiers.len() >= 2, "{name}: {a}");
        assert!(
            !recipients(&tiers[0]).is_empty(),
            "{name}: nobody in the first tier: {a}"
        );
        let last = tiers.last().unwrap();
        assert_eq!(last["target"], "failsafe", "{name}: {a}");
        assert!(!recipients(last).is_empty(), "{name}: {a}");
        for r in last["recipients"].as_array().unwrap() {
            assert_eq!(r["via"], "failsafe", "{name}: {a}");
        }
        assert_eq!(recipients(last), failsafe, "{name}: {a}");
        for t in tiers {
            assert!(t["timeout_secs"].as_u64().unwrap() > 0, "{name}: {a}");
        }
        if a["role"] == "hospitalist" {
            assert_eq!(recipients(&tiers[0]), hospitalist, "{name}: {a}");
        }
    }
}

/// Result events: a critical flag -> one STAT alert to the hospitalist, an
/// abnormal flag -> one urgent alert to the hospitalist, else nothing.
/// Returns (critical, abnormal, normal) event counts.
fn check_results(name: &str, v: &Value) -> (usize, usize, usize) {
    let mut n = (0, 0, 0);
    let alerts = v["alerts"].as_array().unwrap();
    for e in v["events"].as_array().unwrap() {
        if e["kind"] != "result" {
            continue;
        }
        let idx = e["index"].as_u64().unwrap();
        let mine: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["event"].as_u64() == Some(idx))
            .collect();
        let flags: BTreeSet<String> = e["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        if e["processing"] != "P" {
            assert!(mine.is_empty(), "{name}: test message paged: {v}");
            continue;
        }
        if is_critical(&flags) {
            n.0 += 1;
            assert_eq!(mine.len(), 1, "{name}: {v}");
            assert_eq!(mine[0]["priority"], "stat", "{name}: {v}");
            assert_eq!(mine[0]["role"], "hospitalist", "{name}: {v}");
        } else if is_abnormal(&flags) {
            n.1 += 1;
            assert_eq!(mine.len(), 1, "{name}: {v}");
            assert_eq!(mine[0]["priority"], "urgent", "{name}: {v}");
            assert_eq!(mine[0]["rule"], "abnormal-result", "{name}: {v}");
            assert_eq!(mine[0]["role"], "hospitalist", "{name}: {v}");
            assert_eq!(mine[0]["target"], "role hospitalist", "{name}: {v}");
        } else {
            n.2 += 1;
            assert!(
                mine.is_empty(),
                "{name}: a normal result raised an alert: {v}"
            );
        }
    }
    n
}

#[test]
fn every_corpus_message_routes_per_the_demo_mappings() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert!(files.len() >= 100, "corpus has {} files", files.len());
    let config = demo_config();
    let hospitalist = members(&oncall(&config, "hospitalist", &["--at", AT]));
    let supervisor = members(&oncall(&config, "house-supervisor", &["--at", AT]));
    assert_eq!(hospitalist, ["demo-hospitalist-b"]);
    assert_eq!(supervisor, ["demo-supervisor-day"]);

    // As they are, in one process.
    let (code, routed) = route(&files, AT);
    // MDHHS-OML-O21-1 has no ORC: the gateway rejects it (AE 100), so the
    // run reports a failure.
    assert_eq!(code, Some(1));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut rejected = Vec::new();
    let mut training = 0;
    let mut counts = (0, 0, 0);
    let mut alerts = 0;
    let mut flagged_files = 0;
    for (path, v) in files.iter().zip(&routed) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(v["file"], path.to_str().unwrap());
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).to_string();
        for m in v["messages"].as_array().unwrap() {
            *outcomes
                .entry(m["outcome"].as_str().unwrap().to_string())
                .or_default() += 1;
            if m["outcome"] == "rejected" {
                rejected.push(name.to_string());
            }
            if m["processing"] != "P" {
                training += 1;
            }
        }
        for e in v["events"].as_array().unwrap() {
            *kinds
                .entry(e["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
            // Never any patient data: only whether there is a patient.
            assert!(e["patient"] == "present" || e["patient"] == "absent");
        }
        // The gateway's flags agree with an independent reading of OBX-8.
        let result_flags: BTreeSet<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "result")
            .flat_map(|e| e["flags"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        if v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "result")
        {
            assert_eq!(result_flags, obx_flags(&text), "{name}");
            if is_abnormal(&result_flags) || is_critical(&result_flags) {
                flagged_files += 1;
            }
        }
        // Nothing but results raises anything with the demo mappings (no
        // ICU in the corpus): ADT is evaluated and filtered.
        for e in v["events"].as_array().unwrap() {
            if e["kind"] == "result" {
                continue;
            }
            assert_eq!(e["decision"], "filtered", "{name}: {v}");
            let icu = e["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == "icu-admission")
                .unwrap();
            let expect = if e["processing"] != "P" {
                "processing"
            } else if e["kind"] == "admit" {
                "units"
            } else {
                "kind"
            };
            assert_eq!(icu["failed"], expect, "{name}: {v}");
        }
        let c = check_results(name, v);
        counts = (counts.0 + c.0, counts.1 + c.1, counts.2 + c.2);
        check_alerts(name, v, &hospitalist, &supervisor);
        alerts += v["alerts"].as_array().unwrap().len();
        if v["alerts"].as_array().unwrap().is_empty() {
            assert!(v["filtered"].is_string(), "{name}: {v}");
        } else {
            assert!(v["filtered"].is_null(), "{name}: {v}");
        }
    }
    let observed = format!(
        "outcomes {outcomes:?}, kinds {kinds:?}, rejected {rejected:?}, non-production messages {training}, \
         production results critical/abnormal/normal {counts:?}, alerts {alerts}, files with flags {flagged_files}"
    );
    note(&format!("corpus as is: {observed}"));
    assert_eq!(outcomes.get("accepted"), Some(&42), "{observed}");
    assert_eq!(outcomes.get("filtered"), Some(&96), "{observed}");
    assert_eq!(rejected, ["MDHHS-OML-O21-1.hl7"], "{observed}");
    assert_eq!(kinds.get("result"), Some(&7), "{observed}");
    assert_eq!(kinds.get("admit"), Some(&5), "{observed}");
    assert_eq!(kinds.get("order"), Some(&17), "{observed}");
    assert_eq!(training, 9, "{observed}");
    // Only one production result carries a flag (ORU-R01-RMGEAD: H).
    assert_eq!(counts, (0, 1, 0), "{observed}");
    assert_eq!(alerts, 1, "{observed}");
    assert_eq!(flagged_files, 3, "{observed}");

    // The corpus's critical values are all in training messages: route their
    // content as production (MSH-11 set to P) to see where it would go.
    let tmp = tempfile::tempdir().unwrap();
    let mut promoted = Vec::new();
    for path in &files {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).to_string();
        let flags = obx_flags(&text);
        let is_result = segments(&text)
            .first()
            .is_some_and(|m| m.contains("ORU^R01"));
        if is_result && !flags.is_empty() {
            let p = tmp.path().join(path.file_name().unwrap());
            std::fs::write(&p, promote(&text)).unwrap();
            promoted.push(p);
        }
    }
    let (code, routed) = route(&promoted, AT);
    assert_eq!(code, Some(0));
    let mut counts = (0, 0, 0);
    let mut stat = 0;
    for (path, v) in promoted.iter().zip(&routed) {
        let name = path.file_name().unwrap().to_str().unwrap();
        for e in v["events"].as_array().unwrap() {
            assert_eq!(e["processing"], "P", "{name}");
        }
        let c = check_results(name, v);
        counts = (counts.0 + c.0, counts.1 + c.1, counts.2 + c.2);
        check_alerts(name, v, &hospitalist, &supervisor);
        stat += v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["priority"] == "stat")
            .count();
    }
    let observed = format!(
        "promoted {} files: critical/abnormal/normal {counts:?}, stat alerts {stat}",
        promoted.len()
    );
    note(&format!("corpus as production: {observed}"));
    // LRI CBC (HH, L, A): STAT; ORU-R01-01 (A) and ORU-R01-RMGEAD (H):
    // urgent; LAB-ORU-1 and -2 (N only): two normal results each.
    assert_eq!(promoted.len(), 5, "{observed}");
    assert_eq!(counts, (1, 2, 4), "{observed}");
    assert_eq!(stat, 1, "{observed}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn potassium(processing: &str, flag: &str, unit: &str) -> String {
    [
        format!("MSH|^~\\&|LAB|HOSP|SB|HOSP|20260310105500||ORU^R01|K-{processing}-{flag}|{processing}|2.5.1"),
        "PID|1||123^^^HOSP^MR||ZZTEST^DEMO".to_string(),
        format!("PV1|1|I|{unit}^12^A^HOSP|||||||||||||||||V1"),
        "OBR|1|PL1|FL1|2823-3^Potassium^LN|||20260310104500|||||||||||||||20260310105400|||F".to_string(),
        format!("OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|{flag}|||F"),
    ]
    .join("\r")
        + "\r"
}

#[test]
fn critical_potassium_is_stat_to_the_unit_hospitalist_and_training_pages_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config();
    let hospitalist = members(&oncall(&config, "hospitalist", &["--at", AT]));
    let supervisor = members(&oncall(&config, "house-supervisor", &["--at", AT]));

    let v = route_one(
        &write(tmp.path(), "k.hl7", &potassium("P", "HH", "ICU")),
        AT,
    );
    assert!(v["filtered"].is_null(), "{v}");
    assert_eq!(v["sender"], "demo-local");
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{v}");
    let a = &alerts[0];
    assert_eq!(a["rule"], "critical-potassium");
    assert_eq!(a["priority"], "stat");
    assert_eq!(a["role"], "hospitalist");
    assert_eq!(a["scope"], "ICU");
    assert_eq!(a["target"], "role hospitalist (unit ICU)");
    let tiers = a["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 3);
    assert_eq!(recipients(&tiers[0]), hospitalist);
    assert_eq!(tiers[0]["timeout_secs"], 120);
    assert_eq!(recipients(&tiers[1]), supervisor);
    assert_eq!(tiers[1]["target"], "role house-supervisor");
    assert_eq!(recipients(&tiers[2]), supervisor);
    assert_eq!(tiers[2]["recipients"][0]["via"], "failsafe");
    // The redacted preview (the demo has no backends: the default profile).
    let p = &a["previews"][0];
    assert_eq!(p["backend"], "(default)");
    assert_eq!(p["profile"], "limited");
    let preview = p["preview"].as_str().unwrap();
    assert!(preview.contains("ICU"), "{preview}");
    assert!(
        !preview.contains("ZZTEST") && !preview.contains("123"),
        "{preview}"
    );
    let fields: Vec<&str> = p["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        !fields.contains(&"mrn") && !fields.contains(&"patient_name"),
        "{fields:?}"
    );
    // Rule verdicts in order: the first match stops evaluation.
    let rules: Vec<(String, String)> = v["events"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(rules[0], ("critical-potassium".into(), "matched".into()));
    assert!(
        rules[1..].iter().all(|(_, r)| r == "not evaluated"),
        "{rules:?}"
    );
    // No patient data anywhere in the output.
    let text = v.to_string();
    assert!(
        !text.contains("ZZTEST") && !text.contains("\"123\""),
        "{text}"
    );
    assert_eq!(v["events"][0]["patient"], "present");

    // LL elsewhere: the same rule, the unscoped hospitalist.
    let v = route_one(
        &write(tmp.path(), "k2.hl7", &potassium("P", "LL", "5W")),
        AT,
    );
    assert_eq!(v["alerts"][0]["rule"], "critical-potassium");
    assert_eq!(v["alerts"][0]["scope"], "5W");
    assert_eq!(recipients(&v["alerts"][0]["tiers"][0]), hospitalist);

    // H: urgent, not STAT.
    let v = route_one(
        &write(tmp.path(), "k3.hl7", &potassium("P", "H", "ICU")),
        AT,
    );
    assert_eq!(v["alerts"][0]["rule"], "abnormal-result");
    assert_eq!(v["alerts"][0]["priority"], "urgent");
    assert_eq!(v["alerts"][0]["tiers"][0]["timeout_secs"], 600);
    // N: nothing, and the reason.
    let v = route_one(
        &write(tmp.path(), "k4.hl7", &potassium("P", "N", "ICU")),
        AT,
    );
    assert!(v["alerts"].as_array().unwrap().is_empty());
    assert_eq!(v["filtered"], "no rule matched");
    let failed: Vec<&str> = v["events"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["failed"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "flags", "flags", "flags", "kind", "kind", "kind", "kind", "kind"
        ]
    );

    // Training: no production alert, and the text says so.
    let training = write(tmp.path(), "t.hl7", &potassium("T", "HH", "ICU"));
    let v = route_one(&training, AT);
    assert!(v["alerts"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["test_alerts"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        v["filtered"].as_str().unwrap().contains("not production"),
        "{v}"
    );
    let out = sb(&[
        "route",
        "--config",
        demo_config().to_str().unwrap(),
        "--at",
        AT,
        training.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("never pages production"), "{text}");
    assert!(text.contains("nothing would be paged"), "{text}");
    assert!(!text.contains("ZZTEST"), "{text}");
}

#[test]
fn icu_admission_goes_to_the_icu_charge_nurse_by_shift() {
    let tmp = tempfile::tempdir().unwrap();
    let adt = "MSH|^~\\&|ADT|HOSP|SB|HOSP|20260310105500||ADT^A01|A1|P|2.5.1\n\
               EVN|A01\n\
               PID|1||123^^^HOSP^MR||ZZTEST^DEMO\n\
               PV1|1|I|ICU^1^A^HOSP\n";
    // LF endings and a BOM, as a file saved by an editor.
    let file = write(tmp.path(), "a01.txt", &format!("\u{feff}{adt}"));
    let day = route_one(&file, AT);
    let a = &day["alerts"][0];
    assert_eq!(a["rule"], "icu-admission");
    assert_eq!(a["priority"], "routine");
    assert_eq!(a["target"], "role charge-nurse (unit ICU)");
    assert_eq!(recipients(&a["tiers"][0]), ["demo-charge-day"]);
    assert_eq!(a["tiers"][0]["recipients"][0]["via"], "shift");
    assert_eq!(a["tiers"][0]["timeout_secs"], 1800);
    // 23:00 EDT: the night nurse.
    let night = route_one(&file, "2026-03-10T23:00:00-04:00");
    assert_eq!(
        recipients(&night["alerts"][0]["tiers"][0]),
        ["demo-charge-night"]
    );
    // The failsafe of the ICU roster is the house supervisor on duty.
    assert_eq!(
        recipients(&night["alerts"][0]["tiers"][2]),
        ["demo-supervisor-night"]
    );
}

#[test]
fn unknown_sender_and_unknown_role_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config();
    let c = config.to_str().unwrap();
    let out = sb(&["oncall", "astronaut", "--config", c]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("unknown role `astronaut`"),
        "{}",
        stderr(&out)
    );
    let file = write(tmp.path(), "k.hl7", &potassium("P", "HH", "ICU"));
    let out = sb(&[
        "route",
        "--config",
        c,
        "--sender",
        "nobody",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("unknown sender `nobody`"));
    let out = sb(&[
        "oncall",
        "hospitalist",
        "--config",
        c,
        "--at",
        "2026-03-10T10:00",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--zone"), "{}", stderr(&out));

    // A configuration whose only sender claims another MSH-3.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join(sub)).unwrap().flatten() {
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "msh3 = [\"*\"]",
        "msh3 = [\"RADIOLOGY\"]",
        1,
    );
    std::fs::write(dir.path().join("switchboard.toml"), text).unwrap();
    let cfg = dir.path().join("switchboard.toml");
    let out = sb(&[
        "route",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no configured sender claims"),
        "{v}"
    );
    // --sender names the feed explicitly.
    let out = sb(&[
        "route",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        "--sender",
        "demo-local",
        "--at",
        AT,
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["alerts"][0]["priority"], "stat");
}

#[test]
fn oncall_changes_person_at_the_weekly_handoff() {
    let config = demo_config();
    // Monday 2026-03-16 07:00 EDT (11:00 UTC), the week after spring forward.
    let before = oncall(
        &config,
        "hospitalist",
        &["--at", "2026-03-16T06:59:59-04:00"],
    );
    let after = oncall(
        &config,
        "hospitalist",
        &["--at", "2026-03-16T07:00:00-04:00"],
    );
    assert_eq!(members(&before), ["demo-hospitalist-b"]);
    assert_eq!(members(&after), ["demo-hospitalist-a"]);
    assert_eq!(before["on_call"][0]["span"]["end"], "2026-03-16T11:00:00Z");
    assert_eq!(after["on_call"][0]["span"]["start"], "2026-03-16T11:00:00Z");
    // The span before started in EST, a week earlier.
    assert_eq!(
        before["on_call"][0]["span"]["start_local"],
        "2026-03-09T07:00:00-04:00"
    );
    assert_eq!(before["on_call"][0]["via"], "rotation");
    assert_eq!(
        before["on_call"][0]["contacts"]["matrix"],
        "@demo-b:localhost"
    );
    // The same instant as a local time with a zone.
    let local = oncall(
        &config,
        "hospitalist",
        &["--at", "2026-03-16T07:00", "--zone", "America/New_York"],
    );
    assert_eq!(local["at"], "2026-03-16T11:00:00Z");
    assert_eq!(members(&local), ["demo-hospitalist-a"]);

    // RELIABILITY.md §(g): 01:55 EDT on fall-back day; the ICU night shift
    // lasts 13 h (19:00 EDT -> 07:00 EST).
    let v = oncall(
        &config,
        "charge-nurse",
        &["--scope", "ICU", "--at", "2026-11-01T01:55:00-04:00"],
    );
    assert_eq!(members(&v), ["demo-charge-night"]);
    assert_eq!(v["on_call"][0]["span"]["start"], "2026-10-31T23:00:00Z");
    assert_eq!(v["on_call"][0]["span"]["end"], "2026-11-01T12:00:00Z");
    assert_eq!(
        v["on_call"][0]["span"]["end_local"],
        "2026-11-01T07:00:00-05:00"
    );
    // A unit without its own charge nurse: the unscoped role.
    let v = oncall(
        &config,
        "charge-nurse",
        &["--scope", "5W", "--at", "2026-11-01T01:55:00-04:00"],
    );
    assert_eq!(v["roster"], "house-supervisor");
    assert_eq!(members(&v), ["demo-supervisor-night"]);
}

/// A hand-off at 02:30 local on both transition days: in Europe/Berlin 02:30
/// does not exist on 2026-03-29 (02:00 -> 03:00) and happens twice on
/// 2026-10-25 (03:00 -> 02:00). The demo rosters hand off at 07:00 and
/// 19:00, so this uses its own roster.
#[test]
fn handoff_at_0230_on_both_dst_transition_days() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rosters")).unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(
        dir.path().join("rosters/nights.toml"),
        r#"
name = "nights"
timezone = "Europe/Berlin"

[[members]]
id = "doc-x"
display = "Doc X (fictional)"
contacts = { matrix = "@x:localhost" }

[[members]]
id = "doc-y"
display = "Doc Y (fictional)"
contacts = { matrix = "@y:localhost" }

[[roles]]
name = "night-doctor"

[[rotations]]
role = "night-doctor"
members = ["doc-x", "doc-y"]
start = "2026-01-01T02:30"
length_days = 1

[failsafe]
member = "doc-x"
"#,
    )
    .unwrap();
    let text = std::fs::read_to_string(demo_config()).unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), text).unwrap();
    let cfg = dir.path().join("switchboard.toml");
    let who = |at: &str| -> Value { oncall(&cfg, "night-doctor", &["--at", at]) };

    // Spring: 02:30 does not exist; the hand-off is at 03:00 CEST = 01:00 UTC.
    let a = who("2026-03-29T00:59:59Z");
    let b = who("2026-03-29T01:00:00Z");
    assert_ne!(members(&a), members(&b));
    assert_eq!(a["on_call"][0]["span"]["end"], "2026-03-29T01:00:00Z");
    assert_eq!(b["on_call"][0]["span"]["start"], "2026-03-29T01:00:00Z");
    assert_eq!(
        b["on_call"][0]["span"]["start_local"],
        "2026-03-29T03:00:00+02:00"
    );
    // The outgoing span was 23 h long (02:30 CET -> 03:00 CEST).
    assert_eq!(a["on_call"][0]["span"]["start"], "2026-03-28T01:30:00Z");
    // A local query inside the gap resolves like a boundary would.
    let out = sb(&[
        "oncall",
        "night-doctor",
        "--config",
        cfg.to_str().unwrap(),
        "--at",
        "2026-03-29T02:30",
        "--zone",
        "Europe/Berlin",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("DST gap"));

    // Autumn: 02:30 happens twice; the earliest (02:30 CEST = 00:30 UTC) is
    // the hand-off, and the second 02:30 (CET) is already the next person.
    let a = who("2026-10-25T00:29:59Z");
    let b = who("2026-10-25T00:30:00Z");
    let c = who("2026-10-25T01:30:00Z");
    assert_ne!(members(&a), members(&b));
    assert_eq!(members(&b), members(&c));
    assert_eq!(a["on_call"][0]["span"]["end"], "2026-10-25T00:30:00Z");
    assert_eq!(b["on_call"][0]["span"]["start"], "2026-10-25T00:30:00Z");
    // That shift lasts 25 h: to 02:30 CET on 2026-10-26.
    assert_eq!(b["on_call"][0]["span"]["end"], "2026-10-26T01:30:00Z");
    let local = oncall(
        &cfg,
        "night-doctor",
        &["--at", "2026-10-25T02:30", "--zone", "Europe/Berlin"],
    );
    assert_eq!(local["at"], "2026-10-25T00:30:00Z");
    assert_eq!(members(&local), members(&b));
}

#[test]
fn fhir_observation_routes_like_hl7() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = r#"{
  "resourceType": "Observation",
  "status": "final",
  "code": { "coding": [{ "system": "http://loinc.org", "code": "2823-3" }] },
  "valueQuantity": { "value": 6.9, "unit": "mmol/L" },
  "interpretation": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "HH" }] }]
}"#;
    let file = write(tmp.path(), "k.json", obs);
    let v = route_one(&file, AT);
    assert_eq!(v["format"], "fhir");
    assert_eq!(v["events"][0]["kind"], "result");
    assert_eq!(v["alerts"][0]["priority"], "stat", "{v}");
    assert!(!recipients(&v["alerts"][0]["tiers"][0]).is_empty());
}
