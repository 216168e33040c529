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

#[test]
fn check_validates_rosters_and_mappings_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["rosters", "mappings"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root.join(sub)).unwrap().flatten() {
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let config = std::fs::read_to_string(root.join("switchboard.toml")).unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), &config).unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(dir.path().join("switchboard.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("rosters: 4"), "{stdout}");

    // A roster with a zone that does not exist.
    let roster = dir.path().join("rosters/hospitalist.toml");
    let text = std::fs::read_to_string(&roster).unwrap();
    std::fs::write(&roster, text.replace("America/New_York", "America/Nowhere")).unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(dir.path().join("switchboard.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("{}:", roster.display())), "{err}");
    assert!(err.contains("field `timezone`"), "{err}");

    // A mapping rule routing to a role no roster defines.
    std::fs::write(&roster, text).unwrap();
    let mapping = dir.path().join("mappings/critical-results.toml");
    let m = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        m.replacen("role = \"hospitalist\"", "role = \"astronaut\"", 1),
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(dir.path().join("switchboard.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown role `astronaut`"), "{err}");
    assert!(err.contains(&format!("{}:", mapping.display())), "{err}");
}
