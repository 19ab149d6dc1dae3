//! [`SessionService`]: the one entry point for every session operation.
//!
//! It owns the policy, the key ring, the clock, the randomness, the audit trail and the metrics,
//! and reaches storage only through [`crate::store::Backend`]. Cheap to clone (an `Arc`).
//!
//! The operations live in modules by concern: [`cookies`] (cookie sessions and CSRF),
//! `tokens` (token pairs and refresh, with the rules of [`rotation`]), `lifecycle` (creation,
//! revocation, reads, key rotation, GC), `claims`, `handoff` (the browser login handoff),
//! `watch`; `checks` holds the
//! checks they share and `effects` the one place where their effects become metrics, audit
//! records and events.

use std::fmt;
use std::sync::Arc;

use crate::audit::FailureLimiter;
use crate::cache::{BoundedCache, CacheStats};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::events::{EventBus, InProcessBus};
use crate::keys::{KeyError, KeyRing, MasterKey};
use crate::metrics::Metrics;
use crate::random::{OsRandom, RandomSource};
use crate::store::{Backend, ClaimStore};

mod checks;
mod claims;
mod cookies;
mod effects;
mod events;
mod handoff;
mod lifecycle;
mod rotation;
mod tokens;
mod types;
mod watch;

pub use claims::{ClaimedToken, MAX_CLAIM_ID_BYTES};
pub use handoff::LoginCode;
pub use tokens::{TokenPair, TokenSession};
pub use types::{
    CookieSession, Credential, GcReport, NewSession, RequestContext, ServiceConfig, Validated,
    MAX_CLAIMS_BYTES, MAX_IP_BYTES, MAX_USER_AGENT_BYTES, RESERVED_CLAIMS,
};
pub use watch::{DeadlineKind, EndReason, ExtraDeadline, Watch};

struct Inner {
    backend: Arc<dyn Backend>,
    claims: Arc<dyn ClaimStore>,
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
    /// Access tokens verified before, by SHA-256 of the whole token (docs/DESIGN.md §15.1).
    verified: BoundedCache<Arc<crate::token::VerifiedToken>>,
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

    /// Builds the service and ensures an active key per purpose. The key policy's
    /// `access_token_lifetime` is set from the token policy (`access_ttl + leeway`), so a
    /// retired access key verifies exactly as long as tokens it signed can (docs/DESIGN.md §4.2).
    ///
    /// # Errors
    /// [`KeyError::Bootstrap`] when a key cannot be ensured; do not serve then.
    pub async fn start(mut self) -> Result<SessionService, KeyError> {
        self.config.keys.access_token_lifetime = self
            .config
            .tokens
            .access_ttl
            .saturating_add(self.config.tokens.leeway);
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
                keys,
                clock: self.clock,
                rng: self.rng,
                limiter: FailureLimiter::new(self.config.audit.clone()),
                verified: BoundedCache::new(self.config.verified_tokens),
                config: self.config,
                metrics: Metrics::default(),
                events: self
                    .events
                    .unwrap_or_else(|| Arc::new(InProcessBus::default())),
            }),
        })
    }
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

    /// The in-process caches' counters and sizes, by cache name: `verified_tokens`, then the
    /// store's own (`session_rows` on SQLite).
    pub fn cache_stats(&self) -> Vec<(&'static str, CacheStats)> {
        let mut stats = vec![("verified_tokens", self.inner.verified.stats())];
        stats.extend(self.inner.backend.cache_stats());
        stats
    }

    /// The current time by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
}
