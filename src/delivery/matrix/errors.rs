//! How the SDK's and the homeserver's errors become delivery outcomes, as
//! kinds, statuses and error codes (never the server's message text).

use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter};

use crate::delivery::Outcome;

/// Which SDK errors are retried: transport errors, timeouts, 408, 425,
/// 429 (after its retry delay) and 5xx; 401 too (the token is renewed
/// first). Any other answer from the homeserver is permanent.
pub fn classify(e: &matrix_sdk::Error, now: DateTime<Utc>) -> Outcome {
    if let Some(api) = e.as_client_api_error() {
        let status = api.status_code.as_u16();
        let retry_after = match api.error_kind() {
            Some(ErrorKind::LimitExceeded(LimitExceededErrorData {
                retry_after: Some(r),
                ..
            })) => Some(retry_delay(r, now)),
            _ => None,
        };
        return classify_status(
            status,
            api.error_kind().map(|k| k.errcode().to_string()),
            retry_after,
        );
    }
    Outcome::Retry {
        why: kind_of(e),
        retry_after: None,
    }
}

/// A homeserver's answer, by status and error code.
pub fn classify_status(
    status: u16,
    errcode: Option<String>,
    retry_after: Option<Duration>,
) -> Outcome {
    let why = match errcode {
        Some(c) => format!("status {status} {c}"),
        None => format!("status {status}"),
    };
    match status {
        401 | 408 | 425 | 429 | 500..=599 => Outcome::Retry { why, retry_after },
        _ => Outcome::Permanent(why),
    }
}

pub(super) fn retry_delay(r: &RetryAfter, now: DateTime<Utc>) -> Duration {
    let d = match r {
        RetryAfter::Delay(d) => *d,
        RetryAfter::DateTime(t) => (DateTime::<Utc>::from(*t) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    };
    d.min(Duration::from_secs(86_400))
}

/// An SDK error as a kind (its text may quote the homeserver; this does
/// not).
pub(super) fn kind_of(e: &matrix_sdk::Error) -> String {
    use matrix_sdk::Error as E;
    match e {
        E::Http(h) => http_why(h),
        E::CryptoStoreError(_) => "crypto store error".into(),
        E::StateStore(_) | E::EventCacheStore(_) | E::MediaStore(_) => "store error".into(),
        E::OlmError(_) | E::MegolmError(_) => "encryption error".into(),
        E::WrongRoomState(_) => "the room is not joined".into(),
        E::Io(_) => "I/O error".into(),
        _ => "matrix client error".into(),
    }
}

pub(super) fn http_why(e: &matrix_sdk::HttpError) -> String {
    use matrix_sdk::HttpError as H;
    if let Some(api) = e.as_client_api_error() {
        return match api.error_kind() {
            Some(k) => format!("status {} {}", api.status_code.as_u16(), k.errcode()),
            None => format!("status {}", api.status_code.as_u16()),
        };
    }
    match e {
        H::Reqwest(r) if r.is_timeout() => "timeout".into(),
        H::Reqwest(r) if r.is_connect() => "connection refused or unreachable".into(),
        H::Reqwest(_) => "transport error".into(),
        _ => "HTTP error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homeserver_answers_are_classified_for_retry() {
        assert!(matches!(
            classify_status(429, Some("M_LIMIT_EXCEEDED".into()), Some(Duration::from_secs(3))),
            Outcome::Retry { retry_after: Some(d), ref why } if d == Duration::from_secs(3) && why == "status 429 M_LIMIT_EXCEEDED"
        ));
        for s in [401, 408, 500, 502, 503] {
            assert!(
                matches!(classify_status(s, None, None), Outcome::Retry { .. }),
                "{s}"
            );
        }
        assert_eq!(
            classify_status(403, Some("M_FORBIDDEN".into()), None),
            Outcome::Permanent("status 403 M_FORBIDDEN".into())
        );
        for s in [400, 404] {
            assert!(
                matches!(classify_status(s, None, None), Outcome::Permanent(_)),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_as_a_delay_or_a_date_is_capped() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_delay(&RetryAfter::Delay(Duration::from_millis(1500)), now),
            Duration::from_millis(1500)
        );
        let at = std::time::SystemTime::from(now + chrono::Duration::seconds(7));
        assert_eq!(
            retry_delay(&RetryAfter::DateTime(at), now),
            Duration::from_secs(7)
        );
        let past = std::time::SystemTime::from(now - chrono::Duration::seconds(7));
        assert_eq!(
            retry_delay(&RetryAfter::DateTime(past), now),
            Duration::ZERO
        );
        assert_eq!(
            retry_delay(&RetryAfter::Delay(Duration::from_secs(1_000_000)), now),
            Duration::from_secs(86_400)
        );
    }
}
