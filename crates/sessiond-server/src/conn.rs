//! Connections (docs/DESIGN.md §9.8): one accept loop and one HTTP/1.1 connection builder for
//! plain HTTP and TLS alike, with the timeouts and caps of `[server]`, so that no connection is
//! held open for free.
//!
//! Each connection has a [`ConnState`]: *waiting* for a request head since a time (its accept,
//! or the end of its last response), or *serving* a request.
//! - A waiting connection is closed when its head is late: `header_read_timeout` after the
//!   head's first byte (for the first request, after the accept, the TLS handshake included),
//!   or, when no byte came, `keep_alive_timeout` after the last response.
//! - A serving connection has no timeout (an event stream lives as long as it does), but its
//!   request body must arrive within `body_read_timeout` of the head: a late body is answered
//!   408 `request_timeout` and the connection is closed.
//! - At `max_connections` (lowered to fit the process's open-files limit), the connection that
//!   has been waiting longest is shed to admit the new one; when every connection is serving,
//!   the new one is closed unanswered. An address (an IPv6 /64) holds at most
//!   `max_connections_per_peer`; the next connection from it is closed unanswered. Peers in
//!   `sessions.trusted_proxies` are exempt from that cap (behind a proxy every client shares
//!   its address), not from the global one.
//!
//! The hot path takes no lock: a request moves its connection's state with relaxed atomic
//! stores, and the first byte of a head with one more. The table of connections is locked at
//! accept and close, and scanned only at the cap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use sessiond::SessionService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::{ServerLimits, TrustedProxy};
use crate::problem::ApiError;
use crate::tls::ClientCertificate;

/// File descriptors kept for everything but client connections (the listener, the database
/// pool and its files, Redis, JWK Set fetches, logs) when `max_connections` is fitted to the
/// open-files limit.
const RESERVED_FDS: u64 = 128;
/// The largest request head, and the per-connection read buffer (hyper's default is ~400 KiB,
/// which 10 000 stalled connections would multiply).
const MAX_BUF: usize = 64 * 1024;
/// How long to wait after a failed `accept` (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two warnings that a cap is reached.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// `waiting_since` of a serving connection; `head_since` while no head has begun.
const NONE: u64 = u64::MAX;

/// The limits in force.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    body: Duration,
    keep_alive: Duration,
    max: usize,
    /// 0: no per-peer cap.
    per_peer: u32,
}

/// Why a connection was closed by the server rather than by its client.
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    BodyTimeout,
    Shed,
    RefusedFull,
    RefusedPeer,
}

impl Closed {
    const ALL: [Closed; 6] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::BodyTimeout,
        Closed::Shed,
        Closed::RefusedFull,
        Closed::RefusedPeer,
    ];

    /// The metric label.
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::BodyTimeout => "body_timeout",
            Closed::Shed => "shed",
            Closed::RefusedFull => "refused_full",
            Closed::RefusedPeer => "refused_per_peer",
        }
    }
}

/// Connections closed by the server, by [`Closed`] reason.
#[derive(Debug, Default)]
struct Counts([AtomicU64; 6]);

impl Counts {
    fn add(&self, why: Closed) {
        if let Some(c) = self.0.get(why as usize) {
            c.fetch_add(1, Relaxed);
        }
    }
}

/// What `/metrics` shows of the connections.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Connections open now.
    pub(crate) open: usize,
    /// Connections closed by the server, by reason (the metric label).
    pub(crate) closed: Vec<(&'static str, u64)>,
}

/// The open connections and their limits. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connections(Arc<Shared>);

struct Shared {
    limits: Limits,
    trusted: Vec<TrustedProxy>,
    epoch: Instant,
    table: Mutex<Table>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the table: it can hold thousands of connections.
        f.debug_struct("Connections")
            .field("limits", &self.limits)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<ConnState>>,
    per_peer: HashMap<IpAddr, u32>,
    warned_full: Option<Instant>,
    warned_peer: Option<Instant>,
}

impl Table {
    /// Forgets a connection (closed, or shed); `None` when it already was.
    fn remove(&mut self, id: u64) -> Option<Arc<ConnState>> {
        let state = self.open.remove(&id)?;
        if let Some(key) = state.peer_key {
            if let Some(n) = self.per_peer.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_peer.remove(&key);
                }
            }
        }
        Some(state)
    }
}

/// Whether `last` is long enough ago to warn again (and if so, records now).
fn warn_due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// The process's soft limit on open files (Linux: `/proc/self/limits`); `None` when unknown or
/// unlimited.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// `max` lowered so that the connections and [`RESERVED_FDS`] fit in `limit` open files.
fn fit_to_open_files(max: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            max.min(room.max(1))
        }
        None => max,
    }
}

/// The per-peer key of an address (canonical: an IPv4-mapped IPv6 address is IPv4): the
/// address itself, or its /64 for IPv6 (one host or household holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(NONE - 1)
}

impl Connections {
    /// The connections of a server configured with `limits`, trusting `trusted` proxies.
    /// `max_connections` is lowered (with a warning) to fit the open-files limit.
    pub(crate) fn new(limits: &ServerLimits, trusted: &[TrustedProxy]) -> Self {
        let configured = usize::try_from(limits.max_connections).unwrap_or(usize::MAX);
        let open_files = open_files_limit();
        let max = fit_to_open_files(configured, open_files);
        if max < configured {
            tracing::warn!(
                configured,
                max_connections = max,
                open_files = open_files.unwrap_or(0),
                "server.max_connections lowered to fit the open-files limit ({RESERVED_FDS} \
                 descriptors kept for the database, logs and the listener); raise the limit \
                 (ulimit -n, systemd LimitNOFILE) to allow more"
            );
        }
        tracing::info!(
            max_connections = max,
            max_connections_per_peer = limits.max_connections_per_peer,
            header_read_timeout = ?limits.header_read_timeout,
            body_read_timeout = ?limits.body_read_timeout,
            keep_alive_timeout = ?limits.keep_alive_timeout,
            open_files = ?open_files,
            "connection limits"
        );
        Connections(Arc::new(Shared {
            limits: Limits {
                header: limits.header_read_timeout.0,
                body: limits.body_read_timeout.0,
                keep_alive: limits.keep_alive_timeout.0,
                max,
                per_peer: limits.max_connections_per_peer,
            },
            trusted: trusted.to_vec(),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            counts: Arc::new(Counts::default()),
        }))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; a poisoned table is still consistent.
        self.0.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `/metrics` shows.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let open = self.table().open.len();
        let closed = Closed::ALL
            .iter()
            .zip(&self.0.counts.0)
            .map(|(why, n)| (why.label(), n.load(Relaxed)))
            .collect();
        Snapshot { open, closed }
    }

    /// Admits a connection from `peer`, shedding the one waiting longest at the cap; refuses it
    /// when its address is at its cap, or when every connection is serving.
    fn admit(&self, peer: SocketAddr) -> Result<Slot, Closed> {
        let ip = peer.ip().to_canonical();
        let key = (!self.0.trusted.iter().any(|p| p.contains(ip))).then(|| peer_key(ip));
        let limits = self.0.limits;
        let mut table = self.table();
        if let Some(key) = key {
            let held = table.per_peer.get(&key).copied().unwrap_or(0);
            if limits.per_peer > 0 && held >= limits.per_peer {
                if warn_due(&mut table.warned_peer) {
                    tracing::warn!(peer = %ip, max_connections_per_peer = limits.per_peer, "an address holds server.max_connections_per_peer connections; refusing its next ones (logged at most once a minute)");
                }
                return Err(Closed::RefusedPeer);
            }
        }
        if table.open.len() >= limits.max {
            let warn = warn_due(&mut table.warned_full);
            // The connection waiting longest; ties go to the older connection.
            let victim = table
                .open
                .values()
                .filter_map(|c| c.waiting_since().map(|since| (since, c.id)))
                .min();
            match victim.and_then(|(_, id)| table.remove(id)) {
                Some(shed) => {
                    if warn {
                        tracing::warn!(max_connections = limits.max, "server.max_connections reached; shedding the connections waiting longest for a request (logged at most once a minute)");
                    }
                    shed.shed.notify_one();
                    self.0.counts.add(Closed::Shed);
                }
                None => {
                    if warn {
                        tracing::warn!(max_connections = limits.max, "server.max_connections reached and every connection is serving; refusing new ones (logged at most once a minute)");
                    }
                    return Err(Closed::RefusedFull);
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState::new(id, key, &self.0));
        table.open.insert(id, state.clone());
        if let Some(key) = key {
            *table.per_peer.entry(key).or_insert(0) += 1;
        }
        Ok(Slot {
            state,
            connections: self.clone(),
        })
    }
}

/// A connection's place in the table, given back when the connection ends.
#[derive(Debug)]
struct Slot {
    state: Arc<ConnState>,
    connections: Connections,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.table().remove(self.state.id);
    }
}

/// One connection's phase, written by its own task (the request and response wrappers, the
/// I/O wrapper) and read by the accept loop when it looks for a connection to shed. Times are
/// microseconds since the table's epoch.
#[derive(Debug)]
struct ConnState {
    id: u64,
    /// The per-peer key it counts against (`None`: a trusted proxy).
    peer_key: Option<IpAddr>,
    epoch: Instant,
    /// Since when it has waited for a request head; [`NONE`] while serving.
    waiting_since: AtomicU64,
    /// When the head being waited for began (first byte; for the first request, the accept);
    /// [`NONE`] when no byte of it came yet, or while serving.
    head_since: AtomicU64,
    /// Whether the current request's body missed `body_read_timeout`.
    body_timed_out: AtomicBool,
    /// Signalled when the connection is shed.
    shed: Notify,
    counts: Arc<Counts>,
}

/// When a waiting connection's head is late, and which timeout that is.
enum Check {
    /// Late: close.
    Expired(Closed),
    /// Look again then.
    At(tokio::time::Instant),
}

impl ConnState {
    fn new(id: u64, peer_key: Option<IpAddr>, shared: &Shared) -> Self {
        let now = micros(shared.epoch.elapsed());
        ConnState {
            id,
            peer_key,
            epoch: shared.epoch,
            waiting_since: AtomicU64::new(now),
            head_since: AtomicU64::new(now),
            body_timed_out: AtomicBool::new(false),
            shed: Notify::new(),
            counts: shared.counts.clone(),
        }
    }

    fn now(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    /// Since when it waits for a request head; `None` while serving.
    fn waiting_since(&self) -> Option<u64> {
        Some(self.waiting_since.load(Relaxed)).filter(|&t| t != NONE)
    }

    /// A request head was read: serving until its response ends.
    fn serving(&self) {
        self.head_since.store(NONE, Relaxed);
        self.waiting_since.store(NONE, Relaxed);
        self.body_timed_out.store(false, Relaxed);
    }

    /// The response ended: waiting for the next head.
    fn idle(&self) {
        self.head_since.store(NONE, Relaxed);
        self.waiting_since.store(self.now(), Relaxed);
    }

    /// Bytes came in: while waiting, the next head has begun.
    fn bytes_arrived(&self) {
        if self.head_since.load(Relaxed) == NONE && self.waiting_since.load(Relaxed) != NONE {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    /// Whether the head being waited for is late, or when to look again. The look is never
    /// later than a deadline, even one that a state change brings forward: a head that begins
    /// at `t` is late at `t + header`, and a wait that begins at `t` ends no sooner than
    /// `t + min(header, keep_alive)`.
    fn check(&self, limits: &Limits) -> Check {
        let now = self.now();
        let header = micros(limits.header);
        let next = match (self.waiting_since(), self.head_since.load(Relaxed)) {
            // Serving: no deadline.
            (None, _) => now.saturating_add(header.min(micros(limits.keep_alive))),
            (Some(waiting), NONE) => {
                let deadline = waiting.saturating_add(micros(limits.keep_alive));
                if deadline <= now {
                    return Check::Expired(Closed::IdleTimeout);
                }
                deadline.min(now.saturating_add(header))
            }
            (Some(_), head) => {
                let deadline = head.saturating_add(header);
                if deadline <= now {
                    return Check::Expired(Closed::HeaderTimeout);
                }
                deadline
            }
        };
        Check::At(tokio::time::Instant::from_std(
            self.epoch + Duration::from_micros(next),
        ))
    }
}

/// The socket, noting when bytes arrive (the first byte of a head starts its timeout).
#[derive(Debug)]
struct Watched {
    tcp: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A request body that must arrive by a deadline.
struct TimedBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    /// Armed the first time the body is not ready.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    state: Arc<ConnState>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive within server.body_read_timeout")]
    TimedOut,
    #[error("cannot read the request body")]
    Read(#[source] hyper::Error),
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.state.body_timed_out.load(Relaxed) {
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BodyError::Read))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.state.body_timed_out.store(true, Relaxed);
                this.state.counts.add(Closed::BodyTimeout);
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body; when hyper is done with it, the connection waits for its next request.
struct TrackedBody {
    inner: Body,
    state: Arc<ConnState>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.idle();
    }
}

/// The request's connection, for [`answer_body_timeouts`].
#[derive(Clone, Debug)]
struct ServingConnection(Arc<ConnState>);

/// Middleware (inside the metrics layer, so they count the 408): a request whose body missed
/// `server.body_read_timeout` is answered 408 `request_timeout` with `Connection: close`,
/// whatever the handler made of the failed read.
pub(crate) async fn answer_body_timeouts(request: Request, next: Next) -> Response {
    let conn = request.extensions().get::<ServingConnection>().cloned();
    let response = next.run(request).await;
    match conn {
        Some(ServingConnection(state)) if state.body_timed_out.load(Relaxed) => {
            ApiError::RequestTimeout.into_response()
        }
        _ => response,
    }
}

/// The router as one connection's hyper service: marks the connection serving, bounds the
/// request body, adds the peer address and client certificate, and marks the connection
/// waiting again when the response body is done.
struct ConnService {
    router: Router,
    state: Arc<ConnState>,
    peer: SocketAddr,
    client: Option<ClientCertificate>,
    body_timeout: Duration,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<axum::http::Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<axum::http::Request<Incoming>> for ConnService {
    type Response = axum::http::Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: axum::http::Request<Incoming>) -> Self::Future {
        self.state.serving();
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let mut request = request.map(|inner| TimedBody {
            inner,
            deadline,
            timer: None,
            state: self.state.clone(),
        });
        let extensions = request.extensions_mut();
        // As `into_make_service_with_connect_info` would: the browser routes' client IP.
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(ServingConnection(self.state.clone()));
        if let Some(c) = self.client {
            extensions.insert(c);
        }
        let router = self.router.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|inner| TrackedBody { inner, state }))
        })
    }
}

/// What every connection task shares.
struct ConnContext {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    tls: Option<TlsAcceptor>,
    service: SessionService,
    connections: Connections,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stops
/// accepting, closes the connections waiting for a request, lets those serving finish their
/// response (the caller ends the event streams), and waits for them.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    service: SessionService,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own deadlines (`ConnState`) bound the head: hyper's would also run while idle.
    http.header_read_timeout(None).max_buf_size(MAX_BUF);
    let ctx = Arc::new(ConnContext {
        http,
        router,
        tls,
        service,
        connections,
    });
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match ctx.connections.admit(peer) {
                    Ok(slot) => {
                        // Small responses and SSE events leave at once instead of waiting for
                        // Nagle's algorithm (measured: p99 revocation-to-close latency halves).
                        if let Err(e) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                        tasks.spawn(connection(tcp, peer, slot, ctx.clone(), stopping.clone()));
                    }
                    Err(why) => {
                        tracing::debug!(%peer, reason = why.label(), "connection refused");
                        ctx.connections.0.counts.add(why);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
}

/// One connection, from its accept (and TLS handshake) to its close.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    ctx: Arc<ConnContext>,
    mut stopping: watch::Receiver<bool>,
) {
    let state = slot.state.clone();
    let io = Watched {
        tcp,
        state: state.clone(),
    };
    let Some(acceptor) = &ctx.tls else {
        return serve_http(io, peer, None, &state, &ctx, stopping).await;
    };
    // The handshake counts toward the first head's timeout.
    let deadline = match state.check(&ctx.connections.0.limits) {
        Check::At(at) => at,
        Check::Expired(_) => tokio::time::Instant::now(),
    };
    let handshake = tokio::select! {
        accepted = acceptor.accept(io) => accepted,
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!(%peer, "TLS handshake not done within server.header_read_timeout; closing");
            state.counts.add(Closed::HeaderTimeout);
            return;
        }
        () = state.shed.notified() => return,
        _ = stopping.changed() => return,
    };
    let stream = match handshake {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            return;
        }
    };
    let client = match stream.get_ref().1.peer_certificates() {
        None => None,
        Some(chain) => match sessiond::cert::chain_expiry(chain.iter().map(|c| c.as_ref())) {
            Ok(not_after) => Some(ClientCertificate { not_after }),
            Err(e) => {
                // rustls verified it, so this is not expected; without a deadline, refuse.
                tracing::warn!(%peer, error = %e, "client certificate has no readable notAfter; closing the connection");
                return;
            }
        },
    };
    if let Some(c) = client {
        tracing::debug!(%peer, not_after = %c.not_after, "client certificate verified");
    }
    serve_http(stream, peer, client, &state, &ctx, stopping).await;
}

/// Serves HTTP/1.1 on `io` with the one builder, enforcing the connection's deadlines, its
/// shedding, its client certificate's expiry (docs/DESIGN.md §6.4) and the shutdown.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    client: Option<ClientCertificate>,
    state: &Arc<ConnState>,
    ctx: &ConnContext,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.connections.0.limits;
    let service = ConnService {
        router: ctx.router.clone(),
        state: state.clone(),
        peer,
        client,
        body_timeout: limits.body,
    };
    let conn = ctx.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let expiry = async {
        match client {
            Some(c) => crate::tls::until(&ctx.service, c.not_after).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    // Fires at once: the first look sets the real deadline.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut timer => match state.check(&limits) {
                Check::At(at) => timer.as_mut().reset(at),
                Check::Expired(why) => {
                    tracing::debug!(%peer, reason = why.label(), "request head late; closing the connection");
                    state.counts.add(why);
                    return;
                }
            },
            () = state.shed.notified() => {
                tracing::debug!(%peer, "shed at server.max_connections");
                return;
            }
            () = &mut expiry => {
                tracing::info!(%peer, "client certificate expired; closing the connection");
                // No further request is read; the one in flight (a stream sending its
                // `expired` event) may finish within the grace. Then dropping `conn` drops the
                // TLS stream and closes the socket, whatever is still being written.
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(crate::tls::EXPIRY_GRACE, conn.as_mut()).await.is_err() {
                    tracing::debug!(%peer, "response still open after the grace; dropping it");
                }
                return;
            }
            _ = stopping.changed(), if !draining => {
                draining = true;
                if state.waiting_since().is_some() {
                    // No request in flight (hyper would wait for a first one).
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        assert_eq!(fit_to_open_files(10_000, None), 10_000);
        assert_eq!(fit_to_open_files(10_000, Some(1_048_576)), 10_000);
        assert_eq!(fit_to_open_files(10_000, Some(1024)), 1024 - 128);
        assert_eq!(fit_to_open_files(10_000, Some(100)), 1);
        assert_eq!(fit_to_open_files(10_000, Some(10_128)), 10_000);
    }

    #[test]
    fn peers_are_addresses_and_ipv6_slash_64s() {
        let key = |s: &str| peer_key(s.parse::<IpAddr>().unwrap().to_canonical()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
