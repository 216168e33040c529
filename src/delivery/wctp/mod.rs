//! The WCTP backend: Wireless Communications Transfer Protocol 1.3, what
//! paging systems and clinical communication platforms (Spok, Vocera,
//! Ascom) accept and what IHE PCD-06 carries alerts over. The gateway is a
//! *polling enterprise host* towards the carrier at the backend's `url`:
//!
//! - **Submit**: one `wctp-SubmitRequest` (`text/xml`, [`xml::submit_request`])
//!   per notification: `wctp-Originator senderID` (+ `securityCode` from
//!   `security_code_env`), `wctp-MessageControl messageID` with
//!   `allowResponse`, `notifyWhenDelivered` and `notifyWhenRead` (and
//!   `deliveryPriority="HIGH"` for STAT and ASAP alerts), `wctp-Recipient
//!   recipientID` = the member's handle (pager id, extension), and the
//!   rendered text — cut to `max_chars` on a character boundary — as a
//!   `wctp-MCR` offering the choices Accept and Decline (or as
//!   `wctp-Alphanumeric` with `mcr = false`).
//! - **Never a second page**: `messageID` is the notification's idempotency
//!   key (its first 32 characters, the most WCTP allows), the same on every
//!   attempt, so the carrier recognises a repeat; it is also the
//!   notification's `remote_ref`, by which status and replies find it.
//! - **Answers**: `wctp-Confirmation`/`wctp-Success` is delivered (to the
//!   carrier). `wctp-Failure` is classified by [`classify_failure`]: the
//!   300 (protocol) and 400 (content: sender, security code, recipient)
//!   series are dead-lettered — except 304, "poll first", which is
//!   retried — and every other code is retried. HTTP 408/425/429/5xx and
//!   transport errors are retried (honouring `Retry-After`); other HTTP
//!   4xx are dead-lettered. An answer that cannot be read is retried, never
//!   taken for a success, and its error names a kind, not content.
//! - **Status and replies** come back through `wctp-PollForMessages`
//!   ([`poll`]).
//!
//! Why `wctp-SubmitRequest` and not the transient client's
//! `wctp-SubmitClientMessage`/`wctp-ClientQuery`: in the v1r3 DTD
//! `wctp-ClientMessageControl` has no `messageID`, so a transient client
//! cannot make a retry recognisable, and a retry after a lost answer would
//! page twice.

pub mod poll;
pub mod xml;

use axum::http::{Method, header};

use super::webhook::{classify, from_http_error, parse_retry_after};
use super::{Backend, Outcome, Outgoing};
use crate::config::WctpSettings;

/// Largest answer body read for a submit.
const MAX_SUBMIT_ANSWER: usize = 64 * 1024;

/// How a `wctp-Failure errorCode` ends a delivery attempt.
pub fn classify_failure(code: u16) -> Outcome {
    let why = format!("wctp error {code}");
    match code {
        // Cannot accept the operation until messages are polled: transient.
        304 => Outcome::Retry {
            why,
            retry_after: None,
        },
        // Protocol violations (our document refused as such) and content
        // errors (invalid sender, security code, recipient, dates): the
        // same request fails the same way.
        300..=499 => Outcome::Permanent(why),
        // Message processing, server and carrier errors, unknown codes:
        // retried, and dead-lettered after the last attempt.
        _ => Outcome::Retry {
            why,
            retry_after: None,
        },
    }
}

/// The security code from the configured environment variable (`Err`
/// names the variable when it is not set).
pub fn security_code(w: &WctpSettings) -> Result<Option<String>, String> {
    match &w.security_code_env {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(format!("security code ${var} is not set")),
        },
    }
}

/// Headers of every WCTP request.
fn headers(idempotency_key: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![("content-type", "text/xml; charset=utf-8".to_string())];
    if let Some(k) = idempotency_key {
        h.push(("idempotency-key", k.to_string()));
    }
    h
}

/// Delivers one notification as a `wctp-SubmitRequest`.
pub async fn deliver(b: &Backend, out: &Outgoing<'_>) -> Outcome {
    let (Some(w), Some(url)) = (&b.cfg.wctp, &b.cfg.url) else {
        return Outcome::Permanent("wctp backend without its settings".into());
    };
    let row = out.row;
    let recipient = row.handle.trim();
    if recipient.is_empty()
        || recipient.chars().count() > xml::ID_MAX
        || recipient.chars().any(char::is_control)
    {
        return Outcome::Permanent("recipient id empty, too long or not printable".into());
    }
    let code = match security_code(w) {
        Ok(c) => c,
        Err(why) => {
            return Outcome::Retry {
                why,
                retry_after: None,
            };
        }
    };
    let message_id = xml::message_id(&row.idempotency_key);
    let priority = out.view.get().priority;
    let body = xml::submit_request(&xml::Submit {
        sender_id: &w.sender_id,
        security_code: code.as_deref(),
        message_id: &message_id,
        recipient_id: recipient,
        submitted: out.now,
        high_priority: matches!(priority, "stat" | "asap"),
        text: xml::truncate(out.text, w.max_chars),
        choices: w.mcr,
    });
    let resp = match b
        .http
        .send(
            Method::POST,
            url,
            &headers(Some(&row.idempotency_key)),
            body,
            MAX_SUBMIT_ANSWER,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return from_http_error(e),
    };
    if !(200..300).contains(&resp.status) {
        let retry_after = resp
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        return classify(resp.status, retry_after);
    }
    match xml::parse(&resp.body).and_then(|root| xml::confirmation(&root)) {
        Ok(xml::Confirmation::Success(_)) => Outcome::Delivered {
            status: resp.status,
            remote_ref: Some(message_id),
        },
        Ok(xml::Confirmation::Failure(code)) => classify_failure(code),
        Err(e) => Outcome::Retry {
            why: e.to_string(),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    #[test]
    fn failure_codes_are_classified_by_series() {
        for code in [300, 301, 302, 303, 400, 401, 402, 403, 404, 408, 410, 499] {
            assert_eq!(
                classify_failure(code),
                Outcome::Permanent(format!("wctp error {code}")),
                "{code}"
            );
        }
        for code in [304, 500, 503, 506, 600, 604, 700, 0, 200, 999] {
            assert!(
                matches!(classify_failure(code), Outcome::Retry { ref why, retry_after: None } if why == &format!("wctp error {code}")),
                "{code}"
            );
        }
    }

    const BASE: &str = "[mllp]\nlisten = \"127.0.0.1:0\"\n\n[[senders]]\nname = \"lab\"\nmsh3 = [\"LAB\"]\nmsh4 = [\"*\"]\nnetworks = [\"127.0.0.0/8\"]\n\n[[backends]]\nname = \"pager\"\n";

    fn check(backend: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        crate::config::parse(
            Path::new("/etc/switchboard/switchboard.toml"),
            &format!("{BASE}{backend}"),
        )
    }

    fn fields(backend: &str) -> Vec<(String, Option<usize>)> {
        check(backend)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.field, e.line))
            .collect()
    }

    #[test]
    fn a_wctp_backend_is_configured_with_defaults() {
        let c = check(
            "kind = \"wctp\"\nurl = \"http://127.0.0.1:9/wctp\"\nsender_id = \"switchboard\"\n",
        )
        .unwrap();
        let b = &c.backends[0];
        assert_eq!(b.kind, crate::config::BackendKind::Wctp);
        assert_eq!(
            b.wctp,
            Some(WctpSettings {
                sender_id: "switchboard".into(),
                security_code_env: None,
                poll: Duration::from_secs(15),
                max_chars: None,
                mcr: true,
            })
        );
        let c = check("kind = \"wctp\"\nurl = \"http://127.0.0.1:9/wctp\"\nsender_id = \"sb\"\nsecurity_code_env = \"SB_WCTP_CODE\"\npoll_secs = 2\nmax_chars = 240\nmcr = false\n")
            .unwrap();
        let w = c.backends[0].wctp.clone().unwrap();
        assert_eq!(w.security_code_env.as_deref(), Some("SB_WCTP_CODE"));
        assert_eq!(w.poll, Duration::from_secs(2));
        assert_eq!(w.max_chars, Some(240));
        assert!(!w.mcr);
    }

    #[test]
    fn wctp_validation_names_each_field() {
        // Line numbers: `[[backends]]` is line 10, `name` 11, `kind` 12; a
        // missing field is placed at its table.
        assert_eq!(
            fields("kind = \"wctp\"\nsender_id = \"sb\"\n"),
            [("backends[0].url".to_string(), Some(10))]
        );
        assert_eq!(
            fields("kind = \"wctp\"\nurl = \"http://127.0.0.1:9/\"\n"),
            [("backends[0].sender_id".to_string(), Some(10))]
        );
        let long = "x".repeat(129);
        assert_eq!(
            fields(&format!(
                "kind = \"wctp\"\nurl = \"http://127.0.0.1:9/\"\nsender_id = \"{long}\"\n"
            )),
            [("backends[0].sender_id".to_string(), Some(14))]
        );
        assert_eq!(
            fields(
                "kind = \"wctp\"\nurl = \"http://127.0.0.1:9/\"\nsender_id = \"sb\"\npoll_secs = 0\nmax_chars = 3\nsecurity_code_env = \" \"\nsecret_env = \"X\"\n"
            ),
            [
                ("backends[0].secret_env".to_string(), Some(18)),
                ("backends[0].security_code_env".to_string(), Some(17)),
                ("backends[0].max_chars".to_string(), Some(16)),
                ("backends[0].poll_secs".to_string(), Some(15)),
            ]
        );
        assert_eq!(
            fields("kind = \"webhook\"\nsender_id = \"sb\"\nmcr = true\n"),
            [
                ("backends[0].sender_id".to_string(), Some(13)),
                ("backends[0].mcr".to_string(), Some(14)),
            ]
        );
        assert_eq!(
            fields(
                "kind = \"wctp\"\nurl = \"https://pager.example.org/wctp\"\nsender_id = \"sb\"\n"
            ),
            [("backends[0].ca".to_string(), Some(10))]
        );
        let e = check("kind = \"pigeon\"\n").unwrap_err();
        assert!(
            e.0[0].problem.contains("webhook, wctp"),
            "{}",
            e.0[0].problem
        );
    }

    #[test]
    fn the_security_code_comes_from_the_environment() {
        let mut w = WctpSettings {
            sender_id: "sb".into(),
            security_code_env: None,
            poll: Duration::from_secs(1),
            max_chars: None,
            mcr: true,
        };
        assert_eq!(security_code(&w), Ok(None));
        w.security_code_env = Some("SB_WCTP_UNIT_TEST_CODE_NEVER_SET".into());
        let e = security_code(&w).unwrap_err();
        assert!(e.contains("SB_WCTP_UNIT_TEST_CODE_NEVER_SET"), "{e}");
    }
}
