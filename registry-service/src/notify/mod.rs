//! Council notifications in motion: the `Notifier` owns both halves of a notifying write — the
//! transaction queues into the outbox (`db::outbox::Outbox`, which also sends PostgreSQL's
//! NOTIFY on commit), and once it has committed the Notifier wakes this replica's subscribers.
//! Other replicas hear the NOTIFY through `pg_listener`; subscribers also poll, so a lost
//! wake-up only delays, never loses. This is where the notification transport is switched.
//!
//! A wake-up goes to the named council's feed alone (one `Notify` per council): a commit for one
//! council costs nothing to the feeds of the others, however many councils are listening.

pub(crate) mod backlog;
pub(crate) mod feeds;
mod pg_listener;
pub(crate) mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cpis_core::ods::OdsCode;
use tokio::sync::Notify;

use crate::db::{Database, DatabaseUrl, DbConnection, outbox::Outbox};
use crate::error::RegistryError;

pub(crate) use pg_listener::ListenerGuard;

/// Wake-ups by council, each to that council's feed on this replica.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notifier {
    wakeups: Wakeups,
}

/// One wake-up signal per council that has (or had) a feed here. Entries are kept once made:
/// they are a few bytes each and their keys are councils that authenticated to subscribe, so the
/// map is bounded by the number of councils; keeping them means a feed that ends and restarts
/// never misses a signal sent in between.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wakeups {
    councils: Arc<RwLock<HashMap<OdsCode, Arc<Notify>>>>,
}

impl Wakeups {
    /// Wakes council `ods_code`'s feed, if this replica has one. A feed that is busy reading
    /// keeps the signal (`Notify` stores one permit) and reads again when it is done.
    pub fn wake(&self, ods_code: &OdsCode) {
        let councils = self
            .councils
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(notify) = councils.get(ods_code) {
            notify.notify_one();
        }
    }

    /// The signal council `ods_code`'s feed waits on.
    pub fn signal(&self, ods_code: &OdsCode) -> Arc<Notify> {
        let mut councils = self
            .councils
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        councils.entry(ods_code.clone()).or_default().clone()
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
            self.wakeups.wake(ods_code);
        }
        Ok((value, queued.len()))
    }

    /// The signal that wakes council `ods_code`'s feed.
    pub fn signal(&self, ods_code: &OdsCode) -> Arc<Notify> {
        self.wakeups.signal(ods_code)
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
