//! The key ring: a cache of unsealed keys in front of the key store.
//!
//! Reads come from an in-process snapshot (`Arc<KeySet>`), so the hot path takes a read lock,
//! clones an `Arc` and never touches the store. The snapshot is reloaded when it is older than
//! [`KeyPolicy::cache_ttl`] (so a key rotated on another node is picked up within that bound) and
//! when a credential names a key id the snapshot does not know, at most once per
//! [`KeyPolicy::unknown_key_reload_interval`] so forged key ids cannot hammer the store.
//!
//! Every change of a purpose's active key is a compare-and-swap on the active key's id
//! ([`KeyStore::rotate_key`] with the id this node saw), so nodes that start or rotate at the
//! same time converge on one decision instead of rotating one after another.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::seal;
use super::{
    Fingerprint, KeyAlgorithm, KeyError, KeyOrigin, KeyPurpose, KeyRecord, KeyRefusal, MasterKey,
};
use crate::clock::{is_expired, Clock, Timestamp};
use crate::id::KeyId;
use crate::random::{self, RandomSource};
use crate::secret::Secret;
use crate::store::{KeyEnding, KeyStore};

/// How often a compare-and-swap on the active key is retried after another node changed it
/// first, before giving up with [`KeyError::Contended`].
const CAS_ATTEMPTS: usize = 8;

/// How keys are made, kept and cached.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// How long a retired cookie or refresh key keeps verifying (default 24 h). Access keys
    /// use [`KeyPolicy::access_retention`] instead.
    pub retention: Duration,
    /// The algorithm of new access keys (default EdDSA).
    pub access_algorithm: KeyAlgorithm,
    /// The longest a node serves from its key snapshot before reloading (default 30 s): the bound
    /// within which a rotation on another node reaches this one.
    pub cache_ttl: Duration,
    /// The shortest time between two reloads forced by an unknown key id (default 1 s).
    pub unknown_key_reload_interval: Duration,
    /// How long an access token signed now can be accepted: the token policy's `access_ttl +
    /// leeway` (default 10 min 30 s). A service started with [`crate::SessionService::builder`] sets it from its
    /// token policy; only a ring made by hand reads the value given here.
    pub access_token_lifetime: Duration,
    /// The largest difference assumed between the clocks of two nodes (or of a node and the
    /// admin command that retires a key) (default 30 s).
    pub clock_skew: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            retention: Duration::from_secs(24 * 3600),
            access_algorithm: KeyAlgorithm::EdDsa,
            cache_ttl: Duration::from_secs(30),
            unknown_key_reload_interval: Duration::from_secs(1),
            access_token_lifetime: Duration::from_secs(630),
            clock_skew: Duration::from_secs(30),
        }
    }
}

impl KeyPolicy {
    pub(crate) fn algorithm_for(&self, purpose: KeyPurpose) -> KeyAlgorithm {
        match purpose {
            KeyPurpose::Access => self.access_algorithm,
            KeyPurpose::Cookie | KeyPurpose::Refresh => KeyAlgorithm::Hs256,
        }
    }

    /// How long a retired access key keeps verifying (docs/DESIGN.md §4.2): `access_token_lifetime
    /// + cache_ttl + clock_skew` (11 min 30 s by default). A node may sign with the key for up
    /// to `cache_ttl` after another node retired it (its snapshot is that old), the token it
    /// signs last is accepted until its `exp + leeway`, and the two nodes' clocks may differ by
    /// `clock_skew`; nothing signed by the key verifies for longer, so a replaced or withdrawn
    /// access key is never kept for the 24 h of [`KeyPolicy::retention`].
    pub fn access_retention(&self) -> Duration {
        self.access_token_lifetime
            .saturating_add(self.cache_ttl)
            .saturating_add(self.clock_skew)
    }

    /// How long a retired key of `purpose` keeps verifying: [`KeyPolicy::access_retention`] for
    /// access keys, [`KeyPolicy::retention`] for cookie and refresh keys (a cookie session is
    /// bound to its key for its whole life, a refresh chain derives under its keys).
    pub fn retention_for(&self, purpose: KeyPurpose) -> Duration {
        match purpose {
            KeyPurpose::Access => self.access_retention(),
            KeyPurpose::Cookie | KeyPurpose::Refresh => self.retention,
        }
    }
}

/// What [`KeyRing::reconcile_operator_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorKeyChange {
    /// Nothing: the configured material is the active key, or none is configured and the
    /// active key is not an operator key.
    Unchanged,
    /// The active key holds the configured material but was adopted before origins were
    /// recorded: it is now recorded as an operator key (with its fingerprint). Nothing else
    /// changed.
    Recorded {
        /// The active key.
        key: KeyId,
    },
    /// The configured material became the active key.
    Adopted {
        /// The new active key.
        key: KeyInfo,
        /// The key it replaced, as it is now (retired, verifying until its `verify_until`).
        retired: KeyInfo,
    },
    /// No material is configured any more: a generated key replaced the operator key.
    Withdrawn {
        /// The new active (generated) key.
        key: KeyInfo,
        /// The operator key, as it is now (retired, verifying until its `verify_until`).
        retired: KeyInfo,
    },
}

/// What [`KeyRing::retire`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRetirement {
    /// The key, as it is now: retired, with `verify_until` at or before the retirement.
    pub key: KeyInfo,
    /// Whether this call ended it; `false` when it had already stopped verifying (nothing
    /// changed).
    pub ended: bool,
    /// The key that became active in its place, when the ended key was the active one.
    pub replacement: Option<KeyInfo>,
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
    /// Where its material came from.
    pub origin: KeyOrigin,
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

impl Serialize for KeyOrigin {
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

    /// This key's description after a retirement at `at` that keeps it verifying until
    /// `verify_until`.
    fn retired(&self, at: Timestamp, verify_until: Timestamp) -> KeyInfo {
        KeyInfo {
            retired_at: Some(self.retired_at.unwrap_or(at)),
            verify_until: Some(verify_until),
            ..self.clone()
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
    material: Arc<Material>,
    /// The sealed blob the material was opened from (empty for a key made in memory): a reload
    /// that reads the same blob for the same key reuses the material instead of opening it again.
    sealed: Vec<u8>,
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
        match self.material.as_ref() {
            Material::Hmac { mac, .. } => Some(mac),
            Material::Ed25519(_) => None,
        }
    }

    /// The raw HMAC secret, for HS256 keys.
    #[allow(dead_code)] // used by the token module
    pub(crate) fn hmac_secret(&self) -> Option<&[u8]> {
        match self.material.as_ref() {
            Material::Hmac { secret, .. } => Some(secret.expose().as_slice()),
            Material::Ed25519(_) => None,
        }
    }

    /// The Ed25519 signing key, for EdDSA keys.
    #[allow(dead_code)] // used by the token module
    pub(crate) fn ed25519(&self) -> Option<&ed25519_dalek::SigningKey> {
        match self.material.as_ref() {
            Material::Ed25519(k) => Some(k),
            Material::Hmac { .. } => None,
        }
    }

    /// Whether this key is pinned to `alg` and holds exactly `material` (compared in constant
    /// time).
    fn holds(&self, alg: KeyAlgorithm, material: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.info.algorithm == alg
            && match self.material.as_ref() {
                Material::Hmac { secret, .. } => {
                    bool::from(secret.expose().as_slice().ct_eq(material))
                }
                Material::Ed25519(k) => bool::from(k.to_bytes().as_slice().ct_eq(material)),
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
            origin: KeyOrigin::Generated,
            public_key,
        };
        Ok(Key {
            info,
            material: Arc::new(material),
            sealed: Vec::new(),
        })
    }

    /// The key stored as `record`. When `known` (the same id in the previous snapshot) was
    /// opened from the very blob `record` holds, for the same purpose and algorithm (all three
    /// are bound into the seal), its material is reused: opening the blob again under the same
    /// master key would give the same bytes. Anything else is opened afresh. The description
    /// (retirement, origin, ...) always comes from `record`.
    fn unseal(
        master: &MasterKey,
        record: &KeyRecord,
        known: Option<&Key>,
    ) -> Result<Key, KeyError> {
        let info = KeyInfo {
            id: record.id.clone(),
            purpose: record.purpose,
            algorithm: record.algorithm,
            created_at: record.created_at,
            retired_at: record.retired_at,
            verify_until: record.verify_until,
            origin: record.origin,
            public_key: record.public_key.clone(),
        };
        if let Some(known) = known.filter(|k| {
            !k.sealed.is_empty()
                && k.sealed == record.sealed
                && k.info.purpose == record.purpose
                && k.info.algorithm == record.algorithm
        }) {
            return Ok(Key {
                info,
                material: known.material.clone(),
                sealed: known.sealed.clone(),
            });
        }
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
        Ok(Key {
            info,
            material: Arc::new(material),
            sealed: record.sealed.clone(),
        })
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
        // One load serves every purpose that already has its key (every start but the first);
        // a purpose that needs a write reloads after it. A set that went stale meanwhile only
        // costs a lost compare-and-swap and a reload: every write below is conditional.
        let mut set = None;
        for purpose in KeyPurpose::ALL {
            let ensured = self.ensure_purpose(purpose, set).await;
            set = Some(ensured.map_err(|e| KeyError::Bootstrap {
                purpose,
                source: Box::new(e),
            })?);
        }
        Ok(())
    }

    /// Ensures `purpose`'s active key, deciding first on `loaded` (a set from this bootstrap)
    /// when given; returns the newest set it saw.
    async fn ensure_purpose(
        &self,
        purpose: KeyPurpose,
        mut loaded: Option<Arc<KeySet>>,
    ) -> Result<Arc<KeySet>, KeyError> {
        let wanted = self.inner.policy.algorithm_for(purpose);
        for _ in 0..CAS_ATTEMPTS {
            let set = match loaded.take() {
                Some(set) => set,
                None => self.reload_set().await?,
            };
            match set.active.get(&purpose) {
                Some(key) if key.info.algorithm == wanted => return Ok(set),
                // Replacing an operator key is the operator-key policy's decision
                // (`reconcile_operator_key`, run by the server at start), never a side effect
                // of bootstrap: an admin command run with another `access_alg` must not
                // withdraw the deployment's shared secret for good.
                Some(key) if key.info.origin == KeyOrigin::Operator => return Ok(set),
                Some(key) => {
                    tracing::info!(
                        purpose = purpose.as_str(),
                        from = key.info.algorithm.as_str(),
                        to = wanted.as_str(),
                        "configured algorithm changed; rotating the active key"
                    );
                    let record = self.generate(purpose, wanted)?;
                    self.replace_active(record, &key.info).await?;
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
        }
        let set = self.reload_set().await?;
        match set.active.get(&purpose) {
            Some(_) => Ok(set),
            None => Err(KeyError::NoActiveKey(purpose)),
        }
    }

    /// Retires the active key of `purpose` (it keeps verifying for
    /// [`KeyPolicy::retention_for`] the purpose) and makes a new generated one active, atomically
    /// in the store.
    ///
    /// # Errors
    /// [`KeyError::OperatorManaged`] when the active key is operator-supplied (replace it in the
    /// configuration, or end it with [`KeyRing::retire`]); [`KeyError::Store`] when the store
    /// fails, [`KeyError::Contended`] when other nodes kept changing the key; nothing changes
    /// then.
    pub async fn rotate(&self, purpose: KeyPurpose) -> Result<KeyInfo, KeyError> {
        let alg = self.inner.policy.algorithm_for(purpose);
        for _ in 0..CAS_ATTEMPTS {
            let set = self.reload_set().await?;
            let active = set
                .active
                .get(&purpose)
                .ok_or(KeyError::NoActiveKey(purpose))?;
            if active.info.origin == KeyOrigin::Operator {
                return Err(KeyError::OperatorManaged(purpose));
            }
            let record = self.generate(purpose, alg)?;
            if let Some((key, _)) = self.replace_active(record, &active.info).await? {
                return Ok(key);
            }
        }
        Err(KeyError::Contended(purpose))
    }

    /// Brings the active key of `purpose` in line with the operator's configuration: `configured`
    /// is the material the operator supplies for it (with its algorithm), or `None`. Run at
    /// every start of a server, after [`KeyRing::ensure_active`] (docs/DESIGN.md §4.5):
    /// - the configured material is the active key: nothing (a key adopted before origins were
    ///   recorded is recorded as an operator key now);
    /// - it was retired before — replaced, withdrawn or ended by [`KeyRing::retire`] — in any
    ///   purpose's fingerprint record or among the stored keys: refused, and nothing changes, so
    ///   a node started with an old configuration never flips the deployment back;
    /// - it is new: it becomes the active key, the previous one retires with
    ///   [`KeyPolicy::retention_for`] the purpose (for access keys the short bound);
    /// - none is configured but the active key is an operator key: a generated key of the
    ///   policy's algorithm replaces it, which retires the same way (withdrawal).
    ///
    /// Every change is a compare-and-swap on the active key this node saw, so nodes starting at
    /// the same time with the same configuration make one change between them.
    ///
    /// # Errors
    /// [`KeyError::OperatorKeyRetired`] (the server must refuse to start);
    /// [`KeyError::Malformed`] for material of the wrong shape (an HS256 secret under 32
    /// bytes); [`KeyError::NoActiveKey`] before [`KeyRing::ensure_active`];
    /// [`KeyError::Contended`]; [`KeyError::Store`].
    pub async fn reconcile_operator_key(
        &self,
        purpose: KeyPurpose,
        configured: Option<(KeyAlgorithm, &Secret<Vec<u8>>)>,
    ) -> Result<OperatorKeyChange, KeyError> {
        for _ in 0..CAS_ATTEMPTS {
            let set = self.reload_set().await?;
            let active = set
                .active
                .get(&purpose)
                .ok_or(KeyError::NoActiveKey(purpose))?;
            let Some((alg, material)) = configured else {
                if active.info.origin != KeyOrigin::Operator {
                    return Ok(OperatorKeyChange::Unchanged);
                }
                let record = self.generate(purpose, self.inner.policy.algorithm_for(purpose))?;
                if let Some((key, retired)) = self.replace_active(record, &active.info).await? {
                    tracing::warn!(
                        purpose = purpose.as_str(),
                        withdrawn = %retired.id,
                        key_id = %key.id,
                        verify_until = %retired.verify_until.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        "operator-supplied key material is no longer configured; rotated to a generated key (the withdrawn material is never used again)"
                    );
                    return Ok(OperatorKeyChange::Withdrawn { key, retired });
                }
                continue;
            };
            let material = material.expose().as_slice();
            let fingerprint = Fingerprint::of(&self.inner.master, purpose, alg, material);
            if active.holds(alg, material) {
                if active.info.origin == KeyOrigin::Operator {
                    return Ok(OperatorKeyChange::Unchanged);
                }
                if self
                    .inner
                    .store
                    .record_operator_key(&active.info.id, &fingerprint)
                    .await?
                {
                    tracing::info!(
                        purpose = purpose.as_str(),
                        key_id = %active.info.id,
                        "the active key holds the configured material (adopted before key origins were recorded); recorded it as operator-supplied"
                    );
                    return Ok(OperatorKeyChange::Recorded {
                        key: active.info.id.clone(),
                    });
                }
                // Retired (or recorded) by another node meanwhile: decide again.
                continue;
            }
            if let Some(key_id) = self.inner.store.retired_operator_key(&fingerprint).await? {
                return Err(KeyError::OperatorKeyRetired {
                    purpose,
                    key_id: Some(key_id),
                });
            }
            // Keys retired before fingerprints were recorded (or whose record was lost) are
            // still recognised by their material while their rows are kept.
            if let Some(old) = set
                .by_id
                .values()
                .find(|k| k.info.purpose == purpose && k.holds(alg, material))
            {
                return Err(KeyError::OperatorKeyRetired {
                    purpose,
                    key_id: Some(old.info.id.clone()),
                });
            }
            let record = self.record_with(
                purpose,
                alg,
                &Secret::new(material.to_vec()),
                Some(fingerprint),
            )?;
            if let Some((key, retired)) = self.replace_active(record, &active.info).await? {
                tracing::info!(
                    purpose = purpose.as_str(),
                    key_id = %key.id,
                    replaced = %retired.id,
                    verify_until = %retired.verify_until.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    "adopted operator-supplied key material"
                );
                return Ok(OperatorKeyChange::Adopted { key, retired });
            }
        }
        Err(KeyError::Contended(purpose))
    }

    /// Ends the key `id` at once (docs/DESIGN.md §4.6): it verifies nothing from now on. If it
    /// is the active key of its purpose, a new generated key becomes active in the same atomic
    /// step. A retired key that still verifies stops now; one that has already stopped is left
    /// as it is (`ended: false`). An operator key's fingerprint is recorded as retired, so its
    /// material is never adopted again. This node's snapshot is reloaded before returning;
    /// other nodes stop using the key when their snapshot is next reloaded, within
    /// [`KeyPolicy::cache_ttl`] of their own clocks (at once when they first meet a credential
    /// signed by the replacement).
    ///
    /// # Errors
    /// [`KeyError::NoSuchKey`]; [`KeyError::Store`]; nothing changes then.
    pub async fn retire(&self, id: &KeyId) -> Result<KeyRetirement, KeyError> {
        let set = self.reload_set().await?;
        let key = set
            .by_id
            .get(id)
            .ok_or_else(|| KeyError::NoSuchKey(id.clone()))?
            .clone();
        let purpose = key.info.purpose;
        let replacement = self.generate(purpose, self.inner.policy.algorithm_for(purpose))?;
        let now = self.inner.clock.now();
        let ending = self
            .inner
            .store
            .end_key(id, purpose, now, &replacement)
            .await?;
        let set = self.reload_set().await?;
        let (ended, replacement) = match ending {
            KeyEnding::EndedActive => {
                let new = set
                    .by_id
                    .get(&replacement.id)
                    .map(|k| k.info.clone())
                    .ok_or(KeyError::NoActiveKey(purpose))?;
                (true, Some(new))
            }
            KeyEnding::EndedRetired => (true, None),
            KeyEnding::AlreadyEnded => (false, None),
            KeyEnding::NotFound => return Err(KeyError::NoSuchKey(id.clone())),
        };
        let info = match set.by_id.get(id) {
            Some(k) => k.info.clone(),
            None => key.info.retired(now, now),
        };
        if ended {
            tracing::warn!(
                purpose = purpose.as_str(),
                key_id = %id,
                origin = key.info.origin.as_str(),
                replacement = replacement.as_ref().map(|k| k.id.as_str()),
                "key ended at once"
            );
        }
        Ok(KeyRetirement {
            key: info,
            ended,
            replacement,
        })
    }

    /// Makes `record` the active key of its purpose if `expected` is still the active one,
    /// retiring `expected` for [`KeyPolicy::retention_for`] the purpose, in one atomic step.
    /// Returns the new key and the retired one as they are now, or `None` when another change
    /// came first (nothing was changed).
    async fn replace_active(
        &self,
        record: KeyRecord,
        expected: &KeyInfo,
    ) -> Result<Option<(KeyInfo, KeyInfo)>, KeyError> {
        let purpose = record.purpose;
        let now = self.inner.clock.now();
        let verify_until = now.saturating_add(self.inner.policy.retention_for(purpose));
        if !self
            .inner
            .store
            .rotate_key(&record, now, verify_until, Some(&expected.id))
            .await?
        {
            return Ok(None);
        }
        let set = self.reload_set().await?;
        // Just stored: a reload that misses it found another active key committed after ours.
        let key = set
            .by_id
            .get(&record.id)
            .ok_or(KeyError::NoActiveKey(purpose))?;
        Ok(Some((
            key.info.clone(),
            expected.retired(now, verify_until),
        )))
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

    /// The key named `id` if the current snapshot holds it as a key of `purpose` that has
    /// stopped verifying at `now`. It never verifies a credential: the token verifier uses it
    /// only to tell an expired token (`token_expired`) from any other refusal, as it did while
    /// the key verified (docs/DESIGN.md §3.2). Never reloads.
    pub(crate) async fn ended(&self, id: &KeyId, purpose: KeyPurpose) -> Option<Arc<Key>> {
        let now = self.inner.clock.now();
        let set = self.current().await;
        set.by_id
            .get(id)
            .filter(|k| k.info.purpose == purpose && k.info.check_usable(now).is_err())
            .cloned()
    }

    /// Every key the store holds (active, and retired until garbage-collected), fresh from the
    /// store.
    ///
    /// # Errors
    /// [`KeyError::Store`] or an unsealing error.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let set = self.reload_set().await?;
        let mut keys: Vec<KeyInfo> = set.by_id.values().map(|k| k.info.clone()).collect();
        // The store's order (creation time, then id): keys made in the same millisecond (a
        // bootstrap key and the operator key that replaces it at one start) list the same way
        // every time, not in the map's order.
        keys.sort_by(|a, b| {
            (a.purpose, a.created_at, &a.id).cmp(&(b.purpose, b.created_at, &b.id))
        });
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
        let previous = self.snapshot();
        let mut set = KeySet {
            loaded_at: self.inner.clock.now(),
            ..KeySet::default()
        };
        for record in &records {
            let known = previous.by_id.get(&record.id).map(Arc::as_ref);
            let key = match Key::unseal(&self.inner.master, record, known) {
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
        self.record_with(purpose, alg, &material, None)
    }

    /// A new active key's record: generated material without a fingerprint, operator material
    /// with its fingerprint.
    fn record_with(
        &self,
        purpose: KeyPurpose,
        alg: KeyAlgorithm,
        material: &Secret<Vec<u8>>,
        fingerprint: Option<Fingerprint>,
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
            origin: if fingerprint.is_some() {
                KeyOrigin::Operator
            } else {
                KeyOrigin::Generated
            },
            fingerprint,
        })
    }
}
