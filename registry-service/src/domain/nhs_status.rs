//! NHS-number status from the demographics feed (standing in for PDS): a number retired on
//! adoption, superseded or merged into another, or belonging to a person who has died. Councils
//! holding a record on the number are notified once, and later writes to it are refused.

use chrono::NaiveDate;
use cpis_core::nhs_number::NhsNumber;
use cpis_proto::cpis::common::v1::InactiveReason;

/// A validated status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusChange {
    /// The number that became inactive.
    pub nhs_number: NhsNumber,
    /// Why.
    pub reason: InactiveReason,
    /// The replacement (superseded only).
    pub replacement: Option<NhsNumber>,
    /// When it took effect.
    pub effective_date: Option<NaiveDate>,
}

/// Why a number can no longer take records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inactive {
    /// Adopted, superseded or deceased.
    pub reason: InactiveReason,
    /// The number to use instead (superseded only), as stored.
    pub replacement: Option<String>,
}

impl From<&InactiveReason> for Inactive {
    fn from(reason: &InactiveReason) -> Self {
        Self {
            reason: *reason,
            replacement: None,
        }
    }
}

impl Inactive {
    /// True when a replacement number should be used instead.
    pub fn is_superseded(&self) -> bool {
        self.reason == InactiveReason::Superseded
    }

    /// The refusal as a council is told it: the replacement only when the council holds or has
    /// held a record on the number (it was notified of the change); to any other council it
    /// would reveal a child's new NHS number.
    #[must_use]
    pub fn told_to(mut self, held: bool) -> Self {
        if !held {
            self.replacement = None;
        }
        self
    }

    /// What a council reads when a write is refused.
    pub fn message(&self) -> &'static str {
        if self.is_superseded() {
            "the NHS number has been superseded; send the record on its replacement number"
        } else {
            "the NHS number is no longer active"
        }
    }
}
