use super::*;

fn check(text: &str) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/switchboard/switchboard.toml"), text)
}

const GOOD: &str = r#"
[mllp]
listen = "127.0.0.1:0"

[[senders]]
name = "lab"
msh3 = ["LAB"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
timezone = "America/New_York"
processing_ids = ["P", "T"]
"#;

#[test]
fn good_config_has_defaults_and_resolves_paths() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.storage.data_dir, PathBuf::from("/etc/switchboard/data"));
    assert_eq!(c.mllp.max_connections, 256);
    assert_eq!(c.mllp.frame_timeout, Duration::from_secs(30));
    assert_eq!(c.senders[0].timezone, chrono_tz::America::New_York);
    assert!(c.senders[0].claims("LAB", "ANY"));
    assert!(!c.senders[0].claims("ADT", "ANY"));
    assert_eq!(
        c.senders[0].processing_ids,
        vec![Processing::Production, Processing::Training]
    );
}

#[test]
fn unknown_field_names_line_and_field() {
    let err = check("[mllp]\nlisten = \"127.0.0.1:1\"\nmax_frames = 3\n").unwrap_err();
    let e = &err.0[0];
    assert_eq!(e.line, Some(3));
    assert_eq!(e.field, "max_frames");
    assert!(e.problem.contains("unknown field"), "{}", e.problem);
}

#[test]
fn bad_values_name_line_field_and_problem() {
    let text = GOOD
        .replace("\"127.0.0.0/8\"", "\"127.0.0.0/8\", \"not-a-net\"")
        .replace("America/New_York", "Mars/Olympus")
        .replace("\"P\", \"T\"", "\"P\", \"X\"");
    let err = check(&text).unwrap_err();
    let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "senders[0].networks[1]",
            "senders[0].timezone",
            "senders[0].processing_ids[1]"
        ]
    );
    assert_eq!(err.0[0].line, Some(9));
    assert_eq!(err.0[1].line, Some(10));
    let shown = err.to_string();
    assert!(
        shown.starts_with("/etc/switchboard/switchboard.toml:9:"),
        "{shown}"
    );
}

#[test]
fn sender_without_network_or_certificate_is_refused() {
    let text = GOOD.replace("networks = [\"127.0.0.0/8\"]\n", "");
    let err = check(&text).unwrap_err();
    assert_eq!(err.0[0].field, "senders[0]");
    assert_eq!(err.0[0].line, Some(5));
}

#[test]
fn demo_must_stay_on_loopback() {
    let text = format!(
        "demo = true\n{}",
        GOOD.replace("127.0.0.1:0", "0.0.0.0:2575")
    );
    let err = check(&text).unwrap_err();
    assert_eq!(err.0[0].field, "mllp.listen");
    assert!(err.0[0].problem.contains("loopback"));
}

#[test]
fn duplicate_sender_names_are_refused() {
    let text = format!(
        "{GOOD}{}",
        GOOD.split("[[senders]]")
            .nth(1)
            .map(|s| format!("[[senders]]{s}"))
            .unwrap()
    );
    let err = check(&text).unwrap_err();
    assert_eq!(err.0[0].field, "senders[1].name");
}

#[test]
fn syntax_error_names_line() {
    let err = check("[mllp\nlisten = 1\n").unwrap_err();
    assert_eq!(err.0[0].line, Some(1));
}
