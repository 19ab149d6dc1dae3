//! Storage traits and their backends.
//!
//! The domain talks to storage only through these traits; each backend implements all of them
//! and passes the same conformance suite (`tests/integration/conformance.rs`). Every method that
//! changes state is a single atomic step in the backend (a conditional `UPDATE`, an
//! insert-if-absent, or one transaction), never a read followed by a write, so concurrent
//! callers on any number of nodes see exactly-once outcomes.

#[cfg(feature = "postgres")]
mod pg_lease;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod row_cache;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_batch;
#[cfg(feature = "sqlite")]
mod sqlite_read;

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;

use crate::audit::{AuditQuery, AuditRecord};
use crate::clock::Timestamp;
use crate::id::{ApiKeyId, KeyId, SessionId, Tenant, UserId};
use crate::keys::{Fingerprint, KeyPurpose, KeyRecord};
use crate::session::{RefreshStep, RevokeReason, Session, SessionRecord};

/// A boxed backend error, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A storage failure. The server maps every variant to 503 `unavailable`: a credential that
/// could not be checked is never accepted and never reported as invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or timed out (connection refused, pool exhausted).
    #[error("storage backend is unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend answered with an error.
    #[error("storage backend failed")]
    Backend(#[source] BoxError),
    /// A stored row could not be read back into a domain value.
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// Which field or row.
        what: &'static str,
    },
}

/// What a revoke found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeOutcome {
    /// This call revoked the session.
    Revoked,
    /// The session was already revoked; nothing changed.
    AlreadyRevoked,
    /// No such session.
    NotFound,
}

/// Whose a session is: what a lifecycle change needs to report it (event, audit), returned by
/// the statement that made the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant: Tenant,
}

/// What a revoke did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// This call revoked the session, whose owner the revoking statement returned.
    Revoked(SessionOwner),
    /// The session was already revoked; nothing changed.
    AlreadyRevoked,
    /// No such session.
    NotFound,
}

impl Revocation {
    /// The outcome without the owner (the service's public answer).
    pub fn outcome(&self) -> RevokeOutcome {
        match self {
            Revocation::Revoked(_) => RevokeOutcome::Revoked,
            Revocation::AlreadyRevoked => RevokeOutcome::AlreadyRevoked,
            Revocation::NotFound => RevokeOutcome::NotFound,
        }
    }
}

/// What a one-time claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// This call claimed the id; no other call will until it expires.
    Claimed,
    /// The id was claimed before and that claim has not expired.
    AlreadyUsed,
    /// The claim's own expiry is at or before now; nothing was recorded.
    Expired,
}

/// What ending a key at once ([`KeyStore::end_key`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEnding {
    /// The key was the active one: it is retired and verifies nothing any more, and the
    /// replacement is the active key.
    EndedActive,
    /// The key was retired and still verifying: it verifies nothing any more.
    EndedRetired,
    /// The key had already stopped verifying; nothing changed.
    AlreadyEnded,
    /// No such key (of that purpose); nothing changed.
    NotFound,
}

/// The expected and the new refresh state of a rotation or a lost-response re-issue
/// (compare-and-swap on the current hash).
#[derive(Debug, Clone, Copy)]
pub struct RefreshRotation<'a> {
    /// The session.
    pub id: &'a SessionId,
    /// The hash the row must still hold for the swap to happen.
    pub expected_hash: &'a [u8; 32],
    /// Swap only if the current pair is still unused (a re-issue must lose to a first use).
    pub only_if_unused: bool,
    /// The successor's hash.
    pub new_hash: &'a [u8; 32],
    /// The successor's generation.
    pub generation: u64,
    /// The new chain (ends with the step that produced `generation`).
    pub chain: &'a [RefreshStep],
    /// When (also the new `last_seen_at`).
    pub now: Timestamp,
    /// The new idle expiry (capped by the backend at the absolute expiry).
    pub idle_expires_at: Timestamp,
}

/// Session rows.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Inserts a new session and, when `max_active` is set, revokes (reason `evicted`) the
    /// oldest active sessions of the same user and tenant beyond that many, in one atomic step.
    /// The new session counts as the newest and is never evicted unless `max_active` is
    /// `Some(0)`, which callers must not pass (the service maps a limit of 0 to `None`).
    /// Returns the evicted sessions, as the evicting statement returned them (in no order).
    async fn create_session(
        &self,
        record: &SessionRecord,
        max_active: Option<u32>,
        now: Timestamp,
    ) -> Result<Vec<SessionOwner>, StoreError>;

    /// The row with this id, revoked and expired ones included.
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// The row with this id as the database holds it now, past any cache in front of it: the
    /// read a compare-and-swap that just lost decides on again (a cached copy may predate the
    /// change it lost to, whose invalidation is still on its way from another node).
    /// Defaults to [`SessionStore::session`], for stores that cache nothing.
    async fn session_current(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.session(id).await
    }

    /// Records activity: sets `last_seen_at` and `idle_expires_at` (capped at the absolute
    /// expiry), but only if the row is not revoked and its `last_seen_at` is at or before
    /// `seen_before` (so concurrent touches write once).
    /// Returns whether a row changed.
    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen_at: Timestamp,
        idle_expires_at: Timestamp,
        seen_before: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Revokes one session if it is not revoked yet (an expired but unrevoked row is revoked
    /// too, so the reason is recorded). The revoking statement returns the owner, so a revoke
    /// is one round trip; only when nothing changed does a second read tell an already
    /// revoked session from a missing one.
    async fn revoke_session(
        &self,
        id: &SessionId,
        at: Timestamp,
        reason: &RevokeReason,
    ) -> Result<Revocation, StoreError>;

    /// Revokes every active session of `user` (in `tenant`, or in all tenants when `None`),
    /// except `except`; expired rows are left as they are. Returns the sessions it revoked (in
    /// no order), as the revoking statement returned them.
    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        except: Option<&SessionId>,
        at: Timestamp,
        reason: &RevokeReason,
    ) -> Result<Vec<SessionOwner>, StoreError>;

    /// The active sessions of `user` at `now`, oldest first.
    async fn user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError>;

    /// Replaces the CSRF hash of a session that is active at `now`. Returns its owner when it
    /// did, `None` when the session is missing or not active.
    async fn set_csrf_hash(
        &self,
        id: &SessionId,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionOwner>, StoreError>;

    /// Deletes up to `limit` sessions whose idle or absolute expiry is at or before `now`.
    /// Returns how many it deleted.
    async fn delete_expired_sessions(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// Rotates a token session's refresh secret if and only if the row still holds
    /// `expected_hash` (and, with `only_if_unused`, its current pair is unused) and is active at
    /// `now`: hash, generation and chain become the rotation's, the new pair is unused, and
    /// activity is recorded. Exactly one of any number of concurrent rotations from the same
    /// expected hash succeeds. Returns whether this one did.
    async fn rotate_refresh(&self, rotation: RefreshRotation<'_>) -> Result<bool, StoreError>;

    /// Records the first use of a token session's current pair: sets `used` if the row's
    /// generation is still `generation` and `used` is not set yet (one write per pair, not
    /// per validation). Returns whether a row changed.
    async fn mark_refresh_used(&self, id: &SessionId, generation: u64) -> Result<bool, StoreError>;

    /// The counters and sizes of the store's own caches, by name (SQLite: `session_rows`,
    /// docs/DESIGN.md §15.4). None by default.
    fn cache_stats(&self) -> Vec<(&'static str, crate::cache::CacheStats)> {
        Vec::new()
    }
}

/// One-time claims.
#[async_trait]
pub trait ClaimStore: Send + Sync + fmt::Debug {
    /// Claims `id` until `expires_at`, atomically across every node: insert-if-absent, where a
    /// record whose own expiry has passed counts as absent. `expires_at <= now` is
    /// [`ClaimOutcome::Expired`] and records nothing.
    async fn claim(
        &self,
        id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Deletes up to `limit` claims whose expiry is at or before `now`.
    async fn delete_expired_claims(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// Signing keys (material sealed).
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Every stored key.
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Inserts `key` as the active key of its purpose if the purpose has no active key yet.
    /// Returns `false` (and changes nothing) when one exists.
    async fn insert_first_active_key(&self, key: &KeyRecord) -> Result<bool, StoreError>;

    /// In one atomic step: retires the active key of `key.purpose` (setting `retired_at` and
    /// `verify_until`; an operator key's fingerprint is recorded as retired, see
    /// [`KeyStore::retired_operator_key`]) and inserts `key` as the new active key. With
    /// `expected_active`, only if that is still the active key (a compare-and-swap: of several
    /// nodes replacing the key they saw, one wins); without, whatever key is active. Returns
    /// whether it changed anything (always `true` without `expected_active`).
    async fn rotate_key(
        &self,
        key: &KeyRecord,
        retired_at: Timestamp,
        verify_until: Timestamp,
        expected_active: Option<&KeyId>,
    ) -> Result<bool, StoreError>;

    /// Ends key `id` of `purpose` at `at`, in one atomic step: an active key is retired with
    /// `verify_until = at` and `replacement` (a key of the same purpose) becomes the active key;
    /// a retired key still verifying after `at` gets `verify_until = at`. An operator key's
    /// fingerprint is recorded as retired. `replacement` is stored only in the first case.
    async fn end_key(
        &self,
        id: &KeyId,
        purpose: KeyPurpose,
        at: Timestamp,
        replacement: &KeyRecord,
    ) -> Result<KeyEnding, StoreError>;

    /// Records the active key `id`, whose origin is `generated`, as an operator key with
    /// `fingerprint` (a key adopted before origins were recorded). Returns whether it changed a
    /// row (`false` when the key is no longer active or is already an operator key).
    async fn record_operator_key(
        &self,
        id: &KeyId,
        fingerprint: &Fingerprint,
    ) -> Result<bool, StoreError>;

    /// The key that held operator material with `fingerprint` when it was retired, if any was.
    /// These records are never collected: they outlive the key rows, so retired operator
    /// material is recognised for good.
    async fn retired_operator_key(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<KeyId>, StoreError>;

    /// Deletes up to `limit` retired keys whose `verify_until` is at or before `now`.
    async fn delete_expired_keys(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// The audit trail (append-only).
#[async_trait]
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Appends a record.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;

    /// Records matching `query`, newest first by insertion order (not by `at`: clocks of
    /// several nodes may disagree).
    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
}

/// What an API key may do on the server's `/v1` routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKeyScope {
    /// Every route (the default, and what keys created before scopes existed have).
    Admin,
    /// Read and watch only: validate credentials, read sessions (one, or a user's), and the
    /// event streams. What a resource server (a local verifier) needs; it cannot create, revoke,
    /// refresh, rotate or claim.
    Verify,
}

impl ApiKeyScope {
    /// The stored and displayed name: `admin`, `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyScope::Admin => "admin",
            ApiKeyScope::Verify => "verify",
        }
    }

    /// Parses a stored or typed name; `None` for one we do not know.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(ApiKeyScope::Admin),
            "verify" => Some(ApiKeyScope::Verify),
            _ => None,
        }
    }
}

/// An API key as stored: its hash, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's public id.
    pub id: ApiKeyId,
    /// A human label.
    pub name: String,
    /// What it may do.
    pub scope: ApiKeyScope,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// The table of the server's API keys (`sessiond-server`'s `/v1` authentication), which the SQL
/// stores (`sqlite::SqliteStore`, `postgres::PgStore`) keep
/// beside the sessions, sharing their row layer and migrations. Not part of [`Backend`]: the
/// session engine never reads it, and a backend of your own need not carry it.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + fmt::Debug {
    /// Inserts a new key.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The key whose hash is `hash`, revoked or not.
    async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes a key if it is not revoked yet. Returns whether this call revoked it.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool, StoreError>;
}

/// Everything a full backend stores. Implemented automatically for any type that implements
/// each part.
pub trait Backend: SessionStore + KeyStore + AuditStore + ClaimStore {}

impl<T: SessionStore + KeyStore + AuditStore + ClaimStore> Backend for T {}
