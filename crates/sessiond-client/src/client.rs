//! [`Client`] and its [`ClientBuilder`]: one method per route of the HTTP API (docs/DESIGN.md
//! §9.3, §9.6, §9.7).

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use sessiond::{Secret, SessionId, Tenant, UserId};
use sessiond_api::{
    ClaimRequest, ClaimResponse, CreateSessionRequest, CreateSessionResponse, CsrfResponse, Health,
    JwkSet, Readiness, RefreshRequest, RefreshResponse, RevokeRequest, RevokeUserRequest,
    RevokeUserResponse, SessionResponse, SessionView, SessionsResponse, ValidateRequest,
    ValidateResponse,
};

use crate::error::ClientError;
use crate::events::{Backoff, Event};

/// A client of one sessiond deployment. Cheap to clone: clones share one connection pool.
///
/// Built by [`Client::builder`]. Its `Debug` shows the base URL, never the API key.
///
/// ```no_run
/// # async fn run() -> Result<(), sessiond_client::ClientError> {
/// use sessiond::Secret;
/// use sessiond_client::Client;
/// use sessiond_client::api::{CreateSessionRequest, KindParam, ValidateRequest};
///
/// // Once per process, before the first client (reqwest uses rustls; pick its provider).
/// let _ = rustls::crypto::ring::default_provider().install_default();
/// let client = Client::builder("http://127.0.0.1:8080")
///     .api_key(Secret::new(std::env::var("SESSIOND_API_KEY").unwrap_or_default()))
///     .build()?;
/// let created = client
///     .create_session(&CreateSessionRequest::new("alice", KindParam::Cookie))
///     .await?;
/// let cookie = created.cookie.unwrap_or_default();
/// let valid = client.validate(&ValidateRequest::cookie(cookie)).await?;
/// println!("{} until {}", valid.session.user_id, valid.deadline);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base: Url,
    /// `Bearer <key>`, marked sensitive.
    authorization: Option<HeaderValue>,
    pub(crate) request_timeout: Duration,
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) backoff: Backoff,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field(
                "api_key",
                &self.inner.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("request_timeout", &self.inner.request_timeout)
            .field("stream_idle_timeout", &self.inner.stream_idle_timeout)
            .field("backoff", &self.inner.backoff)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`Client`]; [`ClientBuilder::build`] checks them.
///
/// ```no_run
/// # fn run() -> Result<(), sessiond_client::ClientError> {
/// use std::time::Duration;
/// use sessiond::Secret;
/// use sessiond_client::{Backoff, Client};
///
/// let ca = std::fs::read("private-ca.pem").unwrap_or_default();
/// let client = Client::builder("https://sessiond.internal:8443")
///     .api_key(Secret::new(String::from("sessiond_…")))
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .root_certificate_pem(&ca)
///     .reconnect(Backoff::new(Duration::from_millis(200), Duration::from_secs(10)))
///     .build()?;
/// # let _ = client; Ok(()) }
/// ```
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<Secret<String>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    stream_idle_timeout: Duration,
    root_certificates: Vec<Vec<u8>>,
    backoff: Backoff,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("root_certificates", &self.root_certificates.len())
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl ClientBuilder {
    /// The API key sent as `Authorization: Bearer` on the `/v1` routes.
    pub fn api_key(mut self, key: Secret<String>) -> Self {
        self.api_key = Some(key);
        self
    }

    /// How long a connection may take to open (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call may take, connection and whole answer included (default 10 s); for an
    /// event stream, how long its answer's head may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long an event stream may stay silent before it counts as broken and reconnects
    /// (default 45 s: the server sends a keep-alive every `events.keep_alive`, 15 s by
    /// default; keep this above it).
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Also trusts the CA certificate(s) in `pem` (a private CA), besides the platform's roots.
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// How event streams wait between reconnections (default [`Backoff::default`]).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`ClientError::Build`]: the base URL is not `http(s)://host[:port][/prefix]` or carries
    /// credentials, the API key is not a valid header value, a certificate does not parse, or no
    /// rustls `CryptoProvider` is installed (the application installs one, e.g.
    /// `rustls::crypto::ring::default_provider().install_default()`).
    pub fn build(self) -> Result<Client, ClientError> {
        let build = |reason| ClientError::Build {
            reason,
            source: None,
        };
        let base = Url::parse(&self.base_url).map_err(|_| build("the base URL does not parse"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(build("the base URL is not http(s)://host[:port][/prefix]"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(build(
                "the base URL carries credentials; give the API key to api_key()",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(build("the base URL has a query or a fragment"));
        }
        let authorization = self
            .api_key
            .map(|key| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose().trim()))
                    .map_err(|_| build("the API key is not a valid header value"))?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        // reqwest panics without a provider; say it as an error instead.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(build(
                "no rustls CryptoProvider is installed; install one at start, e.g. \
                 rustls::crypto::ring::default_provider().install_default()",
            ));
        }
        let mut http = reqwest::Client::builder().connect_timeout(self.connect_timeout);
        for pem in &self.root_certificates {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ClientError::Build {
                    reason: "a root certificate does not parse",
                    source: Some(e),
                })?;
            if certificates.is_empty() {
                return Err(build("a root certificate PEM holds no certificate"));
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http.build().map_err(|e| ClientError::Build {
            reason: "reqwest refused the settings",
            source: Some(e),
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                authorization,
                request_timeout: self.request_timeout,
                stream_idle_timeout: self.stream_idle_timeout,
                backoff: self.backoff,
            }),
        })
    }
}

impl Client {
    /// A builder for a client of the sessiond at `base_url` (`http://host:port`, or with a path
    /// prefix when sessiond is served under one).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(45),
            root_certificates: Vec::new(),
            backoff: Backoff::default(),
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `POST /v1/sessions`: a new session and its credential.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::ClientError> {
    /// use sessiond_client::api::{CreateSessionRequest, KindParam};
    ///
    /// let created = client.create_session(&CreateSessionRequest::new("bob", KindParam::Tokens)).await?;
    /// let tokens = created.tokens.expect("kind tokens returns tokens");
    /// # let _ = tokens; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `invalid_request` for input outside the rules; outages.
    pub async fn create_session(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, ClientError> {
        const ROUTE: &str = "POST /v1/sessions";
        let url = self.url(&["v1", "sessions"])?;
        self.call(ROUTE, self.request(Method::POST, url).json(request))
            .await
    }

    /// `POST /v1/sessions/validate`: the session behind a cookie, a `Cookie` header or an access
    /// token, with its deadline.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, token: String) {
    /// use sessiond_client::api::ValidateRequest;
    ///
    /// match client.validate(&ValidateRequest::access_token(token)).await {
    ///     Ok(valid) => println!("user {}", valid.session.user_id),
    ///     Err(e) if e.is_outage() => println!("could not be checked; answer 503"),
    ///     Err(e) => println!("refused: {:?}", e.code()),
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] with the verdict (`invalid_credential`, `session_expired`,
    /// `token_expired`, `session_revoked`, `session_not_found`, `binding_mismatch`,
    /// `csrf_missing`, `csrf_mismatch`) or `invalid_request`; outages.
    pub async fn validate(
        &self,
        request: &ValidateRequest,
    ) -> Result<ValidateResponse, ClientError> {
        const ROUTE: &str = "POST /v1/sessions/validate";
        let url = self.url(&["v1", "sessions", "validate"])?;
        self.call(ROUTE, self.request(Method::POST, url).json(request))
            .await
    }

    /// `GET /v1/sessions/{id}`: the session, revoked and expired ones included.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, id: sessiond::SessionId) -> Result<(), sessiond_client::ClientError> {
    /// let session = client.get_session(&id).await?;
    /// println!("revoked: {:?}", session.revoked_at);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `session_not_found` ([`sessiond::ErrorCode::UnknownSession`], 404);
    /// outages.
    pub async fn get_session(&self, id: &SessionId) -> Result<SessionView, ClientError> {
        const ROUTE: &str = "GET /v1/sessions/{id}";
        let url = self.url(&["v1", "sessions", id.as_str()])?;
        let answer: SessionResponse = self.call(ROUTE, self.request(Method::GET, url)).await?;
        Ok(answer.session)
    }

    /// `POST /v1/sessions/{id}/revoke`: revokes the session (idempotent), with a reason code
    /// (`[a-z0-9_]{1,64}`; default `logout`).
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, id: sessiond::SessionId) -> Result<(), sessiond_client::ClientError> {
    /// client.revoke_session(&id, Some("admin")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `session_not_found` (404) or `invalid_request` (a bad reason);
    /// outages.
    pub async fn revoke_session(
        &self,
        id: &SessionId,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        const ROUTE: &str = "POST /v1/sessions/{id}/revoke";
        let url = self.url(&["v1", "sessions", id.as_str(), "revoke"])?;
        let body = RevokeRequest {
            reason: reason.map(str::to_owned),
        };
        self.execute(ROUTE, self.request(Method::POST, url).json(&body))
            .await
            .map(drop)
    }

    /// `POST /v1/sessions/{id}/csrf`: a new CSRF token for a cookie session, and the cookie to
    /// forward.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, id: sessiond::SessionId) -> Result<(), sessiond_client::ClientError> {
    /// let csrf = client.rotate_csrf(&id).await?;
    /// # let _ = csrf.set_cookie; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `session_not_found` (404), or a 401 code for an inactive session;
    /// outages.
    pub async fn rotate_csrf(&self, id: &SessionId) -> Result<CsrfResponse, ClientError> {
        const ROUTE: &str = "POST /v1/sessions/{id}/csrf";
        let url = self.url(&["v1", "sessions", id.as_str(), "csrf"])?;
        self.call(ROUTE, self.request(Method::POST, url)).await
    }

    /// `POST /v1/tokens/refresh`: a new token pair for a refresh token (rotation, docs/DESIGN.md
    /// §3.3).
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, refresh_token: String) -> Result<(), sessiond_client::ClientError> {
    /// use sessiond_client::api::RefreshRequest;
    ///
    /// let refreshed = client.refresh(&RefreshRequest::new(refresh_token)).await?;
    /// # let _ = refreshed.tokens; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] with the verdict (`invalid_credential`, `token_expired`,
    /// `refresh_token_reused`, `session_revoked`, `session_expired`, `binding_mismatch`, …);
    /// outages.
    pub async fn refresh(&self, request: &RefreshRequest) -> Result<RefreshResponse, ClientError> {
        const ROUTE: &str = "POST /v1/tokens/refresh";
        let url = self.url(&["v1", "tokens", "refresh"])?;
        self.call(ROUTE, self.request(Method::POST, url).json(request))
            .await
    }

    /// `GET /v1/users/{user_id}/sessions?tenant=`: the user's active sessions, oldest first.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let alice = sessiond::UserId::new("alice")?;
    /// for session in client.user_sessions(&alice, None).await? {
    ///     println!("{} from {:?}", session.id, session.ip);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `invalid_request`; outages.
    pub async fn user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<SessionView>, ClientError> {
        const ROUTE: &str = "GET /v1/users/{user_id}/sessions";
        let url = self.url(&["v1", "users", user.as_str(), "sessions"])?;
        let mut request = self.request(Method::GET, url);
        if let Some(tenant) = tenant {
            request = request.query(&[("tenant", tenant.as_str())]);
        }
        let answer: SessionsResponse = self.call(ROUTE, request).await?;
        Ok(answer.sessions)
    }

    /// `POST /v1/users/{user_id}/sessions/revoke`: revokes the user's sessions (of `tenant`
    /// when given), all but `except` ("log out other devices"); how many were revoked.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, current: sessiond::SessionId) -> Result<(), Box<dyn std::error::Error>> {
    /// let alice = sessiond::UserId::new("alice")?;
    /// let revoked = client.revoke_user_sessions(&alice, Some(&current), None).await?;
    /// # let _ = revoked; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `invalid_request`; outages.
    pub async fn revoke_user_sessions(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        tenant: Option<&Tenant>,
    ) -> Result<usize, ClientError> {
        const ROUTE: &str = "POST /v1/users/{user_id}/sessions/revoke";
        let url = self.url(&["v1", "users", user.as_str(), "sessions", "revoke"])?;
        let body = RevokeUserRequest {
            except: except.map(|id| id.as_str().to_owned()),
            tenant: tenant.map(|t| t.as_str().to_owned()),
        };
        let answer: RevokeUserResponse = self
            .call(ROUTE, self.request(Method::POST, url).json(&body))
            .await?;
        Ok(answer.revoked)
    }

    /// `POST /v1/claims`: claims a one-time token or id; only the first claim succeeds.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::ClientError> {
    /// use sessiond::ErrorCode;
    /// use sessiond_client::api::{ClaimRequest, IdClaim};
    /// use sessiond_client::ClientError;
    ///
    /// let claim = ClaimRequest::Id(IdClaim {
    ///     id: "magic-link-42".to_owned(),
    ///     expires_at: "2030-01-01T00:00:00Z".to_owned(),
    /// });
    /// match client.claim(&claim).await {
    ///     Ok(_) => println!("first use"),
    ///     Err(ClientError::Api { code: ErrorCode::TokenAlreadyUsed, .. }) => println!("replayed"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Api`] `token_already_used` (409), `token_expired`, `invalid_credential`,
    /// `invalid_request`; outages (also when only Redis is down).
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        const ROUTE: &str = "POST /v1/claims";
        let url = self.url(&["v1", "claims"])?;
        self.call(ROUTE, self.request(Method::POST, url).json(request))
            .await
    }

    /// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::ClientError> {
    /// let kids: Vec<String> = client.jwks().await?.keys.into_iter().map(|k| k.kid).collect();
    /// # let _ = kids; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Outages.
    pub async fn jwks(&self) -> Result<JwkSet, ClientError> {
        const ROUTE: &str = "GET /.well-known/jwks.json";
        let url = self.url(&[".well-known", "jwks.json"])?;
        self.call(ROUTE, self.request(Method::GET, url)).await
    }

    /// `GET /healthz`: the process answers.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::ClientError> {
    /// assert_eq!(client.healthz().await?.status, "ok");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Outages.
    pub async fn healthz(&self) -> Result<Health, ClientError> {
        const ROUTE: &str = "GET /healthz";
        let url = self.url(&["healthz"])?;
        self.call(ROUTE, self.request(Method::GET, url)).await
    }

    /// `GET /readyz`: the database answers and every key purpose has an active key.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) {
    /// let ready = client.readyz().await.is_ok();
    /// # let _ = ready; }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Unavailable`] when not ready; outages.
    pub async fn readyz(&self) -> Result<Readiness, ClientError> {
        const ROUTE: &str = "GET /readyz";
        let url = self.url(&["readyz"])?;
        self.call(ROUTE, self.request(Method::GET, url)).await
    }

    /// `GET /v1/sessions/{id}/events`: the session's `refreshed` events, then its terminal
    /// [`Event::Revoked`] or [`Event::Expired`], after which the stream ends. Returns once the
    /// stream is open, so a revocation after the return is on it. A connection that breaks
    /// before the terminal event is reopened (after the [`Backoff`]); the server then sends the
    /// terminal event at once if the session ended meanwhile.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client, id: sessiond::SessionId) -> Result<(), sessiond_client::ClientError> {
    /// use futures_util::StreamExt;
    ///
    /// let events = client.session_events(&id).await?;
    /// futures_util::pin_mut!(events);
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(event) if event.is_terminal() => println!("ended: {event:?}"),
    ///         Ok(_) => {}
    ///         Err(e) if e.is_outage() => eprintln!("reconnecting: {e}"),
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Opening: [`ClientError::Api`] `session_not_found` (404) or `too_many_streams` (429);
    /// outages. In the stream: as [`Client::user_events`].
    pub async fn session_events(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + Send + 'static, ClientError> {
        const ROUTE: &str = "GET /v1/sessions/{id}/events";
        let url = self.url(&["v1", "sessions", id.as_str(), "events"])?;
        self.follow(ROUTE, url, true).await
    }

    /// `GET /v1/events?user_id=&tenant=`: the `revoked` and `refreshed` events of the user's
    /// sessions (never `expired`: keep the deadline from validation), for as long as the stream
    /// is polled. Returns once the stream is open. A connection that breaks or goes silent
    /// longer than the idle timeout is reopened after the [`Backoff`] with `Last-Event-ID` set
    /// to the last event's id: the server replays what was missed, or sends [`Event::Resync`]
    /// when it cannot (then re-read the sessions).
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use sessiond_client::Event;
    ///
    /// let alice = sessiond::UserId::new("alice")?;
    /// let events = client.user_events(&alice, None).await?;
    /// futures_util::pin_mut!(events);
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(Event::Revoked { data, .. }) => println!("close {}", data.session_id),
    ///         Ok(Event::Resync { .. }) => println!("re-read alice's sessions"),
    ///         Ok(_) => {}
    ///         Err(e) if e.is_outage() => eprintln!("sessiond unreachable, retrying: {e}"),
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Opening: [`ClientError::Api`] (`invalid_request`, `unauthorized`, `too_many_streams`);
    /// outages. In the stream, an `Err` item is one of: an outage while reconnecting (the
    /// stream goes on retrying, unless the [`Backoff`] gives up: then it is the last item); a
    /// [`ClientError::Decode`] for one event that did not parse (the stream goes on); any other
    /// error answering a reconnection (the key was revoked, the session is gone), the last item.
    pub async fn user_events(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + Send + 'static, ClientError> {
        const ROUTE: &str = "GET /v1/events";
        let mut url = self.url(&["v1", "events"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("user_id", user.as_str());
            if let Some(tenant) = tenant {
                query.append_pair("tenant", tenant.as_str());
            }
        }
        self.follow(ROUTE, url, false).await
    }

    /// `GET /v1/events?tenant=`: the `revoked` and `refreshed` events of every user of the
    /// deployment (of `tenant` when given), and an [`Event::Heartbeat`] every `[events]
    /// keep_alive` of the server. The stream a process holds once to watch many sessions (never
    /// one per connection); otherwise as [`Client::user_events`]: reconnection with
    /// `Last-Event-ID`, [`Event::Resync`] when missed events cannot be replayed.
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use sessiond_client::Event;
    ///
    /// let events = client.deployment_events(None).await?;
    /// futures_util::pin_mut!(events);
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(Event::Revoked { data, .. }) => println!("close {}", data.session_id),
    ///         Ok(Event::Heartbeat { at, .. }) => println!("alive at {at}"),
    ///         Ok(_) => {}
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::user_events`].
    pub async fn deployment_events(
        &self,
        tenant: Option<&Tenant>,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + Send + 'static, ClientError> {
        const ROUTE: &str = "GET /v1/events";
        let mut url = self.url(&["v1", "events"])?;
        if let Some(tenant) = tenant {
            url.query_pairs_mut().append_pair("tenant", tenant.as_str());
        }
        self.follow(ROUTE, url, false).await
    }

    /// The reconnection [`Backoff`] this client was built with.
    ///
    /// ```
    /// # fn run() -> Result<(), sessiond_client::ClientError> {
    /// # let _ = rustls::crypto::ring::default_provider().install_default();
    /// use sessiond_client::{Backoff, Client};
    ///
    /// let client = Client::builder("http://127.0.0.1:8080").build()?;
    /// assert_eq!(client.backoff(), Backoff::default());
    /// # Ok(()) }
    /// ```
    pub fn backoff(&self) -> Backoff {
        self.inner.backoff
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.inner.base.clone();
        // `build` refused bases that cannot be a base, the only case this fails.
        url.path_segments_mut()
            .map_err(|()| ClientError::Build {
                reason: "the base URL cannot take a path",
                source: None,
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A request with the API key.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.inner.http.request(method, url);
        match &self.inner.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Sends `request` within the request timeout; the answer if it is a success.
    async fn execute(
        &self,
        route: &'static str,
        request: RequestBuilder,
    ) -> Result<Response, ClientError> {
        let response = request
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(|e| ClientError::transport(route, e))?;
        Client::success(route, response).await
    }

    /// `response` if it is a success, else its error.
    pub(crate) async fn success(
        route: &'static str,
        response: Response,
    ) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::transport(route, e))?;
        Err(ClientError::from_answer(route, status.as_u16(), &body))
    }

    /// Sends `request`; the success's body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        route: &'static str,
        request: RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.execute(route, request).await?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::transport(route, e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::decode(route, status, &e))
    }
}
