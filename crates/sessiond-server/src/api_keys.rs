//! The server's API keys, which authenticate the `/v1` routes (docs/DESIGN.md §9.1): the
//! server's own service over the API-key table that the SQL stores keep
//! ([`sessiond::store::ApiKeyStore`]). The session engine knows nothing of them.
//!
//! A key is `sessiond_` + base64url(32 random bytes), shown once at creation; the store keeps
//! SHA-256 of it (the key has 256 bits of entropy, so a fast hash is enough and lookups by hash
//! leak nothing usable). Authentications, positive and negative, are cached in process for
//! [`DEFAULT_CACHE_TTL`], so a key revoked on another node stops working here within that bound;
//! on this node at once.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use sessiond::cache::{BoundedCache, CacheLimits, CacheStats};
use sessiond::clock::is_expired;
use sessiond::store::{ApiKeyRecord, ApiKeyScope, ApiKeyStore};
use sessiond::{ApiKeyId, Clock, RandomSource, Secret, SessionError, Timestamp};
use sha2::{Digest, Sha256};

/// The prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "sessiond_";

/// How long an authentication is cached in process: the bound on how long a key revoked on
/// another node keeps working on this one.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

/// The authentication cache's limits. Unknown keys are cached too, so a flood of wrong keys
/// stays cheap; the limits keep it from growing without bound (the oldest entries go first).
const CACHE_LIMITS: CacheLimits = CacheLimits::new(4096, 1 << 20);

/// The longest key accepted for a lookup (a real key is 52 characters).
const MAX_KEY_LEN: usize = 128;

/// What may be shown about an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ApiKeyInfo {
    /// The key's public id.
    pub id: ApiKeyId,
    /// Its label.
    pub name: String,
    /// What it may do.
    #[serde(serialize_with = "scope_name")]
    pub scope: ApiKeyScope,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

fn scope_name<S: serde::Serializer>(scope: &ApiKeyScope, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(scope.as_str())
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(r: &ApiKeyRecord) -> Self {
        ApiKeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            scope: r.scope,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// One key's cached authentication: the key (or `None`: unknown or revoked) and until when.
#[derive(Debug, Clone)]
struct CachedKey {
    info: Option<Arc<ApiKeyInfo>>,
    until: Timestamp,
}

/// The server's API keys: create, list, revoke, authenticate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    cache_ttl: Duration,
    cache: BoundedCache<CachedKey>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// API keys kept in `store`, timed by `clock`, generated from `rng`, with authentications
    /// cached for `cache_ttl`.
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        cache_ttl: Duration,
    ) -> Self {
        ApiKeys {
            inner: Arc::new(Inner {
                store,
                clock,
                rng,
                cache_ttl,
                cache: BoundedCache::new(CACHE_LIMITS),
            }),
        }
    }

    /// The authentication cache's counters and size.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Creates an API key labelled `name` with `scope`. The returned secret is the only copy.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for an empty, oversize or non-printable name;
    /// [`SessionError::Store`].
    pub async fn create(
        &self,
        name: &str,
        scope: ApiKeyScope,
    ) -> Result<(ApiKeyInfo, Secret<String>), SessionError> {
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(SessionError::InvalidInput(
                "api key name must be 1 to 128 printable bytes",
            ));
        }
        let bytes: [u8; 32] = sessiond::random::bytes(self.inner.rng.as_ref());
        let key = Secret::new(format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)));
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(self.inner.rng.as_ref()),
            name: name.to_owned(),
            scope,
            hash: hash(key.expose()),
            created_at: self.inner.clock.now(),
            revoked_at: None,
        };
        self.inner.store.insert_api_key(&record).await?;
        tracing::info!(api_key_id = %record.id, name, scope = scope.as_str(), "API key created");
        Ok((ApiKeyInfo::from(&record), key))
    }

    /// Every API key, oldest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>, SessionError> {
        Ok(self
            .inner
            .store
            .api_keys()
            .await?
            .iter()
            .map(ApiKeyInfo::from)
            .collect())
    }

    /// Revokes an API key; returns whether this call revoked it. This node stops accepting it
    /// at once, other nodes within the cache TTL.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke(&self, id: &ApiKeyId) -> Result<bool, SessionError> {
        let revoked = self
            .inner
            .store
            .revoke_api_key(id, self.inner.clock.now())
            .await?;
        self.inner.cache.clear();
        if revoked {
            tracing::info!(api_key_id = %id, "API key revoked");
        }
        Ok(revoked)
    }

    /// The active API key matching `presented`, or `None`.
    ///
    /// # Errors
    /// [`SessionError::Store`] when the key table cannot be read (callers answer 503, not 401).
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<Arc<ApiKeyInfo>>, SessionError> {
        if !presented.starts_with(API_KEY_PREFIX) || presented.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let digest = hash(presented);
        let now = self.inner.clock.now();
        if let Some(hit) = self.inner.cache.get(&digest) {
            if !is_expired(hit.until, now) {
                return Ok(hit.info);
            }
        }
        let record = self.inner.store.api_key_by_hash(&digest).await?;
        let info = record
            .filter(|r| r.revoked_at.is_none())
            .map(|r| Arc::new(ApiKeyInfo::from(&r)));
        let size = info.as_ref().map_or(0, |i| i.name.len() + 64);
        self.inner.cache.insert(
            digest,
            CachedKey {
                info: info.clone(),
                until: now.saturating_add(self.inner.cache_ttl),
            },
            std::mem::size_of::<CachedKey>() + size,
        );
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
    use sessiond::{ErrorCode, ManualClock, SeededRandom};

    async fn keys() -> (ApiKeys, Arc<ManualClock>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessiond.db");
        let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
            1_700_000_000_000,
        )));
        let keys = ApiKeys::new(
            Arc::new(store),
            clock.clone(),
            Arc::new(SeededRandom::new(7)),
            DEFAULT_CACHE_TTL,
        );
        (keys, clock, dir)
    }

    #[tokio::test]
    async fn authenticate_until_revoked() {
        let (keys, _clock, _dir) = keys().await;
        let (info, key) = keys.create("backend", ApiKeyScope::Admin).await.unwrap();
        assert!(key.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(key.expose().len(), API_KEY_PREFIX.len() + 43);
        let found = keys.authenticate(key.expose()).await.unwrap().unwrap();
        assert_eq!(found.id, info.id);
        assert!(keys.authenticate("sessiond_wrong").await.unwrap().is_none());
        assert!(keys.authenticate("Bearer x").await.unwrap().is_none());
        assert_eq!(keys.list().await.unwrap().len(), 1);
        assert!(keys.revoke(&info.id).await.unwrap());
        assert!(!keys.revoke(&info.id).await.unwrap());
        assert!(keys.authenticate(key.expose()).await.unwrap().is_none());
        assert!(keys.list().await.unwrap()[0].revoked_at.is_some());
        for bad in [" ", "", "a\nb", &"x".repeat(129)] {
            assert_eq!(
                keys.create(bad, ApiKeyScope::Admin)
                    .await
                    .unwrap_err()
                    .code(),
                ErrorCode::InvalidRequest
            );
        }
    }

    /// A key revoked by another process (here: another `ApiKeys` on the same database, as a
    /// second node or `sessiond api-keys revoke` would be) keeps working from this node's cache
    /// for at most the TTL, and no longer.
    #[tokio::test]
    async fn a_revocation_elsewhere_reaches_this_node_within_the_cache_ttl() {
        let (keys, clock, dir) = keys().await;
        let (info, key) = keys.create("backend", ApiKeyScope::Admin).await.unwrap();
        assert!(keys.authenticate(key.expose()).await.unwrap().is_some());
        let path = dir.path().join("sessiond.db");
        let other = ApiKeys::new(
            Arc::new(
                SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
                    .await
                    .unwrap(),
            ),
            clock.clone(),
            Arc::new(SeededRandom::new(8)),
            DEFAULT_CACHE_TTL,
        );
        assert!(other.revoke(&info.id).await.unwrap());
        assert!(keys.authenticate(key.expose()).await.unwrap().is_some());
        clock.advance(DEFAULT_CACHE_TTL);
        assert!(keys.authenticate(key.expose()).await.unwrap().is_none());
    }
}
