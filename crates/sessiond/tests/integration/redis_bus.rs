//! `RedisEventBus`: two `SessionService`s sharing one SQLite database and one Redis channel act
//! as two nodes. Revocations and refreshes on node A reach node B's watches and subscriptions;
//! a lost subscriber connection is reported as a lag and the watch still ends correctly by
//! re-reading its row; an unreachable Redis fails a publish promptly without failing the
//! revocation.
//!
//! This is cross-process plumbing, so real time is used, with short bounds. Every test has its
//! own channel, and connections are cut through a proxy of the test's own (or killed by their
//! address), never by stopping Redis or killing other clients.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond::events::redis::{RedisBusOptions, RedisEventBus};
use sessiond::events::{EventError, RecvError, Subscription};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{
    EndReason, EventBus, EventKind, ManualClock, MasterKey, RequestContext, RevokeOutcome,
    RevokeReason, SeededRandom, SessionEvent, SessionKind, SessionService,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::common::{redis_url, unique_redis_prefix, user, FreezingProxy, T0};

/// How long a cross-node event may take here.
const PROMPT: Duration = Duration::from_secs(1);

fn options() -> RedisBusOptions {
    let mut options = RedisBusOptions::default();
    options.channel = format!("{}events", unique_redis_prefix());
    options.connect_timeout = Duration::from_millis(300);
    options.response_timeout = Duration::from_millis(300);
    options.reconnect_min = Duration::from_millis(50);
    options.reconnect_max = Duration::from_millis(400);
    options
}

/// Two nodes: services over one SQLite file (each with its own pool) and one clock, each
/// publishing on its own bus.
struct Nodes {
    a: SessionService,
    b: SessionService,
    _dir: tempfile::TempDir,
}

async fn nodes(bus_a: Arc<dyn EventBus>, bus_b: Arc<dyn EventBus>) -> Nodes {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let clock = ManualClock::new(T0);
    let mut services = Vec::new();
    for (seed, bus) in [(1, bus_a), (2, bus_b)] {
        let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap();
        let service = SessionService::builder(Arc::new(store), MasterKey::from_bytes([7; 32]))
            .clock(Arc::new(clock.clone()))
            .random(Arc::new(SeededRandom::new(seed)))
            .event_bus(bus)
            .start()
            .await
            .unwrap();
        services.push(service);
    }
    let b = services.pop().unwrap();
    let a = services.pop().unwrap();
    Nodes { a, b, _dir: dir }
}

async fn bus(url: &str, options: RedisBusOptions) -> Arc<RedisEventBus> {
    Arc::new(
        RedisEventBus::connect(url, options)
            .await
            .unwrap_or_else(|e| panic!("no Redis at REDIS_URL: {e:?}")),
    )
}

async fn recv(sub: &mut Subscription) -> Result<SessionEvent, RecvError> {
    tokio::time::timeout(PROMPT, sub.recv())
        .await
        .expect("nothing arrived in time")
}

async fn nothing_more(sub: &mut Subscription) {
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(extra.is_err(), "unexpected: {extra:?}");
}

async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_node_b_ends_promptly_when_node_a_revokes() {
    let options = options();
    let url = redis_url();
    let (bus_a, bus_b) = (
        bus(&url, options.clone()).await,
        bus(&url, options.clone()).await,
    );
    let n = nodes(bus_a, bus_b).await;
    let created = n.a.create_cookie_session(user("alice")).await.unwrap();
    let id = created.session.id.clone();
    let watch = n.b.watch(&id, None).await.unwrap();
    assert!(watch.ended().is_none());
    let watching = tokio::spawn(watch.wait());

    let started = Instant::now();
    assert_eq!(
        n.a.revoke(&id, &RevokeReason::logout()).await.unwrap(),
        RevokeOutcome::Revoked
    );
    let end = tokio::time::timeout(PROMPT, watching)
        .await
        .expect("the watch on node B did not end in time")
        .unwrap();
    assert_eq!(
        end,
        EndReason::Revoked {
            reason: Some(RevokeReason::logout())
        }
    );
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert_eq!(n.b.metrics().snapshot().watch_lags, 0, "the event did it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_events_reach_the_other_node_and_this_one_exactly_once() {
    let options = options();
    let url = redis_url();
    let (bus_a, bus_b) = (
        bus(&url, options.clone()).await,
        bus(&url, options.clone()).await,
    );
    let n = nodes(bus_a.clone(), bus_b.clone()).await;
    let mut on_a = n.a.events().subscribe();
    let mut on_b = n.b.events().subscribe();

    let created =
        n.a.create_token_session(user("bob"), SessionKind::Tokens)
            .await
            .unwrap();
    let refreshed =
        n.a.refresh(
            created.tokens.refresh_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    for sub in [&mut on_b, &mut on_a] {
        let event = recv(sub).await.unwrap();
        assert_eq!(event.kind, EventKind::Refreshed);
        assert_eq!(event.session_id, refreshed.session.id);
        assert_eq!(event.user_id.as_str(), "bob");
        // Local subscribers hear their own node's events through Redis, once.
        nothing_more(sub).await;
    }

    // A refresh on node B is heard on node A too.
    n.b.refresh(
        refreshed.tokens.refresh_token.expose(),
        &RequestContext::default(),
    )
    .await
    .unwrap();
    assert_eq!(recv(&mut on_a).await.unwrap().kind, EventKind::Refreshed);
    assert_eq!(recv(&mut on_b).await.unwrap().kind, EventKind::Refreshed);
    assert_eq!(n.a.metrics().snapshot().event_publish_errors, 0);
}

#[tokio::test]
async fn many_subscriptions_share_one_redis_connection() {
    let options = options();
    let bus = bus(&redis_url(), options.clone()).await;
    let subs: Vec<Subscription> = (0..50).map(|_| bus.subscribe()).collect();
    assert_eq!(bus.subscriber_count(), 50);
    let mut raw = raw_redis().await;
    let (_channel, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&options.channel)
        .query_async::<Vec<(String, u64)>>(&mut raw)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(count, 1);
    drop(subs);
}

#[tokio::test]
async fn an_undecodable_message_is_reported_as_a_lag() {
    let options = options();
    let bus = bus(&redis_url(), options.clone()).await;
    let mut sub = bus.subscribe();
    let mut raw = raw_redis().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&options.channel)
        .arg("{\"kind\":\"teleported\"}")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
}

#[tokio::test]
async fn health_check_pings_keep_a_quiet_subscription_without_gaps() {
    let mut options = options();
    options.ping_interval = Duration::from_millis(50);
    let bus = bus(&redis_url(), options.clone()).await;
    let mut sub = bus.subscribe();
    // Ten pings on the subscribed connection: none is taken for a lost connection.
    nothing_more(&mut sub).await;
    nothing_more(&mut sub).await;
    assert!(bus.is_subscribed());
    let mut raw = raw_redis().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&options.channel)
        .arg(
            serde_json::to_string(&SessionEvent::new(
                EventKind::Refreshed,
                sessiond::SessionId::generate(&sessiond::OsRandom),
                sessiond::UserId::new("quiet").unwrap(),
                None,
                None,
                T0,
            ))
            .unwrap(),
        )
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await.unwrap().user_id.as_str(), "quiet");
}

#[tokio::test]
async fn dropping_the_bus_closes_its_subscriptions() {
    let bus = bus(&redis_url(), options()).await;
    let mut sub = bus.subscribe();
    drop(bus);
    assert_eq!(recv(&mut sub).await, Err(RecvError::Closed));
}

/// A TCP proxy in front of the test Redis that records the address each proxied connection
/// has towards Redis (so a test can `CLIENT KILL` exactly its own connections), and can be
/// taken down (listener closed, every connection cut) and brought back on the same port.
struct Proxy {
    addr: SocketAddr,
    target: String,
    upstream: Arc<Mutex<Vec<SocketAddr>>>,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let url = redis_url();
        let info = redis::Client::open(url.as_str()).unwrap();
        let target = match info.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => panic!("the proxy tests need a plain TCP REDIS_URL, not {other:?}"),
        };
        let mut proxy = Proxy {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            upstream: Arc::default(),
            tasks: JoinSet::new(),
        };
        proxy.up().await;
        proxy
    }

    fn url(&self) -> String {
        redis_url().replacen(&self.target, &self.addr.to_string(), 1)
    }

    async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener: TcpListener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let (target, upstream) = (self.target.clone(), self.upstream.clone());
        self.tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let (target, upstream) = (target.clone(), upstream.clone());
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        if let Ok(local) = server.local_addr() {
                            upstream.lock().unwrap().push(local);
                        }
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    async fn down(&mut self) {
        self.tasks.shutdown().await;
    }

    /// `CLIENT KILL TYPE pubsub ADDR …` for every connection this proxy opened: the server
    /// drops exactly our subscriber connection. Returns how many were killed.
    async fn kill_subscribers(&self) -> u64 {
        let mut raw = raw_redis().await;
        let mut killed = 0;
        let addrs = self.upstream.lock().unwrap().clone();
        for addr in addrs {
            killed += redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .arg("ADDR")
                .arg(addr.to_string())
                .query_async::<u64>(&mut raw)
                .await
                .unwrap();
        }
        killed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_connection_is_a_lag_then_delivery_resumes() {
    let options = options();
    let proxy = Proxy::start().await;
    let bus_b = bus(&proxy.url(), options.clone()).await;
    let bus_a = bus(&redis_url(), options.clone()).await;
    let n = nodes(bus_a, bus_b.clone()).await;
    let mut sub = bus_b.subscribe();

    assert_eq!(proxy.kill_subscribers().await, 1);
    // The loss, then the resubscription: both are gaps.
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    assert!(bus_b.is_subscribed());

    let created = n.a.create_cookie_session(user("carol")).await.unwrap();
    n.a.revoke(&created.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    let event = recv(&mut sub).await.unwrap();
    assert_eq!(event.kind, EventKind::Revoked);
    assert_eq!(event.session_id, created.session.id);
    assert_eq!(event.reason.as_deref(), Some("logout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_missed_during_an_outage_still_ends_the_watch_via_the_reread() {
    let mut options = options();
    // Long enough that only the resubscription's lag can end the watch in this test.
    options.reconnect_max = Duration::from_secs(30);
    options.reconnect_min = Duration::from_millis(50);
    let mut proxy = Proxy::start().await;
    let bus_b = bus(&proxy.url(), options.clone()).await;
    let bus_a = bus(&redis_url(), options.clone()).await;
    let n = nodes(bus_a, bus_b.clone()).await;
    let created = n.a.create_cookie_session(user("dave")).await.unwrap();
    let id = created.session.id.clone();
    let watching = tokio::spawn(n.b.watch(&id, None).await.unwrap().wait());

    proxy.down().await;
    while bus_b.is_subscribed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the watch finish the re-read the loss triggered, so it holds the unrevoked row.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Node B cannot hear this one.
    n.a.revoke(&id, &RevokeReason::logout()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watching.is_finished(), "nothing told node B yet");

    proxy.up().await;
    let end = tokio::time::timeout(Duration::from_secs(3), watching)
        .await
        .expect("the watch did not end after the bus came back")
        .unwrap();
    assert_eq!(
        end,
        EndReason::Revoked {
            reason: Some(RevokeReason::logout())
        }
    );
    assert!(
        n.b.metrics().snapshot().watch_lags >= 1,
        "found by the re-read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_redis_unreachable_is_unavailable_and_the_revoke_succeeds() {
    let options = options();
    let bound = options.connect_timeout + options.response_timeout + Duration::from_secs(1);
    let down =
        Arc::new(RedisEventBus::connect_lazy("redis://127.0.0.1:1", options.clone()).unwrap());

    let event = SessionEvent::new(
        EventKind::Revoked,
        sessiond::SessionId::generate(&sessiond::OsRandom),
        sessiond::UserId::new("erin").unwrap(),
        None,
        Some("logout".to_owned()),
        T0,
    );
    for _ in 0..3 {
        let started = Instant::now();
        let err = down.publish(event.clone()).await.unwrap_err();
        assert!(matches!(err, EventError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    }
    assert!(!down.is_subscribed());
    let err = RedisEventBus::connect("redis://127.0.0.1:1", options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, EventError::Unavailable(_)), "{err:?}");

    let up = bus(&redis_url(), options).await;
    let n = nodes(down, up).await;
    let created = n.a.create_cookie_session(user("erin")).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        n.a.revoke(&created.session.id, &RevokeReason::logout())
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert_eq!(n.a.metrics().snapshot().event_publish_errors, 1);
    let row = n.b.session(&created.session.id).await.unwrap().unwrap();
    assert!(row.revoked_at.is_some(), "the revocation itself happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscriber_connection_is_found_by_its_ping_and_replaced() {
    let mut options = options();
    options.ping_interval = Duration::from_millis(100);
    options.response_timeout = Duration::from_millis(300);
    let target = match redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_connection_info()
        .addr()
    {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("needs a plain TCP REDIS_URL, not {other:?}"),
    };
    let proxy = FreezingProxy::start(&target).await;
    let addr = proxy.addr;
    let url = redis_url().replacen(&target, &addr.to_string(), 1);
    let bus_b = bus(&url, options.clone()).await;
    let bus_a = bus(&redis_url(), options.clone()).await;
    let mut sub = bus_b.subscribe();

    proxy.freeze(true);
    // Found within one ping period plus the response timeout, then reported.
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    assert!(!bus_b.is_subscribed());
    proxy.freeze(false);
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    assert!(bus_b.is_subscribed());

    let event = SessionEvent::new(
        EventKind::Revoked,
        sessiond::SessionId::generate(&sessiond::OsRandom),
        sessiond::UserId::new("frank").unwrap(),
        None,
        Some("logout".to_owned()),
        T0,
    );
    bus_a.publish(event.clone()).await.unwrap();
    assert_eq!(recv(&mut sub).await.unwrap(), event);
}
