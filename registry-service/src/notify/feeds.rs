//! One live feed per council, shared by all its subscribers: a feed task reads the council's
//! outbox once per wake-up (or per poll, the fallback for lost wake-ups) and fans what it finds
//! out to every subscriber of that council. A thousand idle subscribers therefore cost one poll
//! per council per interval, not a thousand. The number of subscribers is capped per council and
//! per server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::Notification;
use tokio::sync::broadcast;

use crate::db::{Database, outbox};
use crate::error::RegistryError;
use crate::notify::Notifier;

/// Notifications read from the outbox per query, by a feed or a replaying subscriber: small, so
/// a thousand subscribers replaying at once hold little memory.
pub(crate) const PAGE: i64 = 64;

/// Notifications a feed keeps for subscribers that are a little behind; one further behind
/// reads the outbox itself (see `subscription`).
const FEED_BACKLOG: usize = 256;

/// What a feed sends its subscribers.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// A notification, in sequence order.
    Notification(Arc<Notification>),
    /// Everything up to this sequence has been read: a subscriber behind it catches up from the
    /// outbox (this also covers notifications committed just before the feed started).
    Position(i64),
}

/// Limits on live subscriptions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most subscribers of one council.
    pub per_council: usize,
    /// Most subscribers of this server.
    pub per_server: usize,
}

#[derive(Debug, Default)]
struct Registry {
    feeds: HashMap<OdsCode, broadcast::Sender<Item>>,
    subscribers: HashMap<OdsCode, usize>,
    total: usize,
}

/// Every council's feed on this replica.
#[derive(Clone, Debug)]
pub(crate) struct Feeds {
    registry: Arc<Mutex<Registry>>,
    db: Database,
    notifier: Notifier,
    poll_interval: Duration,
    limits: Limits,
}

/// A subscriber's place: its feed, and its count held until it drops.
#[derive(Debug)]
pub(crate) struct Seat {
    /// The council's notifications as the feed reads them.
    pub feed: broadcast::Receiver<Item>,
    registry: Arc<Mutex<Registry>>,
    ods_code: OdsCode,
}

impl Drop for Seat {
    fn drop(&mut self) {
        subscribers_moved(&self.ods_code, -1);
        let mut registry = lock(&self.registry);
        registry.total = registry.total.saturating_sub(1);
        if let Some(count) = registry.subscribers.get_mut(&self.ods_code) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                registry.subscribers.remove(&self.ods_code);
            }
        }
    }
}

/// `cpis_notification_subscribers{council}` up or down by `change`.
fn subscribers_moved(ods_code: &OdsCode, change: i64) {
    cpis_core::metrics::metrics().notification_subscribers.add(
        change,
        &[cpis_core::metrics::KeyValue::new(
            "council",
            ods_code.to_string(),
        )],
    );
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A panic elsewhere while holding it leaves counts that are still counts.
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Feeds {
    /// Feeds over `db`, woken by `notifier`, polling every `poll_interval`.
    pub fn new(db: Database, notifier: Notifier, poll_interval: Duration, limits: Limits) -> Self {
        Self {
            registry: Arc::default(),
            db,
            notifier,
            poll_interval,
            limits,
        }
    }

    /// A seat at council `ods_code`'s feed, starting the feed if it is not running; refused
    /// (RESOURCE_EXHAUSTED) beyond the limits.
    pub fn join(&self, ods_code: &OdsCode) -> Result<Seat, RegistryError> {
        let mut registry = lock(&self.registry);
        let council = registry.subscribers.get(ods_code).copied().unwrap_or(0);
        if registry.total >= self.limits.per_server || council >= self.limits.per_council {
            return Err(RegistryError::TooManySubscribers);
        }
        let feed = match registry.feeds.get(ods_code) {
            Some(tx) if tx.receiver_count() > 0 => tx.subscribe(),
            _ => {
                let (tx, rx) = broadcast::channel(FEED_BACKLOG);
                registry.feeds.insert(ods_code.clone(), tx.clone());
                tokio::spawn(run_feed(
                    self.db.clone(),
                    self.notifier.clone(),
                    self.poll_interval,
                    ods_code.clone(),
                    tx,
                ));
                rx
            }
        };
        registry.total += 1;
        *registry.subscribers.entry(ods_code.clone()).or_insert(0) += 1;
        subscribers_moved(ods_code, 1);
        Ok(Seat {
            feed,
            registry: self.registry.clone(),
            ods_code: ods_code.clone(),
        })
    }
}

/// A council's feed: from the newest sequence at its start, reads what commits after it and
/// sends it to the council's subscribers, until none is left.
async fn run_feed(
    db: Database,
    notifier: Notifier,
    poll_interval: Duration,
    ods_code: OdsCode,
    tx: broadcast::Sender<Item>,
) {
    // Take the signal before the first read, so a commit in between still wakes us (a signal
    // sent while nobody waits is kept as a permit).
    let wake = notifier.signal(&ods_code);
    let mut cursor = None;
    while tx.receiver_count() > 0 {
        let ods = ods_code.clone();
        let read = db
            .run(move |conn| match cursor {
                None => outbox::cursors(conn, &ods).map(|(latest, _)| (latest, Vec::new())),
                Some(after) => outbox::list(conn, &ods, after, PAGE).map(|page| (after, page)),
            })
            .await;
        let mut full_page = false;
        match read {
            Ok((start, page)) => {
                full_page = i64::try_from(page.len()).is_ok_and(|n| n == PAGE);
                let mut position = start;
                for (sequence, notification) in page {
                    position = sequence;
                    if let Some(notification) = notification {
                        // No receiver is not an error: the loop ends at the next check.
                        let _ = tx.send(Item::Notification(Arc::new(notification)));
                    }
                }
                // Announced only when it moves: an idle council's poll then wakes none of its
                // subscribers (a subscriber that joins later has read the outbox itself).
                if cursor != Some(position) {
                    let _ = tx.send(Item::Position(position));
                }
                cursor = Some(position);
            }
            // The database is away: subscribers keep waiting; the next poll tries again.
            Err(error) => tracing::debug!(la = %ods_code, %error, "feed read failed"),
        }
        if full_page {
            continue;
        }
        // Woken by a commit for this council, or the poll that covers a lost wake-up.
        let _ = tokio::time::timeout(poll_interval, wake.notified()).await;
    }
    // A successor feed for this council may have started while this one waited, and the last
    // wake-up may have been this one's: pass it on (at worst one needless read).
    wake.notify_one();
}
