//! A remote sessiond server as the layer's backend (feature `remote`): every call is one request
//! of [`sessiond_client::Client`], and [`SessionBackend::ended`] is served for every watched
//! connection of the process by ONE deployment-wide event stream (docs/DESIGN.md §13.2).
//!
//! # Watching many connections on one stream
//! The first `ended` opens `GET /v1/events` (every user's `revoked` and `refreshed` events, a
//! `heartbeat` every `[events] keep_alive`) on a task the backend owns; every watcher listens to
//! its fan-out. A watcher subscribes before it reads its session's row, so a revocation is either
//! in the row or arrives on the stream; it re-reads the row when the stream says `resync` (events
//! were lost), when the watcher fell behind the fan-out, when its session was refreshed (the idle
//! window moved), and when the stream comes back after an outage. While the stream is down the
//! watcher polls the row every [`RemoteBackend::recheck`] instead, keeping the deadlines it knows:
//! an outage can delay noticing a revocation by at most one period after the server is reachable
//! again, never extend a connection past its deadline. An idle deadline that cannot be re-checked
//! ends the connection (fail closed), as the library's watch does.

use std::fmt;
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use sessiond::error::ErrorCode;
use sessiond::{
    Clock, CookieSession, Credential, EndReason, NewSession, RequestContext, RevokeReason, Secret,
    Session, SessionId, SessionStatus, SystemClock, Tenant, Timestamp, UserId, Validated,
};
use sessiond_client::api::{CreateSessionRequest, InvalidView, KindParam, ValidateRequest};
use sessiond_client::{Client, ClientError, Event};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{Failure, SessionBackend};

/// Default period of a watcher's re-reads while the event stream is down.
///
/// ```
/// # fn run(client: sessiond_client::Client) {
/// use sessiond_axum::{RemoteBackend, DEFAULT_RECHECK};
///
/// // Many watched connections: poll half as often while the stream is down.
/// let backend = RemoteBackend::new(client).recheck(DEFAULT_RECHECK * 2);
/// # let _ = backend; }
/// ```
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(1);

/// Buffer of the fan-out from the one stream to every watcher; a watcher that falls further
/// behind re-reads its row.
const NEWS_CAPACITY: usize = 1024;

/// A sessiond server reached through a [`Client`]: the same [`SessionBackend`] as the embedded
/// library, so the application code does not change when sessions move out of process.
///
/// The client's API key needs the routes the layer uses: validate, create, revoke, the user's
/// sessions, CSRF rotation and the event stream. Verdicts keep their wire codes; a server that
/// cannot decide (503), cannot be reached, or refuses the client itself (a wrong API key, a
/// route the key may not use) is [`Failure::Unavailable`]: the request is answered 503 and the
/// cause is logged, because the end user's credential was not judged.
///
/// ```no_run
/// # fn run() -> Result<(), sessiond_client::ClientError> {
/// use sessiond::Secret;
/// use sessiond_axum::{RemoteBackend, Sessions};
/// use sessiond_client::Client;
///
/// let client = Client::builder("http://127.0.0.1:8080")
///     .api_key(Secret::new(std::env::var("SESSIOND_API_KEY").unwrap_or_default()))
///     .build()?;
/// let sessions = Sessions::with_backend(RemoteBackend::new(client)).build();
/// # let _ = sessions; Ok(()) }
/// ```
pub struct RemoteBackend {
    client: Client,
    clock: Arc<dyn Clock>,
    recheck: Duration,
    /// The process's one event stream, opened by the first watch; stopped with the backend.
    hub: OnceLock<Hub>,
}

impl fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("client", &self.client)
            .field("recheck", &self.recheck)
            .field("streaming", &self.hub.get().is_some())
            .finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// The server behind `client`, on the system clock, re-reading every
    /// [`DEFAULT_RECHECK`] while its event stream is down.
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use sessiond_axum::{RemoteBackend, Sessions};
    ///
    /// // Clones of a client share its connection pool: keep one for the application's own calls.
    /// let sessions = Sessions::with_backend(RemoteBackend::new(client.clone())).build();
    /// # let _ = (sessions, client); }
    /// ```
    pub fn new(client: Client) -> Self {
        RemoteBackend {
            client,
            clock: Arc::new(SystemClock),
            recheck: DEFAULT_RECHECK,
            hub: OnceLock::new(),
        }
    }

    /// The clock deadlines are compared with and cookie lifetimes counted from (tests give the
    /// server's manual clock; deployments keep the system clock).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::sync::Arc;
    /// use sessiond::{ManualClock, Timestamp};
    /// use sessiond_axum::RemoteBackend;
    ///
    /// let clock = ManualClock::new(Timestamp::from_unix_millis(0));
    /// let backend = RemoteBackend::new(client).clock(Arc::new(clock));
    /// # let _ = backend; }
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The longest a watcher sleeps between two readings of the clock, and the period of its
    /// re-reads while the event stream is down (at least 10 ms).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_axum::RemoteBackend;
    ///
    /// let backend = RemoteBackend::new(client).recheck(Duration::from_millis(500));
    /// # let _ = backend; }
    /// ```
    pub fn recheck(mut self, period: Duration) -> Self {
        self.recheck = period.max(Duration::from_millis(10));
        self
    }

    /// The client this backend calls.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) {
    /// use sessiond_axum::{RemoteBackend, Sessions};
    ///
    /// let backend = RemoteBackend::new(client);
    /// // Before serving: is sessiond ready (database, keys)?
    /// if let Err(e) = backend.client().readyz().await {
    ///     tracing::warn!(error = %e, "sessiond is not ready; requests will get 503 until it is");
    /// }
    /// let sessions = Sessions::with_backend(backend).build();
    /// # let _ = sessions; }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The process's one event stream, opened on first use.
    fn hub(&self) -> &Hub {
        self.hub.get_or_init(|| Hub::start(self.client.clone()))
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>, Failure> {
        match self.client.get_session(id).await {
            Ok(view) => Session::try_from(&view).map(Some).map_err(unavailable),
            Err(ClientError::Api {
                code: ErrorCode::UnknownSession,
                ..
            }) => Ok(None),
            Err(e) => Err(failure(e)),
        }
    }
}

/// A client error as the layer sees it: verdicts and bad input keep their code; anything that
/// says the server could not judge the credential, or refused this client rather than the end
/// user's credential, is an outage.
fn failure(e: ClientError) -> Failure {
    let ClientError::Api { code, route, .. } = &e else {
        return Failure::Unavailable(Box::new(e));
    };
    match *code {
        // The server's answer about this integration, not about the user's credential.
        ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::OriginNotAllowed
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::RequestTimeout
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnsupportedMediaType
        | ErrorCode::TooManyStreams
        | ErrorCode::Unavailable => {
            tracing::error!(
                route = *route,
                code = code.as_str(),
                "sessiond refused this client's request"
            );
            Failure::Unavailable(Box::new(e))
        }
        // The library says "session not found" for an id that names none.
        ErrorCode::UnknownSession => Failure::Refused(ErrorCode::SessionNotFound),
        code => Failure::Refused(code),
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Failure {
    tracing::error!(error = %e, "sessiond answered outside its API");
    Failure::Unavailable(Box::new(e))
}

fn validate_request(mut request: ValidateRequest, ctx: &RequestContext<'_>) -> ValidateRequest {
    request.csrf_token = ctx.csrf_token.map(str::to_owned);
    request.require_csrf = ctx.require_csrf;
    request.ip = ctx.ip.map(str::to_owned);
    request.user_agent = ctx.user_agent.map(str::to_owned);
    request
}

#[async_trait]
impl SessionBackend for RemoteBackend {
    async fn validate_cookie(
        &self,
        cookie: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure> {
        let request = validate_request(ValidateRequest::cookie(cookie), ctx);
        let answer = self.client.validate(&request).await.map_err(failure)?;
        Validated::try_from(&answer).map_err(unavailable)
    }

    async fn validate_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure> {
        let request = validate_request(ValidateRequest::access_token(token), ctx);
        let answer = self.client.validate(&request).await.map_err(failure)?;
        Validated::try_from(&answer).map_err(unavailable)
    }

    async fn create_cookie_session(&self, new: NewSession) -> Result<CookieSession, Failure> {
        let mut request = CreateSessionRequest::new(new.user_id.as_str(), KindParam::Cookie);
        request.tenant = Some(new.tenant.as_str().to_owned());
        request.ip = new.ip;
        request.user_agent = new.user_agent;
        request.claims = (!new.claims.is_empty()).then_some(new.claims);
        let created = self
            .client
            .create_session(&request)
            .await
            .map_err(failure)?;
        let session = Session::try_from(&created.session).map_err(unavailable)?;
        match (created.cookie, created.csrf_token) {
            (Some(cookie), Some(csrf)) => Ok(CookieSession::new(
                session,
                Secret::new(cookie),
                Secret::new(csrf),
            )),
            _ => Err(unavailable(InvalidView {
                field: "cookie, csrf_token",
            })),
        }
    }

    async fn revoke(&self, id: &SessionId, reason: &RevokeReason) -> Result<(), Failure> {
        self.client
            .revoke_session(id, Some(reason.as_str()))
            .await
            .map_err(failure)
    }

    async fn revoke_user(
        &self,
        user: &UserId,
        tenant: &Tenant,
        except: Option<&SessionId>,
        _reason: &RevokeReason,
    ) -> Result<usize, Failure> {
        // The route records its own reason (`revoke_all`), as the server's API defines it.
        self.client
            .revoke_user_sessions(user, except, Some(tenant))
            .await
            .map_err(failure)
    }

    async fn user_sessions(&self, user: &UserId, tenant: &Tenant) -> Result<Vec<Session>, Failure> {
        let views = self
            .client
            .user_sessions(user, Some(tenant))
            .await
            .map_err(failure)?;
        views
            .iter()
            .map(|v| Session::try_from(v).map_err(unavailable))
            .collect()
    }

    async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, Failure> {
        let rotated = self.client.rotate_csrf(id).await.map_err(failure)?;
        Ok(Secret::new(rotated.csrf_token))
    }

    async fn ended(&self, validated: &Validated) -> Result<EndReason, Failure> {
        let hub = self.hub();
        // Subscribe before the first read: an end is in the row or comes as news.
        let mut news = hub.news.subscribe();
        let mut live = hub.live.subscribe();
        let id = validated.session.id.clone();
        let token_exp = match &validated.credential {
            Credential::AccessToken { expires_at, .. } => Some(*expires_at),
            _ => None,
        };
        // The first read: the session may have ended between the validation and the
        // subscription. An outage here means watching cannot start.
        let Some(mut session) = self.session(&id).await? else {
            return Ok(EndReason::Deleted);
        };
        let mut was_live = *live.borrow_and_update();
        // The hub lives as long as `self`, so its fan-out stays open; should it close anyway,
        // the watcher goes on polling.
        let mut news_open = true;
        let mut stale = false;
        let mut retry_at: Option<Instant> = Some(Instant::now() + self.recheck);
        loop {
            let is_live = news_open && *live.borrow_and_update();
            if is_live && !was_live {
                // The stream is back: whatever it could not replay, the row has.
                stale = true;
                retry_at = None;
            }
            was_live = is_live;
            if (stale || !is_live) && retry_at.is_none_or(|t| Instant::now() >= t) {
                match self.session(&id).await {
                    Ok(Some(row)) => {
                        session = row;
                        stale = false;
                        retry_at = (!is_live).then(|| Instant::now() + self.recheck);
                    }
                    Ok(None) => return Ok(EndReason::Deleted),
                    Err(e) => {
                        tracing::warn!(session_id = %id, error = %e, "watch could not re-read its session; retrying");
                        stale = true;
                        retry_at = Some(Instant::now() + self.recheck);
                    }
                }
            }
            let now = self.clock.now();
            match end_of(&session, token_exp, now) {
                None => {}
                Some(EndReason::IdleExpired) => {
                    // Activity elsewhere may have slid the window: decide on a fresh row.
                    match self.session(&id).await {
                        Ok(Some(row)) => {
                            session = row;
                            if let Some(end) = end_of(&session, token_exp, self.clock.now()) {
                                return Ok(end);
                            }
                            continue;
                        }
                        Ok(None) => return Ok(EndReason::Deleted),
                        Err(e) => {
                            tracing::warn!(session_id = %id, error = %e, "idle expiry could not be re-checked; ending the watch");
                            return Ok(EndReason::IdleExpired);
                        }
                    }
                }
                Some(end) => return Ok(end),
            }
            let deadline = token_exp.map_or(session.deadline(), |t| t.min(session.deadline()));
            let nap = deadline.duration_since(now).min(self.recheck);
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                item = news.recv(), if news_open => match item {
                    Ok(News::Revoked { session_id, reason }) if session_id == id => {
                        return Ok(EndReason::Revoked {
                            reason: reason.and_then(|r| RevokeReason::new(&r).ok()),
                        });
                    }
                    Ok(News::Refreshed { session_id }) if session_id == id => stale = true,
                    Ok(News::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => news_open = false,
                },
                changed = live.changed(), if news_open => {
                    if changed.is_err() {
                        news_open = false;
                    }
                }
            }
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Why a watched credential ends at `now`, if it does (the library's precedence: revoked, then
/// the session's windows, then the token's `exp`).
fn end_of(session: &Session, token_exp: Option<Timestamp>, now: Timestamp) -> Option<EndReason> {
    match session.status(now) {
        SessionStatus::Revoked => Some(EndReason::Revoked {
            reason: session.revoke_reason.clone(),
        }),
        SessionStatus::AbsoluteExpired => Some(EndReason::AbsoluteExpired),
        SessionStatus::IdleExpired => Some(EndReason::IdleExpired),
        _ => token_exp
            .filter(|&exp| sessiond::clock::is_expired(exp, now))
            .map(|_| EndReason::TokenExpired),
    }
}

/// What the one stream tells the watchers.
#[derive(Debug, Clone)]
enum News {
    Revoked {
        session_id: SessionId,
        reason: Option<String>,
    },
    Refreshed {
        session_id: SessionId,
    },
    /// Events were lost: every watcher re-reads its row.
    Resync,
}

/// The process's one deployment-wide event stream, pumped by a task that lives as long as the
/// backend (and its clones).
struct Hub {
    news: broadcast::Sender<News>,
    /// Whether the stream is open and has been heard from; while false, watchers poll.
    live: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    fn start(client: Client) -> Hub {
        let (news, _) = broadcast::channel(NEWS_CAPACITY);
        let live = watch::Sender::new(false);
        let task = tokio::spawn(Hub::pump(client, news.clone(), live.clone()));
        Hub { news, live, task }
    }

    async fn pump(client: Client, news: broadcast::Sender<News>, live: watch::Sender<bool>) {
        let mut failures: u32 = 0;
        loop {
            match client.deployment_events(None).await {
                Ok(stream) => {
                    futures_util::pin_mut!(stream);
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => {
                                failures = 0;
                                live.send_replace(true);
                                let item = match event {
                                    Event::Revoked { data, .. } | Event::Expired { data, .. } => {
                                        News::Revoked {
                                            session_id: data.session_id,
                                            reason: data.reason,
                                        }
                                    }
                                    Event::Refreshed { data, .. } => News::Refreshed {
                                        session_id: data.session_id,
                                    },
                                    Event::Resync { .. } => News::Resync,
                                    _ => continue,
                                };
                                let _ = news.send(item);
                            }
                            Err(e) if e.is_outage() => {
                                live.send_replace(false);
                            }
                            Err(e @ ClientError::Decode { .. }) => {
                                // One event did not parse: whatever it said, the rows have it.
                                tracing::warn!(error = %e, "an event from sessiond did not parse; watchers re-read");
                                let _ = news.send(News::Resync);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "sessiond's event stream refused; watchers poll");
                                live.send_replace(false);
                            }
                        }
                    }
                    live.send_replace(false);
                }
                Err(e) => {
                    live.send_replace(false);
                    if !e.is_outage() {
                        tracing::error!(error = %e, "cannot open sessiond's event stream; watchers poll");
                    }
                }
            }
            // The stream ended (it reconnects by itself through short outages): open it again.
            failures = failures.saturating_add(1);
            tokio::time::sleep(client.backoff().delay(failures)).await;
        }
    }
}
