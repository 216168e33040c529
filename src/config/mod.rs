//! Configuration: `switchboard.toml` -> validated [`Config`].
//!
//! Raw serde structs ([`raw`]) reject unknown fields; [`validate`] turns them
//! into `Config`, collecting every problem with file, line, column and field
//! (ripgrep's LowArgs -> HiArgs). A `Config` therefore only exists when it is
//! valid: the rest of the gateway never re-checks it. Relative paths are
//! resolved against the folder of the configuration file.

mod backends;
mod error;
mod live;
pub(crate) mod locate;
mod operator_alarms;
#[allow(missing_docs)]
pub mod raw;
mod writeback;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use ipnet::IpNet;

pub use backends::{BackendConfig, BackendKind, MatrixSettings, WctpSettings};
pub use error::{ConfigError, ConfigErrors};
pub use live::{AlertsConfig, CensusConfig, OperatorConfig, Permission, ReloadConfig};
use locate::{FieldPath, Locator};
pub use operator_alarms::OperatorAlarmsConfig;
use raw::RawConfig;
pub use writeback::{AlarmSourceConfig, FhirSettings, StatusConfig, StatusRetry, WritebackConfig};

use crate::event::Processing;
use crate::roster::Rosters;
use crate::rules::Rules;

/// Name of the configuration file looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "switchboard.toml";

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from.
    pub source: PathBuf,
    /// True for the bundled example configuration.
    pub demo: bool,
    /// Journal settings.
    pub storage: StorageConfig,
    /// MLLP listener settings.
    pub mllp: MllpConfig,
    /// HTTP listener settings.
    pub http: HttpConfig,
    /// Application acknowledgement delivery.
    pub outbox: OutboxConfig,
    /// Sender table, in file order (first match wins).
    pub senders: Vec<SenderConfig>,
    /// Key-encryption keys.
    pub keys: KeysConfig,
    /// Audit trail.
    pub audit: AuditConfig,
    /// Retention schedules.
    pub retention: RetentionConfig,
    /// Callers of the operator API.
    pub operators: Vec<OperatorConfig>,
    /// The patient census.
    pub census: CensusConfig,
    /// Live reload of rosters and mappings.
    pub reload: ReloadConfig,
    /// Alert lifecycle settings.
    pub alerts: AlertsConfig,
    /// Where notifications are delivered.
    pub backends: Vec<BackendConfig>,
    /// Alarms for the operators, on their own channel.
    pub operator_alarms: OperatorAlarmsConfig,
    /// Status flowing back: the EHR write-back and alarm sources
    /// (`[alerts.writeback]`, `[[alerts.alarm_sources]]`).
    pub status: StatusConfig,
    /// Roster folder.
    pub rosters_dir: PathBuf,
    /// Mapping folder.
    pub mappings_dir: PathBuf,
    /// The on-call rosters, validated.
    pub rosters: Arc<Rosters>,
    /// The mapping rules, validated against the rosters.
    pub rules: Arc<Rules>,
}

/// `[storage]`: the journal.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Folder holding `journal.sqlite3` (created when missing).
    pub data_dir: PathBuf,
    /// How long an accepted message's (MSH-3, MSH-4, MSH-10) counts as a duplicate key.
    pub dedup_window: Duration,
    /// Largest number of messages committed in one transaction.
    pub commit_batch_max: usize,
    /// Messages waiting for the committer before senders are slowed down.
    pub commit_queue: usize,
}

/// `[mllp]`: the MLLP listener.
#[derive(Clone, Debug)]
pub struct MllpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest frame accepted; a larger one is answered AE 104 and the connection closed.
    pub max_frame_bytes: usize,
    /// Concurrent connections; one beyond it is closed at once and counted.
    pub max_connections: usize,
    /// A connection with no frame in progress is closed after this long without bytes.
    pub idle_timeout: Duration,
    /// A frame must complete within this long from its start block (slowloris).
    pub frame_timeout: Duration,
    /// TCP keepalive idle time.
    pub keepalive: Duration,
    /// Frames read ahead of their acknowledgement on one connection (pipelining).
    pub max_in_flight: usize,
    /// When true, a frame whose end block is not followed by CR closes the connection.
    pub strict_framing: bool,
    /// TLS, when configured.
    pub tls: Option<TlsConfig>,
}

/// `[mllp.tls]`
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by these CAs (PEM bundle).
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) checked for client certificates.
    pub crls: Vec<PathBuf>,
    /// A TLS handshake must finish within this long.
    pub handshake_timeout: Duration,
}

/// `[keys]`: where the key-encryption keys live, apart from the data.
#[derive(Clone, Debug)]
pub struct KeysConfig {
    /// Folder of key files (`kek-<id>.key`, mode 0600). The first key is
    /// generated on first start when the folder holds none.
    pub dir: PathBuf,
    /// When set, the key-encryption key is read (hex) from this environment
    /// variable instead of the folder.
    pub env: Option<String>,
}

/// `[audit]`: the hash-chained audit log and its signed checkpoints.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Checkpoint origin line, naming this log (e.g. `switchboard.example-hospital/audit`).
    pub origin: String,
    /// Ed25519 signing key file (generated on first start, mode 0600).
    pub signing_key: PathBuf,
    /// A second location for checkpoints, standing for "off the box".
    pub checkpoint_dir: Option<PathBuf>,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or after this long, whichever comes first.
    pub checkpoint_interval: Duration,
    /// The checkpoint verifier key as known off the box (`switchboard audit
    /// key` prints it); `audit verify` then refuses a log re-signed with any
    /// other key.
    pub trusted_key: Option<crate::audit::VerifierKey>,
    /// Ship every audit record to a SIEM as RFC 5424 syslog over TLS.
    pub syslog: Option<SyslogConfig>,
}

/// `[audit] syslog_*`: a SIEM collector (RFC 5425, syslog over TLS).
#[derive(Clone, Debug)]
pub struct SyslogConfig {
    /// `host:port` (6514 is the registered port).
    pub address: String,
    /// Name the collector's certificate must carry.
    pub server_name: String,
    /// CA bundle (PEM) that issues the collector's certificate.
    pub ca: PathBuf,
    /// How often new records are shipped.
    pub interval: Duration,
}

/// `[retention]`: how long each category is kept before crypto-erase.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// Raw messages.
    pub raw_messages: Duration,
    /// Parsed events.
    pub events: Duration,
    /// Alerts.
    pub alerts: Duration,
    /// Deliveries.
    pub deliveries: Duration,
    /// The audit trail (at least six years).
    pub audit: Duration,
}

/// `[http]`
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS (and mutual TLS), as for MLLP.
    pub tls: Option<TlsConfig>,
    /// Largest request body; larger ones get 413 without being read whole.
    pub max_body_bytes: usize,
    /// Request headers must arrive within this long (slowloris).
    pub header_timeout: Duration,
    /// A whole request (body included) must be read and answered within this long.
    pub request_timeout: Duration,
    /// Base path of the FHIR endpoints (default `/fhir`).
    pub fhir_base: String,
    /// Concurrent HTTP connections; one beyond it gets `503` at once and is closed.
    pub max_connections: usize,
}

/// `[outbox]`: delivery of application acknowledgements.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// First retry delay.
    pub retry_initial: Duration,
    /// Retry delay cap (exponential backoff in between).
    pub retry_max: Duration,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the receiver's answer to an application acknowledgement.
    pub answer_timeout: Duration,
}

/// A FHIR server Switchboard may read from.
#[derive(Clone, Debug)]
pub struct FhirSource {
    /// Base URL, e.g. `https://ehr.example/fhir` (no trailing slash).
    pub base: String,
    /// Environment variable holding the bearer token (never in the file).
    pub token_env: Option<String>,
    /// CA bundle (PEM) for an `https` base.
    pub ca: Option<PathBuf>,
}

/// Matches MSH-3.1 or MSH-4.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdMatcher {
    /// `*`: anything.
    Any,
    /// One of these values exactly.
    OneOf(Vec<String>),
}

impl IdMatcher {
    /// True when `value` is allowed.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            IdMatcher::Any => true,
            IdMatcher::OneOf(v) => v.iter().any(|x| x == value),
        }
    }
}

/// Where a sender's application acknowledgements go.
#[derive(Clone, Debug)]
pub struct ReturnDestination {
    /// `host:port` of the sender's MLLP listener.
    pub address: String,
    /// Connect with TLS.
    pub tls: bool,
    /// TLS server name (defaults to the host of `address`).
    pub server_name: Option<String>,
    /// CA bundle to verify the receiver (PEM); required with `tls`.
    pub ca: Option<PathBuf>,
    /// Wait for the receiver's own acknowledgement before marking delivered.
    pub await_answer: bool,
}

/// `[[senders]]`: a configured feed.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Name used in the journal, logs and metrics.
    pub name: String,
    /// Allowed MSH-3.1 (sending application).
    pub msh3: IdMatcher,
    /// Allowed MSH-4.1 (sending facility).
    pub msh4: IdMatcher,
    /// Source networks the feed must arrive from (empty: not checked).
    pub networks: Vec<IpNet>,
    /// Client certificate identities (subject CN or DNS SAN) the feed must present (empty: not checked).
    pub certificates: Vec<String>,
    /// SHA-256 of the bearer tokens this sender may present on the FHIR
    /// endpoints (the tokens themselves are never stored).
    pub tokens_sha256: Vec<[u8; 32]>,
    /// The sender's own FHIR server, for id-only subscription notifications
    /// (the focus resource is fetched) and for recovering missed events
    /// with `$events`.
    pub fhir_source: Option<FhirSource>,
    /// Zone of timestamps that carry no offset.
    pub timezone: Tz,
    /// MSH-11 processing ids accepted from this sender.
    pub processing_ids: Vec<Processing>,
    /// Charset assumed when MSH-18 is empty.
    pub default_charset: String,
    /// Answer AR 200/201 to message types Switchboard does not route (instead of AA + filtered).
    pub reject_unknown_types: bool,
    /// Where application acknowledgements go (enhanced mode, MSH-16).
    pub return_destination: Option<ReturnDestination>,
    /// No message from this feed for this long raises a `feed_silent`
    /// operator alarm (`None`: not watched).
    pub silent_after: Option<std::time::Duration>,
}

impl SenderConfig {
    /// True when this sender claims MSH-3.1 / MSH-4.1.
    pub fn claims(&self, msh3: &str, msh4: &str) -> bool {
        self.msh3.matches(msh3) && self.msh4.matches(msh4)
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            problem: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates configuration text that was read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = locator.line_col(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let field = e
            .span()
            .and_then(|s| text.get(s))
            .filter(|s| s.len() < 64 && !s.contains('\n'))
            .unwrap_or("")
            .trim()
            .to_string();
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            field,
            problem: e.message().trim().to_string(),
        }])
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut v = Validator {
        file: path.to_path_buf(),
        locator: &locator,
        errors: Vec::new(),
        base,
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

struct Validator<'a> {
    file: PathBuf,
    locator: &'a Locator,
    errors: Vec<ConfigError>,
    base: PathBuf,
}

impl Validator<'_> {
    fn error(&mut self, path: &FieldPath, problem: impl Into<String>) {
        let pos = self.locator.position(path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field: path.to_string(),
            problem: problem.into(),
        });
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn addr(&mut self, path: &FieldPath, value: Option<&str>, default: &str) -> SocketAddr {
        let value = value.unwrap_or(default);
        match value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    path,
                    "expected an IP address and port such as 127.0.0.1:2575",
                );
                default.parse().expect("default address is valid")
            }
        }
    }

    fn positive(&mut self, path: &FieldPath, value: Option<u64>, default: u64) -> u64 {
        match value {
            Some(0) => {
                self.error(path, "must be greater than zero");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn positive_usize(&mut self, path: &FieldPath, value: Option<usize>, default: usize) -> usize {
        self.positive(path, value.map(|v| v as u64), default as u64) as usize
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let root = FieldPath::root();
        let st = root.key("storage");
        let storage = StorageConfig {
            data_dir: self.path(raw.storage.data_dir.as_deref().unwrap_or("data")),
            dedup_window: Duration::from_secs(
                3600 * self.positive(
                    &st.key("dedup_window_hours"),
                    raw.storage.dedup_window_hours,
                    72,
                ),
            ),
            commit_batch_max: self.positive_usize(
                &st.key("commit_batch_max"),
                raw.storage.commit_batch_max,
                512,
            ),
            commit_queue: self.positive_usize(
                &st.key("commit_queue"),
                raw.storage.commit_queue,
                4096,
            ),
        };

        let m = root.key("mllp");
        let rm = &raw.mllp;
        let tls = rm.tls.as_ref().map(|t| self.tls(&m.key("tls"), t));
        let mllp = MllpConfig {
            listen: self.addr(&m.key("listen"), rm.listen.as_deref(), "127.0.0.1:2575"),
            max_frame_bytes: self.positive_usize(
                &m.key("max_frame_bytes"),
                rm.max_frame_bytes,
                4 * 1024 * 1024,
            ),
            max_connections: self.positive_usize(
                &m.key("max_connections"),
                rm.max_connections,
                256,
            ),
            idle_timeout: Duration::from_secs(self.positive(
                &m.key("idle_timeout_secs"),
                rm.idle_timeout_secs,
                600,
            )),
            frame_timeout: Duration::from_secs(self.positive(
                &m.key("frame_timeout_secs"),
                rm.frame_timeout_secs,
                30,
            )),
            keepalive: Duration::from_secs(self.positive(
                &m.key("keepalive_secs"),
                rm.keepalive_secs,
                60,
            )),
            max_in_flight: self.positive_usize(&m.key("max_in_flight"), rm.max_in_flight, 64),
            strict_framing: rm.strict_framing.unwrap_or(false),
            tls,
        };
        if mllp.max_frame_bytes < 1024 {
            self.error(&m.key("max_frame_bytes"), "must be at least 1024");
        }

        let h = root.key("http");
        let http_tls = raw.http.tls.as_ref().map(|t| self.tls(&h.key("tls"), t));
        let fhir_base = raw
            .http
            .fhir_base
            .clone()
            .unwrap_or_else(|| "/fhir".to_string());
        if !fhir_base.starts_with('/') || fhir_base.ends_with('/') || fhir_base.contains(' ') {
            self.error(
                &h.key("fhir_base"),
                "a path such as /fhir (leading /, no trailing /)",
            );
        }
        let http = HttpConfig {
            listen: self.addr(
                &h.key("listen"),
                raw.http.listen.as_deref(),
                "127.0.0.1:8080",
            ),
            tls: http_tls,
            max_body_bytes: self.positive_usize(
                &h.key("max_body_bytes"),
                raw.http.max_body_bytes,
                8 * 1024 * 1024,
            ),
            header_timeout: Duration::from_secs(self.positive(
                &h.key("header_timeout_secs"),
                raw.http.header_timeout_secs,
                30,
            )),
            request_timeout: Duration::from_secs(self.positive(
                &h.key("request_timeout_secs"),
                raw.http.request_timeout_secs,
                60,
            )),
            fhir_base,
            max_connections: self.positive_usize(
                &h.key("max_connections"),
                raw.http.max_connections,
                256,
            ),
        };

        let o = root.key("outbox");
        let outbox = OutboxConfig {
            retry_initial: Duration::from_secs(self.positive(
                &o.key("retry_initial_secs"),
                raw.outbox.retry_initial_secs,
                1,
            )),
            retry_max: Duration::from_secs(self.positive(
                &o.key("retry_max_secs"),
                raw.outbox.retry_max_secs,
                60,
            )),
            connect_timeout: Duration::from_secs(self.positive(
                &o.key("connect_timeout_secs"),
                raw.outbox.connect_timeout_secs,
                5,
            )),
            answer_timeout: Duration::from_secs(self.positive(
                &o.key("answer_timeout_secs"),
                raw.outbox.answer_timeout_secs,
                10,
            )),
        };

        let mut senders: Vec<SenderConfig> = Vec::new();
        for (i, s) in raw.senders.iter().enumerate() {
            let p = root.key("senders").index(i);
            let sender = self.sender(&p, s);
            if senders.iter().any(|o| o.name == sender.name) {
                self.error(&p.key("name"), "another sender already has this name");
            }
            senders.push(sender);
        }
        if raw.demo {
            self.demo_rules(&mllp, &http, &senders);
        }

        let keys = KeysConfig {
            dir: self.path(raw.keys.dir.as_deref().unwrap_or("keys")),
            env: raw.keys.env.clone(),
        };
        let a = root.key("audit");
        let audit = AuditConfig {
            origin: raw
                .audit
                .origin
                .clone()
                .unwrap_or_else(|| "switchboard/audit".to_string()),
            signing_key: self.path(
                raw.audit
                    .signing_key
                    .as_deref()
                    .unwrap_or("keys/audit-signing.key"),
            ),
            checkpoint_dir: raw.audit.checkpoint_dir.as_deref().map(|d| self.path(d)),
            checkpoint_every: self.positive(
                &a.key("checkpoint_every"),
                raw.audit.checkpoint_every,
                1000,
            ),
            checkpoint_interval: Duration::from_secs(self.positive(
                &a.key("checkpoint_secs"),
                raw.audit.checkpoint_secs,
                60,
            )),
            trusted_key: None,
            syslog: None,
        };
        let audit = AuditConfig {
            trusted_key: match raw.audit.trusted_key.as_deref() {
                None => None,
                Some(k) => match k.parse::<crate::audit::VerifierKey>() {
                    Ok(key) => Some(key),
                    Err(_) => {
                        self.error(
                            &a.key("trusted_key"),
                            "not a verifier key (copy the line `switchboard audit key` prints)",
                        );
                        None
                    }
                },
            },
            syslog: match raw.audit.syslog_address.as_deref() {
                None => None,
                Some(addr) => {
                    let host = addr.rsplit_once(':').map(|x| x.0).unwrap_or("");
                    if host.is_empty()
                        || addr
                            .rsplit_once(':')
                            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                    {
                        self.error(&a.key("syslog_address"), "expected host:port");
                    }
                    let ca = match raw.audit.syslog_ca.as_deref() {
                        Some(c) => self.path(c),
                        None => {
                            self.error(
                                &a.key("syslog_ca"),
                                "required with `syslog_address`: the collector's CA (PEM)",
                            );
                            PathBuf::new()
                        }
                    };
                    if !ca.as_os_str().is_empty() && !ca.is_file() {
                        self.error(
                            &a.key("syslog_ca"),
                            format!("no such file: {}", ca.display()),
                        );
                    }
                    Some(SyslogConfig {
                        address: addr.to_string(),
                        server_name: raw
                            .audit
                            .syslog_server_name
                            .clone()
                            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()),
                        ca,
                        interval: Duration::from_secs(self.positive(
                            &a.key("syslog_interval_secs"),
                            raw.audit.syslog_interval_secs,
                            5,
                        )),
                    })
                }
            },
            ..audit
        };
        if audit.origin.trim().is_empty() || audit.origin.contains('\n') {
            self.error(&a.key("origin"), "must be one non-empty line");
        }
        let r = root.key("retention");
        let rr = &raw.retention;
        let day = 24 * 3600;
        let retention = RetentionConfig {
            raw_messages: Duration::from_secs(
                day * self.positive(&r.key("raw_messages_days"), rr.raw_messages_days, 30),
            ),
            events: Duration::from_secs(
                day * self.positive(&r.key("events_days"), rr.events_days, 365),
            ),
            alerts: Duration::from_secs(
                day * self.positive(&r.key("alerts_days"), rr.alerts_days, 365),
            ),
            deliveries: Duration::from_secs(
                day * self.positive(&r.key("deliveries_days"), rr.deliveries_days, 365),
            ),
            audit: Duration::from_secs(
                365 * day * self.positive(&r.key("audit_years"), rr.audit_years, 6),
            ),
        };
        if rr.audit_years.is_some_and(|y| y < 6) {
            self.error(
                &r.key("audit_years"),
                "HIPAA documentation must be kept at least six years",
            );
        }
        if retention.raw_messages < storage.dedup_window {
            self.error(
                &r.key("raw_messages_days"),
                "raw messages must be kept at least as long as the duplicate window",
            );
        }

        let operators = self.operators(&raw.operators);
        let census = self.census(&raw.census);
        let reload = self.reload(&raw.reload);
        let alerts = self.alerts(&raw.alerts);
        let backends = self.backends(&raw.backends);
        let operator_alarms = self.operator_alarms(&raw.operator_alarms);
        let sender_names: Vec<String> = senders.iter().map(|s| s.name.clone()).collect();
        let status = self.status(
            raw.demo,
            raw.alerts.writeback.as_ref(),
            &raw.alerts.alarm_sources,
            &sender_names,
        );

        let rosters_dir = self.path(raw.rosters_dir.as_deref().unwrap_or("rosters"));
        let mappings_dir = self.path(raw.mappings_dir.as_deref().unwrap_or("mappings"));
        let console = self.console_rosters(&storage.data_dir.join("journal.sqlite3"));
        let (rosters, rules) = self.routing(
            &rosters_dir,
            raw.rosters_dir.is_some(),
            &mappings_dir,
            raw.mappings_dir.is_some(),
            &console,
        );

        Config {
            source: self.file.clone(),
            demo: raw.demo,
            storage,
            mllp,
            http,
            outbox,
            senders,
            keys,
            audit,
            retention,
            operators,
            census,
            reload,
            alerts,
            backends,
            operator_alarms,
            status,
            rosters_dir,
            mappings_dir,
            rosters,
            rules,
        }
    }

    /// The console-managed rosters saved in the journal, when there is one.
    fn console_rosters(&mut self, journal: &Path) -> Vec<crate::journal::RosterRevision> {
        use crate::journal::Storage;
        if !journal.is_file() {
            return Vec::new();
        }
        match crate::journal::SqliteStorage::open_read_only(journal, None)
            .and_then(|mut s| s.rosters_current())
        {
            Ok(c) => c,
            Err(e) => {
                self.error(
                    &FieldPath::root().key("storage").key("data_dir"),
                    format!("cannot read the console-managed rosters from the journal: {e}"),
                );
                Vec::new()
            }
        }
    }

    /// Loads and validates the rosters (the folder's files and the
    /// console-managed ones) and the mapping rules, as a reload does
    /// ([`crate::live::validate`]; every error names its file, line, column
    /// and field). A folder left at its default may be absent (no rosters,
    /// no rules); one named explicitly must exist.
    fn routing(
        &mut self,
        rosters_dir: &Path,
        rosters_explicit: bool,
        mappings_dir: &Path,
        mappings_explicit: bool,
        console: &[crate::journal::RosterRevision],
    ) -> (Arc<Rosters>, Arc<Rules>) {
        for (dir, explicit, key) in [
            (rosters_dir, rosters_explicit, "rosters_dir"),
            (mappings_dir, mappings_explicit, "mappings_dir"),
        ] {
            if explicit && !dir.is_dir() {
                self.error(
                    &FieldPath::root().key(key),
                    format!("no such folder: {}", dir.display()),
                );
            }
        }
        match crate::live::validate(rosters_dir, mappings_dir, console) {
            Ok(c) => (Arc::new(c.rosters), Arc::new(c.rules)),
            Err(errors) => {
                self.errors.extend(errors);
                let empty = crate::roster::load_files(&[]).expect("no files, no errors");
                let rules = crate::rules::load_files(&[], &empty).expect("no files, no errors");
                (Arc::new(empty), Arc::new(rules))
            }
        }
    }

    /// The demo configuration must stay on loopback.
    fn demo_rules(&mut self, mllp: &MllpConfig, http: &HttpConfig, senders: &[SenderConfig]) {
        let root = FieldPath::root();
        if !mllp.listen.ip().is_loopback() {
            self.error(
                &root.key("mllp").key("listen"),
                "a demo configuration may only listen on loopback",
            );
        }
        if !http.listen.ip().is_loopback() {
            self.error(
                &root.key("http").key("listen"),
                "a demo configuration may only listen on loopback",
            );
        }
        for (i, s) in senders.iter().enumerate() {
            if let Some(r) = &s.return_destination {
                let host = r.address.rsplit_once(':').map(|x| x.0).unwrap_or("");
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let local = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .map(|ip| ip.is_loopback())
                        .unwrap_or(false);
                if !local {
                    self.error(
                        &root.key("senders").index(i).key("return_address"),
                        "a demo configuration may only send to loopback",
                    );
                }
            }
        }
    }

    fn tls(&mut self, p: &FieldPath, t: &raw::RawTls) -> TlsConfig {
        let cert = match &t.cert {
            Some(c) => self.path(c),
            None => {
                self.error(
                    &p.key("cert"),
                    "required: PEM file with the server certificate chain",
                );
                PathBuf::new()
            }
        };
        let key = match &t.key {
            Some(k) => self.path(k),
            None => {
                self.error(
                    &p.key("key"),
                    "required: PEM file with the server private key",
                );
                PathBuf::new()
            }
        };
        for (field, file) in [("cert", &cert), ("key", &key)] {
            if !file.as_os_str().is_empty() && !file.is_file() {
                self.error(&p.key(field), format!("no such file: {}", file.display()));
            }
        }
        let client_ca = t.client_ca.as_deref().map(|c| self.path(c));
        if let Some(ca) = &client_ca
            && !ca.is_file()
        {
            self.error(
                &p.key("client_ca"),
                format!("no such file: {}", ca.display()),
            );
        }
        let crls: Vec<PathBuf> = t.crls.iter().map(|c| self.path(c)).collect();
        for (i, c) in crls.iter().enumerate() {
            if !c.is_file() {
                self.error(
                    &p.key("crls").index(i),
                    format!("no such file: {}", c.display()),
                );
            }
        }
        if !crls.is_empty() && client_ca.is_none() {
            self.error(
                &p.key("crls"),
                "revocation lists need `client_ca` (mutual TLS)",
            );
        }
        TlsConfig {
            cert,
            key,
            client_ca,
            crls,
            handshake_timeout: Duration::from_secs(self.positive(
                &p.key("handshake_timeout_secs"),
                t.handshake_timeout_secs,
                10,
            )),
        }
    }

    fn matcher(&mut self, p: &FieldPath, values: &[String]) -> IdMatcher {
        if values.is_empty() {
            self.error(p, "required: a list of allowed values, or [\"*\"] for any");
            return IdMatcher::Any;
        }
        if values.iter().any(|v| v == "*") {
            if values.len() > 1 {
                self.error(p, "\"*\" already allows everything: list it alone");
            }
            return IdMatcher::Any;
        }
        for (i, v) in values.iter().enumerate() {
            if v.trim().is_empty() {
                self.error(&p.index(i), "must not be empty");
            }
        }
        IdMatcher::OneOf(values.to_vec())
    }

    fn sender(&mut self, p: &FieldPath, s: &raw::RawSender) -> SenderConfig {
        let name = match &s.name {
            Some(n) if !n.trim().is_empty() => n.clone(),
            _ => {
                self.error(&p.key("name"), "required: a short name for this feed");
                String::new()
            }
        };
        let msh3 = self.matcher(&p.key("msh3"), &s.msh3);
        let msh4 = self.matcher(&p.key("msh4"), &s.msh4);
        let networks = parse_networks(self, p, &s.networks);
        if s.networks.is_empty() && s.certificates.is_empty() && s.tokens_sha256.is_empty() {
            self.error(
                p,
                "a sender needs `networks`, `certificates` or `tokens_sha256`: a feed must not be able to claim to be another",
            );
        }
        let tokens_sha256 = parse_token_hashes(self, p, &s.tokens_sha256);
        let timezone = match s.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(z) => match z.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    self.error(
                        &p.key("timezone"),
                        "not an IANA time zone name (e.g. America/New_York)",
                    );
                    chrono_tz::UTC
                }
            },
        };
        let mut processing_ids = Vec::new();
        let given = s
            .processing_ids
            .clone()
            .unwrap_or_else(|| vec!["P".to_string()]);
        for (i, id) in given.iter().enumerate() {
            match Processing::from_code(id) {
                Some(x) => processing_ids.push(x),
                None => self.error(
                    &p.key("processing_ids").index(i),
                    "expected P (production), T (training) or D (debugging)",
                ),
            }
        }
        if given.is_empty() {
            self.error(
                &p.key("processing_ids"),
                "must allow at least one processing id",
            );
        }
        let default_charset = s
            .default_charset
            .clone()
            .unwrap_or_else(|| "UNICODE UTF-8".to_string());
        if crate::parse::Charset::from_msh18(&default_charset).is_none() {
            self.error(
                &p.key("default_charset"),
                "unknown character set (use an MSH-18 name such as ASCII, 8859/1 or UNICODE UTF-8)",
            );
        }
        let return_destination = match &s.return_address {
            None => {
                for f in ["return_server_name", "return_ca"] {
                    let set = if f == "return_ca" {
                        s.return_ca.is_some()
                    } else {
                        s.return_server_name.is_some()
                    };
                    if set {
                        self.error(&p.key(f), "only meaningful with `return_address`");
                    }
                }
                None
            }
            Some(a) => {
                let ok = a
                    .rsplit_once(':')
                    .map(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok())
                    .unwrap_or(false);
                if !ok {
                    self.error(&p.key("return_address"), "expected host:port");
                }
                let ca = s.return_ca.as_deref().map(|c| self.path(c));
                if s.return_tls && ca.is_none() {
                    self.error(&p.key("return_ca"), "required with `return_tls = true`");
                }
                if let Some(ca) = &ca
                    && !ca.is_file()
                {
                    self.error(
                        &p.key("return_ca"),
                        format!("no such file: {}", ca.display()),
                    );
                }
                Some(ReturnDestination {
                    address: a.clone(),
                    tls: s.return_tls,
                    server_name: s.return_server_name.clone(),
                    ca,
                    await_answer: s.return_await_answer,
                })
            }
        };
        let fhir_source = match &s.fhir_source {
            None => None,
            Some(base) => {
                let base = base.trim_end_matches('/').to_string();
                let uri_ok = base.parse::<axum::http::Uri>().ok().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !uri_ok {
                    self.error(
                        &p.key("fhir_source"),
                        "expected an http(s) base URL such as https://ehr.example/fhir",
                    );
                }
                let ca = s.fhir_source_ca.as_deref().map(|c| self.path(c));
                if base.starts_with("https") && ca.is_none() {
                    self.error(
                        &p.key("fhir_source_ca"),
                        "required with an https `fhir_source`: the server's CA (PEM)",
                    );
                }
                if let Some(ca) = &ca
                    && !ca.is_file()
                {
                    self.error(
                        &p.key("fhir_source_ca"),
                        format!("no such file: {}", ca.display()),
                    );
                }
                Some(FhirSource {
                    base,
                    token_env: s.fhir_source_token_env.clone(),
                    ca,
                })
            }
        };
        SenderConfig {
            name,
            msh3,
            msh4,
            networks,
            certificates: s.certificates.clone(),
            tokens_sha256,
            fhir_source,
            timezone,
            processing_ids,
            default_charset,
            reject_unknown_types: s.reject_unknown_types,
            return_destination,
            silent_after: s.silent_after_secs.map(|_| {
                std::time::Duration::from_secs(self.positive(
                    &p.key("silent_after_secs"),
                    s.silent_after_secs,
                    0,
                ))
            }),
        }
    }
}

impl Config {
    /// The journal file inside the data directory.
    pub fn journal_path(&self) -> PathBuf {
        self.storage.data_dir.join("journal.sqlite3")
    }

    /// Finds the configured sender by name.
    pub fn sender(&self, name: &str) -> Option<&SenderConfig> {
        self.senders.iter().find(|s| s.name == name)
    }
}

/// `networks = [...]` under `p`: CIDR networks or single addresses.
fn parse_networks(v: &mut Validator<'_>, p: &FieldPath, raw: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, n) in raw.iter().enumerate() {
        let parsed = n
            .parse::<IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => v.error(
                &p.key("networks").index(i),
                "expected a network such as 10.1.2.0/24 or an address",
            ),
        }
    }
    out
}

/// `tokens_sha256 = [...]` under `p`: hex SHA-256 digests of bearer tokens.
fn parse_token_hashes(v: &mut Validator<'_>, p: &FieldPath, raw: &[String]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        match hex::decode(t.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(h) => out.push(h),
            None => v.error(
                &p.key("tokens_sha256").index(i),
                "expected 64 hex digits: the SHA-256 of the token (e.g. `printf %s TOKEN | sha256sum`)",
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests;
