//! A WebSocket relay that enforces sessiond sessions live.
//!
//! The pattern (docs/DESIGN.md §6.3, §9.6), for anyone writing their own relay:
//! 1. **Validate** the upgrade request through sessiond (`POST /v1/sessions/validate` with the
//!    request's `Cookie` header, or an access token from `?access_token=` or
//!    `Authorization: Bearer`). A failure is a 401 before the upgrade.
//! 2. **Follow** the user's event stream (`GET /v1/events?user_id=`): one upstream SSE stream per
//!    user, shared by all of that user's connections, resumed with `Last-Event-ID`. After
//!    subscribing, re-read the session once (`GET /v1/sessions/{id}`): a revocation between the
//!    validation and the subscription is then in the row, any later one is on the stream.
//! 3. **Close** with code 1008 (policy violation) and reason `revoked` when the session's
//!    `revoked` event arrives, or `expired` when the validation's `deadline` passes, whichever
//!    comes first. On `resync` (events were lost) re-read the session.
//!
//! Connections echo text and binary messages; a real relay would forward them to a backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond::{Clock, SystemClock, Timestamp};
use tokio::sync::{broadcast, watch};

/// The WebSocket close code sent when a credential ends: 1008, policy violation.
pub const CLOSE_POLICY: u16 = 1008;

/// How to reach sessiond.
#[derive(Clone)]
pub struct RelayConfig {
    /// sessiond's base URL, e.g. `http://127.0.0.1:8080`.
    pub sessiond_url: String,
    /// An API key of sessiond (never logged).
    pub api_key: String,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("sessiond_url", &self.sessiond_url)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

/// What a user's upstream stream reports to that user's connections.
#[derive(Debug, Clone)]
enum FeedEvent {
    /// A session of the user was revoked.
    Revoked(String),
    /// Events may have been lost: re-read your session.
    Resync,
}

#[derive(Debug)]
struct Feed {
    tx: broadcast::Sender<FeedEvent>,
    connected: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Inner {
    config: RelayConfig,
    http: reqwest::Client,
    feeds: Mutex<HashMap<String, Feed>>,
}

/// The relay's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

/// Why a connection is refused.
#[derive(Debug)]
enum Refusal {
    /// sessiond said no (the reason stays in sessiond's log).
    Unauthorized,
    /// sessiond could not be asked.
    Upstream,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
            Refusal::Upstream => {
                (StatusCode::SERVICE_UNAVAILABLE, "sessiond unavailable").into_response()
            }
        }
    }
}

/// `?access_token=` on the upgrade request.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// An access token (browsers cannot set headers on a WebSocket upgrade).
    pub access_token: Option<String>,
}

/// A validated connection: what it needs to enforce.
#[derive(Debug)]
struct Validated {
    session_id: String,
    user_id: String,
    deadline: Timestamp,
    /// A cookie's deadline is the session's, whose idle part slides with activity; an access
    /// token's `exp` never moves.
    sliding: bool,
}

impl Relay {
    /// A relay talking to sessiond per `config`.
    pub fn new(config: RelayConfig) -> Self {
        Relay {
            inner: Arc::new(Inner {
                config,
                http: reqwest::Client::new(),
                feeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The router: `GET /ws` upgrades to a WebSocket.
    pub fn router(self) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.inner.config.sessiond_url.trim_end_matches('/')
        )
    }

    async fn validate(&self, headers: &HeaderMap, query: &WsQuery) -> Result<Validated, Refusal> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let body = if let Some(token) = query.access_token.as_deref().or(bearer) {
            json!({ "access_token": token })
        } else if let Some(cookies) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
            json!({ "cookie_header": cookies })
        } else {
            return Err(Refusal::Unauthorized);
        };
        let resp = self
            .inner
            .http
            .post(self.url("/v1/sessions/validate"))
            .bearer_auth(&self.inner.config.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "sessiond unreachable");
                Refusal::Upstream
            })?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(Refusal::Upstream);
        }
        if !status.is_success() {
            // The reason is in sessiond's audit log; the client learns only "unauthorized".
            return Err(Refusal::Unauthorized);
        }
        let v: Value = resp.json().await.map_err(|_| Refusal::Upstream)?;
        let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let (Some(session_id), Some(user_id), Some(deadline)) = (
            text("/session/id"),
            text("/session/user_id"),
            text("/deadline").and_then(|d| Timestamp::parse_rfc3339(&d).ok()),
        ) else {
            return Err(Refusal::Upstream);
        };
        let sliding = text("/credential/type").as_deref() == Some("cookie");
        Ok(Validated {
            session_id,
            user_id,
            deadline,
            sliding,
        })
    }

    /// The session's current deadline by a fresh read; `None` when it is revoked or gone.
    async fn current_deadline(&self, session_id: &str) -> Result<Option<Timestamp>, Refusal> {
        let resp = self
            .inner
            .http
            .get(self.url(&format!("/v1/sessions/{session_id}")))
            .bearer_auth(&self.inner.config.api_key)
            .send()
            .await
            .map_err(|_| Refusal::Upstream)?;
        if resp.status().is_client_error() {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Refusal::Upstream);
        }
        let v: Value = resp.json().await.map_err(|_| Refusal::Upstream)?;
        if !v.pointer("/session/revoked_at").is_none_or(Value::is_null) {
            return Ok(None);
        }
        let at = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        };
        match (
            at("/session/idle_expires_at"),
            at("/session/absolute_expires_at"),
        ) {
            (Some(idle), Some(abs)) => Ok(Some(idle.min(abs))),
            _ => Err(Refusal::Upstream),
        }
    }

    /// Subscribes to the user's feed, starting its upstream stream if needed, and waits until
    /// the upstream is connected.
    async fn subscribe(&self, user_id: &str) -> Result<broadcast::Receiver<FeedEvent>, Refusal> {
        let (rx, mut connected) = {
            let mut feeds = self
                .inner
                .feeds
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let feed = feeds.entry(user_id.to_owned()).or_insert_with(|| {
                let (tx, _) = broadcast::channel(256);
                let (ready_tx, ready_rx) = watch::channel(false);
                tokio::spawn(upstream(
                    self.clone(),
                    user_id.to_owned(),
                    tx.clone(),
                    ready_tx,
                ));
                Feed {
                    tx,
                    connected: ready_rx,
                }
            });
            (feed.tx.subscribe(), feed.connected.clone())
        };
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
            .await
            .map_err(|_| Refusal::Upstream)?
            .map_err(|_| Refusal::Upstream)?;
        Ok(rx)
    }
}

/// Parses one SSE block into (event, id, data).
fn parse_block(raw: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let (mut event, mut id, mut data) = (None, None, None);
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(v.trim());
        }
    }
    (event, id, data)
}

/// One user's upstream SSE stream, shared by the user's connections; reconnects with
/// `Last-Event-ID`, ends when the user has no connection left.
async fn upstream(
    relay: Relay,
    user_id: String,
    tx: broadcast::Sender<FeedEvent>,
    ready: watch::Sender<bool>,
) {
    let mut last_id: Option<String> = None;
    loop {
        {
            let mut feeds = relay
                .inner
                .feeds
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Nobody listens (and a subscriber always takes this lock first): stop.
            if tx.receiver_count() == 0 && *ready.borrow() {
                feeds.remove(&user_id);
                return;
            }
        }
        let mut req = relay
            .inner
            .http
            .get(relay.url("/v1/events"))
            .query(&[("user_id", user_id.as_str())])
            .bearer_auth(&relay.inner.config.api_key);
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id.as_str());
        }
        let mut resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(status = %r.status(), "event stream refused; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        ready.send_replace(true);
        let mut buf = String::new();
        loop {
            // Check for abandonment now and then even when the stream is quiet.
            let chunk = match tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await {
                Ok(chunk) => chunk,
                Err(_quiet) if tx.receiver_count() == 0 => break,
                Err(_quiet) => continue,
            };
            let Ok(Some(bytes)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buf.find("\n\n") {
                let raw: String = buf.drain(..end + 2).collect();
                let (event, id, data) = parse_block(&raw);
                if let Some(id) = id {
                    last_id = Some(id.to_owned());
                }
                let data: Option<Value> = data.and_then(|d| serde_json::from_str(d).ok());
                let session = data
                    .as_ref()
                    .and_then(|d| d.get("session_id"))
                    .and_then(Value::as_str);
                match (event, session) {
                    (Some("revoked"), Some(s)) => {
                        let _ = tx.send(FeedEvent::Revoked(s.to_owned()));
                    }
                    (Some("resync"), _) => {
                        let _ = tx.send(FeedEvent::Resync);
                    }
                    _ => {}
                }
            }
        }
        // The stream broke: events until the reconnect are replayed (or a resync comes).
        let _ = tx.send(FeedEvent::Resync);
    }
}

async fn upgrade(
    State(relay): State<Relay>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let validated = relay.validate(&headers, &query).await?;
    let feed = relay.subscribe(&validated.user_id).await?;
    // Revoked between the validation and the subscription? Then it is in the row.
    let revoked = relay
        .current_deadline(&validated.session_id)
        .await?
        .is_none();
    Ok(ws.on_upgrade(move |socket| hold(relay, socket, validated, feed, revoked)))
}

fn close(reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_POLICY,
        reason: reason.into(),
    }))
}

/// Holds one connection until its credential ends or the client leaves.
async fn hold(
    relay: Relay,
    mut socket: WebSocket,
    validated: Validated,
    mut feed: broadcast::Receiver<FeedEvent>,
    revoked: bool,
) {
    if revoked {
        let _ = socket.send(close("revoked")).await;
        return;
    }
    let mut until = validated.deadline;
    let deadline = tokio::time::sleep(until.duration_since(SystemClock.now()));
    tokio::pin!(deadline);
    let reason = loop {
        tokio::select! {
            () = &mut deadline => {
                // A cookie session's idle window may have slid with activity elsewhere.
                if validated.sliding {
                    if let Ok(Some(later)) = relay.current_deadline(&validated.session_id).await {
                        let now = SystemClock.now();
                        if later > now {
                            until = later;
                            deadline.as_mut().reset(tokio::time::Instant::now() + until.duration_since(now));
                            continue;
                        }
                    }
                }
                break Some("expired");
            }
            event = feed.recv() => match event {
                Ok(FeedEvent::Revoked(id)) if id == validated.session_id => break Some("revoked"),
                Ok(FeedEvent::Revoked(_)) => {}
                Ok(FeedEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    match relay.current_deadline(&validated.session_id).await {
                        Ok(None) => break Some("revoked"),
                        Ok(Some(_)) => {}
                        Err(_) => tracing::warn!("could not re-check a session; keeping its deadline"),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The upstream ended (never while we listen); follow a fresh one.
                    match relay.subscribe(&validated.user_id).await {
                        Ok(rx) => feed = rx,
                        Err(_) => break Some("revoked"),
                    }
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => { if socket.send(Message::Text(t)).await.is_err() { break None; } }
                Some(Ok(Message::Binary(b))) => { if socket.send(Message::Binary(b)).await.is_err() { break None; } }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(reason) = reason {
        tracing::debug!(session_id = %validated.session_id, reason, "closing connection");
        let _ = socket.send(close(reason)).await;
    }
}
