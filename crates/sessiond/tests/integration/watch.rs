//! Live enforcement: the lifecycle events the service publishes.

use std::time::Duration;

use sessiond::events::Subscription;
use sessiond::{
    EventKind, RequestContext, RevokeReason, ServiceConfig, SessionEvent, SessionId, SessionKind,
    Tenant, UserId,
};

use crate::common::{env_with, secs, user, TestEnv, T0};

async fn cookie_session(env: &TestEnv) -> sessiond::CookieSession {
    env.service
        .create_cookie_session(user("alice"))
        .await
        .unwrap()
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
    env.service
        .refresh(t.tokens.refresh_token.expose(), &RequestContext::default())
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
