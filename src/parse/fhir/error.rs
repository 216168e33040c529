//! FHIR errors and OperationOutcome bodies.
//!
//! A [`FhirError`] is content-free by construction: the diagnostics text is
//! a `&'static str` chosen here, and the FHIRPath expression is built only
//! from element names of the specification, supported resource type names
//! and indexes — never from a value, key or type name taken from the input.

use std::fmt;

use serde_json::{Value, json};

/// FHIR R4 `IssueType` codes (value set `http://hl7.org/fhir/issue-type`)
/// used in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IssueType {
    /// `invalid`: content invalid against the specification or a profile.
    Invalid,
    /// `structure`: a structural issue (bad JSON, wrong JSON type, unknown element).
    Structure,
    /// `required`: a required element is missing.
    Required,
    /// `value`: an element or header value is invalid.
    Value,
    /// `code-invalid`: a code is not in the required value set.
    CodeInvalid,
    /// `not-supported`: the content or operation is not supported.
    NotSupported,
    /// `too-long`: the content is too long.
    TooLong,
    /// `security`: an authentication/authorization/permissions issue.
    Security,
    /// `login`: the client needs to (re)authenticate.
    Login,
    /// `forbidden`: the user is not allowed to do this.
    Forbidden,
    /// `throttled`: the system is too busy; retry later.
    Throttled,
    /// `transient`: a transient processing issue; retry may succeed.
    Transient,
    /// `processing`: processing issue.
    Processing,
    /// `duplicate`: an attempt to create a duplicate.
    Duplicate,
    /// `not-found`: the reference could not be found.
    NotFound,
    /// `conflict`: edit version conflict.
    Conflict,
    /// `timeout`: an internal timeout (e.g. the body was not received in time).
    Timeout,
    /// `exception`: an unexpected internal error.
    Exception,
    /// `informational`: not an error.
    Informational,
}

impl IssueType {
    /// The R4 code.
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::NotSupported => "not-supported",
            IssueType::TooLong => "too-long",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Throttled => "throttled",
            IssueType::Transient => "transient",
            IssueType::Processing => "processing",
            IssueType::Duplicate => "duplicate",
            IssueType::NotFound => "not-found",
            IssueType::Conflict => "conflict",
            IssueType::Timeout => "timeout",
            IssueType::Exception => "exception",
            IssueType::Informational => "informational",
        }
    }
}

/// A content-free error: HTTP status, issue type, FHIRPath expression of the
/// element at fault (`Observation.status`, `Bundle.entry[2].resource.code`)
/// and a fixed diagnostics text. Never quotes input values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirError {
    /// HTTP status to answer with (400, 404, 422, ...).
    pub status: u16,
    /// The OperationOutcome issue code.
    pub issue: IssueType,
    /// FHIRPath of the element at fault, when there is one.
    pub expression: Option<String>,
    /// Fixed, content-free explanation.
    pub diagnostics: &'static str,
}

impl FhirError {
    /// An error with no expression.
    pub fn new(status: u16, issue: IssueType, diagnostics: &'static str) -> Self {
        FhirError {
            status,
            issue,
            expression: None,
            diagnostics,
        }
    }

    /// An error at `expression`.
    pub fn at(
        status: u16,
        issue: IssueType,
        expression: impl Into<String>,
        diagnostics: &'static str,
    ) -> Self {
        FhirError {
            status,
            issue,
            expression: Some(expression.into()),
            diagnostics,
        }
    }

    /// 400 `structure` (malformed JSON, wrong JSON type, unknown element).
    pub(crate) fn structure(diagnostics: &'static str) -> Self {
        Self::new(400, IssueType::Structure, diagnostics)
    }

    /// 415 `not-supported`: the request's `Content-Type` is not FHIR JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            IssueType::NotSupported,
            "Content-Type must be application/fhir+json or application/json",
        )
    }

    /// 413 `too-long`: the body exceeds the configured limit.
    pub fn too_long() -> Self {
        Self::new(
            413,
            IssueType::TooLong,
            "request body exceeds the configured size limit",
        )
    }

    /// 401 `login`: no or invalid credentials.
    pub fn login() -> Self {
        Self::new(401, IssueType::Login, "authentication is required")
    }

    /// 403 `forbidden`: authenticated, but not allowed.
    pub fn forbidden() -> Self {
        Self::new(403, IssueType::Forbidden, "not allowed for this client")
    }

    /// 429 `throttled`: over the rate limit (send `Retry-After`).
    pub fn throttled() -> Self {
        Self::new(
            429,
            IssueType::Throttled,
            "rate limit exceeded; retry later",
        )
    }

    /// 503 `transient`: the journal cannot commit (send `Retry-After`).
    pub fn transient() -> Self {
        Self::new(
            503,
            IssueType::Transient,
            "storage temporarily unavailable; retry later",
        )
    }

    /// The same error seen from an enclosing element: a leading `Type` of
    /// the expression (or the whole, empty expression) becomes `prefix`.
    /// `Observation.status` under `Bundle.entry[2].resource` becomes
    /// `Bundle.entry[2].resource.status`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.expression = Some(match self.expression.take() {
            None => prefix.to_string(),
            Some(e) => match e.split_once('.') {
                Some((_, rest)) => format!("{prefix}.{rest}"),
                None => prefix.to_string(),
            },
        });
        self
    }
}

impl fmt::Display for FhirError {
    /// Content-free: status, issue code, expression and the fixed text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.issue.code())?;
        if let Some(e) = &self.expression {
            write!(f, " at {e}")?;
        }
        write!(f, ": {}", self.diagnostics)
    }
}

impl std::error::Error for FhirError {}

/// An OperationOutcome with one `error` issue per error (empty `errors`
/// gives a single `exception` issue, so the body is always valid).
pub fn operation_outcome(errors: &[FhirError]) -> Value {
    let issues: Vec<Value> = if errors.is_empty() {
        vec![json!({
            "severity": "error",
            "code": IssueType::Exception.code(),
            "diagnostics": "request failed",
        })]
    } else {
        errors
            .iter()
            .map(|e| {
                let mut issue = json!({
                    "severity": "error",
                    "code": e.issue.code(),
                    "diagnostics": e.diagnostics,
                });
                if let (Some(x), Some(obj)) = (&e.expression, issue.as_object_mut()) {
                    obj.insert("expression".into(), json!([x]));
                }
                issue
            })
            .collect()
    };
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}

/// An informational OperationOutcome (e.g. the body of a 200 to a
/// handshake, or "already received" for an idempotent repeat). `text` must
/// be content-free; the caller chooses it.
pub fn information_outcome(text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information",
            "code": IssueType::Informational.code(),
            "diagnostics": text,
        }],
    })
}
