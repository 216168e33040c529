//! The HTTP listener: health, readiness, metrics, the FHIR door, the
//! operator API and the web console (`/console/`). Bodies never carry
//! internals or PHI.
//!
//! Served with hyper directly (not `axum::serve`) so that TLS and mutual TLS
//! work as for MLLP and each connection's peer (address, certificate
//! identities) reaches the handlers; request headers must arrive within
//! `header_timeout` (hyper's header read timer: a slowloris client is closed
//! then), and shutdown lets requests in flight finish.
//!
//! At most `[http] max_connections` connections are served. The loop keeps
//! accepting: a connection that finds no free permit is answered at once,
//! without reading its request, with `503` + `Retry-After: 1` +
//! `Connection: close` and a FHIR OperationOutcome (`transient`) on plain
//! HTTP — on HTTPS it is just closed, as answering would need the very
//! handshake the cap protects — counted in
//! `switchboard_http_connections_refused_total` and logged at most once per
//! second. Connections already served are not affected.

use std::sync::Arc;

use std::time::Duration;

use axum::{Extension, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::intake::PeerInfo;
use crate::config::HttpConfig;
use crate::telemetry::{LogThrottle, Metrics};
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
        .merge(crate::console::router())
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
    let mut refusals_log = LogThrottle::new(Duration::from_secs(1));
    let handshakes_log = Arc::new(std::sync::Mutex::new(LogThrottle::new(
        Duration::from_secs(1),
    )));
    loop {
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
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                Metrics::inc(&shared.metrics.http_connections_refused);
                if let Some(n) = refusals_log.hit(Instant::now()) {
                    tracing::warn!(
                        peer = %addr,
                        refused = n,
                        max_connections = cfg.max_connections,
                        "HTTP connection limit reached: new connections are refused at once"
                    );
                }
                refuse(sock, acceptor.is_none());
                continue;
            }
            Err(TryAcquireError::Closed) => return,
        };
        let _ = sock.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let cfg = cfg.clone();
        let shared = shared.clone();
        let handshakes_log = handshakes_log.clone();
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
                            handshake_refused(&shared, &handshakes_log, addr, &e.to_string());
                        }
                        Err(_) => handshake_refused(&shared, &handshakes_log, addr, "timed out"),
                    }
                }
            }
        });
    }
}

/// The body of the answer to a connection over the cap.
const OVER_CAPACITY_BODY: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"too many connections; retry later"}]}"#;

/// The answer to a connection over the cap on plain HTTP: sent before
/// (and without) reading the request.
static OVER_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/fhir+json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{OVER_CAPACITY_BODY}",
        OVER_CAPACITY_BODY.len()
    )
    .into_bytes()
});

/// Closes a connection over the cap without a task: on plain HTTP it first
/// writes [`OVER_CAPACITY`] (a fresh socket's send buffer always has room)
/// and ends the write side, then discards what the client already sent so
/// that the close is a FIN rather than a reset that could destroy the
/// answer in flight. Never waits: the socket is taken out of the reactor
/// and used with plain non-blocking calls.
fn refuse(sock: TcpStream, plain: bool) {
    use std::io::{Read as _, Write as _};
    let Ok(mut sock) = sock.into_std() else {
        return;
    };
    if plain {
        let _ = sock.write(&OVER_CAPACITY);
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            match sock.read(&mut sink) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
}

/// Counts a refused HTTPS handshake; logs at most one line a second.
fn handshake_refused(
    shared: &Shared,
    log: &std::sync::Mutex<LogThrottle>,
    addr: std::net::SocketAddr,
    error: &str,
) {
    Metrics::inc(&shared.metrics.tls_handshake_failures);
    if let Some(n) = log.lock().ok().and_then(|mut t| t.hit(Instant::now())) {
        tracing::info!(
            peer = %addr,
            error = %error,
            refused = n,
            "HTTPS handshake refused (at most one line a second; `refused` counts them)"
        );
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
    let alerts = shared
        .desk
        .lock()
        .map(|d| (d.live() as u64, d.operator_alarms))
        .unwrap_or_default();
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
        ("switchboard_alerts_live", "gauge", alerts.0),
        ("switchboard_alerts_exhausted_total", "counter", alerts.1),
        (
            "switchboard_operator_alarms_raised_total",
            "counter",
            shared.metrics.operator_alarms_raised.load(Relaxed),
        ),
    ];
    let mut body = shared.metrics.render(&extra);
    body.push_str(&shared.metrics.render_feeds());
    body.push_str(&shared.metrics.render_histograms());
    // Per-backend outbox depth and oldest age (labels are configured names).
    let now = shared.clock.now_utc();
    if let Ok(Ok(backlog)) = shared
        .journal
        .with_storage(|s| s.notifications_backlog())
        .await
    {
        use std::fmt::Write as _;
        let _ = writeln!(body, "# TYPE switchboard_notifications_pending gauge");
        for b in &shared.config.backends {
            let n = backlog
                .iter()
                .find(|x| x.backend == b.contact)
                .map_or(0, |x| x.waiting);
            let _ = writeln!(
                body,
                "switchboard_notifications_pending{{backend=\"{}\"}} {n}",
                b.name
            );
        }
        let _ = writeln!(
            body,
            "# TYPE switchboard_notifications_oldest_age_seconds gauge"
        );
        for b in &shared.config.backends {
            let age = backlog
                .iter()
                .find(|x| x.backend == b.contact)
                .and_then(|x| x.oldest)
                .map_or(0, |t| (now - t).num_seconds().max(0));
            let _ = writeln!(
                body,
                "switchboard_notifications_oldest_age_seconds{{backend=\"{}\"}} {age}",
                b.name
            );
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_capacity_answer_is_a_complete_503_operation_outcome() {
        let text = std::str::from_utf8(&OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nRetry-After: 1"), "{head}");
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["resourceType"], "OperationOutcome");
        assert_eq!(json["issue"][0]["code"], "transient");
    }
}
