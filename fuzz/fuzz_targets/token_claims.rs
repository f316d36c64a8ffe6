//! Fuzz target: the claims of an NHS token (after its signature has been verified: the
//! cryptography is not fuzzed) as arbitrary JSON, turned into a caller the way the lookup
//! service does (`lookup_service::identity::NhsClaims::into_caller`, which applies
//! `cpis_core::accessor::ValidAccessor`'s rules). A caller it accepts must be accepted again by
//! the registry after the trip through protobuf, and every refusal must be one the security log
//! can carry safely.
#![no_main]

use cpis_core::accessor::{MAX_ACTIVITY_CODE_BYTES, MAX_ACTIVITY_CODES, ValidAccessor};
use cpis_core::auth::AuthError;
use cpis_core::ods::OdsCode;
use cpis_proto::cpis::common::v1::{Accessor, CareSetting, ErrorReason};
use libfuzzer_sys::fuzz_target;
use lookup_service::identity::{ClaimsError, NhsClaims};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    // jsonwebtoken hands the verified payload to serde_json exactly like this.
    let Ok(claims) = serde_json::from_slice::<NhsClaims>(data) else {
        return;
    };
    match claims.into_caller() {
        Ok(caller) => {
            let accessor = &caller.accessor;
            assert_ne!(accessor.care_setting(), CareSetting::Unspecified);
            assert!(OdsCode::parse(accessor.ods_code().as_str()).is_ok());
            assert!(caller.activity_codes.len() <= MAX_ACTIVITY_CODES);
            assert!(caller.activity_codes.iter().all(|code| {
                !code.is_empty()
                    && code.len() <= MAX_ACTIVITY_CODE_BYTES
                    && code.bytes().all(|b| b.is_ascii_alphanumeric())
            }));
            // What the lookup service sends, the registry decodes and re-checks: same accessor.
            let sent = accessor.as_wire().encode_to_vec();
            let received = match Accessor::decode(sent.as_slice()) {
                Ok(received) => received,
                Err(error) => panic!("the registry cannot decode a sent accessor: {error}"),
            };
            match ValidAccessor::try_from(received) {
                Ok(again) => assert_eq!(&again, accessor),
                Err(violations) => panic!("the registry refuses a valid caller: {violations:?}"),
            }
            assert!(!accessor.key().is_empty());
        }
        Err(ClaimsError::Invalid(error)) => {
            assert_eq!(error.reason(), ErrorReason::TokenInvalid);
            // The refusal is answered and logged: it names a claim, never echoes a value.
            let AuthError::Invalid(why) = &error else {
                panic!("claims refused as {error:?}");
            };
            assert!(why.len() <= 200, "refusal text of {} bytes", why.len());
            assert!(!why.chars().any(char::is_control));
        }
        // Logged by the lookup service: only ever a well-formed ODS code.
        Err(ClaimsError::UnknownCareSetting { org }) => {
            assert!(OdsCode::parse(&org).is_ok(), "unvalidated org {org:?}");
        }
    }
});
