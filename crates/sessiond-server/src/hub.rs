//! The node's event hub behind the SSE streams (the handlers in `routes::events` own the wire
//! format): one bus subscription, pumped by a server-owned task into a bounded replay ring and a
//! fan-out to every per-user stream, the per-key stream counts, and the shutdown signal that
//! ends every stream.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sessiond::events::RecvError;
use sessiond::{ApiKeyId, SessionEvent, SessionId, SessionService};
use tokio::sync::{broadcast, watch};

use crate::config::Events as EventsConfig;
use crate::problem::ApiError;

/// Buffer of the node-wide fan-out to live per-user streams.
const FANOUT_CAPACITY: usize = 4096;

/// Most live-end streams (`GET /auth/browser/events`) open at once per session on one node.
pub(crate) const MAX_STREAMS_PER_SESSION: u32 = 4;

/// Who holds a stream, for the limits: an API key (its public id; `None` for the bootstrap key),
/// or a browser session (the live-end stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StreamOwner {
    Key(Option<ApiKeyId>),
    Session(SessionId),
}

/// A bus event with its node-local sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Stamped {
    pub(crate) seq: u64,
    pub(crate) event: Arc<SessionEvent>,
}

/// What the fan-out carries.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Event(Stamped),
    /// The node lagged behind the bus: events were lost for every stream.
    Gap,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Stamped>,
    /// Events with `seq <= floor` can no longer be replayed (evicted or lost in a lag).
    floor: u64,
}

#[derive(Debug)]
struct HubInner {
    boot: u64,
    next: AtomicU64,
    capacity: usize,
    max_per_key: u32,
    ring: Mutex<Ring>,
    fanout: broadcast::Sender<Item>,
    /// Set by [`EventHub::shut_down`] (SIGTERM/Ctrl-C): streams end so the graceful shutdown is
    /// not held open by them.
    shutdown: watch::Sender<bool>,
    /// Open streams per API key (`None`: the bootstrap key) and per browser session.
    streams: Mutex<HashMap<StreamOwner, u32>>,
}

/// The node's event fan-out: one bus subscription feeding a bounded replay ring and every
/// per-user stream, plus the per-key stream counts. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct EventHub {
    inner: Arc<HubInner>,
}

/// One open stream of one API key or session; dropping it releases the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    hub: EventHub,
    key: StreamOwner,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .hub
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

impl EventHub {
    /// A hub with the limits of `config`; it hears the bus once [`EventHub::pump`] runs.
    pub(crate) fn new(config: &EventsConfig) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        EventHub {
            inner: Arc::new(HubInner {
                boot,
                next: AtomicU64::new(1),
                capacity: config.replay_buffer.max(1),
                max_per_key: config.max_streams_per_key,
                ring: Mutex::new(Ring::default()),
                fanout,
                shutdown: watch::Sender::new(false),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.inner.boot)
    }

    /// The pump from the bus into the ring and the fan-out. The subscription is taken now, so
    /// no event published after this call is missed; the future runs until the bus closes and is
    /// owned by the server (its background tasks), which stops it on shutdown.
    pub(crate) fn pump(
        &self,
        service: &SessionService,
    ) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.clone();
        let mut subscription = service.events().subscribe();
        async move {
            loop {
                match subscription.recv().await {
                    Ok(event) => hub.record(event),
                    Err(RecvError::Lagged { missed }) => {
                        tracing::warn!(missed, "event streams lagged behind the event bus");
                        hub.gap();
                    }
                    Err(_closed) => {
                        tracing::warn!("event bus closed; event streams get no further events");
                        let _ = hub.inner.fanout.send(Item::Gap);
                        break;
                    }
                }
            }
        }
    }

    /// A receiver of the fan-out: every event and gap recorded from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Item> {
        self.inner.fanout.subscribe()
    }

    /// Stamps `event`, keeps it in the ring and fans it out.
    pub(crate) fn record(&self, event: SessionEvent) {
        let stamped = {
            let mut ring = self.ring();
            let stamped = Stamped {
                seq: self.next_seq(),
                event: Arc::new(event),
            };
            ring.events.push_back(stamped.clone());
            while ring.events.len() > self.inner.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.floor = old.seq;
                }
            }
            stamped
        };
        let _ = self.inner.fanout.send(Item::Event(stamped));
    }

    /// Events were lost upstream: nothing before now can be replayed.
    pub(crate) fn gap(&self) {
        {
            let mut ring = self.ring();
            ring.events.clear();
            ring.floor = self.next_seq();
        }
        let _ = self.inner.fanout.send(Item::Gap);
    }

    /// Ends every open stream: the server is shutting down, and a graceful shutdown must not
    /// wait for streams that never end by themselves.
    pub(crate) fn shut_down(&self) {
        tracing::info!("closing event streams for shutdown");
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves when the server is shutting down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Streams open on this node, over every API key.
    pub(crate) fn open_streams(&self) -> u64 {
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Takes a stream slot for an API key (its public id; `None` for the bootstrap key).
    pub(crate) fn acquire(&self, key: Option<ApiKeyId>) -> Result<StreamSlot, ApiError> {
        self.acquire_for(StreamOwner::Key(key), self.inner.max_per_key)
    }

    /// Takes a live-end stream slot for a browser session (at most
    /// [`MAX_STREAMS_PER_SESSION`] on this node).
    pub(crate) fn acquire_for_session(&self, id: SessionId) -> Result<StreamSlot, ApiError> {
        self.acquire_for(StreamOwner::Session(id), MAX_STREAMS_PER_SESSION)
    }

    /// Takes a slot for `key` if it holds fewer than `max` (0: no limit).
    fn acquire_for(&self, key: StreamOwner, max: u32) -> Result<StreamSlot, ApiError> {
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(key.clone()).or_insert(0);
        if max != 0 && *open >= max {
            return Err(ApiError::TooManyStreams);
        }
        *open += 1;
        Ok(StreamSlot {
            hub: self.clone(),
            key,
        })
    }

    /// The events after `last` (a `Last-Event-ID`) still in the ring, and the newest sequence
    /// number seen; `None` when they cannot be replayed.
    pub(crate) fn replay_after(&self, last: &str) -> (Option<Vec<Stamped>>, u64) {
        let ring = self.ring();
        let newest = ring.events.back().map_or(ring.floor, |s| s.seq);
        let seq = crate::parse::event_id(last)
            .filter(|&(boot, _)| boot == self.inner.boot)
            .map(|(_, seq)| seq);
        let replay = match seq {
            Some(seq) if seq >= ring.floor && seq <= newest => Some(
                ring.events
                    .iter()
                    .filter(|s| s.seq > seq)
                    .cloned()
                    .collect(),
            ),
            _ => None,
        };
        (replay, newest)
    }

    pub(crate) fn newest(&self) -> u64 {
        let ring = self.ring();
        ring.events.back().map_or(ring.floor, |s| s.seq)
    }
}
