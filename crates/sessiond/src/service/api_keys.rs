//! API keys for the server's `/v1` routes, on [`SessionService`].
//!
//! A key is `sessiond_` + base64url(32 random bytes), shown once at creation; the store keeps
//! SHA-256 of it (the key has 256 bits of entropy, so a fast hash is enough and lookups by hash
//! leak nothing usable). Authentications are cached in process for
//! [`ServiceConfig::api_key_cache_ttl`](super::ServiceConfig::api_key_cache_ttl), so a revoked
//! key stops working on every node within that bound.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::SessionService;
use crate::clock::{is_expired, Timestamp};
use crate::error::SessionError;
use crate::id::ApiKeyId;
use crate::secret::Secret;
use crate::store::ApiKeyRecord;

/// The prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "sessiond_";

/// What may be shown about an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ApiKeyInfo {
    /// The key's public id.
    pub id: ApiKeyId,
    /// Its label.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(r: &ApiKeyRecord) -> Self {
        ApiKeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// Cached outcome of one key's authentication.
#[derive(Debug, Clone)]
pub(crate) struct CachedKey {
    info: Option<Arc<ApiKeyInfo>>,
    until: Timestamp,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl SessionService {
    /// Creates an API key labelled `name`. The returned secret is the only copy.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for an empty or oversize name, [`SessionError::Store`].
    pub async fn create_api_key(
        &self,
        name: &str,
    ) -> Result<(ApiKeyInfo, Secret<String>), SessionError> {
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(SessionError::InvalidInput(
                "api key name must be 1 to 128 printable bytes",
            ));
        }
        let secret = self.new_token_secret();
        let key = Secret::new(format!("{API_KEY_PREFIX}{}", secret.expose()));
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(self.inner.rng.as_ref()),
            name: name.to_owned(),
            hash: hash(key.expose()),
            created_at: self.inner.clock.now(),
            revoked_at: None,
        };
        self.inner.backend.insert_api_key(&record).await?;
        tracing::info!(api_key_id = %record.id, name, "API key created");
        Ok((ApiKeyInfo::from(&record), key))
    }

    /// Every API key, oldest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyInfo>, SessionError> {
        Ok(self
            .inner
            .backend
            .api_keys()
            .await?
            .iter()
            .map(ApiKeyInfo::from)
            .collect())
    }

    /// Revokes an API key; returns whether this call revoked it. Other nodes stop accepting it
    /// within the cache TTL; this node at once.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<bool, SessionError> {
        let revoked = self
            .inner
            .backend
            .revoke_api_key(id, self.inner.clock.now())
            .await?;
        let mut cache = match self.inner.api_key_cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.clear();
        if revoked {
            tracing::info!(api_key_id = %id, "API key revoked");
        }
        Ok(revoked)
    }

    /// The active API key matching `presented`, or `None`.
    ///
    /// # Errors
    /// [`SessionError::Store`] when the key store cannot be read (callers must answer 503, not
    /// 401).
    pub async fn authenticate_api_key(
        &self,
        presented: &str,
    ) -> Result<Option<Arc<ApiKeyInfo>>, SessionError> {
        if !presented.starts_with(API_KEY_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let digest = hash(presented);
        let now = self.inner.clock.now();
        {
            let cache = match self.inner.api_key_cache.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(hit) = cache.get(&digest) {
                if !is_expired(hit.until, now) {
                    return Ok(hit.info.clone());
                }
            }
        }
        let record = self.inner.backend.api_key_by_hash(&digest).await?;
        let info = record
            .filter(|r| r.revoked_at.is_none())
            .map(|r| Arc::new(ApiKeyInfo::from(&r)));
        let mut cache = match self.inner.api_key_cache.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Bound the cache: unknown keys are cached too (so a flood of wrong keys is cheap), and
        // the whole cache is dropped when it grows past a few thousand entries.
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(
            digest,
            CachedKey {
                info: info.clone(),
                until: now.saturating_add(self.inner.config.api_key_cache_ttl),
            },
        );
        Ok(info)
    }
}
