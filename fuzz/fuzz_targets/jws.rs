//! The compact-JWS parser and header policy, then signature verification under fixed keys of
//! each algorithm we sign with: any input is refused with an error or verified, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::{KeyId, SeededRandom, Secret, Timestamp};

fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SeededRandom::new(1);
        [
            (KeyPurpose::Access, KeyAlgorithm::EdDsa, vec![7u8; 32]),
            (KeyPurpose::Access, KeyAlgorithm::Hs256, vec![9u8; 32]),
            (KeyPurpose::Refresh, KeyAlgorithm::Hs256, vec![5u8; 32]),
        ]
        .into_iter()
        .map(|(purpose, alg, material)| {
            Key::from_material(
                KeyId::generate(&rng),
                purpose,
                alg,
                Secret::new(material),
                Timestamp::from_unix_millis(0),
            )
            .expect("fixed key material is well-formed")
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(compact) = sessiond::jose::parse_compact(text) else {
        return;
    };
    let _ = (compact.typ(), compact.kid(), compact.alg(), compact.payload());
    for key in keys() {
        let _ = sessiond::jose::verify(key, &compact);
    }
});
