//! Trusted issuers in process: a JWK Set from a file, and from a URL (fetched, cached,
//! refetched on an unknown `kid` at most once per minute). What is logged at start runs in the
//! process suite (`issuers`).

use std::sync::atomic::Ordering;

use serde_json::{json, Map};

use super::{spawn_app, spawn_app_in, Options};
use crate::issuers::{idp_key, jwk, jwks_server, token, IDP};

#[tokio::test]
async fn jwks_file_relative_to_the_config() {
    let a = idp_key(3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("idp.json"),
        json!({"keys": [jwk(&a, "k1")]}).to_string(),
    )
    .unwrap();
    let s = spawn_app_in(dir, Options { config: format!("[[issuers]]\nissuer = \"{IDP}\"\naudience = \"sessiond\"\njwks_file = \"idp.json\"\n"), ..Options::default() }).await;
    let r = s
        .post("/v1/claims", json!({"token": token(&a, "k1", "file-1")}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let wrong_aud = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({"iss": IDP, "aud": "other", "jti": "z", "exp": now + 60});
        let mut header = Map::new();
        header.insert("kid".into(), json!("k1"));
        sessiond::jose::sign_compact(&a, &header, &serde_json::to_vec(&claims).unwrap())
            .unwrap()
            .expose()
            .clone()
    };
    s.post("/v1/claims", json!({"token": wrong_aud}))
        .await
        .assert_problem(401, "invalid_credential");
    s.stop().await;
}

#[tokio::test]
async fn jwks_url_is_fetched_cached_and_refetched_on_an_unknown_kid() {
    let (a, b) = (idp_key(1), idp_key(2));
    let (url, body, hits) = jwks_server(json!({"keys": [jwk(&a, "a")]})).await;
    let s = spawn_app(Options {
        config: format!(
            "[[issuers]]\nissuer = \"{IDP}\"\naudience = \"sessiond\"\njwks_url = \"{url}\"\n"
        ),
        ..Options::default()
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once at start");
    let r = s
        .post("/v1/claims", json!({"token": token(&a, "a", "one")}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["issuer"].as_str()),
        (201, Some(IDP)),
        "{}",
        r.text
    );
    s.post("/v1/claims", json!({"token": token(&a, "a", "one")}))
        .await
        .assert_problem(409, "token_already_used");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "served from the cache");

    // The IdP rotates in key b: the first token naming it triggers one refetch.
    *body.lock().unwrap() = json!({"keys": [jwk(&a, "a"), jwk(&b, "b")]});
    let r = s
        .post("/v1/claims", json!({"token": token(&b, "b", "two")}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Unknown kids within the minute do not refetch again.
    for i in 0..5 {
        s.post(
            "/v1/claims",
            json!({"token": token(&b, "nope", &format!("x{i}"))}),
        )
        .await
        .assert_problem(401, "invalid_credential");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "refetch is rate-limited");
    s.stop().await;
}
