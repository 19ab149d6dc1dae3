//! The PostgreSQL session-row cache across nodes (docs/DESIGN.md §15.5): several stores on one
//! schema, each caching rows, each answering from memory only while it holds a lease on the
//! invalidation channel. A change that returned on one node is what the very next read answers
//! on every other, including a node cut from the channel, and a write whose caller gave up is
//! announced all the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::cache::{CacheLimits, CacheStats};
use sessiond::store::postgres::{PgOptions, PgStore};
use sessiond::store::{Revocation, SessionStore};
use sessiond::RevokeReason;
use tokio::task::JoinSet;

use crate::common::{
    fresh_schema, host_port, postgres_url, short_lease, FreezingProxy, SchemaGuard,
};
use crate::conformance::{record, t};

fn rows(store: &PgStore) -> CacheStats {
    store
        .cache_stats()
        .into_iter()
        .find_map(|(name, stats)| (name == "session_rows").then_some(stats))
        .unwrap_or_default()
}

fn options(schema: &sessiond::store::postgres::PgSchema) -> PgOptions {
    let mut options = PgOptions::default();
    options.schema = Some(schema.clone());
    options.max_connections = 4;
    options.lease = short_lease();
    options
}

struct Nodes {
    _guard: SchemaGuard,
    url: String,
    schema: sessiond::store::postgres::PgSchema,
}

async fn nodes() -> Nodes {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let guard = SchemaGuard::new(&url, &schema);
    Nodes {
        _guard: guard,
        url,
        schema,
    }
}

impl Nodes {
    async fn open(&self, options: PgOptions) -> Arc<PgStore> {
        Arc::new(PgStore::open(&self.url, options).await.unwrap())
    }

    async fn node(&self) -> Arc<PgStore> {
        self.open(options(&self.schema)).await
    }
}

/// Reads `id` on `store` until the read is answered from memory (the store holds a lease and the
/// row), so what follows is measured against a warm cache, never a read-through.
async fn warm(store: &PgStore, id: &sessiond::SessionId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = rows(store).hits;
        let row = store.session(id).await.unwrap().expect("the row exists");
        assert!(row.session.revoked_at.is_none());
        if rows(store).hits > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store never answered from its cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_node_is_what_the_next_read_on_every_other_node_answers() {
    let nodes = nodes().await;
    let (a, b, c) = (nodes.node().await, nodes.node().await, nodes.node().await);
    for round in 0..40 {
        let rec = record(&format!("rev{round}"), "default", 0, 3_600, 7_200);
        let id = rec.session.id.clone();
        a.create_session(&rec, None, t(0)).await.unwrap();
        for node in [&b, &c] {
            warm(node, &id).await;
        }
        let revoked = a
            .revoke_session(&id, t(10), &RevokeReason::logout())
            .await
            .unwrap();
        assert!(matches!(revoked, Revocation::Revoked(_)), "{revoked:?}");
        // No sleep: the very next read on every other node answers the revocation.
        for node in [&b, &c] {
            let row = node.session(&id).await.unwrap().unwrap();
            assert_eq!(row.session.revoked_at, Some(t(10)), "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_write_reaches_the_other_nodes_caches() {
    let nodes = nodes().await;
    let (a, b) = (nodes.node().await, nodes.node().await);
    let rec = record("writes", "default", 0, 3_600, 7_200);
    let id = rec.session.id.clone();
    a.create_session(&rec, None, t(0)).await.unwrap();

    warm(&b, &id).await;
    assert!(a.touch_session(&id, t(5), t(605), t(5)).await.unwrap());
    let row = b.session(&id).await.unwrap().unwrap();
    assert_eq!(row.session.last_seen_at, t(5));

    warm(&b, &id).await;
    let hash = [9u8; 32];
    assert!(a.set_csrf_hash(&id, &hash, t(6)).await.unwrap().is_some());
    assert_eq!(b.session(&id).await.unwrap().unwrap().csrf_hash, Some(hash));

    // A user-wide revocation names the rows it changed.
    let other = record("writes", "default", 0, 3_600, 7_200);
    a.create_session(&other, None, t(0)).await.unwrap();
    warm(&b, &id).await;
    warm(&b, &other.session.id).await;
    let revoked = a
        .revoke_user_sessions(
            &rec.session.user_id,
            None,
            None,
            t(7),
            &RevokeReason::logout(),
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2);
    for id in [&id, &other.session.id] {
        assert!(b
            .session(id)
            .await
            .unwrap()
            .unwrap()
            .session
            .revoked_at
            .is_some());
    }

    // An eviction by a create under a limit, too.
    let first = record("evict", "default", 0, 3_600, 7_200);
    a.create_session(&first, Some(1), t(0)).await.unwrap();
    warm(&b, &first.session.id).await;
    let second = record("evict", "default", 1, 3_600, 7_200);
    let evicted = a.create_session(&second, Some(1), t(1)).await.unwrap();
    assert_eq!(evicted.len(), 1);
    let row = b.session(&first.session.id).await.unwrap().unwrap();
    assert_eq!(
        row.session.revoke_reason.as_ref().map(|r| r.as_str()),
        Some("evicted")
    );
}

/// A store with its cache off (every one-shot admin command) still announces its writes and
/// waits for the nodes that cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_a_cache_announces_its_writes_to_those_with_one() {
    let nodes = nodes().await;
    let server = nodes.node().await;
    let mut cli_options = options(&nodes.schema);
    cli_options.row_cache = CacheLimits::off();
    let cli = nodes.open(cli_options).await;
    assert!(cli.cache_stats().is_empty(), "no cache, no counters");
    let rec = record("cli", "default", 0, 3_600, 7_200);
    server.create_session(&rec, None, t(0)).await.unwrap();
    warm(&server, &rec.session.id).await;
    cli.revoke_session(&rec.session.id, t(3), &RevokeReason::logout())
        .await
        .unwrap();
    let row = server.session(&rec.session.id).await.unwrap().unwrap();
    assert_eq!(row.session.revoked_at, Some(t(3)));
}

/// Bus cut, database reachable: the cut node's heartbeats stop coming back, its lease ends, and
/// it reads through; a revoke elsewhere waits for it no longer than its lease, and the very
/// next read on the cut node answers the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_channel_stops_answering_from_memory() {
    let nodes = nodes().await;
    let target = host_port(&nodes.url);
    let proxy = FreezingProxy::start(&target).await;
    let a = nodes.node().await;
    let mut cut_options = options(&nodes.schema);
    cut_options.listen_url = Some(nodes.url.replacen(&target, &proxy.addr.to_string(), 1));
    // A listening connection opened while the proxy is frozen gives up soon and tries again.
    cut_options.connect_timeout = Duration::from_secs(1);
    let b = nodes.open(cut_options).await;

    let rec = record("cut", "default", 0, 3_600, 7_200);
    let id = rec.session.id.clone();
    a.create_session(&rec, None, t(0)).await.unwrap();
    warm(&b, &id).await;
    // A second row b holds and does not read again until it is joined again.
    let unread = record("cut", "default", 0, 3_600, 7_200);
    a.create_session(&unread, None, t(0)).await.unwrap();
    warm(&b, &unread.session.id).await;

    // Silence, no FIN: the invalidation never reaches b, nor does its acknowledgement come.
    proxy.freeze(true);
    let started = Instant::now();
    a.revoke_session(&id, t(10), &RevokeReason::logout())
        .await
        .unwrap();
    let waited = started.elapsed();
    let lease = short_lease();
    assert!(
        waited < (lease.lease + lease.drift) * 4,
        "the revoke waited {waited:?} for a node that cannot answer"
    );
    let row = b.session(&id).await.unwrap().unwrap();
    assert_eq!(
        row.session.revoked_at,
        Some(t(10)),
        "the cut node answered a stale row"
    );

    // While cut, nothing is answered from memory.
    let before = rows(&b).hits;
    for _ in 0..5 {
        b.session(&id).await.unwrap();
    }
    assert_eq!(
        rows(&b).hits,
        before,
        "a node without a lease answered from memory"
    );

    a.revoke_session(&unread.session.id, t(10), &RevokeReason::logout())
        .await
        .unwrap();

    // Joined again: what the cut swallowed is found missing (b listens anew, forgetting every
    // row), and b caches again.
    proxy.freeze(false);
    let other = record("cut", "default", 0, 3_600, 7_200);
    a.create_session(&other, None, t(0)).await.unwrap();
    warm(&b, &other.session.id).await;
    a.revoke_session(&other.session.id, t(11), &RevokeReason::logout())
        .await
        .unwrap();
    let row = b.session(&other.session.id).await.unwrap().unwrap();
    assert_eq!(row.session.revoked_at, Some(t(11)));
    let row = b.session(&unread.session.id).await.unwrap().unwrap();
    assert_eq!(
        row.session.revoked_at,
        Some(t(10)),
        "a row revoked while the node was cut outlived the cut"
    );
}

/// A revoke whose caller gave up after it began (a client that hung up) still runs to its end
/// and is still announced: no node keeps the live row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_is_still_announced() {
    let nodes = nodes().await;
    let (a, b) = (nodes.node().await, nodes.node().await);
    let rec = record("gaveup", "default", 0, 3_600, 7_200);
    let id = rec.session.id.clone();
    a.create_session(&rec, None, t(0)).await.unwrap();
    warm(&b, &id).await;
    {
        let logout = RevokeReason::logout();
        let revoke = a.revoke_session(&id, t(10), &logout);
        // Polled once (the write is under way), then dropped.
        let gave_up = tokio::time::timeout(Duration::from_micros(1), revoke).await;
        assert!(
            gave_up.is_err(),
            "the revoke finished at once; nothing was given up"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = b.session(&id).await.unwrap().unwrap();
        if row.session.revoked_at.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned revoke never reached the other node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Misses racing revocations: one node reads every session over and over while another revokes
/// them all; once every revoke has returned, the reading node answers every one as revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_revokes_on_another_node_never_keep_a_live_row() {
    let nodes = nodes().await;
    let (a, b) = (nodes.node().await, nodes.node().await);
    let mut ids = Vec::new();
    for i in 0..64 {
        let rec = record(&format!("race{i}"), "default", 0, 3_600, 7_200);
        a.create_session(&rec, None, t(0)).await.unwrap();
        ids.push(rec.session.id.clone());
    }
    let ids = Arc::new(ids);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = JoinSet::new();
    for r in 0..4 {
        let (b, ids, stop) = (b.clone(), ids.clone(), stop.clone());
        readers.spawn(async move {
            let mut n = r;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                b.session(&ids[n % ids.len()]).await.unwrap();
                n += 7;
            }
        });
    }
    let mut revokes = JoinSet::new();
    for id in ids.iter() {
        let id = id.clone();
        let a = a.clone();
        revokes.spawn(async move {
            a.revoke_session(&id, t(10), &RevokeReason::logout())
                .await
                .unwrap()
        });
    }
    while let Some(r) = revokes.join_next().await {
        assert!(matches!(r.unwrap(), Revocation::Revoked(_)));
    }
    for id in ids.iter() {
        let row = b.session(id).await.unwrap().unwrap();
        assert!(
            row.session.revoked_at.is_some(),
            "a live row outlived its revoke"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    while readers.join_next().await.is_some() {}
    assert!(
        rows(&b).hits > 0,
        "the race never read from memory: {:?}",
        rows(&b)
    );
}
