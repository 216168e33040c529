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

fn backend_error(backend: &str, field: &str) -> ConfigError {
    let text = format!("{GOOD}\n[[backends]]\n{backend}\n");
    let err = check(&text).unwrap_err();
    err.0
        .into_iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error at {field}"))
}

#[test]
fn clinician_secure_on_a_channel_that_is_not_end_to_end_is_refused() {
    let e = backend_error(
        "name = \"pager\"\nkind = \"webhook\"\nprofile = \"clinician-secure\"",
        "backends[0].profile",
    );
    assert!(e.problem.contains("end-to-end"), "{e}");
    assert_eq!(e.line, Some(16));
    let ok = format!(
        "{GOOD}\n[[backends]]\nname = \"secure\"\nkind = \"webhook\"\nprofile = \"clinician-secure\"\nend_to_end = true\n"
    );
    assert_eq!(check(&ok).unwrap().backends[0].profile, "clinician-secure");
}

#[test]
fn backend_errors_name_the_field() {
    let e = backend_error(
        "name = \"x\"\nkind = \"carrier-pigeon\"",
        "backends[0].kind",
    );
    assert!(e.problem.contains("webhook"), "{e}");
    let e = backend_error(
        "name = \"x\"\nkind = \"webhook\"\nprofile = \"everything\"",
        "backends[0].profile",
    );
    assert!(e.problem.contains("limited"), "{e}");
    let e = backend_error(
        "name = \"x\"\nkind = \"webhook\"\nurl = \"ftp://x\"",
        "backends[0].url",
    );
    assert!(e.problem.contains("http"), "{e}");
    let e = backend_error(
        "name = \"x\"\nkind = \"webhook\"\nurl = \"https://x.example\"",
        "backends[0].ca",
    );
    assert!(e.problem.contains("PEM bundle"), "{e}");
    let e = backend_error("kind = \"webhook\"", "backends[0].name");
    assert!(e.problem.contains("required"), "{e}");
}

#[test]
fn a_backend_defaults_to_the_limited_profile_and_its_name_as_contact() {
    let text = format!("{GOOD}\n[[backends]]\nname = \"webhook\"\nkind = \"webhook\"\n");
    let b = &check(&text).unwrap().backends[0];
    assert_eq!(
        (b.profile.as_str(), b.contact.as_str()),
        ("limited", "webhook")
    );
    assert_eq!(b.max_attempts, 20);
    assert_eq!(b.circuit_failures, 5);
}

#[test]
fn a_template_reaching_beyond_its_profile_is_refused() {
    let e = backend_error(
        "name = \"pager\"\nkind = \"webhook\"\nprofile = \"limited\"\ntemplate = \"{{ priority }} {{ mrn }} in {{ unit }}\"",
        "backends[0].template",
    );
    assert!(e.problem.contains("mrn"), "{e}");
    let ok = format!(
        "{GOOD}\n[[backends]]\nname = \"pager\"\nkind = \"webhook\"\ntemplate = \"{{{{ priority }}}}: {{{{ test }}}} in {{{{ unit }}}}\"\n"
    );
    assert!(check(&ok).is_ok());
}
