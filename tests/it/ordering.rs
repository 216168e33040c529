//! ACK-after-fsync ordering (RELIABILITY.md §4(a′)): the real binary runs
//! under strace; for every acknowledgement written to an MLLP socket, the
//! frame of that message was read first, and an fsync/fdatasync completed
//! between that read and the acknowledgement's write. `kill -9` cannot show
//! a missing fsync (the page cache survives it); this ordering check can.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Mllp, ack_code, field, note, oru};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One traced syscall: when it started, when it returned, and its text.
struct Call {
    start: f64,
    end: f64,
    name: String,
    text: String,
}

/// Parses `strace -f -ttt -s N` output, joining `<unfinished ...>` halves.
fn parse(trace: &str) -> Vec<Call> {
    let mut open: HashMap<String, (f64, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        // `PID  SECONDS.MICROS syscall(...) = result` (strace pads the pid).
        let Some((pid, after)) = line.split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = after.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(t) = ts.parse::<f64>() else { continue };
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            open.insert(pid.to_string(), (t, head.to_string()));
            continue;
        }
        if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((start, head)) = open.remove(pid) else {
                continue;
            };
            let name = tail.split(' ').next().unwrap_or("").to_string();
            let text = format!(
                "{head}{}",
                tail.split_once("resumed>").map(|x| x.1).unwrap_or("")
            );
            calls.push(Call {
                start,
                end: t,
                name,
                text,
            });
            continue;
        }
        let name = rest.split('(').next().unwrap_or("").to_string();
        calls.push(Call {
            start: t,
            end: t,
            name,
            text: rest.to_string(),
        });
    }
    calls.sort_by(|a, b| a.start.partial_cmp(&b.start).unwrap());
    calls
}

#[tokio::test]
async fn every_ack_write_follows_an_fsync_after_its_frame_was_read() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        note(
            "strace not installed: skipping the ACK-after-fsync ordering check (.ci/run installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        crate::support::config_text(&dir.path().join("data"), ""),
    )
    .unwrap();
    let (mllp, http) = (free_port(), free_port());
    let trace_file = dir.path().join("trace.txt");
    let mut child = tokio::process::Command::new("strace")
        .args([
            "-f",
            "-ttt",
            "-s",
            "512",
            "-e",
            "trace=read,recvfrom,write,writev,sendto,sendmsg,fsync,fdatasync",
            "-o",
        ])
        .arg(&trace_file)
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&path)
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
    let addr: std::net::SocketAddr = format!("127.0.0.1:{mllp}").parse().unwrap();
    let mut up = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "gateway under strace did not start");
    let total = 300;
    let mut tasks = Vec::new();
    for conn in 0..3 {
        tasks.push(tokio::spawn(async move {
            let mut c = Mllp::connect(addr).await;
            for i in 0..total / 3 {
                let id = format!("ORD{conn}X{i}");
                let ack = c.roundtrip(&oru(&id)).await;
                assert_eq!(ack_code(&ack), "AA");
                assert_eq!(field(&ack, "MSA", 2), id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let calls = parse(&trace);
    let syncs: Vec<f64> = calls
        .iter()
        .filter(|c| (c.name == "fsync" || c.name == "fdatasync") && c.text.ends_with("= 0"))
        .map(|c| c.end)
        .collect();
    if syncs.is_empty() {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for c in &calls {
            *names.entry(c.name.as_str()).or_default() += 1;
        }
        let sample: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("sync"))
            .take(5)
            .collect();
        panic!("the journal never synced: calls {names:?}; sync lines {sample:?}");
    }
    let mut checked = 0;
    let mut violations = Vec::new();
    for conn in 0..3 {
        for i in 0..total / 3 {
            let id = format!("ORD{conn}X{i}");
            let read_marker = format!("|{id}|P|");
            let ack_marker = format!("MSA|AA|{id}\\r");
            let read = calls.iter().find(|c| {
                matches!(c.name.as_str(), "read" | "recvfrom") && c.text.contains(&read_marker)
            });
            let write = calls.iter().find(|c| {
                matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg")
                    && c.text.contains(&ack_marker)
            });
            let (Some(read), Some(write)) = (read, write) else {
                violations.push(format!("{id}: read or ACK write not found in the trace"));
                continue;
            };
            let synced = syncs.iter().any(|s| *s >= read.end && *s <= write.start);
            if !synced {
                violations.push(format!(
                    "{id}: ACK written at {} with no fsync since its frame was read at {}",
                    write.start, read.end
                ));
            }
            checked += 1;
        }
    }
    assert!(
        violations.is_empty(),
        "{} of {checked}:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(checked, total, "every ACK checked: 100 %");
}
