//! A local verifier (`sessiond_client::LocalVerifier`) against this server: a key rotated in by
//! the admin CLI is fetched when a heartbeat names it, and a key retired by the CLI stops
//! verifying at the verifier within a heartbeat of the server noticing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::{ErrorCode, Secret};
use sessiond_client::{Client, LocalVerifier, Via};
use sessiond_server::dto::KindParam;

use super::{spawn_app, Options, TestApp};

const WAIT: Duration = Duration::from_secs(10);

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn token(s: &TestApp) -> String {
    s.create_session("vera", KindParam::Tokens)
        .await
        .tokens
        .unwrap()
        .access_token
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_retired_keys_dropped_through_heartbeats() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = spawn_app(Options {
        config: "[events]\nkeep_alive = \"100ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let client = Client::builder(s.base.as_str())
        .api_key(Secret::new(s.api_key.clone()))
        .build()
        .unwrap();
    let verifier = LocalVerifier::builder(client.clone())
        .clock(Arc::new(s.clock.clone()))
        .start()
        .await
        .unwrap();
    until("first heartbeat", || verifier.is_fresh()).await;
    s.advance(Duration::from_secs(6));
    until("heartbeat after the clock moved", || verifier.is_fresh()).await;
    let old = token(&s).await;
    assert_eq!(verifier.verify(&old).await.unwrap().via, Via::Local);

    let jwks = client.jwks().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let first = jwks.keys[0].kid.clone();

    // A rotation from the CLI (another process, same database). The server's key snapshot is
    // reloaded once it is older than 30 s (its clock). A token naming an unknown key may fetch
    // the JWKS only every 30 s of monotonic time (the start fetched it a moment ago), so the
    // verifier can only come to accept the new key's token through the heartbeat naming it.
    let out = s.cli(&["keys", "rotate", "--purpose", "access"]).await;
    assert!(out.status.success(), "{out:?}");
    s.advance(Duration::from_secs(46));
    // 46 s: past the server's 30 s key snapshot age, and past the verifier's 45 s stale bound,
    // so the heartbeat it is fresh again by is one sent after the move (while stale it would ask
    // the server, which proves nothing about its own keys).
    until("heartbeat after the clock moved", || verifier.is_fresh()).await;
    let new = token(&s).await;
    let start = Instant::now();
    loop {
        match verifier.verify(&new).await {
            Ok(ok) => {
                assert_eq!(ok.via, Via::Local);
                break;
            }
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidCredential),
        }
        assert!(
            start.elapsed() < WAIT,
            "the new key never reached the verifier"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rotated-out key still verifies (retention).
    assert_eq!(verifier.verify(&old).await.unwrap().via, Via::Local);

    // Emergency retirement of the old key: the heartbeats stop naming it, and the verifier
    // drops it without fetching anything.
    let out = s.cli(&["keys", "retire", &first]).await;
    assert!(out.status.success(), "{out:?}");
    s.advance(Duration::from_secs(46));
    // The first heartbeat after the move reloads the server's snapshot and no longer names the
    // key; the verifier drops it as it hears that heartbeat.
    until("heartbeat after the clock moved", || verifier.is_fresh()).await;
    assert_eq!(
        verifier.verify(&old).await.unwrap_err().code(),
        ErrorCode::InvalidCredential
    );
    // The server refuses it too: the verifier is not stricter than the source.
    let refused = s.validate_access_token(&old).await.unwrap_err();
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_eq!(verifier.verify(&new).await.unwrap().via, Via::Local);
    s.stop().await;
}
