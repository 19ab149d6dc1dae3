//! Session events across nodes over PostgreSQL `LISTEN/NOTIFY`, for deployments that run on
//! PostgreSQL without Redis.
//!
//! Every node publishes its events as JSON (the [`SessionEvent`] serialization) with
//! `SELECT pg_notify(channel, payload)` and keeps one `LISTEN` connection, fanned out to its
//! local subscriptions (the same fan-out as [`super::redis::RedisEventBus`], when both features
//! are on). PostgreSQL delivers a notification to every listening session, the publisher's own
//! included, so one node's watchers hear its own events the same way as everyone else's.
//!
//! # Gaps are reported, never silent
//! A notification sent while a listener is disconnected is lost for it. The bus turns every
//! moment it may have missed something into [`RecvError::Lagged`](super::RecvError::Lagged) on
//! every subscription (the delivery contract of [`crate::events`]):
//! - when the listening connection is lost (closed, reset, terminated by an administrator);
//! - when the listener's own heartbeat does not come back: every
//!   [`PgBusOptions::heartbeat_interval`] the subscriber task publishes a heartbeat on the
//!   channel through the publishing pool and expects to receive it on its listening connection
//!   within [`PgBusOptions::heartbeat_timeout`]. That checks the whole path, publisher to
//!   listener, and finds a connection that died silently (no FIN, a dropped NAT entry);
//! - when it is listening again, and while it stays down, at most once per
//!   [`PgBusOptions::reconnect_max`];
//! - when a payload on the channel cannot be decoded.
//!
//! # Reconnection
//! As the Redis bus: waits from [`PgBusOptions::reconnect_min`] doubling up to
//! [`PgBusOptions::reconnect_max`], each drawn from the upper half of the back-off so the nodes
//! of a cluster do not reconnect in lock-step. The listening connection is the bus's own (a new
//! one per attempt, closed when given up); publishing uses a separate pool of at most two
//! connections, so a listener that is down never blocks a publisher, and a publish while the
//! database is unreachable fails within [`PgBusOptions::publish_timeout`] with
//! [`EventError::Unavailable`]. These connections are in addition to the store's pool.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::fanout::{self, Signal, SignalSource};
use super::{EventBus, EventError, InProcessBus, SessionEvent, Subscription};
use crate::random::{self, OsRandom};
use crate::store::postgres::is_unavailable;

/// The channel events travel on unless [`PgBusOptions::channel`] says otherwise.
pub const DEFAULT_CHANNEL: &str = "sessiond_events";

/// Heartbeat payloads start with this; event payloads are JSON objects.
const HEARTBEAT_PREFIX: &str = "heartbeat:";

/// Settings for [`PgEventBus`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgBusOptions {
    /// The notification channel (default [`DEFAULT_CHANNEL`]). Nodes of one deployment share
    /// it; distinct channels keep deployments (or schemas, or test runs) sharing one database
    /// apart. At most 63 bytes (PostgreSQL truncates longer identifiers).
    pub channel: String,
    /// How long a publish may take, waiting for a connection included (default 2 s).
    pub publish_timeout: Duration,
    /// How long opening the listening connection and `LISTEN` may take (default 5 s).
    pub connect_timeout: Duration,
    /// Events a local subscription may fall behind before it lags (default
    /// [`InProcessBus::DEFAULT_CAPACITY`], clamped to `1..=`[`InProcessBus::MAX_CAPACITY`]).
    pub capacity: usize,
    /// The first wait before reconnecting the listener (default 100 ms).
    pub reconnect_min: Duration,
    /// The longest wait between reconnection attempts, and the period of the lags reported
    /// while the listener stays down (default 5 s).
    pub reconnect_max: Duration,
    /// How often the listener checks itself with a heartbeat through the channel (default 15 s).
    pub heartbeat_interval: Duration,
    /// How long a heartbeat may take to come back before the listener is declared dead
    /// (default 5 s).
    pub heartbeat_timeout: Duration,
}

impl Default for PgBusOptions {
    fn default() -> Self {
        PgBusOptions {
            channel: DEFAULT_CHANNEL.to_owned(),
            publish_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            capacity: InProcessBus::DEFAULT_CAPACITY,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(5),
        }
    }
}

/// Session events over PostgreSQL `LISTEN/NOTIFY`, shared by every node that points at the same
/// database and channel. See the module documentation for delivery, gaps and reconnection.
///
/// Cloning is cheap and shares the pool and the subscriber task.
#[derive(Clone)]
pub struct PgEventBus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    channel: String,
    publish_timeout: Duration,
    tx: broadcast::Sender<Signal>,
    listening: watch::Receiver<bool>,
    /// Dropped with the last clone of the bus, which stops the subscriber task.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for PgEventBus {
    // The URL may carry a password: only the settings are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventBus")
            .field("channel", &self.inner.channel)
            .field("listening", &self.is_listening())
            .field("local_subscribers", &self.inner.tx.receiver_count())
            .finish_non_exhaustive()
    }
}

impl PgEventBus {
    /// Connects to the database at `url` and waits until the listener is up, so an unreachable
    /// database or bad credentials show up here. Later outages are survived.
    ///
    /// # Errors
    /// As [`PgEventBus::connect_lazy`], and [`EventError::Unavailable`] when the listener is not
    /// up within [`PgBusOptions::connect_timeout`].
    pub async fn connect(url: &str, options: PgBusOptions) -> Result<Self, EventError> {
        let wait = options.connect_timeout;
        let bus = Self::connect_lazy(url, options)?;
        let mut listening = bus.inner.listening.clone();
        let up = async { listening.wait_for(|up| *up).await.map(|_| ()) };
        match tokio::time::timeout(wait, up).await {
            Ok(Ok(())) => Ok(bus),
            Ok(Err(_closed)) => Err(EventError::Closed),
            Err(_elapsed) => Err(EventError::Unavailable(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "postgres LISTEN did not come up in time",
            )))),
        }
    }

    /// Like [`PgEventBus::connect`], but returns at once: the listener connects in the
    /// background (subscriptions taken before it is up learn of it as a lag). A node can start
    /// while the database is down.
    ///
    /// # Errors
    /// [`EventError::Backend`] for an invalid URL or channel name, or when called outside a
    /// Tokio runtime (the subscriber task needs one).
    pub fn connect_lazy(url: &str, options: PgBusOptions) -> Result<Self, EventError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EventError::Backend(Box::new(io::Error::other(
                "PgEventBus must be created inside a Tokio runtime",
            ))));
        }
        if options.channel.is_empty()
            || options.channel.len() > 63
            || options.channel.chars().any(char::is_control)
        {
            return Err(EventError::Backend(Box::new(io::Error::other(
                "PgEventBus channel must be 1 to 63 bytes without control characters",
            ))));
        }
        let connect =
            PgConnectOptions::from_str(url).map_err(|e| EventError::Backend(Box::new(e)))?;
        // Publishes (and heartbeats) share two connections. The listener has its own.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(options.publish_timeout)
            .connect_lazy_with(connect.clone());
        let (tx, _) = broadcast::channel(options.capacity.clamp(1, InProcessBus::MAX_CAPACITY));
        let (state_tx, listening) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let channel = options.channel.clone();
        let publish_timeout = options.publish_timeout;
        tokio::spawn(subscriber_task(
            pool.clone(),
            connect,
            options,
            tx.clone(),
            state_tx,
            stop_rx,
        ));
        Ok(PgEventBus {
            inner: Arc::new(Inner {
                pool,
                channel,
                publish_timeout,
                tx,
                listening,
                _stop: stop_tx,
            }),
        })
    }

    /// The channel in use.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// Whether the listening connection is up right now.
    pub fn is_listening(&self) -> bool {
        *self.inner.listening.borrow()
    }

    /// How many local subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

/// `pg_notify` on `pool` within `timeout`. Shared with the row-cache protocol
/// (`store::pg_lease`).
pub(crate) async fn notify(
    pool: &PgPool,
    channel: &str,
    payload: &str,
    timeout: Duration,
) -> Result<(), EventError> {
    // A notification is never durable (nothing replays it after a crash; listeners see the
    // lost connection as a gap), so its transaction does not wait for the WAL flush: with
    // `synchronous_commit = on` that flush would be most of its cost.
    let send =
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(pool);
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(map_err(e)),
        Err(_elapsed) => Err(EventError::Unavailable(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "postgres did not take the notification in time",
        )))),
    }
}

/// Sorts a database error as the store does: could not reach or serve now → unavailable.
fn map_err(e: sqlx::Error) -> EventError {
    if is_unavailable(&e) {
        EventError::Unavailable(Box::new(e))
    } else {
        EventError::Backend(Box::new(e))
    }
}

#[async_trait]
impl EventBus for PgEventBus {
    /// `pg_notify`s the event's JSON on the channel. Zero listeners is not an error.
    async fn publish(&self, event: SessionEvent) -> Result<(), EventError> {
        let payload =
            serde_json::to_string(&event).map_err(|e| EventError::Backend(Box::new(e)))?;
        notify(
            &self.inner.pool,
            &self.inner.channel,
            &payload,
            self.inner.publish_timeout,
        )
        .await
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(SignalSource {
            rx: self.inner.tx.subscribe(),
        })
    }
}

/// What the reading task reports to the subscriber task.
pub(crate) enum Received {
    Payload(String),
    Lost(String),
}

/// Opens the listening connection and `LISTEN`s, bounded by `connect_timeout`.
async fn open(connect: &PgConnectOptions, options: &PgBusOptions) -> Result<PgListener, String> {
    listen(connect, &options.channel, options.connect_timeout).await
}

/// Opens a listening connection on `channel` within `timeout`. Each attempt has a
/// one-connection pool of its own, owned by the listener: when a listener is given up (lost,
/// silent, or its task aborted), its connection is closed with it instead of going back to a
/// pool in an unknown state. Shared with the row-cache protocol (`store::pg_lease`).
pub(crate) async fn listen(
    connect: &PgConnectOptions,
    channel: &str,
    timeout: Duration,
) -> Result<PgListener, String> {
    let attempt = async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(timeout)
            .connect_lazy_with(connect.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        // The listener holds the only connection; the pool goes when the listener does.
        drop(pool);
        // The listener reconnects only through its owner (which reports the gap first).
        listener.eager_reconnect(false);
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(listener)) => Ok(listener),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_elapsed) => Err("postgres LISTEN timed out".to_owned()),
    }
}

/// Reads notifications until the connection is lost. Runs as its own task so the subscriber
/// task can wait on it, heartbeat and stop without cancelling a read half-way: when this task
/// is aborted, its connection is dropped with it.
pub(crate) async fn read_notifications(mut listener: PgListener, out: mpsc::Sender<Received>) {
    loop {
        let received = match listener.try_recv().await {
            Ok(Some(n)) => Received::Payload(n.payload().to_owned()),
            Ok(None) => Received::Lost("postgres listening connection lost".to_owned()),
            Err(e) => Received::Lost(e.to_string()),
        };
        let lost = matches!(received, Received::Lost(_));
        if out.send(received).await.is_err() || lost {
            return;
        }
    }
}

/// Forwards notifications and checks the heartbeat until the connection is lost; returns why.
async fn pump(
    pool: &PgPool,
    listener: PgListener,
    options: &PgBusOptions,
    tx: &broadcast::Sender<Signal>,
) -> String {
    let (out, mut rx) = mpsc::channel(256);
    let reader = tokio::spawn(read_notifications(listener, out));
    // Abort the reader (and drop its connection) whichever way this returns.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _reader = AbortOnDrop(reader);
    let period = options.heartbeat_interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat: u64 = 0;
    // The heartbeat in flight and when it must be back.
    let mut awaited: Option<(String, Instant)> = None;
    loop {
        let due = awaited.as_ref().map(|(_, at)| *at);
        tokio::select! {
            received = rx.recv() => match received {
                Some(Received::Payload(p)) => {
                    if let Some(hb) = p.strip_prefix(HEARTBEAT_PREFIX) {
                        if awaited.as_ref().is_some_and(|(want, _)| want == hb) {
                            awaited = None;
                        }
                        // Another node's heartbeat: nothing to do.
                    } else {
                        fanout::forward(p.as_bytes(), tx);
                    }
                }
                Some(Received::Lost(why)) => return why,
                None => return "postgres listener task ended".to_owned(),
            },
            _ = ticker.tick(), if awaited.is_none() => {
                beat = beat.wrapping_add(1);
                let nonce = u64::from_le_bytes(random::bytes(&OsRandom));
                let id = format!("{nonce:016x}-{beat}");
                let payload = format!("{HEARTBEAT_PREFIX}{id}");
                if let Err(e) = notify(pool, &options.channel, &payload, options.publish_timeout).await {
                    return format!("heartbeat could not be sent: {e}");
                }
                awaited = Some((id, Instant::now() + options.heartbeat_timeout));
            }
            () = async { if let Some(at) = due { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                return "heartbeat did not come back; the listening connection is presumed dead".to_owned();
            }
        }
    }
}

/// The shared subscriber: connect, listen, forward, report gaps, reconnect with back-off, until
/// the bus is dropped ([`fanout::supervise`]).
async fn subscriber_task(
    pool: PgPool,
    connect: PgConnectOptions,
    options: PgBusOptions,
    tx: broadcast::Sender<Signal>,
    state: watch::Sender<bool>,
    stop: oneshot::Receiver<()>,
) {
    fanout::supervise(
        "postgres",
        (options.reconnect_min, options.reconnect_max),
        &tx,
        &state,
        stop,
        || open(&connect, &options),
        |listener| pump(&pool, listener, &options, &tx),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lazy_needs_a_runtime() {
        let err = PgEventBus::connect_lazy("postgres://127.0.0.1/test", PgBusOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("runtime") || format!("{err:?}").contains("runtime"));
    }

    #[tokio::test]
    async fn bad_channels_and_urls_are_refused() {
        for channel in ["", "\n", &"x".repeat(64)] {
            let options = PgBusOptions {
                channel: channel.to_owned(),
                ..PgBusOptions::default()
            };
            assert!(PgEventBus::connect_lazy("postgres://127.0.0.1/test", options).is_err());
        }
        assert!(PgEventBus::connect_lazy("not a url", PgBusOptions::default()).is_err());
    }
}
