//! Council notifications in motion: the `Notifier` owns both halves of a notifying write — the
//! transaction queues into the outbox (`db::outbox::Outbox`, which also sends PostgreSQL's
//! NOTIFY on commit), and once it has committed the Notifier wakes this replica's subscribers.
//! Other replicas hear the NOTIFY through `pg_listener`; subscribers also poll, so a lost
//! wake-up only delays, never loses. This is where the notification transport is switched.

pub(crate) mod feeds;
mod pg_listener;
pub(crate) mod subscription;

use cpis_core::ods::OdsCode;
use tokio::sync::broadcast;

use crate::db::{Database, DatabaseUrl, DbConnection, outbox::Outbox};
use crate::error::RegistryError;

pub(crate) use pg_listener::ListenerGuard;

/// Wake-ups by council, fanned out to this replica's subscribers.
#[derive(Clone, Debug)]
pub(crate) struct Notifier {
    wakeups: broadcast::Sender<OdsCode>,
}

impl Default for Notifier {
    fn default() -> Self {
        // A lagging receiver only re-reads the outbox; the capacity bounds memory, not delivery.
        let (wakeups, _) = broadcast::channel(1024);
        Self { wakeups }
    }
}

impl Notifier {
    /// Runs `work` (which opens its own transaction) with an outbox, and once it has returned
    /// (committed) wakes the subscribers of every council it notified. Returns `work`'s value
    /// and how many notifications were queued.
    pub async fn write<T, F>(
        &self,
        db: &Database,
        now: i64,
        work: F,
    ) -> Result<(T, usize), RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &mut Outbox) -> Result<T, RegistryError> + Send + 'static,
    {
        let (value, queued) = db
            .run(move |conn| {
                let mut outbox = Outbox::new(now);
                let value = work(conn, &mut outbox)?;
                Ok((value, outbox.into_queued()))
            })
            .await?;
        for (ods_code, _) in &queued {
            // No subscriber is not an error.
            let _ = self.wakeups.send(ods_code.clone());
        }
        Ok((value, queued.len()))
    }

    /// A receiver of future wake-ups.
    pub fn subscribe(&self) -> broadcast::Receiver<OdsCode> {
        self.wakeups.subscribe()
    }

    /// Hears other replicas' commits until the guard drops: on PostgreSQL through LISTEN/NOTIFY;
    /// SQLite serves one node, whose own commits already wake its subscribers.
    pub fn listen(&self, url: &DatabaseUrl) -> Option<ListenerGuard> {
        match url {
            DatabaseUrl::Postgres(url) => {
                Some(pg_listener::spawn(url.clone(), self.wakeups.clone()))
            }
            DatabaseUrl::Sqlite(_) => None,
        }
    }
}
