//! SIGKILL with alerts in flight (RELIABILITY §(a), issue #10): the real
//! binary is killed at 20 random moments while a sender streams critical
//! results (each in its own room) and resends whatever was not
//! acknowledged, and a webhook receiver collects the pages. Afterwards every
//! acknowledged result has paged exactly once — one idempotency key per
//! result; a redelivery after a crash carries the same key, so the
//! receiver counts it as a repeat, never as a second page — and no result
//! that was acknowledged is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::delivery::{Receiver, free_port, setup, wait_until};
use crate::support::{Mllp, ack_code};

const KILLS: usize = 20;
const SEED: u64 = 0x414c_4552_5453; // "ALERTS"

fn critical(n: u32) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|SWITCHBOARD|HOSP|20261123120000||ORU^R01^ORU_R01|KA{n}|P|2.5.1\r\
PID|1||ZZK{n}^^^HOSP^MR||ZZTEST^KILL||19700101|F\r\
PV1|1|I|ICU^{n}^A^HOSP\r\
OBR|1|PK{n}|FK{n}|2823-3^Potassium^LN|||20261123120000\r\
OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r"
    )
}

async fn start(config: &Path, mllp: u16, http: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .env("SB_TEST_HOOK_SECRET", "kill")
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
    child
}

/// (room → distinct idempotency keys, total deliveries) seen by the receiver.
fn pages(rx: &Receiver) -> (BTreeMap<u32, BTreeSet<String>>, usize) {
    let mut by_room: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let seen = rx.seen();
    for s in &seen {
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        let room: u32 = v["fields"]["room"].as_str().unwrap().parse().unwrap();
        by_room
            .entry(room)
            .or_default()
            .insert(v["idempotency_key"].as_str().unwrap().to_string());
    }
    (by_room, seen.len())
}

#[tokio::test]
async fn twenty_sigkills_with_alerts_in_flight_lose_no_page_and_never_page_twice() {
    let rx = Receiver::default();
    let port = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), port);
    let (mllp, http) = (free_port(), free_port());
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut acked: BTreeSet<u32> = BTreeSet::new();
    let mut next = 1u32;
    for _ in 0..KILLS {
        let mut child = start(&config, mllp, http).await;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
        let run_for = Duration::from_millis(rng.random_range(100..600));
        let sender = async {
            let mut c = Mllp::connect(addr).await;
            // Resend the one not acknowledged before the last kill first.
            loop {
                let n = next;
                c.send(&critical(n)).await;
                match c.try_recv(Duration::from_secs(5)).await {
                    Some(ack) if ack_code(&ack) == "AA" => {
                        acked.insert(n);
                        next += 1;
                    }
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(run_for, sender).await;
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }
    // A last, clean run: the sender resends the one left unacknowledged,
    // and the gateway delivers whatever the kills left in the outbox.
    let mut child = start(&config, mllp, http).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    let mut c = Mllp::connect(addr).await;
    assert_eq!(ack_code(&c.roundtrip(&critical(next)).await), "AA");
    acked.insert(next);
    assert!(
        acked.len() >= 40,
        "only {} results acknowledged",
        acked.len()
    );
    wait_until("every acknowledged result paged", 60, || {
        let (by_room, _) = pages(&rx);
        acked.iter().all(|n| by_room.contains_key(n))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (by_room, deliveries) = pages(&rx);
    let _ = child.start_kill();
    let _ = child.wait().await;
    for n in &acked {
        assert_eq!(
            by_room[n].len(),
            1,
            "result {n} paged under {} idempotency keys",
            by_room[n].len()
        );
    }
    // Nothing was paged that the sender does not know as acknowledged.
    let strangers: Vec<u32> = by_room
        .keys()
        .filter(|n| !acked.contains(n))
        .copied()
        .collect();
    assert!(strangers.is_empty(), "{strangers:?}");
    crate::support::note(&format!(
        "crash_alerts: {} results acknowledged over {KILLS} kills, {} deliveries ({} repeats by key)",
        acked.len(),
        deliveries,
        deliveries - by_room.len()
    ));
}
