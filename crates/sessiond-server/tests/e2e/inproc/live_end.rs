//! The live end of a page's session over HTTP (in process): `GET /auth/browser/events` sends
//! exactly one `ended` event when the session ends, whatever ended it, then closes.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::handoff::{browser_server, log_in, ORIGIN};
use super::TestApp;
use crate::sse::{SseClient, WAIT};

async fn open(s: &TestApp, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/auth/browser/events", s.base))
        .header("origin", ORIGIN)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn stream(s: &TestApp, token: &str) -> SseClient {
    let resp = open(s, token).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    SseClient::from_response(resp)
}

/// The one `ended` event, its `reason` and `detail`; then the stream must close.
async fn ended(stream: &mut SseClient, session_id: &str) -> (String, Option<String>) {
    let block = stream.event(WAIT).await;
    assert_eq!(block.event.as_deref(), Some("ended"), "{block:?}");
    let data = block.data.unwrap();
    assert_eq!(data["session_id"], session_id, "{data}");
    assert!(data["at"].as_str().unwrap().ends_with('Z'), "{data}");
    assert!(
        stream.next(WAIT).await.is_none(),
        "the stream closes after ended"
    );
    (
        data["reason"].as_str().unwrap().to_owned(),
        data["detail"].as_str().map(str::to_owned),
    )
}

#[tokio::test]
async fn an_admin_revoke_ends_the_stream_with_revoked() {
    let s = browser_server("").await;
    let (token, _, sid) = log_in(&s, "ada").await;
    let mut live = stream(&s, &token).await;
    let r = s
        .post(
            &format!("/v1/sessions/{sid}/revoke"),
            json!({"reason": "admin_action"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        ended(&mut live, &sid).await,
        ("revoked".into(), Some("admin_action".into()))
    );
    // The token no longer validates: a new stream is refused.
    assert_eq!(open(&s, &token).await.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn a_logout_elsewhere_ends_the_stream_with_logout() {
    let s = browser_server("").await;
    let (token, cookie, sid) = log_in(&s, "ben").await;
    let mut live = stream(&s, &token).await;
    let out = s
        .request(
            Method::POST,
            "/auth/browser/logout",
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_eq!(ended(&mut live, &sid).await, ("logout".into(), None));
    s.stop().await;
}

#[tokio::test]
async fn refresh_token_reuse_ends_the_stream_with_reuse_detected() {
    let s = browser_server("[token_sessions]\nrefresh_grace = \"0s\"\n").await;
    let (token, cookie, sid) = log_in(&s, "cat").await;
    let mut live = stream(&s, &token).await;
    let refresh = |c: String| {
        let s = &s;
        async move {
            s.request(
                Method::POST,
                "/auth/browser/refresh",
                None,
                &[("cookie", &c), ("origin", ORIGIN)],
                false,
            )
            .await
        }
    };
    let first = refresh(cookie.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    // The new pair in use (so the old cookie is no lost response), then the old cookie again:
    // theft. A refresh itself passes silently: the next event is the end.
    s.validate_access_token(first.body["access_token"].as_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}", e.text));
    refresh(cookie).await.assert_problem(401, "unauthorized");
    assert_eq!(
        ended(&mut live, &sid).await,
        ("reuse_detected".into(), None)
    );
    s.stop().await;
}

/// Idle expiry on the manual clock: the stream outlives its access token (10 minutes) and ends
/// at the session's own deadline (14 days idle by default).
#[tokio::test]
async fn idle_expiry_ends_the_stream_with_expired() {
    let s = browser_server("").await;
    let (token, _, sid) = log_in(&s, "dan").await;
    let mut live = stream(&s, &token).await;
    s.advance(Duration::from_secs(3600));
    s.advance(Duration::from_secs(14 * 24 * 3600 - 3600));
    assert_eq!(
        ended(&mut live, &sid).await,
        ("expired".into(), Some("idle_expired".into()))
    );
    s.stop().await;
}

#[tokio::test]
async fn at_most_four_streams_per_session_and_shutdown_ends_them_quietly() {
    let s = browser_server("[events]\nkeep_alive = \"50ms\"\n").await;
    let (token, _, _) = log_in(&s, "eli").await;
    let (other, _, _) = log_in(&s, "fox").await;
    let mut open_streams = Vec::new();
    for _ in 0..4 {
        open_streams.push(stream(&s, &token).await);
    }
    let fifth = open(&s, &token).await;
    assert_eq!(fifth.status(), 429);
    let body: serde_json::Value = fifth.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");
    // Another session has its own four.
    open_streams.push(stream(&s, &other).await);
    // Keep-alive comments while nothing happens.
    let block = open_streams[0].next(WAIT).await.unwrap();
    assert_eq!(block.comment.as_deref(), Some("keep-alive"), "{block:?}");
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("the server stops with streams open");
    for live in &mut open_streams {
        while let Some(block) = live.next(WAIT).await {
            assert!(block.event.is_none(), "no event at shutdown: {block:?}");
        }
    }
}
