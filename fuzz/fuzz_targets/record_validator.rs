//! Fuzz target: arbitrary bytes as a `cpis.common.v1.ChildRecord` (protobuf) through the
//! registry's record validator on an arbitrary day; what it accepts must survive its database
//! row and its wire form unchanged and be evaluable by the visibility rules
//! (`registry_service::fuzzing::check_record`).
//!
//! Input: two bytes (little-endian) of days after 1990-01-01 for the registry's today, then the
//! encoded record.
#![no_main]

use cpis_proto::cpis::common::v1::ChildRecord;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use registry_service::fuzzing::{check_record, today};

fuzz_target!(|data: &[u8]| {
    let [low, high, encoded @ ..] = data else {
        return;
    };
    // Only what decodes reaches the validator in the server too (tonic refuses the rest).
    let Ok(record) = ChildRecord::decode(encoded) else {
        return;
    };
    check_record(&record, today(u16::from_le_bytes([*low, *high])));
});
