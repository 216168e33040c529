//! Rosters and mappings reload while the gateway runs: on a file change, on
//! SIGHUP (the real binary) and through the API; a broken file is refused
//! with its file, line and field, and the previous version serves on.

use std::path::Path;
use std::time::Duration;

use crate::census::{OPERATOR_TOKEN, READER_TOKEN, WARD_ROSTER, api, start, write_config};
use crate::fhir::{HttpResponse, try_request};

/// The ward roster with an override that puts rn-b on call until 2099.
fn with_override() -> String {
    format!(
        "{WARD_ROSTER}\n[[overrides]]\nrole = \"charge-nurse\"\nmember = \"rn-b\"\nstart = \"2026-01-01T00:00\"\nend = \"2099-01-01T00:00\"\nreason = \"cover\"\n"
    )
}

fn on_call(r: &HttpResponse) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["on_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["member"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `GET /api/v1/oncall/charge-nurse` until it names `want` (20 s).
async fn wait_for(addr: std::net::SocketAddr, want: &str) -> bool {
    let auth = format!("Bearer {READER_TOKEN}");
    for _ in 0..200 {
        if let Some(r) = try_request(
            addr,
            "GET",
            "/api/v1/oncall/charge-nurse",
            &[("Authorization", &auth)],
            b"",
        )
        .await
            && r.status == 200
            && on_call(&r) == [want]
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn write_atomically(path: &Path, text: &str) {
    // As editors and config management do: a temporary file renamed over.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_roster_change_on_disk_is_served_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "[reload]\nsettle_ms = 50\n").await;
    let addr = g.http_addr();
    assert!(wait_for(addr, "rn-a").await, "rn-a on call at start");
    let roster = dir.path().join("rosters/ward.toml");

    write_atomically(&roster, &with_override());
    assert!(
        wait_for(addr, "rn-b").await,
        "the override was not picked up"
    );
    assert_eq!(g.routing().current().revision, 2);

    // A broken file (an unknown zone on line 3): refused, rn-b still serves.
    let broken = with_override().replace("America/New_York", "Mars/Olympus_Mons");
    write_atomically(&roster, &broken);
    let mut refused = false;
    for _ in 0..200 {
        if g.routing()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the broken roster was not noticed");
    assert!(
        wait_for(addr, "rn-b").await,
        "the previous set must serve on"
    );
    let r = api(&g, "GET", "/api/v1/routing", Some(READER_TOKEN), "").await;
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["revision"], 2);
    let e = &status["last_errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("ward.toml"), "{e}");
    assert_eq!(e["line"], 3, "{e}");
    assert_eq!(e["field"], "timezone", "{e}");

    // Mended: served again.
    write_atomically(&roster, WARD_ROSTER);
    assert!(wait_for(addr, "rn-a").await);
    assert_eq!(g.routing().current().revision, 3);
    g.shutdown().await;

    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    let outcomes: Vec<String> = conn
        .prepare("SELECT outcome FROM audit WHERE action = 'routing.reload' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes.first().map(String::as_str), Some("ok"));
    assert!(
        outcomes.iter().any(|o| o.starts_with("refused")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.last().map(String::as_str), Some("ok"));
}

#[tokio::test]
async fn the_api_reloads_on_request_and_reports_refusals_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "[reload]\nwatch_files = false\n").await;
    let r = api(&g, "POST", "/api/v1/routing/reload", Some(READER_TOKEN), "").await;
    assert_eq!(r.status, 403, "reload needs routing:reload");
    let r = api(
        &g,
        "POST",
        "/api/v1/routing/reload",
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"], "unchanged");

    std::fs::write(dir.path().join("rosters/ward.toml"), with_override()).unwrap();
    // Not watching: nothing changes by itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(g.routing().current().revision, 1);
    let r = api(
        &g,
        "POST",
        "/api/v1/routing/reload",
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"], "reloaded", "{v}");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["on_call_changes"][0]["role"], "charge-nurse");
    assert_eq!(v["on_call_changes"][0]["before"][0], "rn-a");
    assert_eq!(v["on_call_changes"][0]["after"][0], "rn-b");

    // A mapping that names a role no roster defines: refused with 422.
    std::fs::write(
        dir.path().join("mappings/bad.toml"),
        "[[rules]]\nname = \"x\"\nmatch = { kind = \"result\" }\nroute = { role = \"no-such-role\", priority = \"urgent\" }\n",
    )
    .unwrap();
    let r = api(
        &g,
        "POST",
        "/api/v1/routing/reload",
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 422);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["serving"], 2);
    let e = &v["errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("bad.toml"), "{v}");
    assert_eq!(e["line"], 4, "{v}");
    assert!(e["field"].as_str().unwrap().contains("role"), "{v}");
    assert!(wait_for(g.http_addr(), "rn-b").await);
    g.shutdown().await;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_binary_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[reload]\nwatch_files = false\n");
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    assert!(wait_for(addr, "rn-a").await, "gateway did not come up");
    std::fs::write(dir.path().join("rosters/ward.toml"), with_override()).unwrap();
    let pid = child.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert!(wait_for(addr, "rn-b").await, "SIGHUP did not reload");
    // Still running (SIGHUP must not stop it), then a clean stop.
    assert!(child.try_wait().unwrap().is_none());
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await;
    let done = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(
        done.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "clean stop on SIGTERM"
    );
}
