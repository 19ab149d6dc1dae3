//! Races run as races: many tasks on a multi-threaded runtime against one session.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use sessiond::cache::CacheLimits;
use sessiond::{RequestContext, RevokeReason, ServiceConfig, SessionId, SessionKind};
use tokio::sync::Barrier;

use crate::common::{env_with, user};

/// The credential the validators present.
#[derive(Clone, Copy)]
enum Presented {
    Cookie,
    /// An access token (validated once before the storm, so with the verified-token cache on
    /// every validation of the storm is a cache hit).
    AccessToken,
}

/// 200 concurrent validators hammer one session while it is revoked. Every validation that
/// *started* after `revoke` returned must fail; some before it must have succeeded (so the test
/// cannot pass vacuously).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_validation_succeeds_after_revoke_returns() {
    revoke_during_validations(Presented::Cookie, ServiceConfig::default()).await;
}

/// The same with a cached access token, and with the verified-token cache off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_access_validation_succeeds_after_revoke_returns_cache_on_or_off() {
    revoke_during_validations(Presented::AccessToken, ServiceConfig::default()).await;
    let mut off = ServiceConfig::default();
    off.verified_tokens = CacheLimits::off();
    revoke_during_validations(Presented::AccessToken, off).await;
}

async fn revoke_during_validations(presented: Presented, config: ServiceConfig) {
    const TASKS: usize = 200;
    const ROUNDS: usize = 5;
    let env = env_with(config).await;
    let (session_id, credential): (SessionId, Arc<str>) = match presented {
        Presented::Cookie => {
            let created = env
                .service
                .create_cookie_session(user("race"))
                .await
                .unwrap();
            (created.session.id, created.cookie.expose().as_str().into())
        }
        Presented::AccessToken => {
            let created = env
                .service
                .create_token_session(user("race"), SessionKind::Tokens)
                .await
                .unwrap();
            let token = created.tokens.access_token.expose().clone();
            env.service
                .validate_access_token(&token, &RequestContext::default())
                .await
                .unwrap();
            (created.session.id, token.as_str().into())
        }
    };
    let revoked = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(TASKS + 1));
    let ok_before = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (service, credential, revoked, started, barrier, ok_before, after) = (
            env.service.clone(),
            credential.clone(),
            revoked.clone(),
            started.clone(),
            barrier.clone(),
            ok_before.clone(),
            after.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            // At least ROUNDS validations, and on until this task has begun one after the revoke
            // returned (bounded), so both sides of the race are exercised however the scheduler
            // and a loaded machine interleave the tasks with the revoke.
            for round in 0..ROUNDS * 1000 {
                let began_after_revoke = revoked.load(Ordering::SeqCst);
                started.fetch_add(1, Ordering::SeqCst);
                let ctx = RequestContext::default();
                let result = match presented {
                    Presented::Cookie => service.validate_cookie(&credential, &ctx).await,
                    Presented::AccessToken => {
                        service.validate_access_token(&credential, &ctx).await
                    }
                };
                if began_after_revoke {
                    after.fetch_add(1, Ordering::SeqCst);
                    let err = result
                        .expect_err("a validation that began after the revoke returned succeeded");
                    assert_eq!(err.code(), "session_revoked");
                } else if result.is_ok() {
                    ok_before.fetch_add(1, Ordering::SeqCst);
                }
                if began_after_revoke && round + 1 >= ROUNDS {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    barrier.wait().await;
    // Revoke in the middle of the storm.
    while started.load(Ordering::SeqCst) < TASKS * ROUNDS / 3 {
        tokio::task::yield_now().await;
    }
    env.service
        .revoke(&session_id, &RevokeReason::logout())
        .await
        .unwrap();
    revoked.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok_before, after) = (
        ok_before.load(Ordering::SeqCst),
        after.load(Ordering::SeqCst),
    );
    println!(
        "validations: {ok_before} succeeded before the revoke, {after} began after it (all failed)"
    );
    assert!(
        ok_before > 0,
        "no validation succeeded before the revoke: the race was not exercised"
    );
    assert!(
        after > 0,
        "no validation began after the revoke: the race was not exercised"
    );
}
