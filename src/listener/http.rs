//! The HTTP listener: health, readiness, metrics and the FHIR door; the
//! console mounts here later. Bodies never carry internals or PHI.
//!
//! Served with hyper directly (not `axum::serve`) so that TLS and mutual TLS
//! work as for MLLP and each connection's peer (address, certificate
//! identities) reaches the handlers; a permit is taken before `accept`,
//! request headers must arrive within `header_timeout`, and shutdown lets
//! requests in flight finish.

use std::sync::Arc;

use std::time::Duration;

use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::intake::PeerInfo;
use crate::config::HttpConfig;
use crate::telemetry::Metrics;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::connection::Shared;

/// The router (tests call it directly); handlers that need the peer read
/// it from a [`PeerInfo`] extension the server adds per connection.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(super::fhir::router(&shared))
        .merge(crate::api::router())
        .with_state(shared)
}

/// Accepts HTTP(S) connections until `shutdown`.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let app = router(shared.clone());
    let cfg = shared.config.http.clone();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let (sock, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = sock.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let cfg = cfg.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let peer = PeerInfo {
                        addr,
                        identities: Vec::new(),
                    };
                    serve_connection(sock, app.layer(Extension(peer)), &cfg, shutdown).await;
                }
                Some(acceptor) => {
                    let timeout = cfg
                        .tls
                        .as_ref()
                        .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
                    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            let identities = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(super::tls::identities)
                                .unwrap_or_default();
                            let peer = PeerInfo { addr, identities };
                            serve_connection(stream, app.layer(Extension(peer)), &cfg, shutdown)
                                .await;
                        }
                        Ok(Err(e)) => {
                            Metrics::inc(&shared.metrics.tls_handshake_failures);
                            tracing::info!(peer = %addr, error = %e, "HTTPS handshake refused");
                        }
                        Err(_) => {
                            Metrics::inc(&shared.metrics.tls_handshake_failures);
                            tracing::info!(peer = %addr, "HTTPS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, app: Router, cfg: &HttpConfig, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(cfg.request_timeout, conn).await;
        }
    }
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
