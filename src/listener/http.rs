//! The HTTP listener: health, readiness and metrics now; FHIR and the
//! console mount here later. Bodies never carry internals or PHI.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::connection::Shared;

/// The router (tests call it directly).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let journal = shared.journal.health().is_healthy() || shared.journal.probe().await;
    let body = serde_json::json!({
        "status": if journal { "ready" } else { "unavailable" },
        "journal": if journal { "ok" } else { "failing" },
        "demo": shared.config.demo,
    });
    let status = if journal {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let h = shared.journal.health();
    let extra = [
        (
            "switchboard_journal_commits_total",
            "counter",
            h.batches.load(Relaxed),
        ),
        (
            "switchboard_journal_messages_total",
            "counter",
            h.committed.load(Relaxed),
        ),
        (
            "switchboard_journal_failures_total",
            "counter",
            h.failures.load(Relaxed),
        ),
        (
            "switchboard_journal_healthy",
            "gauge",
            u64::from(h.is_healthy()),
        ),
    ];
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(&extra),
    )
}
