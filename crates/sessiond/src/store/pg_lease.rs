//! Session-row caches that stay coherent across nodes sharing one PostgreSQL database
//! (docs/DESIGN.md §15.5): invalidations, leases and acknowledgements on one ordered
//! `LISTEN/NOTIFY` channel.
//!
//! Every store on the database (every node, every CLI command) takes part, whether or not it
//! caches rows itself:
//! - **Invalidations.** After each session write has run (committed or failed: it may have
//!   committed anyway), the writer publishes the ids it may have changed, `i:<node>:<seq>:<ids>`
//!   (`*` for "any row"). Concurrent writers share one notification (`publisher`).
//! - **Heartbeats and leases.** Every store publishes `h:<node>:<n>:<caches>` every quarter of
//!   the lease. A store that caches rows may answer from its cache only while it holds a lease:
//!   its own heartbeat came back on its listening connection, and the lease runs from *before*
//!   that heartbeat was sent for [`LeaseOptions::lease`], on `CLOCK_BOOTTIME` (which keeps
//!   counting through a suspend). The channel is ordered and the echo came on the same
//!   connection, so every invalidation published before the heartbeat was handled first.
//! - **Acknowledgements.** A caching store forgets the rows an invalidation names and then
//!   publishes `a:<node>:<origin>=<seq>,…`, the highest invalidation of each origin it handled.
//! - **The writer waits.** A write returns only when its invalidation came back to its own
//!   listener and then every caching peer it had heard a heartbeat from acknowledged it, or
//!   that peer's lease has certainly ended (its last heartbeat, as heard here, plus the lease
//!   and [`LeaseOptions::drift`]); and no sooner than lease plus drift after this store began
//!   listening (peers it could not have heard). Whatever happens, it waits no longer than lease
//!   plus drift after the publish returned: every lease granted by a heartbeat published before
//!   the invalidation has ended by then, and a later heartbeat comes back only after the
//!   invalidation was handled.
//! - **Gaps.** A store whose listening connection is lost (or whose heartbeat does not come
//!   back within a lease) drops its lease and every cached row, and again when it is listening
//!   once more; a heartbeat sent before the gap grants nothing after it.
//!
//! `bye:<node>` tells peers a store closed (it no longer answers from a cache), so writers stop
//! waiting for it at once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use super::row_cache::{RowCache, Scope};
use super::StoreError;
use crate::events::postgres::{listen, notify, read_notifications, Received};
use crate::id::SessionId;
use crate::random::{self, OsRandom};

/// Invalidation payloads longer than this name no ids and say `*` (PostgreSQL refuses
/// payloads of 8000 bytes or more).
const MAX_IDS: usize = 7000;

/// The longest a publisher batch grows: writes queued together share one notification.
const MAX_BATCH: usize = 256;

/// How a store takes part in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// How long a heartbeat that came back lets a store answer from its cache, counted from
    /// before it was sent (default 2 s). Also the longest a write waits for a peer that stopped
    /// answering.
    pub lease: Duration,
    /// What is added to a peer's lease, as heard here, before a writer stops waiting for it:
    /// the difference in clock rates between two machines over one lease, and scheduling delay
    /// (default 250 ms).
    pub drift: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            lease: Duration::from_secs(2),
            drift: Duration::from_millis(250),
        }
    }
}

impl LeaseOptions {
    fn horizon(&self) -> Duration {
        self.lease.saturating_add(self.drift)
    }
}

/// Nanoseconds on a clock that keeps counting while the machine is suspended
/// (`CLOCK_BOOTTIME`; elsewhere the monotonic clock).
fn boot_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let clock = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let clock = rustix::time::ClockId::Monotonic;
    let t = rustix::time::clock_gettime(clock);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The channel of the deployment whose tables live in `schema` (none: the default search
/// path): `sessiond_rows`, or `sessiond_rows_` and 16 hex digits of SHA-256 over the schema
/// name, which keeps it under PostgreSQL's 63 bytes for any schema.
pub(crate) fn channel(schema: Option<&str>) -> String {
    match schema {
        None => "sessiond_rows".to_owned(),
        Some(schema) => {
            let digest = Sha256::digest(schema.as_bytes());
            let mut name = "sessiond_rows_".to_owned();
            for b in digest.iter().take(8) {
                name.push_str(&format!("{b:02x}"));
            }
            name
        }
    }
}

/// Notifications were lost without the connection saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost;

/// One published invalidation: its number and when the publish returned.
#[derive(Debug, Clone, Copy)]
struct Published {
    seq: u64,
    at: Instant,
}

/// A write waiting for its invalidation to be published.
struct Queued {
    /// `None`: any row.
    ids: Option<Vec<String>>,
    reply: oneshot::Sender<Published>,
}

/// A caching peer, as heard here.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// When its latest heartbeat was handled here.
    heard: Instant,
    /// The highest of our invalidations it acknowledged.
    acked: u64,
}

/// What a writer waits for once its own invalidation came back: these peers' acknowledgements,
/// each until its deadline, and `floor` (peers this store could not have heard yet).
#[derive(Debug, Clone)]
struct Snapshot {
    made: Instant,
    peers: Vec<(String, Instant)>,
    floor: Instant,
}

/// The protocol's state, changed by the listener and read by writers.
#[derive(Debug, Default)]
struct State {
    /// Since when the listening connection has been up without a gap (`None`: down).
    listening_since: Option<Instant>,
    /// Moves at every gap: a heartbeat sent in an earlier generation grants no lease.
    generation: u64,
    /// Heartbeats sent and not yet back: number, `boot_nanos` before sending, generation.
    heartbeats: VecDeque<(u64, u64, u64)>,
    next_heartbeat: u64,
    peers: HashMap<String, Peer>,
    /// Our invalidations that came back, by number.
    snapshots: HashMap<u64, Snapshot>,
    /// Acknowledgements to send: origin → highest invalidation handled.
    acks: HashMap<String, u64>,
}

impl State {
    /// When the writer of invalidation `seq` should look again, or `None` when it is done.
    /// Until the invalidation came back there is no snapshot: wait (the caller's cap bounds it).
    fn waiting_on(&self, seq: u64, now: Instant) -> Option<Instant> {
        let Some(snap) = self.snapshots.get(&seq) else {
            return Some(now + Duration::from_secs(3600));
        };
        let mut next = (snap.floor > now).then_some(snap.floor);
        for (peer, deadline) in &snap.peers {
            let acked = self.peers.get(peer).is_none_or(|p| p.acked >= seq);
            if !acked && *deadline > now {
                next = Some(next.map_or(*deadline, |n: Instant| n.min(*deadline)));
            }
        }
        next
    }

    /// Our invalidation `seq` came back at `now`: record whom its writer waits for.
    fn snapshot(&mut self, seq: u64, now: Instant, horizon: Duration) {
        self.peers.retain(|_, p| p.heard + horizon * 2 > now);
        // A writer waits at most `horizon` after its publish returned, which was before its
        // invalidation came back: an older snapshot has no writer left.
        self.snapshots.retain(|_, s| s.made + horizon > now);
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| p.heard + horizon > now)
            .map(|(name, p)| (name.clone(), p.heard + horizon))
            .collect();
        let floor = self.listening_since.map_or(now + horizon, |s| s + horizon);
        self.snapshots.insert(
            seq,
            Snapshot {
                made: now,
                peers,
                floor,
            },
        );
    }
}

struct Shared {
    node: String,
    channel: String,
    pool: PgPool,
    rows: Option<Arc<RowCache>>,
    options: LeaseOptions,
    publish_timeout: Duration,
    /// `boot_nanos` until which this store may answer from its cache (0: no lease).
    lease_until: AtomicU64,
    state: Mutex<State>,
    /// Wakes writers after the listener changed `state`.
    changed: Notify,
    /// Wakes the acknowledging task.
    acks_ready: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        notify(&self.pool, &self.channel, payload, self.publish_timeout)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    /// The listening connection is up: forget what may have been missed before it.
    fn listening(&self) {
        if let Some(rows) = &self.rows {
            rows.forget_all();
        }
        {
            let mut st = self.state();
            st.generation += 1;
            st.listening_since = Some(Instant::now());
        }
        self.changed.notify_waiters();
    }

    /// The listening connection is down (or presumed dead): no lease, no rows.
    fn gap(&self) {
        self.lease_until.store(0, Ordering::SeqCst);
        if let Some(rows) = &self.rows {
            rows.forget_all();
        }
        {
            let mut st = self.state();
            st.generation += 1;
            st.listening_since = None;
            st.heartbeats.clear();
        }
        self.changed.notify_waiters();
    }

    /// Whether the oldest heartbeat still out was sent more than a lease ago.
    fn heartbeat_overdue(&self) -> bool {
        let lease = nanos(self.options.lease);
        self.state()
            .heartbeats
            .front()
            .is_some_and(|(_, sent, _)| boot_nanos().saturating_sub(*sent) > lease)
    }

    async fn heartbeat(self: Arc<Self>) {
        let (n, generation) = {
            let mut st = self.state();
            if st.listening_since.is_none() {
                return;
            }
            // Peers not heard for two leases hold none: forget them (restarted nodes come back
            // under new names).
            let (now, horizon) = (Instant::now(), self.options.horizon());
            st.peers.retain(|_, p| p.heard + horizon * 2 > now);
            st.next_heartbeat += 1;
            let n = st.next_heartbeat;
            let generation = st.generation;
            st.heartbeats.push_back((n, boot_nanos(), generation));
            (n, generation)
        };
        let caches = u8::from(self.rows.is_some());
        let payload = format!("h:{}:{n}:{caches}", self.node);
        if let Err(e) = self.notify(&payload).await {
            tracing::debug!(error = %e, "row-cache heartbeat could not be sent");
            let mut st = self.state();
            if st.generation == generation {
                st.heartbeats.retain(|(m, _, _)| *m != n);
            }
        }
    }

    /// Best effort: peers stop waiting for this store at once instead of at its lease's end.
    async fn bye(&self) {
        let bye = format!("bye:{}", self.node);
        let _ = tokio::time::timeout(Duration::from_millis(500), self.notify(&bye)).await;
    }

    /// Handles one notification of the channel. `Err` when it shows that notifications were
    /// lost on the way (a gap the connection did not report).
    fn receive(&self, payload: &str) -> Result<(), Lost> {
        let now = Instant::now();
        let mut parts = payload.splitn(4, ':');
        let (kind, node) = (parts.next(), parts.next());
        let (third, fourth) = (parts.next(), parts.next());
        let mine = node == Some(self.node.as_str());
        match (kind, node, third, fourth) {
            (Some("h"), Some(node), Some(n), Some(caches)) => {
                let Ok(n) = n.parse::<u64>() else {
                    self.unreadable();
                    return Ok(());
                };
                if mine {
                    return self.heartbeat_back(n);
                } else if caches == "1" {
                    let mut st = self.state();
                    st.peers
                        .entry(node.to_owned())
                        .and_modify(|p| p.heard = now)
                        .or_insert(Peer {
                            heard: now,
                            acked: 0,
                        });
                }
            }
            (Some("i"), Some(node), Some(seq), Some(ids)) => {
                let Ok(seq) = seq.parse::<u64>() else {
                    self.unreadable();
                    return Ok(());
                };
                if mine {
                    self.state().snapshot(seq, now, self.options.horizon());
                    self.changed.notify_waiters();
                } else if let Some(rows) = &self.rows {
                    if ids == "*" {
                        rows.forget_all();
                    } else {
                        for id in ids.split(',') {
                            match SessionId::parse(id) {
                                Ok(id) => rows.forget(&id),
                                // Not an id of ours: forget everything rather than guess.
                                Err(_) => rows.forget_all(),
                            }
                        }
                    }
                    let mut st = self.state();
                    let acked = st.acks.entry(node.to_owned()).or_insert(0);
                    *acked = (*acked).max(seq);
                    drop(st);
                    self.acks_ready.notify_one();
                }
            }
            (Some("a"), Some(node), Some(acks), None) => {
                let mut st = self.state();
                for ack in acks.split(',') {
                    let Some((origin, seq)) = ack.split_once('=') else {
                        continue;
                    };
                    if origin != self.node {
                        continue;
                    }
                    if let (Ok(seq), Some(peer)) = (seq.parse::<u64>(), st.peers.get_mut(node)) {
                        peer.acked = peer.acked.max(seq);
                    }
                }
                drop(st);
                self.changed.notify_waiters();
            }
            (Some("bye"), Some(node), None, None) => {
                self.state().peers.remove(node);
                self.changed.notify_waiters();
            }
            _ => self.unreadable(),
        }
        Ok(())
    }

    /// A notification that cannot be read may have been an invalidation: forget every row.
    fn unreadable(&self) {
        tracing::warn!(channel = %self.channel, "unreadable row-cache notification; forgetting every cached row");
        if let Some(rows) = &self.rows {
            rows.forget_all();
        }
    }

    /// Our heartbeat `n` came back: a lease from when it was sent, if it was sent since the
    /// last gap and this store caches rows. Heartbeats go out one at a time, in order, so an
    /// earlier one still out was published and never came back: notifications were lost.
    fn heartbeat_back(&self, n: u64) -> Result<(), Lost> {
        let mut st = self.state();
        let generation = st.generation;
        let Some(&(first, sent, of)) = st.heartbeats.front() else {
            return Ok(());
        };
        if first < n {
            return Err(Lost);
        }
        if first == n {
            st.heartbeats.pop_front();
            if of == generation && self.rows.is_some() {
                let until = sent.saturating_add(nanos(self.options.lease));
                self.lease_until.fetch_max(until, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Waits until invalidation `published` may be considered seen by every peer that could
    /// answer from a cache (see the module documentation).
    async fn acknowledged(&self, published: Published) {
        let cap = published.at + self.options.horizon();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let next = if now >= cap {
                None
            } else {
                self.state().waiting_on(published.seq, now)
            };
            // The snapshot stays: the other writers of the same notification wait on it too.
            // It is dropped once no writer can still be waiting on it (`State::snapshot`).
            let Some(next) = next else {
                return;
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(next.min(cap)) => {}
            }
        }
    }
}

/// A store's part in the protocol: its tasks run until the last clone is dropped or
/// [`Coherence::stop`].
pub(crate) struct Coherence {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Queued>,
    stop: watch::Sender<bool>,
}

impl fmt::Debug for Coherence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coherence")
            .field("channel", &self.shared.channel)
            .field("caches", &self.shared.rows.is_some())
            .field("leased", &self.leased())
            .finish_non_exhaustive()
    }
}

impl Drop for Coherence {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Coherence {
    /// Starts the store's listener, publisher and acknowledging tasks on the current runtime.
    /// `listen` is where the listening connection goes (the store's own database, or the URL
    /// the options name for it).
    pub(crate) fn start(
        pool: PgPool,
        listen: PgConnectOptions,
        channel: String,
        rows: Option<Arc<RowCache>>,
        options: LeaseOptions,
        timeouts: (Duration, Duration),
    ) -> Self {
        let (publish_timeout, connect_timeout) = timeouts;
        let node: String = random::bytes::<16>(&OsRandom)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shared = Arc::new(Shared {
            node,
            channel,
            pool,
            rows,
            options,
            publish_timeout,
            lease_until: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            acks_ready: Notify::new(),
        });
        let (queue, queued) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(listener_task(
            Arc::clone(&shared),
            listen,
            connect_timeout,
            stopped.clone(),
        ));
        tokio::spawn(publisher_task(Arc::clone(&shared), queued, stopped.clone()));
        tokio::spawn(ack_task(Arc::clone(&shared), stopped));
        Coherence {
            shared,
            queue,
            stop,
        }
    }

    /// Whether this store may answer from its cache now: it holds a lease.
    pub(crate) fn leased(&self) -> bool {
        boot_nanos() < self.shared.lease_until.load(Ordering::SeqCst)
    }

    /// Stops the tasks (a closed store): no lease, no cached row, and the other stores told,
    /// before the caller closes the pool.
    pub(crate) async fn stop(&self) {
        self.shared.gap();
        if !self.stop.send_replace(true) {
            self.shared.bye().await;
        }
    }

    /// Tells every other store that the rows of `scope` may have changed, and returns when no
    /// store can answer from an older copy any more (module documentation). Runs after the
    /// write, whatever its outcome.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the invalidation could not be published within the
    /// publish timeout. It stays queued and is published when the database answers again;
    /// meanwhile peers' leases run out unless they still hear their heartbeats.
    pub(crate) async fn announce(&self, scope: Scope) -> Result<(), StoreError> {
        if let Some(rows) = &self.shared.rows {
            rows.forget_scope(&scope);
        }
        let ids = match scope {
            Scope::One(id) => Some(vec![id.as_str().to_owned()]),
            Scope::Many(ids) if ids.is_empty() => return Ok(()),
            Scope::Many(ids) => Some(ids.iter().map(|id| id.as_str().to_owned()).collect()),
            Scope::All => None,
        };
        let (reply, published) = oneshot::channel();
        let unavailable = || {
            StoreError::Unavailable(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "the row-cache invalidation could not be published",
            )))
        };
        self.queue
            .send(Queued { ids, reply })
            .map_err(|_| unavailable())?;
        let published = match tokio::time::timeout(self.shared.publish_timeout, published).await {
            Ok(Ok(published)) => published,
            _ => return Err(unavailable()),
        };
        self.shared.acknowledged(published).await;
        Ok(())
    }
}

/// Listens, heartbeats, and turns every loss into a gap, until stopped.
async fn listener_task(
    shared: Arc<Shared>,
    connect: PgConnectOptions,
    connect_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let period = (shared.options.lease / 4).max(Duration::from_millis(10));
    let mut backoff = Duration::from_millis(100);
    while !*stopped.borrow() {
        let opened = tokio::select! {
            opened = listen(&connect, &shared.channel, connect_timeout) => opened,
            _ = stopped.changed() => break,
        };
        let listener = match opened {
            Ok(listener) => listener,
            Err(why) => {
                tracing::warn!(%why, "row-cache listener could not connect; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        shared.listening();
        let (out, mut received) = mpsc::channel(1024);
        let reader = tokio::spawn(read_notifications(listener, out));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One heartbeat out at a time, so they reach the channel in the order of their numbers.
        let mut beating: Option<tokio::task::JoinHandle<()>> = None;
        let why = loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => break None,
                r = received.recv() => match r {
                    Some(Received::Payload(p)) => {
                        if shared.receive(&p).is_err() {
                            break Some("row-cache notifications were lost".to_owned());
                        }
                    }
                    Some(Received::Lost(why)) => break Some(why),
                    None => break Some("row-cache listener task ended".to_owned()),
                },
                _ = ticker.tick() => {
                    if shared.heartbeat_overdue() {
                        break Some("row-cache heartbeat did not come back within a lease".to_owned());
                    }
                    if beating.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                        beating = Some(tokio::spawn(Arc::clone(&shared).heartbeat()));
                    }
                }
            }
        };
        reader.abort();
        if let Some(beating) = beating {
            beating.abort();
        }
        shared.gap();
        if let Some(why) = why {
            tracing::warn!(%why, "row-cache listener lost; no lease and no cached rows until it is back");
        }
    }
    shared.gap();
    if !shared.pool.is_closed() {
        shared.bye().await;
    }
}

/// Publishes queued invalidations, as many as are queued together in one notification, each
/// until it is published (the writers waiting on it may have given up; peers may not).
async fn publisher_task(
    shared: Arc<Shared>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut seq: u64 = 0;
    loop {
        let first = tokio::select! {
            q = queued.recv() => match q {
                Some(q) => q,
                None => return,
            },
            _ = stopped.changed() => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        seq += 1;
        let payload = invalidation(&shared.node, seq, &batch);
        // Retried soon: each attempt already waits up to the publish timeout for the database,
        // and writers queue behind this one.
        let mut wait = Duration::from_millis(20);
        loop {
            match shared.notify(&payload).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "row-cache invalidation could not be published; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => return,
                    }
                    wait = (wait * 2).min(Duration::from_millis(250));
                }
            }
        }
        let published = Published {
            seq,
            at: Instant::now(),
        };
        for q in batch {
            let _ = q.reply.send(published);
        }
    }
}

/// `i:<node>:<seq>:<ids>`, or `*` for the ids when any write named no ids or they are too long.
fn invalidation(node: &str, seq: u64, batch: &[Queued]) -> String {
    let mut ids = String::new();
    for q in batch {
        let Some(names) = &q.ids else {
            ids = "*".to_owned();
            break;
        };
        for id in names {
            if !ids.is_empty() {
                ids.push(',');
            }
            ids.push_str(id);
        }
        if ids.len() > MAX_IDS {
            ids = "*".to_owned();
            break;
        }
    }
    if ids.is_empty() {
        ids = "*".to_owned();
    }
    format!("i:{node}:{seq}:{ids}")
}

/// Sends acknowledgements as invalidations are handled, coalesced while one is in flight.
async fn ack_task(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = shared.acks_ready.notified() => {}
            _ = stopped.changed() => return,
        }
        let acks = std::mem::take(&mut shared.state().acks);
        if acks.is_empty() {
            continue;
        }
        let body: Vec<String> = acks.iter().map(|(o, s)| format!("{o}={s}")).collect();
        let payload = format!("a:{}:{}", shared.node, body.join(","));
        if let Err(e) = shared.notify(&payload).await {
            tracing::debug!(error = %e, "row-cache acknowledgement could not be sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_millis(2250);

    fn peer(heard: Instant, acked: u64) -> Peer {
        Peer { heard, acked }
    }

    #[test]
    fn a_writer_waits_for_its_echo_then_for_each_live_peer_until_acked_or_its_lease_ends() {
        let t0 = Instant::now();
        let mut st = State {
            listening_since: Some(t0 - Duration::from_secs(60)),
            ..State::default()
        };
        st.peers
            .insert("b".into(), peer(t0 - Duration::from_millis(100), 0));
        st.peers
            .insert("c".into(), peer(t0 - Duration::from_millis(500), 0));
        // A peer last heard longer ago than a lease holds none: not waited for.
        st.peers
            .insert("d".into(), peer(t0 - Duration::from_secs(5), 0));
        assert!(st.waiting_on(1, t0).is_some(), "no echo yet: wait");
        st.snapshot(1, t0, H);
        // c's lease ends first; the writer looks again then.
        assert_eq!(
            st.waiting_on(1, t0),
            Some(t0 - Duration::from_millis(500) + H)
        );
        st.peers.get_mut("c").unwrap().acked = 1;
        assert_eq!(
            st.waiting_on(1, t0),
            Some(t0 - Duration::from_millis(100) + H)
        );
        // b never answers: past its deadline the writer is done.
        assert_eq!(st.waiting_on(1, t0 - Duration::from_millis(100) + H), None);
        // Or b acknowledges a later invalidation, which covers this one.
        st.peers.get_mut("b").unwrap().acked = 7;
        assert_eq!(st.waiting_on(1, t0), None);
        // A peer heard after the echo is not waited for: its lease began after it handled ours.
        st.peers.insert("e".into(), peer(t0, 0));
        assert_eq!(st.waiting_on(1, t0), None);
    }

    #[test]
    fn a_store_that_just_began_listening_waits_for_peers_it_could_not_hear() {
        let t0 = Instant::now();
        let mut st = State {
            listening_since: Some(t0),
            ..State::default()
        };
        st.snapshot(1, t0 + Duration::from_millis(10), H);
        assert_eq!(
            st.waiting_on(1, t0 + Duration::from_millis(10)),
            Some(t0 + H)
        );
        assert_eq!(st.waiting_on(1, t0 + H), None);
    }

    #[test]
    fn a_peer_that_said_bye_is_not_waited_for() {
        let t0 = Instant::now();
        let mut st = State {
            listening_since: Some(t0 - Duration::from_secs(60)),
            ..State::default()
        };
        st.peers.insert("b".into(), peer(t0, 0));
        st.snapshot(1, t0, H);
        assert!(st.waiting_on(1, t0).is_some());
        st.peers.remove("b");
        assert_eq!(st.waiting_on(1, t0), None);
    }

    fn shared() -> Shared {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/none")
            .unwrap();
        let limits = crate::cache::CacheLimits::new(16, 1 << 16);
        Shared {
            node: "me".into(),
            channel: channel(None),
            pool,
            rows: RowCache::new(limits, Box::new(|| Box::pin(async {}))).map(Arc::new),
            options: LeaseOptions::default(),
            publish_timeout: Duration::from_secs(1),
            lease_until: AtomicU64::new(0),
            // Listening for long enough that no unheard peer is waited for.
            state: Mutex::new(State {
                listening_since: Instant::now().checked_sub(Duration::from_secs(60)),
                ..State::default()
            }),
            changed: Notify::new(),
            acks_ready: Notify::new(),
        }
    }

    fn sent(shared: &Shared, n: u64) {
        let mut st = shared.state();
        let generation = st.generation;
        st.heartbeats.push_back((n, boot_nanos(), generation));
    }

    #[tokio::test]
    async fn a_heartbeat_back_grants_a_lease_unless_one_before_it_was_lost() {
        let shared = shared();
        let lease = |s: &Shared| boot_nanos() < s.lease_until.load(Ordering::SeqCst);
        sent(&shared, 1);
        sent(&shared, 2);
        assert!(!lease(&shared));
        assert_eq!(shared.receive("h:me:1:1"), Ok(()));
        assert!(lease(&shared), "its own heartbeat back: a lease");
        // Heartbeat 3 comes back while 2, published before it, never did: lost on the way.
        sent(&shared, 3);
        assert_eq!(shared.receive("h:me:3:1"), Err(Lost));
        // After a gap, nothing sent before it grants a lease.
        sent(&shared, 4);
        shared.gap();
        assert!(!lease(&shared));
        shared.listening();
        assert_eq!(shared.receive("h:me:4:1"), Ok(()));
        assert!(
            !lease(&shared),
            "a heartbeat from before the gap granted a lease"
        );
    }

    /// Writers whose invalidations went out in one notification share its number: every one of
    /// them returns once it came back, not only the first.
    #[tokio::test]
    async fn every_writer_of_one_notification_returns_when_it_comes_back() {
        let shared = shared();
        let published = Published {
            seq: 1,
            at: Instant::now(),
        };
        assert_eq!(shared.receive("i:me:1:*"), Ok(()));
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(1), shared.acknowledged(published))
                .await
                .expect("a writer of the same notification waited for nothing");
        }
    }

    #[tokio::test]
    async fn peers_are_heard_acknowledge_and_leave() {
        let shared = shared();
        assert_eq!(shared.receive("h:other:1:1"), Ok(()));
        assert_eq!(shared.receive("h:nocache:1:0"), Ok(()));
        assert_eq!(shared.receive("i:me:5:*"), Ok(()));
        {
            let st = shared.state();
            let snap = &st.snapshots[&5];
            let names: Vec<&str> = snap.peers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["other"], "only caching peers are waited for");
        }
        assert!(shared.state().waiting_on(5, Instant::now()).is_some());
        // Acknowledgements for another origin do not count.
        assert_eq!(shared.receive("a:other:else=9"), Ok(()));
        assert!(shared.state().waiting_on(5, Instant::now()).is_some());
        assert_eq!(shared.receive("a:other:else=9,me=5"), Ok(()));
        assert_eq!(shared.state().waiting_on(5, Instant::now()), None);
    }

    #[tokio::test]
    async fn an_invalidation_from_a_peer_forgets_its_rows_and_is_acknowledged() {
        let shared = shared();
        let rows = shared.rows.clone().unwrap();
        let id = SessionId::generate(&OsRandom);
        let rec = {
            let now = crate::clock::Timestamp::from_unix_millis(1_795_000_000_000);
            let session = crate::session::Session {
                id: id.clone(),
                user_id: crate::id::UserId::new("u").unwrap(),
                tenant: crate::id::Tenant::default(),
                kind: crate::session::SessionKind::Cookie,
                created_at: now,
                last_seen_at: now,
                idle_expires_at: now,
                absolute_expires_at: now,
                revoked_at: None,
                revoke_reason: None,
                ip: None,
                user_agent: None,
                claims: serde_json::Map::new(),
            };
            crate::session::SessionRecord::new(
                session,
                crate::id::KeyId::generate(&OsRandom),
                None,
                None,
            )
        };
        rows.fill(rows.ticket(&id), &rec);
        assert!(rows.get(&rows.ticket(&id), || true).is_some());
        let other = SessionId::generate(&OsRandom);
        let payload = format!("i:peer:3:{},{}", other.as_str(), id.as_str());
        assert_eq!(shared.receive(&payload), Ok(()));
        assert!(rows.get(&rows.ticket(&id), || true).is_none());
        assert_eq!(shared.state().acks.get("peer"), Some(&3));
        // Unreadable: everything is forgotten.
        rows.fill(rows.ticket(&id), &rec);
        assert_eq!(shared.receive("i:peer:x:y"), Ok(()));
        assert_eq!(shared.receive("garbage"), Ok(()));
        assert!(rows.get(&rows.ticket(&id), || true).is_none());
    }

    #[test]
    fn invalidations_name_their_ids_or_everything() {
        let q = |ids: Option<Vec<&str>>| Queued {
            ids: ids.map(|v| v.into_iter().map(str::to_owned).collect()),
            reply: oneshot::channel().0,
        };
        assert_eq!(
            invalidation("n", 3, &[q(Some(vec!["a"])), q(Some(vec!["b", "c"]))]),
            "i:n:3:a,b,c"
        );
        assert_eq!(
            invalidation("n", 4, &[q(Some(vec!["a"])), q(None)]),
            "i:n:4:*"
        );
        let many: Vec<String> = (0..400).map(|i| format!("ses-{i:022}")).collect();
        let long = Queued {
            ids: Some(many),
            reply: oneshot::channel().0,
        };
        assert_eq!(invalidation("n", 5, &[long]), "i:n:5:*");
    }

    #[test]
    fn channels_are_per_schema_and_short() {
        assert_eq!(channel(None), "sessiond_rows");
        let long = "s".repeat(63);
        let c = channel(Some(&long));
        assert_eq!(c.len(), "sessiond_rows_".len() + 16);
        assert_ne!(c, channel(Some("other")));
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = boot_nanos();
        let b = boot_nanos();
        assert!(a > 0 && b >= a);
    }
}
