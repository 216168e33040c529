//! `/api/v1/alerts`: live alerts with their timelines and notifications,
//! and acknowledgements (delivered, read, accept, decline, resolve; accept
//! on behalf). Bodies carry ids, states and member ids — never the event's
//! content (that is the backends' redacted view).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, json, operator};
use crate::alert::desk::DeskError;
use crate::alert::engine::{Ack, AckError};
use crate::alert::model::{Alert, Step};
use crate::config::Permission;
use crate::journal::NotificationRow;
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;

#[derive(Debug, Serialize)]
struct AlertOut<'a> {
    id: i64,
    rule: &'a str,
    priority: &'static str,
    state: &'static str,
    tier: usize,
    round: u32,
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    late: bool,
    count: u32,
    told: Vec<String>,
    accepted_by: Option<&'a str>,
    /// Who accepted for the member (`operator:NAME`, `member:ID`), when
    /// the acceptance was made on their behalf.
    on_behalf_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<&'a [Step]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notifications: Option<&'a [NotificationRow]>,
}

fn out<'a>(a: &'a Alert, full: bool, n: Option<&'a [NotificationRow]>) -> AlertOut<'a> {
    AlertOut {
        id: a.id,
        rule: &a.rule,
        priority: a.priority.as_str(),
        state: a.state.as_str(),
        tier: a.tier,
        round: a.round,
        deadline: a.deadline,
        created_at: a.created_at,
        late: a.late,
        count: a.count,
        told: a.told(),
        accepted_by: a.accepted_by.as_deref(),
        on_behalf_by: a.accepted_by.as_deref().and_then(on_behalf_by),
        timeline: full.then_some(a.timeline.as_slice()),
        notifications: n,
    }
}

/// The acting party in an `accepted_by` written for an acceptance on
/// behalf (`"rn-b (on behalf, by operator:NAME)"`, see `Alert::on_ack`).
fn on_behalf_by(accepted_by: &str) -> Option<&str> {
    accepted_by
        .split_once(" (on behalf, by ")
        .and_then(|(_, by)| by.strip_suffix(')'))
}

/// The body of `GET /api/v1/alerts`: `{"alerts": [...]}`, the open alerts
/// (also each snapshot of the alert stream).
pub(super) async fn open_alerts_json(shared: &Arc<Shared>) -> Result<String, ApiError> {
    let alerts = match crate::app::alerts::live_alerts(shared).await {
        Ok(Ok(a)) => a,
        _ => return Err(ApiError::unavailable()),
    };
    let open: Vec<AlertOut<'_>> = alerts
        .iter()
        .filter(|a| a.state.is_open())
        .map(|a| out(a, false, None))
        .collect();
    serde_json::to_string(&serde_json::json!({ "alerts": open }))
        .map_err(|_| ApiError::unavailable())
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::AlertsRead)?;
    let body = open_alerts_json(&shared).await?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

pub(super) async fn get_one(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    operator(&shared, &headers, &peer, Permission::AlertsRead)?;
    let got = shared
        .journal
        .with_storage(move |s| {
            Ok::<_, crate::journal::StorageError>((s.alert(id)?, s.notifications(Some(id))?))
        })
        .await;
    match got {
        Ok(Ok((Some(a), n))) => Ok(json(StatusCode::OK, &out(&a, true, Some(&n)))),
        Ok(Ok((None, _))) => Err(ApiError::not_found("no such alert")),
        _ => Err(ApiError::unavailable()),
    }
}

/// Body of `POST /api/v1/alerts/{id}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AckIn {
    /// `delivered`, `read`, `accept`, `decline`, `resolve`.
    action: String,
    /// The member concerned (who accepts, declines, read...).
    member: String,
    /// Accept for `member` though they were not told (needs `alerts:on-behalf`).
    #[serde(default)]
    on_behalf: bool,
}

pub(super) async fn ack(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let op = operator(&shared, &headers, &peer, Permission::AlertsAck)?;
    let a: AckIn = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"action\", \"member\", \"on_behalf\"?}} (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let member = a.member.trim().to_string();
    if shared.routing.current().rosters.member(&member).is_none() {
        return Err(ApiError::bad_request("unknown member"));
    }
    if a.on_behalf && a.action != "accept" {
        return Err(ApiError::bad_request("only `accept` can be done on behalf"));
    }
    if a.on_behalf && !op.may(Permission::AlertsOnBehalf) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "this operator lacks the permission alerts:on-behalf".into(),
        });
    }
    let ack = match a.action.as_str() {
        "delivered" => Ack::Delivered { member },
        "read" => Ack::Read { member },
        "accept" => Ack::Accept {
            member,
            on_behalf_by: a.on_behalf.then(|| format!("operator:{}", op.name)),
        },
        "decline" => Ack::Decline { member },
        "resolve" => Ack::Resolve {
            by: format!("member:{member}"),
        },
        _ => {
            return Err(ApiError::bad_request(
                "action must be delivered, read, accept, decline or resolve",
            ));
        }
    };
    match crate::app::alerts::acknowledge_via(&shared, id, ack, format!("operator:{}", op.name))
        .await
    {
        Ok(Ok(a)) => Ok(json(StatusCode::OK, &out(&a, true, None))),
        Ok(Err(DeskError::NotFound)) => Err(ApiError::not_found("no such alert")),
        Ok(Err(DeskError::Ack(e @ AckError::Closed(_)))) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: e.to_string(),
        }),
        Ok(Err(DeskError::Ack(e @ AckError::NotARecipient))) => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: e.to_string(),
        }),
        _ => Err(ApiError::unavailable()),
    }
}

/// Body of `POST /api/v1/callbacks/{token}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallbackIn {
    /// `delivered`, `read`, `accept` or `decline`.
    action: String,
}

/// A receiving system acknowledges for the recipient its signed per-alert
/// token names (no operator token: the token is the credential, valid for
/// that alert and member only).
pub(super) async fn callback(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some((id, member)) = crate::delivery::verify_callback(&token, &shared.config.backends)
    else {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "invalid callback token".into(),
        });
    };
    let c: CallbackIn = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("expected {\"action\": ...}"))?;
    let ack = match c.action.as_str() {
        "delivered" => Ack::Delivered { member },
        "read" => Ack::Read { member },
        "accept" => Ack::Accept {
            member,
            on_behalf_by: None,
        },
        "decline" => Ack::Decline { member },
        _ => {
            return Err(ApiError::bad_request(
                "action must be delivered, read, accept or decline",
            ));
        }
    };
    match crate::app::alerts::acknowledge(&shared, id, ack).await {
        Ok(Ok(a)) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "alert_id": a.id, "state": a.state.as_str() }),
        )),
        Ok(Err(DeskError::NotFound)) => Err(ApiError::not_found("no such alert")),
        Ok(Err(DeskError::Ack(e @ AckError::Closed(_)))) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: e.to_string(),
        }),
        Ok(Err(DeskError::Ack(e @ AckError::NotARecipient))) => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: e.to_string(),
        }),
        _ => Err(ApiError::unavailable()),
    }
}

#[cfg(test)]
mod tests {
    use super::on_behalf_by;

    #[test]
    fn on_behalf_by_names_the_acting_party_only_for_an_acceptance_on_behalf() {
        assert_eq!(
            on_behalf_by("rn-b (on behalf, by operator:coordinator)"),
            Some("operator:coordinator")
        );
        assert_eq!(
            on_behalf_by("rn-b (on behalf, by member:sup)"),
            Some("member:sup")
        );
        assert_eq!(on_behalf_by("rn-a"), None);
    }
}
