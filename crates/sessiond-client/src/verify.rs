//! [`LocalVerifier`]: access tokens checked in this process, against sessiond's JWKS, with
//! revocations and key retirements pushed by the deployment-wide event stream (docs/DESIGN.md
//! §13.2). No request to sessiond per token while the stream is heard from.
//!
//! # What a local acceptance means
//! A token is accepted locally when its signature verifies under a key the server still lists,
//! its claims are ours (`iss`, `aud`, `exp`), the stream has been heard from within
//! `stale_after`, its session is not among the revocations the stream delivered, and it was issued
//! after the verifier caught up (below). That is a bound, weaker than the server's read-through
//! ("refused by the very next request"): a revocation reaches the verifier as fast as the stream
//! carries it (milliseconds on a healthy deployment), and in the worst case the verifier accepts
//! a revoked session's token for at most `stale_after` after the revocation; past that, without a
//! heartbeat, it fails closed or asks the server ([`WhenStale`]).
//!
//! # Caught up
//! Revocations that happened while the verifier was not listening (before it started, or in a
//! gap the server could not replay: `resync`) are unknown to it. A session revoked then cannot
//! obtain new tokens, so only tokens issued before the verifier (re)started listening can be
//! affected: the verifier is *caught up* for a token whose `iat` is later than the moment it
//! started listening plus `clock_skew` (node clocks differ). Older tokens are validated online
//! until they expire (at most one access-token lifetime after each start or resync).
//!
//! # Keys
//! The JWKS is fetched at start and refetched when a token names an unknown `kid` (at most once
//! per `refetch_interval`, so a flood of forged `kid`s cannot turn into a flood of fetches).
//! Every heartbeat lists the access keys that verify now: a key the verifier holds that is not
//! listed is dropped at once, so a retired key stops verifying within one heartbeat, and a
//! listed key it lacks (a rotation) makes it fetch the set then, whatever `refetch_interval`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use sessiond::jose::foreign::{ForeignError, TrustedIssuer};
use sessiond::jose::JwsError;
use sessiond::{Clock, ErrorCode, KeyId, SessionId, SystemClock, Timestamp, UserId};
use sessiond_api::ValidateRequest;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Client, ClientError, Event};

/// What [`LocalVerifier::verify`] does while the event stream has not been heard from for
/// longer than `stale_after`.
///
/// ```no_run
/// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::VerifyError> {
/// use sessiond_client::{LocalVerifier, WhenStale};
///
/// // A payment API would rather answer 503 than accept a token it cannot vouch for.
/// let verifier = LocalVerifier::builder(client)
///     .when_stale(WhenStale::FailClosed)
///     .start()
///     .await?;
/// # let _ = verifier; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenStale {
    /// Validate online (`POST /v1/sessions/validate`): as strong as the server, one round trip
    /// per token until the stream is back. The default.
    Online,
    /// Refuse as an outage ([`VerifyError::Unavailable`], a 503): no token is accepted that the
    /// verifier cannot vouch for.
    FailClosed,
}

/// How a token was accepted.
///
/// ```
/// use sessiond_client::{LocalVerifier, Verified, VerifyError, Via};
///
/// async fn verify(verifier: &LocalVerifier, token: &str) -> Result<Verified, VerifyError> {
///     let verified = verifier.verify(token).await?;
///     if verified.via == Via::Online {
///         // A round trip to sessiond: many of these mean a stale stream or a fresh restart.
///         tracing::debug!(session_id = %verified.session_id, "token checked online");
///     }
///     Ok(verified)
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// Checked in this process.
    Local,
    /// Checked by the server (stale stream, or issued before the verifier caught up).
    Online,
}

/// An accepted access token.
///
/// ```
/// use sessiond::UserId;
/// use sessiond_client::{LocalVerifier, VerifyError};
///
/// async fn user_of(verifier: &LocalVerifier, token: &str) -> Result<UserId, VerifyError> {
///     let verified = verifier.verify(token).await?;
///     // A long-lived connection it authenticates must close at `verified.expires_at`.
///     Ok(verified.user_id)
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verified {
    /// Its session (`sid`).
    pub session_id: SessionId,
    /// Its user (`sub`).
    pub user_id: UserId,
    /// Its `exp`: stop honouring it then.
    pub expires_at: Timestamp,
    /// How it was checked.
    pub via: Via,
}

/// Why a token was not accepted: a verdict with its wire code, or an outage (nothing decided).
///
/// ```
/// use sessiond_client::{LocalVerifier, VerifyError};
///
/// // The HTTP status to answer a request bearing `token` with.
/// async fn status(verifier: &LocalVerifier, token: &str) -> u16 {
///     match verifier.verify(token).await {
///         Ok(_) => 200,
///         Err(VerifyError::Unavailable(why)) => {
///             // Nothing was decided: log the cause, answer 503, and log nobody out.
///             tracing::warn!(%why, "token could not be checked");
///             503
///         }
///         Err(refused) => refused.code().status(),
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is refused (`invalid_credential`, `token_expired`, `session_revoked`, …).
    #[error("refused: {0}")]
    Refused(ErrorCode),
    /// It could not be checked: the stream is stale and the verifier fails closed, or the
    /// server (JWKS, online validation) could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl VerifyError {
    /// The wire code (`unavailable` for an outage).
    ///
    /// ```
    /// use sessiond::ErrorCode;
    /// use sessiond_client::VerifyError;
    ///
    /// let refused = VerifyError::Refused(ErrorCode::SessionRevoked);
    /// assert_eq!(refused.code().status(), 401);
    /// let outage = VerifyError::Unavailable(String::from("the JWKS fetch timed out"));
    /// assert_eq!(outage.code(), ErrorCode::Unavailable);
    /// assert_eq!(outage.code().status(), 503);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            VerifyError::Refused(code) => *code,
            VerifyError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

fn outage(e: &ClientError) -> VerifyError {
    VerifyError::Unavailable(e.to_string())
}

/// Settings of a [`LocalVerifier`].
///
/// ```no_run
/// # async fn run(client: sessiond_client::Client) -> Result<(), sessiond_client::VerifyError> {
/// use std::time::Duration;
/// use sessiond_client::{LocalVerifier, WhenStale};
///
/// let verifier = LocalVerifier::builder(client)
///     .stale_after(Duration::from_secs(40))
///     .when_stale(WhenStale::FailClosed)
///     .start()
///     .await?;
/// # let _ = verifier; Ok(()) }
/// ```
pub struct VerifierBuilder {
    client: Client,
    issuer: String,
    audience: String,
    stale_after: Duration,
    when_stale: WhenStale,
    refetch_interval: Duration,
    clock_skew: Duration,
    retain: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("stale_after", &self.stale_after)
            .field("when_stale", &self.when_stale)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// `iss` the tokens must carry (the server's `token_sessions.issuer`; default `sessiond`).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use sessiond_client::LocalVerifier;
    ///
    /// // The server's `[token_sessions] issuer = "https://auth.example.com"`.
    /// let builder = LocalVerifier::builder(client).issuer("https://auth.example.com");
    /// # let _ = builder; }
    /// ```
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// `aud` the tokens must carry (the server's `token_sessions.audience`; default `sessiond`).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use sessiond_client::LocalVerifier;
    ///
    /// // The server's `[token_sessions] audience = "api.example.com"`.
    /// let builder = LocalVerifier::builder(client).audience("api.example.com");
    /// # let _ = builder; }
    /// ```
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// How long the stream may be silent before [`WhenStale`] applies (default 45 s: three
    /// heartbeats of the server's default 15 s `[events] keep_alive`; keep it above that).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_client::LocalVerifier;
    ///
    /// // The server's `[events] keep_alive = "5s"`: three heartbeats.
    /// let builder = LocalVerifier::builder(client).stale_after(Duration::from_secs(15));
    /// # let _ = builder; }
    /// ```
    pub fn stale_after(mut self, bound: Duration) -> Self {
        self.stale_after = bound;
        self
    }

    /// What a stale verifier does (default [`WhenStale::Online`]).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client, strict: bool) {
    /// use sessiond_client::{LocalVerifier, WhenStale};
    ///
    /// let when = if strict { WhenStale::FailClosed } else { WhenStale::Online };
    /// let builder = LocalVerifier::builder(client).when_stale(when);
    /// # let _ = builder; }
    /// ```
    pub fn when_stale(mut self, when: WhenStale) -> Self {
        self.when_stale = when;
        self
    }

    /// The shortest time between two JWKS fetches for unknown `kid`s (default 30 s).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_client::LocalVerifier;
    ///
    /// let builder = LocalVerifier::builder(client).refetch_interval(Duration::from_secs(60));
    /// # let _ = builder; }
    /// ```
    pub fn refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// How far the server nodes' clocks may differ from the one whose heartbeat marked the
    /// start of listening (default 5 s); see the module documentation.
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_client::LocalVerifier;
    ///
    /// // Nodes whose clocks are kept within a second of each other.
    /// let builder = LocalVerifier::builder(client).clock_skew(Duration::from_secs(2));
    /// # let _ = builder; }
    /// ```
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// How long a delivered revocation is remembered (default 1 h; at least the server's
    /// access-token lifetime, after which the session's tokens have all expired).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_client::LocalVerifier;
    ///
    /// // The server's `[token_sessions] access_ttl = "2h"`: remember a little longer.
    /// let builder = LocalVerifier::builder(client).retain(Duration::from_secs(3 * 3600));
    /// # let _ = builder; }
    /// ```
    pub fn retain(mut self, retain: Duration) -> Self {
        self.retain = retain;
        self
    }

    /// The clock `exp` is compared with (default the system clock; tests give a manual one).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use std::sync::Arc;
    /// use sessiond::{ManualClock, Timestamp};
    /// use sessiond_client::LocalVerifier;
    ///
    /// let clock = ManualClock::new(Timestamp::from_unix_millis(0));
    /// let builder = LocalVerifier::builder(client).clock(Arc::new(clock));
    /// # let _ = builder; }
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Fetches the JWKS and starts listening to the deployment-wide stream on a task of the
    /// current runtime (stopped when the last clone of the verifier is dropped).
    ///
    /// ```no_run
    /// # async fn run(client: sessiond_client::Client) {
    /// use sessiond_client::LocalVerifier;
    ///
    /// let verifier = match LocalVerifier::builder(client).start().await {
    ///     Ok(verifier) => verifier,
    ///     Err(e) => {
    ///         // Without the JWKS nothing can be verified: retry later, or do not serve.
    ///         tracing::error!(error = %e, "cannot start the token verifier");
    ///         return;
    ///     }
    /// };
    /// # let _ = verifier; }
    /// ```
    ///
    /// # Errors
    /// [`VerifyError::Unavailable`] when the JWKS cannot be fetched or read.
    pub async fn start(self) -> Result<LocalVerifier, VerifyError> {
        let keys = fetch_jwks(&self.client, &self.issuer, &self.audience).await?;
        let state = Arc::new(Shared {
            issuer: self.issuer,
            audience: self.audience,
            stale_after: self.stale_after,
            when_stale: self.when_stale,
            refetch_interval: self.refetch_interval,
            clock_skew: self.clock_skew,
            retain: self.retain,
            clock: self.clock,
            client: self.client,
            state: Mutex::new(State {
                keys: Arc::new(keys),
                fetched_at: Instant::now(),
                revoked: HashMap::new(),
                heard_at: None,
                listening_since: None,
            }),
        });
        let task = tokio::spawn(listen(state.clone()));
        Ok(LocalVerifier {
            inner: Arc::new(Inner { state, task }),
        })
    }
}

/// Verifies sessiond access tokens in this process (module documentation). Cheap to clone.
///
/// ```no_run
/// # async fn run(client: sessiond_client::Client, token: &str) -> Result<(), sessiond_client::VerifyError> {
/// use sessiond_client::LocalVerifier;
///
/// let verifier = LocalVerifier::builder(client).start().await?;
/// match verifier.verify(token).await {
///     Ok(ok) => println!("{} until {}", ok.user_id, ok.expires_at),
///     Err(e) => println!("{}: answer {}", e.code(), e.code().status()),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for LocalVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalVerifier")
            .field("issuer", &self.inner.state.issuer)
            .field("stale_after", &self.inner.state.stale_after)
            .field("when_stale", &self.inner.state.when_stale)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    client: Client,
    issuer: String,
    audience: String,
    stale_after: Duration,
    when_stale: WhenStale,
    refetch_interval: Duration,
    clock_skew: Duration,
    retain: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

struct State {
    keys: Arc<TrustedIssuer>,
    fetched_at: Instant,
    /// Revoked sessions, with when the revocation arrived (for pruning after `retain`).
    revoked: HashMap<SessionId, Timestamp>,
    /// When the stream was last heard from (any event, heartbeats included), by the monotonic
    /// clock and by the injected wall clock: fresh only while both say so (the monotonic one
    /// ignores wall-clock jumps back; the wall clock keeps running through a suspend).
    heard_at: Option<(Instant, Timestamp)>,
    /// Tokens issued before this instant (plus skew) are checked online.
    listening_since: Option<Timestamp>,
}

impl LocalVerifier {
    /// A builder with the defaults (see its methods).
    ///
    /// ```
    /// # fn run(client: sessiond_client::Client) {
    /// use sessiond_client::LocalVerifier;
    ///
    /// // Tokens for this API only; every other setting at its default.
    /// let builder = LocalVerifier::builder(client).audience("api.example.com");
    /// # let _ = builder; }
    /// ```
    pub fn builder(client: Client) -> VerifierBuilder {
        VerifierBuilder {
            client,
            issuer: String::from("sessiond"),
            audience: String::from("sessiond"),
            stale_after: Duration::from_secs(45),
            when_stale: WhenStale::Online,
            refetch_interval: Duration::from_secs(30),
            clock_skew: Duration::from_secs(5),
            retain: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
        }
    }

    /// Verifies an access token (module documentation).
    ///
    /// ```
    /// use sessiond_client::LocalVerifier;
    ///
    /// // The HTTP status to answer a request with, from its `Authorization` header.
    /// async fn status(verifier: &LocalVerifier, authorization: &str) -> u16 {
    ///     let Some(token) = authorization.strip_prefix("Bearer ") else {
    ///         return 401;
    ///     };
    ///     match verifier.verify(token).await {
    ///         Ok(_) => 200,
    ///         Err(e) => e.code().status(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// [`VerifyError::Refused`] with the verdict; [`VerifyError::Unavailable`] when it could not
    /// be checked.
    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let shared = &self.inner.state;
        let now = shared.clock.now();
        let keys = shared.keys();
        let claims = match keys.verify(token, now) {
            Ok(v) => v.claims().clone(),
            Err(ForeignError::UnknownKid) => {
                // A key newer than the cached set (rotation), or a forgery: refetch, bounded.
                if !shared.refetch_due() {
                    return Err(VerifyError::Refused(ErrorCode::InvalidCredential));
                }
                shared.refetch().await?;
                match shared.keys().verify(token, now) {
                    Ok(v) => v.claims().clone(),
                    Err(e) => return Err(refusal(&e)),
                }
            }
            Err(e) => return Err(refusal(&e)),
        };
        let (session_id, user_id, expires_at, issued_at) = typed(&claims)?;
        let (fresh, listening_since, revoked) = shared.standing(&session_id);
        if revoked {
            return Err(VerifyError::Refused(ErrorCode::SessionRevoked));
        }
        let caught_up = listening_since
            .is_some_and(|since| issued_at > since.saturating_add(shared.clock_skew));
        if fresh && caught_up {
            return Ok(Verified {
                session_id,
                user_id,
                expires_at,
                via: Via::Local,
            });
        }
        if !fresh && shared.when_stale == WhenStale::FailClosed {
            return Err(VerifyError::Unavailable(String::from(
                "the revocation stream has not been heard from within stale_after",
            )));
        }
        shared.online(token).await
    }

    /// Whether the stream has been heard from within `stale_after`.
    ///
    /// ```
    /// # fn run(verifier: sessiond_client::LocalVerifier) {
    /// // A readiness probe's detail: stale means tokens go online (or fail closed).
    /// let detail = if verifier.is_fresh() { "ok" } else { "revocation stream stale" };
    /// # let _ = detail; }
    /// ```
    pub fn is_fresh(&self) -> bool {
        self.inner.state.standing_fresh()
    }
}

/// The verdict for a token that did not verify.
fn refusal(e: &ForeignError) -> VerifyError {
    match e {
        ForeignError::Jws(JwsError::Expired) => VerifyError::Refused(ErrorCode::TokenExpired),
        _ => VerifyError::Refused(ErrorCode::InvalidCredential),
    }
}

/// `sid`, `sub`, `exp`, `iat` of a verified token; a token of ours always has them.
fn typed(
    claims: &serde_json::Map<String, Value>,
) -> Result<(SessionId, UserId, Timestamp, Timestamp), VerifyError> {
    let bad = || VerifyError::Refused(ErrorCode::InvalidCredential);
    let sid = claims
        .get("sid")
        .and_then(Value::as_str)
        .and_then(|s| SessionId::parse(s).ok())
        .ok_or_else(bad)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|s| UserId::new(s).ok())
        .ok_or_else(bad)?;
    let seconds = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .map(Timestamp::from_unix_seconds)
            .ok_or_else(bad)
    };
    Ok((sid, sub, seconds("exp")?, seconds("iat")?))
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys(&self) -> Arc<TrustedIssuer> {
        self.lock().keys.clone()
    }

    fn refetch_due(&self) -> bool {
        self.lock().fetched_at.elapsed() >= self.refetch_interval
    }

    async fn refetch(&self) -> Result<(), VerifyError> {
        self.lock().fetched_at = Instant::now();
        let keys = fetch_jwks(&self.client, &self.issuer, &self.audience).await?;
        self.lock().keys = Arc::new(keys);
        Ok(())
    }

    fn fresh(&self, state: &State) -> bool {
        state.heard_at.is_some_and(|(mono, wall)| {
            mono.elapsed() <= self.stale_after
                && self.clock.now().duration_since(wall) <= self.stale_after
        })
    }

    /// (heard from recently, listening since, the session revoked).
    fn standing(&self, session: &SessionId) -> (bool, Option<Timestamp>, bool) {
        let state = self.lock();
        (
            self.fresh(&state),
            state.listening_since,
            state.revoked.contains_key(session),
        )
    }

    fn standing_fresh(&self) -> bool {
        self.fresh(&self.lock())
    }

    async fn online(&self, token: &str) -> Result<Verified, VerifyError> {
        match self
            .client
            .validate(&ValidateRequest::access_token(token))
            .await
        {
            Ok(answer) => {
                let session_id = SessionId::parse(&answer.session.id);
                let user_id = UserId::new(answer.session.user_id.as_str());
                let deadline = Timestamp::parse_rfc3339(&answer.deadline);
                match (session_id, user_id, deadline) {
                    (Ok(session_id), Ok(user_id), Ok(expires_at)) => Ok(Verified {
                        session_id,
                        user_id,
                        expires_at,
                        via: Via::Online,
                    }),
                    _ => Err(VerifyError::Unavailable(String::from(
                        "sessiond answered outside its API",
                    ))),
                }
            }
            Err(e) if e.is_outage() => Err(outage(&e)),
            Err(ClientError::Api { code, .. }) if code.status() == 401 || code.status() == 403 => {
                Err(VerifyError::Refused(code))
            }
            Err(e) => Err(outage(&e)),
        }
    }

    /// Applies one stream event; `true` when a heartbeat names a key the verifier does not
    /// hold (a rotation): the caller refetches the JWKS.
    fn hear(&self, event: Event) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        state.heard_at = Some((Instant::now(), now));
        match event {
            Event::Revoked { data, .. } | Event::Expired { data, .. } => {
                state.revoked.insert(data.session_id, now);
            }
            Event::Resync { .. } => {
                // Revocations were lost: tokens issued before now are checked online.
                state.listening_since = Some(now);
            }
            Event::Heartbeat { keys, .. } => {
                if state.listening_since.is_none() {
                    state.listening_since = Some(now);
                }
                if state.keys.keys().iter().any(|k| !listed(k.kid(), &keys)) {
                    // Keep only the keys the server still lists: a retired key verifies nothing.
                    state.keys = Arc::new(state.keys.retain_keys(|k| listed(k.kid(), &keys)));
                }
                let horizon = now.saturating_sub(self.retain);
                state.revoked.retain(|_, at| *at > horizon);
                let held = state.keys.keys();
                return keys
                    .iter()
                    .any(|kid| !held.iter().any(|k| k.kid() == Some(kid.as_str())));
            }
            _ => {}
        }
        false
    }

    /// The stream stopped or failed: revocations may be lost from here on.
    fn lost(&self) {
        self.lock().listening_since = None;
    }
}

fn listed(kid: Option<&str>, keys: &[KeyId]) -> bool {
    kid.is_some_and(|kid| keys.iter().any(|k| k.as_str() == kid))
}

/// The JWKS of the server behind `client`, as a trusted issuer of `issuer`/`audience`.
async fn fetch_jwks(
    client: &Client,
    issuer: &str,
    audience: &str,
) -> Result<TrustedIssuer, VerifyError> {
    let set = client.jwks().await.map_err(|e| outage(&e))?;
    let json = serde_json::to_string(&set)
        .map_err(|_| VerifyError::Unavailable(String::from("the JWKS did not serialize")))?;
    TrustedIssuer::from_jwks_json(issuer, audience, &json)
        .map_err(|e| VerifyError::Unavailable(format!("the JWKS was refused: {e}")))
}

/// The listening task: the deployment-wide stream, for as long as the verifier lives.
async fn listen(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    loop {
        match shared.client.deployment_events(None).await {
            Ok(stream) => {
                futures_util::pin_mut!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(event) => {
                            failures = 0;
                            // A key the server verifies with that we lack: fetch it now (the
                            // server names it, so this is not a token-driven fetch).
                            if shared.hear(event) {
                                if let Err(e) = shared.refetch().await {
                                    tracing::warn!(error = %e, "cannot fetch sessiond's JWKS after a key rotation");
                                }
                            }
                        }
                        // Reconnecting: `heard_at` ages until the stream is back; the replay (or
                        // a resync) covers the gap.
                        Err(e) if e.is_outage() => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "sessiond's event stream: an event was lost");
                            shared.lost();
                        }
                    }
                }
                shared.lost();
            }
            Err(e) => {
                shared.lost();
                tracing::warn!(error = %e, "cannot open sessiond's event stream");
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(shared.client.backoff().delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sessiond::ManualClock;
    use sessiond_api::HeartbeatData;

    const K1: &str = "sk-AAAAAAAAAAAAAAAAAAAAAA";
    const K2: &str = "sk-BAAAAAAAAAAAAAAAAAAAAA";

    /// A verifier's state holding one key `K1` (RFC 8037's example Ed25519 public key).
    fn shared() -> Shared {
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"sig","alg":"EdDSA","kid":"{K1}"}}]}}"#
        );
        let keys = TrustedIssuer::from_jwks_json("sessiond", "sessiond", &jwks).unwrap();
        assert_eq!(keys.keys().len(), 1);
        let _ = rustls::crypto::ring::default_provider().install_default();
        Shared {
            client: Client::builder("http://127.0.0.1:9").build().unwrap(),
            issuer: String::from("sessiond"),
            audience: String::from("sessiond"),
            stale_after: Duration::from_secs(45),
            when_stale: WhenStale::Online,
            refetch_interval: Duration::from_secs(30),
            clock_skew: Duration::from_secs(5),
            retain: Duration::from_secs(3600),
            clock: Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_000_000))),
            state: Mutex::new(State {
                keys: Arc::new(keys),
                fetched_at: Instant::now(),
                revoked: HashMap::new(),
                heard_at: None,
                listening_since: None,
            }),
        }
    }

    fn beat(keys: &[&str]) -> Event {
        let data = HeartbeatData {
            at: Timestamp::from_unix_millis(1_000_000),
            keys: keys.iter().map(|k| KeyId::parse(k).unwrap()).collect(),
        };
        Event::Heartbeat {
            id: String::from("1-1"),
            at: data.at,
            keys: data.keys,
        }
    }

    #[test]
    fn heartbeats_retire_keys_and_announce_new_ones() {
        let s = shared();
        assert!(!s.standing_fresh());
        assert!(!s.hear(beat(&[K1])), "nothing new");
        assert!(s.standing_fresh());
        assert!(s.lock().listening_since.is_some());
        assert!(s.hear(beat(&[K1, K2])), "a rotation: fetch the set");
        assert_eq!(s.keys().keys().len(), 1);
        // K1 retired: dropped at once, without a fetch.
        s.hear(beat(&[K2]));
        assert!(s.keys().keys().is_empty());
    }

    #[test]
    fn revocations_are_remembered_for_retain_and_lost_events_reset_catching_up() {
        let s = shared();
        s.hear(beat(&[K1]));
        let id = SessionId::parse("ses-AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        s.hear(Event::Revoked {
            id: String::from("1-2"),
            data: sessiond_api::EventData {
                session_id: id.clone(),
                reason: None,
                at: Timestamp::from_unix_millis(1_000_000),
            },
        });
        assert!(s.standing(&id).2);
        s.lost();
        assert!(s.lock().listening_since.is_none(), "older tokens go online");
        s.hear(beat(&[K1]));
        assert!(s.lock().listening_since.is_some());
        assert!(s.standing(&id).2, "a lost event forgets no revocation");
    }
}
