//! TLS handshakes off the accept loop, bounded so that silent connections cannot stop a listener.
//!
//! The accept loop never waits for a handshake: each accepted socket is handshaken in its own
//! task, and the listener goes straight back to accepting. What handshakes may hold is bounded
//! twice: one source address holds at most `per_source` handshakes in progress, and the whole
//! listener at most `total`. A newcomer beyond either bound evicts the *oldest* handshake in
//! progress (of that source, or of all): a real client finishes its handshake in milliseconds,
//! so the oldest is almost always a connection that says nothing. A flood of silent connections
//! therefore cycles through its own slots, and everybody else's handshake still completes; the
//! handshake timeout (`crate::connection`) still closes whatever is slow but not evicted.
//!
//! Failed handshakes and evictions are logged on the `security` target, at most a few lines a
//! second (a flood of bad handshakes must not become a flood of log lines).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::log_budget::SharedBudget;

/// Bounds on TLS handshakes in progress (see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Most handshakes in progress on one listener.
    pub total: usize,
    /// Most handshakes in progress from one source address.
    pub per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            total: 1024,
            per_source: 64,
        }
    }
}

/// Connections accepted per poll of the stream at most (see `poll_next`).
const ACCEPTS_PER_POLL: usize = 32;

/// The source a handshake is counted against: the address, or for IPv6 its /64 (one host
/// commonly holds a whole /64, so counting single addresses would let it take every slot).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// A finished handshake: the TLS stream, and the deadline its HTTP/2 preface must still meet.
pub(crate) type Handshaken = (Box<TlsStream<TcpStream>>, Instant);

/// Handshakes `incoming`'s connections with `acceptor` under `limits`, each within `timeout`
/// of its accept; yields the connections whose handshake succeeded, in the order they finish.
/// Accept errors pass through. Accepting happens as the server polls the stream, and the
/// listener lives in it: dropping the stream (the server stopping) closes the listener at once,
/// so the port can be bound again, and aborts the handshakes in progress.
pub(crate) fn handshakes<I>(
    incoming: I,
    acceptor: TlsAcceptor,
    timeout: Duration,
    limits: HandshakeLimits,
) -> Handshakes<I>
where
    I: Stream<Item = io::Result<TcpStream>>,
{
    // The server takes each finished handshake at once; a small buffer is plenty.
    let (tx, rx) = mpsc::channel(64);
    Handshakes {
        incoming: Box::pin(incoming),
        incoming_done: false,
        acceptor,
        timeout,
        pending: Arc::new(Mutex::new(Pending::new(limits))),
        logs: Arc::new(SharedBudget::default()),
        tx,
        rx,
    }
}

/// The stream of finished handshakes (see [`handshakes`]).
pub(crate) struct Handshakes<I> {
    incoming: Pin<Box<I>>,
    incoming_done: bool,
    acceptor: TlsAcceptor,
    timeout: Duration,
    pending: Arc<Mutex<Pending>>,
    logs: Arc<SharedBudget>,
    tx: mpsc::Sender<Handshaken>,
    rx: mpsc::Receiver<Handshaken>,
}

impl<I> Handshakes<I> {
    /// Starts handshaking an accepted connection in a task of its own.
    fn start(&self, tcp: TcpStream) {
        let deadline = Instant::now() + self.timeout;
        let remote = tcp.peer_addr().ok();
        // No await between admitting and recording the task: an eviction always finds the
        // handle of the task it evicts.
        let (slot, evicted) = Slot::admit(&self.pending, remote.map(|a| source_of(a.ip())));
        if evicted > 0 {
            self.logs.allow(|suppressed| {
                tracing::warn!(
                    target: "security",
                    evicted,
                    suppressed,
                    "TLS handshakes in progress at their limit: the oldest closed (silent connections?)"
                );
            });
        }
        let id = slot.id;
        let task = tokio::spawn(handshake(
            self.acceptor.clone(),
            tcp,
            remote,
            deadline,
            slot,
            self.logs.clone(),
            self.tx.clone(),
        ));
        lock(&self.pending).record(id, task.abort_handle());
    }
}

impl<I> Stream for Handshakes<I>
where
    I: Stream<Item = io::Result<TcpStream>>,
{
    type Item = io::Result<Handshaken>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Finished handshakes first: under a flood of new connections, accepting must not
        // spend the task's whole budget and leave the finished ones waiting.
        if let Poll::Ready(Some(finished)) = self.rx.poll_recv(cx) {
            return Poll::Ready(Some(Ok(finished)));
        }
        // Then accept what is waiting, a bounded number per poll (never held up by
        // handshakes in progress); more waiting wakes this task again at once.
        for _ in 0..ACCEPTS_PER_POLL {
            if self.incoming_done {
                break;
            }
            match self.incoming.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(tcp))) => self.start(tcp),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => self.incoming_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.incoming_done {
            // The listener has ended: done once the last handshake has.
            return if lock(&self.pending).is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        // The accept budget is spent with connections perhaps still waiting: come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I> Drop for Handshakes<I> {
    fn drop(&mut self) {
        // The server has stopped: nobody will take these connections.
        lock(&self.pending).abort_all();
    }
}

/// One handshake, within `deadline`; a success goes to the server, a failure is logged (within
/// the budget) and its connection dropped.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: Option<SocketAddr>,
    deadline: Instant,
    slot: Slot,
    logs: Arc<SharedBudget>,
    tx: mpsc::Sender<Handshaken>,
) {
    let outcome = tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await;
    // Finished (either way): the slot is free before the server takes the connection.
    drop(slot);
    match outcome {
        Ok(Ok(stream)) => {
            // A stopped server no longer wants it: dropping it closes the connection.
            let _ = tx.send((Box::new(stream), deadline)).await;
        }
        // A probe that connects and closes says nothing worth a line.
        Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::debug!(remote = ?remote, "closed before a TLS handshake");
        }
        Ok(Err(error)) => {
            // Often a client that does not trust us or that we do not trust (no, unknown or
            // expired client certificate).
            logs.allow(|suppressed| {
                tracing::info!(
                    target: "security",
                    remote = ?remote,
                    %error,
                    suppressed,
                    "TLS handshake failed"
                );
            });
        }
        Err(_) => {
            tracing::debug!(remote = ?remote, "no TLS handshake within the handshake timeout");
        }
    }
}

/// A handshake in progress, by admission order (oldest first).
#[derive(Debug)]
struct Entry {
    source: Option<IpAddr>,
    task: Option<AbortHandle>,
}

/// The handshakes in progress on one listener.
#[derive(Debug)]
struct Pending {
    limits: HandshakeLimits,
    next_id: u64,
    all: BTreeMap<u64, Entry>,
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Pending {
    fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            all: BTreeMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Makes room for one more from `source` (evicting as the module says) and admits it;
    /// returns its id and how many were evicted.
    fn admit(&mut self, source: Option<IpAddr>) -> (u64, usize) {
        let mut evicted = 0;
        if let Some(ip) = source {
            while self
                .by_source
                .get(&ip)
                .is_some_and(|ids| ids.len() >= self.limits.per_source.max(1))
            {
                let oldest = self.by_source.get(&ip).and_then(|ids| ids.first().copied());
                match oldest {
                    Some(id) => evicted += usize::from(self.evict(id)),
                    None => break,
                }
            }
        }
        while self.all.len() >= self.limits.total.max(1) {
            match self.all.keys().next().copied() {
                Some(id) => evicted += usize::from(self.evict(id)),
                None => break,
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.all.insert(id, Entry { source, task: None });
        if let Some(ip) = source {
            self.by_source.entry(ip).or_default().insert(id);
        }
        (id, evicted)
    }

    /// Records the task running handshake `id` (unless it has already finished).
    fn record(&mut self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.all.get_mut(&id) {
            entry.task = Some(task);
        }
    }

    /// Closes handshake `id`'s connection (its task is aborted, dropping the socket).
    fn evict(&mut self, id: u64) -> bool {
        match self.remove(id) {
            Some(entry) => {
                if let Some(task) = entry.task {
                    task.abort();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.all.remove(&id)?;
        if let Some(ip) = entry.source
            && let Some(ids) = self.by_source.get_mut(&ip)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&ip);
            }
        }
        Some(entry)
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Closes every handshake in progress.
    fn abort_all(&mut self) {
        for entry in std::mem::take(&mut self.all).into_values() {
            if let Some(task) = entry.task {
                task.abort();
            }
        }
        self.by_source.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.all.len()
    }
}

/// A handshake's place among those in progress; freed when dropped (finished or evicted).
struct Slot {
    pending: Arc<Mutex<Pending>>,
    id: u64,
}

impl Slot {
    fn admit(pending: &Arc<Mutex<Pending>>, source: Option<IpAddr>) -> (Self, usize) {
        let (id, evicted) = lock(pending).admit(source);
        let slot = Self {
            pending: pending.clone(),
            id,
        };
        (slot, evicted)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.pending).remove(self.id);
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding it; if something did, the bookkeeping is still usable.
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn one_source_over_its_limit_evicts_its_own_oldest() {
        let mut pending = Pending::new(HandshakeLimits {
            total: 100,
            per_source: 2,
        });
        let (a, _) = pending.admit(ip(1));
        let (other, _) = pending.admit(ip(2));
        let (b, _) = pending.admit(ip(1));
        let (_, evicted) = pending.admit(ip(1));
        assert_eq!(evicted, 1);
        assert!(!pending.all.contains_key(&a), "the source's oldest goes");
        assert!(pending.all.contains_key(&b));
        assert!(
            pending.all.contains_key(&other),
            "another source is untouched"
        );
        assert_eq!(pending.len(), 3);
    }

    #[test]
    fn the_listener_over_its_limit_evicts_the_oldest_of_all() {
        let mut pending = Pending::new(HandshakeLimits {
            total: 3,
            per_source: 10,
        });
        let ids: Vec<u64> = (1..=3).map(|i| pending.admit(ip(i)).0).collect();
        let (_, evicted) = pending.admit(ip(9));
        assert_eq!(evicted, 1);
        assert!(!pending.all.contains_key(&ids[0]));
        assert_eq!(pending.len(), 3);
        assert!(!pending.by_source.contains_key(&IpAddr::from([10, 0, 0, 1])));
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_of(v4), v4);
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let mut pending = Pending::new(HandshakeLimits::default());
        let (id, _) = pending.admit(ip(1));
        assert!(pending.remove(id).is_some());
        assert!(pending.remove(id).is_none(), "removal is idempotent");
        assert_eq!(pending.len(), 0);
        assert!(pending.by_source.is_empty());
    }
}
