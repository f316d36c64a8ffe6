//! Database rows: read structs (`…Row`) and write structs (`New…`), separate from the wire types
//! and the validated domain types.

use diesel::prelude::*;

use super::schema::{
    access_events, child_records, local_authorities, nhs_number_status, notifications,
    upload_batches,
};

/// A council's stored contact details and notification cursors.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = local_authorities)]
pub struct LocalAuthorityRow {
    pub ods_code: String,
    pub name: String,
    pub emergency_duty_phone: String,
    pub office_hours_phone: Option<String>,
    pub update_time: i64,
    pub last_notification_sequence: i64,
    pub acknowledged_sequence: i64,
}

/// Contact details to insert or replace.
#[derive(Clone, Debug, Insertable, AsChangeset)]
#[diesel(table_name = local_authorities, treat_none_as_null = true)]
pub struct NewLocalAuthority {
    pub ods_code: String,
    pub name: String,
    pub emergency_duty_phone: String,
    pub office_hours_phone: Option<String>,
    pub update_time: i64,
}

/// A stored child record. Dates are days since 1970-01-01; instants are microseconds since the
/// Unix epoch.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = child_records)]
pub struct ChildRecordRow {
    pub id: i64,
    pub local_authority: String,
    pub nhs_number: String,
    pub local_case_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: i32,
    pub cpp_start: Option<i32>,
    pub cpp_end: Option<i32>,
    pub cpp_delete: Option<i32>,
    pub lac_start: Option<i32>,
    pub lac_end: Option<i32>,
    pub lac_delete: Option<i32>,
    pub lac_legal_basis: Option<i32>,
    pub ucpp_start: Option<i32>,
    pub ucpp_end: Option<i32>,
    pub ucpp_delete: Option<i32>,
    pub ucpp_expected_delivery: Option<i32>,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// The council-controlled content of a record: what a put writes and what decides whether a
/// put changed anything.
#[derive(Clone, Debug, PartialEq, Eq, Insertable, AsChangeset)]
#[diesel(table_name = child_records, treat_none_as_null = true)]
pub struct RecordContent {
    pub local_case_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: i32,
    pub cpp_start: Option<i32>,
    pub cpp_end: Option<i32>,
    pub cpp_delete: Option<i32>,
    pub lac_start: Option<i32>,
    pub lac_end: Option<i32>,
    pub lac_delete: Option<i32>,
    pub lac_legal_basis: Option<i32>,
    pub ucpp_start: Option<i32>,
    pub ucpp_end: Option<i32>,
    pub ucpp_delete: Option<i32>,
    pub ucpp_expected_delivery: Option<i32>,
}

impl ChildRecordRow {
    /// The council-controlled content, for change detection.
    pub fn content(&self) -> RecordContent {
        RecordContent {
            local_case_id: self.local_case_id.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            date_of_birth: self.date_of_birth,
            cpp_start: self.cpp_start,
            cpp_end: self.cpp_end,
            cpp_delete: self.cpp_delete,
            lac_start: self.lac_start,
            lac_end: self.lac_end,
            lac_delete: self.lac_delete,
            lac_legal_basis: self.lac_legal_basis,
            ucpp_start: self.ucpp_start,
            ucpp_end: self.ucpp_end,
            ucpp_delete: self.ucpp_delete,
            ucpp_expected_delivery: self.ucpp_expected_delivery,
        }
    }
}

/// A new record: key, content and bookkeeping.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = child_records)]
pub struct NewChildRecord {
    pub local_authority: String,
    pub nhs_number: String,
    #[diesel(embed)]
    pub content: RecordContent,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// A completed upload batch, kept for idempotent retries.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = upload_batches)]
pub struct UploadBatchRow {
    pub local_authority: String,
    pub batch_id: String,
    pub content_digest: Vec<u8>,
    pub result: Vec<u8>,
    pub complete_time: i64,
}

/// A recorded access.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = access_events)]
pub struct AccessEventRow {
    pub id: i64,
    pub access_id: String,
    pub nhs_number: String,
    pub access_time: i64,
    pub access_mode: i32,
    pub accessor_key: String,
    pub organisation_ods_code: String,
    pub care_setting: i32,
    pub event: Vec<u8>,
}

/// An access to record.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = access_events)]
pub struct NewAccessEvent {
    pub access_id: String,
    pub nhs_number: String,
    pub access_time: i64,
    pub access_mode: i32,
    pub accessor_key: String,
    pub organisation_ods_code: String,
    pub care_setting: i32,
    pub event: Vec<u8>,
}

/// A queued council notification (the outbox).
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    pub local_authority: String,
    pub sequence: i64,
    pub create_time: i64,
    pub notification: Vec<u8>,
}

/// An NHS number the demographics service reports inactive.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = nhs_number_status, treat_none_as_null = true)]
pub struct NhsNumberStatusRow {
    pub nhs_number: String,
    pub reason: i32,
    pub replacement_nhs_number: Option<String>,
    pub effective_date: Option<i32>,
    pub update_time: i64,
}
