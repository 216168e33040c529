//! The webhook backend: one HTTP/1.1 POST of a JSON document per
//! notification, signed with HMAC-SHA256 over `timestamp.body`
//! (`X-Switchboard-Signature: sha256=<hex>`, `X-Switchboard-Timestamp`), with
//! the notification's `Idempotency-Key` (the same on every retry, so the
//! receiver can drop repeats). TLS with the configured CA for `https`.
//! Answers: 2xx delivered; 408, 425, 429 and 5xx retried (honouring
//! `Retry-After` in seconds or as an HTTP date); any other 4xx is permanent
//! (dead-lettered); transport errors and timeouts are retried.

use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha2::Sha256;
use tokio::net::TcpStream;

use super::Outgoing;
use crate::config::BackendConfig;
use crate::listener::tls;

/// How a POST ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the backend: its status code, and what it calls the
    /// notification when it says (event id, tracking number, resource id).
    Delivered {
        /// Status (HTTP status, or 200 for protocols without one).
        status: u16,
        /// The backend's reference, kept in `notifications.remote_ref`.
        remote_ref: Option<String>,
    },
    /// Try again (after at least `retry_after` when the server said so).
    Retry {
        /// Status or error kind.
        why: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Never going to work: dead-letter it.
    Permanent(String),
}

/// The signature header value for `body` sent at `ts` (unix seconds).
pub fn signature(secret: &[u8], ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers one notification: the JSON document (redacted fields, text,
/// acknowledgement links) POSTed to the backend's URL or the member's handle.
pub async fn deliver(cfg: &BackendConfig, out: &Outgoing<'_>) -> Outcome {
    let (row, v) = (out.row, out.view.get());
    let mut body = serde_json::json!({
        "alert_id": v.alert_id,
        "notification_id": row.id,
        "idempotency_key": row.idempotency_key,
        "recipient": { "member": row.member, "handle": row.handle },
        "tier": row.tier,
        "priority": v.priority,
        "reason": v.reason,
        "late": v.late,
        "preview": v.preview,
        "text": out.text,
        "fields": v.values,
        "ack": format!("/api/v1/alerts/{}/ack", v.alert_id),
    });
    if let Some(secret) = cfg
        .secret_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|s| !s.is_empty())
    {
        body["callback"] = serde_json::json!(format!(
            "/api/v1/callbacks/{}",
            super::callback_token(secret.as_bytes(), &cfg.name, v.alert_id, &row.member)
        ));
    }
    let url = cfg.url.clone().unwrap_or_else(|| row.handle.clone());
    let body = serde_json::to_vec(&body).unwrap_or_default();
    post(cfg, &url, &row.idempotency_key, out.now.timestamp(), body).await
}

/// POSTs `body` to `url`.
pub async fn post(
    cfg: &BackendConfig,
    url: &str,
    idempotency_key: &str,
    ts: i64,
    body: Vec<u8>,
) -> Outcome {
    match tokio::time::timeout(cfg.timeout, send(cfg, url, idempotency_key, ts, body)).await {
        Ok(o) => o,
        Err(_) => Outcome::Retry {
            why: "timeout".into(),
            retry_after: None,
        },
    }
}

async fn send(cfg: &BackendConfig, url: &str, key: &str, ts: i64, body: Vec<u8>) -> Outcome {
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return Outcome::Permanent("invalid URL".into()),
    };
    let Some(host) = uri.host().map(str::to_string) else {
        return Outcome::Permanent("URL without a host".into());
    };
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Outcome::Permanent("URL scheme must be http or https".into()),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut req = Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(
            header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .header("X-Switchboard-Timestamp", ts.to_string());
    if let Some(var) = &cfg.secret_env {
        match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => {
                req = req.header(
                    "X-Switchboard-Signature",
                    signature(secret.as_bytes(), ts, &body),
                );
            }
            _ => {
                return Outcome::Retry {
                    why: format!("signing secret ${var} is not set"),
                    retry_after: None,
                };
            }
        }
    }
    let req = match req.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(_) => return Outcome::Permanent("invalid request".into()),
    };
    let tcp = match TcpStream::connect((host.as_str(), port)).await {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Retry {
                why: format!("connect: {}", e.kind()),
                retry_after: None,
            };
        }
    };
    let _ = tcp.set_nodelay(true);
    if https {
        let Some(ca) = &cfg.ca else {
            return Outcome::Permanent("https without a CA".into());
        };
        let config = match tls::client_config(ca) {
            Ok(c) => c,
            Err(e) => return Outcome::Permanent(format!("tls: {e}")),
        };
        let Ok(name) = ServerName::try_from(host.clone()) else {
            return Outcome::Permanent("invalid server name".into());
        };
        match tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
        {
            Ok(s) => exchange(s, req).await,
            Err(e) => Outcome::Retry {
                why: format!("tls: {}", e.kind()),
                retry_after: None,
            },
        }
    } else {
        exchange(tcp, req).await
    }
}

async fn exchange<S>(stream: S, req: Request<Full<Bytes>>) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(_) => {
            return Outcome::Retry {
                why: "http handshake".into(),
                retry_after: None,
            };
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => {
            return Outcome::Retry {
                why: "no answer".into(),
                retry_after: None,
            };
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // Drain (bounded) so the connection closes cleanly; the body is ignored.
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
    classify(status, retry_after)
}

/// Which answers are retried.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered {
            status,
            remote_ref: None,
        },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            why: format!("status {status}"),
            retry_after,
        },
        _ => Outcome::Permanent(format!("status {status}")),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (capped at a day).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s.min(86_400)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    let d = at.with_timezone(&chrono::Utc) - now;
    Some(
        d.to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_for_retry() {
        assert_eq!(
            classify(204, None),
            Outcome::Delivered {
                status: 204,
                remote_ref: None
            }
        );
        assert!(
            matches!(classify(503, Some(Duration::from_secs(2))), Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        assert!(matches!(classify(429, None), Outcome::Retry { .. }));
        assert_eq!(classify(400, None), Outcome::Permanent("status 400".into()));
        assert_eq!(classify(410, None), Outcome::Permanent("status 410".into()));
    }

    #[test]
    fn retry_after_in_seconds_or_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231-style check against an independent computation.
        let s = signature(b"key", 1700000000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(s, signature(b"key", 1700000001, b"{}"));
    }
}
