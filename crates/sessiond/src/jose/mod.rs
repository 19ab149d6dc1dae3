//! JSON Web Signatures (RFC 7515): the compact-form parser and header policy every verifier shares,
//! the signature primitives over our own keys, and the JWK Set we publish.
//!
//! The policy, in the order a token meets it:
//! - **One form, bounded.** Only the compact serialization: at most [`MAX_TOKEN_LEN`] bytes, the
//!   base64url alphabet and exactly two `.`. The JSON serialization, whitespace, non-ASCII text,
//!   padding and any other character are each refused with their own [`JwsError`] variant.
//! - **Canonical base64url.** No padding, no non-zero unused bits: one token has one spelling per
//!   part (the signature still has several: see [`foreign::claim_id`]).
//! - **A header we understand.** A JSON object with unique member names; `alg` a string and never
//!   `none` (in any case); `kid` and `typ` strings when present; any `crit` is refused, as we
//!   implement no extension. `jku`, `x5u`, `x5c` and `jwk` are dropped unread: a token never brings
//!   the key that verifies it.
//! - **The key decides the algorithm.** A verifier picks the key (by `kid`) and then demands that
//!   `alg` equal the one algorithm that key is pinned to ([`JwsError::AlgMismatch`]). That is what
//!   defeats key confusion, e.g. an HS256 token "signed" with an Ed25519 public key as HMAC secret.
//!
//! The signature math is jsonwebtoken's RustCrypto provider; this module only decides what reaches
//! it. [`foreign`] verifies the tokens of trusted foreign issuers with the same parser.

pub mod foreign;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::clock::{is_expired, Timestamp};
use crate::keys::{Key, KeyAlgorithm};
use crate::secret::Secret;

/// The largest token accepted, in bytes (docs/DESIGN.md §3.2). Larger input is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Which part of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwsPart {
    /// The protected header.
    Header,
    /// The payload.
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for JwsPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwsPart::Header => "header",
            JwsPart::Payload => "payload",
            JwsPart::Signature => "signature",
        })
    }
}

/// Why a JWS was refused. No variant carries token text or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// The token is empty.
    #[error("token is empty")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is larger than 8 KiB")]
    TooLarge,
    /// The token is a JWS JSON serialization; only the compact form is accepted.
    #[error("JWS JSON serialization is not accepted")]
    JsonSerialization,
    /// The token contains whitespace.
    #[error("token contains whitespace")]
    Whitespace,
    /// The token contains a non-ASCII character.
    #[error("token contains non-ASCII text")]
    NonAscii,
    /// The token contains `=`: base64url here is unpadded.
    #[error("token contains base64 padding")]
    Padding,
    /// The token contains an ASCII character outside the base64url alphabet and `.`.
    #[error("token contains a character outside the base64url alphabet")]
    InvalidCharacter,
    /// The token does not have exactly three `.`-separated segments.
    #[error("token has {found} segments, expected 3")]
    SegmentCount {
        /// How many segments there were.
        found: usize,
    },
    /// A part is not canonical base64url (bad length or non-zero unused bits).
    #[error("the {0} is not canonical base64url")]
    Base64(JwsPart),
    /// The header is not JSON (or not UTF-8).
    #[error("header is not JSON")]
    HeaderNotJson,
    /// The header is JSON but not an object.
    #[error("header is not a JSON object")]
    HeaderNotObject,
    /// The header names a member twice (parsers disagree on which one wins).
    #[error("header has a duplicate member")]
    DuplicateHeaderMember,
    /// The header has no `alg`.
    #[error("header has no alg")]
    AlgMissing,
    /// The header's `alg` is not a string.
    #[error("header alg is not a string")]
    AlgNotString,
    /// The header's `alg` is `none` (in any case): unsigned tokens are never accepted.
    #[error("alg none is not accepted")]
    AlgNone,
    /// The header's `kid` is present but not a string.
    #[error("header kid is not a string")]
    KidNotString,
    /// The header's `typ` is present but not a string.
    #[error("header typ is not a string")]
    TypNotString,
    /// The header has a `crit` member; we implement no extension, so we cannot honour one.
    #[error("crit header is not supported")]
    CritUnsupported,
    /// The signature part is empty.
    #[error("signature is missing")]
    MissingSignature,
    /// The header's `alg` is not the algorithm the verifying key is pinned to.
    #[error("alg does not match the key's algorithm")]
    AlgMismatch,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// The key has no material for its algorithm, or the crypto provider refused it.
    #[error("key cannot be used for its algorithm")]
    KeyUnusable,
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) has not been reached.
    #[error("token not yet valid")]
    NotYetValid,
}

impl JwsError {
    /// A stable reason code for audit records, metrics and logs (never contains input).
    pub fn reason(&self) -> &'static str {
        match self {
            JwsError::Empty => "jws_empty",
            JwsError::TooLarge => "jws_too_large",
            JwsError::JsonSerialization => "jws_json_serialization",
            JwsError::Whitespace => "jws_whitespace",
            JwsError::NonAscii => "jws_non_ascii",
            JwsError::Padding => "jws_padding",
            JwsError::InvalidCharacter => "jws_invalid_character",
            JwsError::SegmentCount { .. } => "jws_segments",
            JwsError::Base64(_) => "jws_base64",
            JwsError::HeaderNotJson | JwsError::HeaderNotObject => "jws_header_json",
            JwsError::DuplicateHeaderMember => "jws_header_duplicate",
            JwsError::AlgMissing | JwsError::AlgNotString => "jws_alg_malformed",
            JwsError::AlgNone => "jws_alg_none",
            JwsError::KidNotString => "jws_kid_malformed",
            JwsError::TypNotString => "jws_typ_malformed",
            JwsError::CritUnsupported => "jws_crit",
            JwsError::MissingSignature => "jws_signature_missing",
            JwsError::AlgMismatch => "jws_alg_mismatch",
            JwsError::BadSignature => "jws_bad_signature",
            JwsError::KeyUnusable => "jws_key_unusable",
            JwsError::Expired => "token_expired",
            JwsError::NotYetValid => "token_not_yet_valid",
        }
    }
}

/// The protected header members a verifier may look at. Everything else (notably `jku`, `x5u`,
/// `x5c`, `jwk`) was dropped while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

impl Header {
    /// The `alg` member; never `none`. Only meaningful compared with a key's pinned algorithm.
    pub fn alg(&self) -> &str {
        &self.alg
    }

    /// The `kid` member, if present.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `typ` member, if present.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }
}

/// A compact JWS that passed [`parse_compact`]; its signature is not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct Compact {
    header: Header,
    signing_input: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl fmt::Debug for Compact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload may carry personal data and the whole is a bearer credential: lengths only.
        f.debug_struct("Compact")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

impl Compact {
    /// The header's policy-relevant members.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Shorthand for `header().alg()`.
    pub fn alg(&self) -> &str {
        self.header.alg()
    }

    /// Shorthand for `header().kid()`.
    pub fn kid(&self) -> Option<&str> {
        self.header.kid()
    }

    /// Shorthand for `header().typ()`.
    pub fn typ(&self) -> Option<&str> {
        self.header.typ()
    }

    /// The bytes the signature covers: `base64url(header) "." base64url(payload)` as received.
    pub fn signing_input(&self) -> &[u8] {
        &self.signing_input
    }

    /// The decoded payload (unverified until a verifier says otherwise).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The decoded signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Parses a compact JWS and applies the header policy of the module documentation. Does not
/// verify the signature.
///
/// # Errors
/// The [`JwsError`] naming the first thing wrong, checked in this order: size, form and
/// alphabet, segment count, header (base64, JSON, `alg`, `kid`, `typ`, `crit`), payload base64,
/// signature presence and base64.
pub fn parse_compact(token: &str) -> Result<Compact, JwsError> {
    if token.is_empty() {
        return Err(JwsError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLarge);
    }
    if token.trim_start().starts_with('{') {
        return Err(JwsError::JsonSerialization);
    }
    let mut dots = 0usize;
    for b in token.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'.' => dots += 1,
            b'=' => return Err(JwsError::Padding),
            // `is_ascii_whitespace` leaves out vertical tab; no whitespace is base64url.
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => return Err(JwsError::Whitespace),
            b if !b.is_ascii() => return Err(JwsError::NonAscii),
            _ => return Err(JwsError::InvalidCharacter),
        }
    }
    if dots != 2 {
        return Err(JwsError::SegmentCount { found: dots + 1 });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::SegmentCount { found: dots + 1 });
    };
    let header = parse_header(&decode_part(header_b64, JwsPart::Header)?)?;
    let payload = decode_part(payload_b64, JwsPart::Payload)?;
    if signature_b64.is_empty() {
        return Err(JwsError::MissingSignature);
    }
    let signature = decode_part(signature_b64, JwsPart::Signature)?;
    let mut signing_input = Vec::with_capacity(header_b64.len() + 1 + payload_b64.len());
    signing_input.extend_from_slice(header_b64.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(payload_b64.as_bytes());
    Ok(Compact {
        header,
        signing_input,
        payload,
        signature,
    })
}

/// Strict base64url: no padding, and the unused bits of the last character must be zero.
fn decode_part(text: &str, part: JwsPart) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwsError::Base64(part))
}

fn parse_header(bytes: &[u8]) -> Result<Header, JwsError> {
    let map = match serde_json::from_slice::<JsonObject>(bytes) {
        Ok(JsonObject::Object(map)) => map,
        Ok(JsonObject::Duplicate) => return Err(JwsError::DuplicateHeaderMember),
        Ok(JsonObject::NotObject) => return Err(JwsError::HeaderNotObject),
        Err(_) => return Err(JwsError::HeaderNotJson),
    };
    let alg = match map.get("alg") {
        None => return Err(JwsError::AlgMissing),
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(JwsError::AlgNotString),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwsError::AlgNone);
    }
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwsError::KidNotString),
    };
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.clone()),
        Some(_) => return Err(JwsError::TypNotString),
    };
    if map.contains_key("crit") {
        return Err(JwsError::CritUnsupported);
    }
    // Every other member, `jku`, `x5u`, `x5c` and `jwk` included, ends here with `map`.
    Ok(Header { alg, kid, typ })
}

/// A JSON document read with its top-level member names checked for duplicates. serde_json
/// silently keeps the last of two equal names; another parser may keep the first, so a header or
/// claim set with duplicates means different things to different readers and is refused.
pub(crate) enum JsonObject {
    /// An object with unique member names.
    Object(Map<String, Value>),
    /// An object that names a member twice.
    Duplicate,
    /// Valid JSON that is not an object.
    NotObject,
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonObjectVisitor)
    }
}

struct JsonObjectVisitor;

impl<'de> Visitor<'de> for JsonObjectVisitor {
    type Value = JsonObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<JsonObject, A::Error> {
        let mut map = Map::new();
        let mut duplicate = false;
        while let Some(name) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            if map.insert(name, value).is_some() {
                duplicate = true;
            }
        }
        Ok(if duplicate {
            JsonObject::Duplicate
        } else {
            JsonObject::Object(map)
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<JsonObject, A::Error> {
        while access.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonObject::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<JsonObject, E> {
        Ok(JsonObject::NotObject)
    }
}

/// The jsonwebtoken algorithm a key of ours is pinned to.
fn pinned_algorithm(key: &Key) -> Algorithm {
    match key.info().algorithm {
        KeyAlgorithm::Hs256 => Algorithm::HS256,
        KeyAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// Signs `signing_input` (`base64url(header) "." base64url(payload)`) with `key` under the one
/// algorithm the key is pinned to: HMAC-SHA256 for HS256 keys, Ed25519 for EdDSA keys.
///
/// # Errors
/// [`JwsError::KeyUnusable`] when the key lacks material for its algorithm or the provider
/// refuses it.
pub fn sign(key: &Key, signing_input: &[u8]) -> Result<Vec<u8>, JwsError> {
    let algorithm = pinned_algorithm(key);
    let encoding = match key.info().algorithm {
        KeyAlgorithm::Hs256 => {
            EncodingKey::from_secret(key.hmac_secret().ok_or(JwsError::KeyUnusable)?)
        }
        KeyAlgorithm::EdDsa => {
            // jsonwebtoken takes Ed25519 private keys as PKCS#8; the document zeroizes on drop,
            // as does the EncodingKey.
            let signing = key.ed25519().ok_or(JwsError::KeyUnusable)?;
            let der = signing.to_pkcs8_der().map_err(|_| JwsError::KeyUnusable)?;
            EncodingKey::from_ed_der(der.as_bytes())
        }
    };
    let signer = (DEFAULT_PROVIDER.signer_factory)(&algorithm, &encoding)
        .map_err(|_| JwsError::KeyUnusable)?;
    signer
        .try_sign(signing_input)
        .map_err(|_| JwsError::KeyUnusable)
}

/// Verifies `compact` with one of our keys. The header's `alg` must be exactly the algorithm the
/// key is pinned to: a token cannot choose how it is checked. Selecting the key (by `kid`, with
/// its purpose and retention) is the caller's job, e.g. [`crate::KeyRing::verifier`].
///
/// # Errors
/// [`JwsError::AlgMismatch`] before any cryptography when `alg` differs from the key's;
/// [`JwsError::BadSignature`] when the signature does not verify; [`JwsError::KeyUnusable`] when
/// the key lacks material for its algorithm.
pub fn verify(key: &Key, compact: &Compact) -> Result<(), JwsError> {
    if compact.alg() != key.info().algorithm.as_str() {
        return Err(JwsError::AlgMismatch);
    }
    let decoding = match key.info().algorithm {
        KeyAlgorithm::Hs256 => {
            DecodingKey::from_secret(key.hmac_secret().ok_or(JwsError::KeyUnusable)?)
        }
        KeyAlgorithm::EdDsa => ed25519_decoding_key(
            key.ed25519()
                .ok_or(JwsError::KeyUnusable)?
                .verifying_key()
                .as_bytes(),
        ),
    };
    verify_with(pinned_algorithm(key), &decoding, compact)
}

/// An Ed25519 verification key from its raw 32 bytes (jsonwebtoken's "DER" for Ed25519 is the raw
/// public key, as the JWK `x` member decodes to).
fn ed25519_decoding_key(public: &[u8; 32]) -> DecodingKey {
    DecodingKey::from_ed_der(public)
}

/// The signature check shared by our keys and foreign keys. The caller has already enforced that
/// `algorithm` is the key's pinned algorithm and the token's `alg`.
pub(crate) fn verify_with(
    algorithm: Algorithm,
    key: &DecodingKey,
    compact: &Compact,
) -> Result<(), JwsError> {
    let expected_len = match algorithm {
        Algorithm::HS256 => Some(32),
        Algorithm::ES256 | Algorithm::EdDSA => Some(64),
        // RSA signatures are as long as the modulus; the rsa crate checks that.
        _ => None,
    };
    if expected_len.is_some_and(|len| compact.signature.len() != len) {
        return Err(JwsError::BadSignature);
    }
    let verifier =
        (DEFAULT_PROVIDER.verifier_factory)(&algorithm, key).map_err(|_| JwsError::KeyUnusable)?;
    verifier
        .verify(&compact.signing_input, &compact.signature)
        .map_err(|_| JwsError::BadSignature)
}

/// Builds a compact JWS over `payload` with `key`. `header` is written as given, with `alg` set
/// to the key's algorithm when absent; a different `alg` is refused rather than overwritten. The
/// result is parsed back under this module's policy before it is returned, so every token we sign
/// is one we would accept (no `crit`, string `kid`/`typ`, at most [`MAX_TOKEN_LEN`] bytes).
///
/// # Errors
/// [`JwsError::AlgMismatch`] for a header naming another algorithm, [`JwsError::KeyUnusable`]
/// when signing fails, and any [`parse_compact`] error the result would meet.
pub fn sign_compact(
    key: &Key,
    header: &Map<String, Value>,
    payload: &[u8],
) -> Result<Secret<String>, JwsError> {
    let alg = key.info().algorithm.as_str();
    let mut header = header.clone();
    match header.get("alg") {
        None => {
            header.insert("alg".to_owned(), Value::String(alg.to_owned()));
        }
        Some(Value::String(named)) if named == alg => {}
        Some(_) => return Err(JwsError::AlgMismatch),
    }
    let header_json = serde_json::to_vec(&header).map_err(|_| JwsError::HeaderNotJson)?;
    let mut token = String::with_capacity(64 + payload.len() * 4 / 3 + 128);
    URL_SAFE_NO_PAD.encode_string(header_json, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = sign(key, token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    let token = Secret::new(token);
    parse_compact(token.expose())?;
    Ok(token)
}

/// Checks the JWT time claims (`exp`, `nbf`: seconds since the epoch) against `now`, with the
/// one expiry boundary of [`is_expired`]: a token is expired once `now >= exp + leeway`, and
/// valid from `nbf - leeway` on (inclusive). An absent claim is not checked here; whether it is
/// required is the caller's policy.
///
/// # Errors
/// [`JwsError::Expired`], [`JwsError::NotYetValid`].
pub fn check_time(
    exp: Option<i64>,
    nbf: Option<i64>,
    now: Timestamp,
    leeway: Duration,
) -> Result<(), JwsError> {
    if let Some(exp) = exp {
        if is_expired(
            Timestamp::from_unix_seconds(exp).saturating_add(leeway),
            now,
        ) {
            return Err(JwsError::Expired);
        }
    }
    if let Some(nbf) = nbf {
        // "Has the start passed?" is the same boundary as "has the deadline passed?".
        if !is_expired(
            Timestamp::from_unix_seconds(nbf).saturating_sub(leeway),
            now,
        ) {
            return Err(JwsError::NotYetValid);
        }
    }
    Ok(())
}

/// The JWK Set published at `/.well-known/jwks.json` (docs/DESIGN.md §3.6): one public JWK
/// (`kty: OKP`, `crv: Ed25519`, `x`, `kid`, `alg: EdDSA`, `use: sig`) per EdDSA key in `keys`,
/// in the given order. HS256 keys are never published (their only material is the secret). Pass
/// the keys that verify now, e.g. [`crate::KeyRing::verifying_keys`] of the access purpose, so
/// retired keys stay listed for their retention window.
pub fn jwks(keys: &[Arc<Key>]) -> Value {
    let keys: Vec<Jwk> = keys.iter().filter_map(|key| public_jwk(key)).collect();
    match serde_json::to_value(JwkSet { keys }) {
        Ok(set) => set,
        Err(e) => {
            // Serializing strings and enums cannot fail; if it ever did, publish nothing rather
            // than something malformed.
            tracing::error!(error = %e, "cannot serialize the JWK Set");
            serde_json::json!({ "keys": [] })
        }
    }
}

fn public_jwk(key: &Key) -> Option<Jwk> {
    if key.info().algorithm != KeyAlgorithm::EdDsa {
        return None;
    }
    let public = key.ed25519()?.verifying_key();
    let decoding = ed25519_decoding_key(public.as_bytes());
    let mut jwk = Jwk::from_decoding_key(&decoding, Some(Algorithm::EdDSA)).ok()?;
    jwk.common.key_id = Some(key.id().as_str().to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Some(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::KeyId;
    use crate::keys::KeyPurpose;
    use crate::random::SeededRandom;
    use serde_json::json;

    pub(crate) fn test_key(algorithm: KeyAlgorithm, seed: u8) -> Key {
        let rng = SeededRandom::new(u64::from(seed));
        Key::from_material(
            KeyId::generate(&rng),
            KeyPurpose::Access,
            algorithm,
            Secret::new(vec![seed; 32]),
            Timestamp::EPOCH,
        )
        .unwrap()
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with an arbitrary header and payload, signed by `key` whatever the header says.
    fn forge(key: &Key, header: &Value, payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload));
        let sig = sign(key, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig))
    }

    /// A token signed with raw HMAC-SHA256 under `secret`, whatever the header says.
    fn forge_hs256(secret: &[u8], header: &Value, payload: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let input = format!("{}.{}", b64(header.to_string()), b64(payload));
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(mac.finalize().into_bytes()))
    }

    /// A token with a raw header text and payload and a 64-byte dummy signature.
    fn unsigned(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64([7u8; 64]))
    }

    #[test]
    fn parse_compact_negative_table() {
        let ok = unsigned(r#"{"alg":"EdDSA"}"#, "{}");
        let long = "A".repeat(MAX_TOKEN_LEN - ok.len() + 1);
        let cases: Vec<(&str, String, JwsError)> = vec![
            ("empty", String::new(), JwsError::Empty),
            ("oversize", format!("{ok}{long}"), JwsError::TooLarge),
            (
                "json serialization",
                r#"{"payload":"e30","signatures":[{"protected":"eyJhbGciOiJFZERTQSJ9","signature":"AA"}]}"#.into(),
                JwsError::JsonSerialization,
            ),
            ("json serialization after spaces", format!("  {{{ok}"), JwsError::JsonSerialization),
            ("leading space", format!(" {ok}"), JwsError::Whitespace),
            ("space inside", ok.replacen('.', " .", 1), JwsError::Whitespace),
            ("newline at end", format!("{ok}\n"), JwsError::Whitespace),
            ("tab", ok.replacen('.', "\t.", 1), JwsError::Whitespace),
            ("non-ascii", ok.replacen('.', "é.", 1), JwsError::NonAscii),
            ("fullwidth dot", ok.replacen('.', "\u{ff0e}", 1), JwsError::NonAscii),
            ("padding", ok.replacen('.', "=.", 1), JwsError::Padding),
            ("standard alphabet +", ok.replacen('.', "+.", 1), JwsError::InvalidCharacter),
            ("standard alphabet /", ok.replacen('.', "/.", 1), JwsError::InvalidCharacter),
            ("question mark", ok.replacen('.', "?.", 1), JwsError::InvalidCharacter),
            ("one segment", "eyJhbGciOiJFZERTQSJ9".into(), JwsError::SegmentCount { found: 1 }),
            (
                "two segments",
                ok.rsplit_once('.').unwrap().0.to_owned(),
                JwsError::SegmentCount { found: 2 },
            ),
            ("four segments", format!("{ok}.AA"), JwsError::SegmentCount { found: 4 }),
            ("trailing dot", format!("{ok}."), JwsError::SegmentCount { found: 4 }),
            (
                "header: non-canonical trailing bits",
                // "e30" is `{}`; "e31" decodes to the same byte with a non-zero unused bit.
                format!("e31.e30.{}", b64([1u8; 64])),
                JwsError::Base64(JwsPart::Header),
            ),
            (
                "header: impossible length",
                format!("e30AA.e30.{}", b64([1u8; 64])),
                JwsError::Base64(JwsPart::Header),
            ),
            ("missing header", format!(".e30.{}", b64([1u8; 64])), JwsError::HeaderNotJson),
            ("header not json", unsigned("alg=EdDSA", "{}"), JwsError::HeaderNotJson),
            ("header not utf-8", format!("{}.e30.AAAA", b64([0xff, 0xfe])), JwsError::HeaderNotJson),
            ("header trailing data", unsigned(r#"{"alg":"EdDSA"} x"#, "{}"), JwsError::HeaderNotJson),
            ("header is an array", unsigned(r#"["alg","EdDSA"]"#, "{}"), JwsError::HeaderNotObject),
            ("header is a string", unsigned(r#""EdDSA""#, "{}"), JwsError::HeaderNotObject),
            (
                "duplicate alg",
                unsigned(r#"{"alg":"none","alg":"EdDSA"}"#, "{}"),
                JwsError::DuplicateHeaderMember,
            ),
            ("no alg", unsigned(r#"{"kid":"k"}"#, "{}"), JwsError::AlgMissing),
            ("alg not a string", unsigned(r#"{"alg":["EdDSA"]}"#, "{}"), JwsError::AlgNotString),
            ("alg none", unsigned(r#"{"alg":"none"}"#, "{}"), JwsError::AlgNone),
            ("alg None", unsigned(r#"{"alg":"None"}"#, "{}"), JwsError::AlgNone),
            ("alg NONE", unsigned(r#"{"alg":"NONE"}"#, "{}"), JwsError::AlgNone),
            ("alg nOnE", unsigned(r#"{"alg":"nOnE"}"#, "{}"), JwsError::AlgNone),
            (
                "alg none with empty signature",
                format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}")),
                JwsError::AlgNone,
            ),
            ("kid a number", unsigned(r#"{"alg":"EdDSA","kid":7}"#, "{}"), JwsError::KidNotString),
            ("kid null", unsigned(r#"{"alg":"EdDSA","kid":null}"#, "{}"), JwsError::KidNotString),
            ("kid an object", unsigned(r#"{"alg":"EdDSA","kid":{}}"#, "{}"), JwsError::KidNotString),
            ("typ a number", unsigned(r#"{"alg":"EdDSA","typ":1}"#, "{}"), JwsError::TypNotString),
            ("crit", unsigned(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#, "{}"), JwsError::CritUnsupported),
            ("crit empty", unsigned(r#"{"alg":"EdDSA","crit":[]}"#, "{}"), JwsError::CritUnsupported),
            ("crit b64", unsigned(r#"{"alg":"EdDSA","b64":false,"crit":["b64"]}"#, "{}"), JwsError::CritUnsupported),
            (
                "payload: non-canonical trailing bits",
                format!("{}.e31.{}", b64(r#"{"alg":"EdDSA"}"#), b64([1u8; 64])),
                JwsError::Base64(JwsPart::Payload),
            ),
            (
                "missing signature",
                format!("{}.e30.", b64(r#"{"alg":"EdDSA"}"#)),
                JwsError::MissingSignature,
            ),
            (
                "signature: impossible length",
                format!("{}.e30.A", b64(r#"{"alg":"EdDSA"}"#)),
                JwsError::Base64(JwsPart::Signature),
            ),
            (
                "signature: non-canonical trailing bits",
                format!("{}.e30.AB", b64(r#"{"alg":"EdDSA"}"#)),
                JwsError::Base64(JwsPart::Signature),
            ),
        ];
        for (name, token, expected) in &cases {
            assert_eq!(parse_compact(token).err(), Some(*expected), "case: {name}");
        }
        assert!(parse_compact(&ok).is_ok());
        let at_limit = unsigned(r#"{"alg":"EdDSA"}"#, &"x".repeat(6000));
        assert!(at_limit.len() <= MAX_TOKEN_LEN && parse_compact(&at_limit).is_ok());
    }

    #[test]
    fn parse_keeps_only_alg_kid_typ() {
        let token = unsigned(
            r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jku":"https://evil.example/jwks","x5u":"https://evil.example/c","x5c":["MIIB"],"jwk":{"kty":"oct","k":"AA"},"zip":"DEF"}"#,
            r#"{"sub":"a"}"#,
        );
        let c = parse_compact(&token).unwrap();
        assert_eq!(
            c.header(),
            &Header {
                alg: "EdDSA".into(),
                kid: Some("k1".into()),
                typ: Some("at+jwt".into())
            }
        );
        assert_eq!(c.payload(), br#"{"sub":"a"}"#);
        assert_eq!(c.signature(), &[7u8; 64]);
        let (input, _) = token.rsplit_once('.').unwrap();
        assert_eq!(c.signing_input(), input.as_bytes());
        // Debug shows neither payload nor signature.
        let debug = format!("{c:?}");
        assert!(!debug.contains("sub") && debug.contains("payload_len"));
    }

    #[test]
    fn verification_negative_table() {
        let ours = test_key(KeyAlgorithm::EdDsa, 1);
        let hs = test_key(KeyAlgorithm::Hs256, 2);
        let attacker = test_key(KeyAlgorithm::EdDsa, 66);
        let attacker_x = b64(attacker.ed25519().unwrap().verifying_key().as_bytes());
        let our_public = *ours.ed25519().unwrap().verifying_key().as_bytes();
        let kid = ours.id().as_str().to_owned();
        let claims = br#"{"sub":"alice"}"#;
        let good = forge(&ours, &json!({"alg":"EdDSA","kid":kid}), claims);
        let attacker_jwk = json!({"kty":"OKP","crv":"Ed25519","x":attacker_x,"kid":kid});
        let (good_input, good_sig) = good.rsplit_once('.').unwrap();
        let other_payload = forge(
            &ours,
            &json!({"alg":"EdDSA","kid":kid}),
            br#"{"sub":"mallory"}"#,
        );
        let (other_input, _) = other_payload.rsplit_once('.').unwrap();
        let mut flipped = URL_SAFE_NO_PAD.decode(good_sig).unwrap();
        flipped[10] ^= 1;

        let cases: Vec<(&str, &Key, String, JwsError)> = vec![
            (
                // Key confusion: our Ed25519 public key bytes used as an HMAC secret.
                "HS256 with our Ed25519 public key as the secret",
                &ours,
                forge_hs256(&our_public, &json!({"alg":"HS256","kid":kid}), claims),
                JwsError::AlgMismatch,
            ),
            (
                "EdDSA token against an HS256 key",
                &hs,
                good.clone(),
                JwsError::AlgMismatch,
            ),
            (
                "alg in another case",
                &ours,
                forge(&ours, &json!({"alg":"EDDSA"}), claims),
                JwsError::AlgMismatch,
            ),
            (
                "jwk header with the attacker's key, signed by the attacker",
                &ours,
                forge(
                    &attacker,
                    &json!({"alg":"EdDSA","kid":kid,"jwk":attacker_jwk}),
                    claims,
                ),
                JwsError::BadSignature,
            ),
            (
                "jku header pointing at the attacker, signed by the attacker",
                &ours,
                forge(
                    &attacker,
                    &json!({"alg":"EdDSA","kid":kid,"jku":"https://evil.example/jwks.json"}),
                    claims,
                ),
                JwsError::BadSignature,
            ),
            (
                "x5u header pointing at the attacker, signed by the attacker",
                &ours,
                forge(
                    &attacker,
                    &json!({"alg":"EdDSA","kid":kid,"x5u":"https://evil.example/cert.pem"}),
                    claims,
                ),
                JwsError::BadSignature,
            ),
            (
                "payload changed, signature kept",
                &ours,
                format!("{other_input}.{good_sig}"),
                JwsError::BadSignature,
            ),
            (
                "header changed, signature kept",
                &ours,
                format!(
                    "{}.{}.{good_sig}",
                    b64(json!({"alg":"EdDSA","kid":"sk-other"}).to_string()),
                    b64(claims)
                ),
                JwsError::BadSignature,
            ),
            (
                "one signature bit flipped",
                &ours,
                format!("{good_input}.{}", b64(&flipped)),
                JwsError::BadSignature,
            ),
            (
                "signature truncated",
                &ours,
                format!("{good_input}.{}", b64(&flipped[..63])),
                JwsError::BadSignature,
            ),
            (
                "HS256 signed with another secret",
                &hs,
                forge_hs256(&[9u8; 32], &json!({"alg":"HS256"}), claims),
                JwsError::BadSignature,
            ),
        ];
        for (name, key, token, expected) in &cases {
            let result = parse_compact(token).and_then(|c| verify(key, &c));
            assert_eq!(result, Err(*expected), "case: {name}");
        }
        verify(&ours, &parse_compact(&good).unwrap()).unwrap();
    }

    #[test]
    fn sign_and_verify_round_trip_for_both_algorithms() {
        for alg in [KeyAlgorithm::EdDsa, KeyAlgorithm::Hs256] {
            let key = test_key(alg, 3);
            let mut header = Map::new();
            header.insert("kid".into(), key.id().as_str().into());
            header.insert("typ".into(), "at+jwt".into());
            let token = sign_compact(&key, &header, br#"{"sub":"alice"}"#).unwrap();
            let c = parse_compact(token.expose()).unwrap();
            assert_eq!(
                (c.alg(), c.kid(), c.typ()),
                (alg.as_str(), Some(key.id().as_str()), Some("at+jwt"))
            );
            verify(&key, &c).unwrap();
            // Another key of the same algorithm does not verify it.
            assert_eq!(verify(&test_key(alg, 4), &c), Err(JwsError::BadSignature));
        }
    }

    #[test]
    fn sign_compact_refuses_what_we_would_not_accept() {
        let key = test_key(KeyAlgorithm::EdDsa, 5);
        let header = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            sign_compact(&key, &header(json!({"alg":"HS256"})), b"{}").err(),
            Some(JwsError::AlgMismatch)
        );
        assert_eq!(
            sign_compact(&key, &header(json!({"crit":["x"]})), b"{}").err(),
            Some(JwsError::CritUnsupported)
        );
        assert_eq!(
            sign_compact(&key, &header(json!({"kid":1})), b"{}").err(),
            Some(JwsError::KidNotString)
        );
        assert_eq!(
            sign_compact(&key, &Map::new(), &[b'x'; MAX_TOKEN_LEN]).err(),
            Some(JwsError::TooLarge)
        );
    }

    #[test]
    fn time_boundaries() {
        let leeway = Duration::from_secs(30);
        let at = |s: i64| Timestamp::from_unix_seconds(s);
        let ms = |m: i64| Timestamp::from_unix_millis(m);
        // exp = 1000 s: valid until 1030 s exclusive.
        assert_eq!(check_time(Some(1000), None, ms(1_029_999), leeway), Ok(()));
        assert_eq!(
            check_time(Some(1000), None, at(1030), leeway),
            Err(JwsError::Expired)
        );
        assert_eq!(
            check_time(Some(1000), None, at(1000), Duration::ZERO),
            Err(JwsError::Expired)
        );
        assert_eq!(
            check_time(Some(1000), None, ms(999_999), Duration::ZERO),
            Ok(())
        );
        // nbf = 1000 s: valid from 970 s inclusive.
        assert_eq!(check_time(None, Some(1000), at(970), leeway), Ok(()));
        assert_eq!(
            check_time(None, Some(1000), ms(969_999), leeway),
            Err(JwsError::NotYetValid)
        );
        assert_eq!(
            check_time(None, Some(1000), at(1000), Duration::ZERO),
            Ok(())
        );
        assert_eq!(check_time(None, None, at(0), leeway), Ok(()));
        // Extremes saturate instead of overflowing.
        assert_eq!(
            check_time(Some(i64::MAX), Some(i64::MIN), at(0), leeway),
            Ok(())
        );
        assert_eq!(
            check_time(Some(i64::MIN), None, at(0), leeway),
            Err(JwsError::Expired)
        );
    }

    #[test]
    fn jwks_publishes_only_public_eddsa_members() {
        let ed = Arc::new(test_key(KeyAlgorithm::EdDsa, 7));
        let hs = Arc::new(test_key(KeyAlgorithm::Hs256, 8));
        let set = jwks(&[ed.clone(), hs]);
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let x = b64(ed.ed25519().unwrap().verifying_key().as_bytes());
        assert_eq!(
            keys[0],
            json!({"kty":"OKP","crv":"Ed25519","x":x,"kid":ed.id().as_str(),"alg":"EdDSA","use":"sig"})
        );
        for key in keys {
            for private in ["d", "k", "p", "q", "dp", "dq", "qi", "oth"] {
                assert!(
                    key.get(private).is_none(),
                    "private member {private} published"
                );
            }
        }
        let text = set.to_string();
        assert!(!text.contains(&b64(ed.ed25519().unwrap().to_bytes())));
        assert!(!text.contains(&b64([8u8; 32])));
        assert_eq!(jwks(&[]), json!({"keys": []}));
    }

    #[test]
    fn errors_say_nothing_about_the_token() {
        let secret_looking = unsigned(r#"{"alg":"none","kid":"hunter2"}"#, r#"{"sub":"hunter2"}"#);
        let e = parse_compact(&secret_looking).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }
}
