//! A council's notifications: the live stream (replay from a cursor, then follow), the
//! acknowledgement that moves the council's cursor, and the paged listing.

use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, AcknowledgeNotificationsResponse, ListNotificationsRequest,
    ListNotificationsResponse, SubscribeNotificationsRequest, SubscribeNotificationsResponse,
};
use tonic::{Request, Response, Status};

use super::Registry;
use super::auth::council;
use super::paging::{Query, page_size, split_page};
use crate::db::{outbox, records};
use crate::error::RegistryError;
use crate::notify::subscription;

type Stream = futures::stream::BoxStream<'static, Result<SubscribeNotificationsResponse, Status>>;

/// `SubscribeNotifications`: replay after the cursor (the stored one unless the request names
/// one), then live.
pub(super) async fn subscribe(
    registry: &Registry,
    request: Request<SubscribeNotificationsRequest>,
) -> Result<Response<Stream>, Status> {
    let ods = council(&request)?;
    let requested = request.get_ref().after_sequence;
    let (latest, acknowledged) = {
        let ods = ods.clone();
        registry
            .db
            .run(move |conn| outbox::cursors(conn, &ods))
            .await?
    };
    let cursor = match requested {
        None => acknowledged,
        Some(after) => i64::try_from(after).map_err(|_| RegistryError::SequenceNotIssued)?,
    };
    if cursor > latest {
        return Err(RegistryError::SequenceNotIssued.into());
    }
    let seat = registry.feeds.join(&ods)?;
    tracing::info!(la = %ods, cursor, "subscriber connected");
    let rx = subscription::start(
        registry.db.clone(),
        seat,
        registry.shutdown.clone(),
        registry.subscription,
        ods,
        cursor,
    );
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// `AcknowledgeNotifications`: moves the council's cursor forward.
pub(super) async fn acknowledge(
    registry: &Registry,
    request: Request<AcknowledgeNotificationsRequest>,
) -> Result<Response<AcknowledgeNotificationsResponse>, Status> {
    let ods = council(&request)?;
    let sequence =
        i64::try_from(request.get_ref().sequence).map_err(|_| RegistryError::SequenceNotIssued)?;
    let acknowledged = registry
        .db
        .run(move |conn| outbox::acknowledge(conn, &ods, sequence))
        .await?;
    Ok(Response::new(AcknowledgeNotificationsResponse {
        acknowledged_sequence: u64::try_from(acknowledged).unwrap_or_default(),
    }))
}

/// `ListNotifications`: a page of the council's notifications after a sequence.
pub(super) async fn list(
    registry: &Registry,
    request: Request<ListNotificationsRequest>,
) -> Result<Response<ListNotificationsResponse>, Status> {
    let ods = council(&request)?;
    let body = request.into_inner();
    let limit = page_size(body.page_size)?;
    let query = Query::Notifications { council: &ods };
    let after = match registry.pages.open(query, &body.page_token).await? {
        Some(sequence) => sequence,
        None => i64::try_from(body.after_sequence).unwrap_or(i64::MAX),
    };
    let (rows, acknowledged) = {
        let ods = ods.clone();
        registry
            .db
            .run(move |conn| {
                let rows = outbox::list(conn, &ods, after, limit + 1)?;
                let acknowledged =
                    records::get_council(conn, &ods)?.map_or(0, |c| c.acknowledged_sequence);
                Ok((rows, acknowledged))
            })
            .await?
    };
    let page = split_page(rows, limit);
    Ok(Response::new(ListNotificationsResponse {
        next_page_token: registry.pages.next(query, &page).await?,
        notifications: page.items,
        acknowledged_sequence: u64::try_from(acknowledged).unwrap_or_default(),
    }))
}
