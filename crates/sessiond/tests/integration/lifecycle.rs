//! The cookie-session lifecycle through `SessionService` on SQLite, on a manual clock.

use sessiond::audit::{AuditEvent, AuditQuery};
use sessiond::keys::KeyPurpose;
use sessiond::{RequestContext, RevokeOutcome, RevokeReason, ServiceConfig, Tenant, UserId};

use crate::common::{env, env_with, secs, user};

#[tokio::test]
async fn validate_returns_session_and_deadline() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("alice"))
        .await
        .unwrap();
    let s = &created.session;
    assert_eq!(s.idle_expires_at, s.created_at.saturating_add(secs(3600)));
    assert_eq!(
        s.absolute_expires_at,
        s.created_at.saturating_add(secs(8 * 3600))
    );
    let v = env
        .service
        .validate_cookie(created.cookie.expose(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(v.session.id, s.id);
    assert_eq!(
        v.deadline, s.idle_expires_at,
        "deadline is the earliest expiry"
    );
    assert!(created.cookie.expose().starts_with("v1.ses-"));
    assert_eq!(format!("{:?}", created.cookie), "Secret([redacted])");
}

#[tokio::test]
async fn activity_slides_the_idle_window_with_at_most_one_write_per_interval() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("bob"))
        .await
        .unwrap();
    let id = created.session.id.clone();
    let ctx = RequestContext::default();
    let stored = |env: &crate::common::TestEnv| {
        let store = env.backend.store.clone();
        let id = id.clone();
        async move { store.session(&id).await.unwrap().unwrap().session }
    };

    // Inside the touch interval: validations succeed and write nothing.
    env.clock.advance(secs(30));
    for _ in 0..5 {
        env.service
            .validate_cookie(created.cookie.expose(), &ctx)
            .await
            .unwrap();
    }
    assert_eq!(stored(&env).await.last_seen_at, created.session.created_at);

    // Past it: one write slides the window.
    env.clock.advance(secs(30));
    let v = env
        .service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await
        .unwrap();
    let now = env.service.now();
    assert_eq!(v.session.last_seen_at, now);
    assert_eq!(v.session.idle_expires_at, now.saturating_add(secs(3600)));
    assert_eq!(stored(&env).await.last_seen_at, now);

    // Activity every 50 minutes keeps it alive past the first idle deadline...
    for _ in 0..3 {
        env.clock.advance(secs(3000));
        env.service
            .validate_cookie(created.cookie.expose(), &ctx)
            .await
            .unwrap();
    }
    // ...and an hour of silence ends it, at exactly the boundary.
    env.clock
        .advance(secs(3600) - std::time::Duration::from_millis(1));
    env.service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await
        .unwrap();
    env.clock.advance(secs(3600));
    let err = env
        .service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "session_expired");
}

#[tokio::test]
async fn deadline_is_capped_by_the_absolute_expiry() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("cara"))
        .await
        .unwrap();
    let ctx = RequestContext::default();
    for _ in 0..9 {
        env.clock.advance(secs(3000));
        env.service
            .validate_cookie(created.cookie.expose(), &ctx)
            .await
            .unwrap();
    }
    // 7.5 h in: the idle window would reach past the absolute expiry, which caps it.
    let v = env
        .service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await
        .unwrap();
    assert_eq!(v.deadline, created.session.absolute_expires_at);
    assert_eq!(
        v.session.idle_expires_at,
        created.session.absolute_expires_at
    );
}

#[tokio::test]
async fn csrf_rotation_invalidates_the_old_token() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("dana"))
        .await
        .unwrap();
    let old = created.csrf_token.expose().to_owned();
    env.service
        .validate_cookie(
            created.cookie.expose(),
            &RequestContext::default().csrf(&old),
        )
        .await
        .unwrap();
    let new = env.service.rotate_csrf(&created.session.id).await.unwrap();
    assert_ne!(new.expose(), &old);
    let err = env
        .service
        .validate_cookie(
            created.cookie.expose(),
            &RequestContext::default().csrf(&old),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "csrf_mismatch");
    env.service
        .check_csrf(&created.session.id, Some(new.expose()))
        .await
        .unwrap();
    assert_eq!(
        env.service
            .check_csrf(&created.session.id, None)
            .await
            .unwrap_err()
            .code(),
        "csrf_missing"
    );
    // A CSRF token is checked whenever it is sent, even if not required.
    let ctx = RequestContext {
        csrf_token: Some("forged"),
        ..RequestContext::default()
    };
    assert_eq!(
        env.service
            .validate_cookie(created.cookie.expose(), &ctx)
            .await
            .unwrap_err()
            .code(),
        "csrf_mismatch"
    );

    env.service
        .revoke(&created.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(
        env.service
            .rotate_csrf(&created.session.id)
            .await
            .unwrap_err()
            .code(),
        "session_revoked"
    );
    let missing = sessiond::SessionId::generate(&sessiond::OsRandom);
    assert_eq!(
        env.service.rotate_csrf(&missing).await.unwrap_err().code(),
        "session_not_found"
    );
}

#[tokio::test]
async fn revoke_one_all_and_all_but_current() {
    let env = env().await;
    let acme = Tenant::new("acme").unwrap();
    let mut cookies = Vec::new();
    for _ in 0..3 {
        cookies.push(
            env.service
                .create_cookie_session(user("erin").tenant(acme.clone()))
                .await
                .unwrap(),
        );
    }
    let other = env
        .service
        .create_cookie_session(user("erin"))
        .await
        .unwrap();
    let erin = UserId::new("erin").unwrap();
    assert_eq!(
        env.service
            .user_sessions(&erin, Some(&acme))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        env.service.user_sessions(&erin, None).await.unwrap().len(),
        4
    );

    let reason = RevokeReason::logout();
    assert_eq!(
        env.service
            .revoke(&cookies[0].session.id, &reason)
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        env.service
            .revoke(&cookies[0].session.id, &reason)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked
    );

    // Log out other devices: keep cookies[2].
    let revoked = env
        .service
        .revoke_user(
            &erin,
            Some(&acme),
            Some(&cookies[2].session.id),
            &RevokeReason::revoked_all(),
        )
        .await
        .unwrap();
    assert_eq!(revoked, vec![cookies[1].session.id.clone()]);
    let ctx = RequestContext::default();
    for (c, alive) in [
        (&cookies[0], false),
        (&cookies[1], false),
        (&cookies[2], true),
        (&other, true),
    ] {
        let r = env.service.validate_cookie(c.cookie.expose(), &ctx).await;
        assert_eq!(r.is_ok(), alive, "{:?}", r.err());
    }
    let revoked = env
        .service
        .revoke_user(&erin, None, None, &RevokeReason::revoked_all())
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(env
        .service
        .user_sessions(&erin, None)
        .await
        .unwrap()
        .is_empty());
    let s = env
        .service
        .session(&cookies[1].session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.revoke_reason.unwrap().as_str(), "revoked_all");
    assert_eq!(env.metrics_revoked(), 4);
}

impl crate::common::TestEnv {
    fn metrics_revoked(&self) -> u64 {
        self.service.metrics().snapshot().sessions_revoked
    }
}

#[tokio::test]
async fn max_sessions_per_user_evicts_the_oldest() {
    let mut config = ServiceConfig::default();
    config.sessions.max_per_user = 2;
    let env = env_with(config).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            env.service
                .create_cookie_session(user("finn"))
                .await
                .unwrap(),
        );
        env.clock.advance(secs(1));
    }
    let err = env
        .service
        .validate_cookie(made[0].cookie.expose(), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "session_revoked");
    let s = env
        .service
        .session(&made[0].session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.revoke_reason.unwrap().as_str(), "evicted");
    let trail = env
        .service
        .audit_records(&AuditQuery::session(&made[0].session.id))
        .await
        .unwrap();
    assert!(trail
        .iter()
        .any(|r| r.event == AuditEvent::SessionRevoked && r.reason == "evicted"));
    for c in &made[1..] {
        env.service
            .validate_cookie(c.cookie.expose(), &RequestContext::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_lifecycle_event_is_audited() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("gus").ip("192.0.2.7"))
        .await
        .unwrap();
    let id = &created.session.id;
    env.service.rotate_csrf(id).await.unwrap();
    env.service
        .revoke(id, &RevokeReason::logout())
        .await
        .unwrap();
    let _ = env
        .service
        .validate_cookie(created.cookie.expose(), &RequestContext::default())
        .await;
    env.service.rotate_key(KeyPurpose::Cookie).await.unwrap();

    let trail = env
        .service
        .audit_records(&AuditQuery::session(id))
        .await
        .unwrap();
    let events: Vec<_> = trail
        .iter()
        .rev()
        .map(|r| (r.event, r.reason.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            (AuditEvent::SessionCreated, "cookie"),
            (AuditEvent::CsrfRotated, "rotated"),
            (AuditEvent::SessionRevoked, "logout"),
            (AuditEvent::ValidationFailed, "session_revoked"),
        ]
    );
    assert_eq!(trail.last().unwrap().ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        trail.last().unwrap().user_id.as_ref().unwrap().as_str(),
        "gus"
    );
    let latest = env
        .service
        .audit_records(&AuditQuery::latest(1))
        .await
        .unwrap();
    assert_eq!(
        (latest[0].event, latest[0].reason.as_str()),
        (AuditEvent::KeyRotated, "cookie")
    );
}

#[tokio::test]
async fn failed_validations_are_counted_always_but_audited_within_a_bound() {
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("hal"))
        .await
        .unwrap();
    let forged = format!(
        "{}x",
        &created.cookie.expose()[..created.cookie.expose().len() - 1]
    );
    for _ in 0..500 {
        let err = env
            .service
            .validate_cookie(&forged, &RequestContext::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_credential");
    }
    let metrics = env.service.metrics().snapshot();
    let failures: u64 = metrics.validation_failures.values().sum();
    assert_eq!(failures, 500);
    let audited = env
        .service
        .audit_records(&AuditQuery::latest(1000))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == AuditEvent::ValidationFailed)
        .count() as u64;
    let bound = u64::from(env.service.config().audit.failures_per_window);
    assert_eq!(audited, bound);
    assert_eq!(metrics.audit_failures_suppressed, 500 - bound);
    // A new window admits new records.
    env.clock.advance(env.service.config().audit.failure_window);
    let _ = env
        .service
        .validate_cookie(&forged, &RequestContext::default())
        .await;
    let audited_after = env
        .service
        .audit_records(&AuditQuery::latest(1000))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event == AuditEvent::ValidationFailed)
        .count() as u64;
    assert_eq!(audited_after, bound + 1);
}

#[tokio::test]
async fn gc_removes_expired_sessions_and_keys_past_retention() {
    let mut config = ServiceConfig::default();
    config.gc_batch = 3;
    let env = env_with(config).await;
    for i in 0..10 {
        env.service
            .create_cookie_session(user(&format!("u{i}")))
            .await
            .unwrap();
    }
    env.service.rotate_key(KeyPurpose::Cookie).await.unwrap();
    env.clock.advance(secs(3600));
    let keep = env
        .service
        .create_cookie_session(user("keeper"))
        .await
        .unwrap();
    let report = env.service.gc().await.unwrap();
    assert_eq!((report.sessions, report.keys), (10, 0));
    env.clock.advance(secs(23 * 3600));
    let report = env.service.gc().await.unwrap();
    assert_eq!((report.sessions, report.keys), (1, 1));
    assert!(env
        .service
        .session(&keep.session.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        env.service.keys().list().await.unwrap().len(),
        3,
        "one active key per purpose remains"
    );
}

#[tokio::test]
async fn input_is_checked_before_anything_is_written() {
    let env = env().await;
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), serde_json::json!("someone-else"));
    let err = env
        .service
        .create_cookie_session(user("ian").claims(claims))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let err = env
        .service
        .create_cookie_session(user("ian").user_agent("x".repeat(2000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let err = env
        .service
        .create_cookie_session(user("ian").ip("1.2.3.4\n"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert!(env
        .service
        .user_sessions(&UserId::new("ian").unwrap(), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(env.service.metrics().snapshot().sessions_created, 0);
}

#[tokio::test]
async fn a_second_start_reuses_the_keys() {
    let env = env().await;
    let created = env.service.create_cookie_session(user("jo")).await.unwrap();
    let before = env.service.keys().list().await.unwrap();
    let again = sessiond::SessionService::builder(env.backend.store.clone(), env.master.clone())
        .clock(std::sync::Arc::new(env.clock.clone()))
        .start()
        .await
        .unwrap();
    assert_eq!(again.keys().list().await.unwrap(), before);
    again
        .validate_cookie(created.cookie.expose(), &RequestContext::default())
        .await
        .unwrap();
}

/// Keys made in the same millisecond (the clock does not move here) list in one order every
/// time: by purpose, creation time, then id, the store's order, never a map's.
#[tokio::test]
async fn keys_list_in_one_order_even_when_made_in_the_same_millisecond() {
    let env = env_with(ServiceConfig::default()).await;
    for _ in 0..4 {
        env.service.rotate_key(KeyPurpose::Cookie).await.unwrap();
    }
    let first = env.service.keys().list().await.unwrap();
    let mut sorted = first.clone();
    sorted.sort_by(|a, b| (a.purpose, a.created_at, &a.id).cmp(&(b.purpose, b.created_at, &b.id)));
    assert_eq!(first, sorted);
    for _ in 0..8 {
        assert_eq!(env.service.keys().list().await.unwrap(), first);
    }
}
