//! `[operator_alarms]`: where alarms for the people who run the gateway go
//! (feed silent, backend down, outbox aging, escalation exhausted, storage
//! failing, notifications dead-lettered) — a channel of its own, never one of
//! the clinical `[[backends]]` — and the heartbeat that lets an external
//! monitor notice a dead gateway. Feeds opt in to silence detection with
//! `[[senders]] silent_after_secs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Validator;
use super::locate::FieldPath;

/// `[operator_alarms]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperatorAlarms {
    pub url: Option<String>,
    pub secret_env: Option<String>,
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub heartbeat_url: Option<String>,
    pub heartbeat_secs: Option<u64>,
    pub check_secs: Option<u64>,
    pub outbox_age_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
}

/// `[operator_alarms]`, validated.
#[derive(Clone, Debug)]
pub struct OperatorAlarmsConfig {
    /// Where alarms are POSTed (JSON, signed when `secret_env` is set);
    /// `None`: alarms go to the log, the audit trail and the metrics only.
    pub url: Option<String>,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: Option<String>,
    /// CA bundle for `https` URLs.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub client_key: Option<PathBuf>,
    /// An external monitor's URL POSTed every `heartbeat` while the gateway
    /// runs (a dead man's switch: silence there means the gateway is down).
    pub heartbeat_url: Option<String>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How often conditions (feed silence, outbox age, storage) are checked.
    pub check: Duration,
    /// A backend whose oldest waiting notification is older than this raises
    /// `outbox_aging`.
    pub outbox_age: Duration,
    /// Per request.
    pub timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn operator_alarms(&mut self, raw: &RawOperatorAlarms) -> OperatorAlarmsConfig {
        let p = FieldPath::root().key("operator_alarms");
        for (key, url) in [("url", &raw.url), ("heartbeat_url", &raw.heartbeat_url)] {
            if let Some(u) = url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    self.error(&p.key(key), "expected an http:// or https:// URL");
                } else if u.starts_with("https://") && raw.ca.is_none() {
                    self.error(
                        &p.key("ca"),
                        "an https URL needs `ca` (PEM bundle to verify it)",
                    );
                }
            }
        }
        if raw.client_cert.is_some() != raw.client_key.is_some() {
            let which = if raw.client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            self.error(&p.key(which), "`client_cert` and `client_key` go together");
        }
        if let Some(var) = &raw.secret_env
            && var.trim().is_empty()
        {
            self.error(&p.key("secret_env"), "must name an environment variable");
        }
        OperatorAlarmsConfig {
            url: raw.url.clone(),
            secret_env: raw.secret_env.clone(),
            ca: raw.ca.as_deref().map(|c| self.path(c)),
            client_cert: raw.client_cert.as_deref().map(|c| self.path(c)),
            client_key: raw.client_key.as_deref().map(|c| self.path(c)),
            heartbeat_url: raw.heartbeat_url.clone(),
            heartbeat: Duration::from_secs(self.positive(
                &p.key("heartbeat_secs"),
                raw.heartbeat_secs,
                60,
            )),
            check: Duration::from_secs(self.positive(&p.key("check_secs"), raw.check_secs, 15)),
            outbox_age: Duration::from_secs(self.positive(
                &p.key("outbox_age_secs"),
                raw.outbox_age_secs,
                300,
            )),
            timeout: Duration::from_secs(self.positive(
                &p.key("timeout_secs"),
                raw.timeout_secs,
                10,
            )),
        }
    }
}
