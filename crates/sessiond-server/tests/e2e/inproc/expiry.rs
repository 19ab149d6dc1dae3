//! Lifetimes and deadlines on the manual clock: each boundary is reached by moving time, and the
//! answer on either side of it is exact (`now >= at` is expired).

use std::time::Duration;

use sessiond_server::dto::KindParam;

use super::{spawn_app, Options};

#[tokio::test]
async fn an_access_token_expires_after_its_lifetime_and_leeway_but_refreshes() {
    let s = spawn_app(Options {
        config: "[token_sessions]\naccess_ttl = \"5m\"\nleeway = \"10s\"\n".into(),
        ..Options::default()
    })
    .await;
    let created = s.create_session("tia", KindParam::Tokens).await;
    let tokens = created.tokens.unwrap();
    assert_eq!(tokens.expires_in, 300);
    let access = tokens.access_token;
    let valid = s.validate_access_token(&access).await.unwrap();
    assert_eq!(valid.credential.kind, "access_token");
    assert_eq!(valid.deadline, tokens.access_expires_at);
    // One second short of expiry plus leeway: still valid.
    s.advance(Duration::from_secs(300 + 10 - 1));
    s.validate_access_token(&access).await.unwrap();
    s.advance(Duration::from_secs(1));
    s.validate_access_token(&access)
        .await
        .unwrap_err()
        .assert_problem(401, "token_expired");
    // The session outlives the access token: its refresh token yields a fresh pair.
    let refreshed = s.refresh(&tokens.refresh_token.unwrap()).await.unwrap();
    assert_eq!(refreshed.session.id, created.session.id);
    s.validate_access_token(&refreshed.tokens.access_token)
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_cookie_session_ends_at_its_idle_and_absolute_deadlines() {
    let s = spawn_app(Options {
        config: "[cookie_sessions]\nidle_ttl = \"30m\"\nabsolute_ttl = \"1h\"\ntouch_interval = \"1s\"\n"
            .into(),
        ..Options::default()
    })
    .await;
    // Idle: half an hour without a validation ends it.
    let idle = s.create_session("ida", KindParam::Cookie).await;
    let idle_cookie = idle.cookie.unwrap();
    s.advance(Duration::from_secs(30 * 60 - 1));
    s.validate_cookie(&idle_cookie).await.unwrap();
    // Activity moved the idle window: another 29 minutes are fine...
    s.advance(Duration::from_secs(29 * 60));
    s.validate_cookie(&idle_cookie).await.unwrap();
    // ...30 without activity are not.
    s.advance(Duration::from_secs(30 * 60));
    s.validate_cookie(&idle_cookie)
        .await
        .unwrap_err()
        .assert_problem(401, "session_expired");

    // Absolute: an hour after creation however active.
    let busy = s.create_session("abe", KindParam::Cookie).await;
    let busy_cookie = busy.cookie.unwrap();
    for _ in 0..3 {
        s.advance(Duration::from_secs(20 * 60 - 1));
        s.validate_cookie(&busy_cookie).await.unwrap();
    }
    s.advance(Duration::from_secs(3));
    s.validate_cookie(&busy_cookie)
        .await
        .unwrap_err()
        .assert_problem(401, "session_expired");
    s.stop().await;
}
