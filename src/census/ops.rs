//! Census changes that do not come from ADT: nurse assignments made through
//! the operator API. Each is journaled (sealed: a patient target is PHI)
//! before it is applied, in the same order as the ADT events around it, so a
//! restart rebuilds the same census.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AssignTarget, Census, CensusError};

/// One journaled census change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CensusOp {
    /// [`Census::assign`].
    Assign {
        /// Roster member id.
        member: String,
        /// Bed or patient.
        target: AssignTarget,
        /// Start (inclusive).
        from: DateTime<Utc>,
        /// End (exclusive).
        to: DateTime<Utc>,
    },
    /// [`Census::unassign`].
    Unassign {
        /// Roster member id.
        member: String,
        /// Bed or patient.
        target: AssignTarget,
    },
}

impl CensusOp {
    /// The audit action of this change.
    pub fn action(&self) -> &'static str {
        match self {
            CensusOp::Assign { .. } => "census.assign",
            CensusOp::Unassign { .. } => "census.unassign",
        }
    }

    /// The member it concerns (an id, not PHI).
    pub fn member(&self) -> &str {
        match self {
            CensusOp::Assign { member, .. } | CensusOp::Unassign { member, .. } => member,
        }
    }
}

impl Census {
    /// Applies a journaled change; returns how many assignments it added or
    /// removed.
    pub fn apply_op(&mut self, op: &CensusOp) -> Result<usize, CensusError> {
        match op {
            CensusOp::Assign {
                member,
                target,
                from,
                to,
            } => {
                let before = self.assignments().len();
                self.assign(member, target.clone(), *from, *to)?;
                Ok(self.assignments().len() - before)
            }
            CensusOp::Unassign { member, target } => Ok(self.unassign(member, target)),
        }
    }
}
