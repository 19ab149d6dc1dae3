//! Session events and the bus that carries them to watchers.
//!
//! The service publishes a [`SessionEvent`] after every lifecycle change a live connection must
//! react to: a revocation (any path: logout, user-wide revoke, eviction, refresh-token reuse) and
//! a refresh rotation (the idle deadline moved). Watchers — [`crate::SessionService::watch`],
//! the server's Server-Sent Event streams — [`EventBus::subscribe`] and react.
//!
//! # Delivery contract
//! An [`EventBus`] is a hint, never the source of truth: the store is. A subscription receives
//! every event published after [`EventBus::subscribe`] returned, *or* learns that it may have
//! missed some ([`RecvError::Lagged`]). A subscriber that lagged must re-check what it cares
//! about against the store; that is what makes a bounded buffer, a dropped connection to Redis,
//! or a restarted PostgreSQL listener safe: a revocation is never missed silently, at worst it is
//! found by a re-read instead of by the event.
//!
//! [`InProcessBus`] is the default: a bounded [`tokio::sync::broadcast`] channel inside one
//! process. Buses that cross nodes (Redis pub/sub, PostgreSQL `LISTEN/NOTIFY`) implement the same
//! trait: [`EventBus::publish`] is async and fallible for them, and they fan received messages
//! out to local subscriptions, reporting any gap in their upstream connection as a lag.
//! [`redis::RedisEventBus`] (feature `redis`) is the Redis pub/sub one,
//! [`postgres::PgEventBus`] (feature `postgres`) the PostgreSQL `LISTEN/NOTIFY` one.

mod fanout;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::Timestamp;
use crate::id::{SessionId, Tenant, UserId};
use crate::session::{RevokeReason, Session};
use crate::store::BoxError;

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// The session was revoked; every credential of it stopped working.
    Revoked,
    /// The session's idle or absolute window, or a credential deadline of a watched connection,
    /// passed. The service itself never publishes this (expiry is a fact of time, not an
    /// action); a watcher that observed the end reports it, e.g. on an SSE stream.
    Expired,
    /// A refresh rotated the session's refresh token; its idle window moved.
    Refreshed,
}

impl EventKind {
    /// The SSE event name: `revoked`, `expired`, `refreshed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Revoked => "revoked",
            EventKind::Expired => "expired",
            EventKind::Refreshed => "refreshed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle change of one session.
///
/// Serializes as the SSE `data` of docs/DESIGN.md §9.6, `{session_id, reason?, at}`, plus `kind` (the
/// SSE event name, so a cross-node bus can carry the event as one JSON message), `user_id` and
/// `tenant` (so a stream can be filtered per user and tenant). It never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionEvent {
    /// What happened.
    pub kind: EventKind,
    /// The session it happened to.
    pub session_id: SessionId,
    /// Whose session it is.
    pub user_id: UserId,
    /// The session's tenant. `None` only when a user-wide revocation across tenants could not
    /// read back this session's tenant (a storage failure after the revocation); a per-tenant
    /// filter should let such an event through rather than hide a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Tenant>,
    /// A machine-readable reason code: the revoke reason for [`EventKind::Revoked`], the end
    /// reason (e.g. `idle_expired`) for [`EventKind::Expired`], none for
    /// [`EventKind::Refreshed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened, by the publishing service's clock.
    pub at: Timestamp,
}

impl SessionEvent {
    /// An event of any kind.
    pub fn new(
        kind: EventKind,
        session_id: SessionId,
        user_id: UserId,
        tenant: Option<Tenant>,
        reason: Option<String>,
        at: Timestamp,
    ) -> Self {
        SessionEvent {
            kind,
            session_id,
            user_id,
            tenant,
            reason,
            at,
        }
    }

    /// `session_id` of `user_id` (in `tenant`) was revoked for `reason` at `at`.
    pub fn revoked(
        session_id: SessionId,
        user_id: UserId,
        tenant: Option<Tenant>,
        reason: &RevokeReason,
        at: Timestamp,
    ) -> Self {
        Self::new(
            EventKind::Revoked,
            session_id,
            user_id,
            tenant,
            Some(reason.as_str().to_owned()),
            at,
        )
    }

    /// `session` was refreshed at `at`.
    pub fn refreshed(session: &Session, at: Timestamp) -> Self {
        Self::new(
            EventKind::Refreshed,
            session.id.clone(),
            session.user_id.clone(),
            Some(session.tenant.clone()),
            None,
            at,
        )
    }

    /// The terminal event of a watched `session` that ended for `end` at `at`: `revoked` with
    /// the revoke reason, or `expired` with the end reason's code.
    pub fn ended(session: &Session, end: &crate::service::EndReason, at: Timestamp) -> Self {
        let reason = match end.revoke_reason() {
            Some(r) => Some(r.as_str().to_owned()),
            None if end.kind() == EventKind::Revoked => None,
            None => Some(end.code().to_owned()),
        };
        Self::new(
            end.kind(),
            session.id.clone(),
            session.user_id.clone(),
            Some(session.tenant.clone()),
            reason,
            at,
        )
    }
}

/// A publish failed. The service logs and counts it and never fails the operation that already
/// happened. Watchers that miss the event still learn of it at their next re-read of the row
/// (a lag, a refresh, an idle deadline) and end at their deadline at the latest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The bus's transport could not be reached (connection refused, timed out).
    #[error("event bus is unavailable")]
    Unavailable(#[source] BoxError),
    /// The transport answered with an error.
    #[error("event bus failed")]
    Backend(#[source] BoxError),
    /// The bus was shut down.
    #[error("event bus is closed")]
    Closed,
}

/// Why a subscription yielded no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Events may have been missed (at least `missed`, when the bus knows the number): the
    /// subscriber fell behind a bounded buffer, or the bus lost its upstream connection for a
    /// while. Re-check state against the store; the subscription stays usable.
    #[error("subscriber lagged; {missed} event(s) missed")]
    Lagged {
        /// How many events were dropped (0 when unknown).
        missed: u64,
    },
    /// The bus is gone; no further event will come. Fall back to polling the store.
    #[error("event bus closed")]
    Closed,
}

/// The receiving end a bus hands to a [`Subscription`].
///
/// Implementations must be cancel-safe: dropping the future of [`EventSource::recv`] before it
/// completes must not lose an event (the caller races it against a timer).
#[async_trait]
pub trait EventSource: Send + 'static {
    /// The next event, waiting for one.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when events may have been missed, [`RecvError::Closed`] when none
    /// will come.
    async fn recv(&mut self) -> Result<SessionEvent, RecvError>;
}

#[async_trait]
impl EventSource for broadcast::Receiver<SessionEvent> {
    async fn recv(&mut self) -> Result<SessionEvent, RecvError> {
        match broadcast::Receiver::recv(self).await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(RecvError::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
        }
    }
}

/// A stream of every event published on a bus after it was created.
pub struct Subscription {
    source: Box<dyn EventSource>,
}

impl Subscription {
    /// Wraps a bus's receiving end.
    pub fn new(source: impl EventSource) -> Self {
        Subscription {
            source: Box::new(source),
        }
    }

    /// The next event, waiting for one. Cancel-safe.
    ///
    /// # Errors
    /// [`RecvError::Lagged`]: events may have been missed; re-check against the store and keep
    /// receiving. [`RecvError::Closed`]: the bus is gone.
    pub async fn recv(&mut self) -> Result<SessionEvent, RecvError> {
        self.source.recv().await
    }
}

impl From<broadcast::Receiver<SessionEvent>> for Subscription {
    fn from(rx: broadcast::Receiver<SessionEvent>) -> Self {
        Subscription::new(rx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Carries [`SessionEvent`]s from the service to watchers. Object-safe: the service holds an
/// `Arc<dyn EventBus>`.
///
/// See the module documentation for the delivery contract every implementation keeps.
#[async_trait]
pub trait EventBus: Send + Sync + fmt::Debug + 'static {
    /// Publishes `event` to every current subscription (on every node, for a cross-node bus).
    /// Having no subscribers is not an error. The service awaits this after the change is
    /// committed and before answering its caller, so an implementation bounds its own latency
    /// (a timeout on its transport).
    ///
    /// # Errors
    /// [`EventError`] when the event could not be handed to the transport.
    async fn publish(&self, event: SessionEvent) -> Result<(), EventError>;

    /// A subscription to every event published after this call returns. Subscribing is local
    /// and cheap (a cross-node bus keeps one upstream connection per process and fans out), so
    /// it cannot fail; a bus that cannot deliver reports [`RecvError::Lagged`] or
    /// [`RecvError::Closed`] on the subscription instead.
    fn subscribe(&self) -> Subscription;
}

/// The in-process bus: a bounded [`tokio::sync::broadcast`] channel.
///
/// Every subscription sees every event. A subscription that falls more than `capacity` events
/// behind loses the oldest ones and its next [`Subscription::recv`] returns
/// [`RecvError::Lagged`] with the number missed, then continues with the oldest retained event;
/// [`crate::SessionService::watch`] answers a lag by re-reading its session from the store.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<fanout::Signal>,
}

impl InProcessBus {
    /// The default buffer: events a subscriber may fall behind before it lags.
    pub const DEFAULT_CAPACITY: usize = 1024;
    /// The largest accepted buffer (the channel allocates it up front).
    pub const MAX_CAPACITY: usize = 1 << 20;

    /// A bus buffering up to `capacity` events per subscriber (clamped to
    /// `1..=`[`InProcessBus::MAX_CAPACITY`]).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(1, Self::MAX_CAPACITY));
        InProcessBus { tx }
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Tells every subscription that events may have been missed: each one's next
    /// [`Subscription::recv`] returns [`RecvError::Lagged`] (`missed: 0`), so watchers re-read
    /// their sessions from the store. For changes this bus cannot see, such as another process
    /// writing to the same SQLite file.
    pub fn report_gap(&self) {
        // `send` fails only when nobody subscribes, which is nothing to report to.
        let _ = self.tx.send(fanout::Signal::Gap);
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus::new(Self::DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: SessionEvent) -> Result<(), EventError> {
        // `send` fails only when nobody subscribes, which is not a failure of the publish.
        let _ = self.tx.send(fanout::Signal::Event(event));
        Ok(())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(fanout::SignalSource {
            rx: self.tx.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    fn event(kind: EventKind, reason: Option<&str>) -> SessionEvent {
        SessionEvent::new(
            kind,
            SessionId::generate(&OsRandom),
            UserId::new("alice").unwrap(),
            Some(Tenant::default()),
            reason.map(str::to_owned),
            Timestamp::from_unix_millis(1_795_360_695_123),
        )
    }

    #[tokio::test]
    async fn a_reported_gap_is_a_lag_for_every_subscription() {
        let bus = InProcessBus::new(8);
        let (mut one, mut two) = (bus.subscribe(), bus.subscribe());
        bus.report_gap();
        bus.publish(event(EventKind::Revoked, None)).await.unwrap();
        for sub in [&mut one, &mut two] {
            assert_eq!(sub.recv().await, Err(RecvError::Lagged { missed: 0 }));
            assert_eq!(sub.recv().await.unwrap().kind, EventKind::Revoked);
        }
    }

    #[test]
    fn serializes_as_the_sse_data_plus_filters() {
        let e = event(EventKind::Revoked, Some("logout"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "revoked");
        assert_eq!(json["session_id"], e.session_id.as_str());
        assert_eq!(json["user_id"], "alice");
        assert_eq!(json["tenant"], Tenant::default().as_str());
        assert_eq!(json["reason"], "logout");
        assert_eq!(json["at"], "2026-11-22T15:18:15.123Z");
        assert_eq!(json.as_object().unwrap().len(), 6);
        let back: SessionEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);

        let r = event(EventKind::Refreshed, None);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("reason").is_none(), "{json}");
        assert_eq!(json["kind"], "refreshed");
    }

    #[tokio::test]
    async fn in_process_bus_delivers_after_subscribe_and_reports_lag() {
        let bus = InProcessBus::new(2);
        bus.publish(event(EventKind::Refreshed, None))
            .await
            .unwrap(); // nobody listens: fine
        let mut sub = bus.subscribe();
        assert_eq!(bus.subscriber_count(), 1);
        let first = event(EventKind::Revoked, Some("logout"));
        bus.publish(first.clone()).await.unwrap();
        assert_eq!(sub.recv().await.unwrap(), first);

        for _ in 0..5 {
            bus.publish(event(EventKind::Refreshed, None))
                .await
                .unwrap();
        }
        assert_eq!(sub.recv().await, Err(RecvError::Lagged { missed: 3 }));
        assert!(sub.recv().await.is_ok());
        assert!(sub.recv().await.is_ok());

        let bus: std::sync::Arc<dyn EventBus> = std::sync::Arc::new(bus);
        let mut sub = bus.subscribe();
        drop(bus);
        assert_eq!(sub.recv().await, Err(RecvError::Closed));
    }

    #[test]
    fn capacity_is_clamped() {
        assert_eq!(InProcessBus::new(0).subscriber_count(), 0);
    }
}
