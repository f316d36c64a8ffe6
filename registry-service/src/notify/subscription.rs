//! A council's live notification stream: replay everything after the cursor from the outbox,
//! then follow new notifications as wake-ups arrive (or, failing those, by polling). Delivery is
//! at least once and in sequence order. Memory per subscriber is bounded by a small send buffer:
//! a subscriber that stops reading is cut off with a clean error telling it to resume from its
//! last acknowledged sequence.

use std::time::Duration;

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::{
    Heartbeat, SubscribeNotificationsResponse, subscribe_notifications_response::Event,
};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use crate::db::{Database, outbox};
use crate::error::RegistryError;
use crate::notify::Notifier;

/// Notifications read from the outbox per query.
const PAGE: i64 = 256;

/// Subscriber settings.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionOptions {
    /// Messages buffered per subscriber before sending waits.
    pub buffer: usize,
    /// How long a send may wait for a subscriber that does not read before it is cut off.
    pub send_timeout: Duration,
    /// Polling interval when no wake-up arrives (the fallback for lost wake-ups).
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

/// Starts streaming council `ods_code`'s notifications after `cursor`.
pub(crate) fn start(
    db: Database,
    notifier: &Notifier,
    shutdown: watch::Receiver<bool>,
    options: SubscriptionOptions,
    ods_code: OdsCode,
    cursor: i64,
) -> mpsc::Receiver<Result<SubscribeNotificationsResponse, Status>> {
    // One slot more than the buffer: notifications never take the last one, so the status
    // that ends a stalled subscription always fits.
    let (tx, rx) = mpsc::channel(options.buffer.max(1) + 1);
    // Subscribe to wake-ups before the first read, so a commit between the read and the wait
    // still wakes us.
    let wake = notifier.subscribe();
    tokio::spawn(async move {
        let ended = deliver(&db, wake, shutdown, options, &ods_code, cursor, &tx).await;
        if let End::Error(status) = ended {
            // Best effort: the subscriber may already be gone.
            let _ = tx.try_send(Err(status.into()));
        }
        tracing::info!(la = %ods_code, "subscriber disconnected");
    });
    rx
}

async fn send(tx: &Outgoing, event: Event, options: &SubscriptionOptions) -> Result<(), End> {
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

async fn deliver(
    db: &Database,
    mut wake: broadcast::Receiver<OdsCode>,
    mut shutdown: watch::Receiver<bool>,
    options: SubscriptionOptions,
    ods_code: &OdsCode,
    mut cursor: i64,
    tx: &Outgoing,
) -> End {
    let mut last_sent = tokio::time::Instant::now();
    loop {
        // Replay (or catch up) from the outbox, a page at a time.
        let ods = ods_code.clone();
        let page = match db
            .run(move |conn| outbox::list(conn, &ods, cursor, PAGE))
            .await
        {
            Ok(page) => page,
            Err(error) => return End::Error(error),
        };
        let full_page = i64::try_from(page.len()).is_ok_and(|n| n == PAGE);
        for (sequence, notification) in page {
            // The cursor passes undecodable rows too (reported where read): no trap, no re-read.
            cursor = sequence;
            let Some(notification) = notification else {
                continue;
            };
            if let Err(end) = send(tx, Event::Notification(notification), &options).await {
                return end;
            }
            last_sent = tokio::time::Instant::now();
        }
        if full_page {
            continue;
        }

        // Wait for a wake-up for this council, the poll interval, a heartbeat or shutdown.
        let heartbeat_at = last_sent + options.heartbeat_interval;
        let poll_at = tokio::time::Instant::now() + options.poll_interval;
        loop {
            tokio::select! {
                woken = wake.recv() => match woken {
                    Ok(code) if code == *ods_code => break,
                    Ok(_) => {}
                    // Missed some wake-ups: just read the outbox again.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return End::Gone,
                },
                () = tokio::time::sleep_until(poll_at) => break,
                () = tokio::time::sleep_until(heartbeat_at) => {
                    let latest = u64::try_from(cursor).unwrap_or_default();
                    if let Err(end) = send(tx, Event::Heartbeat(Heartbeat { latest_sequence: latest }), &options).await {
                        return end;
                    }
                    last_sent = tokio::time::Instant::now();
                    break;
                }
                () = tx.closed() => return End::Gone,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return End::Error(RegistryError::ShuttingDown);
                    }
                }
            }
        }
    }
}
