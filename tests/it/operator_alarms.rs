//! Operator alarms on their own channel (issue #8 "downtime safety"): a
//! silent feed, a dead backend and an exhausted escalation each raise exactly
//! one alarm at the operator endpoint (signed), a feed that speaks again
//! clears its alarm with one notice, and the heartbeat keeps coming. The
//! real binary, a real HTTP receiver on loopback, real time (seconds).

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::delivery::{Receiver, Seen, free_port, oru, wait_until};
use crate::support::{Mllp, ack_code};

const SECRET: &str = "operator-secret-for-tests";

fn setup(dir: &Path, ops_port: u16) -> std::path::PathBuf {
    for d in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // The only backend points at a port nobody listens on: it is dead.
    let dead = free_port();
    std::fs::write(
        dir.join("rosters/ward.toml"),
        format!(
            r#"
name = "ward"
timezone = "America/New_York"

[[members]]
id = "rn-a"
contacts = {{ webhook = "http://127.0.0.1:{dead}/hook/rn-a" }}

[[members]]
id = "rn-b"
contacts = {{ webhook = "http://127.0.0.1:{dead}/hook/rn-b" }}

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
    std::fs::write(
        dir.join("mappings/m.toml"),
        r#"
[[rules]]
name = "icu-critical"
match = { kind = "result", flags = ["HH"], units = ["ICU"] }
route = { person = "rn-a", priority = "stat", escalation = "fast" }

[escalations.fast]
tiers = [{ route = true, timeout_secs = 1 }, { failsafe = true, timeout_secs = 1 }]
"#,
    )
    .unwrap();
    let text = format!(
        "rosters_dir = \"rosters\"\nmappings_dir = \"mappings\"\n\
[storage]\ndata_dir = \"data\"\n[mllp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
[reload]\nwatch_files = false\n\
[[senders]]\nname = \"lab\"\nmsh3 = [\"*\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\nsilent_after_secs = 3\n\
[[backends]]\nname = \"hook\"\nkind = \"webhook\"\ncontact = \"webhook\"\nprofile = \"limited\"\n\
retry_initial_ms = 100\nretry_max_secs = 1\nmax_attempts = 2\ncircuit_failures = 2\ncircuit_open_secs = 1\n\
[operator_alarms]\nurl = \"http://127.0.0.1:{ops_port}/ops\"\nsecret_env = \"SB_TEST_OPS_SECRET\"\n\
heartbeat_url = \"http://127.0.0.1:{ops_port}/beat\"\nheartbeat_secs = 1\ncheck_secs = 1\n"
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn verify(seen: &Seen) {
    let ts = seen.header("X-Switchboard-Timestamp").expect("timestamp");
    let sig = seen.header("X-Switchboard-Signature").expect("signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&seen.body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

/// (alarm, subject, state) of every notice the operator endpoint got.
fn notices(rx: &Receiver) -> Vec<(String, String, String)> {
    rx.seen()
        .iter()
        .filter(|s| s.path == "/ops")
        .map(|s| {
            verify(s);
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            (
                v["alarm"].as_str().unwrap().to_string(),
                v["subject"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(n: &[(String, String, String)], alarm: &str, state: &str) -> usize {
    n.iter().filter(|x| x.0 == alarm && x.2 == state).count()
}

#[tokio::test]
async fn a_silent_feed_a_dead_backend_and_an_exhausted_escalation_each_raise_exactly_one_operator_alarm()
 {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let (mllp, http) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_OPS_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    let mut c = loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break Mllp::connect(addr).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(ack_code(&c.roundtrip(&oru("OPS1", "ICU")).await), "AA");

    // The escalation runs out (tier 1 s, failsafe 1 s), the backend never
    // answers, and the feed says nothing more.
    wait_until("all three alarms", 40, || {
        let n = notices(&rx);
        count(&n, "escalation_exhausted", "raised") >= 1
            && count(&n, "backend_down", "raised") >= 1
            && count(&n, "dead_letter", "raised") >= 1
            && count(&n, "feed_silent", "raised") >= 1
    })
    .await;
    // Conditions still hold over several more checks: nothing repeats.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = notices(&rx);
    assert_eq!(count(&n, "escalation_exhausted", "raised"), 1, "{n:?}");
    assert_eq!(count(&n, "backend_down", "raised"), 1, "{n:?}");
    assert_eq!(count(&n, "dead_letter", "raised"), 1, "{n:?}");
    assert_eq!(count(&n, "feed_silent", "raised"), 1, "{n:?}");
    assert!(n.iter().any(|x| x.0 == "feed_silent" && x.1 == "lab"));
    assert!(n.iter().any(|x| x.0 == "backend_down" && x.1 == "hook"));
    assert!(
        n.iter()
            .any(|x| x.0 == "escalation_exhausted" && x.1.starts_with("alert:"))
    );

    // The feed speaks again: one `cleared` notice, no new raise.
    assert_eq!(
        ack_code(&c.roundtrip(&crate::support::adt_a01("OPS2")).await),
        "AA"
    );
    wait_until("feed_silent cleared", 10, || {
        count(&notices(&rx), "feed_silent", "cleared") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = notices(&rx);
    assert_eq!(count(&n, "feed_silent", "cleared"), 1, "{n:?}");
    assert_eq!(count(&n, "feed_silent", "raised"), 1, "{n:?}");

    // The heartbeat kept coming, signed, and says what is wrong.
    let beats: Vec<Seen> = rx
        .seen()
        .into_iter()
        .filter(|s| s.path == "/beat")
        .collect();
    assert!(beats.len() >= 5, "heartbeats: {}", beats.len());
    verify(beats.last().unwrap());
    let last: serde_json::Value = serde_json::from_slice(&beats.last().unwrap().body).unwrap();
    assert_eq!(last["status"], "degraded");
    assert!(
        last["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "backend_down:hook")
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    // Every notice is in the audit trail too, and the chain is intact.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["audit", "export", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let raised = text
        .lines()
        .filter(|l| l.contains("operator.alarm.raised"))
        .count();
    assert_eq!(raised, 4, "one audit record per alarm raised");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
