//! The one diesel schema both backends share; it follows the migrations (see
//! `migrations/{sqlite,postgres}`), and `tests/it/schema_drift.rs` fails when it drifts from
//! either backend's migrated database.

diesel::table! {
    local_authorities (ods_code) {
        ods_code -> Text,
        name -> Text,
        emergency_duty_phone -> Text,
        office_hours_phone -> Nullable<Text>,
        update_time -> BigInt,
        last_notification_sequence -> BigInt,
        acknowledged_sequence -> BigInt,
    }
}

diesel::table! {
    child_records (id) {
        id -> BigInt,
        local_authority -> Text,
        nhs_number -> Text,
        local_case_id -> Nullable<Text>,
        given_name -> Text,
        family_name -> Text,
        date_of_birth -> Integer,
        cpp_start -> Nullable<Integer>,
        cpp_end -> Nullable<Integer>,
        cpp_delete -> Nullable<Integer>,
        lac_start -> Nullable<Integer>,
        lac_end -> Nullable<Integer>,
        lac_delete -> Nullable<Integer>,
        lac_legal_basis -> Nullable<Integer>,
        ucpp_start -> Nullable<Integer>,
        ucpp_end -> Nullable<Integer>,
        ucpp_delete -> Nullable<Integer>,
        ucpp_expected_delivery -> Nullable<Integer>,
        version -> BigInt,
        create_time -> BigInt,
        update_time -> BigInt,
    }
}

diesel::table! {
    upload_batches (local_authority, batch_id) {
        local_authority -> Text,
        batch_id -> Text,
        content_digest -> Binary,
        result -> Binary,
        complete_time -> BigInt,
    }
}

diesel::table! {
    access_events (id) {
        id -> BigInt,
        access_id -> Text,
        nhs_number -> Text,
        access_time -> BigInt,
        access_mode -> Integer,
        accessor_key -> Text,
        organisation_ods_code -> Text,
        care_setting -> Integer,
        event -> Binary,
    }
}

diesel::table! {
    notifications (local_authority, sequence) {
        local_authority -> Text,
        sequence -> BigInt,
        create_time -> BigInt,
        notification -> Binary,
    }
}

diesel::table! {
    nhs_number_status (nhs_number) {
        nhs_number -> Text,
        reason -> Integer,
        replacement_nhs_number -> Nullable<Text>,
        effective_date -> Nullable<Integer>,
        update_time -> BigInt,
    }
}

diesel::table! {
    registry_keys (name) {
        name -> Text,
        key_material -> Binary,
        create_time -> BigInt,
    }
}

diesel::table! {
    upload_claims (local_authority, batch_id) {
        local_authority -> Text,
        batch_id -> Text,
        holder -> BigInt,
        claimed_until -> BigInt,
    }
}

diesel::table! {
    batch_rejections (local_authority, batch_id, position) {
        local_authority -> Text,
        batch_id -> Text,
        position -> BigInt,
        rejection -> Binary,
    }
}

diesel::table! {
    holding_periods (id) {
        id -> BigInt,
        local_authority -> Text,
        nhs_number -> Text,
        start_time -> BigInt,
        end_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    lookup_throttles (subject) {
        subject -> Text,
        throttled_until -> BigInt,
    }
}

diesel::table! {
    /// The enumeration guard's distinct numbers: each subject's latest access of each number
    /// (kept by a trigger on `access_events`).
    enumeration_last_seen (subject, nhs_number) {
        subject -> Text,
        nhs_number -> Text,
        last_seen -> BigInt,
    }
}

diesel::table! {
    security_events (id) {
        id -> BigInt,
        event_time -> BigInt,
        event -> Binary,
    }
}

diesel::allow_tables_to_appear_in_same_query!(access_events, holding_periods);

// A disclosure reads each record with its council in one statement.
diesel::joinable!(child_records -> local_authorities (local_authority));
diesel::allow_tables_to_appear_in_same_query!(child_records, local_authorities);

/// Every table, for the drift test.
#[cfg(test)]
pub(crate) const TABLES: &[&str] = &[
    "local_authorities",
    "child_records",
    "upload_batches",
    "access_events",
    "notifications",
    "nhs_number_status",
    "registry_keys",
    "upload_claims",
    "batch_rejections",
    "holding_periods",
    "lookup_throttles",
    "security_events",
    "enumeration_last_seen",
];
