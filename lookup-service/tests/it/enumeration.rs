//! The enumeration guard, through the lookup service in front of a real registry: a clinician
//! sweeping NHS numbers is throttled once past the default threshold (RESOURCE_EXHAUSTED,
//! LOOKUPS_THROTTLED, with a retry delay), and nothing is disclosed or recorded for the refused
//! calls.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{person_named, start};

both_backends!(a_sweep_is_throttled_at_the_default_threshold);

/// The default distinct children per user per hour (README, "Enumeration guard").
const DEFAULT_USER_PER_HOUR: usize = 100;

async fn a_sweep_is_throttled_at_the_default_threshold(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    let sweeper = person_named(
        "555000000777",
        "Dr Sweep",
        &["B0107"],
        "RXX01",
        "EMERGENCY_DEPARTMENT",
    );
    let mut numbers = cpis_testkit::nhs::nhs_numbers();
    for _ in 0..DEFAULT_USER_PER_HOUR {
        let nhs = numbers.next().expect("a number");
        stack
            .lookup(&sweeper, &nhs, AccessMode::Unscheduled)
            .await
            .expect("under the threshold");
    }
    let refused = numbers.next().expect("a number");
    let status = stack
        .lookup(&sweeper, &refused, AccessMode::Unscheduled)
        .await
        .expect_err("the sweep is throttled past the threshold");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), Some(ErrorReason::LookupsThrottled));
    let refused_recorded = stack.db.count(&format!(
        "SELECT COUNT(*) AS n FROM access_events WHERE nhs_number = '{refused}'"
    ));
    assert_eq!(refused_recorded, 0, "a refused lookup is not recorded");
}
