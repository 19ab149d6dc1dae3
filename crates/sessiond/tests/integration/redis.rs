//! Redis as the one-time claim store: the claim conformance cases, what the script keeps in
//! Redis, failure behaviour (unreachable, silent, gone and back), and a service that keeps its
//! sessions in SQLite and its claims in Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::store::redis::{RedisClaimStore, RedisOptions};
use sessiond::store::{ClaimOutcome, ClaimStore, StoreError};
use sessiond::{ManualClock, MasterKey, SeededRandom, SessionKind, SessionService, Timestamp};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::common::{
    redis_claim_store, redis_url, secs, sqlite_backend, unique_redis_prefix, user, TestBackend, T0,
};

crate::claims_conformance_suite!(crate::common::redis_claims);

fn t(offset_secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0.unix_millis() + offset_secs * 1000)
}

fn fast_options() -> RedisOptions {
    let mut options = RedisOptions::default();
    options.key_prefix = unique_redis_prefix();
    options.connect_timeout = Duration::from_millis(300);
    options.response_timeout = Duration::from_millis(300);
    options
}

/// A plain connection to the test Redis, to look behind the store's back.
async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_key_holds_the_logical_expiry_and_a_ttl_of_the_remaining_lifetime() {
    let store = redis_claim_store().await;
    assert_eq!(
        store.claim("ttl", t(60), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let key = format!("{}ttl", store.key_prefix());
    let mut raw = raw_redis().await;
    let (value, pttl): (i64, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(value, t(60).unix_millis());
    assert!(
        (55_000..=60_000).contains(&pttl),
        "Redis collects the key by itself after the claim's remaining lifetime: {pttl}"
    );
    // The Expired outcome records nothing.
    assert_eq!(
        store.claim("never", t(0), t(0)).await.unwrap(),
        ClaimOutcome::Expired
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{}never", store.key_prefix()))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(store.delete_expired_claims(t(1000), 100).await.unwrap(), 0);
}

#[tokio::test]
async fn the_script_is_reloaded_after_redis_forgets_it() {
    let store = redis_claim_store().await;
    let mut raw = raw_redis().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        store.claim("flushed", t(60), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim("flushed", t(60), t(1)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
}

#[tokio::test]
async fn a_foreign_value_under_the_prefix_is_corrupt_and_left_alone() {
    let store = redis_claim_store().await;
    let key = format!("{}foreign", store.key_prefix());
    let mut raw = raw_redis().await;
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("not-a-time")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let err = store.claim("foreign", t(60), t(0)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { what: "claim" }),
        "{err:?}"
    );
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(value, "not-a-time");
}

/// Nothing listens on port 1: every path answers `Unavailable` at once, never hangs.
#[tokio::test]
async fn a_closed_port_is_unavailable_promptly() {
    let options = fast_options();
    let bound = options.connect_timeout + options.response_timeout + Duration::from_secs(1);
    let url = "redis://127.0.0.1:1";

    let started = Instant::now();
    let err = RedisClaimStore::connect(url, options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < bound,
        "connect took {:?}",
        started.elapsed()
    );

    let lazy = RedisClaimStore::connect_lazy(url, options).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = lazy.claim("x", t(60), t(0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < bound,
            "claim took {:?}",
            started.elapsed()
        );
        let err = lazy.ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}

/// A server that accepts connections and never answers: bounded by the timeouts.
#[tokio::test]
async fn a_silent_server_is_unavailable_within_the_timeouts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let options = fast_options();
    let bound = options.connect_timeout + options.response_timeout + Duration::from_secs(1);
    let url = format!("redis://{addr}");

    let started = Instant::now();
    let err = RedisClaimStore::connect(&url, options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < bound,
        "connect took {:?}",
        started.elapsed()
    );

    let lazy = RedisClaimStore::connect_lazy(&url, options).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = lazy.claim("x", t(60), t(0)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < bound,
            "claim took {:?}",
            started.elapsed()
        );
    }
    silent.abort();
}

/// A TCP proxy in front of the test Redis that can be taken down (listener closed, every
/// connection cut) and brought back on the same port.
struct Proxy {
    addr: SocketAddr,
    target: String,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let mut proxy = Proxy {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            tasks: JoinSet::new(),
        };
        proxy.up().await;
        proxy
    }

    async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let target = self.target.clone();
        self.tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    /// Closes the listener and every proxied connection (dropping the accept task drops its
    /// `JoinSet`, which aborts the connection tasks).
    async fn down(&mut self) {
        self.tasks.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_recover_without_a_restart_when_redis_returns() {
    let url = redis_url();
    let info = redis::Client::open(url.as_str()).unwrap();
    let (host, port) = match info.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => panic!("the proxy test needs a plain TCP REDIS_URL, not {other:?}"),
    };
    let mut proxy = Proxy::start(format!("{host}:{port}")).await;
    let proxied = url.replacen(&format!("{host}:{port}"), &proxy.addr.to_string(), 1);
    let options = fast_options();
    let bound = options.connect_timeout + options.response_timeout + Duration::from_secs(1);
    let store = RedisClaimStore::connect(&proxied, options).await.unwrap();
    assert_eq!(
        store.claim("before", t(60), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );

    proxy.down().await;
    for i in 0..3 {
        let started = Instant::now();
        let err = store.claim(&format!("during-{i}"), t(60), t(0)).await;
        assert!(
            matches!(err, Err(StoreError::Unavailable(_))),
            "while Redis is away: {err:?}"
        );
        assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    }

    // Let the reconnection that the last failure started fail too, as it would in a real
    // outage: the store must not keep answering with that stale failure once Redis is back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.up().await;
    // The first claim after Redis is back goes through, on the same store.
    assert_eq!(
        store.claim("after", t(60), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim("before", t(60), t(1)).await.unwrap(),
        ClaimOutcome::AlreadyUsed,
        "claims made before the outage are still there"
    );
    store.ping().await.unwrap();
    proxy.down().await;
}

/// A service with its sessions in a fresh SQLite database and its claims in `claims`, on a
/// manual clock at [`T0`]; the backend is returned to keep its directory alive.
async fn service_with_claims(
    claims: Arc<dyn ClaimStore>,
) -> (SessionService, ManualClock, TestBackend) {
    let backend = sqlite_backend().await;
    let clock = ManualClock::new(T0);
    let service = SessionService::builder(backend.store.clone(), MasterKey::from_bytes([7; 32]))
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(42)))
        .claim_store(claims)
        .start()
        .await
        .unwrap();
    (service, clock, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_keeps_its_claims_in_redis() {
    let redis = redis_claim_store().await;
    let (service, clock, backend) = service_with_claims(redis.clone()).await;

    // Our own access token: once.
    let created = service
        .create_token_session(user("rue"), SessionKind::Tokens)
        .await
        .unwrap();
    let token = created.tokens.access_token.expose();
    assert_eq!(service.claim_token(token).await.unwrap().issuer, "sessiond");
    assert_eq!(
        service.claim_token(token).await.unwrap_err().code(),
        "token_already_used"
    );

    // A raw id: once, in Redis and not in SQLite.
    let until = service.now().saturating_add(secs(60));
    assert_eq!(
        service.claim("enrol-1", until).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        service.claim("enrol-1", until).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
    assert_eq!(
        redis
            .claim("id:enrol-1", until, service.now())
            .await
            .unwrap(),
        ClaimOutcome::AlreadyUsed,
        "the claim is in Redis"
    );
    assert_eq!(
        backend
            .store
            .claim("id:enrol-1", until, service.now())
            .await
            .unwrap(),
        ClaimOutcome::Claimed,
        "and not in the main backend"
    );

    // 100 concurrent claims of one id: exactly one winner.
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (service, barrier) = (service.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            service.claim("contested", until).await.unwrap()
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::AlreadyUsed => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);

    // After expiry the id is free again; the GC sweep has nothing to do in Redis.
    clock.advance(secs(60));
    assert_eq!(service.gc().await.unwrap().claims, 0);
    let later = service.now().saturating_add(secs(60));
    assert_eq!(
        service.claim("enrol-1", later).await.unwrap(),
        ClaimOutcome::Claimed
    );
}

#[tokio::test]
async fn a_service_whose_redis_is_unreachable_answers_unavailable() {
    let lazy = RedisClaimStore::connect_lazy("redis://127.0.0.1:1", fast_options()).unwrap();
    let (service, _clock, _backend) = service_with_claims(Arc::new(lazy)).await;
    let until = service.now().saturating_add(secs(60));
    let err = service.claim("enrol-1", until).await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err:?}");
    let created = service
        .create_token_session(user("sam"), SessionKind::Tokens)
        .await
        .unwrap();
    let err = service
        .claim_token(created.tokens.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err:?}");
}
