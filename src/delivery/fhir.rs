//! The FHIR Communication backend (`kind = "fhir-communication"`): one R4
//! Communication POSTed per notification to the FHIR server at `url`, and
//! its status and replies read back.
//!
//! What is sent (and nothing else): `status` `in-progress`, `category`
//! `alert`, `priority` (the alert's: `stat`, `asap`, `urgent`, `routine`),
//! `recipient` (the member's handle, `Practitioner/ID` or
//! `PractitionerRole/ID`), `sent` (now), `payload.contentString` (the
//! rendered text of the redacted view — [`super::Outgoing::text`]),
//! `identifier` (system `urn:ietf:rfc:3986`, value the `urn:uuid:` form of
//! the notification's idempotency key) and, only when the backend's PHI
//! profile allows the order number, `basedOn` (a ServiceRequest by that
//! identifier). The resource is read back through fhirbolt in strict mode
//! before it leaves, so only a valid R4 resource is ever sent.
//!
//! Guarantees:
//! - **Never two Communications for one notification.** Every attempt sends
//!   `If-None-Exist: identifier=urn:ietf:rfc:3986|<value>` (a conditional
//!   create): a retry after a lost answer finds the first one.
//! - **Answers**: 200/201 delivered, `remote_ref` = the id in `Location`
//!   (else the body's `id`); 408, 425, 429 and 5xx retried honouring
//!   `Retry-After`; any other 4xx (an OperationOutcome) dead-letters;
//!   transport errors and timeouts are retried.
//! - **Status flows back** ([`poll`], one task per backend, every
//!   `poll_secs`): each delivered notification of an open alert is read
//!   (`GET Communication/{id}`): `received` set is [`Reply::Delivered`],
//!   `status` `completed` is [`Reply::Read`]. A reply is a Communication
//!   whose `inResponseTo` names ours (`GET
//!   Communication?in-response-to=Communication/{id}`) with a
//!   `payload.contentString` of `accept`/`accepted` ([`Reply::Accept`]) or
//!   `decline`/`declined`/`reject`/`rejected` ([`Reply::Decline`]); its
//!   `sender`, when given, must be the handle that was notified. Each is
//!   applied once: the alert's timeline is checked for the same step by the
//!   same member since the notice, so polling again adds nothing.
//! - **No PHI in logs**: logs carry backend, alert, member and HTTP status;
//!   reply text is never kept.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, header};
use chrono::SecondsFormat;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::webhook::{classify, from_http_error, parse_retry_after};
use super::{Backend, Outcome, Outgoing, Reply, ReplyError};
use crate::journal::NotificationRow;
use crate::listener::connection::Shared;

/// The identifier system of every resource the gateway writes: the value is
/// a URI (`urn:uuid:...`).
pub const IDENTIFIER_SYSTEM: &str = "urn:ietf:rfc:3986";

/// FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// The `urn:uuid:` form of a key: the first 128 bits of SHA-256(`key`), as
/// an RFC 9562 version 8 (custom) UUID. Stable: the same key, the same URI.
pub fn urn_uuid(key: &str) -> String {
    let mut h: [u8; 16] = Sha256::digest(key.as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    h[6] = (h[6] & 0x0f) | 0x80;
    h[8] = (h[8] & 0x3f) | 0x80;
    let x = hex::encode(h);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The Reference for a handle `Practitioner/ID` or `PractitionerRole/ID`
/// (an id of 1 to 64 letters, digits, `-` and `.`); `None` for anything else.
pub fn handle_reference(handle: &str) -> Option<Value> {
    let (kind, id) = handle.trim().split_once('/')?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (matches!(kind, "Practitioner" | "PractitionerRole") && id_ok)
        .then(|| json!({ "reference": format!("{kind}/{id}") }))
}

/// A FHIR `dateTime`/`instant` in UTC with milliseconds.
pub fn instant(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads `v` as an R4 resource through fhirbolt (strict: an unknown
/// element, a wrong type or a missing required element is refused) and
/// writes it back: the bytes to send. The error names the resource type
/// only.
pub fn r4_json(v: &Value) -> Result<Vec<u8>, String> {
    use fhirbolt::model::r4::Resource as R4;
    use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
    let kind = v["resourceType"].as_str().unwrap_or("resource").to_string();
    let config = DeserializationConfig {
        mode: DeserializationMode::Strict,
    };
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fhirbolt::json::from_json_value::<R4>(v.clone(), Some(config))
    }));
    let r = match parsed {
        Ok(Ok(r)) => r,
        Ok(Err(_)) | Err(_) => return Err(format!("{kind} is not a valid R4 resource")),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fhirbolt::json::to_vec(&r, None)
    })) {
        Ok(Ok(b)) => Ok(b),
        _ => Err(format!("{kind} could not be written")),
    }
}

/// The Communication for one notification (see the module docs).
pub fn communication(out: &Outgoing<'_>) -> Result<Value, String> {
    let v = out.view.get();
    let recipient = handle_reference(&out.row.handle).ok_or_else(|| {
        "the member's handle is not a Practitioner/ID or PractitionerRole/ID reference".to_string()
    })?;
    let text = if out.text.trim().is_empty() {
        v.preview.as_str()
    } else {
        out.text
    };
    let mut c = json!({
        "resourceType": "Communication",
        "identifier": [{
            "system": IDENTIFIER_SYSTEM,
            "value": urn_uuid(&out.row.idempotency_key),
        }],
        "status": "in-progress",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                "code": "alert",
            }],
        }],
        "priority": v.priority,
        "recipient": [recipient],
        "sent": instant(out.now),
        "payload": [{ "contentString": text }],
    });
    if let Some(order) = v.values.get("order_number") {
        c["basedOn"] = json!([{
            "type": "ServiceRequest",
            "identifier": { "value": order },
        }]);
    }
    Ok(c)
}

/// The headers of a request to the backend's FHIR server: JSON both ways
/// and the bearer token, when one is configured (and set).
fn headers(b: &Backend) -> Result<Vec<(&'static str, String)>, Outcome> {
    let mut h = vec![
        ("accept", FHIR_JSON.to_string()),
        ("content-type", FHIR_JSON.to_string()),
    ];
    if let Some(var) = b.cfg.fhir.as_ref().and_then(|f| f.token_env.as_ref()) {
        match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => {
                h.push(("authorization", format!("Bearer {}", t.trim())))
            }
            _ => {
                return Err(Outcome::Retry {
                    why: format!("bearer token ${var} is not set"),
                    retry_after: None,
                });
            }
        }
    }
    Ok(h)
}

fn base(b: &Backend) -> String {
    b.cfg
        .url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

/// The logical id in a `Location` (`.../Communication/ID[/_history/V]`).
pub fn id_from_location(location: &str, kind: &str) -> Option<String> {
    let parts: Vec<&str> = location.split(['?', '#']).next()?.split('/').collect();
    let at = parts.iter().rposition(|p| *p == kind)?;
    parts
        .get(at + 1)
        .filter(|id| !id.is_empty())
        .map(|id| id.to_string())
}

/// Delivers one notification (conditional create).
pub async fn deliver(b: &Backend, out: &Outgoing<'_>) -> Outcome {
    let body = match communication(out).and_then(|c| r4_json(&c)) {
        Ok(body) => body,
        Err(why) => return Outcome::Permanent(why),
    };
    let mut h = match headers(b) {
        Ok(h) => h,
        Err(o) => return o,
    };
    h.push((
        "if-none-exist",
        format!(
            "identifier={IDENTIFIER_SYSTEM}|{}",
            urn_uuid(&out.row.idempotency_key)
        ),
    ));
    let url = format!("{}/Communication", base(b));
    let resp = match b.http.send(Method::POST, &url, &h, body, MAX_ANSWER).await {
        Ok(r) => r,
        Err(e) => return from_http_error(e),
    };
    let retry_after = resp
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    match classify(resp.status, retry_after) {
        Outcome::Delivered { status, .. } => {
            let from_location = resp
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| id_from_location(l, "Communication"));
            let from_body = || {
                serde_json::from_slice::<Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
            };
            let remote_ref = from_location.or_else(from_body);
            if remote_ref.is_none() {
                tracing::warn!(backend = %b.cfg.name, alert = out.row.alert_id, status, "FHIR server accepted the Communication without naming its id: its status cannot be followed");
            }
            Outcome::Delivered { status, remote_ref }
        }
        other => other,
    }
}

/// What a reply Communication says.
pub fn reply_word(c: &Value) -> Option<Reply> {
    c["payload"].as_array()?.iter().find_map(|p| {
        match p["contentString"]
            .as_str()?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "accept" | "accepted" => Some(Reply::Accept),
            "decline" | "declined" | "reject" | "rejected" => Some(Reply::Decline),
            _ => None,
        }
    })
}

/// The receipts a Communication read back carries, in order.
pub fn receipts(c: &Value) -> Vec<Reply> {
    let mut out = Vec::new();
    if c["received"].as_str().is_some_and(|s| !s.is_empty()) {
        out.push(Reply::Delivered);
    }
    if c["status"].as_str() == Some("completed") {
        out.push(Reply::Read);
    }
    out
}

async fn get_json(b: &Backend, url: &str) -> Option<Value> {
    let h = headers(b).ok()?;
    let resp = b
        .http
        .send(Method::GET, url, &h, Vec::new(), MAX_ANSWER)
        .await
        .ok()?;
    if resp.status != 200 {
        tracing::debug!(backend = %b.cfg.name, status = resp.status, "FHIR read not answered 200");
        return None;
    }
    serde_json::from_slice(&resp.body).ok()
}

/// Applies `reply` to `row` unless the alert already shows it.
async fn once(
    shared: &Arc<Shared>,
    b: &Backend,
    row: &NotificationRow,
    from: Option<&str>,
    reply: Reply,
) {
    let Some(remote) = row.remote_ref.clone() else {
        return;
    };
    let id = row.alert_id;
    let alert = match shared.journal.with_storage(move |s| s.alert(id)).await {
        Ok(Ok(Some(a))) => a,
        _ => return,
    };
    let (by, what) = super::step_of(reply, &row.member);
    if super::already_applied(&alert, row, &by, &what) {
        return;
    }
    match super::apply_reply(shared, &b.cfg.contact, &remote, from, reply).await {
        Ok(_) => {
            tracing::info!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, reply = ?reply, "FHIR Communication status applied");
        }
        Err(ReplyError::Journal) => {}
        Err(e) => {
            tracing::info!(backend = %b.cfg.name, alert = row.alert_id, member = %row.member, reply = ?reply, error = %e, "FHIR Communication status not applied");
        }
    }
}

/// Reads back one delivered notification: its receipts, then replies.
async fn follow(shared: &Arc<Shared>, b: &Backend, row: &NotificationRow) {
    let Some(id) = row.remote_ref.as_deref() else {
        return;
    };
    let base = base(b);
    if let Some(c) = get_json(b, &format!("{base}/Communication/{id}")).await {
        for r in receipts(&c) {
            once(shared, b, row, None, r).await;
        }
    }
    let search = format!("{base}/Communication?in-response-to=Communication/{id}");
    let Some(bundle) = get_json(b, &search).await else {
        return;
    };
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    for e in entries {
        let c = &e["resource"];
        if c["resourceType"] != "Communication" {
            continue;
        }
        let names_ours = c["inResponseTo"].as_array().is_some_and(|refs| {
            refs.iter().any(|r| {
                r["reference"].as_str().is_some_and(|s| {
                    s == format!("Communication/{id}")
                        || s.ends_with(&format!("/Communication/{id}"))
                })
            })
        });
        if !names_ours {
            continue;
        }
        let Some(reply) = reply_word(c) else {
            continue;
        };
        let from = c["sender"]["reference"].as_str();
        once(shared, b, row, from, reply).await;
    }
}

/// Follows one FHIR backend's delivered notifications until `shutdown`.
pub async fn poll(shared: Arc<Shared>, b: Arc<Backend>, shutdown: CancellationToken) {
    let every = b
        .cfg
        .fhir
        .as_ref()
        .map(|f| f.poll)
        .unwrap_or(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let contact = b.cfg.contact.clone();
        let rows = match shared
            .journal
            .with_storage(move |s| s.notifications_outstanding(&contact, 256))
            .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(backend = %b.cfg.name, error = %e, "outstanding notifications could not be read");
                continue;
            }
            Err(_) => return,
        };
        for row in &rows {
            if shutdown.is_cancelled() {
                return;
            }
            follow(&shared, &b, row).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urn_uuids_are_stable_and_well_formed() {
        let u = urn_uuid("abc");
        assert_eq!(u, urn_uuid("abc"));
        assert_ne!(u, urn_uuid("abd"));
        let s = u.strip_prefix("urn:uuid:").unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('8'), "version 8");
        assert!("89ab".contains(&parts[3][..1]), "RFC variant");
    }

    #[test]
    fn only_practitioner_handles_are_references() {
        assert_eq!(
            handle_reference("Practitioner/123"),
            Some(json!({"reference": "Practitioner/123"}))
        );
        assert!(handle_reference("PractitionerRole/a.b-c").is_some());
        for bad in [
            "Patient/1",
            "Practitioner/",
            "Practitioner/a b",
            "http://x/Practitioner/1",
            "123",
        ] {
            assert_eq!(handle_reference(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_come_from_location() {
        assert_eq!(
            id_from_location("http://h/fhir/Communication/42/_history/1", "Communication"),
            Some("42".into())
        );
        assert_eq!(
            id_from_location("Communication/7", "Communication"),
            Some("7".into())
        );
        assert_eq!(
            id_from_location("http://h/fhir/Task/7", "Communication"),
            None
        );
    }

    #[test]
    fn replies_and_receipts_are_read() {
        let c = json!({"payload": [{"contentString": " Accept "}]});
        assert_eq!(reply_word(&c), Some(Reply::Accept));
        let c = json!({"payload": [{"contentString": "declined"}]});
        assert_eq!(reply_word(&c), Some(Reply::Decline));
        assert_eq!(
            reply_word(&json!({"payload": [{"contentString": "on my way"}]})),
            None
        );
        let c = json!({"status": "completed", "received": "2026-01-01T00:00:00Z"});
        assert_eq!(receipts(&c), [Reply::Delivered, Reply::Read]);
        assert!(receipts(&json!({"status": "in-progress"})).is_empty());
    }

    #[test]
    fn r4_json_refuses_what_is_not_r4() {
        let ok = json!({"resourceType": "Communication", "status": "in-progress"});
        let bytes = r4_json(&ok).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back["status"], "in-progress");
        let unknown =
            json!({"resourceType": "Communication", "status": "in-progress", "nonsense": 1});
        assert!(r4_json(&unknown).is_err());
        let missing = json!({"resourceType": "Communication"});
        assert!(r4_json(&missing).is_err(), "status is required");
    }
}
