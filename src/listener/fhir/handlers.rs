//! The FHIR request handlers: authenticate, read the body within its
//! limits, parse, journal (the answer is committed with the request), and
//! answer only after the commit.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::FHIR_JSON;
use super::auth::authenticate;
use super::source;
use crate::config::SenderConfig;
use crate::event::ClinicalEvent;
use crate::journal::{DedupKey, Fate, NewMessage, Receipt};
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;
use crate::parse::fhir::{self, Bundle, FhirContext, FhirError, IssueType};
use crate::telemetry::Metrics;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// The supported resource types, as the CapabilityStatement lists them.
const TYPES: &[&str] = &[
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Encounter",
    "Flag",
    "DetectedIssue",
    "Communication",
    "CommunicationRequest",
];

fn fhir_response(status: StatusCode, body: &Value, location: Option<&str>) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// An error answer: OperationOutcome, plus `WWW-Authenticate` for 401 and
/// `Retry-After` for 429/503.
pub(super) fn error_response(e: &FhirError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = fhir_response(
        status,
        &fhir::operation_outcome(std::slice::from_ref(e)),
        None,
    );
    match e.status {
        401 => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        429 | 503 => {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        _ => {}
    }
    r
}

/// `GET metadata`: what is accepted, exactly.
pub async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    fhir_response(
        StatusCode::OK,
        &capability_statement(&shared.config.http.fhir_base),
        None,
    )
}

/// The CapabilityStatement.
pub fn capability_statement(base: &str) -> Value {
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": [{ "code": "create" }],
                "conditionalCreate": true,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": { "name": "Switchboard", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Switchboard clinical alert gateway: FHIR R4 intake", "url": base },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json", FHIR_XML, "xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Resources are accepted for alerting only: they are journaled and turned into events, not stored for read. Every 2xx follows a durable commit. Repeats are recognised by If-None-Exist, Bundle.identifier, the subscription event number, or the first business identifier.",
            "security": {
                "description": "Bearer token per sender (only its SHA-256 is configured) and/or a TLS client certificate.",
            },
            "resource": resources,
            "interaction": [
                { "code": "batch" },
                { "code": "transaction" },
            ],
            "operation": [{
                "name": "process-message",
                "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
            }],
        }],
    })
}

/// Everything a request needs once authenticated.
struct Request<'a> {
    shared: &'a Arc<Shared>,
    sender: &'a SenderConfig,
    peer: &'a PeerInfo,
    /// The body's media type (one of [`MEDIA_TYPES`]), journaled with it.
    media: &'static str,
}

/// Media type of FHIR XML.
const FHIR_XML: &str = "application/fhir+xml";

/// The request media types accepted; the last two are read as FHIR XML.
const MEDIA_TYPES: &[&str] = &[FHIR_JSON, "application/json", FHIR_XML, "application/xml"];

/// Reads the body, refusing a wrong content type (415) and anything over
/// the limit (413) — from `Content-Length` before reading, else while
/// reading, never buffering more than the limit. Returns it with its media
/// type.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<(axum::body::Bytes, &'static str), FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(media) = MEDIA_TYPES.iter().copied().find(|m| *m == media) else {
        return Err(FhirError::new(
            415,
            IssueType::NotSupported,
            "Content-Type must be application/fhir+json, application/json, application/fhir+xml or application/xml",
        ));
    };
    let max = shared.config.http.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(FhirError::too_long());
    }
    let timeout = shared.config.http.request_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok((b, media)),
        Ok(Err(_)) => Err(FhirError::too_long()),
        Err(_) => Err(FhirError::new(
            408,
            IssueType::Timeout,
            "request body not received in time",
        )),
    }
}

/// What a request produced, before the journal.
struct Outcome {
    status: u16,
    body: Value,
    location: Option<String>,
    events: Vec<ClinicalEvent>,
    fate: Fate,
    error: Option<FhirError>,
}

/// The answer stored with the request, replayed for a repeat.
fn envelope(status: u16, location: Option<&str>, body: &Value) -> Vec<u8> {
    json!({ "status": status, "location": location, "body": body })
        .to_string()
        .into_bytes()
}

impl<'a> Request<'a> {
    /// The common start of every FHIR request: authenticate (401/403,
    /// nothing journaled), then read the body within its limits.
    async fn begin(
        shared: &'a Arc<Shared>,
        peer: &'a PeerInfo,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Request<'a>, axum::body::Bytes), Response> {
        let sender = authenticate(&shared.config.senders, headers, peer).map_err(|e| {
            tracing::info!(peer = %peer.addr, status = e.status, "FHIR request not authenticated");
            error_response(&e)
        })?;
        let (bytes, media) = read_body(shared, headers, body)
            .await
            .map_err(|e| error_response(&e))?;
        Ok((
            Request {
                shared,
                sender,
                peer,
                media,
            },
            bytes,
        ))
    }

    /// The body as FHIR JSON: an XML body is converted (strict; 400
    /// `structure` when it cannot be), then read exactly as JSON is. The
    /// journal keeps the bytes as received.
    fn json<'b>(
        &self,
        raw: &'b [u8],
        release: fhir::XmlRelease,
    ) -> Result<std::borrow::Cow<'b, [u8]>, FhirError> {
        if self.media == FHIR_XML || self.media == "application/xml" {
            fhir::xml_to_json(raw, release).map(std::borrow::Cow::Owned)
        } else {
            Ok(std::borrow::Cow::Borrowed(raw))
        }
    }

    fn ctx(&self) -> FhirContext<'_> {
        FhirContext {
            source: &self.sender.name,
            timezone: self.sender.timezone,
        }
    }

    /// Journals a request that could not be read as FHIR, with its
    /// OperationOutcome; answers after the commit.
    async fn reject(&self, trigger: &str, raw: &[u8], e: FhirError) -> Response {
        self.commit(
            trigger,
            String::new(),
            raw,
            crate::event::Processing::Production,
            rejected(e),
        )
        .await
    }

    /// Journals the request with its answer; answers after the commit.
    async fn commit(
        &self,
        trigger: &str,
        key: String,
        raw: &[u8],
        processing: crate::event::Processing,
        out: Outcome,
    ) -> Response {
        let shared = self.shared;
        let ack = envelope(out.status, out.location.as_deref(), &out.body);
        // With an idempotency key the key itself is the body identity: a
        // repeat is a repeat even if incidental fields changed.
        let identity: [u8; 32] = if key.is_empty() {
            Sha256::digest(raw).into()
        } else {
            Sha256::digest(key.as_bytes()).into()
        };
        let message = NewMessage {
            received_at: shared.clock.now_utc(),
            peer: self.peer.describe(),
            sender: Some(self.sender.name.clone()),
            key: DedupKey {
                msh3: "FHIR".into(),
                msh4: self.sender.name.clone(),
                control_id: key,
            },
            message_type: "FHIR".into(),
            trigger: trigger.to_string(),
            processing_id: processing.code().to_string(),
            raw: raw.to_vec(),
            raw_charset: self.media.into(),
            body_sha256: identity,
            fate: out.fate,
            reason: out.error.as_ref().map(|e| e.diagnostics.to_string()),
            error_code: out.error.as_ref().map(|e| e.status),
            error_location: out.error.as_ref().and_then(|e| e.expression.clone()),
            events: out.events,
            ack_code: Some(out.status.to_string()),
            ack,
            app_ack: None,
            batch_ref: None,
        };
        let (sender, message_type) = (message.sender.clone(), message.message_type.clone());
        match shared.journal.commit(message).await {
            Ok(receipt) => {
                let answer = replay(&receipt, shared);
                if !receipt.is_duplicate() {
                    shared.metrics.feed(
                        sender.as_deref(),
                        &message_type,
                        answer.status().is_success(),
                    );
                }
                answer
            }
            Err(_) => {
                Metrics::inc(&shared.metrics.storage_failures);
                error_response(&FhirError::transient())
            }
        }
    }
}

/// The answer from a journal receipt: the stored one; a repeat of a
/// successful create answers 200 (FHIR conditional create semantics).
fn replay(receipt: &Receipt, shared: &Shared) -> Response {
    let stored: Value = serde_json::from_slice(receipt.ack()).unwrap_or(Value::Null);
    let mut status = stored["status"].as_u64().unwrap_or(500) as u16;
    if receipt.is_duplicate() {
        Metrics::inc(&shared.metrics.duplicates);
        if status == 201 {
            status = 200;
        }
    } else if status < 300 {
        Metrics::inc(&shared.metrics.messages_accepted);
    } else {
        Metrics::inc(&shared.metrics.messages_rejected);
    }
    let mut r = fhir_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &stored["body"],
        stored["location"].as_str(),
    );
    if status == 503 {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    r
}

fn rejected(e: FhirError) -> Outcome {
    Outcome {
        status: e.status,
        body: fhir::operation_outcome(std::slice::from_ref(&e)),
        location: None,
        events: Vec::new(),
        fate: Fate::Rejected,
        error: Some(e),
    }
}

/// The idempotency key of one resource: `If-None-Exist`, else its first
/// business identifier, else none.
fn resource_key(kind: &str, if_none_exist: Option<&str>, r: &fhir::Resource) -> String {
    if let Some(q) = if_none_exist.filter(|q| !q.trim().is_empty()) {
        return format!("{kind}?{}", q.trim());
    }
    match r.identifiers.first() {
        Some(id) if !id.value.is_empty() => format!("{kind}|{}|{}", id.authority, id.value),
        _ => String::new(),
    }
}

/// `POST {base}/{type}` (and `POST {base}/$process-message`).
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (req, bytes) = match Request::begin(&shared, &peer, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if kind == "$process-message" {
        return process_message(&req, &bytes).await;
    }
    if !fhir::supported_type(&kind) {
        let e = FhirError::at(
            404,
            IssueType::NotSupported,
            kind_expr(&kind),
            "resource type not supported here",
        );
        return req.reject(&kind_expr(&kind), &bytes, e).await;
    }
    let resource = match req
        .json(&bytes, fhir::XmlRelease::R4)
        .and_then(|b| fhir::parse_resource(&b, Some(&kind)))
    {
        Ok(r) => r,
        Err(e) => {
            return req.reject(&kind, &bytes, e).await;
        }
    };
    let if_none_exist = headers.get("if-none-exist").and_then(|v| v.to_str().ok());
    let key = resource_key(&kind, if_none_exist, &resource);
    let processing = resource.processing;
    let out = match fhir::events(&resource, None, &req.ctx()) {
        Ok(events) => {
            let id = shared.ids.next_id();
            let location = format!("{}/{kind}/{id}", shared.config.http.fhir_base);
            Outcome {
                status: 201,
                body: fhir::information_outcome(&format!("accepted: {} event(s)", events.len())),
                location: Some(location),
                events,
                fate: Fate::Accepted,
                error: None,
            }
        }
        Err(e) => rejected(e),
    };
    req.commit(&kind, key, &bytes, processing, out).await
}

/// An unsupported type name is echoed only when it looks like one.
fn kind_expr(kind: &str) -> String {
    if kind.len() <= 64 && kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        kind.to_string()
    } else {
        "resourceType".to_string()
    }
}

/// `POST {base}` with a batch or transaction Bundle.
pub async fn bundle(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (req, bytes) = match Request::begin(&shared, &peer, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let parsed = match req
        .json(&bytes, fhir::XmlRelease::R4)
        .and_then(|b| fhir::parse_bundle(&b))
    {
        Ok(b) => b,
        Err(e) => {
            return req.reject("Bundle", &bytes, e).await;
        }
    };
    let key = bundle_key(&parsed);
    let processing = parsed.processing;
    let out = match parsed.bundle_type.as_str() {
        "transaction" => transaction(&req, &parsed),
        "batch" => batch(&req, &parsed),
        _ => rejected(FhirError::at(
            400,
            IssueType::Invalid,
            "Bundle.type",
            "POST to the base takes batch or transaction Bundles; use $process-message for messages",
        )),
    };
    req.commit(
        &format!("Bundle-{}", parsed.bundle_type),
        key,
        &bytes,
        processing,
        out,
    )
    .await
}

fn bundle_key(b: &Bundle) -> String {
    match &b.identifier {
        Some(id) if !id.value.is_empty() => format!("Bundle|{}|{}", id.authority, id.value),
        _ => String::new(),
    }
}

/// The request of an entry must be a create of a supported type.
fn entry_check(i: usize, e: &fhir::Entry) -> Result<&fhir::Resource, FhirError> {
    let at = |suffix: &str| format!("Bundle.entry[{i}]{suffix}");
    let resource = match &e.resource {
        Some(Ok(r)) => r,
        Some(Err(err)) => return Err(err.clone()),
        None => {
            return Err(FhirError::at(
                400,
                IssueType::Required,
                at(".resource"),
                "entry has no resource",
            ));
        }
    };
    if let Some(r) = &e.request
        && r.method != "POST"
    {
        return Err(FhirError::at(
            422,
            IssueType::NotSupported,
            at(".request.method"),
            "only POST (create) entries are accepted",
        ));
    }
    if !fhir::supported_type(&resource.type_name) {
        return Err(FhirError::at(
            422,
            IssueType::NotSupported,
            at(".resource"),
            "resource type not supported here",
        ));
    }
    Ok(resource)
}

fn entry_location(req: &Request<'_>, r: &fhir::Resource) -> String {
    format!(
        "{}/{}/{}",
        req.shared.config.http.fhir_base,
        r.type_name,
        req.shared.ids.next_id()
    )
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}").trim().to_string()
}

/// All or nothing: any bad entry rejects the whole transaction, naming it.
fn transaction(req: &Request<'_>, b: &Bundle) -> Outcome {
    let cx = b.context();
    let mut events = Vec::new();
    let mut responses = Vec::new();
    for (i, e) in b.entries.iter().enumerate() {
        let resource = match entry_check(i, e) {
            Ok(r) => r,
            Err(err) => return rejected(err),
        };
        match fhir::events(resource, Some(&cx), &req.ctx()) {
            Ok(mut ev) => events.append(&mut ev),
            Err(err) => return rejected(err.within(&format!("Bundle.entry[{i}].resource"))),
        }
        responses.push(json!({ "response": { "status": status_line(201), "location": entry_location(req, resource) } }));
    }
    Outcome {
        status: 200,
        body: json!({ "resourceType": "Bundle", "type": "transaction-response", "entry": responses }),
        location: None,
        events,
        fate: Fate::Accepted,
        error: None,
    }
}

/// Each entry on its own: the response carries each entry's status.
fn batch(req: &Request<'_>, b: &Bundle) -> Outcome {
    let cx = b.context();
    let mut events = Vec::new();
    let mut responses = Vec::new();
    let mut failed = 0;
    for (i, e) in b.entries.iter().enumerate() {
        let result = entry_check(i, e).and_then(|r| {
            fhir::events(r, Some(&cx), &req.ctx())
                .map(|ev| (r, ev))
                .map_err(|err| err.within(&format!("Bundle.entry[{i}].resource")))
        });
        match result {
            Ok((r, mut ev)) => {
                events.append(&mut ev);
                responses.push(json!({ "response": { "status": status_line(201), "location": entry_location(req, r) } }));
            }
            Err(err) => {
                failed += 1;
                responses.push(json!({ "response": {
                    "status": status_line(err.status),
                    "outcome": fhir::operation_outcome(std::slice::from_ref(&err)),
                } }));
            }
        }
    }
    Outcome {
        status: 200,
        body: json!({ "resourceType": "Bundle", "type": "batch-response", "entry": responses }),
        location: None,
        events,
        fate: if failed > 0 && failed == b.entries.len() {
            Fate::Rejected
        } else {
            Fate::Accepted
        },
        error: None,
    }
}

/// `POST {base}/$process-message` with a message Bundle.
async fn process_message(req: &Request<'_>, bytes: &[u8]) -> Response {
    let parsed = match req
        .json(bytes, fhir::XmlRelease::R4)
        .and_then(|b| fhir::parse_bundle(&b))
    {
        Ok(b) => b,
        Err(e) => {
            return req.reject("Bundle-message", bytes, e).await;
        }
    };
    let processing = parsed.processing;
    let mut key = bundle_key(&parsed);
    let out = if parsed.bundle_type != "message" {
        rejected(FhirError::at(
            400,
            IssueType::Invalid,
            "Bundle.type",
            "$process-message takes a message Bundle",
        ))
    } else {
        let header = parsed.entries.first().and_then(|e| match &e.resource {
            Some(Ok(r)) if r.type_name == "MessageHeader" => Some(r),
            _ => None,
        });
        match header {
            None => rejected(FhirError::at(
                400,
                IssueType::Required,
                "Bundle.entry[0].resource",
                "a message Bundle starts with its MessageHeader",
            )),
            Some(h) => {
                if key.is_empty()
                    && let Some(id) = &h.id
                {
                    key = format!("MessageHeader|{id}");
                }
                let cx = parsed.context();
                let mut events = Vec::new();
                let mut error = None;
                for (i, r) in parsed.resources().skip(1) {
                    if !fhir::supported_type(&r.type_name) {
                        continue;
                    }
                    match fhir::events(r, Some(&cx), &req.ctx()) {
                        Ok(mut ev) => events.append(&mut ev),
                        Err(e) => {
                            error = Some(e.within(&format!("Bundle.entry[{i}].resource")));
                            break;
                        }
                    }
                }
                match error {
                    Some(e) => rejected(e),
                    None => Outcome {
                        status: 200,
                        body: json!({
                            "resourceType": "Bundle",
                            "type": "message",
                            "entry": [{
                                "resource": {
                                    "resourceType": "MessageHeader",
                                    "eventCoding": { "system": "http://switchboard.local/fhir/response", "code": "accepted" },
                                    "source": { "endpoint": req.shared.config.http.fhir_base },
                                    "response": { "identifier": h.id.clone().unwrap_or_default(), "code": "ok" },
                                }
                            }],
                        }),
                        location: None,
                        events,
                        fate: Fate::Accepted,
                        error: None,
                    },
                }
            }
        }
    };
    req.commit("Bundle-message", key, bytes, processing, out)
        .await
}

/// `POST {base}/notifications`: subscription notifications (R4 backport,
/// R4B, R5). Handshakes and heartbeats are answered and recorded; event
/// notifications become events; `events-since-subscription-start` and the
/// event numbers are tracked per subscription so a gap is detected,
/// reported (log at ERROR, metric, audit) and visible in the journal.
pub async fn notification(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (req, bytes) = match Request::begin(&shared, &peer, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let n = match req
        .json(&bytes, fhir::XmlRelease::Notification)
        .and_then(|b| fhir::parse_notification(&b))
    {
        Ok(n) => n,
        Err(e) => {
            return req.reject("notification", &bytes, e).await;
        }
    };
    let kind = n.notification_type.code();
    let trigger = format!("notification-{kind}");
    let numbers: Vec<u64> = n.events.iter().filter_map(|e| e.event_number).collect();
    let (first, last) = (numbers.iter().min().copied(), numbers.iter().max().copied());
    let key = match (first, last) {
        (Some(a), Some(b)) => format!("{}#{a}-{b}", n.subscription),
        _ => String::new(),
    };
    // Where this subscription stands, and whether events went missing.
    let mut missing = None;
    let newest = last.or(n.events_since_subscription_start);
    if let Some(newest) = newest {
        let sub = format!("{}|{}", req.sender.name, n.subscription);
        let at = shared.clock.now_utc();
        let previous = shared
            .journal
            .with_storage(move |s| s.subscription_advance(&sub, newest, at))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let expected_next = previous.map(|p| p + 1);
        let gap_start = match (expected_next, first) {
            (Some(next), Some(f)) if f > next => Some((next, f - 1)),
            (Some(next), None) if newest >= next && kind != "handshake" => {
                // A heartbeat saying more events happened than we received.
                (newest > next.saturating_sub(1)).then_some((next, newest))
            }
            _ => None,
        };
        if let Some((from, to)) = gap_start {
            report_gap(&shared, req.sender, &n.subscription, from, to).await;
            missing = Some((from, to));
        }
    }
    let out = match n.notification_type {
        fhir::NotificationType::EventNotification | fhir::NotificationType::QueryEvent => {
            match notification_events(&req, &n).await {
                Ok(events) => Outcome {
                    status: 200,
                    body: fhir::information_outcome(&format!(
                        "notification accepted: {} event(s)",
                        events.len()
                    )),
                    location: None,
                    fate: if events.is_empty() {
                        Fate::Filtered
                    } else {
                        Fate::Accepted
                    },
                    events,
                    error: None,
                },
                Err(e) => rejected(e),
            }
        }
        _ => Outcome {
            status: 200,
            body: fhir::information_outcome(&format!("{kind} received")),
            location: None,
            events: Vec::new(),
            fate: Fate::Filtered,
            error: None,
        },
    };
    let response = req.commit(&trigger, key, &bytes, n.processing, out).await;
    if let Some((from, to)) = missing {
        recover_gap(&req, &n.subscription, from, to).await;
    }
    response
}

/// The events of a notification: each event's focus from the resources
/// included in it, or — for an id-only notification — fetched from the
/// sender's FHIR server. A focus that cannot be had now is a 503 (the
/// source resends; nothing is half-processed).
async fn notification_events(
    req: &Request<'_>,
    n: &fhir::Notification,
) -> Result<Vec<ClinicalEvent>, FhirError> {
    let cx = n.context();
    let mut events = Vec::new();
    let mut fetched: Vec<fhir::Resource> = Vec::new();
    for (i, e) in n.events.iter().enumerate() {
        let Some(focus) = e.focus.as_deref() else {
            continue;
        };
        match cx.resolve(focus) {
            Some(r) => {
                let mut ev = fhir::events(r, Some(&cx), &req.ctx())
                    .map_err(|err| err.within(&format!("notification.event[{i}].focus")))?;
                events.append(&mut ev);
            }
            None => {
                let Some(source) = req.sender.fhir_source.as_ref() else {
                    tracing::warn!(sender = %req.sender.name, "id-only notification event and no fhir_source configured: recorded, no event produced");
                    continue;
                };
                let Some(path) = source::relative(source, focus) else {
                    tracing::warn!(sender = %req.sender.name, "notification focus is not on the configured source server: recorded, no event produced");
                    continue;
                };
                let kind = path.split('/').next().unwrap_or("").to_string();
                let body = source::get(source, &path).await.map_err(|e| {
                    tracing::error!(sender = %req.sender.name, error = %e, "cannot fetch the focus of an id-only notification; answering 503 so it is resent");
                    FhirError::transient()
                })?;
                let r = fhir::parse_resource(&body, Some(&kind))
                    .map_err(|err| err.within(&format!("notification.event[{i}].focus")))?;
                fetched.push(r);
            }
        }
    }
    for r in &fetched {
        events.append(&mut fhir::events(r, Some(&cx), &req.ctx())?);
    }
    Ok(events)
}

/// Asks the source server for the missed events with `$events` and
/// processes them like a notification, journaled as their own request.
async fn recover_gap(req: &Request<'_>, subscription: &str, from: u64, to: u64) {
    let Some(source) = req.sender.fhir_source.as_ref() else {
        return;
    };
    let Some(sub) = source::relative(source, subscription) else {
        tracing::error!(sender = %req.sender.name, "subscription is not on the configured source server: gap cannot be recovered");
        return;
    };
    let path = format!("{sub}/$events?eventsSinceNumber={from}&eventsUntilNumber={to}");
    let body = match source::get(source, &path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(sender = %req.sender.name, error = %e, missing_from = from, missing_to = to, "gap recovery with $events failed; the gap stays reported");
            return;
        }
    };
    let n = match fhir::parse_notification(&body) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(sender = %req.sender.name, status = e.status, "gap recovery: $events answer unreadable");
            return;
        }
    };
    let out = match notification_events(req, &n).await {
        Ok(events) => Outcome {
            status: 200,
            body: fhir::information_outcome(&format!("recovered: {} event(s)", events.len())),
            location: None,
            fate: if events.is_empty() {
                Fate::Filtered
            } else {
                Fate::Accepted
            },
            events,
            error: None,
        },
        Err(e) => rejected(e),
    };
    let key = format!("{}#{from}-{to}", subscription);
    let _ = req
        .commit("notification-recovered", key, &body, n.processing, out)
        .await;
    Metrics::inc(&req.shared.metrics.fhir_gaps_recovered);
    tracing::warn!(sender = %req.sender.name, missing_from = from, missing_to = to, "missed subscription events recovered with $events");
}

/// A subscription skipped event numbers: ERROR log, metric, audit record.
async fn report_gap(
    shared: &Arc<Shared>,
    sender: &SenderConfig,
    subscription: &str,
    from: u64,
    to: u64,
) {
    Metrics::inc(&shared.metrics.fhir_subscription_gaps);
    tracing::error!(
        sender = %sender.name,
        missing_from = from,
        missing_to = to,
        "FHIR subscription notifications missing: events may not have reached anyone"
    );
    let subscription_id: String = subscription
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '.' | ':' | '_'))
        .take(200)
        .collect();
    let rec = crate::audit::AuditRecord::new(
        shared.clock.now_utc(),
        format!("sender:{}", sender.name),
        "fhir.subscription-gap",
        format!("subscription:{subscription_id}"),
        "fhir",
        format!("missing {from}-{to}"),
    );
    let _ = shared.journal.with_storage(move |s| s.audit(&rec)).await;
}
