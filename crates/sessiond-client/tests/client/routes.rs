//! Every route's happy path through the client, and what each answer holds.

use std::time::Duration;

use sessiond::{Clock as _, ErrorCode, Tenant, UserId};
use sessiond_client::api::{
    ClaimRequest, CreateSessionRequest, IdClaim, KindParam, RefreshRequest, TokenClaim,
    ValidateRequest,
};

use crate::harness::{assert_problem, spawn};

#[tokio::test]
async fn a_cookie_session_from_creation_to_revocation() {
    let app = spawn("").await;
    let c = &app.client;
    let mut request = CreateSessionRequest::new("alice", KindParam::Cookie);
    request.ip = Some("203.0.113.7".to_owned());
    let created = c.create_session(&request).await.unwrap();
    assert_eq!(created.session.user_id, "alice");
    assert_eq!(created.session.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(created.set_cookie.as_ref().map(Vec::len), Some(2));
    let id = sessiond::SessionId::parse(&created.session.id).unwrap();
    let cookie = created.cookie.unwrap();
    let csrf = created.csrf_token.unwrap();

    let mut validate = ValidateRequest::cookie(cookie.clone());
    validate.csrf_token = Some(csrf.clone());
    validate.require_csrf = true;
    let valid = c.validate(&validate).await.unwrap();
    assert_eq!(valid.session.id, id.as_str());
    assert_eq!(valid.credential.kind, "cookie");
    let header = format!("theme=dark; __Host-sessiond={cookie}");
    c.validate(&ValidateRequest::cookie_header(header))
        .await
        .unwrap();

    let session = c.get_session(&id).await.unwrap();
    assert_eq!(session.id, id.as_str());
    assert_eq!(session.revoked_at, None);

    let rotated = c.rotate_csrf(&id).await.unwrap();
    assert_ne!(rotated.csrf_token, csrf);
    assert_eq!(rotated.set_cookie.len(), 1);
    let mut stale = ValidateRequest::cookie(cookie.clone());
    stale.csrf_token = Some(csrf);
    let e = c.validate(&stale).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CsrfMismatch), "{e:?}");

    let alice = UserId::new("alice").unwrap();
    let listed = c.user_sessions(&alice, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id.as_str());

    c.revoke_session(&id, Some("admin")).await.unwrap();
    c.revoke_session(&id, None).await.unwrap(); // idempotent
    let session = c.get_session(&id).await.unwrap();
    assert_eq!(session.revoke_reason.as_deref(), Some("admin"));
    let revoked = c.validate(&ValidateRequest::cookie(cookie)).await;
    assert_problem(revoked, 401, ErrorCode::SessionRevoked);
    assert!(c.user_sessions(&alice, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn token_sessions_refresh_and_users_log_out_elsewhere() {
    let app = spawn("").await;
    let c = &app.client;
    let (first, created) = app.create("bob", KindParam::Tokens).await;
    let tokens = created.tokens.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    let valid = c
        .validate(&ValidateRequest::access_token(tokens.access_token.clone()))
        .await
        .unwrap();
    assert_eq!(valid.credential.kind, "access_token");
    assert_eq!(valid.deadline, tokens.access_expires_at);

    let refreshed = c
        .refresh(&RefreshRequest::new(tokens.refresh_token.unwrap()))
        .await
        .unwrap();
    assert_eq!(refreshed.session.id, first.as_str());
    assert_ne!(refreshed.tokens.access_token, tokens.access_token);

    // Two more, one in another tenant; "log out other devices" keeps the first.
    let (_second, _) = app.create("bob", KindParam::Cookie).await;
    let mut other = CreateSessionRequest::new("bob", KindParam::Cookie);
    other.tenant = Some("t2".to_owned());
    c.create_session(&other).await.unwrap();
    let bob = UserId::new("bob").unwrap();
    let t2 = Tenant::new("t2").unwrap();
    assert_eq!(c.user_sessions(&bob, None).await.unwrap().len(), 3);
    assert_eq!(c.user_sessions(&bob, Some(&t2)).await.unwrap().len(), 1);
    assert_eq!(
        c.revoke_user_sessions(&bob, Some(&first), Some(&Tenant::new("default").unwrap()))
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = c
        .user_sessions(&bob, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.tenant)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(c.revoke_user_sessions(&bob, None, None).await.unwrap(), 2);
    let e = c
        .validate(&ValidateRequest::access_token(
            refreshed.tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SessionRevoked), "{e:?}");
}

#[tokio::test]
async fn claims_succeed_once() {
    let app = spawn("").await;
    let c = &app.client;
    let until = app
        .server
        .clock()
        .now()
        .saturating_add(Duration::from_secs(3600));
    let claim = ClaimRequest::Id(IdClaim {
        id: "enrol-7".to_owned(),
        expires_at: until.to_rfc3339(),
    });
    let claimed = c.claim(&claim).await.unwrap();
    assert!(claimed.claimed);
    assert_problem(c.claim(&claim).await, 409, ErrorCode::TokenAlreadyUsed);
    // Our own access token is a claimable token too.
    let (_, created) = app.create("cy", KindParam::Tokens).await;
    let token = ClaimRequest::Token(TokenClaim {
        token: created.tokens.unwrap().access_token,
    });
    let claimed = c.claim(&token).await.unwrap();
    assert_eq!(claimed.subject.as_deref(), Some("cy"));
    // Expired by the server's clock.
    app.advance(Duration::from_secs(2 * 3600));
    let late = ClaimRequest::Id(IdClaim {
        id: "enrol-8".to_owned(),
        expires_at: until.to_rfc3339(),
    });
    let e = c.claim(&late).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TokenExpired), "{e:?}");
}

#[tokio::test]
async fn operations_endpoints_and_jwks() {
    let app = spawn("").await;
    let c = &app.client;
    assert_eq!(c.healthz().await.unwrap().status, "ok");
    assert_eq!(c.readyz().await.unwrap().status, "ready");
    let jwks = c.jwks().await.unwrap();
    assert!(!jwks.keys.is_empty());
    // The access tokens name a published key.
    let (_, created) = app.create("dee", KindParam::Tokens).await;
    let valid = c
        .validate(&ValidateRequest::access_token(
            created.tokens.unwrap().access_token,
        ))
        .await
        .unwrap();
    assert!(
        jwks.keys.iter().any(|k| k.kid == valid.credential.key_id),
        "{jwks:?}"
    );
}

/// Ids with characters that mean something in a URL reach the server as one path segment.
#[tokio::test]
async fn user_ids_are_one_path_segment() {
    let app = spawn("").await;
    let c = &app.client;
    let odd = "o'neil/../x?y=1#z %41";
    app.create(odd, KindParam::Cookie).await;
    app.create("x", KindParam::Cookie).await;
    let user = UserId::new(odd).unwrap();
    let listed = c.user_sessions(&user, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user_id, odd);
    assert_eq!(c.revoke_user_sessions(&user, None, None).await.unwrap(), 1);
}
