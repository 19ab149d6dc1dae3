//! Every lifecycle path yields its effects exactly once (docs/DESIGN.md §5.9, §6.1): for each
//! operation, the events published, the audit records written and the counters moved, exactly.

use std::time::Duration;

use sessiond::audit::{AuditEvent, AuditQuery};
use sessiond::events::Subscription;
use sessiond::keys::KeyPurpose;
use sessiond::metrics::MetricsSnapshot;
use sessiond::{EventKind, RequestContext, RevokeReason, ServiceConfig, SessionKind, UserId};

use crate::common::{env_with, secs, user, TestEnv};

/// What one operation did, observed from outside.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    /// `(kind, reason)` of each event, in order.
    events: Vec<(EventKind, Option<String>)>,
    /// `(event, reason)` of each audit record, oldest first.
    audit: Vec<(AuditEvent, String)>,
    /// Counters that moved: `(name, by how much)`.
    counters: Vec<(&'static str, u64)>,
}

fn counters(m: &MetricsSnapshot) -> Vec<(&'static str, u64)> {
    let mut out = vec![
        ("sessions_created", m.sessions_created),
        ("sessions_revoked", m.sessions_revoked),
        ("refresh_reuse_detected", m.refresh_reuse_detected),
        ("refresh_rotated", m.refresh_rotated),
        ("refresh_converged", m.refresh_converged),
        ("refresh_reissued", m.refresh_reissued),
        ("audit_failures_suppressed", m.audit_failures_suppressed),
        ("audit_write_errors", m.audit_write_errors),
        ("events_published", m.events_published),
        ("event_publish_errors", m.event_publish_errors),
    ];
    out.push((
        "validation_failures",
        m.validation_failures.values().sum::<u64>(),
    ));
    out
}

struct Probe {
    sub: Subscription,
    metrics: MetricsSnapshot,
    audit_len: usize,
}

async fn audit_all(env: &TestEnv) -> Vec<sessiond::audit::AuditRecord> {
    env.service
        .audit_records(&AuditQuery::latest(10_000))
        .await
        .unwrap()
}

async fn probe(env: &TestEnv) -> Probe {
    Probe {
        sub: env.service.events().subscribe(),
        metrics: env.service.metrics().snapshot(),
        audit_len: audit_all(env).await.len(),
    }
}

async fn observe(env: &TestEnv, mut p: Probe) -> Observed {
    let mut events = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(50), p.sub.recv()).await {
        events.push((e.kind, e.reason));
    }
    let all = audit_all(env).await;
    let mut audit: Vec<(AuditEvent, String)> = all[..all.len() - p.audit_len]
        .iter()
        .map(|r| (r.event, r.reason.clone()))
        .collect();
    audit.reverse();
    let after = counters(&env.service.metrics().snapshot());
    let before = counters(&p.metrics);
    let counters = after
        .iter()
        .zip(before.iter())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    Observed {
        events,
        audit,
        counters,
    }
}

fn ev(kind: EventKind, reason: Option<&str>) -> (EventKind, Option<String>) {
    (kind, reason.map(str::to_owned))
}

fn au(event: AuditEvent, reason: &str) -> (AuditEvent, String) {
    (event, reason.to_owned())
}

async fn env_limit(max: u32) -> TestEnv {
    let mut config = ServiceConfig::default();
    config.sessions.max_per_user = max;
    env_with(config).await
}

#[tokio::test]
async fn creating_a_session_and_evicting_the_oldest() {
    let env = env_limit(1).await;
    let p = probe(&env).await;
    env.service
        .create_cookie_session(user("ann"))
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::SessionCreated, "cookie")],
            counters: vec![("sessions_created", 1)],
        }
    );
    let p = probe(&env).await;
    env.service
        .create_token_session(user("ann"), SessionKind::Tokens)
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("evicted"))],
            audit: vec![
                au(AuditEvent::SessionCreated, "tokens"),
                au(AuditEvent::SessionRevoked, "evicted"),
            ],
            counters: vec![
                ("sessions_created", 1),
                ("sessions_revoked", 1),
                ("events_published", 1)
            ],
        }
    );
}

#[tokio::test]
async fn validating_writes_nothing_and_a_refusal_is_counted_and_audited() {
    let env = env_limit(0).await;
    let c = env.service.create_cookie_session(user("bo")).await.unwrap();
    let ctx = RequestContext::default();
    let p = probe(&env).await;
    env.service
        .validate_cookie(c.cookie.expose(), &ctx)
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![],
            counters: vec![],
        }
    );
    let p = probe(&env).await;
    env.service
        .validate_cookie(c.cookie.expose(), &RequestContext::default().csrf("wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::ValidationFailed, "csrf_mismatch")],
            counters: vec![("validation_failures", 1)],
        }
    );
    // An outage or bad input is not a verdict: nothing is counted or audited.
    let p = probe(&env).await;
    let long = "1".repeat(100);
    let t = env
        .service
        .create_token_session(user("bo"), SessionKind::Tokens)
        .await
        .unwrap();
    let p2 = observe(&env, p).await;
    assert_eq!(p2.counters, vec![("sessions_created", 1)]);
    let p = probe(&env).await;
    env.service
        .refresh(
            t.tokens.refresh_token.expose(),
            &RequestContext::default().ip(&long),
        )
        .await
        .unwrap_err();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![],
            counters: vec![],
        }
    );
}

#[tokio::test]
async fn every_refresh_outcome() {
    let env = env_limit(0).await;
    let ctx = RequestContext::default();
    let t = env
        .service
        .create_token_session(user("cy"), SessionKind::Browser)
        .await
        .unwrap();
    let first = t.tokens.refresh_token.expose().clone();

    let p = probe(&env).await;
    let next = env.service.refresh(&first, &ctx).await.unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Refreshed, None)],
            audit: vec![au(AuditEvent::SessionRefreshed, "rotated")],
            counters: vec![("refresh_rotated", 1), ("events_published", 1)],
        }
    );

    let p = probe(&env).await;
    env.service.refresh(&first, &ctx).await.unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::SessionRefreshed, "converged")],
            counters: vec![("refresh_converged", 1)],
        }
    );

    env.clock.advance(secs(60));
    let p = probe(&env).await;
    env.service.refresh(&first, &ctx).await.unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Refreshed, None)],
            audit: vec![au(AuditEvent::SessionRefreshed, "reissued")],
            counters: vec![("refresh_reissued", 1), ("events_published", 1)],
        }
    );

    // The pair abandoned by the re-issue shows up: reuse, revoked.
    let p = probe(&env).await;
    env.service
        .refresh(next.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("refresh_token_reused"))],
            audit: vec![
                au(AuditEvent::RefreshReused, "not_on_chain"),
                au(AuditEvent::SessionRevoked, "refresh_token_reused"),
                au(AuditEvent::ValidationFailed, "refresh_token_reused"),
            ],
            counters: vec![
                ("sessions_revoked", 1),
                ("refresh_reuse_detected", 1),
                ("events_published", 1),
                ("validation_failures", 1),
            ],
        }
    );
    // Again: the session is already revoked, so only the refusal.
    let p = probe(&env).await;
    env.service
        .refresh(next.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::ValidationFailed, "session_revoked")],
            counters: vec![("validation_failures", 1)],
        }
    );
}

#[tokio::test]
async fn revocations_one_all_and_idempotent() {
    let env = env_limit(0).await;
    let a = env.service.create_cookie_session(user("di")).await.unwrap();
    let b = env.service.create_cookie_session(user("di")).await.unwrap();
    let c = env
        .service
        .create_token_session(user("di"), SessionKind::Tokens)
        .await
        .unwrap();

    let p = probe(&env).await;
    env.service
        .revoke(&a.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("logout"))],
            audit: vec![au(AuditEvent::SessionRevoked, "logout")],
            counters: vec![("sessions_revoked", 1), ("events_published", 1)],
        }
    );

    let p = probe(&env).await;
    env.service
        .revoke(&a.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![],
            counters: vec![],
        }
    );

    let p = probe(&env).await;
    let ids = env
        .service
        .revoke_user(
            &UserId::new("di").unwrap(),
            None,
            Some(&c.session.id),
            &RevokeReason::revoked_all(),
        )
        .await
        .unwrap();
    assert_eq!(ids, vec![b.session.id.clone()]);
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("revoked_all"))],
            audit: vec![au(AuditEvent::SessionRevoked, "revoked_all")],
            counters: vec![("sessions_revoked", 1), ("events_published", 1)],
        }
    );

    let p = probe(&env).await;
    env.service
        .logout_access_token(c.tokens.access_token.expose(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("logout"))],
            audit: vec![au(AuditEvent::SessionRevoked, "logout")],
            counters: vec![("sessions_revoked", 1), ("events_published", 1)],
        }
    );
}

#[tokio::test]
async fn browser_logout_csrf_keys_and_claims() {
    let mut config = ServiceConfig::default();
    config.sessions.bind_ip = true;
    let env = env_with(config).await;
    let t = env
        .service
        .create_token_session(user("ed").ip("198.51.100.1"), SessionKind::Browser)
        .await
        .unwrap();
    let p = probe(&env).await;
    env.service
        .logout_browser(
            t.tokens.refresh_token.expose(),
            &RequestContext::default().ip("203.0.113.2"),
        )
        .await
        .unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![ev(EventKind::Revoked, Some("logout"))],
            audit: vec![
                au(AuditEvent::ValidationFailed, "ip_mismatch"),
                au(AuditEvent::SessionRevoked, "logout"),
            ],
            counters: vec![("sessions_revoked", 1), ("events_published", 1)],
        }
    );

    let c = env.service.create_cookie_session(user("ed")).await.unwrap();
    let p = probe(&env).await;
    env.service.rotate_csrf(&c.session.id).await.unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::CsrfRotated, "rotated")],
            counters: vec![],
        }
    );

    let p = probe(&env).await;
    env.service.rotate_key(KeyPurpose::Access).await.unwrap();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![au(AuditEvent::KeyRotated, "access")],
            counters: vec![],
        }
    );

    let access = env
        .service
        .create_token_session(user("ed"), SessionKind::Tokens)
        .await
        .unwrap()
        .tokens
        .access_token;
    let p = probe(&env).await;
    env.service.claim_token(access.expose()).await.unwrap();
    env.service.claim_token(access.expose()).await.unwrap_err();
    assert_eq!(
        observe(&env, p).await,
        Observed {
            events: vec![],
            audit: vec![
                au(AuditEvent::TokenClaimed, "claimed"),
                au(AuditEvent::ValidationFailed, "token_already_used"),
            ],
            counters: vec![("validation_failures", 1)],
        }
    );
}
