//! Races run as races: many tasks on a multi-threaded runtime against one session.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use sessiond::{RequestContext, RevokeReason};
use tokio::sync::Barrier;

use crate::common::{env, user};

/// 200 concurrent validators hammer one session while it is revoked. Every validation that
/// *started* after `revoke` returned must fail; some before it must have succeeded (so the test
/// cannot pass vacuously).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_validation_succeeds_after_revoke_returns() {
    const TASKS: usize = 200;
    const ROUNDS: usize = 5;
    let env = env().await;
    let created = env
        .service
        .create_cookie_session(user("race"))
        .await
        .unwrap();
    let cookie: Arc<str> = created.cookie.expose().as_str().into();
    let revoked = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(TASKS + 1));
    let ok_before = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (service, cookie, revoked, started, barrier, ok_before, after) = (
            env.service.clone(),
            cookie.clone(),
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
                let result = service
                    .validate_cookie(&cookie, &RequestContext::default())
                    .await;
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
        .revoke(&created.session.id, &RevokeReason::logout())
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
