//! Connection timeouts hyper's HTTP/2 server does not have: a connection that has not sent the
//! HTTP/2 preface within the handshake timeout is closed, and so is one that has carried no call
//! for the idle timeout. Both act on the accepted socket (`Guarded`): a read fails with
//! `TimedOut` and hyper drops the connection. Calls are counted per connection by a layer
//! (`CallCounting`) from the moment a call arrives until its answer's body is finished, so a
//! long notification stream keeps its connection.
//!
//! With TLS (`crate::tls`), each accepted socket is handshaken here, concurrently with the
//! others and within the same handshake timeout (TLS and HTTP/2 preface together); the
//! connection's peer certificate and its identities then ride in [`ConnectionInfo`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use http_body::{Body, Frame, SizeHint};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client connection preface ("PRI * HTTP/2.0…"), in bytes.
const PREFACE_LEN: usize = 24;

/// How long a connection must have been quiet (no bytes at all) before an idle close: a call
/// whose first frames were just read is not yet counted, so it must not be cut off.
const QUIET: Duration = Duration::from_secs(1);

/// The calls of one connection: how many are open, and when the last one opened or finished.
#[derive(Debug)]
pub struct Calls {
    open: AtomicUsize,
    last_change: Mutex<Instant>,
}

impl Calls {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        let mut last = self.last_change.lock().unwrap_or_else(|p| p.into_inner());
        *last = Instant::now();
    }

    fn last_change(&self) -> Instant {
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        CallGuard(Arc::clone(self))
    }

    fn any_open(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }
}

/// One open call; dropped when its answer is finished (or abandoned).
#[derive(Debug)]
struct CallGuard(Arc<Calls>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// The certificate a TLS client presented (verified against the listener's client CA).
#[derive(Debug)]
pub struct PeerCertificate {
    /// The chain as presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's identities: SAN URIs and DNS names.
    pub identities: Vec<crate::tls::Identity>,
}

/// What handlers find in a request's extensions about its connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate, on a TLS listener that asks for one.
    pub peer_certificate: Option<Arc<PeerCertificate>>,
    calls: Arc<Calls>,
}

impl ConnectionInfo {
    /// The identities of the client's certificate (none without one).
    pub fn peer_identities(&self) -> &[crate::tls::Identity] {
        self.peer_certificate
            .as_deref()
            .map_or(&[], |peer| peer.identities.as_slice())
    }
}

/// The byte stream of an accepted connection: the socket itself, or TLS over it.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Forwards an I/O call to whichever stream the transport holds.
macro_rules! forward {
    ($self:expr, $io:ident => $call:expr) => {
        match $self {
            Transport::Plain($io) => $call,
            Transport::Tls($io) => $call,
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        forward!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        forward!(self, io => io.is_write_vectored())
    }
}

/// An accepted connection with handshake and idle timeouts.
#[derive(Debug)]
pub struct Guarded {
    io: Transport,
    info: ConnectionInfo,
    calls: Arc<Calls>,
    /// Bytes read so far, counted up to the preface's length.
    received: usize,
    idle: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Guarded {
    /// `deadline`: when the handshake (TLS and HTTP/2 preface) must be over, counted from the
    /// accept.
    fn new(io: Transport, deadline: Instant, idle: Duration) -> Self {
        let calls = Arc::new(Calls::new());
        let (remote, tls, peer_certificate) = match &io {
            Transport::Plain(tcp) => (tcp.connect_info().remote_addr(), false, None),
            Transport::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                let info: TcpConnectInfo = tcp.connect_info();
                let peer = session.peer_certificates().and_then(|chain| {
                    let leaf = chain.first()?;
                    Some(Arc::new(PeerCertificate {
                        identities: crate::tls::certificate_identities(leaf),
                        chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
                    }))
                });
                (info.remote_addr(), true, peer)
            }
        };
        Self {
            io,
            info: ConnectionInfo {
                remote,
                tls,
                peer_certificate,
                calls: Arc::clone(&calls),
            },
            calls,
            received: 0,
            idle,
            last_read: Instant::now(),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// When the connection is due to close unless something happens first; `None`: now.
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.received < PREFACE_LEN {
            // The handshake deadline never moves: trickling bytes does not buy time.
            let deadline = self.timer.deadline();
            return (now < deadline).then_some(deadline);
        }
        if self.calls.any_open() {
            return Some(now + self.idle);
        }
        let due = (self.calls.last_change() + self.idle).max(self.last_read + QUIET);
        (now < due).then_some(due)
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.last_read = Instant::now();
                    if this.received < PREFACE_LEN {
                        this.received += read;
                        if this.received >= PREFACE_LEN {
                            this.timer.as_mut().reset(this.last_read + this.idle);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Nothing to read: check the deadline, and wake up for it.
                while this.timer.as_mut().poll(cx).is_ready() {
                    match this.due(Instant::now()) {
                        Some(next) => this.timer.as_mut().reset(next),
                        None => {
                            let why = if this.received < PREFACE_LEN {
                                "no HTTP/2 preface within the handshake timeout"
                            } else {
                                "no call within the idle timeout"
                            };
                            tracing::debug!(why, "closing connection");
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                        }
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Wraps each accepted connection of `incoming` with the timeouts, after a TLS handshake when
/// `tls` is given. TLS handshakes run off the accept loop, bounded by `limits`
/// (`crate::handshake`); one that fails or outlasts the handshake timeout drops its connection
/// and never reaches the server.
pub fn guard<I>(
    incoming: I,
    handshake: Duration,
    idle: Duration,
    tls: Option<TlsAcceptor>,
    limits: crate::handshake::HandshakeLimits,
) -> impl Stream<Item = io::Result<Guarded>>
where
    I: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    match tls {
        None => incoming
            .map(move |accepted| {
                accepted.map(|tcp| {
                    Guarded::new(Transport::Plain(tcp), Instant::now() + handshake, idle)
                })
            })
            .left_stream(),
        Some(acceptor) => crate::handshake::handshakes(incoming, acceptor, handshake, limits)
            .map(move |finished| {
                finished
                    .map(|(stream, deadline)| Guarded::new(Transport::Tls(stream), deadline, idle))
            })
            .right_stream(),
    }
}

/// The layer counting each connection's open calls (see the module).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallCountingLayer;

impl<S> tower::Layer<S> for CallCountingLayer {
    type Service = CallCounting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallCounting { inner }
    }
}

/// The service [`CallCountingLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct CallCounting<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for CallCounting<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<R>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.calls.open());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|inner| Counted {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// An answer's body that keeps its call counted until it is finished or dropped.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    _guard: Option<CallGuard>,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
