//! Delivery of application acknowledgements (enhanced mode, MSH-16) from the
//! durable outbox to each sender's configured return destination over MLLP
//! (optionally TLS).
//!
//! An outbox row is written in the same transaction as its message, so an
//! application acknowledgement survives a crash. Delivery retries with
//! exponential backoff (`retry_initial` doubling to `retry_max`, with
//! jitter) until the receiver answers AA/CA for it (or, when
//! `return_await_answer = false`, until it was written). A receiver that
//! answers AE/CR, or a sender with no return destination, makes the row
//! `dead` with a reason, and it is logged at ERROR for an operator.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Frame, MllpCodec};
use super::connection::Shared;
use super::tls;
use crate::config::ReturnDestination;
use crate::journal::{OutboxItem, OutboxState};
use crate::telemetry::Metrics;

/// Result of one delivery attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Try again later; the reason is logged and stored.
    Retry(String),
    /// Never going to work; needs an operator.
    Dead(String),
}

/// Runs the outbox until `shutdown`. `wake` is notified when new rows exist.
pub async fn run(shared: Arc<Shared>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let now = shared.clock.now_utc();
        let due = shared
            .journal
            .with_storage(move |s| s.outbox_due(now, 64))
            .await;
        match due {
            Ok(Ok(items)) => {
                for item in items {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let result = deliver(&shared, &item).await;
                    record(&shared, &item, result).await;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "outbox read failed"),
            Err(_) => return,
        }
        let next = shared
            .journal
            .with_storage(|s| s.outbox_next_due())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let wait = match next {
            Some(at) => (at - shared.clock.now_utc())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(60)),
            None => Duration::from_secs(60),
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn record(shared: &Shared, item: &OutboxItem, result: Attempt) {
    let cfg = &shared.config.outbox;
    let now = shared.clock.now_utc();
    let (state, at, error) = match result {
        Attempt::Delivered => {
            Metrics::inc(&shared.metrics.app_acks_delivered);
            tracing::info!(outbox_id = item.id, journal_id = item.message_id, destination = %item.destination, "application acknowledgement delivered");
            (OutboxState::Delivered, now, None)
        }
        Attempt::Retry(why) => {
            Metrics::inc(&shared.metrics.app_ack_failures);
            let delay = backoff(cfg.retry_initial, cfg.retry_max, item.attempts, item.id);
            tracing::warn!(outbox_id = item.id, destination = %item.destination, attempts = item.attempts + 1, retry_in_ms = delay.as_millis() as u64, reason = %why, "application acknowledgement not delivered; will retry");
            (
                OutboxState::Pending,
                now + chrono::Duration::from_std(delay).unwrap_or_default(),
                Some(why),
            )
        }
        Attempt::Dead(why) => {
            Metrics::inc(&shared.metrics.app_ack_failures);
            tracing::error!(outbox_id = item.id, journal_id = item.message_id, destination = %item.destination, reason = %why, "application acknowledgement cannot be delivered; operator action needed");
            (OutboxState::Dead, now, Some(why))
        }
    };
    let id = item.id;
    let audit = match state {
        OutboxState::Delivered => Some("app-ack.delivered"),
        OutboxState::Dead => Some("app-ack.dead"),
        OutboxState::Pending => None,
    }
    .map(|action| {
        crate::audit::AuditRecord::new(
            now,
            "system:outbox",
            action,
            format!("message:{}", item.message_id),
            format!("sender:{}", item.destination),
            if action == "app-ack.delivered" {
                "ok"
            } else {
                "dead"
            },
        )
    });
    let _ = shared
        .journal
        .with_storage(move |s| {
            let r = s.outbox_update(id, state, at, error.as_deref());
            if let (Ok(()), Some(rec)) = (&r, audit) {
                let _ = s.audit(&rec);
            }
            r
        })
        .await;
}

/// Exponential backoff with deterministic jitter (up to a quarter of the delay).
fn backoff(initial: Duration, max: Duration, attempts: u32, id: i64) -> Duration {
    let base = initial.saturating_mul(1u32 << attempts.min(20)).min(max);
    let jitter_seed = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempts);
    let jitter = base.as_millis() as u64 / 4;
    let extra = if jitter == 0 { 0 } else { jitter_seed % jitter };
    (base + Duration::from_millis(extra)).min(max + max / 4)
}

async fn deliver(shared: &Shared, item: &OutboxItem) -> Attempt {
    let Some(sender) = shared.config.sender(&item.destination) else {
        return Attempt::Dead("sender no longer configured".into());
    };
    let Some(dest) = sender.return_destination.clone() else {
        return Attempt::Dead(
            "sender has no return_address for application acknowledgements".into(),
        );
    };
    let cfg = &shared.config.outbox;
    let tcp =
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&dest.address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Attempt::Retry(format!("connect: {}", e.kind())),
            Err(_) => return Attempt::Retry("connect timed out".into()),
        };
    let _ = tcp.set_nodelay(true);
    if dest.tls {
        match tls_connect(&dest, tcp, cfg.connect_timeout).await {
            Ok(s) => exchange(s, item, &dest, cfg.answer_timeout).await,
            Err(a) => a,
        }
    } else {
        exchange(tcp, item, &dest, cfg.answer_timeout).await
    }
}

async fn tls_connect(
    dest: &ReturnDestination,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Attempt> {
    let Some(ca) = &dest.ca else {
        return Err(Attempt::Dead("return_tls without return_ca".into()));
    };
    let config = tls::client_config(ca).map_err(|e| Attempt::Dead(e.to_string()))?;
    let host = dest.server_name.clone().unwrap_or_else(|| {
        dest.address
            .rsplit_once(':')
            .map(|x| x.0)
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string()
    });
    let name =
        ServerName::try_from(host).map_err(|_| Attempt::Dead("invalid TLS server name".into()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Attempt::Retry(format!("TLS: {e}"))),
        Err(_) => Err(Attempt::Retry("TLS handshake timed out".into())),
    }
}

async fn exchange<S>(
    mut s: S,
    item: &OutboxItem,
    dest: &ReturnDestination,
    timeout: Duration,
) -> Attempt
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = s.write_all(&codec::frame(&item.payload)).await {
        return Attempt::Retry(format!("write: {}", e.kind()));
    }
    if let Err(e) = s.flush().await {
        return Attempt::Retry(format!("write: {}", e.kind()));
    }
    if !dest.await_answer {
        let _ = s.shutdown().await;
        return Attempt::Delivered;
    }
    let answer = tokio::time::timeout(timeout, read_frame(&mut s)).await;
    let _ = s.shutdown().await;
    match answer {
        Err(_) => Attempt::Retry("no answer in time".into()),
        Ok(None) => Attempt::Retry("connection closed without an answer".into()),
        Ok(Some(frame)) => judge(&frame, &item.control_id),
    }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut codec = MllpCodec::new(1024 * 1024, false);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Ok(Some(Frame::Message(f))) = codec.decode(&mut buf) {
            return Some(f.to_vec());
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads MSA-1 / MSA-2 of the receiver's answer.
fn judge(frame: &[u8], control_id: &str) -> Attempt {
    let text = String::from_utf8_lossy(frame);
    let sep = text.get(3..4).and_then(|s| s.chars().next()).unwrap_or('|');
    let Some(msa) = text.split(['\r', '\n']).find(|seg| seg.starts_with("MSA")) else {
        return Attempt::Retry("answer has no MSA segment".into());
    };
    let mut fields = msa.split(sep);
    let code = fields.nth(1).unwrap_or("");
    let refers_to = fields.next().unwrap_or("");
    if refers_to != control_id {
        return Attempt::Retry("answer MSA-2 does not match".into());
    }
    match code {
        "AA" | "CA" => Attempt::Delivered,
        "AR" | "CE" => Attempt::Retry(format!("receiver answered {code}")),
        other => Attempt::Dead(format!(
            "receiver answered {}",
            other.chars().take(2).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let i = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert!(backoff(i, m, 0, 1) >= i && backoff(i, m, 0, 1) < Duration::from_millis(1250));
        assert!(backoff(i, m, 3, 1) >= Duration::from_secs(8));
        assert!(backoff(i, m, 30, 1) <= Duration::from_secs(75));
    }

    #[test]
    fn judges_answers() {
        assert_eq!(judge(b"MSH|^~\\&|A\rMSA|CA|X1\r", "X1"), Attempt::Delivered);
        assert!(matches!(
            judge(b"MSH|^~\\&|A\rMSA|CA|X2\r", "X1"),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            judge(b"MSH|^~\\&|A\rMSA|AR|X1\r", "X1"),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            judge(b"MSH|^~\\&|A\rMSA|AE|X1\r", "X1"),
            Attempt::Dead(_)
        ));
    }
}
