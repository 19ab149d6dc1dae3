//! [`SessionService`]: the one entry point for every session operation.
//!
//! It owns the policy, the key ring, the clock, the randomness, the audit trail and the metrics,
//! and reaches storage only through [`crate::store::Backend`]. Cheap to clone (an `Arc`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::audit::{AuditEvent, AuditPolicy, AuditQuery, AuditRecord, FailureLimiter};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::cookie;
use crate::error::{Binding, CredentialError, Expiry, SessionError};
use crate::events::{EventBus, InProcessBus};
use crate::id::{KeyId, SessionId, Tenant, UserId};
use crate::keys::{KeyError, KeyInfo, KeyPolicy, KeyPurpose, KeyRing, MasterKey};
use crate::metrics::Metrics;
use crate::random::{self, OsRandom, RandomSource};
use crate::secret::Secret;
use crate::session::{
    CookiePolicy, RevokeReason, Session, SessionKind, SessionPolicy, SessionRecord, SessionStatus,
};
use crate::store::{Backend, ClaimStore, Revocation, RevokeOutcome};
use crate::token::TokenPolicy;

mod api_keys;
mod claims;
mod events;
mod rotation;
mod tokens;
mod watch;

pub use api_keys::{ApiKeyInfo, API_KEY_PREFIX};
pub use claims::{ClaimedToken, MAX_CLAIM_ID_BYTES};
pub use tokens::{TokenPair, TokenSession};
pub use watch::{DeadlineKind, EndReason, ExtraDeadline, Watch};

/// Claim names the application may not set: they are the token's own.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "gen", "tenant", "typ", "kid", "cnf",
];
/// The largest serialized custom-claims object accepted (bytes).
pub const MAX_CLAIMS_BYTES: usize = 4096;
const MAX_IP_BYTES: usize = 64;
const MAX_USER_AGENT_BYTES: usize = 1024;

/// Every policy of the service; `Default` is docs/DESIGN.md §10.3's defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Cookie-session lifetimes.
    pub cookie: CookiePolicy,
    /// Token-session lifetimes, issuer and audiences.
    pub tokens: TokenPolicy,
    /// Limits and bindings.
    pub sessions: SessionPolicy,
    /// Key retention and caching.
    pub keys: KeyPolicy,
    /// Audit of validation failures.
    pub audit: AuditPolicy,
    /// Rows deleted per garbage-collection batch (default 500).
    pub gc_batch: u32,
    /// How long an API key authentication is cached in process (default 5 s): the bound on how
    /// long a key revoked on another node keeps working here.
    pub api_key_cache_ttl: Duration,
    /// The longest a [`SessionService::watch`] sleeps between two readings of the clock
    /// (default 1 s): the bound on how far a wall-clock jump can extend or cut short a watched
    /// connection. Values below 10 ms are raised to 10 ms.
    pub watch_recheck: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            cookie: CookiePolicy::default(),
            tokens: TokenPolicy::default(),
            sessions: SessionPolicy::default(),
            keys: KeyPolicy::default(),
            audit: AuditPolicy::default(),
            gc_batch: 500,
            api_key_cache_ttl: Duration::from_secs(5),
            watch_recheck: Duration::from_secs(1),
        }
    }
}

/// What the application knows about a new session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewSession {
    /// Whose session.
    pub user_id: UserId,
    /// The tenant (default `default`).
    pub tenant: Tenant,
    /// The client IP, recorded for binding and audit.
    pub ip: Option<String>,
    /// The client User-Agent, recorded for binding.
    pub user_agent: Option<String>,
    /// Custom claims (copied into access tokens; may not use reserved names).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl NewSession {
    /// A session for `user_id` in the default tenant.
    pub fn new(user_id: UserId) -> Self {
        NewSession {
            user_id,
            tenant: Tenant::default(),
            ip: None,
            user_agent: None,
            claims: serde_json::Map::new(),
        }
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: Tenant) -> Self {
        self.tenant = tenant;
        self
    }

    /// Records the client IP.
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// Records the client User-Agent.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Sets the custom claims.
    pub fn claims(mut self, claims: serde_json::Map<String, serde_json::Value>) -> Self {
        self.claims = claims;
        self
    }
}

/// A new cookie session and the two secrets the browser receives. The service keeps only
/// hashes; these values cannot be recovered later.
#[derive(Debug)]
#[non_exhaustive]
pub struct CookieSession {
    /// The session row (public part).
    pub session: Session,
    /// The v1 cookie value.
    pub cookie: Secret<String>,
    /// The CSRF token plaintext (for the JS-readable cookie).
    pub csrf_token: Secret<String>,
}

/// Facts about the request a credential arrived with. Build it with `Default` and the setters,
/// or as a literal.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// The client IP (checked when IP binding is on).
    pub ip: Option<&'a str>,
    /// The client User-Agent (checked when User-Agent binding is on).
    pub user_agent: Option<&'a str>,
    /// The CSRF token from the request header; checked whenever present.
    pub csrf_token: Option<&'a str>,
    /// Fail with `csrf_missing` when no CSRF token came (state-changing requests).
    pub require_csrf: bool,
}

impl<'a> RequestContext<'a> {
    /// Sets the client IP.
    pub fn ip(mut self, ip: &'a str) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the client User-Agent.
    pub fn user_agent(mut self, ua: &'a str) -> Self {
        self.user_agent = Some(ua);
        self
    }

    /// Supplies a CSRF token and requires it to match.
    pub fn csrf(mut self, token: &'a str) -> Self {
        self.csrf_token = Some(token);
        self.require_csrf = true;
        self
    }

    /// Requires a CSRF token (fails with `csrf_missing` without one).
    pub fn require_csrf(mut self) -> Self {
        self.require_csrf = true;
        self
    }
}

/// The credential a validation accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A session cookie signed by this key.
    Cookie {
        /// The signing key.
        key_id: KeyId,
    },
    /// An access token.
    AccessToken {
        /// The signing key.
        key_id: KeyId,
        /// The token's `exp`.
        expires_at: Timestamp,
    },
}

/// A successful validation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Validated {
    /// The session, with its activity window as of this validation.
    pub session: Session,
    /// The earliest of every expiry that bounds this credential: a connection authenticated by
    /// it must re-validate or close at this instant.
    pub deadline: Timestamp,
    /// What was presented.
    pub credential: Credential,
}

/// What a garbage-collection run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Retired keys past retention deleted.
    pub keys: u64,
    /// Expired one-time claims deleted.
    pub claims: u64,
}

struct Inner {
    backend: Arc<dyn Backend>,
    claims: Arc<dyn ClaimStore>,
    api_key_cache: std::sync::Mutex<std::collections::HashMap<[u8; 32], api_keys::CachedKey>>,
    issuers: std::sync::RwLock<
        std::collections::HashMap<String, Arc<crate::jose::foreign::TrustedIssuer>>,
    >,
    keys: KeyRing,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: ServiceConfig,
    limiter: FailureLimiter,
    metrics: Metrics,
    events: Arc<dyn EventBus>,
}

/// The session engine. See the crate docs for a tour.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl fmt::Debug for SessionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("backend", &self.inner.backend)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`SessionService`].
#[derive(Debug)]
pub struct ServiceBuilder {
    backend: Arc<dyn Backend>,
    claims: Option<Arc<dyn ClaimStore>>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    config: ServiceConfig,
    events: Option<Arc<dyn EventBus>>,
}

impl ServiceBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `rng` instead of the operating system's CSPRNG.
    pub fn random(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = rng;
        self
    }

    /// Keeps one-time claims in `claims` (e.g. Redis) instead of the main backend.
    pub fn claim_store(mut self, claims: Arc<dyn ClaimStore>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Sets every policy.
    pub fn config(mut self, config: ServiceConfig) -> Self {
        self.config = config;
        self
    }

    /// Publishes lifecycle events on `bus` (e.g. a cross-node bus) instead of a fresh
    /// [`InProcessBus`].
    pub fn event_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.events = Some(bus);
        self
    }

    /// Builds the service and ensures an active key per purpose.
    ///
    /// # Errors
    /// [`KeyError::Bootstrap`] when a key cannot be ensured; do not serve then.
    pub async fn start(self) -> Result<SessionService, KeyError> {
        let key_store: Arc<dyn crate::store::KeyStore> = self.backend.clone();
        let keys = KeyRing::new(
            key_store,
            self.master,
            self.clock.clone(),
            self.rng.clone(),
            self.config.keys.clone(),
        );
        keys.ensure_active().await?;
        Ok(SessionService {
            inner: Arc::new(Inner {
                claims: match self.claims {
                    Some(c) => c,
                    None => self.backend.clone(),
                },
                backend: self.backend,
                issuers: std::sync::RwLock::new(std::collections::HashMap::new()),
                api_key_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
                keys,
                clock: self.clock,
                rng: self.rng,
                limiter: FailureLimiter::new(self.config.audit.clone()),
                config: self.config,
                metrics: Metrics::default(),
                events: self
                    .events
                    .unwrap_or_else(|| Arc::new(InProcessBus::default())),
            }),
        })
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn check_len(value: Option<&str>, max: usize, what: &'static str) -> Result<(), SessionError> {
    match value {
        Some(v) if v.len() > max || v.chars().any(char::is_control) => {
            Err(SessionError::InvalidInput(what))
        }
        _ => Ok(()),
    }
}

/// The session-creation rules for the client facts a request carries: an `ip` of at most 64
/// bytes and a `user_agent` of at most 1024, neither with control characters.
fn check_client(ip: Option<&str>, user_agent: Option<&str>) -> Result<(), SessionError> {
    check_len(ip, MAX_IP_BYTES, "ip is too long or has control characters")?;
    check_len(
        user_agent,
        MAX_USER_AGENT_BYTES,
        "user_agent is too long or has control characters",
    )
}

/// [`check_client`] on a request's context.
pub(crate) fn check_context(ctx: &RequestContext<'_>) -> Result<(), SessionError> {
    check_client(ctx.ip, ctx.user_agent)
}

impl SessionService {
    /// Starts assembling a service over `backend`, sealing keys with `master`.
    pub fn builder(backend: Arc<dyn Backend>, master: MasterKey) -> ServiceBuilder {
        ServiceBuilder {
            backend,
            claims: None,
            master,
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRandom),
            config: ServiceConfig::default(),
            events: None,
        }
    }

    /// The policies in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The current time by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Creates a cookie session: the row, the signed cookie value and a CSRF token.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for oversize or reserved input, [`SessionError::Keys`]
    /// without an active cookie key, [`SessionError::Store`] on storage failure (nothing is
    /// created then).
    pub async fn create_cookie_session(
        &self,
        new: NewSession,
    ) -> Result<CookieSession, SessionError> {
        let key = self
            .inner
            .keys
            .active(KeyPurpose::Cookie)
            .await
            .map_err(SessionError::Keys)?;
        let policy = &self.inner.config.cookie;
        let csrf = self.new_token_secret();
        let csrf_hash = sha256(csrf.expose().as_bytes());
        let session = self.new_session_row(
            new,
            SessionKind::Cookie,
            policy.idle_ttl,
            policy.absolute_ttl,
        )?;
        let record = SessionRecord::new(session, key.id().clone(), Some(csrf_hash), None);
        let value = cookie::encode(&record.session.id, &key)
            // Only fails for a key without HMAC material, which the cookie purpose never has.
            .map_err(|_| SessionError::Keys(KeyError::Malformed))?;
        self.insert(&record).await?;
        Ok(CookieSession {
            session: record.session,
            cookie: value,
            csrf_token: csrf,
        })
    }

    /// Validates a session cookie value: format, MAC (constant time) under a usable cookie key,
    /// then the row: exists, not revoked, idle and absolute windows, bindings, CSRF. A success
    /// slides the idle window, writing at most once per touch interval.
    ///
    /// # Errors
    /// The [`SessionError`] for the first check that failed; each failure is counted and
    /// (rate-bounded) audited. Storage failures are [`SessionError::Store`], never a verdict.
    pub async fn validate_cookie(
        &self,
        value: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, SessionError> {
        let mut known: Option<Session> = None;
        let result = self.validate_cookie_inner(value, ctx, &mut known).await;
        if let Err(e) = &result {
            self.record_failure(e, known.as_ref(), ctx.ip).await;
        }
        result
    }

    async fn validate_cookie_inner(
        &self,
        value: &str,
        ctx: &RequestContext<'_>,
        known: &mut Option<Session>,
    ) -> Result<Validated, SessionError> {
        let invalid = |e: CredentialError| SessionError::InvalidCredential(e);
        let parsed = cookie::parse(value).map_err(|e| invalid(e.into()))?;
        let key = self
            .inner
            .keys
            .verifier(parsed.key_id(), KeyPurpose::Cookie)
            .await?
            .map_err(|refusal| invalid(CredentialError::Key(refusal)))?;
        parsed.verify(&key).map_err(|e| invalid(e.into()))?;

        let record = self
            .inner
            .backend
            .session(parsed.session_id())
            .await?
            .ok_or(SessionError::NotFound)?;
        *known = Some(record.session.clone());
        if record.key_id != *parsed.key_id() {
            return Err(invalid(CredentialError::KeyMismatch));
        }
        if record.session.kind != SessionKind::Cookie {
            return Err(invalid(CredentialError::WrongKind));
        }
        let now = self.inner.clock.now();
        self.check_status(&record.session, now)?;
        self.check_binding(&record.session, ctx)?;
        check_csrf(record.csrf_hash.as_ref(), ctx)?;
        let session = self.touch(record.session, now).await;
        let deadline = session.deadline();
        Ok(Validated {
            session,
            deadline,
            credential: Credential::Cookie {
                key_id: parsed.key_id().clone(),
            },
        })
    }

    fn check_status(&self, session: &Session, now: Timestamp) -> Result<(), SessionError> {
        match session.status(now) {
            SessionStatus::Active => Ok(()),
            SessionStatus::Revoked => Err(SessionError::Revoked),
            SessionStatus::AbsoluteExpired => Err(SessionError::Expired(Expiry::Absolute)),
            SessionStatus::IdleExpired => Err(SessionError::Expired(Expiry::Idle)),
        }
    }

    fn check_binding(
        &self,
        session: &Session,
        ctx: &RequestContext<'_>,
    ) -> Result<(), SessionError> {
        let policy = &self.inner.config.sessions;
        // A recorded value must match (IPs as addresses); a request that omits it fails closed.
        if policy.bind_ip {
            if let Some(recorded) = &session.ip {
                if !same_ip(recorded, ctx.ip) {
                    return Err(SessionError::BindingMismatch(Binding::Ip));
                }
            }
        }
        if policy.bind_user_agent {
            if let Some(recorded) = &session.user_agent {
                if ctx.user_agent != Some(recorded.as_str()) {
                    return Err(SessionError::BindingMismatch(Binding::UserAgent));
                }
            }
        }
        Ok(())
    }

    /// Slides the idle window if the last recorded activity is at least one touch interval old.
    /// A failed write is logged and does not fail the validation: the credential was checked
    /// against a row that was read successfully; only the bookkeeping is late.
    async fn touch(&self, mut session: Session, now: Timestamp) -> Session {
        let interval = self.inner.config.cookie.touch_interval;
        if now < session.last_seen_at.saturating_add(interval) {
            return session;
        }
        let idle = now.saturating_add(self.inner.config.cookie.idle_ttl);
        let stale_at = now.saturating_sub(interval);
        match self
            .inner
            .backend
            .touch_session(&session.id, now, idle, stale_at)
            .await
        {
            Ok(_) => {
                session.last_seen_at = now;
                session.idle_expires_at = idle;
            }
            Err(e) => {
                tracing::warn!(session_id = %session.id, error = %e, "could not record session activity");
            }
        }
        session
    }

    async fn record_failure(&self, e: &SessionError, session: Option<&Session>, ip: Option<&str>) {
        if !e.is_credential_failure() {
            tracing::warn!(code = e.code().as_str(), error = %e, "validation could not be decided");
            return;
        }
        let reason = e.reason();
        self.inner.metrics.validation_failure(reason);
        tracing::debug!(
            reason,
            session_id = session.map(|s| s.id.as_str()),
            "validation failed"
        );
        let now = self.inner.clock.now();
        if !self.inner.limiter.admit(reason, now) {
            self.inner.metrics.audit_suppressed();
            return;
        }
        let mut record = AuditRecord::new(now, AuditEvent::ValidationFailed, reason).ip(ip);
        if let Some(s) = session {
            record = record.about(s);
        }
        self.audit(record).await;
    }

    /// Checks a CSRF token against a session without validating a credential (for callers that
    /// validated the cookie separately).
    ///
    /// # Errors
    /// [`SessionError::CsrfMissing`], [`SessionError::CsrfMismatch`], or the session's status.
    pub async fn check_csrf(
        &self,
        id: &SessionId,
        token: Option<&str>,
    ) -> Result<(), SessionError> {
        let record = self
            .inner
            .backend
            .session(id)
            .await?
            .ok_or(SessionError::NotFound)?;
        self.check_status(&record.session, self.inner.clock.now())?;
        let ctx = RequestContext {
            csrf_token: token,
            require_csrf: true,
            ..RequestContext::default()
        };
        let result = check_csrf(record.csrf_hash.as_ref(), &ctx);
        if let Err(e) = &result {
            self.record_failure(e, Some(&record.session), None).await;
        }
        result
    }

    /// Issues a new CSRF token for an active session; the old one stops matching at once.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::Revoked`], [`SessionError::Expired`], or
    /// [`SessionError::Store`].
    pub async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, SessionError> {
        let token = self.new_token_secret();
        let hash = sha256(token.expose().as_bytes());
        let now = self.inner.clock.now();
        let Some(owner) = self.inner.backend.set_csrf_hash(id, &hash, now).await? else {
            let record = self
                .inner
                .backend
                .session(id)
                .await?
                .ok_or(SessionError::NotFound)?;
            self.check_status(&record.session, now)?;
            // Active by status yet not updated: it became inactive between the two reads.
            return Err(SessionError::Revoked);
        };
        self.audit(AuditRecord::new(now, AuditEvent::CsrfRotated, "rotated").owner(&owner))
            .await;
        Ok(token)
    }

    /// Revokes one session. Idempotent: revoking a revoked session changes nothing.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke(
        &self,
        id: &SessionId,
        reason: &RevokeReason,
    ) -> Result<RevokeOutcome, SessionError> {
        let now = self.inner.clock.now();
        // One round trip: the revoking statement returns whose session it was.
        let revocation = self.inner.backend.revoke_session(id, now, reason).await?;
        if let Revocation::Revoked(owner) = &revocation {
            self.inner.metrics.sessions_revoked(1);
            self.audit(
                AuditRecord::new(now, AuditEvent::SessionRevoked, reason.as_str()).owner(owner),
            )
            .await;
            self.publish_revoked(std::slice::from_ref(owner), reason, now)
                .await;
        }
        Ok(revocation.outcome())
    }

    /// Revokes every active session of `user` (in `tenant`, or all tenants), except `except`
    /// ("log out other devices"). Returns the revoked ids.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke_user(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        except: Option<&SessionId>,
        reason: &RevokeReason,
    ) -> Result<Vec<SessionId>, SessionError> {
        let now = self.inner.clock.now();
        let revoked = self
            .inner
            .backend
            .revoke_user_sessions(user, tenant, except, now, reason)
            .await?;
        self.inner.metrics.sessions_revoked(revoked.len() as u64);
        for owner in &revoked {
            self.audit(
                AuditRecord::new(now, AuditEvent::SessionRevoked, reason.as_str()).owner(owner),
            )
            .await;
        }
        self.publish_revoked(&revoked, reason, now).await;
        Ok(revoked.into_iter().map(|owner| owner.id).collect())
    }

    /// The active sessions of `user`, oldest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<Session>, SessionError> {
        Ok(self
            .inner
            .backend
            .user_sessions(user, tenant, self.inner.clock.now())
            .await?)
    }

    /// A session by id, revoked and expired ones included.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn session(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(self.inner.backend.session(id).await?.map(|r| r.session))
    }

    /// Rotates the key of `purpose` and audits it.
    ///
    /// # Errors
    /// [`SessionError::Keys`].
    pub async fn rotate_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, SessionError> {
        let info = self
            .inner
            .keys
            .rotate(purpose)
            .await
            .map_err(SessionError::Keys)?;
        let record =
            AuditRecord::new(self.now(), AuditEvent::KeyRotated, purpose.as_str()).key(&info.id);
        self.audit(record).await;
        Ok(info)
    }

    /// Deletes expired sessions and retired keys past retention, in batches of
    /// [`ServiceConfig::gc_batch`], yielding between batches so validations are never stalled.
    ///
    /// # Errors
    /// [`SessionError::Store`]; what was deleted before the failure stays deleted.
    pub async fn gc(&self) -> Result<GcReport, SessionError> {
        let batch = self.inner.config.gc_batch.max(1);
        let now = self.inner.clock.now();
        let mut report = GcReport::default();
        loop {
            let n = self
                .inner
                .backend
                .delete_expired_sessions(now, batch)
                .await?;
            report.sessions += n;
            tokio::task::yield_now().await;
            if n < u64::from(batch) {
                break;
            }
        }
        loop {
            let n = self.inner.backend.delete_expired_keys(now, batch).await?;
            report.keys += n;
            tokio::task::yield_now().await;
            if n < u64::from(batch) {
                break;
            }
        }
        loop {
            let n = self.inner.claims.delete_expired_claims(now, batch).await?;
            report.claims += n;
            tokio::task::yield_now().await;
            if n < u64::from(batch) {
                break;
            }
        }
        if report != GcReport::default() {
            tracing::info!(
                sessions = report.sessions,
                keys = report.keys,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Audit records matching `query`, newest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn audit_records(
        &self,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, SessionError> {
        Ok(self.inner.backend.audit_records(query).await?)
    }

    // ---- shared by every session kind ----

    pub(crate) fn new_token_secret(&self) -> Secret<String> {
        let bytes: [u8; 32] = random::bytes(self.inner.rng.as_ref());
        Secret::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub(crate) fn new_session_row(
        &self,
        new: NewSession,
        kind: SessionKind,
        idle_ttl: Duration,
        absolute_ttl: Duration,
    ) -> Result<Session, SessionError> {
        check_client(new.ip.as_deref(), new.user_agent.as_deref())?;
        if new
            .claims
            .keys()
            .any(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(SessionError::InvalidInput(
                "claims may not use a reserved claim name",
            ));
        }
        let claims_len = serde_json::to_vec(&new.claims)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if claims_len > MAX_CLAIMS_BYTES {
            return Err(SessionError::InvalidInput("claims exceed 4096 bytes"));
        }
        let now = self.inner.clock.now();
        let absolute = now.saturating_add(absolute_ttl);
        Ok(Session {
            id: SessionId::generate(self.inner.rng.as_ref()),
            user_id: new.user_id,
            tenant: new.tenant,
            kind,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.saturating_add(idle_ttl).min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoke_reason: None,
            ip: new.ip,
            user_agent: new.user_agent,
            claims: new.claims,
        })
    }

    pub(crate) async fn insert(&self, record: &SessionRecord) -> Result<(), SessionError> {
        let max = match self.inner.config.sessions.max_per_user {
            0 => None,
            n => Some(n),
        };
        let now = record.session.created_at;
        let evicted = self.inner.backend.create_session(record, max, now).await?;
        self.inner.metrics.session_created();
        let created = AuditRecord::new(
            now,
            AuditEvent::SessionCreated,
            record.session.kind.as_str(),
        )
        .about(&record.session)
        .key(&record.key_id)
        .ip(record.session.ip.as_deref());
        self.audit(created).await;
        self.inner.metrics.sessions_revoked(evicted.len() as u64);
        let reason = RevokeReason::evicted();
        for owner in &evicted {
            self.audit(
                AuditRecord::new(now, AuditEvent::SessionRevoked, reason.as_str()).owner(owner),
            )
            .await;
        }
        self.publish_revoked(&evicted, &reason, now).await;
        Ok(())
    }

    /// Writes an audit record. A failed write is logged and counted, never surfaced: the
    /// lifecycle change it describes has already happened and must not be reported as failed.
    pub(crate) async fn audit(&self, record: AuditRecord) {
        if let Err(e) = self.inner.backend.append_audit(&record).await {
            self.inner.metrics.audit_write_error();
            tracing::error!(event = record.event.as_str(), reason = %record.reason, error = %e, "audit write failed");
        }
    }
}

/// Double-submit CSRF check: SHA-256 of the presented token against the row's hash, compared
/// in constant time. An empty header counts as missing.
fn check_csrf(stored: Option<&[u8; 32]>, ctx: &RequestContext<'_>) -> Result<(), SessionError> {
    match ctx.csrf_token.filter(|t| !t.is_empty()) {
        None if ctx.require_csrf => Err(SessionError::CsrfMissing),
        None => Ok(()),
        Some(token) => {
            let presented = sha256(token.as_bytes());
            match stored {
                Some(stored) if bool::from(presented.ct_eq(stored)) => Ok(()),
                _ => Err(SessionError::CsrfMismatch),
            }
        }
    }
}

/// Whether the IP seen on a request is the recorded one. Two addresses compare as addresses
/// (`2001:DB8::1` is `2001:db8::1`, `::ffff:192.0.2.1` is `192.0.2.1`); anything that does not
/// parse as an address must match exactly. A request without an IP never matches.
fn same_ip(recorded: &str, seen: Option<&str>) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    match (
        recorded.parse::<std::net::IpAddr>(),
        seen.parse::<std::net::IpAddr>(),
    ) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => recorded == seen,
    }
}

#[cfg(test)]
mod tests {
    use super::same_ip;

    #[test]
    fn ip_binding_compares_addresses_not_spellings() {
        let cases: [(&str, Option<&str>, bool); 9] = [
            ("192.0.2.1", Some("192.0.2.1"), true),
            ("192.0.2.1", Some("192.0.2.2"), false),
            ("192.0.2.1", None, false),
            ("2001:DB8::1", Some("2001:db8:0:0:0:0:0:1"), true),
            ("::ffff:192.0.2.1", Some("192.0.2.1"), true),
            ("192.0.2.1", Some("::ffff:192.0.2.1"), true),
            ("192.0.2.1", Some("192.0.2.1 "), false),
            ("not-an-ip", Some("not-an-ip"), true),
            ("not-an-ip", Some("192.0.2.1"), false),
        ];
        for (recorded, seen, want) in cases {
            assert_eq!(same_ip(recorded, seen), want, "{recorded:?} vs {seen:?}");
        }
    }
}
