//! Configuration of `kind = "matrix"` backends, and what the default log
//! filter lets through from the SDK.

use std::path::Path;

use super::*;
use crate::config::{BackendKind, ConfigErrors};

const BASE: &str = r#"
[mllp]
listen = "127.0.0.1:0"

[[senders]]
name = "lab"
msh3 = ["LAB"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
"#;

const MATRIX: &str = r#"
[[backends]]
name = "mx"
kind = "matrix"
contact = "matrix"
profile = "clinician-secure"
homeserver = "https://matrix.example.org"
user = "@switchboard:example.org"
password_env = "SB_MATRIX_PASSWORD"
store_passphrase_env = "SB_MATRIX_STORE"
"#;

fn check(backends: &str) -> Result<crate::config::Config, ConfigErrors> {
    crate::config::parse(
        Path::new("/etc/switchboard/switchboard.toml"),
        &format!("{BASE}{backends}"),
    )
}

fn fields(e: ConfigErrors) -> Vec<String> {
    e.0.into_iter().map(|e| e.field).collect()
}

#[test]
fn a_matrix_backend_is_end_to_end_and_may_carry_clinician_secure() {
    let c = check(MATRIX).unwrap();
    let b = &c.backends[0];
    assert_eq!(b.kind, BackendKind::Matrix);
    assert!(b.end_to_end, "end_to_end defaults to true for matrix");
    let m = b.matrix.as_ref().unwrap();
    assert_eq!(m.homeserver, "https://matrix.example.org");
    assert_eq!(m.user, "@switchboard:example.org");
    assert_eq!(m.password_env, "SB_MATRIX_PASSWORD");
    assert_eq!(m.store_passphrase_env, "SB_MATRIX_STORE");
    assert_eq!(m.device_name, "switchboard");
    // Loopback homeservers may be plain http.
    for hs in [
        "http://127.0.0.1:8008",
        "http://localhost:8008/",
        "http://[::1]:8008",
    ] {
        let text = MATRIX.replace("https://matrix.example.org", hs);
        assert!(check(&text).is_ok(), "{hs}");
    }
}

#[test]
fn a_matrix_backend_names_each_missing_or_bad_field() {
    let text = "[[backends]]\nname = \"mx\"\nkind = \"matrix\"\n";
    assert_eq!(
        fields(check(text).unwrap_err()),
        [
            "backends[0].homeserver",
            "backends[0].user",
            "backends[0].password_env",
            "backends[0].store_passphrase_env"
        ]
    );
    let text = MATRIX
        .replace("https://matrix.example.org", "http://matrix.example.org")
        .replace("@switchboard:example.org", "switchboard")
        .replace(
            "store_passphrase_env = \"SB_MATRIX_STORE\"",
            "store_passphrase_env = \" \"\ndevice_name = \"\"",
        );
    let err = check(&text).unwrap_err();
    let problems: Vec<String> = err.0.iter().map(|e| e.problem.clone()).collect();
    assert_eq!(
        fields(err),
        [
            "backends[0].homeserver",
            "backends[0].user",
            "backends[0].store_passphrase_env",
            "backends[0].device_name"
        ]
    );
    assert!(problems[0].contains("loopback"), "{}", problems[0]);
    // Fields of other kinds are refused on a matrix backend.
    let text = format!("{MATRIX}url = \"http://127.0.0.1:9/\"\nsecret_env = \"S\"\n");
    assert_eq!(
        fields(check(&text).unwrap_err()),
        ["backends[0].url", "backends[0].secret_env"]
    );
    // Declaring the channel not end-to-end encrypted refuses the profile.
    let text = format!("{MATRIX}end_to_end = false\n");
    assert_eq!(fields(check(&text).unwrap_err()), ["backends[0].profile"]);
}

#[test]
fn matrix_fields_are_refused_on_other_kinds() {
    let text = "[[backends]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
homeserver = \"https://m.example.org\"\nuser = \"@a:b\"\npassword_env = \"P\"\n\
store_passphrase_env = \"S\"\ndevice_name = \"d\"\n";
    let err = check(text).unwrap_err();
    assert!(
        err.0
            .iter()
            .all(|e| e.problem.contains("only for kind = \"matrix\"")),
        "{err:?}"
    );
    assert_eq!(
        fields(err),
        [
            "backends[0].homeserver",
            "backends[0].user",
            "backends[0].password_env",
            "backends[0].store_passphrase_env",
            "backends[0].device_name"
        ]
    );
    // A webhook stays not end-to-end unless it says so.
    let text = "[[backends]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n";
    assert!(!check(text).unwrap().backends[0].end_to_end);
}

#[test]
fn device_ids_are_ours_and_distinct() {
    let a = new_device_id();
    assert!(a.starts_with("SB") && a.len() == 12);
    assert!(a[2..].chars().all(|c| c.is_ascii_uppercase()));
    assert_ne!(a, new_device_id());
}

#[test]
fn the_default_log_filter_keeps_the_sdks_info_and_debug_out() {
    use tracing::Level;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            crate::telemetry::DEFAULT_FILTER,
        ))
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        macro_rules! quiet {
            ($($target:literal),*) => {$(
                assert!(!tracing::enabled!(target: $target, Level::DEBUG), $target);
                assert!(!tracing::enabled!(target: $target, Level::INFO), $target);
                assert!(tracing::enabled!(target: $target, Level::WARN), $target);
            )*};
        }
        quiet!(
            "matrix_sdk::room::futures",
            "matrix_sdk_base::sync",
            "matrix_sdk_crypto::machine",
            "matrix_sdk_sqlite::state_store"
        );
        assert!(tracing::enabled!(target: "switchboard::delivery::matrix::sync", Level::INFO));
        assert!(!tracing::enabled!(target: "switchboard::delivery::matrix::sync", Level::DEBUG));
    });
}
