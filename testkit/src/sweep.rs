//! Deadline sweeps: many calls under tight deadlines, each tagged with a request id, then held
//! against the access history. What a caller was told must agree with what was recorded.

use std::collections::HashSet;

use cpis_proto::cpis::common::v1::ErrorReason;

use crate::Stack;

/// One call of a sweep: its request id, and success or the reason of its refusal.
pub type Outcome = (String, Result<(), Option<ErrorReason>>);

/// A sweep's outcomes held against the access history.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answered with a disclosure.
    pub answered: usize,
    /// Refused with ACCESS_NOT_RECORDED.
    pub not_recorded: usize,
    /// Refused with ACCESS_MAY_BE_RECORDED.
    pub may_be_recorded: usize,
    /// Cut off without a CP-IS reason (the caller's own deadline, the transport).
    pub other: usize,
    /// Accesses in the history.
    pub recorded: usize,
    /// Told "not recorded", yet recorded.
    pub lies: Vec<String>,
    /// Answered, yet not recorded.
    pub unrecorded_answers: Vec<String>,
}

impl Tally {
    /// Prints the tally under `label` and asserts the sweep was honest and tested something:
    /// every answer recorded, no "not recorded" that was recorded, and at least one answer.
    #[track_caller]
    pub fn assert_honest(&self, label: &str) {
        eprintln!(
            "{label}: {} answered, {} not recorded, {} may be recorded, {} cut off without a CP-IS reason; recorded {}; told not recorded but recorded: {}",
            self.answered,
            self.not_recorded,
            self.may_be_recorded,
            self.other,
            self.recorded,
            self.lies.len()
        );
        assert!(
            self.unrecorded_answers.is_empty(),
            "{label}: answered but not recorded: {:?}",
            self.unrecorded_answers
        );
        assert!(
            self.lies.is_empty(),
            "{label}: told 'not recorded' but recorded: {:?}",
            self.lies
        );
        assert!(
            self.answered > 0,
            "{label}: nothing in the sweep was answered: the sweep tested nothing"
        );
    }
}

impl Stack {
    /// Holds `outcomes` against council `ods`'s access history of `nhs_number`.
    pub async fn tally_sweep(&self, ods: &str, nhs_number: &str, outcomes: &[Outcome]) -> Tally {
        let recorded: HashSet<String> = self
            .access_history(ods, nhs_number)
            .await
            .into_iter()
            .map(|event| event.request_id)
            .collect();
        let mut tally = Tally {
            recorded: recorded.len(),
            ..Tally::default()
        };
        for (id, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    tally.answered += 1;
                    if !recorded.contains(id) {
                        tally.unrecorded_answers.push(id.clone());
                    }
                }
                Err(Some(ErrorReason::AccessNotRecorded)) => {
                    tally.not_recorded += 1;
                    if recorded.contains(id) {
                        tally.lies.push(id.clone());
                    }
                }
                Err(Some(ErrorReason::AccessMayBeRecorded)) => tally.may_be_recorded += 1,
                Err(_) => tally.other += 1,
            }
        }
        tally
    }
}
