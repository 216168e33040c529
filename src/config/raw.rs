//! The configuration file as written: serde structs that reject unknown
//! fields. Nothing here is trusted until `validate` turns it into `Config`.

use serde::Deserialize;

/// `switchboard.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Marks the bundled example: loopback only, local backends; the gateway
    /// announces DEMO when it starts.
    #[serde(default)]
    pub demo: bool,
    /// Where the journal lives and how duplicates are recognised.
    #[serde(default)]
    pub storage: RawStorage,
    /// The MLLP listener.
    #[serde(default)]
    pub mllp: RawMllp,
    /// The HTTP listener (health now; FHIR and the console later).
    #[serde(default)]
    pub http: RawHttp,
    /// Application acknowledgement delivery (enhanced mode).
    #[serde(default)]
    pub outbox: RawOutbox,
    /// The senders allowed to feed this gateway.
    #[serde(default)]
    pub senders: Vec<RawSender>,
    /// Key-encryption keys for PHI at rest.
    #[serde(default)]
    pub keys: RawKeys,
    /// The tamper-evident audit trail.
    #[serde(default)]
    pub audit: RawAudit,
    /// Retention schedules.
    #[serde(default)]
    pub retention: RawRetention,
    /// Folder of roster files (relative to this file).
    #[serde(default)]
    pub operators: Vec<RawOperator>,
    #[serde(default)]
    pub census: RawCensus,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default)]
    pub operator_alarms: super::operator_alarms::RawOperatorAlarms,
    pub rosters_dir: Option<String>,
    /// Folder of mapping files (relative to this file).
    pub mappings_dir: Option<String>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: Option<String>,
    pub dedup_window_hours: Option<u64>,
    pub commit_batch_max: Option<usize>,
    pub commit_queue: Option<usize>,
}

/// `[mllp]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMllp {
    pub listen: Option<String>,
    pub max_frame_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub frame_timeout_secs: Option<u64>,
    pub keepalive_secs: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub strict_framing: Option<bool>,
    pub tls: Option<RawTls>,
}

/// `[mllp.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    #[serde(default)]
    pub crls: Vec<String>,
    pub handshake_timeout_secs: Option<u64>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub tls: Option<RawTls>,
    pub max_body_bytes: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub fhir_base: Option<String>,
    pub max_connections: Option<usize>,
}

/// `[outbox]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    pub retry_initial_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub answer_timeout_secs: Option<u64>,
}

/// `[[senders]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSender {
    pub name: Option<String>,
    #[serde(default)]
    pub msh3: Vec<String>,
    #[serde(default)]
    pub msh4: Vec<String>,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default)]
    pub tokens_sha256: Vec<String>,
    pub fhir_source: Option<String>,
    pub fhir_source_token_env: Option<String>,
    pub fhir_source_ca: Option<String>,
    pub timezone: Option<String>,
    pub processing_ids: Option<Vec<String>>,
    pub default_charset: Option<String>,
    #[serde(default)]
    pub reject_unknown_types: bool,
    pub return_address: Option<String>,
    #[serde(default)]
    pub return_tls: bool,
    pub return_server_name: Option<String>,
    pub return_ca: Option<String>,
    pub silent_after_secs: Option<u64>,
    #[serde(default = "default_true")]
    pub return_await_answer: bool,
}

fn default_true() -> bool {
    true
}

/// `[keys]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub dir: Option<String>,
    pub env: Option<String>,
}

/// `[audit]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub origin: Option<String>,
    pub signing_key: Option<String>,
    pub checkpoint_dir: Option<String>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_secs: Option<u64>,
    pub trusted_key: Option<String>,
    pub syslog_address: Option<String>,
    pub syslog_server_name: Option<String>,
    pub syslog_ca: Option<String>,
    pub syslog_interval_secs: Option<u64>,
}

/// `[retention]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub raw_messages_days: Option<u64>,
    pub events_days: Option<u64>,
    pub alerts_days: Option<u64>,
    pub deliveries_days: Option<u64>,
    pub audit_years: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperator {
    pub name: Option<String>,
    #[serde(default)]
    pub tokens_sha256: Vec<String>,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCensus {
    #[serde(default)]
    pub nurse_role_codes: Vec<String>,
    pub snapshot_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch_files: Option<bool>,
    pub settle_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub late_after_secs: Option<u64>,
    pub storm_threshold: Option<u32>,
    pub storm_window_secs: Option<u64>,
    pub outbox_max_per_backend: Option<usize>,
    /// `[alerts.writeback]` (see `config::writeback`).
    pub writeback: Option<super::writeback::RawWriteback>,
    /// `[[alerts.alarm_sources]]` (see `config::writeback`).
    #[serde(default)]
    pub alarm_sources: Vec<super::writeback::RawAlarmSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub contact: Option<String>,
    pub url: Option<String>,
    pub profile: Option<String>,
    pub template: Option<String>,
    pub end_to_end: Option<bool>,
    pub secret_env: Option<String>,
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub timeout_secs: Option<u64>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub circuit_failures: Option<u32>,
    pub circuit_open_secs: Option<u64>,
    pub concurrency: Option<usize>,
    // kind = "wctp"
    pub sender_id: Option<String>,
    pub security_code_env: Option<String>,
    pub poll_secs: Option<u64>,
    pub max_chars: Option<usize>,
    pub mcr: Option<bool>,
    // kind = "fhir-communication" (also `poll_secs`)
    pub token_env: Option<String>,
    // kind = "matrix"
    pub homeserver: Option<String>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub store_passphrase_env: Option<String>,
    pub device_name: Option<String>,
}
