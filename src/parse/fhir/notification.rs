//! Topic-based subscription notifications in their three shapes, read with
//! plain JSON (fhirbolt's R4 model has no `SubscriptionStatus`):
//!
//! | shape | recognised by | status from |
//! | --- | --- | --- |
//! | R4 Subscriptions Backport | `Bundle.type` `history`, first entry `Parameters` (or a bare `Parameters`) | parameters `subscription`, `topic`, `status`, `type`, `events-since-subscription-start`, `notification-event` (parts `event-number`, `timestamp`, `focus`, `additional-context`) |
//! | R4B | `Bundle.type` `history`, first entry `SubscriptionStatus` (or a bare `SubscriptionStatus`) | `subscription`, `topic`, `status`, `type`, `eventsSinceSubscriptionStart`, `notificationEvent` |
//! | R5 | `Bundle.type` `subscription-notification`, first entry `SubscriptionStatus` | as R4B |
//!
//! A `message` Bundle whose entries hold one of these Bundles (as in the
//! R4B example `Bundle-0f322dbe-...`) is unwrapped once. Counters
//! (`events-since-subscription-start`, event numbers) may be JSON strings
//! (integer64) or numbers.
//!
//! Errors: not a notification: 400 `invalid`; missing `type` or
//! `subscription`: 422 `required`; `type`/`status` outside their value sets:
//! 422 `code-invalid`; a counter that is not a non-negative integer: 422
//! `value`. The included resources (every entry after the status) are read
//! with the R4 model: strictly for the backport, in compatibility mode
//! (unknown elements ignored) for R4B/R5; each keeps its own result, so one
//! unreadable resource does not refuse the notification. Entries without a
//! resource (id-only notifications) are not listed: the event's `focus`
//! names what to fetch.

use serde_json::Value;

use crate::event::Processing;

use super::bundle::BundleContext;
use super::error::{FhirError, IssueType};
use super::resource::{Resource, Strictness, from_value, json_value, processing_of, resource_type};

/// Which FHIR version's notification shape was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FhirVersionShape {
    /// R4 Subscriptions Backport (Parameters).
    R4,
    /// R4B (SubscriptionStatus in a history Bundle).
    R4B,
    /// R5 (subscription-notification Bundle).
    R5,
}

/// `SubscriptionStatus.type` / the backport `type` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// `handshake`
    Handshake,
    /// `heartbeat`
    Heartbeat,
    /// `event-notification`
    EventNotification,
    /// `query-status`
    QueryStatus,
    /// `query-event`
    QueryEvent,
}

impl NotificationType {
    fn from_code(c: &str) -> Option<Self> {
        Some(match c {
            "handshake" => NotificationType::Handshake,
            "heartbeat" => NotificationType::Heartbeat,
            "event-notification" => NotificationType::EventNotification,
            "query-status" => NotificationType::QueryStatus,
            "query-event" => NotificationType::QueryEvent,
            _ => return None,
        })
    }

    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            NotificationType::Handshake => "handshake",
            NotificationType::Heartbeat => "heartbeat",
            NotificationType::EventNotification => "event-notification",
            NotificationType::QueryStatus => "query-status",
            NotificationType::QueryEvent => "query-event",
        }
    }
}

const SUBSCRIPTION_STATUS: &[&str] = &["requested", "active", "error", "off", "entered-in-error"];

/// One notification event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotificationEvent {
    /// Event number (counts from the subscription's start).
    pub event_number: Option<u64>,
    /// When the event happened, as given.
    pub timestamp: Option<String>,
    /// The focus reference (what changed).
    pub focus: Option<String>,
    /// Additional context references.
    pub additional_context: Vec<String>,
}

/// A resource included in the notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Included {
    /// `entry.fullUrl`.
    pub full_url: Option<String>,
    /// The resource read with the R4 model, or why it could not be.
    pub resource: Result<Resource, FhirError>,
}

/// A parsed subscription notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Which shape it came in.
    pub shape: FhirVersionShape,
    /// Id of the notification Bundle (the inner one when wrapped).
    pub bundle_id: Option<String>,
    /// `Training` when the notification (or its wrapper) is tagged `HTEST`.
    pub processing: Processing,
    /// Subscription reference.
    pub subscription: String,
    /// Topic canonical URL.
    pub topic: Option<String>,
    /// Notification type.
    pub notification_type: NotificationType,
    /// Subscription status code (`active`, `error`, ...).
    pub status: Option<String>,
    /// Events since the subscription started (for gap detection).
    pub events_since_subscription_start: Option<u64>,
    /// The events carried.
    pub events: Vec<NotificationEvent>,
    /// Included resources (empty for id-only notifications).
    pub included: Vec<Included>,
}

impl Notification {
    /// A resolver over the included resources (for `events`).
    pub fn context(&self) -> BundleContext<'_> {
        let mut cx = BundleContext::new(
            self.included
                .iter()
                .filter_map(|i| i.resource.as_ref().ok().map(|r| (i.full_url.as_deref(), r))),
        );
        cx.processing = self.processing;
        cx
    }
}

fn not_notification() -> FhirError {
    FhirError::new(
        400,
        IssueType::Invalid,
        "body is not a subscription notification",
    )
}

/// Parses a notification; see the module docs.
pub fn parse_notification(body: &[u8]) -> Result<Notification, FhirError> {
    let v = json_value(body)?;
    let t = resource_type(&v)?;
    match t {
        "Bundle" => {
            let outer = v.as_object().map_or(Processing::Production, processing_of);
            let is_message = v.get("type").and_then(Value::as_str) == Some("message");
            let mut n = if is_message {
                let inner = v
                    .get("entry")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("resource"))
                    .find(|r| r.get("resourceType").and_then(Value::as_str) == Some("Bundle"))
                    .cloned()
                    .ok_or_else(not_notification)?;
                from_bundle(inner)?
            } else {
                from_bundle(v)?
            };
            if outer == Processing::Training {
                n.processing = Processing::Training;
            }
            Ok(n)
        }
        "SubscriptionStatus" => status_resource(&v, FhirVersionShape::R4B, "SubscriptionStatus"),
        "Parameters" => backport(&v, "Parameters"),
        _ => Err(not_notification()),
    }
}

fn from_bundle(mut v: Value) -> Result<Notification, FhirError> {
    let processing = v.as_object().map_or(Processing::Production, processing_of);
    let bundle_id = v.get("id").and_then(Value::as_str).map(str::to_string);
    let shape = match v.get("type").and_then(Value::as_str) {
        Some("history") => None,
        Some("subscription-notification") => Some(FhirVersionShape::R5),
        _ => return Err(not_notification()),
    };
    let entries = match v.get_mut("entry").map(Value::take) {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(not_notification()),
    };
    let mut it = entries.into_iter();
    let first = it
        .next()
        .and_then(|mut e| e.get_mut("resource").map(Value::take))
        .ok_or_else(not_notification)?;
    let at = "Bundle.entry[0].resource";
    let mut n = match (shape, first.get("resourceType").and_then(Value::as_str)) {
        (None, Some("Parameters")) => backport(&first, at)?,
        (None, Some("SubscriptionStatus")) => status_resource(&first, FhirVersionShape::R4B, at)?,
        (Some(s), Some("SubscriptionStatus")) => status_resource(&first, s, at)?,
        _ => return Err(not_notification()),
    };
    n.bundle_id = bundle_id;
    if processing == Processing::Training {
        n.processing = Processing::Training;
    }
    let strictness = if n.shape == FhirVersionShape::R4 {
        Strictness::Strict
    } else {
        Strictness::Compatible
    };
    for (i, mut e) in it.enumerate() {
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
        let Some(r) = e.get_mut("resource").map(Value::take) else {
            continue;
        };
        let rat = format!("Bundle.entry[{}].resource", i + 1);
        let resource = resource_type(&r)
            .map(|_| ())
            .and_then(|()| from_value(r, strictness))
            .map_err(|err| err.within(&rat));
        n.included.push(Included { full_url, resource });
    }
    Ok(n)
}

/// A counter: a non-negative integer as a JSON number or string.
fn counter(v: Option<&Value>, at: impl Fn() -> String) -> Result<Option<u64>, FhirError> {
    let bad = || {
        FhirError::at(
            422,
            IssueType::Value,
            at(),
            "must be a non-negative integer",
        )
    };
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn type_of(code: Option<&str>, at: &str) -> Result<NotificationType, FhirError> {
    match code {
        None => Err(FhirError::at(
            422,
            IssueType::Required,
            at,
            "a required element is missing",
        )),
        Some(c) => NotificationType::from_code(c).ok_or_else(|| {
            FhirError::at(
                422,
                IssueType::CodeInvalid,
                at,
                "code is not in the required value set",
            )
        }),
    }
}

fn status_of(code: Option<&str>, at: &str) -> Result<Option<String>, FhirError> {
    match code {
        None => Ok(None),
        Some(c) if SUBSCRIPTION_STATUS.contains(&c) => Ok(Some(c.to_string())),
        Some(_) => Err(FhirError::at(
            422,
            IssueType::CodeInvalid,
            at,
            "code is not in the required value set",
        )),
    }
}

fn reference(v: Option<&Value>) -> Option<String> {
    v.and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// R4B / R5 `SubscriptionStatus`. `at`: its FHIRPath.
fn status_resource(
    v: &Value,
    shape: FhirVersionShape,
    at: &str,
) -> Result<Notification, FhirError> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let notification_type = type_of(s("type"), &format!("{at}.type"))?;
    let status = status_of(s("status"), &format!("{at}.status"))?;
    let subscription = reference(v.get("subscription")).ok_or_else(|| {
        FhirError::at(
            422,
            IssueType::Required,
            format!("{at}.subscription"),
            "a required element is missing",
        )
    })?;
    let events_since = counter(v.get("eventsSinceSubscriptionStart"), || {
        format!("{at}.eventsSinceSubscriptionStart")
    })?;
    let mut events = Vec::new();
    for (i, e) in strs(v.get("notificationEvent")).enumerate() {
        events.push(NotificationEvent {
            event_number: counter(e.get("eventNumber"), || {
                format!("{at}.notificationEvent[{i}].eventNumber")
            })?,
            timestamp: e
                .get("timestamp")
                .and_then(Value::as_str)
                .map(str::to_string),
            focus: reference(e.get("focus")),
            additional_context: strs(e.get("additionalContext"))
                .filter_map(|r| reference(Some(r)))
                .collect(),
        });
    }
    Ok(Notification {
        shape,
        bundle_id: None,
        processing: v.as_object().map_or(Processing::Production, processing_of),
        subscription,
        topic: s("topic").map(str::to_string),
        notification_type,
        status,
        events_since_subscription_start: events_since,
        events,
        included: Vec::new(),
    })
}

/// The value of a backport parameter (`value[x]` of any type).
fn param_value(p: &Value) -> Option<&Value> {
    p.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// R4 Backport `Parameters` (subscription-status). `at`: its FHIRPath.
fn backport(v: &Value, at: &str) -> Result<Notification, FhirError> {
    let params: Vec<&Value> = strs(v.get("parameter")).collect();
    let named = |name: &str| {
        params
            .iter()
            .copied()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
    };
    let text = |name: &str| named(name).and_then(param_value).and_then(Value::as_str);
    let pat = |name: &str| format!("{at}.parameter.where(name = '{name}')");
    let notification_type = type_of(text("type"), &pat("type"))?;
    let status = status_of(text("status"), &pat("status"))?;
    let subscription = reference(named("subscription").and_then(param_value)).ok_or_else(|| {
        FhirError::at(
            422,
            IssueType::Required,
            pat("subscription"),
            "a required element is missing",
        )
    })?;
    let events_since = counter(
        named("events-since-subscription-start").and_then(param_value),
        || pat("events-since-subscription-start"),
    )?;
    let mut events = Vec::new();
    for p in params
        .iter()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("notification-event"))
    {
        let parts: Vec<&Value> = strs(p.get("part")).collect();
        let part = |name: &'static str| {
            parts
                .iter()
                .copied()
                .filter(move |q| q.get("name").and_then(Value::as_str) == Some(name))
                .filter_map(param_value)
        };
        events.push(NotificationEvent {
            event_number: counter(part("event-number").next(), || pat("notification-event"))?,
            timestamp: part("timestamp")
                .next()
                .and_then(Value::as_str)
                .map(str::to_string),
            focus: reference(part("focus").next()),
            additional_context: part("additional-context")
                .filter_map(|r| reference(Some(r)))
                .collect(),
        });
    }
    Ok(Notification {
        shape: FhirVersionShape::R4,
        bundle_id: None,
        processing: v.as_object().map_or(Processing::Production, processing_of),
        subscription,
        topic: text("topic").map(str::to_string),
        notification_type,
        status,
        events_since_subscription_start: events_since,
        events,
        included: Vec::new(),
    })
}
