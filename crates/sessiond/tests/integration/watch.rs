//! Live enforcement: `SessionService::watch` on the manual clock, and the lifecycle events the
//! service publishes.
//!
//! Tokio time is paused (`start_paused`): the watch's re-check tick only fires when a test calls
//! `tokio::time::advance`, while the wall clock the deadlines are judged by is the `ManualClock`.
//! The two are moved independently, which is exactly a wall-clock jump. SQLite answers on its
//! own worker thread, and a paused runtime waiting for it would auto-advance tokio time to the
//! next timer (firing the pool's acquire timeout, or a watch's tick); `freeze` keeps a blocking
//! task alive for the whole test, which turns auto-advance off, so tokio time moves only by
//! `advance` and "within one tick" below is exact.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessiond::events::{EventError, Subscription};
use sessiond::store::Revocation;
use sessiond::{
    EndReason, EventBus, EventKind, ExtraDeadline, InProcessBus, ManualClock, MasterKey,
    RequestContext, RevokeOutcome, RevokeReason, SeededRandom, ServiceConfig, SessionEvent,
    SessionId, SessionKind, SessionService, Tenant, UserId,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::common::{env, env_with, secs, sqlite_backend, user, TestEnv, T0};

/// The default `watch_recheck`.
const TICK: Duration = Duration::from_secs(1);

/// A service like `common::env_with`, publishing on `bus`.
async fn env_with_bus(config: ServiceConfig, bus: Arc<dyn EventBus>) -> TestEnv {
    let backend = sqlite_backend().await;
    let clock = ManualClock::new(T0);
    let master = MasterKey::from_bytes([7u8; 32]);
    let service = SessionService::builder(backend.store.clone(), master.clone())
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(42)))
        .config(config)
        .event_bus(bus)
        .start()
        .await
        .unwrap();
    TestEnv {
        service,
        clock,
        master,
        backend,
    }
}

/// While alive, tokio's paused clock never auto-advances (a blocking task is running).
struct Frozen(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

fn freeze() -> Frozen {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Returns when the sender is dropped, i.e. when the test body ends or unwinds.
    tokio::task::spawn_blocking(move || rx.recv().is_ok());
    Frozen(tx)
}

/// Runs ready tasks and lets SQLite's worker thread answer, without moving tokio's clock: a
/// running blocking task inhibits the paused clock's auto-advance.
async fn pause_real(ms: u64) {
    tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_millis(ms)))
        .await
        .unwrap();
}

/// Lets every watch reach its wait (tokio time frozen).
async fn settle() {
    for _ in 0..20 {
        pause_real(2).await;
    }
}

/// Whether `handle` finishes with tokio time frozen (within about 4 s of real time).
async fn finishes<T>(handle: &JoinHandle<T>) -> bool {
    for _ in 0..2000 {
        if handle.is_finished() {
            return true;
        }
        pause_real(2).await;
    }
    handle.is_finished()
}

/// One re-check period of tokio time, then settle.
async fn tick() {
    tokio::time::advance(TICK).await;
    settle().await;
}

async fn spawn_watch(
    env: &TestEnv,
    id: &SessionId,
    extra: Option<ExtraDeadline>,
) -> JoinHandle<EndReason> {
    let watch = env.service.watch(id, extra).await.unwrap();
    assert!(watch.ended().is_none(), "{:?}", watch.ended());
    let handle = tokio::spawn(async move { watch.await });
    settle().await;
    assert!(!handle.is_finished());
    handle
}

async fn cookie_session(env: &TestEnv) -> sessiond::CookieSession {
    env.service
        .create_cookie_session(user("alice"))
        .await
        .unwrap()
}

/// Moves the manual clock to `T0 + offset`.
fn at(env: &TestEnv, offset: Duration) {
    env.clock.set(T0.saturating_add(offset));
}

#[tokio::test(start_paused = true)]
async fn resolves_at_the_absolute_deadline() {
    let _frozen = freeze();
    let mut config = ServiceConfig::default();
    config.cookie.idle_ttl = secs(8 * 3600);
    config.cookie.absolute_ttl = secs(3600);
    let env = env_with(config).await;
    let s = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    at(&env, secs(3600) - Duration::from_millis(1));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(3600));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::AbsoluteExpired);
}

#[tokio::test(start_paused = true)]
async fn resolves_at_the_idle_deadline() {
    let _frozen = freeze();
    let env = env().await; // idle 1 h, absolute 8 h
    let s = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    at(&env, secs(3599));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(3600));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::IdleExpired);
}

#[tokio::test(start_paused = true)]
async fn resolves_at_the_access_token_deadline() {
    let _frozen = freeze();
    let env = env().await; // access tokens live 10 min
    let created = env
        .service
        .create_token_session(user("alice"), SessionKind::Tokens)
        .await
        .unwrap();
    let exp = created.tokens.access_expires_at;
    assert_eq!(exp, T0.saturating_add(secs(600)));
    let validated = env
        .service
        .validate_access_token(
            created.tokens.access_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let watch = env.service.watch_validated(&validated).await.unwrap();
    assert_eq!(watch.deadline(), exp);
    let handle = tokio::spawn(watch.into_future());
    settle().await;

    at(&env, secs(599));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(600));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::TokenExpired);
}

#[tokio::test(start_paused = true)]
async fn resolves_at_the_certificate_deadline() {
    let _frozen = freeze();
    let env = env().await;
    let s = cookie_session(&env).await;
    let not_after = T0.saturating_add(secs(120));
    let handle = spawn_watch(
        &env,
        &s.session.id,
        Some(ExtraDeadline::certificate(not_after)),
    )
    .await;
    at(&env, secs(119));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(120));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::CertificateExpired);
}

#[tokio::test(start_paused = true)]
async fn revoke_ends_the_watch_at_once_through_the_bus() {
    let _frozen = freeze();
    let env = env().await;
    let s = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    let reason = RevokeReason::new("admin_kick").unwrap();
    let outcome = env.service.revoke(&s.session.id, &reason).await.unwrap();
    assert_eq!(outcome, RevokeOutcome::Revoked);
    // No tick: the event alone ends it.
    assert!(finishes(&handle).await);
    assert_eq!(
        handle.await.unwrap(),
        EndReason::Revoked {
            reason: Some(reason)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn an_ended_session_resolves_at_once() {
    let _frozen = freeze();
    let env = env().await;
    let token_deadline = Some(ExtraDeadline::token(T0.saturating_add(secs(60))));

    let revoked = cookie_session(&env).await;
    env.service
        .revoke(&revoked.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    let expired = cookie_session(&env).await;
    at(&env, secs(3600));

    let cases = [
        (
            &revoked.session.id,
            EndReason::Revoked {
                reason: Some(RevokeReason::logout()),
            },
        ),
        (&expired.session.id, EndReason::IdleExpired),
    ];
    for (id, expected) in cases {
        let watch = env.service.watch(id, None).await.unwrap();
        assert_eq!(watch.ended(), Some(&expected));
        assert_eq!(watch.await, expected);
    }

    // A credential deadline already past on an active session.
    let fresh = cookie_session(&env).await;
    let watch = env
        .service
        .watch(&fresh.session.id, token_deadline)
        .await
        .unwrap();
    assert_eq!(watch.wait().await, EndReason::TokenExpired);

    let unknown = SessionId::generate(&sessiond::OsRandom);
    let err = env.service.watch(&unknown, None).await.unwrap_err();
    assert_eq!(err.code(), "session_not_found");
}

#[tokio::test(start_paused = true)]
async fn a_forward_clock_jump_ends_the_watch_within_one_period() {
    let _frozen = freeze();
    let env = env().await;
    let s = cookie_session(&env).await;
    let deadline = T0.saturating_add(secs(600));
    let handle = spawn_watch(&env, &s.session.id, Some(ExtraDeadline::token(deadline))).await;

    // The wall clock leaps 30 minutes; tokio time (the monotonic sleep) has not moved.
    at(&env, secs(1800));
    settle().await;
    assert!(!handle.is_finished(), "it only learns at its next tick");
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::TokenExpired);
}

#[tokio::test(start_paused = true)]
async fn a_backward_clock_jump_neither_ends_early_nor_late() {
    let _frozen = freeze();
    let env = env().await;
    let s = cookie_session(&env).await;
    let deadline = T0.saturating_add(secs(600));
    let handle = spawn_watch(&env, &s.session.id, Some(ExtraDeadline::token(deadline))).await;

    at(&env, secs(590));
    tick().await;
    // The wall clock steps back an hour; ten seconds of monotonic time pass.
    env.clock.rewind(secs(3600));
    for _ in 0..10 {
        tick().await;
        assert!(!handle.is_finished());
    }
    // It catches up to just before the deadline, then reaches it.
    env.clock
        .set(deadline.saturating_sub(Duration::from_millis(1)));
    tick().await;
    assert!(!handle.is_finished());
    env.clock.set(deadline);
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::TokenExpired);
}

#[tokio::test(start_paused = true)]
async fn validations_elsewhere_slide_the_idle_deadline_of_a_watch() {
    let _frozen = freeze();
    let env = env().await; // idle 1 h, touch interval 60 s
    let s = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    // Another request validates the cookie at +50 min: the idle window now ends at +1 h 50.
    at(&env, secs(50 * 60));
    let v = env
        .service
        .validate_cookie(s.cookie.expose(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(v.session.idle_expires_at, T0.saturating_add(secs(110 * 60)));

    // The originally known idle deadline passes: the watch re-reads and stays.
    at(&env, secs(3600));
    tick().await;
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(110 * 60) - Duration::from_millis(1));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(110 * 60));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::IdleExpired);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_moves_the_idle_deadline_of_a_watch() {
    let _frozen = freeze();
    let mut config = ServiceConfig::default();
    config.tokens.refresh_idle_ttl = secs(3600);
    let env = env_with(config).await;
    let created = env
        .service
        .create_token_session(user("alice"), SessionKind::Browser)
        .await
        .unwrap();
    let id = created.session.id.clone();
    let handle = spawn_watch(&env, &id, None).await;

    at(&env, secs(50 * 60));
    env.service
        .refresh(
            created.tokens.refresh_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    settle().await;
    at(&env, secs(3600));
    tick().await;
    assert!(!handle.is_finished());
    at(&env, secs(110 * 60));
    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(handle.await.unwrap(), EndReason::IdleExpired);
}

#[tokio::test(start_paused = true)]
async fn revoke_user_ends_two_hundred_watches() {
    let _frozen = freeze();
    let env = env().await;
    let mut handles = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..200 {
        let s = cookie_session(&env).await;
        let watch = env.service.watch(&s.session.id, None).await.unwrap();
        handles.push(tokio::spawn(watch.wait()));
        ids.push(s.session.id);
    }
    settle().await;
    assert!(handles.iter().all(|h| !h.is_finished()));

    let alice = UserId::new("alice").unwrap();
    let revoked = env
        .service
        .revoke_user(&alice, None, None, &RevokeReason::revoked_all())
        .await
        .unwrap();
    assert_eq!(revoked.len(), 200);
    for h in &handles {
        assert!(finishes(h).await);
    }
    for h in handles {
        assert_eq!(
            h.await.unwrap(),
            EndReason::Revoked {
                reason: Some(RevokeReason::revoked_all())
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_lagging_watch_re_reads_its_session() {
    let _frozen = freeze();
    let bus = Arc::new(InProcessBus::new(2));
    let env = env_with_bus(ServiceConfig::default(), bus.clone()).await;
    let s = cookie_session(&env).await;
    let other = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    // Revoked behind the service's back (no event), then the bus overflows with noise.
    let outcome = env
        .backend
        .store
        .revoke_session(&s.session.id, env.service.now(), &RevokeReason::logout())
        .await
        .unwrap();
    assert!(matches!(outcome, Revocation::Revoked(_)), "{outcome:?}");
    for _ in 0..5 {
        bus.publish(SessionEvent::refreshed(&other.session, env.service.now()))
            .await
            .unwrap();
    }
    // No tick: the lag itself makes it re-read.
    assert!(finishes(&handle).await);
    assert_eq!(
        handle.await.unwrap(),
        EndReason::Revoked {
            reason: Some(RevokeReason::logout())
        }
    );
    assert!(env.service.metrics().snapshot().watch_lags >= 1);
}

/// A bus that has shut down: subscriptions are closed, publishes go nowhere.
#[derive(Debug)]
struct ClosedBus;

#[async_trait]
impl EventBus for ClosedBus {
    async fn publish(&self, _event: SessionEvent) -> Result<(), EventError> {
        Err(EventError::Closed)
    }

    fn subscribe(&self) -> Subscription {
        let (tx, rx) = broadcast::channel(1);
        drop(tx);
        Subscription::from(rx)
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_bus_a_watch_polls_and_a_failed_publish_fails_nothing() {
    let _frozen = freeze();
    let env = env_with_bus(ServiceConfig::default(), Arc::new(ClosedBus)).await;
    let s = cookie_session(&env).await;
    let handle = spawn_watch(&env, &s.session.id, None).await;

    let outcome = env
        .service
        .revoke(&s.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(outcome, RevokeOutcome::Revoked);
    let m = env.service.metrics().snapshot();
    assert_eq!((m.events_published, m.event_publish_errors), (0, 1));

    tick().await;
    assert!(finishes(&handle).await);
    assert_eq!(
        handle.await.unwrap(),
        EndReason::Revoked {
            reason: Some(RevokeReason::logout())
        }
    );
}

/// Every event already on `sub`, without waiting.
async fn drain(sub: &mut Subscription) -> Vec<SessionEvent> {
    let mut events = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::ZERO, sub.recv()).await {
        events.push(e);
    }
    events
}

fn revoked(e: &SessionEvent, id: &SessionId, reason: &str, tenant: &Tenant) {
    assert_eq!(e.kind, EventKind::Revoked);
    assert_eq!(&e.session_id, id);
    assert_eq!(e.user_id.as_str(), "alice");
    assert_eq!(e.tenant.as_ref(), Some(tenant));
    assert_eq!(e.reason.as_deref(), Some(reason));
}

#[tokio::test]
async fn every_revocation_path_and_refresh_publish_an_event() {
    let mut config = ServiceConfig::default();
    config.sessions.max_per_user = 2;
    let env = env_with(config).await;
    let mut sub = env.service.events().subscribe();
    let default = Tenant::default();
    let other = Tenant::new("acme").unwrap();

    // Single revoke, once: a repeat changes nothing and publishes nothing.
    let a = cookie_session(&env).await;
    env.service
        .revoke(&a.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    env.service
        .revoke(&a.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    revoked(&events[0], &a.session.id, "logout", &default);
    assert_eq!(events[0].at, T0);

    // Eviction beyond two sessions per user and tenant.
    let b = cookie_session(&env).await;
    let c = cookie_session(&env).await;
    let d = cookie_session(&env).await;
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    revoked(&events[0], &b.session.id, "evicted", &default);

    // User-wide, across tenants: each event names its session's tenant.
    let e = env
        .service
        .create_cookie_session(user("alice").tenant(other.clone()))
        .await
        .unwrap();
    let ids = env
        .service
        .revoke_user(
            &UserId::new("alice").unwrap(),
            None,
            Some(&d.session.id),
            &RevokeReason::revoked_all(),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let mut events = drain(&mut sub).await;
    events.sort_by_key(|ev| ev.session_id != c.session.id);
    assert_eq!(events.len(), 2, "{events:?}");
    revoked(&events[0], &c.session.id, "revoked_all", &default);
    revoked(&events[1], &e.session.id, "revoked_all", &other);

    // User-wide in one tenant.
    let ids = env
        .service
        .revoke_user(
            &UserId::new("alice").unwrap(),
            Some(&default),
            None,
            &RevokeReason::revoked_all(),
        )
        .await
        .unwrap();
    assert_eq!(ids, vec![d.session.id.clone()]);
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    revoked(&events[0], &d.session.id, "revoked_all", &default);

    // Refresh rotation, then reuse of the rotated-out token after the grace window.
    let t = env
        .service
        .create_token_session(user("alice"), SessionKind::Tokens)
        .await
        .unwrap();
    env.clock.advance(secs(5));
    let next = env
        .service
        .refresh(t.tokens.refresh_token.expose(), &RequestContext::default())
        .await
        .unwrap();
    // The new pair is used, so the old token below is reuse (not a lost response).
    env.service
        .validate_access_token(
            next.tokens.access_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Refreshed);
    assert_eq!(events[0].session_id, t.session.id);
    assert_eq!(events[0].reason, None);
    assert_eq!(events[0].at, T0.saturating_add(secs(5)));

    env.clock.advance(secs(60));
    let err = env
        .service
        .refresh(t.tokens.refresh_token.expose(), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    revoked(&events[0], &t.session.id, "refresh_token_reused", &default);

    // Logout with an access token is a single revoke.
    let u = env
        .service
        .create_token_session(user("alice"), SessionKind::Tokens)
        .await
        .unwrap();
    env.service
        .logout_access_token(u.tokens.access_token.expose(), &RequestContext::default())
        .await
        .unwrap();
    let events = drain(&mut sub).await;
    assert_eq!(events.len(), 1, "{events:?}");
    revoked(&events[0], &u.session.id, "logout", &default);

    let m = env.service.metrics().snapshot();
    assert_eq!((m.events_published, m.event_publish_errors), (8, 0));
}
