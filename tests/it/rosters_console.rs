//! Console-managed rosters: saved through the API with revisions, validated
//! with the files and mappings, never fighting a file-managed roster,
//! surviving a restart, and exported / imported with the CLI.

use std::process::Command;

use crate::census::{OPERATOR_TOKEN, READER_TOKEN, api, start, write_config};
use crate::fhir::{HttpResponse, request};

fn float_pool(member: &str) -> String {
    format!(
        r#"name = "float-pool"
timezone = "Europe/Berlin"

[[members]]
id = "{member}"
display = "Float {member} (fictional)"
contacts = {{ matrix = "@{member}:localhost" }}

[[roles]]
name = "float-nurse"

[[rotations]]
role = "float-nurse"
members = ["{member}"]
start = "2026-01-05T07:00"
length_days = 1

[failsafe]
member = "{member}"
"#
    )
}

fn body(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

async fn put(g: &switchboard::app::Gateway, name: &str, text: &str, token: &str) -> HttpResponse {
    let auth = format!("Bearer {token}");
    request(
        g.http_addr(),
        "PUT",
        &format!("/api/v1/rosters/{name}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/toml"),
            ("X-Switchboard-Comment", "cover for the flu season"),
        ],
        text.as_bytes(),
    )
    .await
}

async fn float_on_call(g: &switchboard::app::Gateway) -> String {
    let r = api(
        g,
        "GET",
        "/api/v1/oncall/float-nurse",
        Some(READER_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    body(&r)["on_call"][0]["member"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn console_rosters_are_saved_with_revisions_validated_and_never_fight_files() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), "[reload]\nwatch_files = false\n").await;

    assert_eq!(
        put(&g, "float-pool", &float_pool("fl-a"), READER_TOKEN)
            .await
            .status,
        403
    );
    let r = put(&g, "float-pool", &float_pool("fl-a"), OPERATOR_TOKEN).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(body(&r)["revision"], 1);
    assert_eq!(float_on_call(&g).await, "fl-a");

    let r = api(&g, "GET", "/api/v1/rosters", Some(READER_TOKEN), "").await;
    let list = body(&r);
    let managed = |n: &str| {
        list["rosters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .map(|x| x["managed"].as_str().unwrap().to_string())
    };
    assert_eq!(managed("ward").as_deref(), Some("file"));
    assert_eq!(managed("float-pool").as_deref(), Some("console"));

    // A broken revision is refused with its position; the old one serves.
    let broken = float_pool("fl-b").replace("Europe/Berlin", "Europe/Atlantis");
    let r = put(&g, "float-pool", &broken, OPERATOR_TOKEN).await;
    assert_eq!(r.status, 422);
    let e = &body(&r)["errors"][0];
    assert_eq!(e["file"], "console:float-pool", "{e}");
    assert_eq!(e["line"], 2, "{e}");
    assert_eq!(e["field"], "timezone", "{e}");
    assert_eq!(float_on_call(&g).await, "fl-a");

    // The name in the text must be the name it is stored under.
    let r = put(&g, "other-name", &float_pool("fl-b"), OPERATOR_TOKEN).await;
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["field"], "name");

    // A file-managed roster cannot be saved here.
    let ward = std::fs::read_to_string(dir.path().join("rosters/ward.toml")).unwrap();
    assert_eq!(put(&g, "ward", &ward, OPERATOR_TOKEN).await.status, 409);
    // Nor can a console roster take a file roster's name through its text.
    let r = put(
        &g,
        "ward",
        &float_pool("fl-b").replace("float-pool", "ward"),
        OPERATOR_TOKEN,
    )
    .await;
    assert_eq!(r.status, 409);

    // Revision 2, then revert to 1 (= revision 3).
    let r = put(&g, "float-pool", &float_pool("fl-b"), OPERATOR_TOKEN).await;
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["revision"], 2);
    assert_eq!(body(&r)["on_call_changes"][0]["after"][0], "fl-b");
    assert_eq!(float_on_call(&g).await, "fl-b");
    let r = api(
        &g,
        "POST",
        "/api/v1/rosters/float-pool/revert",
        Some(OPERATOR_TOKEN),
        r#"{"revision":1}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(body(&r)["revision"], 3);
    assert_eq!(float_on_call(&g).await, "fl-a");
    let r = api(
        &g,
        "GET",
        "/api/v1/rosters/float-pool/revisions",
        Some(READER_TOKEN),
        "",
    )
    .await;
    let revs = body(&r)["revisions"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[0]["comment"], "cover for the flu season");
    assert_eq!(revs[2]["comment"], "revert to revision 1");
    assert_eq!(revs[2]["text"], revs[0]["text"]);
    assert_eq!(revs[1]["actor"], "operator:coordinator");

    // A mapping that needs the console role keeps the roster from retiring.
    std::fs::write(
        dir.path().join("mappings/float.toml"),
        "[[rules]]\nname = \"float\"\nmatch = { kind = \"result\", flags = [\"H\"] }\nroute = { role = \"float-nurse\", priority = \"urgent\" }\n",
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
    assert_eq!(
        body(&r)["result"],
        "reloaded",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = api(
        &g,
        "DELETE",
        "/api/v1/rosters/float-pool",
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(
        body(&r)["errors"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("float.toml")
    );
    g.shutdown().await;

    // After a restart the console roster is served again.
    let g = start(dir.path(), "[reload]\nwatch_files = false\n").await;
    assert_eq!(float_on_call(&g).await, "fl-a");
    let r = api(
        &g,
        "GET",
        "/api/v1/rosters/float-pool",
        Some(READER_TOKEN),
        "",
    )
    .await;
    assert_eq!(body(&r)["revision"], 3);
    assert_eq!(body(&r)["text"], float_pool("fl-a"));
    // Retire it once nothing needs it.
    std::fs::remove_file(dir.path().join("mappings/float.toml")).unwrap();
    let r = api(
        &g,
        "DELETE",
        "/api/v1/rosters/float-pool",
        Some(OPERATOR_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(body(&r)["retired"], true);
    let r = api(
        &g,
        "GET",
        "/api/v1/oncall/float-nurse",
        Some(READER_TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    g.shutdown().await;

    let conn = rusqlite::Connection::open(dir.path().join("data/journal.sqlite3")).unwrap();
    let saved: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit WHERE action = 'roster.saved' AND actor = 'operator:coordinator'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(saved, 3);
    let retired: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'roster.retired'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(retired, 1);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_imports_exports_lists_and_retires_console_rosters() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // The journal and keys exist once the gateway has run.
    let g = start(dir.path(), "").await;
    g.shutdown().await;
    let cfg = config.to_str().unwrap();
    let file = dir.path().join("float.toml");
    std::fs::write(&file, float_pool("fl-a")).unwrap();

    let out = cli(&[
        "rosters",
        "import",
        "--config",
        cfg,
        file.to_str().unwrap(),
        "--comment",
        "new pool",
        "--by",
        "coord",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision 1"));

    let out = cli(&["rosters", "list", "--config", cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("float-pool\tconsole\trevision 1"), "{text}");
    assert!(text.contains("ward\tfile\t"), "{text}");

    let exported = dir.path().join("exported.toml");
    let out = cli(&[
        "rosters",
        "export",
        "--config",
        cfg,
        "float-pool",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        float_pool("fl-a")
    );

    // A broken import names file, line and field and saves nothing.
    std::fs::write(
        &file,
        float_pool("fl-b").replace("length_days = 1", "length_days = 0"),
    )
    .unwrap();
    let out = cli(&["rosters", "import", "--config", cfg, file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("console:float-pool") && err.contains("length_days"),
        "{err}"
    );

    // Handing it back to the files: export, retire, then the file goes in.
    let out = cli(&[
        "rosters",
        "retire",
        "--config",
        cfg,
        "float-pool",
        "--by",
        "coord",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&exported, dir.path().join("rosters/float-pool.toml")).unwrap();
    let out = cli(&["rosters", "list", "--config", cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("float-pool\tfile\t"), "{text}");
    let out = cli(&["rosters", "history", "--config", cfg, "float-pool"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("user:coord\tnew pool"), "{text}");
    assert!(text.contains("[retired]"), "{text}");
}
