//! The mapping file as written (`mappings/*.toml`): serde structs that reject
//! unknown fields. Values stay text here; `load` validates them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::roster::one_or_many;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMappings {
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub escalations: BTreeMap<String, RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Option<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    pub route: Option<RawRoute>,
    #[serde(default)]
    pub reroute: Vec<RawReroute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub kind: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub message_type: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub sender: Vec<String>,
    #[serde(default)]
    pub codes: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    pub priority_at_least: Option<String>,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub facilities: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub result_status: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub alarm_priority: Vec<String>,
    #[serde(default)]
    pub during: Vec<RawWindow>,
    #[serde(default)]
    pub allow_test: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    pub timezone: Option<String>,
    pub days: Option<Vec<String>>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub role: Option<String>,
    pub scope: Option<String>,
    pub relation: Option<String>,
    pub person: Option<String>,
    pub fallback: Option<RawFallback>,
    pub priority: Option<String>,
    pub template: Option<String>,
    pub escalation: Option<String>,
    pub dedup_window_secs: Option<u64>,
    pub dedup_key: Option<Vec<String>>,
    pub group_window_secs: Option<u64>,
    pub dedup_keep: Option<String>,
    pub delay_secs: Option<u64>,
    pub clear: Option<String>,
    #[serde(default)]
    pub test_destination: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReroute {
    pub when: Option<String>,
    pub role: Option<String>,
    pub scope: Option<String>,
    pub relation: Option<String>,
    pub person: Option<String>,
    pub fallback: Option<RawFallback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFallback {
    pub role: Option<String>,
    pub scope: Option<String>,
    pub person: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub tiers: Vec<RawTier>,
    pub repeats: Option<u32>,
    pub renotify_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub role: Option<String>,
    pub scope: Option<String>,
    pub relation: Option<String>,
    pub person: Option<String>,
    #[serde(default)]
    pub failsafe: bool,
    #[serde(default)]
    pub route: bool,
    pub timeout_secs: Option<u64>,
}
