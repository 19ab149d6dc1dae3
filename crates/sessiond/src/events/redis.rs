//! [`RedisEventBus`]: session events across nodes over Redis pub/sub (docs/DESIGN.md §6.2).
//!
//! Every node publishes its events as JSON (the [`SessionEvent`] serialization) on one channel
//! (default [`DEFAULT_CHANNEL`]) and subscribes to it. Local watchers never talk to Redis: the
//! bus keeps **one** subscriber connection per process, read by a background task that fans
//! every message out through a local [`tokio::sync::broadcast`] channel, so ten thousand
//! watchers cost one Redis connection. An event published by this node reaches this node's
//! watchers the same way, through Redis, exactly once.
//!
//! # Gaps are reported, never silent
//! Redis pub/sub is fire-and-forget: a message published while a subscriber is disconnected is
//! lost for it. The bus therefore turns every moment it may have missed something into
//! [`RecvError::Lagged`](super::RecvError::Lagged) on every subscription (the delivery contract
//! of [`crate::events`]):
//! - when the subscriber connection is lost (closed, reset, or silent past a health-check
//!   `PING`);
//! - when it is subscribed again (whatever was published in between is gone), and likewise when
//!   the first subscription of a lazily connected bus comes up, for subscriptions taken before;
//! - while it stays down, at most once per [`RedisBusOptions::reconnect_max`], so watchers keep
//!   re-reading their sessions from the store during a long outage instead of trusting a
//!   silent bus;
//! - when a message on the channel cannot be decoded (a newer node's event, say): something
//!   happened that this node cannot read.
//!
//! A lag carries `missed: 0` (unknown). A subscription that falls behind the local buffer lags
//! with the number missed, as with [`crate::InProcessBus`].
//!
//! # Reconnection
//! The subscriber task reconnects forever, waiting [`RedisBusOptions::reconnect_min`] after the
//! first failure and doubling up to [`RedisBusOptions::reconnect_max`]; a successful
//! subscription resets the wait. Each wait is drawn at random from its upper half, so the nodes
//! of a cluster that lost Redis together do not reconnect in lock-step when it returns. Publishing uses a separate connection (a
//! [`ConnectionManager`], as the claim store does), so a subscriber that is down or
//! reconnecting never blocks a publisher, and a publish while Redis is unreachable fails
//! promptly with [`EventError::Unavailable`] (bounded by [`RedisBusOptions::connect_timeout`]
//! plus [`RedisBusOptions::response_timeout`]). The service logs and counts such a failure and
//! does not fail the revocation or refresh that already happened.
//!
//! Dropping the last clone of the bus stops the task; open subscriptions then end with
//! [`RecvError::Closed`](super::RecvError::Closed).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Msg, RedisError};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use super::fanout::{self, Signal, SignalSource};
use super::{EventBus, EventError, InProcessBus, SessionEvent, Subscription};
use crate::store::redis::is_unavailable;

/// The channel events travel on unless [`RedisBusOptions::channel`] says otherwise.
pub const DEFAULT_CHANNEL: &str = "sessiond:events";

/// Settings for [`RedisEventBus`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisBusOptions {
    /// The pub/sub channel (default [`DEFAULT_CHANNEL`]). Nodes of one deployment share it;
    /// distinct channels keep deployments, or test runs, sharing one Redis apart.
    pub channel: String,
    /// How long one attempt to open a connection may take (default 2 s).
    pub connect_timeout: Duration,
    /// How long one command (`PUBLISH`, `SUBSCRIBE`, a health-check `PING`) may wait for its
    /// answer (default 2 s).
    pub response_timeout: Duration,
    /// Events a local subscription may fall behind before it lags (default
    /// [`InProcessBus::DEFAULT_CAPACITY`], clamped to `1..=`[`InProcessBus::MAX_CAPACITY`]).
    pub capacity: usize,
    /// The first wait before reconnecting the subscriber (default 100 ms).
    pub reconnect_min: Duration,
    /// The longest wait between reconnection attempts, and the period of the lags reported
    /// while the subscriber stays down (default 5 s).
    pub reconnect_max: Duration,
    /// How often the idle subscriber connection is checked with a `PING` (default 15 s): a
    /// connection that died silently (no FIN, a dropped NAT entry) is found within this plus
    /// [`RedisBusOptions::response_timeout`].
    pub ping_interval: Duration,
}

impl Default for RedisBusOptions {
    fn default() -> Self {
        RedisBusOptions {
            channel: DEFAULT_CHANNEL.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            capacity: InProcessBus::DEFAULT_CAPACITY,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// Session events over Redis pub/sub, shared by every node that points at the same server and
/// channel. See the module documentation for delivery, gaps and reconnection.
///
/// Cloning is cheap and shares both connections and the subscriber task.
#[derive(Clone)]
pub struct RedisEventBus {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: ConnectionManager,
    channel: String,
    /// The most one publish may take, reconnection included.
    deadline: Duration,
    tx: broadcast::Sender<Signal>,
    subscribed: watch::Receiver<bool>,
    /// Dropped with the last clone of the bus, which stops the subscriber task.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for RedisEventBus {
    // The URL may carry a password: only the settings are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEventBus")
            .field("channel", &self.inner.channel)
            .field("subscribed", &self.is_subscribed())
            .field("local_subscribers", &self.inner.tx.receiver_count())
            .finish_non_exhaustive()
    }
}

impl RedisEventBus {
    /// Connects to `url` (as [`crate::store::redis::RedisClaimStore::connect`]) and waits until
    /// the publisher answers and the subscriber is subscribed, so an unreachable server or bad
    /// credentials show up here. Later outages are survived (see the module documentation).
    ///
    /// # Errors
    /// [`EventError::Unavailable`] when Redis cannot be reached or the subscription is not up
    /// within [`RedisBusOptions::connect_timeout`] plus [`RedisBusOptions::response_timeout`];
    /// [`EventError::Backend`] for an invalid URL or an error the server answers with.
    pub async fn connect(url: &str, options: RedisBusOptions) -> Result<Self, EventError> {
        let bus = Self::connect_lazy(url, options)?;
        bus.ping().await?;
        let mut subscribed = bus.inner.subscribed.clone();
        let up = async { subscribed.wait_for(|up| *up).await.map(|_| ()) };
        match tokio::time::timeout(bus.inner.deadline, up).await {
            Ok(Ok(())) => Ok(bus),
            Ok(Err(_closed)) => Err(EventError::Closed),
            Err(_elapsed) => Err(EventError::Unavailable(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "redis subscription did not come up in time",
            )))),
        }
    }

    /// Like [`RedisEventBus::connect`], but returns at once: the subscriber task connects in
    /// the background (subscriptions taken before it is up learn of it as a lag) and the
    /// publisher on the first publish. A node can start while Redis is down.
    ///
    /// # Errors
    /// [`EventError::Backend`] for an invalid URL, or when called outside a Tokio runtime (the
    /// subscriber task needs one).
    pub fn connect_lazy(url: &str, options: RedisBusOptions) -> Result<Self, EventError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EventError::Backend(Box::new(io::Error::other(
                "RedisEventBus must be created inside a Tokio runtime",
            ))));
        }
        let client = redis::Client::open(url).map_err(map_err)?;
        // As for claims: no retries inside a publish, which sits on a request path.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        let publisher =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(map_err)?;
        let (tx, _) = broadcast::channel(options.capacity.clamp(1, InProcessBus::MAX_CAPACITY));
        let (state_tx, subscribed) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let deadline = options
            .connect_timeout
            .saturating_add(options.response_timeout);
        let channel = options.channel.clone();
        tokio::spawn(subscriber_task(
            client,
            options,
            tx.clone(),
            state_tx,
            stop_rx,
        ));
        Ok(RedisEventBus {
            inner: Arc::new(Inner {
                publisher,
                channel,
                deadline,
                tx,
                subscribed,
                _stop: stop_tx,
            }),
        })
    }

    /// The channel in use.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// Whether the shared subscriber connection is subscribed right now.
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    /// How many local subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    /// Checks that Redis answers on the publishing connection (`PING`), for readiness probes.
    ///
    /// # Errors
    /// As [`EventBus::publish`].
    pub async fn ping(&self) -> Result<(), EventError> {
        self.with_retry(
            |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await
    }

    /// Runs `op` on a handle of the publishing connection within the deadline, retrying once
    /// a refused connection (it never carried the command, and the failure started a new one).
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, EventError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            match op(self.inner.publisher.clone()).await {
                Err(e) if e.is_connection_refusal() => op(self.inner.publisher.clone()).await,
                other => other,
            }
        };
        match tokio::time::timeout(self.inner.deadline, attempt).await {
            Ok(result) => result.map_err(map_err),
            Err(_elapsed) => Err(EventError::Unavailable(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "redis did not answer in time",
            )))),
        }
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    /// `PUBLISH`es the event's JSON on the channel. Zero receivers is not an error.
    async fn publish(&self, event: SessionEvent) -> Result<(), EventError> {
        let payload = serde_json::to_vec(&event).map_err(|e| EventError::Backend(Box::new(e)))?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.inner.channel.as_str()).arg(payload);
        let cmd = &cmd;
        self.with_retry(|mut conn| async move { cmd.query_async::<i64>(&mut conn).await })
            .await
            .map(|_receivers| ())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(SignalSource {
            rx: self.inner.tx.subscribe(),
        })
    }
}

/// Sorts a Redis error as the claim store does, keeping it as the source.
fn map_err(e: RedisError) -> EventError {
    let unavailable = is_unavailable(&e);
    let source: Box<dyn StdError + Send + Sync> = Box::new(e);
    if unavailable {
        EventError::Unavailable(source)
    } else {
        EventError::Backend(source)
    }
}

fn timed_out(what: &'static str) -> RedisError {
    io::Error::new(io::ErrorKind::TimedOut, what).into()
}

/// Opens a pub/sub connection and subscribes it to `channel`, each step bounded.
async fn open(
    client: &redis::Client,
    options: &RedisBusOptions,
) -> Result<(PubSubSink, PubSubStream), RedisError> {
    let pubsub = tokio::time::timeout(options.connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out("redis subscriber connection timed out"))??;
    let (mut sink, stream) = pubsub.split();
    tokio::time::timeout(
        options.response_timeout,
        sink.subscribe(options.channel.as_str()),
    )
    .await
    .map_err(|_| timed_out("redis SUBSCRIBE timed out"))??;
    Ok((sink, stream))
}

/// Forwards messages until the connection is lost; returns why.
async fn pump(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    options: &RedisBusOptions,
    tx: &broadcast::Sender<Signal>,
) -> RedisError {
    let period = options.ping_interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => forward(&msg, &options.channel, tx),
                None => {
                    return io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "redis subscriber connection closed",
                    )
                    .into()
                }
            },
            _ = ticker.tick() => {
                match tokio::time::timeout(
                    options.response_timeout,
                    sink.ping::<redis::Value>(),
                )
                .await
                {
                    Ok(Ok(_pong)) => {}
                    Ok(Err(e)) => return e,
                    Err(_elapsed) => return timed_out("redis subscriber PING timed out"),
                }
            }
        }
    }
}

/// Hands one pub/sub message to the local subscriptions.
fn forward(msg: &Msg, channel: &str, tx: &broadcast::Sender<Signal>) {
    if msg.get_channel_name() != channel {
        return;
    }
    fanout::forward(msg.get_payload_bytes(), tx);
}

/// The shared subscriber: connect, subscribe, forward, report gaps, reconnect with back-off,
/// until the bus is dropped ([`fanout::supervise`]).
async fn subscriber_task(
    client: redis::Client,
    options: RedisBusOptions,
    tx: broadcast::Sender<Signal>,
    state: watch::Sender<bool>,
    stop: oneshot::Receiver<()>,
) {
    fanout::supervise(
        "redis",
        (options.reconnect_min, options.reconnect_max),
        &tx,
        &state,
        stop,
        || open(&client, &options),
        |(sink, stream)| pump(sink, stream, &options, &tx),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lazy_needs_a_runtime() {
        let err = RedisEventBus::connect_lazy("redis://127.0.0.1:1", RedisBusOptions::default())
            .unwrap_err();
        assert!(matches!(err, EventError::Backend(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_invalid_url_is_a_backend_error() {
        let err = RedisEventBus::connect_lazy("nope://", RedisBusOptions::default()).unwrap_err();
        assert!(matches!(err, EventError::Backend(_)), "{err:?}");
    }
}
