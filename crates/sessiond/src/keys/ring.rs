//! The key ring: a cache of unsealed keys in front of the key store.
//!
//! Reads come from an in-process snapshot (`Arc<KeySet>`), so the hot path takes a read lock,
//! clones an `Arc` and never touches the store. The snapshot is reloaded when it is older than
//! [`KeyPolicy::cache_ttl`] (so a key rotated on another node is picked up within that bound) and
//! when a credential names a key id the snapshot does not know, at most once per
//! [`KeyPolicy::unknown_key_reload_interval`] so forged key ids cannot hammer the store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::seal;
use super::{KeyAlgorithm, KeyError, KeyPurpose, KeyRecord, KeyRefusal, MasterKey};
use crate::clock::{is_expired, Clock, Timestamp};
use crate::id::KeyId;
use crate::random::{self, RandomSource};
use crate::secret::Secret;
use crate::store::KeyStore;

/// How keys are made, kept and cached.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// How long a retired key keeps verifying (default 24 h).
    pub retention: Duration,
    /// The algorithm of new access keys (default EdDSA).
    pub access_algorithm: KeyAlgorithm,
    /// The longest a node serves from its key snapshot before reloading (default 30 s): the bound
    /// within which a rotation on another node reaches this one.
    pub cache_ttl: Duration,
    /// The shortest time between two reloads forced by an unknown key id (default 1 s).
    pub unknown_key_reload_interval: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            retention: Duration::from_secs(24 * 3600),
            access_algorithm: KeyAlgorithm::EdDsa,
            cache_ttl: Duration::from_secs(30),
            unknown_key_reload_interval: Duration::from_secs(1),
        }
    }
}

impl KeyPolicy {
    fn algorithm_for(&self, purpose: KeyPurpose) -> KeyAlgorithm {
        match purpose {
            KeyPurpose::Access => self.access_algorithm,
            KeyPurpose::Cookie | KeyPurpose::Refresh => KeyAlgorithm::Hs256,
        }
    }
}

/// What may be shown about a key: everything but its private material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key's id.
    pub id: KeyId,
    /// What the key signs.
    pub purpose: KeyPurpose,
    /// The algorithm the key is pinned to.
    pub algorithm: KeyAlgorithm,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When it stopped signing, if it has.
    pub retired_at: Option<Timestamp>,
    /// Until when it still verifies, if retired.
    pub verify_until: Option<Timestamp>,
    /// The public key (raw Ed25519 bytes), for asymmetric keys.
    #[serde(skip)]
    pub public_key: Option<Vec<u8>>,
}

impl Serialize for KeyPurpose {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl KeyInfo {
    /// Whether the key is the active (signing) key of its purpose.
    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }

    fn check_usable(&self, now: Timestamp) -> Result<(), KeyRefusal> {
        match self.verify_until {
            Some(until) if is_expired(until, now) => Err(KeyRefusal::Retired),
            _ => Ok(()),
        }
    }
}

enum Material {
    Hmac {
        mac: Hmac<Sha256>,
        secret: Secret<Vec<u8>>,
    },
    Ed25519(ed25519_dalek::SigningKey),
}

/// An unsealed key: its public description and its private material.
pub struct Key {
    info: KeyInfo,
    material: Material,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.info.id
    }

    /// Everything about the key but its material.
    pub fn info(&self) -> &KeyInfo {
        &self.info
    }

    /// A keyed HMAC-SHA256 state to clone per message, for HS256 keys.
    pub(crate) fn hmac(&self) -> Option<&Hmac<Sha256>> {
        match &self.material {
            Material::Hmac { mac, .. } => Some(mac),
            Material::Ed25519(_) => None,
        }
    }

    /// The raw HMAC secret, for HS256 keys.
    #[allow(dead_code)] // used by the token module
    pub(crate) fn hmac_secret(&self) -> Option<&[u8]> {
        match &self.material {
            Material::Hmac { secret, .. } => Some(secret.expose().as_slice()),
            Material::Ed25519(_) => None,
        }
    }

    /// The Ed25519 signing key, for EdDSA keys.
    #[allow(dead_code)] // used by the token module
    pub(crate) fn ed25519(&self) -> Option<&ed25519_dalek::SigningKey> {
        match &self.material {
            Material::Ed25519(k) => Some(k),
            Material::Hmac { .. } => None,
        }
    }

    /// A key held only in memory, made from raw material: a 32-byte Ed25519 seed for EdDSA, an
    /// HMAC secret of at least 32 bytes for HS256. Nothing is stored or sealed and the key is
    /// active (never retired). For test vectors and for embedders that manage key material
    /// themselves; the [`KeyRing`] makes its own keys.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] when the material has the wrong shape for `algorithm` (an Ed25519
    /// seed that is not 32 bytes, an HMAC secret shorter than 32 bytes).
    pub fn from_material(
        id: KeyId,
        purpose: KeyPurpose,
        algorithm: KeyAlgorithm,
        material: Secret<Vec<u8>>,
        created_at: Timestamp,
    ) -> Result<Key, KeyError> {
        let (material, public_key) = match algorithm {
            KeyAlgorithm::Hs256 => {
                if material.expose().len() < 32 {
                    return Err(KeyError::Malformed);
                }
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(material.expose())
                    .map_err(|_| KeyError::Malformed)?;
                (
                    Material::Hmac {
                        mac,
                        secret: material,
                    },
                    None,
                )
            }
            KeyAlgorithm::EdDsa => {
                let seed: &[u8; 32] = material
                    .expose()
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Malformed)?;
                let signing = ed25519_dalek::SigningKey::from_bytes(seed);
                let public = signing.verifying_key().to_bytes().to_vec();
                (Material::Ed25519(signing), Some(public))
            }
        };
        let info = KeyInfo {
            id,
            purpose,
            algorithm,
            created_at,
            retired_at: None,
            verify_until: None,
            public_key,
        };
        Ok(Key { info, material })
    }

    fn unseal(master: &MasterKey, record: &KeyRecord) -> Result<Key, KeyError> {
        let plain = seal::open(
            master,
            &record.id,
            record.purpose,
            record.algorithm,
            &record.sealed,
        )?;
        let material = match record.algorithm {
            KeyAlgorithm::Hs256 => {
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(plain.expose())
                    .map_err(|_| KeyError::Malformed)?;
                Material::Hmac { mac, secret: plain }
            }
            KeyAlgorithm::EdDsa => {
                let seed: &[u8; 32] = plain
                    .expose()
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Malformed)?;
                Material::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
            }
        };
        let info = KeyInfo {
            id: record.id.clone(),
            purpose: record.purpose,
            algorithm: record.algorithm,
            created_at: record.created_at,
            retired_at: record.retired_at,
            verify_until: record.verify_until,
            public_key: record.public_key.clone(),
        };
        Ok(Key { info, material })
    }
}

#[derive(Default)]
struct KeySet {
    loaded_at: Timestamp,
    by_id: HashMap<KeyId, Arc<Key>>,
    active: HashMap<KeyPurpose, Arc<Key>>,
}

struct RingInner {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    policy: KeyPolicy,
    cache: RwLock<Arc<KeySet>>,
    reload_lock: tokio::sync::Mutex<()>,
    last_forced_reload: Mutex<Option<Timestamp>>,
}

/// The signing keys of one deployment, cached in process. Clones share one cache.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<RingInner>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring over `store`, sealing with `master`. Nothing is loaded until the first use or
    /// [`KeyRing::ensure_active`].
    pub fn new(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
        policy: KeyPolicy,
    ) -> Self {
        KeyRing {
            inner: Arc::new(RingInner {
                store,
                master,
                clock,
                rng,
                policy,
                cache: RwLock::new(Arc::new(KeySet::default())),
                reload_lock: tokio::sync::Mutex::new(()),
                last_forced_reload: Mutex::new(None),
            }),
        }
    }

    /// The policy the ring was made with.
    pub fn policy(&self) -> &KeyPolicy {
        &self.inner.policy
    }

    /// Makes sure every purpose has an active key that opens under the master key, creating the
    /// missing ones. Safe to run on several nodes at once: the store admits one active key per
    /// purpose, and a node that loses the race adopts the winner's key.
    ///
    /// # Errors
    /// [`KeyError::Bootstrap`] naming the first purpose that could not be ensured; a server must
    /// refuse to start on it.
    pub async fn ensure_active(&self) -> Result<(), KeyError> {
        for purpose in KeyPurpose::ALL {
            self.ensure_purpose(purpose)
                .await
                .map_err(|e| KeyError::Bootstrap {
                    purpose,
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    async fn ensure_purpose(&self, purpose: KeyPurpose) -> Result<(), KeyError> {
        let set = self.reload_set().await?;
        let wanted = self.inner.policy.algorithm_for(purpose);
        match set.active.get(&purpose) {
            Some(key) if key.info.algorithm == wanted => return Ok(()),
            Some(key) => {
                tracing::info!(
                    purpose = purpose.as_str(),
                    from = key.info.algorithm.as_str(),
                    to = wanted.as_str(),
                    "configured algorithm changed; rotating the active key"
                );
                self.rotate(purpose).await?;
            }
            None => {
                let record = self.generate(purpose, wanted)?;
                if self.inner.store.insert_first_active_key(&record).await? {
                    tracing::info!(
                        purpose = purpose.as_str(),
                        key_id = %record.id,
                        "created the first active key"
                    );
                }
            }
        }
        let set = self.reload_set().await?;
        match set.active.get(&purpose) {
            Some(_) => Ok(()),
            None => Err(KeyError::NoActiveKey(purpose)),
        }
    }

    /// Retires the active key of `purpose` (it keeps verifying for the retention window) and
    /// makes a new one active, atomically in the store.
    ///
    /// # Errors
    /// [`KeyError::Store`] when the store fails; nothing changes then.
    pub async fn rotate(&self, purpose: KeyPurpose) -> Result<KeyInfo, KeyError> {
        let alg = self.inner.policy.algorithm_for(purpose);
        let record = self.generate(purpose, alg)?;
        let now = self.inner.clock.now();
        let verify_until = now.saturating_add(self.inner.policy.retention);
        self.inner
            .store
            .rotate_key(&record, now, verify_until)
            .await?;
        let set = self.reload_set().await?;
        // Just stored: a reload that misses it found another active key committed after ours.
        let key = set
            .by_id
            .get(&record.id)
            .ok_or(KeyError::NoActiveKey(purpose))?;
        Ok(key.info.clone())
    }

    /// Makes key material supplied by the operator (for example a shared HS256 secret that
    /// resource servers also hold) the active key of `purpose`, unless the active key already has
    /// exactly this material and algorithm. The previous key is retired as by a rotation.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] for material of the wrong shape (an HS256 secret under 32 bytes),
    /// [`KeyError::Store`].
    pub async fn adopt(
        &self,
        purpose: KeyPurpose,
        alg: KeyAlgorithm,
        material: &Secret<Vec<u8>>,
    ) -> Result<KeyInfo, KeyError> {
        use subtle::ConstantTimeEq;
        let set = self.reload_set().await?;
        if let Some(active) = set.active.get(&purpose) {
            let same = active.info.algorithm == alg
                && match (&active.material, alg) {
                    (Material::Hmac { secret, .. }, KeyAlgorithm::Hs256) => bool::from(
                        secret
                            .expose()
                            .as_slice()
                            .ct_eq(material.expose().as_slice()),
                    ),
                    (Material::Ed25519(k), KeyAlgorithm::EdDsa) => {
                        bool::from(k.to_bytes().as_slice().ct_eq(material.expose().as_slice()))
                    }
                    _ => false,
                };
            if same {
                return Ok(active.info.clone());
            }
        }
        let record = self.record_with(purpose, alg, material)?;
        let now = self.inner.clock.now();
        let verify_until = now.saturating_add(self.inner.policy.retention);
        self.inner
            .store
            .rotate_key(&record, now, verify_until)
            .await?;
        let set = self.reload_set().await?;
        // Just stored: a reload that misses it found another active key committed after ours.
        let key = set
            .by_id
            .get(&record.id)
            .ok_or(KeyError::NoActiveKey(purpose))?;
        tracing::info!(purpose = purpose.as_str(), key_id = %record.id, "adopted operator-supplied key material");
        Ok(key.info.clone())
    }

    /// The active key of `purpose`, for signing.
    ///
    /// # Errors
    /// [`KeyError::NoActiveKey`] when the ring was never bootstrapped for it.
    pub async fn active(&self, purpose: KeyPurpose) -> Result<Arc<Key>, KeyError> {
        let set = self.current().await;
        set.active
            .get(&purpose)
            .cloned()
            .ok_or(KeyError::NoActiveKey(purpose))
    }

    /// The key named `id`, if it may verify a credential of `purpose` now. The outer result
    /// is the ring's ability to answer (an unknown id forces a reload from the store, at most
    /// once a second); the inner one is the verdict.
    ///
    /// # Errors
    /// Outer: [`KeyError::Store`] (or an unsealing error) when a reload was needed and failed.
    /// Inner: [`KeyRefusal::UnknownKey`], [`KeyRefusal::WrongPurpose`], [`KeyRefusal::Retired`].
    pub async fn verifier(
        &self,
        id: &KeyId,
        purpose: KeyPurpose,
    ) -> Result<Result<Arc<Key>, KeyRefusal>, KeyError> {
        let now = self.inner.clock.now();
        let set = self.current().await;
        let key = match set.by_id.get(id) {
            Some(key) => key.clone(),
            None if self.may_force_reload(now) => {
                let set = self.reload_set().await?;
                match set.by_id.get(id) {
                    Some(key) => key.clone(),
                    None => return Ok(Err(KeyRefusal::UnknownKey)),
                }
            }
            None => return Ok(Err(KeyRefusal::UnknownKey)),
        };
        if key.info.purpose != purpose {
            return Ok(Err(KeyRefusal::WrongPurpose));
        }
        Ok(key.info.check_usable(now).map(|()| key))
    }

    /// Every key the store holds (active, and retired until garbage-collected), fresh from the
    /// store.
    ///
    /// # Errors
    /// [`KeyError::Store`] or an unsealing error.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let set = self.reload_set().await?;
        let mut keys: Vec<KeyInfo> = set.by_id.values().map(|k| k.info.clone()).collect();
        keys.sort_by_key(|k| (k.purpose, k.created_at));
        Ok(keys)
    }

    /// The keys of `purpose` that verify now (active and retained), from the cache.
    pub async fn verifying_keys(&self, purpose: KeyPurpose) -> Vec<Arc<Key>> {
        let now = self.inner.clock.now();
        let set = self.current().await;
        let mut keys: Vec<Arc<Key>> = set
            .by_id
            .values()
            .filter(|k| k.info.purpose == purpose && k.info.check_usable(now).is_ok())
            .cloned()
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.info.created_at));
        keys
    }

    /// Reloads the snapshot from the store now.
    ///
    /// # Errors
    /// [`KeyError::Store`], or [`KeyError::Unseal`] / [`KeyError::Malformed`] for an active key
    /// (retired keys that fail to open are skipped with a warning).
    pub async fn reload(&self) -> Result<(), KeyError> {
        self.reload_set().await.map(|_| ())
    }

    async fn reload_set(&self) -> Result<Arc<KeySet>, KeyError> {
        let _guard = self.inner.reload_lock.lock().await;
        let records = self.inner.store.keys().await?;
        let mut set = KeySet {
            loaded_at: self.inner.clock.now(),
            ..KeySet::default()
        };
        for record in &records {
            let key = match Key::unseal(&self.inner.master, record) {
                Ok(key) => Arc::new(key),
                Err(e) if record.retired_at.is_some() => {
                    tracing::warn!(key_id = %record.id, error = %e, "skipping a retired key that does not open");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if key.info.is_active() {
                set.active.insert(key.info.purpose, key.clone());
            }
            set.by_id.insert(key.info.id.clone(), key);
        }
        let set = Arc::new(set);
        match self.inner.cache.write() {
            Ok(mut guard) => *guard = set.clone(),
            Err(poisoned) => *poisoned.into_inner() = set.clone(),
        }
        Ok(set)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.inner.cache.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The snapshot, reloaded first when it is older than the cache TTL. A failed reload keeps
    /// serving the previous snapshot (keys are append-and-retire, so it is still correct for
    /// everything it contains) and logs the failure.
    async fn current(&self) -> Arc<KeySet> {
        let set = self.snapshot();
        let now = self.inner.clock.now();
        let fresh_until = set.loaded_at.saturating_add(self.inner.policy.cache_ttl);
        if !is_expired(fresh_until, now) && set.loaded_at <= now {
            return set;
        }
        // Another task is already reloading: serve the current snapshot instead of queueing.
        if self.inner.reload_lock.try_lock().is_err() {
            return set;
        }
        match self.reload_set().await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, "key reload failed; serving the previous snapshot");
                set
            }
        }
    }

    fn may_force_reload(&self, now: Timestamp) -> bool {
        let mut last = match self.inner.last_forced_reload.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let allowed = match *last {
            Some(at) => {
                let next = at.saturating_add(self.inner.policy.unknown_key_reload_interval);
                is_expired(next, now) || now < at
            }
            None => true,
        };
        if allowed {
            *last = Some(now);
        }
        allowed
    }

    fn generate(&self, purpose: KeyPurpose, alg: KeyAlgorithm) -> Result<KeyRecord, KeyError> {
        let material = Secret::new(random::bytes::<32>(self.inner.rng.as_ref()).to_vec());
        self.record_with(purpose, alg, &material)
    }

    fn record_with(
        &self,
        purpose: KeyPurpose,
        alg: KeyAlgorithm,
        material: &Secret<Vec<u8>>,
    ) -> Result<KeyRecord, KeyError> {
        let rng = self.inner.rng.as_ref();
        let id = KeyId::generate(rng);
        let public_key = match alg {
            KeyAlgorithm::Hs256 => {
                if material.expose().len() < 32 {
                    return Err(KeyError::Malformed);
                }
                None
            }
            KeyAlgorithm::EdDsa => {
                let seed: &[u8; 32] = material
                    .expose()
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Malformed)?;
                let signing = ed25519_dalek::SigningKey::from_bytes(seed);
                Some(signing.verifying_key().to_bytes().to_vec())
            }
        };
        let sealed = seal::seal(
            &self.inner.master,
            rng,
            &id,
            purpose,
            alg,
            material.expose(),
        )?;
        Ok(KeyRecord {
            id,
            purpose,
            algorithm: alg,
            created_at: self.inner.clock.now(),
            retired_at: None,
            verify_until: None,
            public_key,
            sealed,
        })
    }
}
