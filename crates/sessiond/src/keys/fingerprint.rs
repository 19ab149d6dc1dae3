//! Fingerprints of operator-supplied key material (docs/DESIGN.md §4.5).
//!
//! ```text
//! K           = HKDF-Expand(master key, "sessiond/key-fingerprint-key/v1", 32)
//!             = HMAC-SHA256(master key, "sessiond/key-fingerprint-key/v1" | 0x01)
//! fingerprint = HMAC-SHA256(K, "sessiond/key-fingerprint/v1\0" | purpose | 0 | algorithm | 0 | material)
//! ```
//!
//! Keyed, never a bare hash: an operator secret may be a typed passphrase, and a plain SHA-256
//! of it in the database would let anyone holding a copy of the database test guesses offline.
//! Without the master key the fingerprint says nothing about the material. The master key is
//! uniformly random, so it serves as HKDF's pseudorandom key directly (RFC 5869 §3.3), and the
//! derived key is used for nothing else than fingerprints. Purpose and algorithm are part of
//! the input, so the same secret configured for another purpose is another fingerprint.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{KeyAlgorithm, KeyPurpose, MasterKey};

const KEY_INFO: &[u8] = b"sessiond/key-fingerprint-key/v1";
const LABEL: &[u8] = b"sessiond/key-fingerprint/v1\0";

/// A keyed fingerprint of key material: 32 bytes, comparable, stored in the clear. It identifies
/// material only to someone holding the master key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `material` for `purpose` and `alg` under `master`.
    pub fn of(
        master: &MasterKey,
        purpose: KeyPurpose,
        alg: KeyAlgorithm,
        material: &[u8],
    ) -> Fingerprint {
        let mut mac = hmac_sha256(master.bytes());
        mac.update(KEY_INFO);
        mac.update(&[1]);
        let key = mac.finalize().into_bytes();
        let mut mac = hmac_sha256(&key);
        mac.update(LABEL);
        mac.update(purpose.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(alg.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(material);
        Fingerprint(mac.finalize().into_bytes().into())
    }

    /// A stored fingerprint.
    pub fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The 32 bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in self.0.iter().take(4) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::*;

    /// The construction, recomputed from the RFC 5869 definition with a second implementation
    /// of HMAC's inputs (one `update` per part would hide a missing separator).
    #[test]
    fn is_hkdf_keyed_hmac_and_never_a_plain_hash() {
        let master = MasterKey::from_bytes([9u8; 32]);
        let secret = b"correct horse battery staple, long enough";
        let fp = Fingerprint::of(&master, KeyPurpose::Access, KeyAlgorithm::Hs256, secret);

        let mut prk = <Hmac<Sha256> as Mac>::new_from_slice(&[9u8; 32]).unwrap();
        prk.update(b"sessiond/key-fingerprint-key/v1\x01");
        let key = prk.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"sessiond/key-fingerprint/v1\0access\0HS256\0");
        mac.update(secret);
        assert_eq!(
            fp.as_bytes().as_slice(),
            mac.finalize().into_bytes().as_slice()
        );

        assert_ne!(
            fp.as_bytes().as_slice(),
            sha2::Sha256::digest(secret).as_slice()
        );
        assert!(!fp
            .as_bytes()
            .windows(8)
            .any(|w| secret.windows(8).any(|s| s == w)));
        let other_master = MasterKey::from_bytes([8u8; 32]);
        assert_ne!(
            fp,
            Fingerprint::of(
                &other_master,
                KeyPurpose::Access,
                KeyAlgorithm::Hs256,
                secret
            )
        );
        assert_ne!(
            fp,
            Fingerprint::of(&master, KeyPurpose::Cookie, KeyAlgorithm::Hs256, secret)
        );
        assert_eq!(
            format!("{fp:?}").chars().count(),
            22,
            "Debug shows a short prefix only"
        );
    }
}
