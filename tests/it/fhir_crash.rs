//! The crash test for the FHIR door: the real binary SIGKILLed at random
//! moments while a client posts resources with business identifiers and
//! re-posts whatever did not get a 2xx. Afterwards every resource that got
//! 201/200 is in the journal exactly once.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::fhir::{fhir_config_text, try_request};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn observation(id: &str) -> String {
    format!(
        r#"{{"resourceType":"Observation","identifier":[{{"system":"urn:crash","value":"{id}"}}],"status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"2823-3"}}]}},"subject":{{"identifier":{{"system":"urn:mrn","value":"ZZTEST-{id}"}}}},"valueQuantity":{{"value":6.1,"unit":"mmol/L"}}}}"#
    )
}

struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn start(config: &std::path::Path, mllp: u16, http: u16) -> Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--mllp",
            &format!("127.0.0.1:{mllp}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Child(child)
}

#[tokio::test]
async fn nothing_that_got_a_2xx_is_lost_when_the_gateway_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, fhir_config_text(&dir.path().join("data"), "")).unwrap();
    let (mllp, http) = (free_port(), free_port());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let auth = "Bearer lab-fhir-token-for-tests".to_string();
    let total = 300;
    let mut pending: Vec<usize> = (0..total).collect();
    let mut acked: HashSet<usize> = HashSet::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xF41);
    let mut kills = 0;
    while !pending.is_empty() {
        let child = start(&config, mllp, http).await;
        // A killer in the background: SIGKILL at a random moment, possibly
        // in the middle of a request or of its commit.
        let killer = (kills < 10).then(|| {
            let after = Duration::from_millis(rng.random_range(20..200));
            tokio::spawn(async move {
                let mut child = child;
                tokio::time::sleep(after).await;
                let _ = child.0.start_kill();
                let _ = child.0.wait().await;
            })
        });
        let mut still = Vec::new();
        let mut dead = false;
        for i in pending.iter() {
            if dead {
                still.push(*i);
                continue;
            }
            let body = observation(&format!("CR{i}"));
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                try_request(
                    addr,
                    "POST",
                    "/fhir/Observation",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/fhir+json"),
                    ],
                    body.as_bytes(),
                ),
            )
            .await;
            match r {
                Ok(Some(resp)) if resp.status == 201 || resp.status == 200 => {
                    acked.insert(*i);
                }
                _ => {
                    still.push(*i);
                    dead = killer.is_some();
                }
            }
        }
        if let Some(k) = killer {
            let _ = k.await;
            kills += 1;
        }
        pending = still;
        if pending.is_empty() && kills < 10 {
            // Resend a sample of acknowledged ones: they must be repeats.
            pending = (0..total).step_by(37).collect();
        }
    }
    assert!(kills >= 10);
    assert_eq!(acked.len(), total);
    // Every acknowledged resource is in the journal exactly once.
    use switchboard::journal::{MessageQuery, SqliteStorage, Storage};
    let mut s =
        SqliteStorage::open_read_only(&dir.path().join("data/journal.sqlite3"), None).unwrap();
    let rows = s
        .messages(&MessageQuery {
            limit: 100_000,
            ..Default::default()
        })
        .unwrap();
    let accepted: Vec<_> = rows
        .iter()
        .filter(|r| r.fate.as_str() == "accepted")
        .collect();
    assert_eq!(
        accepted.len(),
        total,
        "one row per resource, repeats added none"
    );
    let keys: HashSet<&str> = accepted.iter().map(|r| r.control_id.as_str()).collect();
    for i in 0..total {
        assert!(
            keys.contains(format!("Observation|urn:crash|CR{i}").as_str()),
            "CR{i} lost"
        );
    }
}
