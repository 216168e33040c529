//! The MLLP accept loop.
//!
//! - **Connection cap.** At most `[mllp] max_connections` connections are
//!   served. The loop never stops accepting: a connection that finds no
//!   free permit is closed at once (there is no MLLP framing to answer in;
//!   the sender sees the close and retries), counted in
//!   `switchboard_mllp_connections_refused_total`, and logged at most once
//!   per second with the number refused since the previous line. Senders
//!   already connected keep being served, and a flood waits neither in the
//!   kernel backlog nor in memory.
//! - TCP keepalive and no-delay on every served socket; TLS handshakes are
//!   bounded by `handshake_timeout` (and hold a permit while they run).
//! - **Refused TLS handshakes** are counted and logged (at most one line a
//!   second) and audited as `tls.client-rejected`, but at most **one record
//!   per peer IP per minute**: further refusals from that IP within the
//!   minute are only counted, and every minute (and at shutdown) one
//!   `tls.client-rejected-summary` record carries how many refusals were not
//!   recorded one by one (`outcome` `suppressed:<n>`, `source`
//!   `peers:<k>`). At most [`AUDIT_MAX_PEERS`] IPs are tracked per minute;
//!   refusals from further IPs go to the summary only. A handshake flood
//!   therefore adds at most `AUDIT_MAX_PEERS + 1` audit records a minute,
//!   whatever its rate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, Shared};
use super::intake::PeerInfo;
use super::tls;
use crate::telemetry::{LogThrottle, Metrics};

/// One audit record per peer IP per this long for refused TLS handshakes.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(60);
/// Peer IPs tracked for the audit rate limit within one window.
pub const AUDIT_MAX_PEERS: usize = 1024;
/// At most one log line per this long about refused connections or
/// handshakes.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

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
    let mut refusals_log = LogThrottle::new(LOG_INTERVAL);
    let handshakes_log = Arc::new(Mutex::new(LogThrottle::new(LOG_INTERVAL)));
    let audit = Arc::new(Mutex::new(RefusalAudit::default()));
    let mut summary_tick = tokio::time::interval_at(Instant::now() + AUDIT_WINDOW, AUDIT_WINDOW);
    loop {
        let (sock, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = summary_tick.tick() => {
                if let Some(rec) = summary_record(&shared, &audit) {
                    let journal = shared.journal.clone();
                    tokio::spawn(async move {
                        let _ = journal.with_storage(move |s| s.audit(&rec)).await;
                    });
                }
                continue;
            }
            _ = shutdown.cancelled() => {
                if let Some(rec) = summary_record(&shared, &audit) {
                    let _ = shared.journal.with_storage(move |s| s.audit(&rec)).await;
                }
                return;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                Metrics::inc(&shared.metrics.connections_refused);
                if let Some(n) = refusals_log.hit(Instant::now()) {
                    tracing::warn!(
                        peer = %addr,
                        refused = n,
                        max_connections = cfg.max_connections,
                        "MLLP connection limit reached: new connections are closed at once"
                    );
                }
                drop(sock);
                continue;
            }
            Err(TryAcquireError::Closed) => return,
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
        let audit = audit.clone();
        let handshakes_log = handshakes_log.clone();
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
                    let timeout = handshake_timeout.unwrap_or(Duration::from_secs(10));
                    let outcome = match tokio::time::timeout(timeout, acceptor.accept(sock)).await
                    {
                        Ok(Ok(stream)) => {
                            let identities = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(tls::identities)
                                .unwrap_or_default();
                            let peer = PeerInfo { addr, identities };
                            connection::serve(stream, peer, shared.clone(), shutdown).await;
                            None
                        }
                        Ok(Err(e)) => Some(("handshake-refused", e.to_string())),
                        Err(_) => Some(("handshake-timeout", "timed out".to_string())),
                    };
                    if let Some((outcome, error)) = outcome {
                        Metrics::inc(&m.tls_handshake_failures);
                        let line = handshakes_log
                            .lock()
                            .ok()
                            .and_then(|mut t| t.hit(Instant::now()));
                        if let Some(n) = line {
                            tracing::info!(
                                peer = %addr,
                                error = %error,
                                refused = n,
                                "TLS handshake refused (at most one line a second; `refused` counts them)"
                            );
                        }
                        audit_refusal(&shared, &audit, addr, outcome);
                    }
                }
            }
            m.connections_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// Which refused TLS handshakes get their own audit record: the first per
/// peer IP per [`AUDIT_WINDOW`]; the rest are counted for the summary.
#[derive(Debug, Default)]
pub struct RefusalAudit {
    /// Start of each tracked peer's window, and refusals not recorded in it.
    peers: HashMap<IpAddr, (Instant, u64)>,
    /// Refusals not recorded one by one since the last summary.
    unrecorded: u64,
    /// Refusals from peers that could not be tracked (table full).
    untracked: u64,
}

impl RefusalAudit {
    /// Records a refusal from `ip` at `now`: true when it gets its own audit
    /// record, false when it is only counted.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some((start, suppressed)) = self.peers.get_mut(&ip) {
            if now.saturating_duration_since(*start) < AUDIT_WINDOW {
                *suppressed += 1;
                self.unrecorded += 1;
                return false;
            }
            *start = now;
            return true;
        }
        if self.peers.len() >= AUDIT_MAX_PEERS {
            self.expire(now);
        }
        if self.peers.len() >= AUDIT_MAX_PEERS {
            self.unrecorded += 1;
            self.untracked += 1;
            return false;
        }
        self.peers.insert(ip, (now, 0));
        true
    }

    /// Forgets peers whose window is over.
    fn expire(&mut self, now: Instant) {
        self.peers
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < AUDIT_WINDOW);
    }

    /// The refusals not recorded one by one since the last call, and from
    /// how many peers (an untracked peer counts once per refusal, at most);
    /// `None` when there were none. Resets the counts and forgets expired
    /// peers.
    pub fn take_summary(&mut self, now: Instant) -> Option<(u64, u64)> {
        let peers = self.peers.values().filter(|(_, n)| *n > 0).count() as u64 + self.untracked;
        let unrecorded = std::mem::take(&mut self.unrecorded);
        self.untracked = 0;
        for (_, n) in self.peers.values_mut() {
            *n = 0;
        }
        self.expire(now);
        (unrecorded > 0).then_some((unrecorded, peers))
    }
}

/// The summary audit record of refusals not recorded one by one, if any.
fn summary_record(
    shared: &Shared,
    audit: &Mutex<RefusalAudit>,
) -> Option<crate::audit::AuditRecord> {
    let (unrecorded, peers) = audit.lock().ok()?.take_summary(Instant::now())?;
    Some(crate::audit::AuditRecord::new(
        shared.clock.now_utc(),
        "system",
        "tls.client-rejected-summary",
        "listener:mllp",
        format!("peers:{peers}"),
        format!("suppressed:{unrecorded}"),
    ))
}

/// Records a refused TLS client in the audit trail (without waiting), at
/// most once per peer IP per [`AUDIT_WINDOW`]; see the module docs.
fn audit_refusal(
    shared: &Arc<Shared>,
    audit: &Mutex<RefusalAudit>,
    addr: SocketAddr,
    outcome: &'static str,
) {
    let admitted = audit
        .lock()
        .is_ok_and(|mut a| a.admit(addr.ip(), Instant::now()));
    if !admitted {
        Metrics::inc(&shared.metrics.tls_refusal_audits_suppressed);
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn one_audit_record_per_peer_per_minute_and_a_summary_of_the_rest() {
        let t0 = Instant::now();
        let mut a = RefusalAudit::default();
        assert!(a.admit(ip(1), t0));
        let admitted = (0..199)
            .filter(|i| a.admit(ip(1), t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(admitted, 0, "the same peer within the minute");
        assert!(a.admit(ip(2), t0), "another peer gets its own record");
        assert_eq!(a.take_summary(t0 + Duration::from_secs(1)), Some((199, 1)));
        assert_eq!(a.take_summary(t0 + Duration::from_secs(2)), None);
        assert!(!a.admit(ip(1), t0 + Duration::from_secs(59)));
        assert!(a.admit(ip(1), t0 + AUDIT_WINDOW), "a new minute");
        assert_eq!(a.take_summary(t0 + AUDIT_WINDOW), Some((1, 1)));
    }

    #[test]
    fn the_peer_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = RefusalAudit::default();
        let n = AUDIT_MAX_PEERS as u32;
        assert!((0..n).all(|i| a.admit(ip(i), t0)));
        assert!(!a.admit(ip(n), t0), "table full: summary only");
        assert!(!a.admit(ip(n + 1), t0));
        assert!(a.peers.len() <= AUDIT_MAX_PEERS);
        assert_eq!(a.take_summary(t0), Some((2, 2)));
        // after the window, old peers are forgotten and new ones admitted
        assert!(a.admit(ip(n + 2), t0 + AUDIT_WINDOW));
        assert_eq!(a.peers.len(), 1);
    }
}
