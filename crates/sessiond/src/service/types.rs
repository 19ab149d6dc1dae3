//! The service's plain types: its configuration, what the application supplies, what a
//! validation returns.

use std::time::Duration;

use crate::audit::AuditPolicy;
use crate::cache::CacheLimits;
use crate::clock::Timestamp;
use crate::id::{KeyId, Tenant, UserId};
use crate::keys::KeyPolicy;
use crate::secret::Secret;
use crate::session::{CookiePolicy, Session, SessionPolicy};
use crate::token::TokenPolicy;

/// Claim names the application may not set: they are the token's own.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "gen", "tenant", "typ", "kid", "cnf",
];
/// The largest serialized custom-claims object accepted (bytes).
pub const MAX_CLAIMS_BYTES: usize = 4096;
/// The longest client IP a request may record or present (bytes, no control characters).
pub const MAX_IP_BYTES: usize = 64;
/// The longest client User-Agent a request may record or present (bytes, no control characters).
pub const MAX_USER_AGENT_BYTES: usize = 1024;

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
    /// The longest a [`SessionService::watch`] sleeps between two readings of the clock
    /// (default 1 s): the bound on how far a wall-clock jump can extend or cut short a watched
    /// connection. Values below 10 ms are raised to 10 ms.
    pub watch_recheck: Duration,
    /// How long a login code of the browser handoff may be exchanged (default 30 s; see
    /// [`SessionService::create_login_code`]).
    ///
    /// [`SessionService::create_login_code`]: super::SessionService::create_login_code
    pub login_code_ttl: Duration,
    /// The verified-token cache (default 65,536 entries, 16 MiB; [`CacheLimits::off`] turns it
    /// off): access tokens whose signature and claims were verified, keyed by a hash of the
    /// whole token, so a token seen again skips the signature check. Every hit still checks
    /// the key's status and the token's time, and the session row as ever (docs/DESIGN.md
    /// §15.1).
    pub verified_tokens: CacheLimits,
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
            watch_recheck: Duration::from_secs(1),
            login_code_ttl: Duration::from_secs(30),
            verified_tokens: CacheLimits::new(65_536, 16 << 20),
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

impl CookieSession {
    /// A created cookie session as another process reported it (a remote sessiond server's
    /// answer).
    pub fn new(session: Session, cookie: Secret<String>, csrf_token: Secret<String>) -> Self {
        CookieSession {
            session,
            cookie,
            csrf_token,
        }
    }
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

impl Validated {
    /// A validation as another process reported it (a remote sessiond server's answer, turned
    /// back into the library's type by a client).
    pub fn new(session: Session, deadline: Timestamp, credential: Credential) -> Self {
        Validated {
            session,
            deadline,
            credential,
        }
    }
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
