//! Entry points for the fuzz targets in `fuzz/` (hidden; not an API, may change at any time):
//! the record validator with the checks a fuzzer can make cheaply on what it accepts.

use chrono::{Days, NaiveDate};
use cpis_core::ods::OdsCode;
use cpis_proto::cpis::common::v1::ChildRecord as WireRecord;

use crate::api::convert::{disclosed_plan, record_to_wire};
use crate::api::validate::validate_record;
use crate::db::models::{ChildRecordRow, NewChildRecord};
use crate::domain::dates::{EARLIEST_PLAUSIBLE, LAST_WIRE_DATE, on_the_wire};
use crate::domain::record::StoredRecord;
use crate::domain::visibility::evaluate;

/// The registry's "today" for input `days`: 1990-01-01 plus up to ~180 years, so the fuzzer
/// reaches plan horizons near the end of the wire calendar cheaply.
pub fn today(days: u16) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or(EARLIEST_PLAUSIBLE);
    base.checked_add_days(Days::new(u64::from(days)))
        .unwrap_or(base)
}

/// Validates `record` as PutChildRecord would on `today`. When it is accepted, checks what must
/// then hold, panicking (for the fuzzer) when it does not:
/// - it survives the database row and back unchanged;
/// - its wire form (as GetChildRecord returns it) validates again to the same record;
/// - visibility evaluates every block, on `today` and at the wire calendar's ends, and every
///   disclosed plan is one of the record's blocks with dates the wire can carry.
///
/// Returns whether the record was accepted; a refusal must name at least one field.
pub fn check_record(record: &WireRecord, today: NaiveDate) -> bool {
    let valid = match validate_record(record, "record.", today) {
        Ok(valid) => valid,
        Err(violations) => {
            assert!(!violations.is_empty(), "a refusal names no field");
            for v in &violations {
                assert!(v.field.starts_with("record"), "field {:?}", v.field);
            }
            return false;
        }
    };
    let council = OdsCode::parse("E10000001").unwrap_or_else(|_| unreachable!("a valid code"));
    let new = NewChildRecord::new(&council, &valid, 1);
    let row = ChildRecordRow {
        id: 1,
        local_authority: new.local_authority,
        nhs_number: new.nhs_number,
        content: new.content,
        version: new.version,
        create_time: new.create_time,
        update_time: new.update_time,
    };
    let stored = match StoredRecord::try_from(row) {
        Ok(stored) => stored,
        Err(error) => panic!("a valid record does not survive its row: {error}"),
    };
    assert_eq!(stored.record, valid, "the row changed the record");

    let wire = record_to_wire(&stored);
    match validate_record(&wire, "record.", today) {
        Ok(again) => assert_eq!(again, valid, "the wire form validates differently"),
        Err(violations) => panic!("the wire form of a valid record is refused: {violations:?}"),
    }

    for day in [today, EARLIEST_PLAUSIBLE, LAST_WIRE_DATE] {
        let evaluation = evaluate(&valid, day);
        assert!(
            evaluation.unevaluable.is_empty(),
            "a validated record cannot be evaluated on {day}: {:?}",
            evaluation.unevaluable
        );
        for plan in &evaluation.plans {
            assert!(on_the_wire(plan.start) && plan.end.is_none_or(on_the_wire));
            let shown = disclosed_plan(plan);
            assert!(shown.start_date.is_some() && shown.plan_type != 0);
        }
        assert!(evaluation.plans.len() <= 3);
    }
    true
}
