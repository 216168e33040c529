//! Sections for the running gateway's live state: `[[operators]]` (who may
//! call the operator API, with which permissions), `[census]` and
//! `[reload]` (rosters and mappings reloaded while running).

use std::time::Duration;

use ipnet::IpNet;

use super::locate::FieldPath;
use super::raw::{RawAlerts, RawCensus, RawOperator, RawReload};
use super::{Validator, parse_networks, parse_token_hashes};

/// What an operator may do through the API. The console's roles (#8) map
/// onto these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Who is on call, coverage gaps (`oncall:read`).
    OncallRead,
    /// Nurse assignments: list (`assignments:read`).
    AssignmentsRead,
    /// Nurse assignments: add and remove (`assignments:write`).
    AssignmentsWrite,
    /// Reload rosters and mappings (`routing:reload`).
    RoutingReload,
    /// Save, revert and retire console-managed rosters (`rosters:write`).
    RostersWrite,
    /// List alerts and their timelines (`alerts:read`).
    AlertsRead,
    /// Record receipts and a recipient's accept / decline / resolve, as
    /// backends and the console do for the member signed in (`alerts:ack`).
    AlertsAck,
    /// Acknowledge for someone else, recorded as on behalf (`alerts:on-behalf`).
    AlertsOnBehalf,
}

impl Permission {
    /// Every permission with its configuration name.
    pub const ALL: [(Permission, &'static str); 8] = [
        (Permission::OncallRead, "oncall:read"),
        (Permission::AssignmentsRead, "assignments:read"),
        (Permission::AssignmentsWrite, "assignments:write"),
        (Permission::RoutingReload, "routing:reload"),
        (Permission::RostersWrite, "rosters:write"),
        (Permission::AlertsRead, "alerts:read"),
        (Permission::AlertsAck, "alerts:ack"),
        (Permission::AlertsOnBehalf, "alerts:on-behalf"),
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        Permission::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or("")
    }

    fn parse(s: &str) -> Option<Self> {
        Permission::ALL
            .iter()
            .find(|(_, n)| *n == s.trim())
            .map(|(p, _)| *p)
    }
}

/// `[[operators]]`: a caller of the operator API.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Name recorded as the actor in the audit trail (`operator:NAME`).
    pub name: String,
    /// SHA-256 of each accepted bearer token.
    pub tokens_sha256: Vec<[u8; 32]>,
    /// Networks it may call from (empty: anywhere the listener accepts).
    pub networks: Vec<IpNet>,
    /// What it may do.
    pub permissions: Vec<Permission>,
}

impl OperatorConfig {
    /// True when the operator holds `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// `[census]`.
#[derive(Clone, Debug)]
pub struct CensusConfig {
    /// ROL-3 role codes whose care-team entries count as the assigned nurse.
    pub nurse_role_codes: Vec<String>,
    /// A snapshot of the census is journaled this often when it changed
    /// (and at shutdown), so a restart replays only what came after.
    pub snapshot_interval: Duration,
}

/// `[alerts]`.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// An event older than this when routed (a replayed backlog) raises a
    /// *late* alert: marked, told to its first tier, not escalated unless
    /// critical.
    pub late_after: Duration,
    /// More than this many non-critical alarm alerts for one unit within
    /// `storm_window` fold into one storm summary alert (0: never).
    pub storm_threshold: u32,
    /// The storm counting window.
    pub storm_window: Duration,
    /// The most notifications one backend's outbox holds waiting; beyond
    /// it a notification is dead-lettered (`outbox full`), audited and left
    /// to the tier timer to escalate, so a long outage cannot fill the disk.
    pub outbox_max_per_backend: usize,
}

/// `[reload]`.
#[derive(Clone, Debug)]
pub struct ReloadConfig {
    /// Reload when a file in the roster or mapping folder changes (SIGHUP
    /// and the API always work).
    pub watch_files: bool,
    /// Changes within this long of each other are one reload.
    pub settle: Duration,
}

impl Validator<'_> {
    pub(super) fn alerts(&mut self, raw: &RawAlerts) -> AlertsConfig {
        let p = FieldPath::root().key("alerts");
        AlertsConfig {
            late_after: Duration::from_secs(self.positive(
                &p.key("late_after_secs"),
                raw.late_after_secs,
                3600,
            )),
            storm_threshold: raw.storm_threshold.unwrap_or(20),
            storm_window: Duration::from_secs(self.positive(
                &p.key("storm_window_secs"),
                raw.storm_window_secs,
                60,
            )),
            outbox_max_per_backend: self.positive_usize(
                &p.key("outbox_max_per_backend"),
                raw.outbox_max_per_backend,
                10_000,
            ),
        }
    }

    pub(super) fn reload(&mut self, raw: &RawReload) -> ReloadConfig {
        let p = FieldPath::root().key("reload");
        ReloadConfig {
            watch_files: raw.watch_files.unwrap_or(true),
            settle: Duration::from_millis(self.positive(&p.key("settle_ms"), raw.settle_ms, 300)),
        }
    }

    pub(super) fn operators(&mut self, raw: &[RawOperator]) -> Vec<OperatorConfig> {
        let root = FieldPath::root().key("operators");
        let mut out: Vec<OperatorConfig> = Vec::new();
        for (i, o) in raw.iter().enumerate() {
            let p = root.index(i);
            let name = o.name.as_deref().unwrap_or("").trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.error(
                    &p.key("name"),
                    "required: letters, digits, '-', '_' or '.' (it is written to the audit trail)",
                );
            } else if out.iter().any(|x| x.name == name) {
                self.error(&p.key("name"), "another operator has this name");
            }
            let tokens_sha256 = parse_token_hashes(self, &p, &o.tokens_sha256);
            if o.tokens_sha256.is_empty() {
                self.error(
                    &p.key("tokens_sha256"),
                    "an operator needs at least one token hash",
                );
            }
            let networks = parse_networks(self, &p, &o.networks);
            let mut permissions = Vec::new();
            for (j, s) in o.permissions.iter().enumerate() {
                match Permission::parse(s) {
                    Some(x) => permissions.push(x),
                    None => {
                        let names: Vec<&str> = Permission::ALL.iter().map(|(_, n)| *n).collect();
                        self.error(
                            &p.key("permissions").index(j),
                            format!("unknown permission; expected one of {}", names.join(", ")),
                        );
                    }
                }
            }
            out.push(OperatorConfig {
                name,
                tokens_sha256,
                networks,
                permissions,
            });
        }
        out
    }

    pub(super) fn census(&mut self, raw: &RawCensus) -> CensusConfig {
        let p = FieldPath::root().key("census");
        for (i, c) in raw.nurse_role_codes.iter().enumerate() {
            if c.trim().is_empty() {
                self.error(&p.key("nurse_role_codes").index(i), "must not be empty");
            }
        }
        CensusConfig {
            nurse_role_codes: raw
                .nurse_role_codes
                .iter()
                .map(|c| c.trim().to_string())
                .collect(),
            snapshot_interval: Duration::from_secs(self.positive(
                &p.key("snapshot_secs"),
                raw.snapshot_secs,
                300,
            )),
        }
    }
}
