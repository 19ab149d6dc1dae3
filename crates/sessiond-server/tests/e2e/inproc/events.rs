//! Server-Sent Event streams in process: per session (revoked, expired on the manual clock),
//! per user with `Last-Event-ID` resume, deployment-wide with heartbeats.

use std::time::Duration;

use serde_json::json;

use super::{spawn_app, Options};
use crate::sse::{assert_event, create, SseClient, WAIT};

#[tokio::test]
async fn session_stream_gets_revoked_then_closes() {
    let s = spawn_app(Options::default()).await;
    let id = create(&s, "alice").await;
    let mut stream = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    let r = s
        .post(
            &format!("/v1/sessions/{id}/revoke"),
            json!({"reason": "logout"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let block = stream.event(WAIT).await;
    assert_event(&block, "revoked", &id);
    assert_eq!(block.data.as_ref().unwrap()["reason"], "logout");
    assert!(
        stream.next(WAIT).await.is_none(),
        "stream closes after revoked"
    );

    // Already revoked: the terminal event at once, then the end.
    let mut stream = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    let block = stream.event(WAIT).await;
    assert_event(&block, "revoked", &id);
    assert!(stream.next(WAIT).await.is_none());

    // Unknown session, no API key.
    let r = s.get("/v1/sessions/ses-nope/events").await;
    r.assert_problem(404, "session_not_found");
    let r = s
        .request(
            reqwest::Method::GET,
            "/v1/events?user_id=alice",
            None,
            &[],
            false,
        )
        .await;
    r.assert_problem(401, "unauthorized");
    let r = s.get("/v1/events?user_id=").await;
    r.assert_problem(400, "invalid_request");

    let doc = s
        .request(reqwest::Method::GET, "/openapi.json", None, &[], false)
        .await;
    for p in ["/v1/sessions/{id}/events", "/v1/events"] {
        assert!(doc.body["paths"].get(p).is_some(), "openapi lacks {p}");
    }
}

/// The idle deadline is reached by moving the server's clock, not by waiting for it: the watch
/// re-reads the clock at least every second (`watch_recheck`).
#[tokio::test]
async fn session_stream_sends_expired_at_the_deadline() {
    let s = spawn_app(Options::default()).await;
    let id = create(&s, "alice").await;
    let mut stream = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    // The default idle lifetime is an hour; a minute short of it the session lives on.
    s.advance(Duration::from_secs(3600 - 60));
    let r = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.advance(Duration::from_secs(60));
    let block = stream.event(WAIT).await;
    assert_event(&block, "expired", &id);
    assert_eq!(block.data.as_ref().unwrap()["reason"], "idle_expired");
    assert!(stream.next(WAIT).await.is_none());
}

#[tokio::test]
async fn user_stream_filters_and_resumes_with_last_event_id() {
    let s = spawn_app(Options::default()).await;
    let mut stream = SseClient::connect(&s, "/v1/events?user_id=alice", None).await;
    let a = create(&s, "alice").await;
    let b = create(&s, "alice").await;
    let other = create(&s, "bob").await;
    let r = s
        .post(&format!("/v1/sessions/{other}/revoke"), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let r = s.post("/v1/users/alice/sessions/revoke", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"], 2);
    let first = stream.event(WAIT).await;
    let second = stream.event(WAIT).await;
    let mut got = vec![
        first.data.as_ref().unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        second.data.as_ref().unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    assert_eq!(first.event.as_deref(), Some("revoked"));
    assert_eq!(second.event.as_deref(), Some("revoked"));
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want, "bob's revocation is filtered out");
    drop(stream);

    // Resume after the first: the second is replayed.
    let first_id = first.id.clone().unwrap();
    let mut resumed = SseClient::connect(&s, "/v1/events?user_id=alice", Some(&first_id)).await;
    let replayed = resumed.event(WAIT).await;
    assert_eq!(replayed.id, second.id);
    assert_eq!(replayed.data, second.data);
    // Then live events continue.
    let c = create(&s, "alice").await;
    s.post(&format!("/v1/sessions/{c}/revoke"), json!({})).await;
    let live = resumed.event(WAIT).await;
    assert_event(&live, "revoked", &c);
    drop(resumed);

    // A tenant filter hides other tenants' events.
    let mut tenant_stream =
        SseClient::connect(&s, "/v1/events?user_id=alice&tenant=t2", None).await;
    let d = create(&s, "alice").await; // default tenant
    let r = s
        .post(
            "/v1/sessions",
            json!({"user_id": "alice", "kind": "cookie", "tenant": "t2"}),
        )
        .await;
    let e = r.body["session"]["id"].as_str().unwrap().to_owned();
    s.post(&format!("/v1/sessions/{d}/revoke"), json!({})).await;
    s.post(&format!("/v1/sessions/{e}/revoke"), json!({})).await;
    assert_event(&tenant_stream.event(WAIT).await, "revoked", &e);
    drop(tenant_stream);

    // An id of another process (or garbage) cannot be replayed: resync.
    for last in ["1-1", "garbage"] {
        let mut stale = SseClient::connect(&s, "/v1/events?user_id=alice", Some(last)).await;
        let block = stale.event(WAIT).await;
        assert_eq!(block.event.as_deref(), Some("resync"), "{block:?}");
        assert_eq!(block.data.as_ref().unwrap()["reason"], "replay_unavailable");
        assert!(block.id.is_some());
    }
}

/// Without `user_id`: every user's events (by tenant when given), and a `heartbeat` every
/// `keep_alive` whose id resumes after everything sent so far.
#[tokio::test]
async fn deployment_stream_carries_every_user_and_heartbeats() {
    let s = spawn_app(Options {
        config: "[events]\nkeep_alive = \"100ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut all = SseClient::connect(&s, "/v1/events", None).await;
    // The first heartbeat comes at once: the stream is live.
    let beat = all.event(WAIT).await;
    assert_eq!(beat.event.as_deref(), Some("heartbeat"), "{beat:?}");
    assert!(beat.data.as_ref().unwrap()["at"].is_string());
    let a = create(&s, "alice").await;
    let b = create(&s, "bob").await;
    for id in [&a, &b] {
        s.post(&format!("/v1/sessions/{id}/revoke"), json!({}))
            .await;
    }
    let mut revoked = Vec::new();
    let mut last_beat = None;
    while revoked.len() < 2 || last_beat.is_none() {
        let block = all.event(WAIT).await;
        match block.event.as_deref() {
            Some("revoked") => revoked.push(
                block.data.as_ref().unwrap()["session_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            Some("heartbeat") if revoked.len() == 2 => last_beat = block.id,
            Some("heartbeat") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(revoked, [a, b.clone()]);
    drop(all);
    // Resuming from a heartbeat replays nothing already sent: the next event is new.
    let mut resumed = SseClient::connect(&s, "/v1/events", last_beat.as_deref()).await;
    let c = create(&s, "carol").await;
    s.post(&format!("/v1/sessions/{c}/revoke"), json!({})).await;
    loop {
        let block = resumed.event(WAIT).await;
        match block.event.as_deref() {
            Some("heartbeat") => continue,
            _ => {
                assert_event(&block, "revoked", &c);
                break;
            }
        }
    }
}

/// One shutdown ends everything: open streams of both kinds end (without an event) instead of
/// holding the drain open, and `run` returns once the background tasks are stopped.
#[tokio::test]
async fn stop_ends_open_streams_and_returns() {
    let s = spawn_app(Options::default()).await;
    let id = create(&s, "alice").await;
    let mut session = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    let mut user = SseClient::connect(&s, "/v1/events?user_id=alice", None).await;
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("the server stops with streams open");
    for stream in [&mut session, &mut user] {
        while let Some(block) = stream.next(WAIT).await {
            assert!(block.event.is_none(), "no event at shutdown: {block:?}");
        }
    }
}
