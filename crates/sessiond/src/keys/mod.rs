//! Signing keys: purposes, algorithms, sealing at rest, and the in-process key ring.
//!
//! A key has one purpose (`cookie`, `access`, `refresh`) and one algorithm it is pinned to. At
//! most one key per purpose is active (signs); rotation retires it, and a retired key keeps
//! verifying until its `verify_until` (retired_at + retention), after which it is refused and
//! garbage-collected. Key material is stored only sealed under the [`MasterKey`]
//! (XChaCha20-Poly1305, with the key's id, purpose and algorithm as associated data so a sealed
//! blob cannot be moved to another row).
//!
//! A key is either generated here or supplied by the operator (a shared HS256 secret that
//! resource servers also hold, docs/DESIGN.md §4.5). An operator key is recognised by a
//! [`fingerprint`] keyed under the master key, never by its material or a plain hash of it, and
//! once retired its material is never made active again.

mod fingerprint;
mod master;
mod ring;
mod seal;

use std::fmt;

pub use fingerprint::Fingerprint;
pub use master::{MasterKey, MasterKeyError};
pub use ring::{Key, KeyInfo, KeyPolicy, KeyRetirement, KeyRing, OperatorKeyChange};

use crate::clock::Timestamp;
use crate::id::KeyId;
use crate::store::StoreError;

/// What a key signs. A key never verifies anything of another purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// MACs of session cookies (HMAC-SHA256).
    Cookie,
    /// Signatures of access tokens (EdDSA by default, HS256 as an option).
    Access,
    /// Signatures of refresh tokens and derivation of successor secrets (HMAC-SHA256).
    Refresh,
}

impl KeyPurpose {
    /// Every purpose, in a fixed order.
    pub const ALL: [KeyPurpose; 3] = [KeyPurpose::Cookie, KeyPurpose::Access, KeyPurpose::Refresh];

    /// The stored and displayed name: `cookie`, `access`, `refresh`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Cookie => "cookie",
            KeyPurpose::Access => "access",
            KeyPurpose::Refresh => "refresh",
        }
    }

    /// Parses a stored or typed name.
    ///
    /// # Errors
    /// [`KeyError::UnknownPurpose`].
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        match text {
            "cookie" => Ok(KeyPurpose::Cookie),
            "access" => Ok(KeyPurpose::Access),
            "refresh" => Ok(KeyPurpose::Refresh),
            _ => Err(KeyError::UnknownPurpose),
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one algorithm a key is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// HMAC-SHA256 with a 32-byte secret (JWS `HS256`).
    Hs256,
    /// Ed25519 (JWS `EdDSA`).
    EdDsa,
}

impl KeyAlgorithm {
    /// The JWS `alg` name, also the stored form: `HS256`, `EdDSA`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Hs256 => "HS256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses a JWS `alg` name, case-sensitively.
    ///
    /// # Errors
    /// [`KeyError::UnknownAlgorithm`].
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        match text {
            "HS256" => Ok(KeyAlgorithm::Hs256),
            "EdDSA" => Ok(KeyAlgorithm::EdDsa),
            _ => Err(KeyError::UnknownAlgorithm),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Made by sessiond from its random source.
    Generated,
    /// Supplied by the operator (`token_sessions.hs256_secret`): once retired, never active again.
    Operator,
}

impl KeyOrigin {
    /// The stored and displayed name: `generated`, `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::Generated => "generated",
            KeyOrigin::Operator => "operator",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] for a name we do not know.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        match text {
            "generated" => Ok(KeyOrigin::Generated),
            "operator" => Ok(KeyOrigin::Operator),
            _ => Err(KeyError::Malformed),
        }
    }
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signing key as a backend stores it: metadata in the clear, material sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// What the key signs.
    pub purpose: KeyPurpose,
    /// The algorithm the key is pinned to.
    pub algorithm: KeyAlgorithm,
    /// When the key was made.
    pub created_at: Timestamp,
    /// When the key stopped signing; `None` while it is the active key.
    pub retired_at: Option<Timestamp>,
    /// Until when a retired key still verifies (exclusive); `None` while active.
    pub verify_until: Option<Timestamp>,
    /// The public key for asymmetric algorithms (raw 32 bytes for Ed25519); not a secret.
    pub public_key: Option<Vec<u8>>,
    /// The private material sealed under the master key (version byte, nonce, ciphertext).
    pub sealed: Vec<u8>,
    /// Where the material came from.
    pub origin: KeyOrigin,
    /// For operator keys (and only for them): the material's [`Fingerprint`], keyed under the
    /// master key, so a retired operator secret is recognised after its row is collected.
    pub fingerprint: Option<Fingerprint>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("purpose", &self.purpose)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("verify_until", &self.verify_until)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why a key may not verify a credential: a verdict about the credential, never an outage. The
/// key ring's lookups return it *inside* their outage result
/// (`Result<Result<Arc<Key>, KeyRefusal>, KeyError>`), so `?` on the outer result sends an
/// outage to 503 and the compiler keeps the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRefusal {
    /// No key with this id is known (never existed, or garbage-collected).
    #[error("unknown key id")]
    UnknownKey,
    /// The key exists but is for another purpose than the one asked for.
    #[error("key is for another purpose")]
    WrongPurpose,
    /// The key was retired and its retention window has passed.
    #[error("key is retired past its retention window")]
    Retired,
}

impl KeyRefusal {
    /// A stable reason code for audit records and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            KeyRefusal::Retired => "key_retired",
            KeyRefusal::UnknownKey | KeyRefusal::WrongPurpose => "unknown_key",
        }
    }
}

/// Failures of the key ring: it could not be consulted or could not provide a key. Each one is
/// an outage for a caller that checks a credential (503), never a verdict about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// There is no active key for the purpose (the ring was not bootstrapped).
    #[error("no active {0} key")]
    NoActiveKey(KeyPurpose),
    /// Sealed key material did not open under the master key: a wrong master key, or tampering.
    #[error("key material does not decrypt under the master key (wrong master key?)")]
    Unseal,
    /// Stored key material has the wrong shape for its algorithm.
    #[error("stored key material is malformed")]
    Malformed,
    /// A stored purpose name is not one we know.
    #[error("unknown key purpose")]
    UnknownPurpose,
    /// A stored algorithm name is not one we know.
    #[error("unknown key algorithm")]
    UnknownAlgorithm,
    /// An active key for the purpose could not be ensured at start-up. The server must not start.
    #[error("cannot ensure an active {purpose} key")]
    Bootstrap {
        /// The purpose that has no usable active key.
        purpose: KeyPurpose,
        /// Why.
        #[source]
        source: Box<KeyError>,
    },
    /// The configured operator material was retired before (replaced, withdrawn, or ended by
    /// `keys retire`): it is never made active again, so a node with an old configuration cannot
    /// flip a deployment back to it. Configure new material. Never names the material.
    #[error("the configured {purpose} key material was retired{}; it is never used again: configure new material", key_id.as_ref().map(|k| format!(" (key {k})")).unwrap_or_default())]
    OperatorKeyRetired {
        /// The purpose it was configured for.
        purpose: KeyPurpose,
        /// The retired key that held it, while its row is kept.
        key_id: Option<KeyId>,
    },
    /// The active key of the purpose is operator-supplied: it is replaced by configuring new
    /// material (or ended with [`KeyRing::retire`]), not by a rotation to generated material that
    /// the operator's resource servers would not hold.
    #[error("the active {0} key is operator-supplied; replace it in the configuration, or end it with a retire")]
    OperatorManaged(KeyPurpose),
    /// No key with this id is stored (never existed, or collected).
    #[error("no key {0}")]
    NoSuchKey(KeyId),
    /// The active key of the purpose kept changing under a compare-and-swap (other nodes
    /// rotating at the same time); nothing was changed by this call. Try again.
    #[error("the active {0} key kept changing; try again")]
    Contended(KeyPurpose),
    /// The key store failed.
    #[error("key store failed")]
    Store(#[from] StoreError),
}
