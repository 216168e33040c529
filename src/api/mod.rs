//! The operator API (`/api/v1/...`, JSON): on-call lookups, nurse
//! assignments, routing reloads. Served by the HTTP listener beside the
//! FHIR door, with its TLS.
//!
//! Access: a bearer token whose SHA-256 is listed under `[[operators]]`,
//! from an allowed network, holding the endpoint's [`Permission`]. No
//! token or an unknown one: 401 with `WWW-Authenticate: Bearer`; a known
//! operator without the permission or from elsewhere: 403. Every change is
//! journaled and audited with the operator as actor (`operator:NAME`).
//! Error bodies are `{"error": "..."}` and never carry PHI.

mod alert_stream;
mod alerts;
mod assignments;
mod rosters;
mod routing;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use crate::config::{OperatorConfig, Permission};
use crate::listener::connection::Shared;
use crate::listener::fhir::auth::constant_time_eq;
use crate::listener::intake::PeerInfo;

/// The operator API's routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/api/v1/assignments",
            get(assignments::list).post(assignments::create),
        )
        .route("/api/v1/assignments/remove", post(assignments::remove))
        .route("/api/v1/routing", get(routing::status))
        .route("/api/v1/routing/reload", post(routing::reload))
        .route("/api/v1/oncall/{role}", get(routing::oncall))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/stream", get(alert_stream::stream))
        .route("/api/v1/alerts/{id}", get(alerts::get_one))
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack))
        .route("/api/v1/callbacks/{token}", post(alerts::callback))
        .route("/api/v1/rosters", get(rosters::list))
        .route(
            "/api/v1/rosters/{name}",
            get(rosters::get_one)
                .put(rosters::put)
                .delete(rosters::retire),
        )
        .route("/api/v1/rosters/{name}/revisions", get(rosters::revisions))
        .route("/api/v1/rosters/{name}/revert", post(rosters::revert))
}

/// An API error: status and a fixed, PHI-free text.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid operator bearer token is required".into(),
        }
    }

    fn forbidden(why: &str) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: why.into(),
        }
    }

    /// 503: the journal cannot record the change now.
    pub fn unavailable() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the journal cannot record this now; retry".into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        r
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

/// The operator a request speaks for, if allowed to do `need`.
pub fn operator<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    peer: &PeerInfo,
    need: Permission,
) -> Result<&'a OperatorConfig, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let op = shared
        .config
        .operators
        .iter()
        .find(|o| o.tokens_sha256.iter().any(|h| constant_time_eq(h, &digest)))
        .ok_or_else(ApiError::unauthorized)?;
    if !op.networks.is_empty() && !op.networks.iter().any(|n| n.contains(&peer.addr.ip())) {
        return Err(ApiError::forbidden("not allowed from this network"));
    }
    if !op.may(need) {
        return Err(ApiError::forbidden(&format!(
            "this operator lacks the permission {}",
            need.as_str()
        )));
    }
    Ok(op)
}
