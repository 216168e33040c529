//! The webhook backend: one HTTP/1.1 POST of a JSON document per
//! notification, signed with HMAC-SHA256 over `timestamp.body`
//! (`X-Switchboard-Signature: sha256=<hex>`, `X-Switchboard-Timestamp`), with
//! the notification's `Idempotency-Key` (the same on every retry, so the
//! receiver can drop repeats). TLS with the configured CA for `https`, and a
//! client certificate when one is configured (mutual TLS).
//! Answers: 2xx delivered; 408, 425, 429 and 5xx retried (honouring
//! `Retry-After` in seconds or as an HTTP date); any other 4xx is permanent
//! (dead-lettered); transport errors and timeouts are retried.

use std::time::Duration;

use axum::http::{Method, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::http::HttpError;
use super::{Backend, Outgoing};

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
pub async fn deliver(b: &Backend, out: &Outgoing<'_>) -> Outcome {
    let cfg = &b.cfg;
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
    let secret = match &cfg.secret_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                return Outcome::Retry {
                    why: format!("signing secret ${var} is not set"),
                    retry_after: None,
                };
            }
        },
    };
    if let Some(secret) = &secret {
        body["callback"] = serde_json::json!(format!(
            "/api/v1/callbacks/{}",
            super::callback_token(secret.as_bytes(), &cfg.name, v.alert_id, &row.member)
        ));
    }
    let url = cfg.url.clone().unwrap_or_else(|| row.handle.clone());
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let ts = out.now.timestamp();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("idempotency-key", row.idempotency_key.clone()),
        ("x-switchboard-timestamp", ts.to_string()),
    ];
    if let Some(secret) = &secret {
        headers.push((
            "x-switchboard-signature",
            signature(secret.as_bytes(), ts, &body),
        ));
    }
    match b
        .http
        .send(Method::POST, &url, &headers, body, 64 * 1024)
        .await
    {
        Ok(resp) => classify(
            resp.status,
            resp.headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        ),
        Err(e) => from_http_error(e),
    }
}

/// How a request that got no answer ends.
pub fn from_http_error(e: HttpError) -> Outcome {
    match e {
        HttpError::Invalid(why) => Outcome::Permanent(why),
        HttpError::Transport(why) => Outcome::Retry {
            why,
            retry_after: None,
        },
        HttpError::Timeout => Outcome::Retry {
            why: "timeout".into(),
            retry_after: None,
        },
    }
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
