//! `[[backends]]`: where notifications go. Each backend serves one contact
//! kind of the roster members (`contacts = { webhook = "..." }`), with a PHI
//! profile, an optional template, retries and a circuit breaker.

use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use super::locate::FieldPath;
use super::raw::RawBackend;

/// The kind of backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// HTTPS (or loopback HTTP) POST of a signed JSON document.
    Webhook,
    /// WCTP 1.3 paging gateway (`wctp-SubmitRequest`, replies and status
    /// through `wctp-PollForMessages`).
    Wctp,
    /// Matrix: end-to-end encrypted (Olm/Megolm) rooms on a homeserver;
    /// reactions, replies and read receipts come back through `/sync`.
    Matrix,
    /// FHIR R4 Communication POSTed to a FHIR server (conditional create);
    /// status and replies read back from it.
    FhirCommunication,
}

/// `[[backends]]`.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Unique name (metrics, audit, logs).
    pub name: String,
    /// Kind.
    pub kind: BackendKind,
    /// The member contact key it serves (default: `name`).
    pub contact: String,
    /// One endpoint for every recipient (the handle goes in the body);
    /// without it each member's handle is the URL.
    pub url: Option<String>,
    /// PHI profile name (`clinician-secure`, `limited`, `none`).
    pub profile: String,
    /// Message template (minijinja), checked against the profile.
    pub template: Option<String>,
    /// The channel is end-to-end encrypted to the named clinician.
    pub end_to_end: bool,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: Option<String>,
    /// CA bundle for `https` endpoints.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to `https` endpoints that ask.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Per request, connect to last byte.
    pub timeout: Duration,
    /// First retry delay (doubling, jittered).
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before the notification is dead-lettered.
    pub max_attempts: u32,
    /// Consecutive failures that open the circuit.
    pub circuit_failures: u32,
    /// How long an open circuit waits before trying again.
    pub circuit_open: Duration,
    /// Notifications sent at once (webhook default 8; other kinds 1, so a
    /// stateful channel — a Matrix direct room being created — sees one
    /// send at a time).
    pub concurrency: usize,
    /// WCTP settings (`kind = "wctp"` only).
    pub wctp: Option<WctpSettings>,
    /// Matrix settings (`kind = "matrix"` only).
    pub matrix: Option<MatrixSettings>,
    /// FHIR settings (`kind = "fhir-communication"` only).
    pub fhir: Option<super::FhirSettings>,
}

/// The settings of a `kind = "matrix"` backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixSettings {
    /// Client-server API base URL (`https://`, or `http://` on loopback).
    pub homeserver: String,
    /// The gateway's own Matrix user (`@switchboard:example.org`).
    pub user: String,
    /// Environment variable holding its password (first login only; the
    /// session is restored afterwards).
    pub password_env: String,
    /// Environment variable holding the passphrase that encrypts the
    /// store (device keys, Olm/Megolm sessions, access token) at rest.
    pub store_passphrase_env: String,
    /// Display name of the gateway's device.
    pub device_name: String,
}

/// The settings of a `kind = "wctp"` backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WctpSettings {
    /// `senderID` of `wctp-Originator` and `pollerID` of
    /// `wctp-PollForMessages` (1 to 128 characters).
    pub sender_id: String,
    /// Environment variable holding the `securityCode`, when the carrier
    /// asks for one.
    pub security_code_env: Option<String>,
    /// How often `wctp-PollForMessages` asks for status and replies.
    pub poll: Duration,
    /// Longest message text the devices take (characters); longer text is
    /// cut on a character boundary.
    pub max_chars: Option<usize>,
    /// Send Accept/Decline as multiple-choice responses (`wctp-MCR`).
    pub mcr: bool,
}

impl Validator<'_> {
    pub(super) fn backends(&mut self, raw: &[RawBackend]) -> Vec<BackendConfig> {
        let root = FieldPath::root().key("backends");
        let mut out: Vec<BackendConfig> = Vec::new();
        for (i, b) in raw.iter().enumerate() {
            let p = root.index(i);
            let name = b.name.as_deref().unwrap_or("").trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                self.error(&p.key("name"), "required: letters, digits, '-' or '_'");
            } else if out.iter().any(|x| x.name == name) {
                self.error(&p.key("name"), "another backend has this name");
            }
            let kind = match b.kind.as_deref().map(str::trim) {
                Some("webhook") => BackendKind::Webhook,
                Some("wctp") => BackendKind::Wctp,
                Some("matrix") => BackendKind::Matrix,
                Some("fhir-communication") => BackendKind::FhirCommunication,
                Some(other) => {
                    self.error(
                        &p.key("kind"),
                        format!("backend kind `{other}` is not available in this build (available: webhook, wctp, matrix, fhir-communication)"),
                    );
                    BackendKind::Webhook
                }
                None => {
                    self.error(&p.key("kind"), "required (webhook)");
                    BackendKind::Webhook
                }
            };
            let contact = b.contact.clone().unwrap_or_else(|| name.clone());
            if out.iter().any(|x| x.contact == contact) {
                self.error(
                    &p.key("contact"),
                    "another backend serves this contact kind",
                );
            }
            if let Some(u) = &b.url
                && !(u.starts_with("https://") || u.starts_with("http://"))
            {
                self.error(&p.key("url"), "expected an http:// or https:// URL");
            }
            if b.url.as_deref().is_some_and(|u| u.starts_with("https://")) && b.ca.is_none() {
                self.error(
                    &p.key("ca"),
                    "an https endpoint needs `ca` (PEM bundle to verify it)",
                );
            }
            let profile = b
                .profile
                .clone()
                .unwrap_or_else(|| crate::redact::DEFAULT_PROFILE.to_string());
            // A Matrix backend only ever sends into end-to-end encrypted rooms.
            let end_to_end = b.end_to_end.unwrap_or(kind == BackendKind::Matrix);
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
                    if let Some(t) = &b.template
                        && let Err(e) = crate::redact::compile(&name, t, &prof)
                    {
                        self.error(&p.key("template"), e.to_string());
                    }
                }
            }
            if b.client_cert.is_some() != b.client_key.is_some() {
                let which = if b.client_cert.is_some() {
                    "client_key"
                } else {
                    "client_cert"
                };
                self.error(&p.key(which), "`client_cert` and `client_key` go together");
            }
            if b.client_cert.is_some() && b.ca.is_none() {
                self.error(
                    &p.key("ca"),
                    "a client certificate is only sent over https: set `ca`",
                );
            }
            if let Some(var) = &b.secret_env
                && var.trim().is_empty()
            {
                self.error(&p.key("secret_env"), "must name an environment variable");
            }
            let wctp = self.wctp_settings(&p, b, kind);
            let matrix = self.matrix_settings(&p, b, kind);
            let fhir = self.fhir_settings(&p, b, kind);
            out.push(BackendConfig {
                name,
                kind,
                contact,
                url: b.url.clone(),
                profile,
                template: b.template.clone(),
                end_to_end,
                secret_env: b.secret_env.clone(),
                ca: b.ca.as_deref().map(|c| self.path(c)),
                client_cert: b.client_cert.as_deref().map(|c| self.path(c)),
                client_key: b.client_key.as_deref().map(|c| self.path(c)),
                timeout: Duration::from_secs(self.positive(
                    &p.key("timeout_secs"),
                    b.timeout_secs,
                    10,
                )),
                retry_initial: Duration::from_millis(self.positive(
                    &p.key("retry_initial_ms"),
                    b.retry_initial_ms,
                    1000,
                )),
                retry_max: Duration::from_secs(self.positive(
                    &p.key("retry_max_secs"),
                    b.retry_max_secs,
                    300,
                )),
                max_attempts: self.positive(
                    &p.key("max_attempts"),
                    b.max_attempts.map(u64::from),
                    20,
                ) as u32,
                circuit_failures: self.positive(
                    &p.key("circuit_failures"),
                    b.circuit_failures.map(u64::from),
                    5,
                ) as u32,
                circuit_open: Duration::from_secs(self.positive(
                    &p.key("circuit_open_secs"),
                    b.circuit_open_secs,
                    30,
                )),
                concurrency: self
                    .positive(
                        &p.key("concurrency"),
                        b.concurrency.map(|c| c as u64),
                        if kind == BackendKind::Webhook { 8 } else { 1 },
                    )
                    .min(64) as usize,
                wctp,
                matrix,
                fhir,
            });
        }
        out
    }
}

impl Validator<'_> {
    /// The WCTP settings of backend `p` (`None` for other kinds, whose
    /// WCTP fields are refused).
    fn wctp_settings(
        &mut self,
        p: &FieldPath,
        b: &RawBackend,
        kind: BackendKind,
    ) -> Option<WctpSettings> {
        if kind != BackendKind::Wctp {
            let set = [
                ("sender_id", b.sender_id.is_some()),
                ("security_code_env", b.security_code_env.is_some()),
                (
                    "poll_secs",
                    b.poll_secs.is_some() && kind != BackendKind::FhirCommunication,
                ),
                ("max_chars", b.max_chars.is_some()),
                ("mcr", b.mcr.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, s)| *s) {
                self.error(&p.key(field), "only for kind = \"wctp\"");
            }
            return None;
        }
        if b.url.is_none() {
            self.error(
                &p.key("url"),
                "required for a wctp backend: the carrier's WCTP endpoint",
            );
        }
        if b.secret_env.is_some() {
            self.error(
                &p.key("secret_env"),
                "webhook signing only; a wctp backend authenticates with `security_code_env`",
            );
        }
        let sender_id = b.sender_id.as_deref().unwrap_or("").trim().to_string();
        if sender_id.is_empty()
            || sender_id.chars().count() > 128
            || sender_id.chars().any(char::is_control)
        {
            self.error(
                &p.key("sender_id"),
                "required: the senderID the carrier knows this gateway by (1 to 128 characters)",
            );
        }
        if let Some(var) = &b.security_code_env
            && var.trim().is_empty()
        {
            self.error(
                &p.key("security_code_env"),
                "must name an environment variable",
            );
        }
        if let Some(n) = b.max_chars
            && n < 16
        {
            self.error(&p.key("max_chars"), "at least 16 characters");
        }
        Some(WctpSettings {
            sender_id,
            security_code_env: b.security_code_env.clone(),
            poll: Duration::from_secs(self.positive(&p.key("poll_secs"), b.poll_secs, 15)),
            max_chars: b.max_chars,
            mcr: b.mcr.unwrap_or(true),
        })
    }
}

impl Validator<'_> {
    /// The Matrix settings of backend `p` (`None` for other kinds, whose
    /// Matrix fields are refused).
    fn matrix_settings(
        &mut self,
        p: &FieldPath,
        b: &RawBackend,
        kind: BackendKind,
    ) -> Option<MatrixSettings> {
        if kind != BackendKind::Matrix {
            let set = [
                ("homeserver", b.homeserver.is_some()),
                ("user", b.user.is_some()),
                ("password_env", b.password_env.is_some()),
                ("store_passphrase_env", b.store_passphrase_env.is_some()),
                ("device_name", b.device_name.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, s)| *s) {
                self.error(&p.key(field), "only for kind = \"matrix\"");
            }
            return None;
        }
        for (field, set, why) in [
            (
                "url",
                b.url.is_some(),
                "not used by a matrix backend: set `homeserver`",
            ),
            (
                "secret_env",
                b.secret_env.is_some(),
                "webhook signing only; a matrix backend logs in with `password_env`",
            ),
            (
                "client_cert",
                b.client_cert.is_some(),
                "not supported by a matrix backend",
            ),
            (
                "client_key",
                b.client_key.is_some(),
                "not supported by a matrix backend",
            ),
        ] {
            if set {
                self.error(&p.key(field), why);
            }
        }
        let homeserver = b.homeserver.as_deref().unwrap_or("").trim().to_string();
        match matrix_homeserver_problem(&homeserver) {
            Some(why) => self.error(&p.key("homeserver"), why),
            None => {
                if homeserver.starts_with("http://") && b.ca.is_some() {
                    self.error(&p.key("ca"), "a CA bundle is only used over https");
                }
            }
        }
        let user = b.user.as_deref().unwrap_or("").trim().to_string();
        if !is_matrix_user_id(&user) {
            self.error(
                &p.key("user"),
                "required: the gateway's Matrix user id, e.g. `@switchboard:example.org`",
            );
        }
        let mut env = |field: &str, value: &Option<String>, what: &str| -> String {
            let v = value.as_deref().unwrap_or("").trim().to_string();
            if v.is_empty() {
                self.error(
                    &p.key(field),
                    format!(
                        "required for a matrix backend: the environment variable holding {what}"
                    ),
                );
            }
            v
        };
        let password_env = env("password_env", &b.password_env, "the password");
        let store_passphrase_env = env(
            "store_passphrase_env",
            &b.store_passphrase_env,
            "the passphrase that encrypts the key store",
        );
        let device_name = match b.device_name.as_deref().map(str::trim) {
            None => "switchboard".to_string(),
            Some(n)
                if !n.is_empty()
                    && n.chars().count() <= 100
                    && !n.chars().any(char::is_control) =>
            {
                n.to_string()
            }
            Some(_) => {
                self.error(&p.key("device_name"), "1 to 100 printable characters");
                String::new()
            }
        };
        Some(MatrixSettings {
            homeserver,
            user,
            password_env,
            store_passphrase_env,
            device_name,
        })
    }
}

/// Why `url` is not a usable homeserver URL: `https://`, or plain
/// `http://` only to a loopback host (an access token never crosses a
/// network in the clear).
fn matrix_homeserver_problem(url: &str) -> Option<&'static str> {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        return (r.is_empty() || r.starts_with('/'))
            .then_some("expected the homeserver's https:// URL");
    } else if let Some(r) = url.strip_prefix("http://") {
        r
    } else {
        return Some("required: the homeserver's https:// URL (http:// only on loopback)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some("plain http:// only to a loopback homeserver; use https://")
}

/// `@localpart:server` (the grammar's characters; the server part is
/// checked by the homeserver).
fn is_matrix_user_id(s: &str) -> bool {
    let Some((local, server)) = s.strip_prefix('@').and_then(|r| r.split_once(':')) else {
        return false;
    };
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c))
        && !server.is_empty()
        && !server.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.len() <= 255
}
