//! IHE PCD ACM alarm status reports (ORA^R41) to the alarm source, through
//! the gateway: an alarm source simulator sends an ORU^R40 over MLLP, the
//! alert is delivered to a webhook receiver and accepted through the
//! operator API, and the simulator — an MLLP server on loopback — receives
//! one ORA^R41 per status, in order, checks each, and acknowledges it. A
//! source that is down, drops a report or refuses one loses nothing else.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use switchboard::app::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::delivery::{Receiver, free_port, wait_until};
use crate::support::{Mllp, ack_code, field, frame, segments};

const OPS_TOKEN: &str = "ops-token-for-alarm-status-tests";

/// How the simulator answers one report.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// An acknowledgement with this MSA-1.
    Ack(&'static str),
    /// Close the connection without answering.
    Drop,
}

/// An alarm source's MLLP listener: records every frame, answers from a
/// script (else `AA`).
#[derive(Clone, Default)]
struct Source {
    seen: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl Source {
    fn listen(&self, l: tokio::net::TcpListener) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One complete frame: SB ... EB CR.
                        if let Some(start) = buf.iter().position(|b| *b == 0x0B)
                            && let Some(end) = buf[start..].iter().position(|b| *b == 0x1C)
                            && buf.len() > start + end + 1
                        {
                            let msg =
                                String::from_utf8(buf[start + 1..start + end].to_vec()).unwrap();
                            buf.drain(..start + end + 2);
                            me.seen.lock().unwrap().push(msg.clone());
                            let answer = me
                                .script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or(Answer::Ack("AA"));
                            let code = match answer {
                                Answer::Drop => return,
                                Answer::Ack(code) => code,
                            };
                            let ack = format!(
                                "MSH|^~\\&|MON_GW|ICU|SWITCHBOARD||20261123120000||ACK^R41^ACK|ACK{}|P|2.6\rMSA|{code}|{}\r",
                                me.seen.lock().unwrap().len(),
                                field(&msg, "MSH", 10)
                            );
                            if s.write_all(&frame(ack.as_bytes())).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
    }

    async fn start(&self) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        self.listen(l);
        addr
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn setup(dir: &Path, hook_port: u16, source: SocketAddr) -> std::path::PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("rosters/icu.toml"),
        format!(
            r#"
name = "icu"
timezone = "America/New_York"

[[members]]
id = "rn-a"
display = "RN A (fictional)"
contacts = {{ webhook = "http://127.0.0.1:{hook_port}/hook/rn-a" }}
ids = [{{ value = "9990000123", authority = "NPI" }}]

[[members]]
id = "rn-b"
display = "RN B (fictional)"
contacts = {{ webhook = "http://127.0.0.1:{hook_port}/hook/rn-b" }}

[[roles]]
name = "charge-nurse"

[[rotations]]
role = "charge-nurse"
members = ["rn-a"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "rn-b"
"#
        ),
    )
    .unwrap();
    // The high-priority rule of the demo mappings (mappings/device-alarms.toml),
    // unscoped: one charge nurse here.
    std::fs::write(
        dir.join("mappings/alarms.toml"),
        r#"
[[rules]]
name = "high-priority-alarm"
match = { kind = "alarm", alarm_priority = ["PH"] }
route = { role = "charge-nurse", priority = "stat", escalation = "stat-short" }

[escalations.stat-short]
tiers = [{ route = true, timeout_secs = 600 }, { failsafe = true, timeout_secs = 600 }]
"#,
    )
    .unwrap();
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[alerts.alarm_sources]]\nsender = \"monitors\"\nmllp = \"{source}\"\napplication = \"SWITCHBOARD\"\nfacility = \"HOSP\"\n\
retry_initial_ms = 200\nretry_max_secs = 1\nanswer_timeout_secs = 2\nconnect_timeout_secs = 1\n\
[[senders]]\nname = \"monitors\"\nmsh3 = [\"MON_GW\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\
[[operators]]\nname = \"ops\"\ntokens_sha256 = [\"{}\"]\nnetworks = [\"127.0.0.0/8\"]\npermissions = [\"alerts:ack\", \"alerts:read\"]\n\
[[backends]]\nname = \"hook\"\nkind = \"webhook\"\ncontact = \"webhook\"\nprofile = \"limited\"\nretry_initial_ms = 200\nretry_max_secs = 2\n",
        hex::encode(Sha256::digest(OPS_TOKEN.as_bytes()))
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A high-priority heart-rate alarm (IHE PCD-04), enhanced mode.
fn r40(control_id: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|MON_GW^0123456789ABCDEF^EUI-64|ICU|SWITCHBOARD|HOSP|{now}||ORU^R40^ORU_R40|{control_id}|P|2.6|||AL|NE\r\
PID|||ZZMRN77^^^HOSP^MR||ZZCANARY^PATIENT\r\
PV1||I|ICU^5^1\r\
OBR|1|PL^GW|ALARM-42^GW|196616^MDC_EVT_ALARM^MDC|||{now}\r\
OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||MON-7^EUI-64\r\
OBX|2|ST|196648^MDC_EVT_HI^MDC|1.3.1.150456.1|HR high|||PH~SP|||F\r\
OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.3.1.150456.2|180|264864^/min^MDC|50-120|H|||F\r\
OBX|4|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.3.1.150456.3|start||||||F\r\
OBX|5|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.3.1.150456.4|active||||||F\r"
    )
}

fn query<T: rusqlite::types::FromSql>(dir: &Path, sql: &str) -> Vec<T> {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("data/journal.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn accept(g: &Gateway) {
    let auth = format!("Bearer {OPS_TOKEN}");
    let r = crate::fhir::request(
        g.http_addr(),
        "POST",
        "/api/v1/alerts/1/ack",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"action":"accept","member":"rn-a"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Raises the alarm and waits until the webhook delivered it.
async fn raise(g: &Gateway, dir: &Path, rx: &Receiver) {
    let mut c = Mllp::connect(g.mllp_addr()).await;
    assert_eq!(ack_code(&c.roundtrip(&r40("R40-1")).await), "CA");
    wait_until("the webhook was never called", 20, || !rx.seen().is_empty()).await;
    wait_until("not marked delivered", 10, || {
        query::<String>(dir, "SELECT state FROM notifications") == ["delivered"]
    })
    .await;
}

/// Checks one ORA^R41 and returns (MSH-10, status word).
fn check(msg: &str) -> (String, String) {
    let names: Vec<&str> = segments(msg).iter().map(|s| &s[..3]).collect();
    assert_eq!(names, ["MSH", "MSA", "PRT", "OBR", "OBX"], "{msg:?}");
    assert_eq!(field(msg, "MSH", 9), "ORA^R41^ORA_R41");
    assert_eq!(field(msg, "MSH", 3), "SWITCHBOARD");
    assert_eq!(field(msg, "MSH", 4), "HOSP");
    assert_eq!(
        field(msg, "MSH", 5),
        "MON_GW^0123456789ABCDEF^EUI-64",
        "the source's own MSH-3"
    );
    assert_eq!(field(msg, "MSH", 6), "ICU");
    assert_eq!(field(msg, "MSH", 11), "P", "the original's processing id");
    assert_eq!(field(msg, "MSA", 1), "AA");
    assert_eq!(
        field(msg, "MSA", 2),
        "R40-1",
        "the original R40's control id"
    );
    assert_eq!(
        field(msg, "OBR", 3),
        "ALARM-42",
        "the alarm the source named"
    );
    assert_eq!(field(msg, "OBR", 4), "196648^MDC_EVT_HI^MDC");
    assert_eq!(
        field(msg, "PRT", 5),
        "9990000123^RN A (fictional)^^^^^^^NPI"
    );
    assert_eq!(field(msg, "OBX", 3), "ALERT_STATUS^Alert Status^L");
    let upper = msg.to_uppercase();
    assert!(
        !upper.contains("ZZCANARY") && !upper.contains("ZZMRN"),
        "nothing of the patient goes back: {msg:?}"
    );
    (field(msg, "MSH", 10), field(msg, "OBX", 5))
}

#[tokio::test]
async fn the_alarm_source_gets_delivered_then_accepted_and_acknowledges_each() {
    let src = Source::default();
    let addr = src.start().await;
    let rx = Receiver::default();
    let hook = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(switchboard::config::load(&setup(dir.path(), hook, addr)).unwrap())
        .await
        .unwrap();
    raise(&g, dir.path(), &rx).await;
    wait_until("no Delivered report", 10, || src.seen().len() == 1).await;
    accept(&g).await;
    wait_until("no Accepted report", 10, || src.seen().len() == 2).await;
    let got: Vec<(String, String)> = src.seen().iter().map(|m| check(m)).collect();
    assert_eq!(got[0].1, "Delivered");
    assert_eq!(got[1].1, "Accepted");
    assert_ne!(got[0].0, got[1].0, "a fresh MSH-10 each");
    // Acknowledged: done, audited, never sent again.
    wait_until("reports not done", 10, || {
        query::<String>(dir.path(), "SELECT state FROM status_reports ORDER BY id")
            == ["done", "done"]
    })
    .await;
    let sent: Vec<i64> = query(
        dir.path(),
        "SELECT COUNT(*) FROM audit WHERE action = 'status.sent'",
    );
    assert_eq!(sent, [2]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(src.seen().len(), 2);
    g.shutdown().await;
}

#[tokio::test]
async fn a_source_that_is_down_across_a_restart_gets_every_report_in_order_when_it_is_back() {
    // Down: nothing listens on its port yet.
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rx = Receiver::default();
    let hook = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(switchboard::config::load(&setup(dir.path(), hook, addr)).unwrap())
        .await
        .unwrap();
    raise(&g, dir.path(), &rx).await;
    accept(&g).await;
    wait_until("no retry recorded while down", 10, || {
        query::<i64>(
            dir.path(),
            "SELECT attempts FROM status_reports ORDER BY id LIMIT 1",
        )
        .first()
        .is_some_and(|n| *n >= 1)
    })
    .await;
    let waiting: Vec<String> = query(dir.path(), "SELECT status FROM status_reports ORDER BY id");
    assert_eq!(waiting, ["delivered", "accepted"]);
    // The gateway restarts meanwhile: the queue is in the journal.
    g.shutdown().await;
    let g =
        Gateway::start(switchboard::config::load(&dir.path().join("switchboard.toml")).unwrap())
            .await
            .unwrap();
    // Back — and the first report it gets is dropped without an answer.
    let src = Source::default();
    src.script.lock().unwrap().push_back(Answer::Drop);
    src.listen(tokio::net::TcpListener::bind(addr).await.unwrap());
    wait_until("not every report arrived", 20, || src.seen().len() == 3).await;
    let got: Vec<(String, String)> = src.seen().iter().map(|m| check(m)).collect();
    let words: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(
        words,
        ["Delivered", "Delivered", "Accepted"],
        "in order, nothing lost"
    );
    assert_eq!(got[0].0, got[1].0, "a resend keeps its MSH-10");
    wait_until("reports not done", 10, || {
        query::<String>(dir.path(), "SELECT state FROM status_reports ORDER BY id")
            == ["done", "done"]
    })
    .await;
    g.shutdown().await;
}

#[tokio::test]
async fn a_refused_report_is_dead_lettered_and_the_next_one_still_goes() {
    let src = Source::default();
    src.script.lock().unwrap().push_back(Answer::Ack("AE"));
    let addr = src.start().await;
    let rx = Receiver::default();
    let hook = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(switchboard::config::load(&setup(dir.path(), hook, addr)).unwrap())
        .await
        .unwrap();
    raise(&g, dir.path(), &rx).await;
    wait_until("the refused report was not dead-lettered", 10, || {
        query::<String>(dir.path(), "SELECT state FROM status_reports ORDER BY id") == ["dead"]
    })
    .await;
    accept(&g).await;
    wait_until("the next report did not go", 10, || src.seen().len() == 2).await;
    assert_eq!(check(&src.seen()[1]).1, "Accepted");
    wait_until("not done", 10, || {
        query::<String>(dir.path(), "SELECT state FROM status_reports ORDER BY id")
            == ["dead", "done"]
    })
    .await;
    let dead: Vec<String> = query(
        dir.path(),
        "SELECT outcome FROM audit WHERE action = 'status.dead'",
    );
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("AE"), "{dead:?}");
    let errors: Vec<Option<String>> = query(
        dir.path(),
        "SELECT last_error FROM status_reports ORDER BY id",
    );
    assert_eq!(errors[0].as_deref(), Some("alarm source answered AE"));
    g.shutdown().await;
}
