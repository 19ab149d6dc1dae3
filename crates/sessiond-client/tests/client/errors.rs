//! Failures: problem answers mapped to their codes, outages told apart from verdicts by type,
//! timeouts, expiry on the manual clock, and no secret in any error or in the client's `Debug`.

use std::time::Duration;

use sessiond::{ErrorCode, OsRandom, SessionId};
use sessiond_client::api::{CreateSessionRequest, KindParam, RefreshRequest, ValidateRequest};
use sessiond_client::ClientError;

use crate::harness::{assert_problem, builder, spawn};

#[tokio::test]
async fn problems_become_their_codes() {
    let app = spawn("").await;
    let c = &app.client;
    let unknown = SessionId::generate(&OsRandom);
    let stranger = builder(
        app.server.base_url(),
        "not-the-key-0123456789abcdefghijklmnop",
    )
    .build()
    .unwrap();
    // call, status, code
    let cases: Vec<(&str, Result<(), ClientError>, u16, ErrorCode)> = vec![
        (
            "forged cookie",
            c.validate(&ValidateRequest::cookie("v1.forged"))
                .await
                .map(drop),
            401,
            ErrorCode::InvalidCredential,
        ),
        (
            "forged access token",
            c.validate(&ValidateRequest::access_token("a.b.c"))
                .await
                .map(drop),
            401,
            ErrorCode::InvalidCredential,
        ),
        (
            "unknown session by id",
            c.get_session(&unknown).await.map(drop),
            404,
            ErrorCode::UnknownSession,
        ),
        (
            "revoke unknown session",
            c.revoke_session(&unknown, None).await,
            404,
            ErrorCode::UnknownSession,
        ),
        (
            "empty user id",
            c.create_session(&CreateSessionRequest::new("", KindParam::Cookie))
                .await
                .map(drop),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            "bad revoke reason",
            c.revoke_session(&unknown, Some("Not A Reason")).await,
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            "two credentials",
            c.validate(&ValidateRequest {
                cookie: Some("x".into()),
                ..ValidateRequest::access_token("y")
            })
            .await
            .map(drop),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            "garbage refresh token",
            c.refresh(&RefreshRequest::new("nope")).await.map(drop),
            401,
            ErrorCode::InvalidCredential,
        ),
        (
            "wrong API key",
            stranger
                .validate(&ValidateRequest::cookie("v1.x"))
                .await
                .map(drop),
            401,
            ErrorCode::Unauthorized,
        ),
    ];
    for (name, result, status, code) in cases {
        let e = result.expect_err(name);
        match &e {
            ClientError::Api {
                status: s, code: k, ..
            } => assert_eq!((*s, *k), (status, code), "{name}: {e:?}"),
            other => panic!("{name}: not an API error: {other:?}"),
        }
        assert!(!e.is_outage(), "{name}");
        assert_eq!(e.code(), Some(code), "{name}");
    }
}

#[tokio::test]
async fn a_closed_port_is_an_outage_not_a_verdict() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = builder(
        &format!("http://{addr}"),
        "k-0123456789abcdefghijklmnopqrstuvwxyz",
    )
    .build()
    .unwrap();
    let e = c
        .validate(&ValidateRequest::access_token("secret-access-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.is_outage());
    assert_eq!(e.code(), None);
    let e = c
        .user_events(&sessiond::UserId::new("u").unwrap(), None)
        .await
        .err()
        .unwrap();
    assert!(e.is_outage(), "{e:?}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_times_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Accepted by the kernel, never read: the request waits for an answer that never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let c = builder(
        &format!("http://{addr}"),
        "k-0123456789abcdefghijklmnopqrstuvwxyz",
    )
    .request_timeout(Duration::from_millis(300))
    .build()
    .unwrap();
    let started = std::time::Instant::now();
    let e = c.healthz().await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert!(e.is_outage());
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = c
        .session_events(&SessionId::generate(&OsRandom))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    drop(listener);
}

#[tokio::test]
async fn expiry_follows_the_server_clock() {
    let app = spawn("[cookie_sessions]\nidle_ttl = \"30m\"\n").await;
    let (_, created) = app.create("eve", KindParam::Cookie).await;
    let cookie = created.cookie.unwrap();
    app.advance(Duration::from_secs(30 * 60 - 1));
    app.client
        .validate(&ValidateRequest::cookie(cookie.clone()))
        .await
        .unwrap();
    app.advance(Duration::from_secs(30 * 60));
    let expired = app.client.validate(&ValidateRequest::cookie(cookie)).await;
    assert_problem(expired, 401, ErrorCode::SessionExpired);
}

#[tokio::test]
async fn no_secret_in_errors_or_debug() {
    let app = spawn("").await;
    let c = &app.client;
    let (id, created) = app.create("fay", KindParam::Cookie).await;
    let (_, tokens) = app.create("fay", KindParam::Tokens).await;
    let tokens = tokens.tokens.unwrap();
    let cookie = created.cookie.unwrap();
    let csrf = created.csrf_token.unwrap();
    app.client
        .revoke_user_sessions(&sessiond::UserId::new("fay").unwrap(), None, None)
        .await
        .unwrap();
    let secrets = [
        app.api_key.as_str(),
        cookie.as_str(),
        csrf.as_str(),
        tokens.access_token.as_str(),
        tokens.refresh_token.as_deref().unwrap(),
    ];
    let mut errors = Vec::new();
    let mut with_csrf = ValidateRequest::cookie(cookie.clone());
    with_csrf.csrf_token = Some(csrf.clone());
    errors.push(c.validate(&with_csrf).await.unwrap_err());
    errors.push(
        c.validate(&ValidateRequest::access_token(tokens.access_token.clone()))
            .await
            .unwrap_err(),
    );
    errors.push(
        c.refresh(&RefreshRequest::new(tokens.refresh_token.clone().unwrap()))
            .await
            .unwrap_err(),
    );
    errors.push(c.rotate_csrf(&id).await.unwrap_err());
    // Transport failures with the key set.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let offline = builder(&format!("http://{closed}"), &app.api_key)
        .build()
        .unwrap();
    errors.push(offline.validate(&with_csrf).await.unwrap_err());
    let bad_key = builder(app.server.base_url(), "bad\nkey")
        .build()
        .unwrap_err();
    errors.push(bad_key);
    assert_eq!(errors.len(), 6);
    let mut shown: Vec<String> = errors
        .iter()
        .flat_map(|e| {
            let mut texts = vec![e.to_string(), format!("{e:?}")];
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                texts.push(s.to_string());
                source = s.source();
            }
            texts
        })
        .collect();
    shown.push(format!("{c:?}"));
    shown.push(format!(
        "{:?}",
        builder(app.server.base_url(), &app.api_key)
    ));
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret in {text}");
        }
    }
    assert!(format!("{c:?}").contains("[redacted]"));
}
