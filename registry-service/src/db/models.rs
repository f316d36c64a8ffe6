//! Database rows — read structs (`…Row`) and write structs (`New…`) — and their conversion to
//! and from the domain types. A stored row that does not convert is corrupt: it is reported by
//! table and key through `RegistryError::corrupt`, never with its data.

use cpis_core::{nhs_number::NhsNumber, ods::OdsCode};
use cpis_proto::cpis::common::v1::{InactiveReason, LookedAfterLegalBasis};
use diesel::prelude::*;

use super::schema::{
    access_events, batch_rejections, child_records, holding_periods, local_authorities,
    lookup_throttles, nhs_number_status, notifications, registry_keys, security_events,
    upload_batches, upload_claims,
};
use crate::domain::contacts::{Contacts, Council};
use crate::domain::dates::{from_days, to_days};
use crate::domain::nhs_status::Inactive;
use crate::domain::record::{ChildRecord, LookedAfter, PlanPeriod, StoredRecord, UnbornPlan};
use crate::error::RegistryError;

/// A council's stored contact details and notification cursors.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = local_authorities)]
pub(crate) struct LocalAuthorityRow {
    pub ods_code: String,
    pub name: String,
    pub emergency_duty_phone: String,
    pub office_hours_phone: Option<String>,
    pub update_time: i64,
    pub acknowledged_sequence: i64,
}

impl TryFrom<LocalAuthorityRow> for Council {
    type Error = RegistryError;

    fn try_from(row: LocalAuthorityRow) -> Result<Self, RegistryError> {
        let ods_code = OdsCode::parse(&row.ods_code)
            .map_err(|_| RegistryError::corrupt("local_authorities", "ods_code"))?;
        Ok(Self {
            ods_code,
            contacts: Contacts {
                name: row.name,
                emergency_duty_phone: row.emergency_duty_phone,
                office_hours_phone: row.office_hours_phone,
            },
            update_time: row.update_time,
            acknowledged_sequence: row.acknowledged_sequence,
        })
    }
}

/// Contact details to insert or replace.
#[derive(Clone, Debug, Insertable, AsChangeset)]
#[diesel(table_name = local_authorities, treat_none_as_null = true)]
pub(crate) struct NewLocalAuthority {
    pub ods_code: String,
    pub name: String,
    pub emergency_duty_phone: String,
    pub office_hours_phone: Option<String>,
    pub update_time: i64,
}

impl NewLocalAuthority {
    /// The row for `contacts` of council `ods_code`, as of `now`.
    pub fn new(ods_code: &OdsCode, contacts: &Contacts, now: i64) -> Self {
        Self {
            ods_code: ods_code.to_string(),
            name: contacts.name.clone(),
            emergency_duty_phone: contacts.emergency_duty_phone.clone(),
            office_hours_phone: contacts.office_hours_phone.clone(),
            update_time: now,
        }
    }
}

/// The council-controlled content of a record: what a put writes and what decides whether a put
/// changed anything. Dates are days since 1970-01-01.
///
/// A `None` is written as NULL, never as DEFAULT (no column has one): with DEFAULT possible,
/// diesel writes SQLite's multi-row inserts as one INSERT per row.
#[derive(
    Clone, Debug, PartialEq, Eq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(
    table_name = child_records,
    treat_none_as_null = true,
    treat_none_as_default_value = false
)]
pub(crate) struct RecordContent {
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

/// A stored child record; instants are microseconds since the Unix epoch.
#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = child_records)]
pub(crate) struct ChildRecordRow {
    pub id: i64,
    pub local_authority: String,
    pub nhs_number: String,
    #[diesel(embed)]
    pub content: RecordContent,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// A new record: key, content and bookkeeping (every column sent, as for `RecordContent`).
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = child_records, treat_none_as_default_value = false)]
pub(crate) struct NewChildRecord {
    pub local_authority: String,
    pub nhs_number: String,
    #[diesel(embed)]
    pub content: RecordContent,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
}

impl NewChildRecord {
    /// A first version of `record` for council `ods_code`.
    pub fn new(ods_code: &OdsCode, record: &ChildRecord, now: i64) -> Self {
        Self {
            local_authority: ods_code.to_string(),
            nhs_number: record.nhs_number.to_string(),
            content: RecordContent::from(record),
            version: 1,
            create_time: now,
            update_time: now,
        }
    }
}

impl From<&ChildRecord> for RecordContent {
    fn from(record: &ChildRecord) -> Self {
        let days = |d: Option<chrono::NaiveDate>| d.map(to_days);
        let cpp = record.child_protection_plan;
        let lac = record.looked_after_child;
        let ucpp = record.unborn_child_protection_plan;
        Self {
            local_case_id: record.local_case_id.clone(),
            given_name: record.given_name.clone(),
            family_name: record.family_name.clone(),
            date_of_birth: to_days(record.date_of_birth),
            cpp_start: cpp.map(|p| to_days(p.start)),
            cpp_end: days(cpp.and_then(|p| p.end)),
            cpp_delete: days(cpp.and_then(|p| p.delete)),
            lac_start: lac.map(|l| to_days(l.period.start)),
            lac_end: days(lac.and_then(|l| l.period.end)),
            lac_delete: days(lac.and_then(|l| l.period.delete)),
            lac_legal_basis: lac.map(|l| l.legal_basis as i32),
            ucpp_start: ucpp.map(|u| to_days(u.period.start)),
            ucpp_end: days(ucpp.and_then(|u| u.period.end)),
            ucpp_delete: days(ucpp.and_then(|u| u.period.delete)),
            ucpp_expected_delivery: ucpp.map(|u| to_days(u.expected_delivery)),
        }
    }
}

/// A stored record split into what identifies it and its plan blocks, each decoded on its own.
struct Decoded {
    identity: Result<StoredRecord, RegistryError>,
    cpp: Result<Option<PlanPeriod>, RegistryError>,
    lac: Result<Option<LookedAfter>, RegistryError>,
    ucpp: Result<Option<UnbornPlan>, RegistryError>,
}

fn decode_row(row: ChildRecordRow) -> Decoded {
    let id = row.id;
    let corrupt = || RegistryError::corrupt("child_records", id);
    let c = &row.content;
    let date = |d: i32| from_days(d).ok_or_else(corrupt);
    let optional = |d: Option<i32>| d.map(date).transpose();
    let period = |start: Option<i32>, end: Option<i32>, delete: Option<i32>| {
        start
            .map(|start| {
                Ok::<_, RegistryError>(PlanPeriod {
                    start: date(start)?,
                    end: optional(end)?,
                    delete: optional(delete)?,
                })
            })
            .transpose()
    };
    let cpp = period(c.cpp_start, c.cpp_end, c.cpp_delete);
    let lac = period(c.lac_start, c.lac_end, c.lac_delete).and_then(|p| {
        p.map(|period| {
            let basis = c.lac_legal_basis.map(LookedAfterLegalBasis::try_from);
            Ok(LookedAfter {
                period,
                legal_basis: basis.and_then(Result::ok).ok_or_else(corrupt)?,
            })
        })
        .transpose()
    });
    let ucpp = period(c.ucpp_start, c.ucpp_end, c.ucpp_delete).and_then(|p| {
        p.map(|period| {
            Ok(UnbornPlan {
                period,
                expected_delivery: c.ucpp_expected_delivery.map(date).ok_or_else(corrupt)??,
            })
        })
        .transpose()
    });
    let identity = (|| {
        Ok(StoredRecord {
            local_authority: OdsCode::parse(&row.local_authority).map_err(|_| corrupt())?,
            record: ChildRecord {
                nhs_number: NhsNumber::parse(&row.nhs_number).map_err(|_| corrupt())?,
                local_case_id: c.local_case_id.clone(),
                given_name: c.given_name.clone(),
                family_name: c.family_name.clone(),
                date_of_birth: date(c.date_of_birth)?,
                child_protection_plan: None,
                looked_after_child: None,
                unborn_child_protection_plan: None,
            },
            version: row.version,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    })();
    Decoded {
        identity,
        cpp,
        lac,
        ucpp,
    }
}

impl TryFrom<ChildRecordRow> for StoredRecord {
    type Error = RegistryError;

    /// The whole record, or the row is corrupt.
    fn try_from(row: ChildRecordRow) -> Result<Self, RegistryError> {
        let decoded = decode_row(row);
        let mut stored = decoded.identity?;
        stored.record.child_protection_plan = decoded.cpp?;
        stored.record.looked_after_child = decoded.lac?;
        stored.record.unborn_child_protection_plan = decoded.ucpp?;
        Ok(stored)
    }
}

impl ChildRecordRow {
    /// For a disclosure: the record with every plan block that decodes, leaving out (and
    /// reporting) a block that does not, so a damaged plan never hides a sound one; `None` when
    /// what identifies the child (NHS number, council, date of birth) does not decode.
    pub(crate) fn into_disclosable(self) -> Option<StoredRecord> {
        let decoded = decode_row(self);
        let mut stored = decoded.identity.ok()?;
        stored.record.child_protection_plan = decoded.cpp.ok().flatten();
        stored.record.looked_after_child = decoded.lac.ok().flatten();
        stored.record.unborn_child_protection_plan = decoded.ucpp.ok().flatten();
        Some(stored)
    }
}

/// A completed upload batch, kept for idempotent retries.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = upload_batches)]
pub(crate) struct UploadBatchRow {
    pub local_authority: String,
    pub batch_id: String,
    pub content_digest: Vec<u8>,
    pub result: Vec<u8>,
    pub complete_time: i64,
}

/// A claim on a batch id while its upload runs.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = upload_claims)]
pub(crate) struct UploadClaimRow {
    pub local_authority: String,
    pub batch_id: String,
    pub holder: i64,
    pub claimed_until: i64,
}

/// One rejection of a batch, as encoded `cpis.registry.v1.RecordRejection` (every column sent,
/// as for `RecordContent`).
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = batch_rejections, treat_none_as_default_value = false)]
pub(crate) struct BatchRejectionRow {
    pub local_authority: String,
    pub batch_id: String,
    pub position: i64,
    pub rejection: Vec<u8>,
}

/// A recorded access: the event as encoded `cpis.common.v1.AccessEvent`, with the columns
/// queries filter and collapse on.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = access_events)]
pub(crate) struct AccessEventRow {
    pub id: i64,
    pub access_time: i64,
    pub accessor_key: String,
    pub event: Vec<u8>,
}

/// An access to record.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = access_events)]
pub(crate) struct NewAccessEvent {
    pub access_id: String,
    pub nhs_number: String,
    pub access_time: i64,
    pub access_mode: i32,
    pub accessor_key: String,
    pub organisation_ods_code: String,
    pub care_setting: i32,
    pub event: Vec<u8>,
}

/// A throttled subject of the enumeration guard.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = lookup_throttles)]
pub(crate) struct ThrottleRow {
    pub subject: String,
    pub throttled_until: i64,
}

/// A stored security event, as encoded `cpis.registry.v1.SecurityEvent`.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = security_events)]
pub(crate) struct SecurityEventRow {
    pub id: i64,
    pub event: Vec<u8>,
}

/// A queued council notification (the outbox), as encoded `cpis.registry.v1.Notification`.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications)]
pub(crate) struct NotificationRow {
    pub local_authority: String,
    pub sequence: i64,
    pub create_time: i64,
    pub notification: Vec<u8>,
}

/// An NHS number the demographics service reports inactive.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = nhs_number_status, treat_none_as_null = true)]
pub(crate) struct NhsNumberStatusRow {
    pub nhs_number: String,
    pub reason: i32,
    pub replacement_nhs_number: Option<String>,
    pub effective_date: Option<i32>,
    pub update_time: i64,
}

impl From<&NhsNumberStatusRow> for Inactive {
    fn from(row: &NhsNumberStatusRow) -> Self {
        Self {
            // An unknown stored reason still means inactive: refuse rather than accept.
            reason: InactiveReason::try_from(row.reason).unwrap_or(InactiveReason::Unspecified),
            replacement: row.replacement_nhs_number.clone(),
        }
    }
}

/// The opening of a council's holding period for an NHS number (it closes when the record is
/// removed). Every column is sent (as for `RecordContent`; and COPY needs it so).
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = holding_periods, treat_none_as_default_value = false)]
pub(crate) struct NewHoldingPeriod {
    pub local_authority: String,
    pub nhs_number: String,
    pub start_time: i64,
}

impl From<&NewChildRecord> for NewHoldingPeriod {
    /// The period a newly created record opens, from its creation.
    fn from(record: &NewChildRecord) -> Self {
        Self {
            local_authority: record.local_authority.clone(),
            nhs_number: record.nhs_number.clone(),
            start_time: record.create_time,
        }
    }
}

/// A key the registry generated for itself.
#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = registry_keys)]
pub(crate) struct RegistryKeyRow {
    pub name: String,
    pub key_material: Vec<u8>,
    pub create_time: i64,
}

/// Decodes a stored protobuf column; a failure is a corrupt row of `table` at `key`.
pub(crate) fn decode<M: prost::Message + Default>(
    bytes: &[u8],
    table: &'static str,
    key: impl ToString,
) -> Result<M, RegistryError> {
    M::decode(bytes).map_err(|_| RegistryError::corrupt(table, key))
}
