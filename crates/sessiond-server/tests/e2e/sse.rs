//! A small Server-Sent Events client for the tests, and helpers around it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::Target;

/// One SSE block: an event or a comment.
#[derive(Debug, Default)]
pub struct Block {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Option<Value>,
    pub comment: Option<String>,
}

pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    pub async fn open(
        s: &impl Target,
        path: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", s.base()))
            .bearer_auth(s.api_key());
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        req.send().await.unwrap()
    }

    pub async fn connect(s: &impl Target, path: &str, last_event_id: Option<&str>) -> SseClient {
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

    /// A stream opened some other way (its status and type already checked).
    pub fn from_response(resp: reqwest::Response) -> SseClient {
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next block, `None` when the stream ended; panics after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Block> {
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
    pub async fn event(&mut self, wait: Duration) -> Block {
        loop {
            let block = self.next(wait).await.expect("stream ended");
            if block.event.is_some() {
                return block;
            }
        }
    }
}

pub const WAIT: Duration = Duration::from_secs(5);

pub async fn create(s: &impl Target, user: &str) -> String {
    let r = s
        .handle()
        .post("/v1/sessions", json!({"user_id": user, "kind": "cookie"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["session"]["id"].as_str().unwrap().to_owned()
}

pub fn assert_event(block: &Block, kind: &str, session_id: &str) {
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
