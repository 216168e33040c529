//! Interoperability with MLLP clients nobody here wrote (RECIPES.md):
//! python-hl7's `mllp_send` (PyPI `hl7==0.4.5`) and `node-hl7-client` 3.2.0
//! (npm), installed on demand by `tests/interop/setup.sh` into
//! `target/interop/`, and driven against a gateway started in-process.
//!
//! A missing `python3`/`node`/`npm`, or an install that fails because the
//! registry is unreachable, FAILS these tests with the reason: they never
//! pass silently.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::certs::{self, Pki};
use crate::support::{self, EB, SB, ack_code, adt_a01, field, journal_rows, oru, segments};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target dir>/interop`: outside the repository's tracked files.
fn interop_root() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) if Path::new(t).is_absolute() => PathBuf::from(t),
        Some(t) => manifest_dir().join(t),
        None => manifest_dir().join("target"),
    };
    target.join("interop")
}

/// Runs `tests/interop/setup.sh WHAT ROOT` (install or reuse).
fn setup(what: &str) -> Result<(), String> {
    let script = manifest_dir().join("tests/interop/setup.sh");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg(what)
        .arg(interop_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {what} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "interop: {what} clients installed in {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// Installs (once per test process; setup.sh locks across processes) and
/// returns the path of `mllp_send`.
fn mllp_send_bin() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY
        .get_or_init(|| setup("python").map(|()| interop_root().join("venv/bin/mllp_send")))
        .clone()
        .unwrap_or_else(|e| panic!("python-hl7 (mllp_send) is required for this test: {e}"))
}

/// Installs (once) and returns the folder holding `node_modules/node-hl7-client`.
fn node_modules_dir() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY
        .get_or_init(|| setup("node").map(|()| interop_root().join("node")))
        .clone()
        .unwrap_or_else(|e| panic!("node-hl7-client is required for this test: {e}"))
}

/// Every MLLP frame payload in `bytes` (mllp_send prints the raw ACK bytes).
fn frames_in(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(start) = rest.iter().position(|b| *b == SB) {
        let Some(len) = rest[start..].iter().position(|b| *b == EB) else {
            panic!(
                "unterminated frame in mllp_send output: {:?}",
                String::from_utf8_lossy(rest)
            );
        };
        out.push(String::from_utf8_lossy(&rest[start + 1..start + len]).into_owned());
        rest = &rest[start + len..];
    }
    out
}

/// Runs `mllp_send [--loose] -f FILE -p PORT 127.0.0.1`; returns the ACKs it printed.
async fn mllp_send(port: u16, file: &Path, loose: bool) -> Vec<String> {
    let bin = mllp_send_bin();
    let mut cmd = tokio::process::Command::new(&bin);
    if loose {
        cmd.arg("--loose");
    }
    cmd.arg("-f")
        .arg(file)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("mllp_send {} did not finish in 30 s", file.display()))
        .expect("run mllp_send");
    assert!(
        out.status.success(),
        "mllp_send -f {} failed ({}): {}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    frames_in(&out.stdout)
}

/// Writes `messages` as a "loose" file: LF line endings, one blank line
/// between messages (what people paste into files).
fn write_loose(dir: &Path, name: &str, messages: &[String]) -> PathBuf {
    let text: Vec<String> = messages.iter().map(|m| m.replace('\r', "\n")).collect();
    let path = dir.join(name);
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

#[tokio::test]
async fn python_hl7_mllp_send_single_message_gets_aa() {
    let gw = support::start_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_loose(dir.path(), "one.hl7", &[oru("PYHL7-1")]);

    let acks = mllp_send(gw.addr().port(), &file, true).await;
    assert_eq!(acks.len(), 1, "one ACK printed: {acks:?}");
    assert_eq!(ack_code(&acks[0]), "AA", "{:?}", acks[0]);
    assert_eq!(field(&acks[0], "MSA", 2), "PYHL7-1", "MSA-2 = MSH-10");
    let rows = journal_rows(&gw.journal_path(), "PYHL7-1");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].fate.as_str(), "accepted");
}

#[tokio::test]
async fn python_hl7_mllp_send_several_messages_and_a_batch_from_one_file() {
    let gw = support::start_gateway().await;
    let dir = tempfile::tempdir().unwrap();

    // --loose: the file is split at each `MSH|^~\&|`, one frame per message,
    // all over one connection.
    let ids: Vec<String> = (1..=5).map(|n| format!("PYMULTI-{n}")).collect();
    let messages: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| if i % 2 == 0 { oru(id) } else { adt_a01(id) })
        .collect();
    let file = write_loose(dir.path(), "several.hl7", &messages);
    let acks = mllp_send(gw.addr().port(), &file, true).await;
    assert_eq!(acks.len(), ids.len(), "one ACK per message: {acks:?}");
    for (ack, id) in acks.iter().zip(&ids) {
        assert_eq!(ack_code(ack), "AA", "{id}: {ack:?}");
        assert_eq!(&field(ack, "MSA", 2), id, "ACKs come back in order");
    }
    assert_eq!(
        gw.gateway
            .metrics()
            .connections_accepted
            .load(Ordering::Relaxed),
        1,
        "mllp_send sends a whole file over one connection"
    );

    // Without --loose mllp_send takes already framed data: one frame holding
    // a BHS/BTS batch is answered by one acknowledgement batch.
    let batch = format!(
        "BHS|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||||PYBATCH-1\r{}{}{}BTS|3\r",
        oru("PYBATCH-M1"),
        adt_a01("PYBATCH-M2"),
        oru("PYBATCH-M3")
    );
    let framed = dir.path().join("batch.mllp");
    std::fs::write(&framed, support::frame(batch.as_bytes())).unwrap();
    let acks = mllp_send(gw.addr().port(), &framed, false).await;
    assert_eq!(acks.len(), 1, "one acknowledgement batch: {acks:?}");
    let msas: Vec<&str> = segments(&acks[0])
        .into_iter()
        .filter(|s| s.starts_with("MSA"))
        .collect();
    assert_eq!(
        msas,
        vec![
            "MSA|AA|PYBATCH-M1",
            "MSA|AA|PYBATCH-M2",
            "MSA|AA|PYBATCH-M3"
        ],
        "{:?}",
        acks[0]
    );
    for id in ["PYBATCH-M1", "PYBATCH-M2", "PYBATCH-M3"] {
        assert_eq!(journal_rows(&gw.journal_path(), id).len(), 1, "{id}");
    }
}

/// Normalises a corpus file as `mllp_send --loose` does (LF/CRLF -> CR,
/// trailing whitespace trimmed), after dropping a UTF-8 byte order mark:
/// `--loose` requires the file to start with `MSH|^~\&|`.
fn normalised(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw));
    text.replace("\r\n", "\r")
        .replace('\n', "\r")
        .trim_end_matches(['\r', '\n', ' '])
        .to_string()
}

#[tokio::test]
async fn python_hl7_mllp_send_corpus_files_get_the_same_answer_as_raw_tcp() {
    let Some(corpus) = support::corpus_dir() else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    files.sort();
    // Only messages that get an answer on the connection: MSH-15 empty
    // (original mode) or AL. With NE (or ER/SU on the other outcome) no
    // accept acknowledgement is due, and mllp_send would wait forever.
    let answered: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, normalised(&std::fs::read(p).unwrap()))
        })
        .filter(|(_, m)| matches!(field(m, "MSH", 15).trim(), "" | "AL"))
        .collect();
    assert!(
        answered.len() >= 12,
        "corpus too small: {} usable files",
        answered.len()
    );
    // 12 files spread evenly over the sorted list: deterministic, and every
    // message family (ADT, MDM, ORU, OML, SIU, VXU, ...) is likely hit.
    let chosen: Vec<&(String, String)> = (0..12)
        .map(|i| &answered[i * answered.len() / 12])
        .collect();

    // One gateway per client, so each sees every message for the first time.
    let gw_python = support::start_gateway().await;
    let gw_raw = support::start_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let mut summary = Vec::new();
    for (name, message) in chosen {
        assert!(
            message.starts_with("MSH|^~\\&|"),
            "{name}: not an MSH message"
        );
        assert_eq!(
            message.matches("\rMSH|").count(),
            0,
            "{name}: one message per file expected"
        );
        let control_id = field(message, "MSH", 10);
        let copy = dir.path().join(name);
        std::fs::write(&copy, message).unwrap();

        let acks = mllp_send(gw_python.addr().port(), &copy, true).await;
        assert_eq!(acks.len(), 1, "{name}: one ACK from mllp_send: {acks:?}");
        let mut raw = gw_raw.connect().await;
        let raw_ack = raw.roundtrip(message).await;

        let (py_code, raw_code) = (ack_code(&acks[0]), ack_code(&raw_ack));
        assert_eq!(
            py_code, raw_code,
            "{name}: mllp_send got {:?}, raw TCP got {raw_ack:?}",
            acks[0]
        );
        assert_eq!(
            field(&acks[0], "MSA", 2),
            control_id,
            "{name}: MSA-2 = MSH-10"
        );
        assert_eq!(
            field(&raw_ack, "MSA", 2),
            control_id,
            "{name}: MSA-2 = MSH-10"
        );
        assert!(
            ["AA", "AE", "AR", "CA", "CE", "CR"].contains(&py_code.as_str()),
            "{name}: an acknowledgement code expected, got {py_code}"
        );
        summary.push(format!("{name}={py_code}"));
    }
    eprintln!("corpus via mllp_send: {}", summary.join(" "));
}

/// Runs tests/interop/node_send.js; returns (MSA-1, MSA-2) per ACK.
async fn node_send(
    port: u16,
    messages: &[String],
    tls: Option<(&Pki, &certs::ClientFiles)>,
) -> Vec<(String, String)> {
    let modules = node_modules_dir();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("messages.json");
    std::fs::write(&list, serde_json::to_string(messages).unwrap()).unwrap();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(manifest_dir().join("tests/interop/node_send.js"))
        .arg("--modules")
        .arg(&modules)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .arg("--messages")
        .arg(&list)
        .args(["--timeout-ms", "45000"]);
    if let Some((pki, client)) = tls {
        cmd.arg("--ca")
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key)
            .args(["--servername", "localhost"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("node_send.js did not finish in 60 s")
        .unwrap_or_else(|e| panic!("cannot run node (is it installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node_send.js failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("node_send.js printed a non-JSON line {l:?}: {e}"));
            (
                v["msa1"].as_str().unwrap_or_default().to_string(),
                v["msa2"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn twenty(prefix: &str) -> (Vec<String>, Vec<String>) {
    let ids: Vec<String> = (1..=20).map(|n| format!("{prefix}-{n:02}")).collect();
    let messages = ids
        .iter()
        .enumerate()
        .map(|(i, id)| if i % 3 == 2 { adt_a01(id) } else { oru(id) })
        .collect();
    (ids, messages)
}

fn assert_all_aa(got: &[(String, String)], ids: &[String]) {
    assert_eq!(got.len(), ids.len(), "one ACK per message: {got:?}");
    for ((msa1, msa2), id) in got.iter().zip(ids) {
        assert_eq!(msa1, "AA", "{id}: {got:?}");
        assert_eq!(msa2, id, "MSA-2 must echo MSH-10, in order: {got:?}");
    }
}

#[tokio::test]
async fn node_hl7_client_sends_20_messages_over_one_connection() {
    let gw = support::start_gateway().await;
    let (ids, messages) = twenty("NODE");
    let got = node_send(gw.addr().port(), &messages, None).await;
    assert_all_aa(&got, &ids);
    assert_eq!(
        gw.gateway
            .metrics()
            .connections_accepted
            .load(Ordering::Relaxed),
        1,
        "node-hl7-client must have kept ONE connection"
    );
    for id in &ids {
        assert_eq!(journal_rows(&gw.journal_path(), id).len(), 1, "{id}");
    }
}

#[tokio::test]
async fn node_hl7_client_over_mutual_tls_with_the_allowed_certificate() {
    let pki = Pki::generate();
    let gw = certs::start_tls_gateway(&pki, true).await;
    let (ids, messages) = twenty("NODETLS");
    let got = node_send(gw.addr().port(), &messages, Some((&pki, &pki.lab))).await;
    assert_all_aa(&got, &ids);
    assert_eq!(gw.handshake_failures(), 0);
    assert_eq!(
        gw.gateway
            .metrics()
            .connections_accepted
            .load(Ordering::Relaxed),
        1,
        "node-hl7-client must have kept ONE TLS connection"
    );
    let rows = journal_rows(&gw.journal_path(), &ids[0]);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].peer.contains(certs::LAB_ID), "{:?}", rows[0].peer);
}
