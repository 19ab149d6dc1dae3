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
//! Connections echo text and binary messages; a real relay would forward them to a backend. Every
//! call to sessiond goes through `sessiond_client` (typed answers, outages told apart from
//! refusals, the event stream's parsing and resume).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;
use sessiond::{Clock, Secret, SessionId, SystemClock, Timestamp, UserId};
use sessiond_client::api::ValidateRequest;
use sessiond_client::{Client, ClientError, Event};
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
    Revoked(SessionId),
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
    client: Client,
    feeds: Mutex<HashMap<UserId, Feed>>,
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
    /// sessiond could not be asked, or could not decide.
    Upstream,
}

impl Refusal {
    /// sessiond's refusal is a 401; anything else (an outage, an answer that does not parse)
    /// decided nothing.
    fn of(e: &ClientError) -> Refusal {
        match e {
            ClientError::Api { .. } => Refusal::Unauthorized,
            other => {
                tracing::warn!(error = %other, "sessiond could not decide");
                Refusal::Upstream
            }
        }
    }
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
    session_id: SessionId,
    user_id: UserId,
    deadline: Timestamp,
    /// A cookie's deadline is the session's, whose idle part slides with activity; an access
    /// token's `exp` never moves.
    sliding: bool,
}

impl Relay {
    /// A relay talking to sessiond per `config`.
    ///
    /// # Errors
    /// The client cannot be built: a malformed URL or key, or no rustls `CryptoProvider`
    /// installed (see `sessiond_client`).
    pub fn new(config: RelayConfig) -> Result<Self, ClientError> {
        let client = Client::builder(config.sessiond_url)
            .api_key(Secret::new(config.api_key))
            .build()?;
        Ok(Relay {
            inner: Arc::new(Inner {
                client,
                feeds: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The router: `GET /ws` upgrades to a WebSocket.
    pub fn router(self) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self)
    }

    async fn validate(&self, headers: &HeaderMap, query: &WsQuery) -> Result<Validated, Refusal> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let request = if let Some(token) = query.access_token.as_deref().or(bearer) {
            ValidateRequest::access_token(token)
        } else if let Some(cookies) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
            ValidateRequest::cookie_header(cookies)
        } else {
            return Err(Refusal::Unauthorized);
        };
        // The reason of a refusal is in sessiond's audit log; the client learns only
        // "unauthorized".
        let valid = self
            .inner
            .client
            .validate(&request)
            .await
            .map_err(|e| Refusal::of(&e))?;
        let (Ok(session_id), Ok(user_id), Ok(deadline)) = (
            SessionId::parse(&valid.session.id),
            UserId::new(valid.session.user_id),
            Timestamp::parse_rfc3339(&valid.deadline),
        ) else {
            return Err(Refusal::Upstream);
        };
        Ok(Validated {
            session_id,
            user_id,
            deadline,
            sliding: valid.credential.kind == "cookie",
        })
    }

    /// The session's current deadline by a fresh read; `None` when it is revoked or gone.
    async fn current_deadline(&self, session_id: &SessionId) -> Result<Option<Timestamp>, Refusal> {
        let session = match self.inner.client.get_session(session_id).await {
            Ok(session) => session,
            Err(ClientError::Api { .. }) => return Ok(None),
            Err(e) => return Err(Refusal::of(&e)),
        };
        if session.revoked_at.is_some() {
            return Ok(None);
        }
        match (
            Timestamp::parse_rfc3339(&session.idle_expires_at),
            Timestamp::parse_rfc3339(&session.absolute_expires_at),
        ) {
            (Ok(idle), Ok(abs)) => Ok(Some(idle.min(abs))),
            _ => Err(Refusal::Upstream),
        }
    }

    /// Subscribes to the user's feed, starting its upstream stream if needed, and waits until
    /// the upstream is connected.
    async fn subscribe(&self, user_id: &UserId) -> Result<broadcast::Receiver<FeedEvent>, Refusal> {
        let (rx, mut connected) = {
            let mut feeds = self
                .inner
                .feeds
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let feed = feeds.entry(user_id.clone()).or_insert_with(|| {
                let (tx, _) = broadcast::channel(256);
                let (ready_tx, ready_rx) = watch::channel(false);
                tokio::spawn(upstream(
                    self.clone(),
                    user_id.clone(),
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

/// One user's upstream event stream, shared by the user's connections; the client resumes it
/// with `Last-Event-ID` after a broken connection. Ends when the user has no connection left.
async fn upstream(
    relay: Relay,
    user_id: UserId,
    tx: broadcast::Sender<FeedEvent>,
    ready: watch::Sender<bool>,
) {
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
        let events = match relay.inner.client.user_events(&user_id, None).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "event stream refused; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        ready.send_replace(true);
        futures_util::pin_mut!(events);
        loop {
            // Check for abandonment now and then even when the stream is quiet.
            let item = match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(item) => item,
                Err(_quiet) if tx.receiver_count() == 0 => break,
                Err(_quiet) => continue,
            };
            match item {
                Some(Ok(Event::Revoked { data, .. })) => {
                    let _ = tx.send(FeedEvent::Revoked(data.session_id));
                }
                Some(Ok(Event::Resync { .. })) => {
                    let _ = tx.send(FeedEvent::Resync);
                }
                Some(Ok(_)) => {}
                // The client reconnects by itself, resuming from the last event: nothing is
                // lost, or a `resync` follows.
                Some(Err(e)) if e.is_outage() => {
                    tracing::warn!(error = %e, "event stream interrupted; resuming");
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "event stream error");
                    let _ = tx.send(FeedEvent::Resync);
                }
                None => break,
            }
        }
        // The stream ended: events until a new one is open may be lost.
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
