//! Server-Sent Event streams: per session, per user with `Last-Event-ID` resume, keep-alive,
//! and the per-key stream cap.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{spawn, Options, Server};

/// One SSE block: an event or a comment.
#[derive(Debug, Default)]
struct Block {
    event: Option<String>,
    id: Option<String>,
    data: Option<Value>,
    comment: Option<String>,
}

struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    async fn open(s: &Server, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", s.base))
            .bearer_auth(&s.api_key);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        req.send().await.unwrap()
    }

    async fn connect(s: &Server, path: &str, last_event_id: Option<&str>) -> SseClient {
        let resp = Self::open(s, path, last_event_id).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next block, `None` when the stream ended; panics after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Block> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let raw: String = self.buf.drain(..end + 2).collect();
                    let mut block = Block::default();
                    for line in raw.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            block.event = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("id:") {
                            block.id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            block.data = Some(serde_json::from_str(v.trim()).unwrap());
                        } else if let Some(v) = line.strip_prefix(':') {
                            block.comment = Some(v.trim().to_owned());
                        }
                    }
                    return Some(block);
                }
                match self.resp.chunk().await.unwrap() {
                    Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                    None => return None,
                }
            }
        })
        .await
        .expect("no SSE block in time")
    }

    /// The next event, skipping comments.
    async fn event(&mut self, wait: Duration) -> Block {
        loop {
            let block = self.next(wait).await.expect("stream ended");
            if block.event.is_some() {
                return block;
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(5);

async fn create(s: &Server, user: &str) -> String {
    let r = s
        .post("/v1/sessions", json!({"user_id": user, "kind": "cookie"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["session"]["id"].as_str().unwrap().to_owned()
}

fn assert_event(block: &Block, kind: &str, session_id: &str) {
    assert_eq!(block.event.as_deref(), Some(kind), "{block:?}");
    assert!(
        block.id.as_deref().is_some_and(|id| !id.is_empty()),
        "{block:?}"
    );
    let data = block.data.as_ref().unwrap();
    assert_eq!(data["session_id"], session_id, "{block:?}");
    assert!(data["at"].is_string(), "{block:?}");
    assert!(data.get("user_id").is_none(), "{block:?}");
}

#[tokio::test]
async fn session_stream_gets_revoked_then_closes() {
    let s = spawn(Options::default()).await;
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
    let r = s.get("/v1/events").await;
    r.assert_problem(400, "invalid_request");

    let doc = s
        .request(reqwest::Method::GET, "/openapi.json", None, &[], false)
        .await;
    for p in ["/v1/sessions/{id}/events", "/v1/events"] {
        assert!(doc.body["paths"].get(p).is_some(), "openapi lacks {p}");
    }
}

#[tokio::test]
async fn session_stream_sends_expired_at_the_deadline() {
    let s = spawn(Options {
        config: "[cookie_sessions]\nidle_ttl = \"2s\"\n".into(),
        ..Options::default()
    })
    .await;
    let id = create(&s, "alice").await;
    let mut stream = SseClient::connect(&s, &format!("/v1/sessions/{id}/events"), None).await;
    let block = stream.event(Duration::from_secs(10)).await;
    assert_event(&block, "expired", &id);
    assert_eq!(block.data.as_ref().unwrap()["reason"], "idle_expired");
    assert!(stream.next(WAIT).await.is_none());
}

#[tokio::test]
async fn user_stream_filters_and_resumes_with_last_event_id() {
    let s = spawn(Options::default()).await;
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
