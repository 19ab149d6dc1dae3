//! Local verification: tokens accepted in process once the verifier has caught up, a revocation
//! on the server refused within milliseconds (the latency over 200 revocations is printed and
//! recorded in docs/BENCHMARKS.md), and with the stream cut the verifier never accepts after its
//! bound: it fails closed, or asks the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::ErrorCode;
use sessiond_client::api::KindParam;
use sessiond_client::{LocalVerifier, VerifyError, Via, WhenStale};

use crate::harness::{builder, spawn, App, Proxy, WAIT};

const HEARTBEATS: &str = "[events]\nkeep_alive = \"100ms\"\n";

/// Waits until `verifier` has heard the stream, then moves the server's clock past the
/// verifier's clock skew, so tokens issued from now on are checked locally.
/// (Moving the clock ages the last heartbeat by the wall clock: wait for the next one.)
async fn caught_up(app: &App, verifier: &LocalVerifier) {
    fresh(verifier).await;
    app.advance(Duration::from_secs(6));
    fresh(verifier).await;
}

async fn fresh(verifier: &LocalVerifier) {
    let start = Instant::now();
    while !verifier.is_fresh() {
        assert!(start.elapsed() < WAIT, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn access_token(app: &App, user: &str) -> (sessiond::SessionId, String) {
    let (id, created) = app.create(user, KindParam::Tokens).await;
    (id, created.tokens.unwrap().access_token)
}

#[tokio::test]
async fn revocations_reach_the_verifier_within_milliseconds() {
    let app = spawn(HEARTBEATS).await;
    let verifier = LocalVerifier::builder(app.client.clone())
        .clock(Arc::new(app.server.clock().clone()))
        .start()
        .await
        .unwrap();
    // Before it has caught up, a token is checked online.
    let (_, early) = access_token(&app, "rae").await;
    assert_eq!(verifier.verify(&early).await.unwrap().via, Via::Online);
    caught_up(&app, &verifier).await;

    let mut latencies = Vec::new();
    for i in 0..200 {
        let (id, token) = access_token(&app, &format!("user{i}")).await;
        let ok = verifier.verify(&token).await.unwrap();
        assert_eq!((ok.via, &ok.session_id), (Via::Local, &id));
        app.client.revoke_session(&id, None).await.unwrap();
        let revoked = Instant::now();
        loop {
            match verifier.verify(&token).await {
                Ok(ok) => assert_eq!(ok.via, Via::Local, "no round trip while fresh"),
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::SessionRevoked);
                    break;
                }
            }
            assert!(revoked.elapsed() < WAIT, "revocation {i} never arrived");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(revoked.elapsed());
    }
    latencies.sort();
    let p = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    eprintln!(
        "revoke -> refused by the local verifier over {} revocations: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(50),
        p(99),
        latencies[latencies.len() - 1]
    );

    // Forged, expired, and a refresh token in place of an access token: refused locally.
    let (_, token) = access_token(&app, "sam").await;
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err().code(),
        ErrorCode::InvalidCredential
    );
    let (_, created) = app.create("sam", KindParam::Tokens).await;
    let refresh = created.tokens.unwrap().refresh_token.unwrap();
    assert_eq!(
        verifier.verify(&refresh).await.unwrap_err().code(),
        ErrorCode::InvalidCredential
    );
    app.advance(Duration::from_secs(3600));
    assert_eq!(
        verifier.verify(&token).await.unwrap_err().code(),
        ErrorCode::TokenExpired
    );
}

/// The stream goes through a proxy that the test cuts: within `stale_after` the verifier may
/// still answer from what it knows; after it, a revoked session is never accepted: the
/// fail-closed verifier answers `unavailable`, the online one asks the server (unreachable
/// through the same cut: `unavailable`; reachable again: `session_revoked`).
#[tokio::test]
async fn with_the_stream_cut_a_revoked_session_is_never_accepted_after_the_bound() {
    let app = spawn(HEARTBEATS).await;
    let proxy = Proxy::start(app.server.base_url()).await;
    let through_proxy = builder(&proxy.base(), &app.api_key)
        .stream_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let stale_after = Duration::from_millis(500);
    let start = |mode| {
        LocalVerifier::builder(through_proxy.clone())
            .clock(Arc::new(app.server.clock().clone()))
            .stale_after(stale_after)
            .when_stale(mode)
            .start()
    };
    let closed = start(WhenStale::FailClosed).await.unwrap();
    let online = start(WhenStale::Online).await.unwrap();
    fresh(&online).await;
    caught_up(&app, &closed).await;
    fresh(&online).await;
    let (id, token) = access_token(&app, "tess").await;
    for v in [&closed, &online] {
        assert_eq!(v.verify(&token).await.unwrap().via, Via::Local);
    }

    proxy.cut();
    app.client.revoke_session(&id, None).await.unwrap();
    let cut_at = Instant::now();
    tokio::time::sleep(stale_after + Duration::from_millis(50)).await;
    assert!(!closed.is_fresh() && !online.is_fresh());
    for v in [&closed, &online] {
        match v.verify(&token).await {
            Err(VerifyError::Unavailable(_)) => {}
            other => panic!("after the bound: {other:?}"),
        }
    }
    // Tokens of live sessions too: the fail-closed one refuses what it cannot vouch for.
    let (_, live) = access_token(&app, "uma").await;
    assert!(matches!(
        closed.verify(&live).await,
        Err(VerifyError::Unavailable(_))
    ));
    assert!(cut_at.elapsed() >= stale_after);

    // Back: the stream resumes (replaying the revocation) and the server answers again.
    proxy.open();
    let back = Instant::now();
    loop {
        match online.verify(&token).await {
            Err(VerifyError::Refused(code)) => {
                assert_eq!(code, ErrorCode::SessionRevoked);
                break;
            }
            Err(VerifyError::Unavailable(_)) => {}
            Ok(ok) => panic!("a revoked session accepted: {ok:?}"),
            Err(e) => panic!("{e:?}"),
        }
        assert!(back.elapsed() < WAIT, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fresh(&closed).await;
    assert_eq!(
        closed.verify(&token).await.unwrap_err().code(),
        ErrorCode::SessionRevoked
    );
}
