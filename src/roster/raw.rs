//! The roster file as written (`rosters/*.toml`): serde structs that reject
//! unknown fields. Values stay text here; `load` validates them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One roster file: one team.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoster {
    pub name: Option<String>,
    pub timezone: Option<String>,
    #[serde(default)]
    pub members: Vec<RawMember>,
    #[serde(default)]
    pub roles: Vec<RawRole>,
    #[serde(default)]
    pub rotations: Vec<RawRotation>,
    #[serde(default)]
    pub shifts: Vec<RawShift>,
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    pub failsafe: Option<RawFailsafe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    pub id: Option<String>,
    pub display: Option<String>,
    #[serde(default)]
    pub contacts: BTreeMap<String, String>,
    #[serde(default)]
    pub ids: Vec<RawProviderId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProviderId {
    pub value: Option<String>,
    #[serde(default)]
    pub authority: String,
    #[serde(default, rename = "type")]
    pub type_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub name: Option<String>,
    pub scope: Option<String>,
    #[serde(default)]
    pub allow_overlap: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRotation {
    pub role: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    pub start: Option<String>,
    pub handoff: Option<String>,
    pub length_days: Option<i64>,
    pub length_hours: Option<i64>,
    pub weekdays: Option<Vec<String>>,
    pub end: Option<String>,
    #[serde(default)]
    pub layer: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShift {
    pub role: Option<String>,
    pub member: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub weekdays: Option<Vec<String>>,
    #[serde(default)]
    pub layer: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOverride {
    pub role: Option<String>,
    pub member: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFailsafe {
    pub member: Option<String>,
    pub role: Option<String>,
}
