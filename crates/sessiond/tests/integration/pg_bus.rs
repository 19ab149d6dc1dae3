//! `PgEventBus`: two `SessionService`s sharing one SQLite database, each with its own bus on one
//! PostgreSQL channel, act as two nodes. Revocations on node A reach node B's watches; a
//! terminated listening connection is reported as a lag and delivery resumes; a quiet listener
//! survives its heartbeats; an undecodable payload is a lag.
//!
//! Cross-process plumbing, so real time with short bounds. Every test has its own channel, and
//! the only connection ever terminated is the test's own listener (found by its `LISTEN`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::events::postgres::{PgBusOptions, PgEventBus};
use sessiond::events::{RecvError, Subscription};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{
    EndReason, EventBus, EventKind, ManualClock, MasterKey, RevokeOutcome, RevokeReason,
    SeededRandom, SessionEvent, SessionService,
};
use sqlx::{Connection, PgConnection};

use crate::common::{host_port, postgres_url, unique_redis_prefix, user, FreezingProxy, T0};

/// How long a cross-node event may take here.
const PROMPT: Duration = Duration::from_secs(2);

fn options() -> PgBusOptions {
    let mut options = PgBusOptions::default();
    // `unique_redis_prefix` is unique per test and process; fold it into a channel name.
    options.channel = format!(
        "sessiond_t_{}",
        unique_redis_prefix().replace([':', '-'], "_")
    );
    options.channel.truncate(63);
    options.connect_timeout = Duration::from_secs(2);
    options.publish_timeout = Duration::from_secs(2);
    options.reconnect_min = Duration::from_millis(50);
    options.reconnect_max = Duration::from_millis(400);
    options
}

async fn bus(options: PgBusOptions) -> Arc<PgEventBus> {
    Arc::new(
        PgEventBus::connect(&postgres_url().await, options)
            .await
            .unwrap_or_else(|e| panic!("no PostgreSQL listener: {e:?}")),
    )
}

async fn recv(sub: &mut Subscription) -> Result<SessionEvent, RecvError> {
    tokio::time::timeout(PROMPT, sub.recv())
        .await
        .expect("nothing arrived in time")
}

async fn nothing_more(sub: &mut Subscription, wait: Duration) {
    let extra = tokio::time::timeout(wait, sub.recv()).await;
    assert!(extra.is_err(), "unexpected: {extra:?}");
}

/// Skips the lag a fresh subscription may see while the listener comes up.
async fn settle(sub: &mut Subscription) {
    while tokio::time::timeout(Duration::from_millis(100), sub.recv())
        .await
        .is_ok()
    {}
}

fn event(user: &str) -> SessionEvent {
    SessionEvent::new(
        EventKind::Refreshed,
        sessiond::SessionId::generate(&sessiond::OsRandom),
        sessiond::UserId::new(user).unwrap(),
        None,
        None,
        T0,
    )
}

async fn raw_notify(channel: &str, payload: &str) {
    let mut conn = PgConnection::connect(&postgres_url().await).await.unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_node_b_ends_promptly_when_node_a_revokes() {
    let options = options();
    let (bus_a, bus_b) = (bus(options.clone()).await, bus(options.clone()).await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let clock = ManualClock::new(T0);
    let mut services = Vec::new();
    for (seed, bus) in [(1, bus_a), (2, bus_b)] {
        let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap();
        let bus: Arc<dyn EventBus> = bus;
        services.push(
            SessionService::builder(Arc::new(store), MasterKey::from_bytes([7; 32]))
                .clock(Arc::new(clock.clone()))
                .random(Arc::new(SeededRandom::new(seed)))
                .event_bus(bus)
                .start()
                .await
                .unwrap(),
        );
    }
    let (a, b) = (&services[0], &services[1]);
    let created = a.create_cookie_session(user("alice")).await.unwrap();
    let id = created.session.id.clone();
    let watch = b.watch(&id, None).await.unwrap();
    assert!(watch.ended().is_none());
    let watching = tokio::spawn(watch.wait());
    let started = Instant::now();
    assert_eq!(
        a.revoke(&id, &RevokeReason::logout()).await.unwrap(),
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
    assert_eq!(b.metrics().snapshot().watch_lags, 0, "the event did it");
}

#[tokio::test]
async fn events_reach_every_bus_on_the_channel_once() {
    let options = options();
    let (a, b) = (bus(options.clone()).await, bus(options.clone()).await);
    let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
    settle(&mut on_a).await;
    settle(&mut on_b).await;
    a.publish(event("once")).await.unwrap();
    for sub in [&mut on_a, &mut on_b] {
        assert_eq!(recv(sub).await.unwrap().user_id.as_str(), "once");
        nothing_more(sub, Duration::from_millis(200)).await;
    }
    // Another channel hears nothing of it.
    let other = bus(self::options()).await;
    let mut elsewhere = other.subscribe();
    settle(&mut elsewhere).await;
    a.publish(event("not-yours")).await.unwrap();
    nothing_more(&mut elsewhere, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_undecodable_payload_is_reported_as_a_lag() {
    let options = options();
    let bus = bus(options.clone()).await;
    let mut sub = bus.subscribe();
    settle(&mut sub).await;
    raw_notify(&options.channel, "{\"kind\":\"teleported\"}").await;
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_listener_without_gaps() {
    let mut options = options();
    options.heartbeat_interval = Duration::from_millis(50);
    options.heartbeat_timeout = Duration::from_millis(1000);
    // Two buses on the channel: each ignores the other's heartbeats.
    let (bus, _neighbour) = (bus(options.clone()).await, self::bus(options.clone()).await);
    let mut sub = bus.subscribe();
    settle(&mut sub).await;
    // About twenty heartbeats each: none surfaces, none is taken for a lost connection.
    nothing_more(&mut sub, Duration::from_secs(1)).await;
    assert!(bus.is_listening());
    raw_notify(
        &options.channel,
        &serde_json::to_string(&event("quiet")).unwrap(),
    )
    .await;
    assert_eq!(recv(&mut sub).await.unwrap().user_id.as_str(), "quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_is_a_lag_then_delivery_resumes() {
    let options = options();
    let bus = bus(options.clone()).await;
    let publisher = self::bus(options.clone()).await;
    let mut sub = bus.subscribe();
    settle(&mut sub).await;

    // Terminate exactly the listening connections of this channel (both buses'), as an
    // administrator or a fail-over would.
    let mut admin = PgConnection::connect(&postgres_url().await).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE query = $1")
        .bind(format!("LISTEN \"{}\"", options.channel))
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(pids.len(), 2, "one listener per bus");
    for pid in pids {
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    }
    admin.close().await.unwrap();

    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    // Back up: a lag again when it listens again, then events flow.
    let deadline = Instant::now() + PROMPT;
    loop {
        if bus.is_listening() && publisher.is_listening() {
            break;
        }
        assert!(Instant::now() < deadline, "the listener did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle(&mut sub).await;
    publisher.publish(event("after")).await.unwrap();
    assert_eq!(recv(&mut sub).await.unwrap().user_id.as_str(), "after");
}

#[tokio::test]
async fn dropping_the_bus_closes_its_subscriptions() {
    let bus = bus(options()).await;
    let mut sub = bus.subscribe();
    drop(bus);
    loop {
        match recv(&mut sub).await {
            Err(RecvError::Closed) => break,
            Err(RecvError::Lagged { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_is_found_by_its_heartbeat_and_replaced() {
    let mut options = options();
    options.heartbeat_interval = Duration::from_millis(100);
    options.heartbeat_timeout = Duration::from_millis(300);
    options.publish_timeout = Duration::from_millis(300);
    options.connect_timeout = Duration::from_millis(500);
    let url = postgres_url().await;
    let target = host_port(&url);
    let proxy = FreezingProxy::start(&target).await;
    let addr = proxy.addr;
    let proxied = PgEventBus::connect(
        &url.replacen(&target, &addr.to_string(), 1),
        options.clone(),
    )
    .await
    .unwrap();
    let direct = bus(options.clone()).await;
    let mut sub = proxied.subscribe();
    settle(&mut sub).await;
    direct.publish(event("before")).await.unwrap();
    assert_eq!(recv(&mut sub).await.unwrap().user_id.as_str(), "before");

    // Silence, no FIN: only the heartbeat can tell.
    proxy.freeze(true);
    let started = Instant::now();
    assert_eq!(recv(&mut sub).await, Err(RecvError::Lagged { missed: 0 }));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Thawed: a new listener comes up and events flow again.
    proxy.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        settle(&mut sub).await;
        if proxied.is_listening() {
            direct.publish(event("after")).await.unwrap();
            if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
                assert_eq!(e.user_id.as_str(), "after");
                break;
            }
        }
        assert!(Instant::now() < deadline, "delivery did not resume");
    }
}
