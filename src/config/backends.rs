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
                Some(other) => {
                    self.error(
                        &p.key("kind"),
                        format!("backend kind `{other}` is not available in this build (available: webhook)"),
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
            let end_to_end = b.end_to_end.unwrap_or(false);
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
            });
        }
        out
    }
}
