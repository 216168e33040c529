//! The EHR write-back (`[alerts.writeback]`): for every alert that notified
//! someone, one Task for the alert and one Communication per recipient on
//! the EHR's FHIR server, kept up to date as the alert moves, so the EHR
//! shows who was told, when it reached them and who took it.
//!
//! - **Task** `sb-<origin>-<alert>`: `status` follows the alert —
//!   `requested` (notifying), `received` (delivered or read), `rejected`
//!   (the latest answer was a decline; the alert escalates), `accepted`,
//!   `completed` (resolved), `cancelled`, `failed` (every tier unanswered);
//!   `businessStatus.text` is the alert state; `priority`; `description` is
//!   the redacted preview line; `owner` the accepting member (their handle
//!   on a FHIR backend, else their NPI or first provider id, else their
//!   roster name); `focus` (the order, as a ServiceRequest identifier) and
//!   `for` (the patient, by MRN) **only** when the write-back's PHI profile
//!   allows `order_number` / `mrn` — the default `limited` allows neither.
//! - **Communication** `sb-<origin>-<alert>-<member hash>` per member told:
//!   `basedOn` the Task, `recipient` the member, `sent` when first told,
//!   `received` when a backend first delivered it (or they read, accepted or
//!   declined it), `status` `completed` once received, `stopped` when the
//!   alert closed before that, else `in-progress`; `payload` the preview.
//!
//! `<origin>` is 8 hex digits of SHA-256 over `[audit] origin`, so two
//! gateways writing to one EHR never share ids. Every resource is checked by
//! fhirbolt (strict R4) before it leaves, and written with `PUT
//! [base]/Type/id` (update as create, client-assigned ids), so a repeat
//! after a lost answer changes nothing; each carries an `identifier`
//! (`urn:ietf:rfc:3986`, a stable `urn:uuid:`). The whole alert is written
//! on each report (idempotent), so a report that arrives late never rolls
//! the EHR back.

use std::sync::Arc;

use axum::http::{Method, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::StatusRow;
use crate::alert::model::{Alert, Reason, State};
use crate::config::{BackendKind, Config, WritebackConfig};
use crate::delivery::Outcome;
use crate::delivery::fhir::{
    FHIR_JSON, IDENTIFIER_SYSTEM, handle_reference, instant, r4_json, urn_uuid,
};
use crate::delivery::http;
use crate::delivery::webhook::{classify, from_http_error, parse_retry_after};
use crate::listener::connection::Shared;
use crate::redact::{AlertView, Profile, Redacted};
use crate::roster::Member;

/// The write-back's client and settings.
pub struct Writer {
    /// Settings.
    pub cfg: WritebackConfig,
    http: http::Client,
    profile: Profile,
    origin: String,
    fhir_contacts: Vec<String>,
}

/// 8 hex digits naming this gateway (from `[audit] origin`).
pub fn origin_tag(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))[..8].to_string()
}

/// The Task id of an alert.
pub fn task_id(origin: &str, alert: i64) -> String {
    format!("sb-{origin}-{alert}")
}

/// The Communication id of a member told of an alert.
pub fn communication_id(origin: &str, alert: i64, member: &str) -> String {
    let m = &hex::encode(Sha256::digest(member.as_bytes()))[..12];
    format!("sb-{origin}-{alert}-{m}")
}

/// A member as a Reference: their handle on a FHIR backend
/// (`Practitioner/ID`), else an identifier (NPI, else their first provider
/// id), else their roster name; always with the roster name as `display`.
pub fn member_reference(member: &str, m: Option<&Member>, fhir_contacts: &[String]) -> Value {
    let Some(m) = m else {
        return json!({ "display": member });
    };
    let display = if m.display.trim().is_empty() {
        m.id.clone()
    } else {
        m.display.clone()
    };
    for kind in fhir_contacts {
        if let Some(handle) = m.contacts.get(kind)
            && let Some(mut r) = handle_reference(handle)
        {
            r["display"] = json!(display);
            return r;
        }
    }
    let id = m
        .ids
        .iter()
        .find(|i| i.authority.eq_ignore_ascii_case("NPI"))
        .or(m.ids.first());
    match id {
        Some(i) => {
            let system = if i.authority.eq_ignore_ascii_case("NPI") {
                "http://hl7.org/fhir/sid/us-npi".to_string()
            } else {
                format!("urn:switchboard:provider-id:{}", urlish(&i.authority))
            };
            json!({
                "type": "Practitioner",
                "identifier": { "system": system, "value": i.value },
                "display": display,
            })
        }
        None => json!({ "display": display }),
    }
}

/// Keeps letters, digits, `-` and `.` (for a URN part).
fn urlish(s: &str) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if v.is_empty() { "local".into() } else { v }
}

/// The member the alert's acceptance names.
fn accepted_member(a: &Alert) -> Option<String> {
    a.accepted_by
        .as_deref()
        .map(|s| s.split(" (on behalf").next().unwrap_or(s).to_string())
}

/// The Task status for the alert (see the module docs).
pub fn task_status(a: &Alert) -> &'static str {
    match a.state {
        State::Resolved => "completed",
        State::Cancelled => "cancelled",
        State::Exhausted => "failed",
        State::Accepted => "accepted",
        _ => {
            let last_answer = a.timeline.iter().rev().find_map(|s| {
                if s.what.starts_with("declined by ") {
                    Some(false)
                } else if s.what.starts_with("accepted by ") {
                    Some(true)
                } else {
                    None
                }
            });
            match (last_answer, a.state) {
                (Some(false), _) => "rejected",
                (_, State::Delivered | State::Read) => "received",
                _ => "requested",
            }
        }
    }
}

/// The Task of an alert. `owner`: the accepting member's reference.
pub fn task(a: &Alert, view: &Redacted<AlertView>, origin: &str, owner: Option<Value>) -> Value {
    let v = view.get();
    let last = a.timeline.last().map(|s| s.at).unwrap_or(a.created_at);
    let mut t = json!({
        "resourceType": "Task",
        "id": task_id(origin, a.id),
        "identifier": [{
            "system": IDENTIFIER_SYSTEM,
            "value": urn_uuid(&format!("task:{origin}:{}", a.id)),
        }],
        "status": task_status(a),
        "businessStatus": { "text": a.state.as_str() },
        "intent": "order",
        "priority": v.priority,
        "code": { "text": "Respond to a clinical alert" },
        "description": v.preview,
        "authoredOn": instant(a.created_at),
        "lastModified": instant(last),
    });
    if let Some(o) = owner {
        t["owner"] = o;
    }
    if let Some(order) = v.values.get("order_number") {
        t["focus"] = json!({ "type": "ServiceRequest", "identifier": { "value": order } });
    }
    if let Some(mrn) = v.values.get("mrn") {
        t["for"] = json!({ "type": "Patient", "identifier": { "value": mrn } });
    }
    t
}

/// When `member` first got the alert: a delivery, a read, an answer.
fn received_at(a: &Alert, member: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let by = format!("member:{member}");
    a.timeline
        .iter()
        .find(|s| {
            s.by == by
                && [
                    format!("delivered to {member}"),
                    format!("read by {member}"),
                    format!("declined by {member}"),
                    format!("accepted by {member}"),
                ]
                .contains(&s.what)
        })
        .map(|s| s.at)
}

/// The Communication to one member told of an alert.
pub fn communication(
    a: &Alert,
    view: &Redacted<AlertView>,
    origin: &str,
    member: &str,
    recipient: Value,
) -> Value {
    let v = view.get();
    let sent = a
        .notified
        .iter()
        .find(|n| n.member == member)
        .map(|n| n.at)
        .unwrap_or(a.created_at);
    let received = received_at(a, member);
    let status = match received {
        Some(_) => "completed",
        None if !a.state.is_open() => "stopped",
        None => "in-progress",
    };
    let mut c = json!({
        "resourceType": "Communication",
        "id": communication_id(origin, a.id, member),
        "identifier": [{
            "system": IDENTIFIER_SYSTEM,
            "value": urn_uuid(&format!("communication:{origin}:{}:{member}", a.id)),
        }],
        "basedOn": [{ "reference": format!("Task/{}", task_id(origin, a.id)) }],
        "status": status,
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                "code": "alert",
            }],
        }],
        "priority": v.priority,
        "recipient": [recipient],
        "sent": instant(sent),
        "payload": [{ "contentString": v.preview }],
    });
    if let Some(r) = received {
        c["received"] = json!(instant(r));
    }
    c
}

impl Writer {
    /// The writer of a configuration (TLS material loaded once).
    pub fn new(cfg: &WritebackConfig, config: &Config) -> Result<Writer, String> {
        let profile = crate::redact::builtin(&cfg.profile)
            .ok_or_else(|| "writeback: unknown profile".to_string())?;
        let http = http::Client::new(
            &http::TlsSettings {
                ca: cfg.ca.clone(),
                identity: cfg.client_cert.clone().zip(cfg.client_key.clone()),
            },
            cfg.timeout,
        )
        .map_err(|e| format!("writeback: {e}"))?;
        Ok(Writer {
            cfg: cfg.clone(),
            http,
            profile,
            origin: origin_tag(&config.audit.origin),
            fhir_contacts: config
                .backends
                .iter()
                .filter(|b| b.kind == BackendKind::FhirCommunication)
                .map(|b| b.contact.clone())
                .collect(),
        })
    }

    fn headers(&self) -> Result<Vec<(&'static str, String)>, Outcome> {
        let mut h = vec![
            ("accept", FHIR_JSON.to_string()),
            ("content-type", FHIR_JSON.to_string()),
        ];
        if let Some(var) = &self.cfg.token_env {
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

    async fn put(&self, resource: &Value) -> Outcome {
        let kind = resource["resourceType"].as_str().unwrap_or_default();
        let id = resource["id"].as_str().unwrap_or_default();
        let body = match r4_json(resource) {
            Ok(b) => b,
            Err(why) => return Outcome::Permanent(why),
        };
        let h = match self.headers() {
            Ok(h) => h,
            Err(o) => return o,
        };
        let url = format!("{}/{kind}/{id}", self.cfg.fhir_base);
        match self
            .http
            .send(Method::PUT, &url, &h, body, 256 * 1024)
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

    /// Writes the alert's Task and its recipients' Communications.
    pub async fn send(&self, shared: &Arc<Shared>, a: &Alert, _row: &StatusRow) -> Outcome {
        let view = crate::redact::redact(a, Reason::New, &self.profile);
        let routing = shared.routing.current();
        let rosters = &routing.rosters;
        let owner = accepted_member(a).map(|m| {
            member_reference(
                &m,
                rosters.member(&m).map(|x| x.as_ref()),
                &self.fhir_contacts,
            )
        });
        let mut resources = vec![task(a, &view, &self.origin, owner)];
        for m in a.told() {
            let r = member_reference(
                &m,
                rosters.member(&m).map(|x| x.as_ref()),
                &self.fhir_contacts,
            );
            resources.push(communication(a, &view, &self.origin, &m, r));
        }
        let mut last = Outcome::Delivered {
            status: 200,
            remote_ref: None,
        };
        for r in &resources {
            match self.put(r).await {
                Outcome::Delivered { status, .. } => {
                    last = Outcome::Delivered {
                        status,
                        remote_ref: None,
                    }
                }
                other => return other,
            }
        }
        last
    }
}
