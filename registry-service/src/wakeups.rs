//! Live wake-ups for notification subscribers. A commit that queues notifications wakes this
//! replica's subscribers at once; on PostgreSQL it also sends `NOTIFY cpis_notifications` inside
//! the same transaction (delivered only on commit), which a listener thread on every replica
//! turns into local wake-ups. Subscribers also poll, so a lost wake-up only delays, never loses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::broadcast;

use crate::db::DbConnection;
use crate::error::RegistryError;

/// The PostgreSQL channel replicas listen on; the payload is the council's ODS code.
pub const CHANNEL: &str = "cpis_notifications";

/// How often the listener thread checks its connection for NOTIFY messages.
const LISTEN_POLL: Duration = Duration::from_millis(5);

/// Wake-ups by council ODS code, fanned out to this replica's subscribers.
#[derive(Clone, Debug)]
pub struct Wakeups {
    tx: broadcast::Sender<String>,
}

impl Default for Wakeups {
    fn default() -> Self {
        // A lagging receiver only re-reads the outbox; the capacity bounds memory, not delivery.
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }
}

impl Wakeups {
    /// Wakes subscribers of council `ods_code` on this replica.
    pub fn wake(&self, ods_code: &str) {
        // No subscriber is not an error.
        let _ = self.tx.send(ods_code.to_owned());
    }

    /// A receiver of future wake-ups.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

/// Inside a transaction: tell other replicas, on commit, that `ods_code` has new notifications.
/// Does nothing on SQLite (one node).
pub fn notify_in_transaction(conn: &mut DbConnection, ods_code: &str) -> Result<(), RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(ods_code)
            .execute(pg)?;
    }
    Ok(())
}

/// Stops the listener thread when dropped.
#[derive(Debug)]
pub struct ListenerGuard {
    stop: Arc<AtomicBool>,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a thread that LISTENs on PostgreSQL and forwards each NOTIFY to `wakeups`,
/// reconnecting with backoff when the connection drops.
pub fn spawn_pg_listener(url: SecretString, wakeups: Wakeups) -> ListenerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("cpis-pg-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            while !flag.load(Ordering::SeqCst) {
                match listen(&url, &wakeups, &flag) {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(error = %error, "notification listener lost its connection; subscribers fall back to polling");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the notification listener; subscribers fall back to polling");
    }
    ListenerGuard { stop }
}

fn listen(
    url: &SecretString,
    wakeups: &Wakeups,
    stop: &AtomicBool,
) -> Result<(), diesel::result::Error> {
    let mut conn = PgConnection::establish(url.expose_secret())
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    tracing::info!("listening for notification wake-ups");
    while !stop.load(Ordering::SeqCst) {
        for notification in conn.notifications_iter() {
            let notification = notification?;
            wakeups.wake(&notification.payload);
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(())
}
