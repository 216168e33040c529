//! `/api/v1/routing` (which rosters and mappings serve, reload) and
//! `/api/v1/oncall/{role}` (who is on call for a role, now or at a time).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, json, operator};
use crate::config::{ConfigError, Permission};
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;
use crate::live::ReloadOutcome;
use crate::roster::OnCall;

#[derive(Debug, Serialize)]
pub(super) struct ErrorOut {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    field: String,
    problem: String,
}

pub(super) fn errors_out(errors: &[ConfigError]) -> Vec<ErrorOut> {
    errors
        .iter()
        .map(|e| ErrorOut {
            file: e.file.display().to_string(),
            line: e.line,
            column: e.column,
            field: e.field.clone(),
            problem: e.problem.clone(),
        })
        .collect()
}

pub(super) async fn status(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::OncallRead)?;
    let r = &shared.routing;
    let set = r.current();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "revision": set.revision,
            "loaded_at": set.loaded_at,
            "rosters": set.rosters.rosters().len(),
            "rules": set.rules.rules().len(),
            "reloads": r.reloads.load(std::sync::atomic::Ordering::Relaxed),
            "refused": r.refused.load(std::sync::atomic::Ordering::Relaxed),
            "last_errors": errors_out(&r.last_errors()),
        }),
    ))
}

pub(super) async fn reload(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let op = operator(&shared, &headers, &peer, Permission::RoutingReload)?;
    let actor = format!("operator:{}", op.name);
    Ok(
        match crate::app::reload_routing(&shared, "api", &actor).await {
            ReloadOutcome::Unchanged { revision } => json(
                StatusCode::OK,
                &serde_json::json!({ "result": "unchanged", "revision": revision }),
            ),
            ReloadOutcome::Reloaded { revision, changes } => json(
                StatusCode::OK,
                &serde_json::json!({
                    "result": "reloaded",
                    "revision": revision,
                    "on_call_changes": changes.iter().map(|c| serde_json::json!({
                        "role": c.role, "scope": c.scope, "before": c.before, "after": c.after,
                    })).collect::<Vec<_>>(),
                }),
            ),
            ReloadOutcome::Refused { revision, errors } => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({
                    "result": "refused",
                    "serving": revision,
                    "errors": errors_out(&errors),
                }),
            ),
        },
    )
}

/// Query of `/api/v1/oncall/{role}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OncallQuery {
    scope: Option<String>,
    at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct OnCallOut<'a> {
    member: &'a str,
    display: &'a str,
    contacts: &'a std::collections::BTreeMap<String, String>,
    roster: &'a str,
    role: &'a str,
    scope: Option<&'a str>,
    via: String,
    failsafe: bool,
    until: Option<DateTime<Utc>>,
}

fn on_call_out(o: &OnCall) -> OnCallOut<'_> {
    OnCallOut {
        member: &o.member.id,
        display: &o.member.display,
        contacts: &o.member.contacts,
        roster: &o.roster,
        role: &o.role,
        scope: o.scope.as_deref(),
        via: o.via.to_string(),
        failsafe: o.failsafe,
        until: o.span.map(|s| s.end),
    }
}

pub(super) async fn oncall(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(role): Path<String>,
    Query(q): Query<OncallQuery>,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::OncallRead)?;
    let set = shared.routing.current();
    let scope = q.scope.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if !set.rosters.has_role(&role, scope) {
        return Err(ApiError::not_found(match scope {
            Some(_) => "no such role for this scope (and no unscoped definition)",
            None => "no such role (or it is only defined per unit: pass scope)",
        }));
    }
    let at = q.at.unwrap_or_else(|| shared.clock.now_utc());
    let who = set.rosters.on_call(&role, scope, at);
    let out: Vec<OnCallOut<'_>> = who.iter().map(on_call_out).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "role": role,
            "scope": scope,
            "at": at,
            "routing_revision": set.revision,
            "on_call": out,
        }),
    ))
}
