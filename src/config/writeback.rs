//! Status flowing back out of the gateway: `[alerts.writeback]` (the EHR's
//! FHIR server, told who saw each alert: a Communication per recipient and
//! a Task per alert) and `[[alerts.alarm_sources]]` (device alarm sources
//! that want IHE PCD ACM alarm status reports, ORA^R41, over MLLP).
//!
//! Guarantees of what is validated here: every URL is http(s) and an https
//! one names its `ca`; a write-back profile that carries a direct patient
//! identifier needs `end_to_end = true` (as a backend's would); an alarm
//! source names a configured `[[senders]]` entry (the feed its ORU^R40
//! alarms arrive on) and a `host:port`; TLS needs a CA.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Validator;
use super::locate::FieldPath;

/// `[alerts.writeback]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriteback {
    pub fhir_base: Option<String>,
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub token_env: Option<String>,
    pub profile: Option<String>,
    pub end_to_end: Option<bool>,
    pub timeout_secs: Option<u64>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub give_up_after_secs: Option<u64>,
}

/// `[[alerts.alarm_sources]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarmSource {
    pub sender: Option<String>,
    pub mllp: Option<String>,
    #[serde(default)]
    pub tls: bool,
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub application: Option<String>,
    pub facility: Option<String>,
    pub connect_timeout_secs: Option<u64>,
    pub answer_timeout_secs: Option<u64>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub give_up_after_secs: Option<u64>,
}

/// How a status queue retries: `initial` doubling to `max` (jittered, at
/// least any `Retry-After`), until the report is `give_up_after` old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRetry {
    /// First retry delay.
    pub initial: Duration,
    /// Longest retry delay.
    pub max: Duration,
    /// A report still not accepted this long after it was queued is
    /// dead-lettered (ERROR log, audit record).
    pub give_up_after: Duration,
}

/// `[alerts.writeback]`: the EHR's FHIR server.
#[derive(Clone, Debug)]
pub struct WritebackConfig {
    /// FHIR base URL (`https://ehr.example/fhir`), without a trailing slash.
    pub fhir_base: String,
    /// CA bundle for https.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub client_key: Option<PathBuf>,
    /// Environment variable holding a bearer token.
    pub token_env: Option<String>,
    /// PHI profile of what is written (default `limited`: no direct patient
    /// identifier, so no `Task.for`; `Task.focus` only with `order_number`).
    pub profile: String,
    /// The channel may carry direct identifiers (see `[[backends]]`).
    pub end_to_end: bool,
    /// Per request.
    pub timeout: Duration,
    /// Retries.
    pub retry: StatusRetry,
}

/// `[[alerts.alarm_sources]]`: an IHE PCD ACM alarm reporter that takes
/// ORA^R41 alarm status reports.
#[derive(Clone, Debug)]
pub struct AlarmSourceConfig {
    /// The `[[senders]]` name its ORU^R40 alarms arrive as.
    pub sender: String,
    /// `host:port` of its MLLP listener.
    pub mllp: String,
    /// Connect with TLS.
    pub tls: bool,
    /// CA bundle (PEM) to verify it; required with `tls`.
    pub ca: Option<PathBuf>,
    /// TLS server name (default: the host of `mllp`).
    pub server_name: Option<String>,
    /// Our MSH-3 (default `SWITCHBOARD`).
    pub application: String,
    /// Our MSH-4 (default empty).
    pub facility: String,
    /// Connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// How long to wait for its acknowledgement.
    pub answer_timeout: Duration,
    /// Retries.
    pub retry: StatusRetry,
}

/// Where status goes: the EHR write-back and the alarm sources.
#[derive(Clone, Debug, Default)]
pub struct StatusConfig {
    /// `[alerts.writeback]`, when configured.
    pub writeback: Option<WritebackConfig>,
    /// `[[alerts.alarm_sources]]`.
    pub alarm_sources: Vec<AlarmSourceConfig>,
}

impl StatusConfig {
    /// The alarm source configured for `sender`, if any.
    pub fn alarm_source(&self, sender: &str) -> Option<&AlarmSourceConfig> {
        self.alarm_sources.iter().find(|a| a.sender == sender)
    }
}

/// The host of an http(s) URL.
fn host_of_url(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// True for `localhost` and loopback addresses.
fn loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Validator<'_> {
    fn status_retry(
        &mut self,
        p: &FieldPath,
        initial_ms: Option<u64>,
        max_secs: Option<u64>,
        give_up_secs: Option<u64>,
        default_max: u64,
    ) -> StatusRetry {
        StatusRetry {
            initial: Duration::from_millis(self.positive(
                &p.key("retry_initial_ms"),
                initial_ms,
                1000,
            )),
            max: Duration::from_secs(self.positive(
                &p.key("retry_max_secs"),
                max_secs,
                default_max,
            )),
            give_up_after: Duration::from_secs(self.positive(
                &p.key("give_up_after_secs"),
                give_up_secs,
                86_400,
            )),
        }
    }

    /// Validates `[alerts.writeback]` and `[[alerts.alarm_sources]]`;
    /// `senders` are the configured sender names.
    pub(super) fn status(
        &mut self,
        demo: bool,
        writeback: Option<&RawWriteback>,
        sources: &[RawAlarmSource],
        senders: &[String],
    ) -> StatusConfig {
        let alerts = FieldPath::root().key("alerts");
        let writeback = writeback.map(|w| self.writeback(&alerts.key("writeback"), w));
        if demo
            && let Some(w) = &writeback
            && !loopback(host_of_url(&w.fhir_base))
        {
            self.error(
                &alerts.key("writeback").key("fhir_base"),
                "a demo configuration may only send to loopback",
            );
        }
        let root = alerts.key("alarm_sources");
        let mut alarm_sources: Vec<AlarmSourceConfig> = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let p = root.index(i);
            let sender = s.sender.as_deref().unwrap_or("").trim().to_string();
            if sender.is_empty() {
                self.error(
                    &p.key("sender"),
                    "required: the [[senders]] name its alarms arrive as",
                );
            } else if !senders.contains(&sender) {
                self.error(&p.key("sender"), "no [[senders]] entry has this name");
            } else if alarm_sources.iter().any(|a| a.sender == sender) {
                self.error(&p.key("sender"), "another alarm source names this sender");
            }
            let mllp = s.mllp.as_deref().unwrap_or("").trim().to_string();
            let port_ok = mllp
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                self.error(
                    &p.key("mllp"),
                    "required: host:port of the source's MLLP listener",
                );
            } else if demo && !loopback(mllp.rsplit_once(':').map(|x| x.0).unwrap_or("")) {
                self.error(
                    &p.key("mllp"),
                    "a demo configuration may only send to loopback",
                );
            }
            if s.tls && s.ca.is_none() {
                self.error(
                    &p.key("ca"),
                    "`tls = true` needs `ca` (PEM bundle to verify the source)",
                );
            }
            let application = s
                .application
                .clone()
                .unwrap_or_else(|| "SWITCHBOARD".to_string());
            for (key, v) in [
                ("application", &application),
                ("facility", &s.facility.clone().unwrap_or_default()),
            ] {
                if v.chars().any(|c| "|^~\\&\r\n".contains(c)) {
                    self.error(
                        &p.key(key),
                        "must not contain HL7 delimiters (| ^ ~ \\ &) or line breaks",
                    );
                }
            }
            let retry = self.status_retry(
                &p,
                s.retry_initial_ms,
                s.retry_max_secs,
                s.give_up_after_secs,
                60,
            );
            alarm_sources.push(AlarmSourceConfig {
                sender,
                mllp,
                tls: s.tls,
                ca: s.ca.as_deref().map(|c| self.path(c)),
                server_name: s.server_name.clone(),
                application,
                facility: s.facility.clone().unwrap_or_default(),
                connect_timeout: Duration::from_secs(self.positive(
                    &p.key("connect_timeout_secs"),
                    s.connect_timeout_secs,
                    5,
                )),
                answer_timeout: Duration::from_secs(self.positive(
                    &p.key("answer_timeout_secs"),
                    s.answer_timeout_secs,
                    10,
                )),
                retry,
            });
        }
        StatusConfig {
            writeback,
            alarm_sources,
        }
    }

    fn writeback(&mut self, p: &FieldPath, w: &RawWriteback) -> WritebackConfig {
        let base = w
            .fhir_base
            .as_deref()
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            self.error(
                &p.key("fhir_base"),
                "required: the EHR's FHIR base, an http:// or https:// URL",
            );
        } else if base.starts_with("https://") && w.ca.is_none() {
            self.error(
                &p.key("ca"),
                "an https FHIR base needs `ca` (PEM bundle to verify it)",
            );
        }
        if w.client_cert.is_some() != w.client_key.is_some() {
            let which = if w.client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            self.error(&p.key(which), "`client_cert` and `client_key` go together");
        }
        if let Some(var) = &w.token_env
            && var.trim().is_empty()
        {
            self.error(&p.key("token_env"), "must name an environment variable");
        }
        let profile = w
            .profile
            .clone()
            .unwrap_or_else(|| crate::redact::DEFAULT_PROFILE.to_string());
        let end_to_end = w.end_to_end.unwrap_or(false);
        match crate::redact::builtin(&profile) {
            None => self.error(
                &p.key("profile"),
                format!(
                    "unknown profile; expected one of {}",
                    crate::redact::BUILTIN.join(", ")
                ),
            ),
            Some(prof) => {
                if let Err(why) = crate::redact::check_backend(&prof, end_to_end) {
                    self.error(
                        &p.key("profile"),
                        format!("{why} (set `end_to_end = true` only for a channel that is)"),
                    );
                }
            }
        }
        WritebackConfig {
            fhir_base: base,
            ca: w.ca.as_deref().map(|c| self.path(c)),
            client_cert: w.client_cert.as_deref().map(|c| self.path(c)),
            client_key: w.client_key.as_deref().map(|c| self.path(c)),
            token_env: w.token_env.clone(),
            profile,
            end_to_end,
            timeout: Duration::from_secs(self.positive(&p.key("timeout_secs"), w.timeout_secs, 10)),
            retry: self.status_retry(
                p,
                w.retry_initial_ms,
                w.retry_max_secs,
                w.give_up_after_secs,
                300,
            ),
        }
    }
}

/// The settings of a `kind = "fhir-communication"` backend (`url` is the
/// FHIR base; handles are `Practitioner/ID` or `PractitionerRole/ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirSettings {
    /// How often outstanding Communications are read back for status and
    /// replies.
    pub poll: Duration,
    /// Environment variable holding a bearer token, when the server asks
    /// for one.
    pub token_env: Option<String>,
}

impl Validator<'_> {
    /// The FHIR settings of backend `p` (`None` for other kinds, whose
    /// FHIR-only fields are refused).
    pub(super) fn fhir_settings(
        &mut self,
        p: &FieldPath,
        b: &super::raw::RawBackend,
        kind: super::BackendKind,
    ) -> Option<FhirSettings> {
        if kind != super::BackendKind::FhirCommunication {
            if b.token_env.is_some() {
                self.error(
                    &p.key("token_env"),
                    "only for kind = \"fhir-communication\"",
                );
            }
            return None;
        }
        match b.url.as_deref() {
            None => self.error(
                &p.key("url"),
                "required for a fhir-communication backend: the FHIR server's base URL",
            ),
            Some(u) if u.contains('?') || u.contains('#') => {
                self.error(&p.key("url"), "a FHIR base URL has no query or fragment")
            }
            Some(_) => {}
        }
        if b.secret_env.is_some() {
            self.error(
                &p.key("secret_env"),
                "webhook signing only; a fhir-communication backend authenticates with `token_env` or a client certificate",
            );
        }
        if let Some(var) = &b.token_env
            && var.trim().is_empty()
        {
            self.error(&p.key("token_env"), "must name an environment variable");
        }
        Some(FhirSettings {
            poll: Duration::from_secs(self.positive(&p.key("poll_secs"), b.poll_secs, 15)),
            token_env: b.token_env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConfigErrors, parse};

    const SENDERS: &str = r#"
[mllp]
listen = "127.0.0.1:0"

[[senders]]
name = "monitors"
msh3 = ["MON_GW"]
msh4 = ["*"]
networks = ["127.0.0.0/8"]
"#;

    fn check(extra_before: &str, extra_after: &str) -> Result<super::super::Config, ConfigErrors> {
        let text = format!("{extra_before}\n{SENDERS}\n{extra_after}");
        parse(Path::new("/etc/switchboard/switchboard.toml"), &text)
    }

    fn problems(e: ConfigErrors) -> Vec<(String, Option<usize>, String)> {
        e.0.into_iter()
            .map(|e| (e.field, e.line, e.problem))
            .collect()
    }

    #[test]
    fn alarm_sources_and_writeback_are_read_with_defaults() {
        let c = check(
            "[alerts.writeback]\nfhir_base = \"https://ehr.example/fhir/\"\nca = \"ca.pem\"\ntoken_env = \"EHR_TOKEN\"\n\n\
             [[alerts.alarm_sources]]\nsender = \"monitors\"\nmllp = \"10.1.2.3:2575\"\n",
            "",
        )
        .unwrap();
        let w = c.status.writeback.as_ref().unwrap();
        assert_eq!(w.fhir_base, "https://ehr.example/fhir");
        assert_eq!(w.profile, "limited");
        assert_eq!(w.ca.as_deref(), Some(Path::new("/etc/switchboard/ca.pem")));
        assert_eq!(
            w.retry.give_up_after,
            std::time::Duration::from_secs(86_400)
        );
        let a = c.status.alarm_source("monitors").unwrap();
        assert_eq!(
            (a.mllp.as_str(), a.application.as_str()),
            ("10.1.2.3:2575", "SWITCHBOARD")
        );
        assert_eq!(a.answer_timeout, std::time::Duration::from_secs(10));
        assert!(c.status.alarm_source("lab").is_none());
    }

    #[test]
    fn every_problem_names_its_field_and_line() {
        let e = check(
            "[alerts.writeback]\nfhir_base = \"https://ehr.example/fhir\"\nprofile = \"clinician-secure\"\n\n\
             [[alerts.alarm_sources]]\nsender = \"nobody\"\nmllp = \"no-port\"\ntls = true\napplication = \"A|B\"\n",
            "",
        )
        .unwrap_err();
        let p = problems(e);
        let fields: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            fields,
            [
                "alerts.writeback.ca",
                "alerts.writeback.profile",
                "alerts.alarm_sources[0].sender",
                "alerts.alarm_sources[0].mllp",
                "alerts.alarm_sources[0].ca",
                "alerts.alarm_sources[0].application",
            ],
            "{p:?}"
        );
        assert_eq!(p[2].1, Some(6), "the line of `sender`");
        assert!(p[1].2.contains("end-to-end"), "{}", p[1].2);
    }

    #[test]
    fn a_demo_configuration_reports_only_to_loopback() {
        let e = check(
            "demo = true\n[alerts.writeback]\nfhir_base = \"http://ehr.example/fhir\"\n\n\
             [[alerts.alarm_sources]]\nsender = \"monitors\"\nmllp = \"10.1.2.3:2575\"\n",
            "",
        )
        .unwrap_err();
        let fields: Vec<String> = problems(e).into_iter().map(|x| x.0).collect();
        assert_eq!(
            fields,
            ["alerts.writeback.fhir_base", "alerts.alarm_sources[0].mllp"]
        );
        let ok = check(
            "demo = true\n[alerts.writeback]\nfhir_base = \"http://127.0.0.1:8081/fhir\"\n\n\
             [[alerts.alarm_sources]]\nsender = \"monitors\"\nmllp = \"localhost:2576\"\n",
            "",
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn a_fhir_backend_needs_its_base_and_owns_token_env_and_poll_secs() {
        let backend = |kind: &str, extra: &str| {
            format!("[[backends]]\nname = \"b\"\nkind = \"{kind}\"\n{extra}\n")
        };
        let c = check(
            "",
            &backend(
                "fhir-communication",
                "url = \"http://127.0.0.1:8081/fhir\"\npoll_secs = 3\ntoken_env = \"T\"",
            ),
        )
        .unwrap();
        let f = c.backends[0].fhir.as_ref().unwrap();
        assert_eq!(f.poll, std::time::Duration::from_secs(3));
        assert_eq!(f.token_env.as_deref(), Some("T"));
        let e = check("", &backend("fhir-communication", "secret_env = \"S\"")).unwrap_err();
        let fields: Vec<String> = problems(e).into_iter().map(|x| x.0).collect();
        assert_eq!(fields, ["backends[0].url", "backends[0].secret_env"]);
        let e = check(
            "",
            &backend(
                "webhook",
                "url = \"http://127.0.0.1:1/\"\ntoken_env = \"T\"",
            ),
        )
        .unwrap_err();
        let fields: Vec<String> = problems(e).into_iter().map(|x| x.0).collect();
        assert_eq!(fields, ["backends[0].token_env"]);
    }
}
