//! sessiond: the session and credential lifecycle, as a library.
//!
//! Your application proves who someone is; sessiond issues the credential, checks it on every
//! request, expires it honestly, and revokes it.
//!
//! # Layout
//! - [`clock`]: injected time ([`Clock`], [`ManualClock`]) and the one expiry boundary
//!   [`clock::is_expired`].
//! - [`random`]: injected randomness; every id and secret comes from a [`RandomSource`].
//! - [`secret`]: [`Secret`], a wrapper that redacts itself in `Debug`/`Display`.
//! - [`id`]: [`SessionId`], [`KeyId`], [`UserId`], [`Tenant`], parsed once at the edge.
//! - [`keys`]: signing keys per purpose, sealed at rest under the [`MasterKey`], cached in the
//!   [`KeyRing`].
//! - [`cookie`]: the v1 session-cookie wire format (encode, parse, constant-time verify).
//! - [`login_code`]: the login code of the browser login handoff (MAC'd, self-contained, PKCE).
//! - [`jose`]: compact JWS parsing and header policy, signatures over our keys, the JWKS we
//!   publish, and [`jose::foreign`] for trusted foreign issuers' tokens.
//! - [`session`]: the session row, its [`SessionStatus`] and policies.
//! - [`token`]: our access (`at+jwt`) and refresh (`refresh+jwt`) JWTs over the key ring.
//! - [`service`]: [`SessionService`], the entry point: create, validate, CSRF, refresh, revoke,
//!   list, one-time claims, API keys, GC, and [`SessionService::watch`] for live enforcement.
//! - [`events`]: [`SessionEvent`]s (revoked, refreshed) and the [`EventBus`] that carries them
//!   to watchers ([`InProcessBus`] by default; `events::redis` or `events::postgres` across nodes).
//! - [`cert`]: a certificate's (or chain's) earliest `notAfter`, the mTLS deadline.
//! - [`audit`] and [`metrics`]: the audit trail and counters; [`cache`]: the bounded
//!   in-process caches (the verified-token cache) and their limits.
//! - [`store`]: the storage traits and backends: [`store::sqlite`] (the embedded default),
//!   `store::postgres` (several nodes, feature `postgres`) and `store::redis` (one-time claims,
//!   feature `redis`); the two SQL backends share one row layer and one trait implementation
//!   and differ in SQL text.
//! - [`error`]: [`SessionError`] with its wire codes.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
//! use sessiond::{MasterKey, NewSession, RequestContext, SessionService, UserId};
//!
//! let store = SqliteStore::open("sqlite://./sessiond.db", SqliteOptions::default()).await?;
//! let master = MasterKey::from_base64(&std::env::var("SESSIOND_MASTER_KEY")?)?;
//! let service = SessionService::builder(Arc::new(store), master).start().await?;
//!
//! let created = service.create_cookie_session(NewSession::new(UserId::new("alice")?)).await?;
//! let ok = service
//!     .validate_cookie(created.cookie.expose(), &RequestContext::default())
//!     .await?;
//! assert_eq!(ok.session.user_id.as_str(), "alice");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod cache;
pub mod cert;
pub mod clock;
pub mod cookie;
pub mod error;
pub mod events;
pub mod id;
pub mod jose;
pub mod keys;
pub mod login_code;
pub mod metrics;
pub mod random;
pub mod secret;
pub mod service;
pub mod session;
pub mod store;
pub mod token;

#[cfg(test)]
mod leak_tests;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ErrorCode, SessionError};
pub use events::{EventBus, EventKind, InProcessBus, SessionEvent};
pub use id::{ApiKeyId, KeyId, SessionId, Tenant, UserId};
pub use keys::{KeyPurpose, KeyRing, MasterKey};
pub use random::{OsRandom, RandomSource, SeededRandom};
pub use secret::Secret;
pub use service::{
    ClaimedToken, CookieSession, Credential, GcReport, LoginCode, NewSession, RequestContext,
    ServiceConfig, SessionService, TokenPair, TokenSession, Validated,
};
pub use service::{DeadlineKind, EndReason, ExtraDeadline, Watch};
pub use session::{RevokeReason, Session, SessionKind, SessionStatus};
pub use store::RevokeOutcome;
