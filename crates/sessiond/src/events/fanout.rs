//! What the buses share (the in-process one uses the signal and its source): one upstream subscriber per process fanned out to local
//! subscriptions through a broadcast channel of [`Signal`]s, gaps reported as lags, and
//! jittered reconnection waits.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use super::{EventSource, RecvError, SessionEvent};

/// What a bus's subscriber task hands to local subscriptions.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// An event from the upstream channel.
    Event(SessionEvent),
    /// Events may have been missed (reconnect, silent connection, undecodable message).
    Gap,
}

/// A local subscription to a cross-node bus.
pub(crate) struct SignalSource {
    pub(crate) rx: broadcast::Receiver<Signal>,
}

#[async_trait]
impl EventSource for SignalSource {
    async fn recv(&mut self) -> Result<SessionEvent, RecvError> {
        // `broadcast::Receiver::recv` is cancel-safe, and so is this.
        match self.rx.recv().await {
            Ok(Signal::Event(event)) => Ok(event),
            Ok(Signal::Gap) => Err(RecvError::Lagged { missed: 0 }),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(RecvError::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
        }
    }
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
/// Hands one received payload (an event's JSON) to the local subscriptions; an undecodable one
/// is a gap: something happened that this node cannot read.
pub(crate) fn forward(payload: &[u8], tx: &broadcast::Sender<Signal>) {
    // `send` fails only when nobody subscribes locally, which is not a failure.
    match serde_json::from_slice::<SessionEvent>(payload) {
        Ok(event) => {
            let _ = tx.send(Signal::Event(event));
        }
        Err(e) => {
            // The payload is not logged: only its decoding error.
            tracing::warn!(error = %e, "undecodable message on the event channel; reporting a gap to subscribers");
            let _ = tx.send(Signal::Gap);
        }
    }
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
/// A reconnection wait in `[backoff / 2, backoff]`, chosen by `draw` (random).
pub(crate) fn jittered(backoff: Duration, draw: u64) -> Duration {
    let half = backoff / 2;
    // The draw picks one of 1,025 evenly spaced points of the upper half (both ends included).
    let step = half / 1024;
    half + step * u32::try_from(draw % 1025).unwrap_or(0)
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
/// [`jittered`] with a fresh random draw.
pub(crate) fn jittered_now(backoff: Duration) -> Duration {
    use crate::random::{self, OsRandom};
    jittered(backoff, u64::from_le_bytes(random::bytes(&OsRandom)))
}

/// The upstream subscriber loop both cross-node buses run: open the connection, report a gap
/// when it is up (whatever came before is gone for us), forward until it is lost, report a gap,
/// and reconnect after a jittered back-off from `reconnect.0` doubling up to `reconnect.1`;
/// while it stays down, report a gap at most once per `reconnect.1` so watchers keep
/// re-reading. Sets `state` while the connection is up and returns when `stop` fires (the bus
/// was dropped).
///
/// `open` makes one bounded attempt; `pump` forwards until the connection is lost and says why.
/// `backend` names the upstream in the logs.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) async fn supervise<C, E, L, Open, OpenFut, Pump, PumpFut>(
    backend: &'static str,
    reconnect: (Duration, Duration),
    tx: &broadcast::Sender<Signal>,
    state: &watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
    mut open: Open,
    mut pump: Pump,
) where
    E: std::fmt::Display,
    L: std::fmt::Display,
    Open: FnMut() -> OpenFut,
    OpenFut: Future<Output = Result<C, E>>,
    Pump: FnMut(C) -> PumpFut,
    PumpFut: Future<Output = L>,
{
    let min = reconnect.0.max(Duration::from_millis(1));
    let max = reconnect.1.max(min);
    let mut backoff = min;
    let mut last_gap = Instant::now();
    let mut failures: u64 = 0;
    loop {
        let attempt = tokio::select! {
            biased;
            _ = &mut stop => return,
            attempt = open() => attempt,
        };
        match attempt {
            Ok(connection) => {
                if failures > 0 {
                    tracing::info!(backend, attempts = failures, "event bus reconnected");
                }
                failures = 0;
                backoff = min;
                state.send_replace(true);
                // Whatever was published before this connection was up is gone for us.
                let _ = tx.send(Signal::Gap);
                let lost = tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    lost = pump(connection) => lost,
                };
                state.send_replace(false);
                tracing::warn!(backend, error = %lost, "event bus lost its connection; reconnecting");
                let _ = tx.send(Signal::Gap);
                last_gap = Instant::now();
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // Log the first failure of an outage, then only now and then.
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(backend, error = %e, attempts = failures, "event bus cannot reach its backend; retrying");
                }
                if last_gap.elapsed() >= max {
                    let _ = tx.send(Signal::Gap);
                    last_gap = Instant::now();
                }
            }
        }
        let wait = jittered_now(backoff);
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = backoff.saturating_mul(2).min(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_spread_over_the_upper_half() {
        let backoff = Duration::from_millis(800);
        assert_eq!(jittered(backoff, 0), Duration::from_millis(400));
        assert_eq!(jittered(backoff, 1024), Duration::from_millis(800));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let wait = jittered_now(backoff);
            assert!(wait >= backoff / 2 && wait <= backoff, "{wait:?}");
            seen.insert(wait);
        }
        // 64 draws over 1,025 points: identical waits for every node would be a bug.
        assert!(seen.len() > 32, "{seen:?}");
        assert_eq!(jittered(Duration::ZERO, 7), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_gap_is_a_lag_and_buffer_overflow_counts() {
        let (tx, rx) = broadcast::channel(2);
        let mut source = SignalSource { rx };
        tx.send(Signal::Gap).unwrap();
        assert_eq!(source.recv().await, Err(RecvError::Lagged { missed: 0 }));
        for _ in 0..4 {
            tx.send(Signal::Gap).unwrap();
        }
        assert_eq!(source.recv().await, Err(RecvError::Lagged { missed: 2 }));
        drop(tx);
        assert_eq!(source.recv().await, Err(RecvError::Lagged { missed: 0 }));
        assert_eq!(source.recv().await, Err(RecvError::Lagged { missed: 0 }));
        assert_eq!(source.recv().await, Err(RecvError::Closed));
    }

    #[test]
    fn an_undecodable_payload_is_a_gap() {
        let (tx, mut rx) = broadcast::channel(4);
        forward(b"{not json", &tx);
        assert!(matches!(rx.try_recv(), Ok(Signal::Gap)));
    }
}
