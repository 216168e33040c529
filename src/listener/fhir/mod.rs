//! The FHIR R4 door, on the HTTP listener under `fhir_base` (default
//! `/fhir`): `POST /{type}` (create, conditional create with
//! `If-None-Exist`), `POST /` (batch and transaction Bundles), `POST
//! /$process-message` (message Bundles), `POST /notifications`
//! (subscription notifications), `GET /metadata` (CapabilityStatement).
//!
//! Guarantees, as for MLLP: a 2xx only after the journal's receipt; every
//! authenticated request is journaled with its fate (the answer is stored
//! with it, so a repeat gets the same answer); repeats are recognised by
//! `If-None-Exist`, `Bundle.identifier`, the subscription's event number or
//! the resource's first business identifier, and produce no new event;
//! every 4xx/5xx carries an OperationOutcome naming the element at fault
//! and nothing else of the request. Unauthenticated requests get 401 and
//! leave no trace but an audit-free log line.

pub(crate) mod auth;
mod handlers;
pub mod source;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::connection::Shared;

pub use handlers::capability_statement;

/// Media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The FHIR routes, nested under the configured base.
pub fn router(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    let base = shared.config.http.fhir_base.clone();
    let fhir = Router::new()
        .route("/metadata", get(handlers::metadata))
        .route("/", post(handlers::bundle))
        .route("/notifications", post(handlers::notification))
        .route("/{kind}", post(handlers::create));
    // Clients post batches to the base with or without a trailing slash.
    Router::new()
        .route(&format!("{base}/"), post(handlers::bundle))
        .nest(&base, fhir)
}
