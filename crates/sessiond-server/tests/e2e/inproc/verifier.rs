//! A local verifier (`sessiond_client::LocalVerifier`) against this server: a key retired by the
//! admin CLI stops verifying at the verifier within a heartbeat of the server noticing, and the
//! key that replaces it is fetched without waiting for a token to name it.

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
async fn a_retired_key_stops_verifying_and_its_successor_is_fetched() {
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

    // Emergency retirement from the CLI (another process, same database).
    let jwks = client.jwks().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let out = s.cli(&["keys", "retire", &jwks.keys[0].kid]).await;
    assert!(out.status.success(), "{out:?}");
    // The server's key snapshot is reloaded once it is older than 30 s (its clock).
    s.advance(Duration::from_secs(31));
    let start = Instant::now();
    loop {
        match verifier.verify(&old).await {
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::InvalidCredential);
                break;
            }
            Ok(ok) => assert_eq!(ok.via, Via::Local),
        }
        assert!(start.elapsed() < WAIT, "the retired key kept verifying");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The server refuses it too: the verifier is not stricter than the source.
    let refused = s.validate_access_token(&old).await.unwrap_err();
    assert_eq!(refused.status, 401, "{}", refused.text);
    // The replacement key signs new tokens. A token naming an unknown key may fetch the JWKS
    // only every 30 s (monotonic time, and the start fetched it a moment ago), so the verifier
    // can only come to accept this token through the heartbeat that named the new key.
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
    s.stop().await;
}
