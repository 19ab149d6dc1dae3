//! Wycheproof's JWS and JWK vectors, the foreign-issuer verifier's external test suite
//! (docs/DESIGN.md §3.5), vendored in `tests/data/wycheproof/`. Every test case of
//! `json_web_signature_test.json` and `json_web_key_test.json` runs.
//!
//! **Foreign lane** (every case): the group's public JWK (or JWK Set; the private one when the
//! group has no public one) is loaded with [`TrustedIssuer::from_jwks_json`], and the token goes
//! through [`TrustedIssuer::verify_signature_only`]: `parse_compact`, key selection by `kid`, the
//! key's pinned algorithm, the signature. That is exactly the code `verify` runs before it looks
//! at claims, which Wycheproof tokens do not carry. `valid` cases must be accepted and `invalid`
//! ones rejected, except the [`NOT_APPLICABLE`] rows, which must be rejected.
//!
//! **Own-key lane** (the HS256 groups): a foreign issuer's HMAC key is never loaded, so the HS256
//! vectors (among them every base64 edge case) also run the way our own HS256 tokens are checked:
//! `Key::from_material` for the group's key, the key picked by the token's `kid` as the key ring
//! does, then `parse_compact` and `jose::verify`. Rows in [`OWN_NOT_APPLICABLE`] are defective
//! vectors or cases with no own-key counterpart, each with the outcome its row asserts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sessiond::jose;
use sessiond::jose::foreign::{JwksError, TrustedIssuer};
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::{KeyId, Secret, SeededRandom, Timestamp};

const JWS_FILE: &str = "json_web_signature_test.json";
const JWK_FILE: &str = "json_web_key_test.json";

/// Cases of the foreign lane that do not test what Wycheproof means them to test, and why. Every
/// one of them must still be rejected.
const NOT_APPLICABLE: &[(&str, &[u32], &str)] = &[
    (
        JWS_FILE,
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
        "hs256 group: HMAC key; a foreign JWK Set with a symmetric key is refused at load \
         (the group runs in the own-key lane)",
    ),
    (
        JWS_FILE,
        &[264, 265, 266, 267, 268, 269, 270, 271],
        "rs384/rs512 groups: RS384 and RS512 are not accepted from foreign issuers \
         (RS256, PS256, ES256, EdDSA only); such keys are skipped, leaving no usable key",
    ),
    (
        JWS_FILE,
        &[
            320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336,
            337, 338, 339, 340, 341, 342, 343, 344,
        ],
        "ps384/ps512 groups: PS384 and PS512 are not accepted from foreign issuers; such keys \
         are skipped, leaving no usable key",
    ),
    (
        JWS_FILE,
        &[346, 350],
        "rfc7520 Figure 20: the token is PS384 (RFC 7520 §4.2) while the group's JWK says \
         alg PS256; the key is pinned to PS256, and PS384 is not accepted anyway",
    ),
    (
        JWS_FILE,
        &[347, 351],
        "rfc7520 Figure 27: the JWK names alg ES521 (RFC 7520's spelling, not a registered JWS \
         algorithm), which contradicts the P-521 key: the set is refused (ES512 itself is \
         accepted: jose::foreign's es512 test)",
    ),
    (
        JWS_FILE,
        &[348, 352],
        "rfc7520 Figure 35: HMAC key, refused at load (runs in the own-key lane)",
    ),
    (
        JWS_FILE,
        &[
            357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373,
            374, 375, 376, 377,
        ],
        "base64 group: HMAC key, refused at load (runs in the own-key lane)",
    ),
    (
        JWK_FILE,
        &[2, 3, 4],
        "jws_keyset / jws_duplicate_kid: HMAC-only key sets, refused at load",
    ),
    (
        JWK_FILE,
        &[10, 11, 12, 13, 14, 15, 16, 17, 18],
        "HS256/HS384/HS512 key-length groups: HMAC keys, refused at load (the HS256 ones run \
         in the own-key lane)",
    ),
    (
        JWK_FILE,
        &[25, 26],
        "AES keys (kty oct): refused at load as symmetric keys",
    ),
];

/// Foreign-lane rejections that must happen for one specific reason.
const EXPECTED_REASONS: &[(&str, u32, &str)] = &[
    (JWS_FILE, 31, "jws_alg_mismatch"), // HS256 keyed with the EC key's bytes
    (JWS_FILE, 32, "jws_bad_signature"), // attacker key embedded as `jwk`, never used
    (JWS_FILE, 353, "NoUsableKeys"),    // use enc
    (JWS_FILE, 354, "NoUsableKeys"),
    (JWS_FILE, 355, "NoUsableKeys"), // key_ops without verify
    (JWS_FILE, 356, "NoUsableKeys"),
    (JWS_FILE, 379, "jws_bad_signature"), // ES256 signature of 66 bytes
    (JWS_FILE, 385, "jws_bad_signature"),
    (JWK_FILE, 1, "SymmetricKey"),
    (JWK_FILE, 6, "NoUsableKeys"),
    (JWK_FILE, 7, "WeakRsaKey"), // ROCA fingerprint
    (JWK_FILE, 8, "RsaModulusSize"),
    (JWK_FILE, 9, "RsaExponent"),
    (JWK_FILE, 19, "AlgorithmContradictsKey"),
    (JWK_FILE, 20, "AlgorithmContradictsKey"),
    (JWK_FILE, 21, "NoUsableKeys"),
    (JWK_FILE, 22, "InvalidKey"),
    (JWK_FILE, 23, "AlgorithmContradictsKey"),
    (JWK_FILE, 24, "AlgorithmContradictsKey"),
];

/// Own-key-lane cases that do not apply as written (defective vectors, mostly), and the outcome
/// asserted for each.
const OWN_NOT_APPLICABLE: &[(&str, u32, Expect, &str)] = &[
    (
        JWS_FILE,
        367,
        Expect::Accepted,
        "invalidBase64Padding is marked invalid but is byte-identical to tcId 357 (valid): the \
         padding it is named for is not in the vector; it is accepted like 357",
    ),
    (
        JWS_FILE,
        370,
        Expect::Accepted,
        "invalidBase64PaddingInPayload: same defect, byte-identical to tcId 357",
    ),
    (
        JWS_FILE,
        372,
        Expect::Rejected("jws_invalid_character"),
        "InvalidCharacterInsertedInHeader is marked valid but has a '?' in the header: not \
         base64url (RFC 7515 §2), so it is refused",
    ),
    (
        JWS_FILE,
        373,
        Expect::Rejected("jws_invalid_character"),
        "InvalidCharacterInsertedInPayload: same, a '?' in the payload",
    ),
    (
        JWK_FILE,
        4,
        Expect::NotRun,
        "jws_duplicate_kid: a key ring cannot hold two keys with one id (the key id is the \
         store's primary key), so the case has no own-key counterpart; the foreign lane refuses \
         such sets",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Rejected(&'static str),
    NotRun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Rejected(String),
}

#[derive(Default, Debug)]
struct Tally {
    accepted_valid: usize,
    rejected_invalid: usize,
    not_applicable: usize,
    reasons: BTreeMap<String, usize>,
    mismatches: Vec<String>,
}

fn vectors(file: &str) -> Value {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/"
    ));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Wycheproof vectors missing at {} ({e}): they are vendored in the repository \
             (crates/sessiond/tests/data/wycheproof/, see its README.md)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// Every (group, test) of a file, checking the file's own count.
fn cases(doc: &Value) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            out.push((group, test));
        }
    }
    assert_eq!(
        out.len() as u64,
        doc["numberOfTests"].as_u64().unwrap(),
        "numberOfTests"
    );
    out
}

/// The verification key material of a group as a JWK Set document.
fn verification_set(group: &Value) -> Value {
    let keys = group.get("public").unwrap_or(&group["private"]);
    if keys.get("keys").is_some() {
        keys.clone()
    } else {
        json!({ "keys": [keys] })
    }
}

fn tc_id(test: &Value) -> u32 {
    u32::try_from(test["tcId"].as_u64().unwrap()).unwrap()
}

fn variant_name(e: &JwksError) -> String {
    let debug = format!("{e:?}");
    debug.split([' ', '(', '{']).next().unwrap().to_owned()
}

fn foreign_outcome(group: &Value, jws: &str) -> Outcome {
    let set = verification_set(group).to_string();
    let issuer = match TrustedIssuer::from_jwks_json("https://wycheproof.example", "sessiond", &set)
    {
        Ok(issuer) => issuer,
        Err(e) => return Outcome::Rejected(variant_name(&e)),
    };
    match issuer.verify_signature_only(jws) {
        Ok(_) => Outcome::Accepted,
        Err(e) => Outcome::Rejected(e.reason().to_owned()),
    }
}

fn is_not_applicable(file: &str, id: u32) -> bool {
    NOT_APPLICABLE
        .iter()
        .any(|(f, ids, _)| *f == file && ids.contains(&id))
}

fn run_foreign_lane(file: &str, doc: &Value, tally: &mut Tally) {
    for (group, test) in cases(doc) {
        let id = tc_id(test);
        let valid = test["result"] == "valid";
        let outcome = foreign_outcome(group, test["jws"].as_str().unwrap());
        let label = format!(
            "{file} tcId {id} ({} / {})",
            group["comment"], test["comment"]
        );
        if let Some((_, _, reason)) = EXPECTED_REASONS
            .iter()
            .find(|(f, i, _)| *f == file && *i == id)
        {
            if outcome != Outcome::Rejected((*reason).to_owned()) {
                tally
                    .mismatches
                    .push(format!("{label}: expected {reason}, got {outcome:?}"));
            }
        }
        match (&outcome, is_not_applicable(file, id), valid) {
            (Outcome::Rejected(_), true, _) => tally.not_applicable += 1,
            (Outcome::Accepted, true, _) => {
                tally
                    .mismatches
                    .push(format!("{label}: not applicable but accepted"));
            }
            (Outcome::Accepted, false, true) => tally.accepted_valid += 1,
            (Outcome::Rejected(reason), false, false) => {
                tally.rejected_invalid += 1;
                *tally.reasons.entry(reason.clone()).or_default() += 1;
            }
            (Outcome::Rejected(reason), false, true) => {
                tally
                    .mismatches
                    .push(format!("{label}: valid but rejected ({reason})"));
            }
            (Outcome::Accepted, false, false) => {
                tally
                    .mismatches
                    .push(format!("{label}: invalid but accepted"));
            }
        }
    }
}

/// The own-key lane: the group's HS256 keys as our keys, picked by `kid` like the key ring does.
fn own_outcome(group: &Value, jws: &str) -> Outcome {
    let set = verification_set(group);
    let compact = match jose::parse_compact(jws) {
        Ok(compact) => compact,
        Err(e) => return Outcome::Rejected(e.reason().to_owned()),
    };
    let Some(jwk) = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|jwk| compact.kid().is_some() && jwk["kid"].as_str() == compact.kid())
    else {
        return Outcome::Rejected("unknown_kid".to_owned());
    };
    let secret = URL_SAFE_NO_PAD.decode(jwk["k"].as_str().unwrap()).unwrap();
    let key = match Key::from_material(
        KeyId::generate(&SeededRandom::new(7)),
        KeyPurpose::Access,
        KeyAlgorithm::Hs256,
        Secret::new(secret),
        Timestamp::EPOCH,
    ) {
        Ok(key) => key,
        Err(_) => return Outcome::Rejected("key_refused".to_owned()),
    };
    match jose::verify(&key, &compact) {
        Ok(()) => Outcome::Accepted,
        Err(e) => Outcome::Rejected(e.reason().to_owned()),
    }
}

/// Groups whose keys are all HS256 `oct` keys.
fn is_hs256_group(group: &Value) -> bool {
    let set = verification_set(group);
    let keys = set["keys"].as_array().unwrap();
    !keys.is_empty()
        && keys
            .iter()
            .all(|k| k["kty"] == "oct" && k["alg"] == "HS256")
}

fn run_own_lane(file: &str, doc: &Value, tally: &mut Tally) {
    for (group, test) in cases(doc) {
        if !is_hs256_group(group) {
            continue;
        }
        let id = tc_id(test);
        let valid = test["result"] == "valid";
        let defect = OWN_NOT_APPLICABLE
            .iter()
            .find(|(f, i, _, _)| *f == file && *i == id);
        if matches!(defect, Some((_, _, Expect::NotRun, _))) {
            tally.not_applicable += 1;
            continue;
        }
        let outcome = own_outcome(group, test["jws"].as_str().unwrap());
        let label = format!(
            "{file} tcId {id} ({} / {})",
            group["comment"], test["comment"]
        );
        match (defect, &outcome, valid) {
            (Some((_, _, expect, _)), _, _) => {
                let as_expected = match expect {
                    Expect::Accepted => outcome == Outcome::Accepted,
                    Expect::Rejected(reason) => outcome == Outcome::Rejected((*reason).to_owned()),
                    Expect::NotRun => false,
                };
                if as_expected {
                    tally.not_applicable += 1;
                } else {
                    tally
                        .mismatches
                        .push(format!("{label}: expected {expect:?}, got {outcome:?}"));
                }
            }
            (None, Outcome::Accepted, true) => tally.accepted_valid += 1,
            (None, Outcome::Rejected(reason), false) => {
                tally.rejected_invalid += 1;
                *tally.reasons.entry(reason.clone()).or_default() += 1;
            }
            (None, _, _) => tally.mismatches.push(format!(
                "{label}: {} but {outcome:?}",
                if valid { "valid" } else { "invalid" }
            )),
        }
    }
}

#[test]
fn every_wycheproof_jws_and_jwk_case() {
    let jws = vectors(JWS_FILE);
    let jwk = vectors(JWK_FILE);

    // The tables name only cases that exist.
    for (file, ids, _) in NOT_APPLICABLE {
        let doc = if *file == JWS_FILE { &jws } else { &jwk };
        for id in *ids {
            assert!(
                cases(doc).iter().any(|(_, t)| tc_id(t) == *id),
                "{file}: no tcId {id}"
            );
        }
    }

    let mut foreign = Tally::default();
    run_foreign_lane(JWS_FILE, &jws, &mut foreign);
    run_foreign_lane(JWK_FILE, &jwk, &mut foreign);
    let mut own = Tally::default();
    run_own_lane(JWS_FILE, &jws, &mut own);
    run_own_lane(JWK_FILE, &jwk, &mut own);

    for (name, tally) in [
        ("foreign-issuer lane", &foreign),
        ("own-key HS256 lane", &own),
    ] {
        println!(
            "wycheproof {name}: accepted valid {}, rejected invalid {}, not applicable {}, \
             mismatches {}",
            tally.accepted_valid,
            tally.rejected_invalid,
            tally.not_applicable,
            tally.mismatches.len()
        );
        println!("  rejected invalid, by reason: {:?}", tally.reasons);
        for mismatch in &tally.mismatches {
            println!("  MISMATCH {mismatch}");
        }
    }
    let total = foreign.accepted_valid + foreign.rejected_invalid + foreign.not_applicable;
    assert_eq!(
        total + foreign.mismatches.len(),
        427,
        "every case of both files ran"
    );
    assert!(
        foreign.mismatches.is_empty(),
        "foreign lane: {:#?}",
        foreign.mismatches
    );
    assert!(
        own.mismatches.is_empty(),
        "own-key lane: {:#?}",
        own.mismatches
    );
    assert_eq!(
        foreign.not_applicable,
        NOT_APPLICABLE
            .iter()
            .map(|(_, ids, _)| ids.len())
            .sum::<usize>()
    );
    assert_eq!(own.not_applicable, OWN_NOT_APPLICABLE.len());
}
