//! The load tool `switchboard-load` against the real gateway: every answer
//! checked, every acknowledged message journaled, over kept connections
//! with pipelining, one connection per message, and mutual TLS; and against
//! a misbehaving server, where it must report errors and exit 1.
//! Correctness only: no timing is asserted (figures live in BENCHMARKS.md).

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use switchboard::listener::codec::{Frame, MllpCodec, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::Decoder;

use crate::certs::{Pki, journal_len, start_tls_gateway};
use crate::support::start_gateway;

/// Runs the load tool with `args` and `--json`; its exit status and report.
async fn load(args: &[&str]) -> (std::process::ExitStatus, serde_json::Value, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-load"))
        .args(args)
        .arg("--json")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("switchboard-load finished within 120 s")
        .expect("switchboard-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {stdout:?} / {stderr}"));
    (out.status, report, stderr)
}

fn n(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {report}"))
}

fn assert_clean(report: &serde_json::Value, messages: u64, stderr: &str) {
    assert_eq!(n(report, "errors"), 0, "{report}\n{stderr}");
    assert_eq!(n(report, "accepted"), messages, "{report}\n{stderr}");
    assert_eq!(n(report, "rejected"), 0, "{report}\n{stderr}");
    assert_eq!(n(report, "messages"), messages);
    for f in [
        "seconds",
        "msgs_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
    ] {
        let v = report[f].as_f64().unwrap_or(-1.0);
        assert!(v >= 0.0, "{f} is a number >= 0 in {report}");
    }
    let (p50, p99, p999, max) = (
        report["p50_ms"].as_f64().unwrap(),
        report["p99_ms"].as_f64().unwrap(),
        report["p999_ms"].as_f64().unwrap(),
        report["max_ms"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{report}");
}

/// Journal rows whose control id starts with `run_id`.
fn journal_rows_of_run(path: &Path, run_id: &str) -> usize {
    use switchboard::journal::{MessageQuery, SqliteStorage, Storage};
    let mut s = SqliteStorage::open_read_only(path, None).expect("open journal");
    s.messages(&MessageQuery {
        limit: 1_000_000,
        ..Default::default()
    })
    .expect("list journal rows")
    .iter()
    .filter(|m| m.control_id.starts_with(&format!("{run_id}-")))
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_mix_over_four_connections_is_all_acknowledged_and_journaled() {
    let gw = start_gateway().await;
    let addr = gw.addr().to_string();
    let ledger = gw.dir.path().join("acks.tsv");
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "2000",
        "--connections",
        "4",
        "--window",
        "8",
        "--threads",
        "2",
        "--run-id",
        "PIPE",
        "--ledger",
        ledger.to_str().unwrap(),
    ])
    .await;
    assert!(status.success(), "exit {status}: {report}\n{stderr}");
    assert_clean(&report, 2000, &stderr);
    assert_eq!(n(&report, "connections"), 4);
    assert_eq!(n(&report, "window"), 8);
    assert_eq!(report["target"], addr.as_str());

    assert_eq!(journal_len(&gw.journal_path()), 2000);
    assert_eq!(journal_rows_of_run(&gw.journal_path(), "PIPE"), 2000);

    // The ack ledger: one line per answer, each control id once, all AA.
    let text = std::fs::read_to_string(&ledger).expect("ledger written");
    let mut ids: Vec<&str> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "ledger line {line:?}");
        assert_eq!(cols[0], "LOADGEN^HOSP");
        assert!(cols[1].starts_with("PIPE-"), "{line:?}");
        assert_eq!(cols[2], "AA", "{line:?}");
        assert!(cols[3].ends_with('Z') && cols[3].contains('T'), "{line:?}");
        ids.push(cols[1]);
    }
    assert_eq!(ids.len(), 2000);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "every control id acknowledged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_message_and_warm_up() {
    let gw = start_gateway().await;
    let addr = gw.addr().to_string();
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "50",
        "--connections",
        "4",
        "--one-per-connection",
        "--warmup",
        "10",
        "--run-id",
        "ONE",
    ])
    .await;
    assert!(status.success(), "exit {status}: {report}\n{stderr}");
    assert_clean(&report, 50, &stderr);
    assert_eq!(n(&report, "window"), 1);
    // Warm-up messages are real messages too: 10 + 50 journaled.
    assert_eq!(journal_rows_of_run(&gw.journal_path(), "ONE"), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_run_is_all_acknowledged() {
    let pki = Pki::generate();
    let gw = start_tls_gateway(&pki, true).await;
    let addr = gw.addr().to_string();
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "200",
        "--connections",
        "2",
        "--window",
        "4",
        "--tls",
        "--ca",
        pki.ca.to_str().unwrap(),
        "--server-name",
        "localhost",
        "--cert",
        pki.lab.cert.to_str().unwrap(),
        "--key",
        pki.lab.key.to_str().unwrap(),
        "--sending-app",
        "LAB",
        "--run-id",
        "TLS",
    ])
    .await;
    assert!(status.success(), "exit {status}: {report}\n{stderr}");
    assert_clean(&report, 200, &stderr);
    assert_eq!(report["tls"], true);
    assert_eq!(gw.journal_len(), 200);

    // Without a client certificate the gateway refuses the handshake: every
    // message is an error and the tool says so with exit status 1.
    let (status, report, _) = load(&[
        "--addr",
        &addr,
        "--messages",
        "5",
        "--connections",
        "1",
        "--tls",
        "--ca",
        pki.ca.to_str().unwrap(),
        "--server-name",
        "localhost",
        "--sending-app",
        "LAB",
        "--timeout-secs",
        "5",
    ])
    .await;
    assert_eq!(status.code(), Some(1), "{report}");
    assert!(n(&report, "errors") > 0, "{report}");
    assert_eq!(n(&report, "accepted"), 0, "{report}");
}

/// A server that answers message k of a connection with k acknowledgements
/// (the kept-connection behaviour peers/README.md reports for
/// node-hl7-server), each carrying the message's MSH-10.
async fn repeating_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut codec = MllpCodec::new(1 << 20, false);
                let mut buf = BytesMut::new();
                let mut k = 0;
                loop {
                    while let Ok(Some(Frame::Message(m))) = codec.decode(&mut buf) {
                        k += 1;
                        let text = String::from_utf8_lossy(&m);
                        let id = text.split('|').nth(9).unwrap_or("").to_string();
                        let ack = format!(
                            "MSH|^~\\&|PEER|X|LOADGEN|HOSP|20261123120000||ACK|A{k}|P|2.5.1\rMSA|AA|{id}\r"
                        );
                        for _ in 0..k {
                            if s.write_all(&frame(ack.as_bytes())).await.is_err() {
                                return;
                            }
                        }
                    }
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_answers_on_a_kept_connection_are_errors_and_exit_1() {
    let addr = repeating_server().await.to_string();
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "20",
        "--connections",
        "1",
        "--timeout-secs",
        "5",
    ])
    .await;
    assert_eq!(status.code(), Some(1), "{report}\n{stderr}");
    assert!(n(&report, "errors") > 0, "{report}");
    assert!(
        n(&report, "accepted") < 20,
        "surplus answers must not count as accepted: {report}"
    );

    // The same server is correct with one connection per message.
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "20",
        "--connections",
        "2",
        "--one-per-connection",
    ])
    .await;
    assert!(status.success(), "exit {status}: {report}\n{stderr}");
    assert_clean(&report, 20, &stderr);
}

#[tokio::test]
async fn end_to_end_run_receives_every_alert_once_at_its_webhook() {
    // The load tool is the gateway's webhook backend: each critical result
    // must come back as exactly one alert, matched by its room.
    let e2e_port = crate::delivery::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::delivery::setup(dir.path(), e2e_port);
    let (mllp, http) = (crate::delivery::free_port(), crate::delivery::free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_HOOK_SECRET", "e2e")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let addr = format!("127.0.0.1:{mllp}");
    let listen = format!("127.0.0.1:{e2e_port}");
    let (status, report, stderr) = load(&[
        "--addr",
        &addr,
        "--messages",
        "300",
        "--connections",
        "2",
        "--rate",
        "150",
        "--e2e-listen",
        &listen,
        "--e2e-wait-secs",
        "60",
    ])
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert!(status.success(), "{report}\n{stderr}");
    assert_clean(&report, 300, &stderr);
    let e = &report["e2e"];
    assert_eq!(e["sent"], 300, "{report}");
    assert_eq!(e["received"], 300, "{report}");
    assert_eq!(e["missing"], 0, "{report}");
    assert_eq!(e["repeated"], 0, "{report}");
    assert_eq!(e["unmatched"], 0, "{report}");
    assert!(e["p99_ms"].as_f64().unwrap() > 0.0, "{report}");
    // Paced at 150/s, 300 messages take about two seconds, not less.
    assert!(report["seconds"].as_f64().unwrap() >= 1.8, "{report}");
}

#[tokio::test]
async fn a_run_with_a_ledger_exits_when_its_last_answer_is_written() {
    // Regression: keeping the run's plan (which holds the ledger's sender)
    // alive after the run left the ledger waiting for more lines forever.
    let gw = start_gateway().await;
    let addr = gw.addr().to_string();
    let ledger = gw.dir.path().join("short.tsv");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-load"))
        .args(["--addr", &addr, "--messages", "20", "--connections", "1"])
        .arg("--ledger")
        .arg(&ledger)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the load tool exits once the ledger is written")
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap().lines().count(),
        20
    );
}
