//! What the buses share (the in-process one uses the signal and its source): one upstream subscriber per process fanned out to local
//! subscriptions through a broadcast channel of [`Signal`]s, gaps reported as lags, and
//! jittered reconnection waits.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

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
