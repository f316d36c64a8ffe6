//! `cpis.registry.v1.CouncilService`: contact details, one-record writes and reads, listings,
//! access history and batch outcomes here; bulk uploads in `upload`, notifications in
//! `notifications`. Every call is scoped to the caller's own council (`auth::council`).

use std::sync::Arc;

use cpis_core::nhs_number::NhsNumber;
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, AcknowledgeNotificationsResponse, DeleteChildRecordRequest,
    DeleteChildRecordResponse, GetBatchRequest, GetBatchResponse, GetChildRecordRequest,
    GetChildRecordResponse, GetContactDetailsRequest, GetContactDetailsResponse,
    ListAccessEventsRequest, ListAccessEventsResponse, ListBatchRejectionsRequest,
    ListBatchRejectionsResponse, ListChildRecordsRequest, ListChildRecordsResponse,
    ListNotificationsRequest, ListNotificationsResponse, PutChildRecordRequest,
    PutChildRecordResponse, RecordStateFilter, SetContactDetailsRequest, SetContactDetailsResponse,
    SubscribeNotificationsRequest, SubscribeNotificationsResponse, UploadBatchRequest,
    UploadBatchResponse, council_service_server::CouncilService,
};
use tonic::{Request, Response, Status, Streaming};

use super::Registry;
use super::auth::council;
use super::convert::{council_to_wire, record_to_wire};
use super::paging::{Query, page_size, split_page};
use super::validate::validate_record;
use crate::db::DbConnection;
use crate::db::disclosure::list_access_events;
use crate::db::records::{self, StateFilter};
use crate::domain::contacts::Contacts;
use crate::error::RegistryError;

/// Handler for `cpis.registry.v1.CouncilService`.
#[derive(Clone, Debug)]
pub(crate) struct CouncilApi(pub Arc<Registry>);

type Answer<T> = Result<Response<T>, Status>;

impl CouncilApi {
    /// Runs blocking database work off the async workers.
    async fn run<T, F>(&self, work: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, RegistryError> + Send + 'static,
    {
        self.0.db.run(work).await
    }
}

#[tonic::async_trait]
impl CouncilService for CouncilApi {
    async fn set_contact_details(
        &self,
        request: Request<SetContactDetailsRequest>,
    ) -> Answer<SetContactDetailsResponse> {
        let ods = council(&request)?;
        let la = request.into_inner().local_authority.unwrap_or_default();
        let contacts = Contacts::parse(
            "local_authority",
            &la.name,
            &la.emergency_duty_phone,
            &la.office_hours_phone,
        )
        .map_err(RegistryError::Invalid)?;
        let now = self.0.clock.now_micros();
        let stored = {
            let ods = ods.clone();
            self.run(move |conn| records::upsert_contacts(conn, &ods, &contacts, now))
                .await?
        };
        tracing::info!(la = %ods, "contact details set");
        Ok(Response::new(SetContactDetailsResponse {
            local_authority: Some(council_to_wire(&stored, true)),
        }))
    }

    async fn get_contact_details(
        &self,
        request: Request<GetContactDetailsRequest>,
    ) -> Answer<GetContactDetailsResponse> {
        let ods = council(&request)?;
        let stored = self
            .run(move |conn| records::get_council(conn, &ods))
            .await?
            .ok_or(RegistryError::ContactsNotSet)?;
        Ok(Response::new(GetContactDetailsResponse {
            local_authority: Some(council_to_wire(&stored, true)),
        }))
    }

    async fn put_child_record(
        &self,
        request: Request<PutChildRecordRequest>,
    ) -> Answer<PutChildRecordResponse> {
        let ods = council(&request)?;
        let body = request.into_inner();
        let wire = body
            .record
            .ok_or_else(|| RegistryError::required("record"))?;
        if body.expected_version.is_some_and(|v| v < 0) {
            return Err(RegistryError::invalid(
                "expected_version",
                ErrorReason::FieldFormat,
                "must not be negative",
            )
            .into());
        }
        let record = validate_record(&wire, "record.", self.0.clock.today())
            .map_err(RegistryError::Invalid)?;
        let now = self.0.clock.now_micros();
        let stored = {
            let ods = ods.clone();
            self.run(move |conn| {
                records::put_record(conn, &ods, &record, body.expected_version, now)
            })
            .await?
        };
        tracing::info!(la = %ods, created = stored.created, version = stored.record.version, "record stored");
        Ok(Response::new(PutChildRecordResponse {
            record: Some(record_to_wire(&stored.record)),
            created: stored.created,
        }))
    }

    async fn get_child_record(
        &self,
        request: Request<GetChildRecordRequest>,
    ) -> Answer<GetChildRecordResponse> {
        let ods = council(&request)?;
        let nhs = NhsNumber::parse_field(&request.get_ref().nhs_number, "nhs_number")
            .map_err(RegistryError::from)?;
        let stored = self
            .run(move |conn| records::get_record(conn, &ods, &nhs))
            .await?
            .ok_or(RegistryError::RecordNotFound)?;
        Ok(Response::new(GetChildRecordResponse {
            record: Some(record_to_wire(&stored)),
        }))
    }

    async fn list_child_records(
        &self,
        request: Request<ListChildRecordsRequest>,
    ) -> Answer<ListChildRecordsResponse> {
        let ods = council(&request)?;
        let body = request.into_inner();
        let filter = match RecordStateFilter::try_from(body.state) {
            Ok(RecordStateFilter::Unspecified) => StateFilter::All,
            Ok(RecordStateFilter::Active) => StateFilter::Active,
            Ok(RecordStateFilter::Ended) => StateFilter::Ended,
            Err(_) => {
                return Err(RegistryError::invalid(
                    "state",
                    ErrorReason::FieldFormat,
                    "is not a known filter",
                )
                .into());
            }
        };
        let limit = page_size(body.page_size)?;
        let query = Query::Records {
            council: &ods,
            state: body.state,
        };
        let after = match self.0.pages.open(query, &body.page_token).await? {
            None => None,
            Some(position) => Some(
                NhsNumber::parse(&format!("{position:010}"))
                    .map_err(|_| RegistryError::bad_page_token())?,
            ),
        };
        let today = self.0.clock.today();
        let rows = {
            let ods = ods.clone();
            self.run(move |conn| {
                records::list_records(conn, &ods, after.as_ref(), filter, today, limit + 1)
            })
            .await?
        };
        let page = split_page(rows, limit);
        Ok(Response::new(ListChildRecordsResponse {
            next_page_token: self.0.pages.next(query, &page).await?,
            records: page.items.iter().map(record_to_wire).collect(),
        }))
    }

    async fn delete_child_record(
        &self,
        request: Request<DeleteChildRecordRequest>,
    ) -> Answer<DeleteChildRecordResponse> {
        let ods = council(&request)?;
        let body = request.into_inner();
        let nhs =
            NhsNumber::parse_field(&body.nhs_number, "nhs_number").map_err(RegistryError::from)?;
        let now = self.0.clock.now_micros();
        {
            let ods = ods.clone();
            self.run(move |conn| {
                records::delete_record(conn, &ods, &nhs, body.expected_version, now)
            })
            .await?;
        }
        tracing::info!(la = %ods, "record deleted");
        Ok(Response::new(DeleteChildRecordResponse {}))
    }

    async fn upload_batch(
        &self,
        request: Request<Streaming<UploadBatchRequest>>,
    ) -> Answer<UploadBatchResponse> {
        super::upload::upload_batch(&self.0, request).await
    }

    async fn list_access_events(
        &self,
        request: Request<ListAccessEventsRequest>,
    ) -> Answer<ListAccessEventsResponse> {
        let ods = council(&request)?;
        let body = request.into_inner();
        let nhs =
            NhsNumber::parse_field(&body.nhs_number, "nhs_number").map_err(RegistryError::from)?;
        let limit = page_size(body.page_size)?;
        let query = Query::AccessEvents {
            council: &ods,
            nhs_number: &nhs,
        };
        let before = self.0.pages.open(query, &body.page_token).await?;
        let rows = {
            let (ods, nhs) = (ods.clone(), nhs);
            self.run(move |conn| list_access_events(conn, &ods, &nhs, before, limit + 1))
                .await?
        };
        let page = split_page(rows, limit);
        Ok(Response::new(ListAccessEventsResponse {
            next_page_token: self.0.pages.next(query, &page).await?,
            access_events: page.items,
        }))
    }

    type SubscribeNotificationsStream =
        futures::stream::BoxStream<'static, Result<SubscribeNotificationsResponse, Status>>;

    async fn subscribe_notifications(
        &self,
        request: Request<SubscribeNotificationsRequest>,
    ) -> Answer<Self::SubscribeNotificationsStream> {
        super::notifications::subscribe(&self.0, request).await
    }

    async fn acknowledge_notifications(
        &self,
        request: Request<AcknowledgeNotificationsRequest>,
    ) -> Answer<AcknowledgeNotificationsResponse> {
        super::notifications::acknowledge(&self.0, request).await
    }

    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Answer<ListNotificationsResponse> {
        super::notifications::list(&self.0, request).await
    }

    async fn get_batch(&self, request: Request<GetBatchRequest>) -> Answer<GetBatchResponse> {
        super::upload::get_batch(&self.0, request).await
    }

    async fn list_batch_rejections(
        &self,
        request: Request<ListBatchRejectionsRequest>,
    ) -> Answer<ListBatchRejectionsResponse> {
        super::upload::list_rejections(&self.0, request).await
    }
}
