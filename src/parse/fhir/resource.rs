//! One FHIR R4 resource from JSON: checks in a fixed order, then fhirbolt.
//!
//! Order of checks (the first failure is the answer):
//! 1. bytes are UTF-8 (a leading BOM is tolerated) and JSON, nested at most
//!    [`MAX_DEPTH`] levels: else 400 `structure`. serde_json's recursion
//!    limit (128, verified: 10,000 levels is an error, not a stack overflow)
//!    stops the parse first; the lower bound is a margin for fhirbolt's
//!    recursive visitors (measured: depth 127 parses on a 2 MiB thread in a
//!    debug build, so 64 leaves room);
//! 2. a JSON object with a string `resourceType`: else 400 `structure`;
//! 3. the URL type (when given) is supported: else 404 `not-supported`;
//!    the body's type equals it: else 400 `invalid`; without a URL type the
//!    body's type must be supported: else 404 `not-supported`;
//! 4. the required top-level elements of the type are present (422
//!    `required` at `Type.element`) and its required-binding codes are in
//!    their R4 value sets (422 `code-invalid`; a non-string code is 400
//!    `structure`), see [`rules`];
//! 5. no empty array, empty object or `null` member (FHIR JSON forbids
//!    them; fhirbolt 0.4 panics on some empty arrays): else 400 `structure`;
//! 6. fhirbolt in strict mode: an unknown element, a wrong JSON type or a
//!    duplicate is 400 `structure`; a missing nested required element is 422
//!    `required` at `Type` (fhirbolt does not say where).
//!
//! fhirbolt's and serde_json's own messages quote keys of the input, so
//! they are never surfaced: only their category is looked at.

use std::panic::AssertUnwindSafe;

use serde_json::{Map, Value};

use fhirbolt::model::r4::Resource as R4Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

use crate::event::{Identifier, Processing};

use super::error::{FhirError, IssueType};
use super::supported_type;

/// Deepest JSON nesting accepted (objects and arrays), well above any real
/// resource (a Bundle in a message Bundle is about 15).
pub const MAX_DEPTH: usize = 64;

/// A parsed, validated R4 resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// `resourceType` (an R4 type name).
    pub type_name: String,
    /// `id`, when present.
    pub id: Option<String>,
    /// Business identifiers (`identifier`, one or many): `system` as the
    /// authority, `type.coding[0].code` as the type code.
    pub identifiers: Vec<Identifier>,
    /// `Production`, or `Training` when `meta.tag`/`meta.security` carries
    /// `HTEST` (v3-ActReason "test health data"). See the module docs.
    pub processing: Processing,
    /// The fhirbolt model.
    pub r4: R4Resource,
}

/// Bytes to a JSON value, depth-checked; 400 `structure` otherwise.
pub(crate) fn json_value(body: &[u8]) -> Result<Value, FhirError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if std::str::from_utf8(body).is_err() {
        return Err(FhirError::structure("body is not valid UTF-8"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| FhirError::structure("body is not well-formed JSON"))?;
    if depth_exceeds(&v, MAX_DEPTH) {
        return Err(FhirError::structure("JSON is nested too deeply"));
    }
    Ok(v)
}

/// True when `v` nests deeper than `max` (iterative: no recursion).
fn depth_exceeds(v: &Value, max: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if d > max {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// True when `v` holds an empty array, an empty object, or a `null` that is
/// not an array item (FHIR JSON allows `null` only in primitive arrays).
/// fhirbolt 0.4 panics on some empty arrays (its element model unwraps the
/// first item), so they never reach it.
fn has_empty_or_null(v: &Value) -> bool {
    let mut stack: Vec<&Value> = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) if a.is_empty() => return true,
            Value::Array(a) => stack.extend(a.iter().filter(|x| !x.is_null())),
            Value::Object(o) if o.is_empty() => return true,
            Value::Object(o) => {
                for x in o.values() {
                    if x.is_null() {
                        return true;
                    }
                    stack.push(x);
                }
            }
            _ => {}
        }
    }
    false
}

/// The `resourceType` of a JSON object, or 400 `structure`.
pub(crate) fn resource_type(v: &Value) -> Result<&str, FhirError> {
    let obj = v
        .as_object()
        .ok_or_else(|| FhirError::structure("body is not a JSON object"))?;
    obj.get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirError::structure("resourceType is missing or not a string"))
}

/// Parses one resource of a supported type; see the module docs.
pub fn parse_resource(body: &[u8], expected_type: Option<&str>) -> Result<Resource, FhirError> {
    let v = json_value(body)?;
    let t = resource_type(&v)?;
    match expected_type {
        Some(exp) if !supported_type(exp) => {
            return Err(FhirError::new(
                404,
                IssueType::NotSupported,
                "resource type is not supported here",
            ));
        }
        Some(exp) if exp != t => {
            return Err(FhirError::new(
                400,
                IssueType::Invalid,
                "resourceType does not match the type in the URL",
            ));
        }
        _ if !supported_type(t) => {
            return Err(FhirError::new(
                404,
                IssueType::NotSupported,
                "resource type is not supported here",
            ));
        }
        _ => {}
    }
    from_value(v, Strictness::Strict)
}

/// How unknown elements are treated by [`from_value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// fhirbolt strict mode: unknown elements are errors (R4 input).
    Strict,
    /// fhirbolt compatibility mode: unknown elements are ignored (R4B/R5
    /// resources read with the R4 model).
    Compatible,
}

/// Validates and converts any R4 resource value (type already checked to be
/// a string). Expressions start with the type name when it is supported,
/// else with `Resource`.
pub(crate) fn from_value(v: Value, strictness: Strictness) -> Result<Resource, FhirError> {
    let t = resource_type(&v)?.to_string();
    let obj = v
        .as_object()
        .ok_or_else(|| FhirError::structure("body is not a JSON object"))?;
    if let Some(r) = rules::of(&t) {
        rules::check(r, obj)?;
    }
    if has_empty_or_null(&v) {
        return Err(FhirError::structure(
            "empty array, empty object or null (not allowed in FHIR JSON)",
        ));
    }
    let id = obj.get("id").and_then(Value::as_str).map(str::to_string);
    let identifiers = match obj.get("identifier") {
        Some(Value::Array(a)) => a.iter().filter_map(identifier_of).collect(),
        Some(o @ Value::Object(_)) => identifier_of(o).into_iter().collect(),
        _ => Vec::new(),
    };
    let processing = processing_of(obj);
    let at = if supported_type(&t) {
        t.as_str()
    } else {
        "Resource"
    };
    let mode = match strictness {
        Strictness::Strict => DeserializationMode::Strict,
        Strictness::Compatible => DeserializationMode::Compatibility,
    };
    // fhirbolt is not known to panic on what the checks above let through;
    // a panic would still only refuse this body.
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::json::from_json_value::<R4Resource>(v, Some(DeserializationConfig { mode }))
    }));
    let r4 = match parsed {
        Ok(r) => r.map_err(|e| fhirbolt_error(&e, at))?,
        Err(_) => {
            return Err(FhirError::at(
                400,
                IssueType::Structure,
                at,
                "resource structure cannot be read",
            ));
        }
    };
    Ok(Resource {
        type_name: t,
        id,
        identifiers,
        processing,
        r4,
    })
}

/// Maps a fhirbolt/serde_json error by category only (its text quotes input).
fn fhirbolt_error(e: &serde_json::Error, at: &str) -> FhirError {
    // serde's `missing_field` message is "missing field `name`"; only the
    // prefix is looked at, the name is never copied.
    if e.is_data() && e.to_string().starts_with("missing field") {
        FhirError::at(
            422,
            IssueType::Required,
            at,
            "a required element is missing in a nested element",
        )
    } else if e.is_data() {
        FhirError::at(
            400,
            IssueType::Structure,
            at,
            "unknown element, duplicate element, or element of the wrong JSON type",
        )
    } else {
        FhirError::structure("body is not well-formed JSON")
    }
}

/// One `Identifier` JSON object to an event identifier.
pub(crate) fn identifier_of(v: &Value) -> Option<Identifier> {
    let value = v.get("value")?.as_str()?.to_string();
    Some(Identifier {
        value,
        authority: v
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        type_code: v
            .pointer("/type/coding/0/code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// `HTEST` in `meta.tag` or `meta.security` (any system) marks test data.
pub(crate) fn processing_of(obj: &Map<String, Value>) -> Processing {
    let tagged = ["tag", "security"].iter().any(|k| {
        obj.get("meta")
            .and_then(|m| m.get(*k))
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|c| c.get("code").and_then(Value::as_str) == Some("HTEST"))
            })
    });
    if tagged {
        Processing::Training
    } else {
        Processing::Production
    }
}

/// Required top-level elements and required-binding codes per supported
/// type (R4). fhirbolt checks cardinality too, but cannot say where and
/// does not check codes.
pub(crate) mod rules {
    use serde_json::{Map, Value};

    use super::super::error::{FhirError, IssueType};

    /// One type's rules.
    pub(crate) struct Rules {
        pub(crate) type_name: &'static str,
        /// Elements that must be present (`status`, `code`, ...).
        pub(crate) required: &'static [&'static str],
        /// (element, allowed codes) for required bindings.
        pub(crate) codes: &'static [(&'static str, &'static [&'static str])],
        /// (element, allowed codes) for codes inside a repeating backbone:
        /// (`location`, `status`, codes).
        pub(crate) nested_codes: &'static [(&'static str, &'static str, &'static [&'static str])],
    }

    const OBSERVATION_STATUS: &[&str] = &[
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ];
    const REPORT_STATUS: &[&str] = &[
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    ];
    const REQUEST_STATUS: &[&str] = &[
        "draft",
        "active",
        "on-hold",
        "revoked",
        "completed",
        "entered-in-error",
        "unknown",
    ];
    const REQUEST_INTENT: &[&str] = &[
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    ];
    const REQUEST_PRIORITY: &[&str] = &["routine", "urgent", "asap", "stat"];
    const ENCOUNTER_STATUS: &[&str] = &[
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    ];
    const ENCOUNTER_LOCATION_STATUS: &[&str] = &["planned", "active", "reserved", "completed"];
    const FLAG_STATUS: &[&str] = &["active", "inactive", "entered-in-error"];
    const ISSUE_SEVERITY: &[&str] = &["high", "moderate", "low"];
    const EVENT_STATUS: &[&str] = &[
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ];

    const ALL: &[Rules] = &[
        Rules {
            type_name: "Observation",
            required: &["status", "code"],
            codes: &[("status", OBSERVATION_STATUS)],
            nested_codes: &[],
        },
        Rules {
            type_name: "DiagnosticReport",
            required: &["status", "code"],
            codes: &[("status", REPORT_STATUS)],
            nested_codes: &[],
        },
        Rules {
            type_name: "ServiceRequest",
            required: &["status", "intent", "subject"],
            codes: &[
                ("status", REQUEST_STATUS),
                ("intent", REQUEST_INTENT),
                ("priority", REQUEST_PRIORITY),
            ],
            nested_codes: &[],
        },
        Rules {
            type_name: "Encounter",
            required: &["status", "class"],
            codes: &[("status", ENCOUNTER_STATUS)],
            nested_codes: &[
                ("location", "status", ENCOUNTER_LOCATION_STATUS),
                ("statusHistory", "status", ENCOUNTER_STATUS),
            ],
        },
        Rules {
            type_name: "Flag",
            required: &["status", "code", "subject"],
            codes: &[("status", FLAG_STATUS)],
            nested_codes: &[],
        },
        Rules {
            type_name: "DetectedIssue",
            required: &["status"],
            codes: &[("status", OBSERVATION_STATUS), ("severity", ISSUE_SEVERITY)],
            nested_codes: &[],
        },
        Rules {
            type_name: "Communication",
            required: &["status"],
            codes: &[("status", EVENT_STATUS), ("priority", REQUEST_PRIORITY)],
            nested_codes: &[],
        },
        Rules {
            type_name: "CommunicationRequest",
            required: &["status"],
            codes: &[("status", REQUEST_STATUS), ("priority", REQUEST_PRIORITY)],
            nested_codes: &[],
        },
    ];

    /// The rules of a supported type.
    pub(crate) fn of(type_name: &str) -> Option<&'static Rules> {
        ALL.iter().find(|r| r.type_name == type_name)
    }

    fn code_ok(v: &Value, allowed: &[&str], at: impl Fn() -> String) -> Result<(), FhirError> {
        match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(_) => Err(FhirError::at(
                422,
                IssueType::CodeInvalid,
                at(),
                "code is not in the required value set",
            )),
            None => Err(FhirError::at(
                400,
                IssueType::Structure,
                at(),
                "a code must be a JSON string",
            )),
        }
    }

    /// Checks `obj` against `r`.
    pub(crate) fn check(r: &Rules, obj: &Map<String, Value>) -> Result<(), FhirError> {
        let t = r.type_name;
        for el in r.required {
            if !obj.contains_key(*el) {
                return Err(FhirError::at(
                    422,
                    IssueType::Required,
                    format!("{t}.{el}"),
                    "a required element is missing",
                ));
            }
        }
        for (el, allowed) in r.codes {
            if let Some(v) = obj.get(*el) {
                code_ok(v, allowed, || format!("{t}.{el}"))?;
            }
        }
        for (el, sub, allowed) in r.nested_codes {
            if let Some(Value::Array(items)) = obj.get(*el) {
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = item.get(*sub) {
                        code_ok(v, allowed, || format!("{t}.{el}[{i}].{sub}"))?;
                    }
                }
            }
        }
        Ok(())
    }
}
