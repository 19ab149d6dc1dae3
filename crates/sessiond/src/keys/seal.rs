//! Sealing key material at rest: XChaCha20-Poly1305 under the master key.
//!
//! Layout of a sealed blob: `0x01 || nonce (24 bytes) || ciphertext+tag`. The associated data
//! binds the blob to its key id, purpose and algorithm, so copying a sealed blob into another
//! row (say, to make a cookie key verify access tokens) fails to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{KeyAlgorithm, KeyError, KeyPurpose, MasterKey};
use crate::id::KeyId;
use crate::random::{self, RandomSource};
use crate::secret::Secret;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

fn associated_data(id: &KeyId, purpose: KeyPurpose, alg: KeyAlgorithm) -> Vec<u8> {
    let mut ad = Vec::with_capacity(64);
    ad.extend_from_slice(b"sessiond/key/v1\0");
    ad.extend_from_slice(id.as_str().as_bytes());
    ad.push(0);
    ad.extend_from_slice(purpose.as_str().as_bytes());
    ad.push(0);
    ad.extend_from_slice(alg.as_str().as_bytes());
    ad
}

pub(crate) fn seal(
    master: &MasterKey,
    rng: &dyn RandomSource,
    id: &KeyId,
    purpose: KeyPurpose,
    alg: KeyAlgorithm,
    material: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let cipher = XChaCha20Poly1305::new(master.bytes().into());
    let nonce: [u8; NONCE_LEN] = random::bytes(rng);
    let ad = associated_data(id, purpose, alg);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: material,
                aad: &ad,
            },
        )
        // Encryption only fails for inputs beyond the cipher's length limit (256 GiB).
        .map_err(|_| KeyError::Malformed)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

pub(crate) fn open(
    master: &MasterKey,
    id: &KeyId,
    purpose: KeyPurpose,
    alg: KeyAlgorithm,
    sealed: &[u8],
) -> Result<Secret<Vec<u8>>, KeyError> {
    let (version, rest) = sealed.split_first().ok_or(KeyError::Malformed)?;
    if *version != VERSION || rest.len() < NONCE_LEN {
        return Err(KeyError::Malformed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(master.bytes().into());
    let ad = associated_data(id, purpose, alg);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map(Secret::new)
        .map_err(|_| KeyError::Unseal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn seal_binds_material_to_its_row() {
        let master = MasterKey::generate(&OsRandom);
        let id = KeyId::generate(&OsRandom);
        let sealed = seal(
            &master,
            &OsRandom,
            &id,
            KeyPurpose::Cookie,
            KeyAlgorithm::Hs256,
            b"material",
        )
        .unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"material"));
        let opened = open(
            &master,
            &id,
            KeyPurpose::Cookie,
            KeyAlgorithm::Hs256,
            &sealed,
        )
        .unwrap();
        assert_eq!(opened.expose().as_slice(), b"material");

        let other_id = KeyId::generate(&OsRandom);
        for (id, purpose) in [(&other_id, KeyPurpose::Cookie), (&id, KeyPurpose::Access)] {
            let err = open(&master, id, purpose, KeyAlgorithm::Hs256, &sealed).unwrap_err();
            assert!(matches!(err, KeyError::Unseal));
        }
        let wrong_master = MasterKey::generate(&OsRandom);
        let err = open(
            &wrong_master,
            &id,
            KeyPurpose::Cookie,
            KeyAlgorithm::Hs256,
            &sealed,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::Unseal));
        let err = open(
            &master,
            &id,
            KeyPurpose::Cookie,
            KeyAlgorithm::Hs256,
            &sealed[..10],
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::Malformed));
    }
}
