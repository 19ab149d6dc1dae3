//! Signing keys: purposes, algorithms, sealing at rest, and the in-process key ring.
//!
//! A key has one purpose (`cookie`, `access`, `refresh`) and one algorithm it is pinned to. At
//! most one key per purpose is active (signs); rotation retires it, and a retired key keeps
//! verifying until its `verify_until` (retired_at + retention), after which it is refused and
//! garbage-collected. Key material is stored only sealed under the [`MasterKey`]
//! (XChaCha20-Poly1305, with the key's id, purpose and algorithm as associated data so a sealed
//! blob cannot be moved to another row).

mod master;
mod ring;
mod seal;

use std::fmt;

pub use master::{MasterKey, MasterKeyError};
pub use ring::{Key, KeyInfo, KeyPolicy, KeyRing};

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
    /// The key store failed.
    #[error("key store failed")]
    Store(#[from] StoreError),
}
