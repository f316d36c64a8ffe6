//! The registry's operator service: the NHS-number status feed (standing in for PDS). Operator
//! tokens carry scope "operator".

use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    EntryRejection, ImportNhsNumberStatusChangesRequest, ImportNhsNumberStatusChangesResponse,
    operator_service_server::OperatorService,
};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::CouncilAuth;
use crate::clock::Clock;
use crate::db::Database;
use crate::nhs_status::{StatusChange, apply, validate};
use crate::wakeups::Wakeups;

/// Changes applied per transaction.
const CHUNK: usize = 500;

/// Handler for `cpis.registry.v1.OperatorService`.
#[derive(Clone, Debug)]
pub struct OperatorApi {
    db: Database,
    auth: CouncilAuth,
    clock: Clock,
    wakeups: Wakeups,
}

impl OperatorApi {
    /// Creates the handler.
    pub fn new(db: Database, auth: CouncilAuth, clock: Clock, wakeups: Wakeups) -> Self {
        Self {
            db,
            auth,
            clock,
            wakeups,
        }
    }

    async fn apply_chunk(&self, chunk: Vec<StatusChange>) -> Result<(u64, u64), Status> {
        let now = self.clock.now_micros();
        let applied = self.db.run(move |conn| apply(conn, &chunk, now)).await?;
        for (ods_code, _) in &applied.notified {
            self.wakeups.wake(ods_code);
        }
        Ok((
            applied.applied,
            u64::try_from(applied.notified.len()).unwrap_or(u64::MAX),
        ))
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    #[tracing::instrument(skip_all, fields(rpc = "ImportNhsNumberStatusChanges"))]
    async fn import_nhs_number_status_changes(
        &self,
        request: Request<Streaming<ImportNhsNumberStatusChangesRequest>>,
    ) -> Result<Response<ImportNhsNumberStatusChangesResponse>, Status> {
        self.auth.authorize_operator(request.metadata())?;
        let mut stream = request.into_inner();
        let mut response = ImportNhsNumberStatusChangesResponse::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(message) = stream.message().await? {
            response.received_count += 1;
            let Some(change) = message.change else {
                response.rejections.push(EntryRejection {
                    position: response.received_count,
                    reason: ErrorReason::FieldRequired as i32,
                    field: "change".into(),
                    message: "is required".into(),
                });
                continue;
            };
            match validate(&change) {
                Ok(change) => chunk.push(change),
                Err(violation) => response.rejections.push(EntryRejection {
                    position: response.received_count,
                    reason: violation.reason as i32,
                    field: violation.field,
                    message: violation.description,
                }),
            }
            if chunk.len() >= CHUNK {
                let (applied, queued) = self.apply_chunk(std::mem::take(&mut chunk)).await?;
                response.applied_count += applied;
                response.notifications_queued += queued;
            }
        }
        let (applied, queued) = self.apply_chunk(chunk).await?;
        response.applied_count += applied;
        response.notifications_queued += queued;
        tracing::info!(
            received = response.received_count,
            applied = response.applied_count,
            notified = response.notifications_queued,
            "nhs number status changes imported"
        );
        Ok(Response::new(response))
    }
}
