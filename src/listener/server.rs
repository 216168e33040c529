//! The MLLP accept loop: a connection permit is taken *before* `accept`, so
//! at the cap new connections wait in the kernel backlog instead of
//! consuming memory; TCP keepalive and no-delay on every socket; TLS
//! handshakes bounded by a timeout.

use std::sync::Arc;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, Shared};
use super::intake::PeerInfo;
use super::tls;
use crate::telemetry::Metrics;

/// Accepts connections until `shutdown`; connection tasks are tracked by `tasks`.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let cfg = shared.config.mllp.clone();
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = sock.set_nodelay(true);
        let ka = TcpKeepalive::new()
            .with_time(cfg.keepalive)
            .with_interval(cfg.keepalive);
        let _ = SockRef::from(&sock).set_tcp_keepalive(&ka);
        Metrics::inc(&shared.metrics.connections_accepted);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let handshake_timeout = cfg.tls.as_ref().map(|t| t.handshake_timeout);
        tasks.spawn(async move {
            let _permit = permit;
            let m = shared.metrics.clone();
            m.connections_open
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match acceptor {
                None => {
                    let peer = PeerInfo {
                        addr,
                        identities: Vec::new(),
                    };
                    connection::serve(sock, peer, shared, shutdown).await;
                }
                Some(acceptor) => {
                    let timeout = handshake_timeout.unwrap_or(std::time::Duration::from_secs(10));
                    match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            let identities = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(tls::identities)
                                .unwrap_or_default();
                            let peer = PeerInfo { addr, identities };
                            connection::serve(stream, peer, shared, shutdown).await;
                        }
                        Ok(Err(e)) => {
                            Metrics::inc(&m.tls_handshake_failures);
                            tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                            audit_refusal(&shared, addr, "handshake-refused");
                        }
                        Err(_) => {
                            Metrics::inc(&m.tls_handshake_failures);
                            tracing::info!(peer = %addr, "TLS handshake timed out");
                            audit_refusal(&shared, addr, "handshake-timeout");
                        }
                    }
                }
            }
            m.connections_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// Records a refused TLS client in the audit trail (without waiting).
fn audit_refusal(shared: &Arc<Shared>, addr: std::net::SocketAddr, outcome: &'static str) {
    let rec = crate::audit::AuditRecord::new(
        shared.clock.now_utc(),
        format!("peer:{addr}"),
        "tls.client-rejected",
        "listener:mllp",
        addr.to_string(),
        outcome,
    );
    let journal = shared.journal.clone();
    tokio::spawn(async move {
        let _ = journal.with_storage(move |s| s.audit(&rec)).await;
    });
}
