//! A council's live notification stream: replay everything after the cursor from the outbox,
//! then follow the council's shared feed (`notify::feeds`), catching up from the outbox again
//! whenever the feed shows a gap. Delivery is at least once and in sequence order. Memory per subscriber is bounded by a small send buffer:
//! a subscriber that stops reading is cut off with a clean error telling it to resume from its
//! last acknowledged sequence.

use std::time::Duration;
use tracing::Instrument as _;

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::{
    Heartbeat, SubscribeNotificationsResponse, subscribe_notifications_response::Event,
};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use crate::db::{Database, outbox};
use crate::error::RegistryError;
use crate::notify::feeds::{Item, PAGE, Seat};

/// Subscriber settings.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionOptions {
    /// Messages buffered per subscriber before sending waits.
    pub buffer: usize,
    /// How long a send may wait for a subscriber that does not read before it is cut off.
    pub send_timeout: Duration,
    /// How often a council's feed polls the outbox when no wake-up arrives (the fallback for
    /// lost wake-ups).
    pub poll_interval: Duration,
    /// A heartbeat is sent after this long without a notification.
    pub heartbeat_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            buffer: 64,
            send_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(15),
        }
    }
}

type Outgoing = mpsc::Sender<Result<SubscribeNotificationsResponse, Status>>;

/// Why the delivery loop ended.
enum End {
    /// The subscriber hung up.
    Gone,
    /// The subscriber is cut off with this error.
    Error(RegistryError),
}

/// Starts streaming council `ods_code`'s notifications after `cursor`, from its seat at the
/// council's feed.
pub(crate) fn start(
    db: Database,
    seat: Seat,
    shutdown: watch::Receiver<bool>,
    options: SubscriptionOptions,
    ods_code: OdsCode,
    cursor: i64,
) -> mpsc::Receiver<Result<SubscribeNotificationsResponse, Status>> {
    // One slot more than the buffer: notifications never take the last one, so the status
    // that ends a stalled subscription always fits.
    let (tx, rx) = mpsc::channel(options.buffer.max(1) + 1);
    tokio::spawn(
        async move {
            let delivered = deliver(&db, seat, shutdown, options, &ods_code, cursor, &tx);
            // Beyond the server's panic layer: a panic here would otherwise drop `tx` and end the
            // stream as if complete. Best effort sends: the subscriber may already be gone.
            match cpis_core::panics::unless_panicked(delivered).await {
                Some(End::Error(status)) => drop(tx.try_send(Err(status.into()))),
                Some(_) => {}
                None => drop(tx.try_send(Err(cpis_core::panics::panicked_status()))),
            }
            tracing::info!(la = %ods_code, "subscriber disconnected");
        }
        // The stream's log lines belong to the call that opened it (its request id).
        .in_current_span(),
    );
    rx
}

async fn send(tx: &Outgoing, event: Event, options: &SubscriptionOptions) -> Result<(), End> {
    use tracing::Instrument as _;
    // A notification's delivery is a span of the subscription's call (heartbeats are not):
    // the sequence only, never what the notification says.
    let span = match &event {
        Event::Notification(n) => {
            tracing::info_span!("deliver_notification", notification.sequence = n.sequence)
        }
        _ => tracing::Span::none(),
    };
    send_event(tx, event, options).instrument(span).await
}

async fn send_event(tx: &Outgoing, event: Event, options: &SubscriptionOptions) -> Result<(), End> {
    let message = SubscribeNotificationsResponse { event: Some(event) };
    // Wait for two free slots, use one: the last slot stays free for a closing status.
    match tokio::time::timeout(options.send_timeout, tx.reserve_many(2)).await {
        Ok(Ok(mut permits)) => {
            if let Some(permit) = permits.next() {
                permit.send(Ok(message));
            }
            Ok(())
        }
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Error(RegistryError::SubscriberTooSlow)),
    }
}

/// Sends everything after `cursor` from the outbox, a page at a time (memory stays at a page
/// however far behind the subscriber is); returns the new cursor.
async fn catch_up(
    db: &Database,
    ods_code: &OdsCode,
    mut cursor: i64,
    tx: &Outgoing,
    options: &SubscriptionOptions,
) -> Result<i64, End> {
    loop {
        let ods = ods_code.clone();
        let page = db
            .run(move |conn| outbox::list(conn, &ods, cursor, PAGE))
            .await
            .map_err(End::Error)?;
        let full_page = i64::try_from(page.len()).is_ok_and(|n| n == PAGE);
        for (sequence, notification) in page {
            // The cursor passes undecodable rows too (reported where read): no trap, no re-read.
            cursor = sequence;
            if let Some(notification) = notification {
                send(tx, Event::Notification(notification), options).await?;
            }
        }
        if !full_page {
            return Ok(cursor);
        }
    }
}

async fn deliver(
    db: &Database,
    mut seat: Seat,
    mut shutdown: watch::Receiver<bool>,
    options: SubscriptionOptions,
    ods_code: &OdsCode,
    cursor: i64,
    tx: &Outgoing,
) -> End {
    // Replay first (the seat is taken, so nothing committed meanwhile is missed), then follow
    // the feed; whenever the feed shows a gap, catch up from the outbox again.
    let mut cursor = match catch_up(db, ods_code, cursor, tx, &options).await {
        Ok(cursor) => cursor,
        Err(end) => return end,
    };
    let mut last_sent = tokio::time::Instant::now();
    // When a catch-up the database refused is tried again: the feed of an idle council announces
    // nothing more (positions are sent only when they move), so the subscriber retries itself.
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let heartbeat_at = last_sent + options.heartbeat_interval;
        let behind = tokio::select! {
            () = sleep_until_some(retry_at) => true,
            item = seat.feed.recv() => match item {
                Ok(Item::Notification(n)) => {
                    let sequence = i64::try_from(n.sequence).unwrap_or(i64::MAX);
                    if sequence <= cursor {
                        continue;
                    }
                    if sequence == cursor + 1 {
                        if let Err(end) = send(tx, Event::Notification((*n).clone()), &options).await {
                            return end;
                        }
                        cursor = sequence;
                        last_sent = tokio::time::Instant::now();
                        continue;
                    }
                    true
                }
                Ok(Item::Position(position)) => position > cursor,
                // Fell behind the feed's backlog: the outbox has it all.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return End::Gone,
            },
            () = tokio::time::sleep_until(heartbeat_at) => {
                let latest = u64::try_from(cursor).unwrap_or_default();
                if let Err(end) = send(tx, Event::Heartbeat(Heartbeat { latest_sequence: latest }), &options).await {
                    return end;
                }
                last_sent = tokio::time::Instant::now();
                false
            }
            () = tx.closed() => return End::Gone,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return End::Error(RegistryError::ShuttingDown);
                }
                false
            }
        };
        if behind {
            let before = cursor;
            cursor = match catch_up(db, ods_code, cursor, tx, &options).await {
                Ok(cursor) => {
                    retry_at = None;
                    cursor
                }
                // The database blinked: stay connected and try again after a poll interval.
                Err(End::Error(RegistryError::Unavailable)) => {
                    retry_at = Some(tokio::time::Instant::now() + options.poll_interval);
                    cursor
                }
                Err(end) => return end,
            };
            if cursor != before {
                last_sent = tokio::time::Instant::now();
            }
        }
    }
}

/// Sleeps until `at`, or forever without one (a `select!` branch that is off).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
