//! Server-Sent Event streams where the process matters: the per-key stream cap and keep-alive,
//! and open streams ending on SIGTERM instead of holding the drain open. The rest runs in
//! process (`inproc::events`).

use std::time::Duration;

use crate::harness::{spawn, Options};
use crate::sse::{create, SseClient, WAIT};

#[tokio::test]
async fn per_key_cap_and_keep_alive() {
    let s = spawn(Options {
        config: "[events]\nmax_streams_per_key = 2\nkeep_alive = \"200ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let id = create(&s, "alice").await;
    let mut one = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    let two = SseClient::connect(&s, "/v1/events?user_id=alice", None).await;
    let r = s.get("/v1/events?user_id=alice").await;
    r.assert_problem(429, "too_many_streams");
    // The same key spelled with extra whitespace is the same caller, not a fresh allowance.
    // (A stream opened by mistake would never end: bounded, so that fails fast.)
    let padded = format!("Bearer   {}  ", s.api_key);
    let header = [("authorization", padded.as_str())];
    let refused = s.request(
        reqwest::Method::GET,
        "/v1/events?user_id=alice",
        None,
        &header,
        false,
    );
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("answered at once, not streamed")
        .assert_problem(429, "too_many_streams");
    let metrics = s.get("/metrics").await;
    assert!(
        metrics.text.contains("\nsessiond_event_streams_open 2\n"),
        "{}",
        metrics.text
    );

    // Keep-alive comments on an idle stream.
    let block = one.next(WAIT).await.unwrap();
    assert_eq!(block.comment.as_deref(), Some("keep-alive"), "{block:?}");
    assert!(block.event.is_none());

    // Closing a stream frees its slot (released when the server notices the disconnect).
    drop(two);
    let deadline = tokio::time::Instant::now() + WAIT;
    // Kept open (dropping it would free the slot only once the server notices, a race with
    // anything opened right after).
    let _user = loop {
        let resp = SseClient::open(&s, "/v1/events?user_id=alice", None).await;
        if resp.status() == 200 {
            break resp;
        }
        assert_eq!(resp.status(), 429);
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Open streams end on SIGTERM instead of holding the graceful shutdown open.
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("server stops with streams open");
    while let Some(block) = one.next(WAIT).await {
        assert!(
            block.event.is_none(),
            "only keep-alives before the end: {block:?}"
        );
    }
}
