//! `/api/v1/assignments`: nurse-to-bed and nurse-to-patient assignments.
//!
//! Each change is journaled (sealed) and audited before it is applied, on
//! the journal's committer thread, so it takes its place between the ADT
//! events around it and a restart rebuilds it. A member must exist in the
//! rosters serving now; an assignment lasts at most [`MAX_SPAN_HOURS`].

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, json, operator};
use crate::census::{AssignTarget, Bed, CensusOp, PatientKey};
use crate::config::Permission;
use crate::listener::connection::Shared;
use crate::listener::intake::PeerInfo;

/// Longest assignment accepted (a shift, with room for a double).
pub const MAX_SPAN_HOURS: i64 = 36;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BedIn {
    #[serde(default)]
    facility: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    room: String,
    bed: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientIn {
    #[serde(default)]
    authority: String,
    id: String,
}

/// `POST /api/v1/assignments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignIn {
    member: String,
    bed: Option<BedIn>,
    patient: Option<PatientIn>,
    /// Default: now.
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
}

/// `POST /api/v1/assignments/remove`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveIn {
    member: String,
    bed: Option<BedIn>,
    patient: Option<PatientIn>,
}

#[derive(Debug, Serialize)]
struct AssignmentOut<'a> {
    member: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bed: Option<&'a Bed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<PatientOut<'a>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct PatientOut<'a> {
    authority: &'a str,
    id: &'a str,
}

/// Exactly one of a bed or a patient.
fn target(bed: Option<BedIn>, patient: Option<PatientIn>) -> Result<AssignTarget, ApiError> {
    {
        match (bed, patient) {
            (Some(b), None) => {
                let bed = Bed::new(&b.facility, &b.unit, &b.room, &b.bed);
                if bed.bed.is_empty() || bed.unit.is_empty() {
                    return Err(ApiError::bad_request(
                        "a bed needs at least `unit` and `bed`",
                    ));
                }
                Ok(AssignTarget::Bed(bed))
            }
            (None, Some(p)) => {
                let key = PatientKey::new(&p.authority, &p.id);
                if key.value.is_empty() {
                    return Err(ApiError::bad_request("a patient needs `id`"));
                }
                Ok(AssignTarget::Patient(key))
            }
            _ => Err(ApiError::bad_request(
                "give exactly one of `bed` or `patient`",
            )),
        }
    }
}

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the field and position, not the value.
        ApiError::bad_request(format!(
            "invalid JSON body at line {} column {} ({:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })
}

/// Journals `op`, then applies it to the live census, on the committer thread.
async fn record(
    shared: &Arc<Shared>,
    op: CensusOp,
    actor: String,
) -> Result<(i64, usize), ApiError> {
    let live = shared.census.clone();
    let now = shared.clock.now_utc();
    let out = shared
        .journal
        .with_storage(move |s| {
            let id = s.census_record(&op, &actor, now)?;
            Ok::<_, crate::journal::StorageError>((id, live.apply_op(&op).unwrap_or(0)))
        })
        .await;
    match out {
        Ok(Ok(x)) => Ok(x),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "census change could not be journaled");
            Err(ApiError::unavailable())
        }
        Err(_) => Err(ApiError::unavailable()),
    }
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let op_cfg = operator(&shared, &headers, &peer, Permission::AssignmentsWrite)?;
    let actor = format!("operator:{}", op_cfg.name);
    let a: AssignIn = body(&bytes)?;
    let member = a.member.trim().to_string();
    if shared.routing.current().rosters.member(&member).is_none() {
        return Err(ApiError::bad_request(
            "unknown member: not in any roster serving now",
        ));
    }
    let target = target(a.bed, a.patient)?;
    let from = a.from.unwrap_or_else(|| shared.clock.now_utc());
    if a.to <= from {
        return Err(ApiError::bad_request("`to` must be after `from`"));
    }
    if a.to - from > TimeDelta::hours(MAX_SPAN_HOURS) {
        return Err(ApiError::bad_request(format!(
            "an assignment lasts at most {MAX_SPAN_HOURS} hours"
        )));
    }
    if a.to <= shared.clock.now_utc() {
        return Err(ApiError::bad_request("the assignment has already ended"));
    }
    let op = CensusOp::Assign {
        member,
        target,
        from,
        to: a.to,
    };
    let (id, added) = record(&shared, op, actor).await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": id, "added": added }),
    ))
}

pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let op_cfg = operator(&shared, &headers, &peer, Permission::AssignmentsWrite)?;
    let actor = format!("operator:{}", op_cfg.name);
    let r: RemoveIn = body(&bytes)?;
    let op = CensusOp::Unassign {
        member: r.member.trim().to_string(),
        target: target(r.bed, r.patient)?,
    };
    let (id, removed) = record(&shared, op, actor).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "id": id, "removed": removed }),
    ))
}

/// Assignments that have not ended, in order of start. Patient targets are
/// PHI: the listing is audited (who, how many).
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let op_cfg = operator(&shared, &headers, &peer, Permission::AssignmentsRead)?;
    let now = shared.clock.now_utc();
    let body = {
        let census = shared.census.read();
        let mut live: Vec<_> = census.assignments().iter().filter(|a| a.to > now).collect();
        live.sort_by_key(|a| (a.from, a.member.clone()));
        let out: Vec<AssignmentOut<'_>> = live
            .iter()
            .map(|a| AssignmentOut {
                member: &a.member,
                bed: match &a.target {
                    AssignTarget::Bed(b) => Some(b),
                    AssignTarget::Patient(_) => None,
                },
                patient: match &a.target {
                    AssignTarget::Patient(k) => Some(PatientOut {
                        authority: &k.authority,
                        id: &k.value,
                    }),
                    AssignTarget::Bed(_) => None,
                },
                from: a.from,
                to: a.to,
            })
            .collect();
        serde_json::json!({ "at": now, "assignments": out })
    };
    let n = body["assignments"].as_array().map_or(0, Vec::len);
    let rec = crate::audit::AuditRecord::new(
        now,
        format!("operator:{}", op_cfg.name),
        "assignments.viewed",
        format!("assignments:{n}"),
        peer.describe(),
        "ok",
    );
    match shared.journal.with_storage(move |s| s.audit(&rec)).await {
        Ok(Ok(())) => Ok(json(StatusCode::OK, &body)),
        _ => Err(ApiError::unavailable()),
    }
}
