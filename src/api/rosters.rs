//! `/api/v1/rosters`: list rosters (file- or console-managed), read one,
//! and for console-managed rosters save a new revision, list revisions,
//! revert to one, or retire it.
//!
//! A save is validated with every other roster and every mapping exactly as
//! a reload is (a mapping that needs a role the new text drops refuses the
//! save: 422 with file, line, column and field), then journaled with the
//! operator and a comment, audited, and served at once. A file-managed
//! roster cannot be saved here (409): the two never fight.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, json, operator};
use crate::config::{ConfigError, Permission};
use crate::journal::RosterRevision;
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;
use crate::live::{ReloadOutcome, is_console};

async fn console_rosters(shared: &Shared) -> Result<Vec<RosterRevision>, ApiError> {
    match shared.journal.with_storage(|s| s.rosters_current()).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(ApiError::unavailable()),
    }
}

fn refused(errors: &[ConfigError]) -> Response {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({ "result": "refused", "errors": super::routing::errors_out(errors) }),
    )
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::OncallRead)?;
    let set = shared.routing.current();
    let out: Vec<serde_json::Value> = set
        .rosters
        .rosters()
        .iter()
        .map(|r| {
            let console = is_console(r);
            serde_json::json!({
                "name": r.name,
                "managed": if console { "console" } else { "file" },
                "source": if console { serde_json::Value::Null } else { r.source.display().to_string().into() },
                "revision": set.console.iter().find(|(n, _)| *n == r.name).map(|(_, v)| *v),
                "timezone": r.timezone.name(),
                "roles": r.roles.iter().map(|x| serde_json::json!({"name": x.name, "scope": x.scope})).collect::<Vec<_>>(),
                "members": r.members.len(),
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "routing_revision": set.revision, "rosters": out }),
    ))
}

pub(super) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::OncallRead)?;
    let set = shared.routing.current();
    let Some(r) = set.rosters.roster(&name) else {
        return Err(ApiError::not_found("no such roster"));
    };
    if is_console(r) {
        let current = console_rosters(&shared).await?;
        let Some(c) = current.into_iter().find(|c| c.name == name) else {
            return Err(ApiError::not_found("no such roster"));
        };
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "name": name, "managed": "console", "revision": c.revision, "text": c.text }),
        ));
    }
    let text = std::fs::read_to_string(&r.source)
        .map_err(|_| ApiError::not_found("the roster file can no longer be read"))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "name": name, "managed": "file", "source": r.source.display().to_string(), "text": text }),
    ))
}

pub(super) async fn revisions(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::OncallRead)?;
    let n = name.clone();
    let revs = match shared
        .journal
        .with_storage(move |s| s.roster_revisions(&n))
        .await
    {
        Ok(Ok(v)) => v,
        _ => return Err(ApiError::unavailable()),
    };
    if revs.is_empty() {
        return Err(ApiError::not_found(
            "no console-managed revisions of this roster",
        ));
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "name": name, "revisions": revs }),
    ))
}

/// Validates `text` (or the retirement when `None`) with everything else,
/// saves it, and reloads. The caller holds the edit lock.
async fn save(
    shared: &Arc<Shared>,
    name: &str,
    text: Option<String>,
    actor: &str,
    comment: &str,
) -> Result<Response, ApiError> {
    let set = shared.routing.current();
    if let Some(r) = set.rosters.roster(name)
        && !is_console(r)
    {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: "this roster is file-managed: edit its file".into(),
        });
    }
    let mut console = console_rosters(shared).await?;
    let existed = console.iter().any(|c| c.name == name);
    console.retain(|c| c.name != name);
    if text.is_none() && !existed {
        return Err(ApiError::not_found(
            "no console-managed roster of this name",
        ));
    }
    if let Some(t) = &text {
        console.push(RosterRevision {
            name: name.to_string(),
            revision: 0,
            at: shared.clock.now_utc(),
            actor: actor.to_string(),
            comment: comment.to_string(),
            retired: false,
            text: t.clone(),
        });
    }
    let routing = shared.routing.clone();
    let candidate = tokio::task::spawn_blocking(move || routing.validate(&console).map(|_| ()))
        .await
        .map_err(|_| ApiError::unavailable())?;
    if let Err(errors) = candidate {
        return Ok(refused(&errors));
    }
    let (n, a, c, now) = (
        name.to_string(),
        actor.to_string(),
        comment.to_string(),
        shared.clock.now_utc(),
    );
    let revision = match shared
        .journal
        .with_storage(move |s| s.roster_save(&n, text.as_deref(), &a, &c, now))
        .await
    {
        Ok(Ok(r)) => r,
        _ => return Err(ApiError::unavailable()),
    };
    let outcome = crate::app::reload_routing(shared, "roster-edit", actor).await;
    let (routing_revision, changes) = match outcome {
        ReloadOutcome::Reloaded { revision, changes } => (revision, changes),
        ReloadOutcome::Unchanged { revision } => (revision, Vec::new()),
        ReloadOutcome::Refused { errors, .. } => {
            // A file changed between the check and the reload: the saved
            // revision waits for the files to be mended.
            return Ok(refused(&errors));
        }
    };
    Ok(json(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &serde_json::json!({
            "name": name,
            "revision": revision,
            "retired": !shared.routing.current().console.iter().any(|(x, _)| x == name),
            "routing_revision": routing_revision,
            "on_call_changes": changes.iter().map(|c| serde_json::json!({
                "role": c.role, "scope": c.scope, "before": c.before, "after": c.after,
            })).collect::<Vec<_>>(),
        }),
    ))
}

fn comment_of(headers: &HeaderMap) -> String {
    headers
        .get("x-switchboard-comment")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// `PUT /api/v1/rosters/{name}` with the roster file's TOML as the body.
pub(super) async fn put(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let op = operator(&shared, &headers, &peer, Permission::RostersWrite)?;
    if !valid_name(&name) {
        return Err(ApiError::bad_request(
            "a roster name has letters, digits, '-', '_' or '.' (at most 64)",
        ));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the body must be UTF-8 TOML"))?;
    let actor = format!("operator:{}", op.name);
    let _edit = shared.routing.edits.lock().await;
    save(&shared, &name, Some(text), &actor, &comment_of(&headers)).await
}

/// Body of `POST /api/v1/rosters/{name}/revert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevertIn {
    revision: u64,
}

pub(super) async fn revert(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let op = operator(&shared, &headers, &peer, Permission::RostersWrite)?;
    let r: RevertIn = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("expected {\"revision\": N}"))?;
    let actor = format!("operator:{}", op.name);
    let _edit = shared.routing.edits.lock().await;
    let n = name.clone();
    let revs = match shared
        .journal
        .with_storage(move |s| s.roster_revisions(&n))
        .await
    {
        Ok(Ok(v)) => v,
        _ => return Err(ApiError::unavailable()),
    };
    let Some(old) = revs
        .into_iter()
        .find(|x| x.revision == r.revision && !x.retired)
    else {
        return Err(ApiError::not_found("no such revision"));
    };
    let mut comment = comment_of(&headers);
    if comment.is_empty() {
        comment = format!("revert to revision {}", r.revision);
    }
    save(&shared, &name, Some(old.text), &actor, &comment).await
}

/// `DELETE /api/v1/rosters/{name}`: no longer console-managed (for
/// example before its exported file goes into the roster folder).
pub(super) async fn retire(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let op = operator(&shared, &headers, &peer, Permission::RostersWrite)?;
    let actor = format!("operator:{}", op.name);
    let _edit = shared.routing.edits.lock().await;
    save(&shared, &name, None, &actor, &comment_of(&headers)).await
}
