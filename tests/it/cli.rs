//! The operator CLI against a journal filled over MLLP.

use std::process::Command;

use crate::support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[tokio::test]
async fn messages_lists_without_phi_unless_asked() {
    let gw = start_gateway().await;
    let mut c = gw.connect().await;
    c.roundtrip(&oru("CLI1")).await;
    c.roundtrip(&oru("CLI2").replace("PID|1||MRNCLI2^^^HOSP^MR|", "PID|1|||"))
        .await;
    let cfg = gw.dir.path().join("switchboard.toml");
    let out = bin()
        .args(["messages", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("CLI1") && text.contains("accepted"), "{text}");
    assert!(text.contains("101 at PID^1^3"), "{text}");
    assert!(!text.contains("ZZCANARY"), "no PHI by default");

    let out = bin()
        .args(["messages", "--json", "--fate", "rejected", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["control_id"], "CLI2");
    assert_eq!(rows[0]["ack_code"], "AE");
    assert_eq!(rows[0]["error_code"], 101);
    assert!(rows[0].get("raw").is_none());

    let out = bin()
        .args([
            "messages",
            "--show-content",
            "--control-id",
            "CLI1",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("ZZCANARY"));
}

#[test]
fn check_accepts_the_bundled_demo_config() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/switchboard.toml");
    let out = bin().args(["check", "--config", demo]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("DEMO"));
}

#[test]
fn check_reports_file_line_field_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mllp]\nlisten = \"127.0.0.1:2575\"\n\n[[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"300.1.1.0/24\"]\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}:8:13: field `senders[0].networks[0]`",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn serve_with_a_bad_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // The port is taken by us: if serve tried to bind, it would fail with 1, not 64.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    std::fs::write(
        &path,
        format!("[mllp]\nlisten = \"127.0.0.1:{port}\"\nbogus = 1\n"),
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
