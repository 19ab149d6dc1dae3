//! The layer's cost and local verification's, each against a baseline in the same run.
//!
//! - `layer/cookie_direct`: `SessionService::validate_cookie` on file-backed SQLite (the
//!   embedded library called directly; clock pinned, so no touch write).
//! - `layer/cookie_through_layer`: the same cookie through an axum router with the layer and a
//!   `CookieAuth` handler (`oneshot`, no socket): request parsing, cookie extraction, the same
//!   validation, the handler, the response.
//! - `access/local_verify`: `LocalVerifier::verify` of an EdDSA access token, caught up, stream
//!   fresh (no request to sessiond).
//! - `access/remote_validate`: `Client::validate` of the same token against a sessiond server in
//!   this process (HTTP over loopback, SQLite).
//! - `access/direct_validate`: the embedded library's `validate_access_token` of a token of
//!   the same kind (signature + row read), the floor of the remote call.
//!
//! Run: `cargo bench -p sessiond-axum --bench layer`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::routing::get;
use axum::Router;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{
    ManualClock, MasterKey, NewSession, RequestContext, Secret, SessionKind, SessionService,
    Timestamp, UserId,
};
use sessiond_axum::{CookieAuth, Sessions};
use sessiond_client::api::{CreateSessionRequest, KindParam, ValidateRequest};
use sessiond_client::{Client, LocalVerifier, Via};
use sessiond_server::testing::InProcess;
use tower::ServiceExt as _;

async fn home(auth: CookieAuth) -> String {
    auth.session.user_id.to_string()
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let (service, cookie, token) = rt.block_on(async {
        let store = Arc::new(
            SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
        let service = SessionService::builder(store, MasterKey::from_bytes([1; 32]))
            .clock(Arc::new(clock))
            .start()
            .await
            .unwrap();
        let created = service
            .create_cookie_session(NewSession::new(UserId::new("alice").unwrap()))
            .await
            .unwrap();
        let tokens = service
            .create_token_session(
                NewSession::new(UserId::new("bob").unwrap()),
                SessionKind::Tokens,
            )
            .await
            .unwrap();
        (
            service,
            created.cookie.expose().clone(),
            tokens.tokens.access_token.expose().clone(),
        )
    });
    let sessions = Sessions::embedded(service.clone()).build();
    let app = Router::new().route("/", get(home)).layer(sessions.layer());
    let header_value = format!("__Host-sessiond={cookie}");

    let mut group = c.benchmark_group("layer");
    group.bench_function("cookie_direct", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    service
                        .validate_cookie(&cookie, &RequestContext::default())
                        .await
                        .unwrap(),
                )
            })
        });
    });
    group.bench_function("cookie_through_layer", |b| {
        b.iter(|| {
            rt.block_on(async {
                let request = Request::builder()
                    .uri("/")
                    .header(header::COOKIE, &header_value)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(response.status().is_success());
                black_box(response)
            })
        });
    });
    group.finish();

    // Local verification against a server in this process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server_dir = tempfile::tempdir().unwrap();
    let (server, client, remote_token, verifier) = rt.block_on(async {
        let key = "bench-key-0123456789abcdefghijklmnopqrstuv";
        let server = InProcess::start_in(server_dir.path(), "[events]\nkeep_alive = \"1s\"\n", key)
            .await
            .unwrap();
        let client = Client::builder(server.base_url())
            .api_key(Secret::new(key.to_owned()))
            .build()
            .unwrap();
        let verifier = LocalVerifier::builder(client.clone())
            .clock(Arc::new(server.clock().clone()))
            .start()
            .await
            .unwrap();
        while !verifier.is_fresh() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.clock().advance(Duration::from_secs(6));
        while !verifier.is_fresh() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let created = client
            .create_session(&CreateSessionRequest::new("carol", KindParam::Tokens))
            .await
            .unwrap();
        let token = created.tokens.unwrap().access_token;
        assert_eq!(verifier.verify(&token).await.unwrap().via, Via::Local);
        (server, client, token, verifier)
    });
    let mut group = c.benchmark_group("access");
    group.bench_function("local_verify", |b| {
        b.iter(|| rt.block_on(async { black_box(verifier.verify(&remote_token).await.unwrap()) }));
    });
    let request = ValidateRequest::access_token(remote_token.clone());
    group.bench_function("remote_validate", |b| {
        b.iter(|| rt.block_on(async { black_box(client.validate(&request).await.unwrap()) }));
    });
    group.bench_function("direct_validate", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    service
                        .validate_access_token(&token, &RequestContext::default())
                        .await
                        .unwrap(),
                )
            })
        });
    });
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layer
}
criterion_main!(benches);
