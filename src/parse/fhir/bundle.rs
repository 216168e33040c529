//! Bundles (batch, transaction, message, history, searchset, collection,
//! document and the responses) and reference resolution between entries.
//!
//! Rules of [`parse_bundle`]:
//! - the body is JSON (see [`super::resource`]) with `resourceType`
//!   `Bundle` (else 400 `invalid`) and a `type` from the R4 `bundle-type`
//!   value set (missing: 422 `required` at `Bundle.type`; other: 422
//!   `code-invalid`); unknown top-level or entry elements are 400
//!   `structure` (strict);
//! - every `entry[i].resource` of any R4 type is parsed strictly (its own
//!   required elements and codes checked when the type is supported); its
//!   error is reported at `Bundle.entry[i].resource...`;
//! - `transaction` and `batch` entries need `request` with `method`
//!   (GET, HEAD, POST, PUT, DELETE, PATCH) and `url`: 422 `required` /
//!   `code-invalid` at `Bundle.entry[i].request...`;
//! - all-or-nothing except for `batch`: in a batch an invalid entry keeps its
//!   error in [`Entry::resource`] (answered per entry, 200 overall); in any
//!   other type the first invalid entry fails the whole Bundle.
//!
//! Reference resolution ([`BundleContext::resolve`]): `#id` within the
//! resource's `contained` (done by the mapper), then an exact `fullUrl`
//! match (absolute URL or `urn:uuid:`), then `Type/id` against each entry's
//! `resourceType`/`id` and the `Type/id` tail of each absolute `fullUrl`
//! (a trailing `/_history/n` ignored). First match wins.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::event::{Identifier, Processing};

use super::error::{FhirError, IssueType};
use super::resource::{
    Resource, Strictness, from_value, identifier_of, json_value, processing_of, resource_type,
};

/// The R4 Bundle types.
const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];
const BUNDLE_KEYS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "identifier",
    "type",
    "timestamp",
    "total",
    "link",
    "entry",
    "signature",
];
const ENTRY_KEYS: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "link",
    "fullUrl",
    "resource",
    "search",
    "request",
    "response",
];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

/// A parsed Bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    /// `Bundle.type` (an R4 bundle-type code).
    pub bundle_type: String,
    /// `Bundle.id`.
    pub id: Option<String>,
    /// `Bundle.identifier` (for idempotent repeats).
    pub identifier: Option<Identifier>,
    /// `Bundle.timestamp` as given.
    pub timestamp: Option<String>,
    /// `Training` when the Bundle's `meta.tag` says `HTEST`.
    pub processing: Processing,
    /// The entries, in order.
    pub entries: Vec<Entry>,
}

/// One `Bundle.entry`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `entry.fullUrl`.
    pub full_url: Option<String>,
    /// `entry.resource`: `None` when absent; `Some(Err)` only in a batch.
    pub resource: Option<Result<Resource, FhirError>>,
    /// `entry.request`.
    pub request: Option<EntryRequest>,
    /// `entry.response.status` (response Bundles, history).
    pub response_status: Option<String>,
}

/// `Bundle.entry.request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRequest {
    /// HTTP verb (`POST`, `PUT`, ...).
    pub method: String,
    /// URL relative to the base (`Observation`, `Patient/123`).
    pub url: String,
    /// `ifNoneExist` (conditional create query).
    pub if_none_exist: Option<String>,
    /// `ifMatch` (version check).
    pub if_match: Option<String>,
}

impl Bundle {
    /// Entries whose resource parsed, with their index.
    pub fn resources(&self) -> impl Iterator<Item = (usize, &Resource)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.resource {
                Some(Ok(r)) => Some((i, r)),
                _ => None,
            })
    }

    /// A resolver over this Bundle's entries.
    pub fn context(&self) -> BundleContext<'_> {
        let mut cx = BundleContext::new(self.entries.iter().filter_map(|e| match &e.resource {
            Some(Ok(r)) => Some((e.full_url.as_deref(), r)),
            _ => None,
        }));
        cx.processing = self.processing;
        cx
    }
}

/// Resolves references between the resources of one Bundle (or of one
/// notification).
#[derive(Clone, Debug)]
pub struct BundleContext<'b> {
    by_key: HashMap<String, &'b Resource>,
    /// `Training` when the enclosing Bundle is tagged `HTEST`: events of
    /// every entry are then `Training` too.
    pub processing: Processing,
}

/// The `Type/id` at the end of a URL or relative reference
/// (`http://x/fhir/Patient/1/_history/2` -> `Patient/1`).
pub(crate) fn type_id_tail(reference: &str) -> Option<String> {
    let path = reference.split(['?', '#']).next().unwrap_or("");
    let mut parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let n = parts.len();
    if n < 2 {
        return None;
    }
    let (t, id) = (parts[n - 2], parts[n - 1]);
    if t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric())
    {
        Some(format!("{t}/{id}"))
    } else {
        None
    }
}

impl<'b> BundleContext<'b> {
    /// A resolver over `(fullUrl, resource)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (Option<&'b str>, &'b Resource)>) -> Self {
        let mut by_key: HashMap<String, &'b Resource> = HashMap::new();
        for (url, r) in entries {
            if let Some(u) = url {
                by_key.entry(u.to_string()).or_insert(r);
                if let Some(tail) = type_id_tail(u) {
                    by_key.entry(tail).or_insert(r);
                }
            }
            if let Some(id) = &r.id {
                by_key.entry(format!("{}/{id}", r.type_name)).or_insert(r);
            }
        }
        BundleContext {
            by_key,
            processing: Processing::Production,
        }
    }

    /// The resource a reference points to, if it is in the Bundle.
    pub fn resolve(&self, reference: &str) -> Option<&'b Resource> {
        if let Some(r) = self.by_key.get(reference) {
            return Some(r);
        }
        type_id_tail(reference).and_then(|k| self.by_key.get(&k).copied())
    }
}

/// Parses a Bundle; see the module docs.
pub fn parse_bundle(body: &[u8]) -> Result<Bundle, FhirError> {
    let v = json_value(body)?;
    if resource_type(&v)? != "Bundle" {
        return Err(FhirError::new(
            400,
            IssueType::Invalid,
            "resourceType must be Bundle",
        ));
    }
    bundle_from_value(v, Strictness::Strict, BUNDLE_TYPES)
}

/// A Bundle from a JSON value whose `resourceType` is `Bundle`. `types`:
/// the accepted `Bundle.type` codes.
pub(crate) fn bundle_from_value(
    mut v: Value,
    strictness: Strictness,
    types: &[&str],
) -> Result<Bundle, FhirError> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| FhirError::structure("body is not a JSON object"))?;
    if strictness == Strictness::Strict && obj.keys().any(|k| !BUNDLE_KEYS.contains(&k.as_str())) {
        return Err(FhirError::at(
            400,
            IssueType::Structure,
            "Bundle",
            "unknown element",
        ));
    }
    let bundle_type = match obj.get("type") {
        None => {
            return Err(FhirError::at(
                422,
                IssueType::Required,
                "Bundle.type",
                "a required element is missing",
            ));
        }
        Some(Value::String(s)) if types.contains(&s.as_str()) => s.clone(),
        Some(Value::String(_)) => {
            return Err(FhirError::at(
                422,
                IssueType::CodeInvalid,
                "Bundle.type",
                "code is not in the required value set",
            ));
        }
        Some(_) => {
            return Err(FhirError::at(
                400,
                IssueType::Structure,
                "Bundle.type",
                "a code must be a JSON string",
            ));
        }
    };
    let id = str_of(obj, "id", "Bundle.id")?;
    let timestamp = str_of(obj, "timestamp", "Bundle.timestamp")?;
    let identifier = obj.get("identifier").and_then(identifier_of);
    let processing = processing_of(obj);
    let entries_v = match obj.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::at(
                400,
                IssueType::Structure,
                "Bundle.entry",
                "entry must be a JSON array",
            ));
        }
    };
    let per_entry = bundle_type == "batch";
    let needs_request = matches!(bundle_type.as_str(), "batch" | "transaction");
    let mut entries = Vec::with_capacity(entries_v.len());
    for (i, e) in entries_v.into_iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        match entry(e, &at, needs_request, strictness) {
            Ok(entry) => entries.push(entry),
            Err(EntryError::Entry(err)) => return Err(err),
            Err(EntryError::Resource(b)) => {
                let (err, full_url, request) = *b;
                if per_entry {
                    entries.push(Entry {
                        full_url,
                        resource: Some(Err(err)),
                        request,
                        response_status: None,
                    });
                } else {
                    return Err(err);
                }
            }
        }
    }
    Ok(Bundle {
        bundle_type,
        id,
        identifier,
        timestamp,
        processing,
        entries,
    })
}

fn str_of(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, FhirError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FhirError::at(
            400,
            IssueType::Structure,
            at,
            "element must be a JSON string",
        )),
    }
}

enum EntryError {
    /// The entry itself is malformed: always fatal.
    Entry(FhirError),
    /// Only its resource is invalid (per entry in a batch).
    Resource(Box<(FhirError, Option<String>, Option<EntryRequest>)>),
}

fn entry(
    mut e: Value,
    at: &str,
    needs_request: bool,
    strictness: Strictness,
) -> Result<Entry, EntryError> {
    let obj = e.as_object_mut().ok_or_else(|| {
        EntryError::Entry(FhirError::at(
            400,
            IssueType::Structure,
            at,
            "entry must be a JSON object",
        ))
    })?;
    if strictness == Strictness::Strict && obj.keys().any(|k| !ENTRY_KEYS.contains(&k.as_str())) {
        return Err(EntryError::Entry(FhirError::at(
            400,
            IssueType::Structure,
            at,
            "unknown element",
        )));
    }
    let full_url = str_of(obj, "fullUrl", &format!("{at}.fullUrl")).map_err(EntryError::Entry)?;
    let request = match obj.get("request") {
        None if needs_request => {
            return Err(EntryError::Entry(FhirError::at(
                422,
                IssueType::Required,
                format!("{at}.request"),
                "a required element is missing",
            )));
        }
        None => None,
        Some(r) => Some(request(r, &format!("{at}.request")).map_err(EntryError::Entry)?),
    };
    let response_status = obj
        .get("response")
        .and_then(|r| r.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let resource = match obj.remove("resource") {
        None => None,
        Some(r) => {
            let rat = format!("{at}.resource");
            let parsed = resource_type(&r)
                .map(|_| ())
                .and_then(|()| from_value(r, strictness))
                .map_err(|err| err.within(&rat));
            match parsed {
                Ok(r) => Some(Ok(r)),
                Err(err) => return Err(EntryError::Resource(Box::new((err, full_url, request)))),
            }
        }
    };
    Ok(Entry {
        full_url,
        resource,
        request,
        response_status,
    })
}

fn request(r: &Value, at: &str) -> Result<EntryRequest, FhirError> {
    let obj = r.as_object().ok_or_else(|| {
        FhirError::at(
            400,
            IssueType::Structure,
            at,
            "request must be a JSON object",
        )
    })?;
    let method = match obj.get("method") {
        None => {
            return Err(FhirError::at(
                422,
                IssueType::Required,
                format!("{at}.method"),
                "a required element is missing",
            ));
        }
        Some(Value::String(m)) if METHODS.contains(&m.as_str()) => m.clone(),
        Some(_) => {
            return Err(FhirError::at(
                422,
                IssueType::CodeInvalid,
                format!("{at}.method"),
                "code is not in the required value set",
            ));
        }
    };
    let url = str_of(obj, "url", &format!("{at}.url"))?.ok_or_else(|| {
        FhirError::at(
            422,
            IssueType::Required,
            format!("{at}.url"),
            "a required element is missing",
        )
    })?;
    Ok(EntryRequest {
        method,
        url,
        if_none_exist: str_of(obj, "ifNoneExist", &format!("{at}.ifNoneExist"))?,
        if_match: str_of(obj, "ifMatch", &format!("{at}.ifMatch"))?,
    })
}
