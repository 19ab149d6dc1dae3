//! Trusted foreign issuers (docs/DESIGN.md §3.5): JWTs signed by an identity provider we trust, verified
//! against that issuer's JWK Set before a one-time claim is recorded.
//!
//! # Keys: each pinned to exactly one algorithm
//! A JWK Set is loaded once ([`TrustedIssuer::from_jwks_json`], [`TrustedIssuer::from_jwks_file`])
//! and every usable key is pinned to one of RS256, PS256, ES256, ES384, ES512 or EdDSA:
//! - the JWK's `alg` when present; an `alg` that contradicts the key's `kty`/`crv` (ES256 on a
//!   P-384 key, RS256 on an EC key, an unknown `ES224`) refuses the whole set;
//! - otherwise inferred where the key admits one algorithm only: EC P-256 → ES256, EC P-384 →
//!   ES384, EC P-521 → ES512, OKP Ed25519 → EdDSA;
//! - an RSA key without `alg` is ambiguous (RS256 and PS256 both fit, and one key serving both is
//!   what the pinning exists to prevent): the set is refused unless the issuer's configuration
//!   names the algorithm for such keys ([`JwksOptions::rsa_algorithm`]).
//!
//! Keys that cannot verify our tokens are skipped, not trusted: `use` other than `sig`, `key_ops`
//! without `verify`, and algorithms outside the six (RS384, ES256K, RSA-OAEP, Ed448, ...); each
//! skipped key is logged at `warn` with its index, `kid` and why (the server loads sets at start). Some
//! things refuse the whole set, because they mean the file is not what it should be: private
//! material (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`), symmetric (`oct`) keys (HS256 is never
//! accepted from a foreign issuer), two keys with one `kid`, RSA moduli outside 2048–4096 bits or
//! with a small factor or the ROCA fingerprint (CVE-2017-15361), bad exponents, EC points off the
//! curve, and a set with no usable key at all.
//!
//! # Verification
//! [`TrustedIssuer::verify`]: [`parse_compact`]; the key by `kid` (an unknown `kid` is refused; a
//! token *without* `kid` is accepted only when the set has exactly one key pinned to the token's
//! `alg`, so adding a second key never makes an old token verify under the wrong one); `alg` must
//! equal that key's pinned algorithm; the signature; then the claims: a JSON object with unique
//! names, `iss` equal to the issuer, `aud` (a string or an array of strings) containing our
//! audience, `exp` required, `nbf` optional, both with a leeway (default 30 s), `jti` a string when
//! present.

use std::fmt;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{check_time, parse_compact, verify_with, Compact, JsonObject, JwsError};
use crate::clock::Timestamp;

/// The default allowance for clock skew between the issuer and us.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest JWK Set document accepted, in bytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;
/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (the rsa crate verifies nothing larger).
pub const MAX_RSA_BITS: usize = 4096;

/// The domain-separation prefix of claim ids derived from (`iss`, `jti`).
const CLAIM_ID_JTI: &[u8] = b"sessiond/claim-id/v1/iss+jti\0";
/// The domain-separation prefix of claim ids derived from the decoded payload.
const CLAIM_ID_PAYLOAD: &[u8] = b"sessiond/claim-id/v1/payload\0";

/// JWK members that only private keys have.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// The algorithms a foreign issuer's key can be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForeignAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256.
    Ps256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512 (verified with the `p521` crate: jsonwebtoken has no ES512).
    Es512,
    /// Ed25519.
    EdDsa,
}

impl ForeignAlgorithm {
    /// The JWS `alg` name: `RS256`, `PS256`, `ES256`, `ES384`, `ES512`, `EdDSA`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignAlgorithm::Rs256 => "RS256",
            ForeignAlgorithm::Ps256 => "PS256",
            ForeignAlgorithm::Es256 => "ES256",
            ForeignAlgorithm::Es384 => "ES384",
            ForeignAlgorithm::Es512 => "ES512",
            ForeignAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// jsonwebtoken's name for it; `None` for ES512, which jsonwebtoken does not have.
    fn jwt(self) -> Option<Algorithm> {
        match self {
            ForeignAlgorithm::Rs256 => Some(Algorithm::RS256),
            ForeignAlgorithm::Ps256 => Some(Algorithm::PS256),
            ForeignAlgorithm::Es256 => Some(Algorithm::ES256),
            ForeignAlgorithm::Es384 => Some(Algorithm::ES384),
            ForeignAlgorithm::Es512 => None,
            ForeignAlgorithm::EdDsa => Some(Algorithm::EdDSA),
        }
    }
}

impl fmt::Display for ForeignAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The algorithm to pin RSA keys that carry no `alg` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RsaAlgorithm {
    /// RS256.
    Rs256,
    /// PS256.
    Ps256,
}

impl From<RsaAlgorithm> for ForeignAlgorithm {
    fn from(alg: RsaAlgorithm) -> Self {
        match alg {
            RsaAlgorithm::Rs256 => ForeignAlgorithm::Rs256,
            RsaAlgorithm::Ps256 => ForeignAlgorithm::Ps256,
        }
    }
}

/// How a JWK Set is read, beyond what the JWKs say themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksOptions {
    rsa_algorithm: Option<RsaAlgorithm>,
}

impl JwksOptions {
    /// The defaults: RSA keys must name their `alg`.
    pub fn new() -> Self {
        JwksOptions::default()
    }

    /// Pins RSA keys without `alg` to `alg` (issuers such as Microsoft Entra ID publish RSA keys
    /// without `alg` and sign with RS256). Keys that name their `alg` keep it.
    pub fn rsa_algorithm(mut self, alg: RsaAlgorithm) -> Self {
        self.rsa_algorithm = Some(alg);
        self
    }
}

/// Why a JWK Set was refused. Keys are named by their position in `keys`, never by content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The JWK Set file could not be read.
    #[error("cannot read the JWK Set file")]
    Io(#[source] std::io::Error),
    /// The document is larger than [`MAX_JWKS_LEN`].
    #[error("JWK Set is larger than 1 MiB")]
    TooLarge,
    /// The document is not JSON.
    #[error("JWK Set is not JSON")]
    NotJson,
    /// The document is not an object with a `keys` array.
    #[error("not a JWK Set (an object with a keys array)")]
    NotAJwkSet,
    /// The configured issuer is empty.
    #[error("the issuer is empty")]
    EmptyIssuer,
    /// The configured audience is empty.
    #[error("the audience is empty")]
    EmptyAudience,
    /// A key is not a JSON object.
    #[error("key {index} is not a JSON object")]
    NotAnObject {
        /// The key's position in `keys`.
        index: usize,
    },
    /// A member of a key is missing or of the wrong type.
    #[error("key {index}: member {member} is missing or malformed")]
    Malformed {
        /// The key's position in `keys`.
        index: usize,
        /// The member's name.
        member: &'static str,
    },
    /// A key carries private material: the file is not a public JWK Set.
    #[error("key {index} carries private key material")]
    PrivateKeyMaterial {
        /// The key's position in `keys`.
        index: usize,
    },
    /// A key is symmetric (`kty: oct`); a foreign issuer's secret is never a verification key.
    #[error("key {index} is a symmetric key")]
    SymmetricKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// A key's `alg` contradicts its `kty`/`crv`.
    #[error("key {index}: alg contradicts the key type")]
    AlgorithmContradictsKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// An RSA key has no `alg` and no RSA algorithm was configured for such keys.
    #[error("key {index}: RSA key without alg (configure the issuer's RSA algorithm)")]
    AmbiguousRsaKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// An RSA modulus is outside 2048–4096 bits.
    #[error("key {index}: RSA modulus of {bits} bits (2048 to 4096 accepted)")]
    RsaModulusSize {
        /// The key's position in `keys`.
        index: usize,
        /// The modulus size.
        bits: usize,
    },
    /// An RSA public exponent is even, below 3, or above 2^33 - 1.
    #[error("key {index}: unacceptable RSA public exponent")]
    RsaExponent {
        /// The key's position in `keys`.
        index: usize,
    },
    /// An RSA modulus has a small prime factor or the ROCA fingerprint (CVE-2017-15361).
    #[error("key {index}: weak RSA modulus")]
    WeakRsaKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// A key's material is not a valid public key (not canonical base64url, wrong length, a
    /// point not on the curve).
    #[error("key {index}: invalid public key")]
    InvalidKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// Two usable keys share a `kid`, so a token's `kid` would not name one key.
    #[error("key {index}: kid already used by another key")]
    DuplicateKid {
        /// The position in `keys` of the second key with the `kid`.
        index: usize,
    },
    /// No key in the set can verify a signature of ours to accept.
    #[error("JWK Set has no usable signature key")]
    NoUsableKeys,
}

/// Why a foreign token was refused. No variant carries token text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForeignError {
    /// The JWS is malformed, names a disallowed algorithm, does not verify, or is outside its
    /// validity window.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The token's `kid` names no key of the issuer.
    #[error("unknown kid")]
    UnknownKid,
    /// The token has no `kid` and the issuer has no key pinned to its `alg`.
    #[error("no key for the token's alg")]
    NoKeyForAlgorithm,
    /// The token has no `kid` and the issuer has several keys pinned to its `alg`.
    #[error("token has no kid and the issuer has several keys for its alg")]
    KidRequired,
    /// The payload is not JSON.
    #[error("payload is not JSON")]
    PayloadNotJson,
    /// The payload is JSON but not an object.
    #[error("payload is not a JSON object")]
    PayloadNotObject,
    /// The payload names a claim twice.
    #[error("payload has a duplicate claim")]
    DuplicateClaim,
    /// `iss` is not the issuer's.
    #[error("iss does not match the issuer")]
    IssuerMismatch,
    /// `aud` does not contain our audience.
    #[error("aud does not contain the audience")]
    AudienceMismatch,
    /// A required claim is absent.
    #[error("claim {0} is missing")]
    MissingClaim(&'static str),
    /// A claim has the wrong type.
    #[error("claim {0} is malformed")]
    MalformedClaim(&'static str),
}

impl ForeignError {
    /// A stable reason code for audit records, metrics and logs (never contains input).
    pub fn reason(&self) -> &'static str {
        match self {
            ForeignError::Jws(e) => e.reason(),
            ForeignError::UnknownKid => "unknown_kid",
            ForeignError::NoKeyForAlgorithm => "no_key_for_alg",
            ForeignError::KidRequired => "kid_required",
            ForeignError::PayloadNotJson | ForeignError::PayloadNotObject => "payload_json",
            ForeignError::DuplicateClaim => "duplicate_claim",
            ForeignError::IssuerMismatch => "issuer_mismatch",
            ForeignError::AudienceMismatch => "audience_mismatch",
            ForeignError::MissingClaim(_) => "claim_missing",
            ForeignError::MalformedClaim(_) => "claim_malformed",
        }
    }
}

/// One verification key of a foreign issuer, pinned to one algorithm.
#[derive(Clone)]
pub struct ForeignKey {
    kid: Option<String>,
    algorithm: ForeignAlgorithm,
    key: PublicKey,
}

/// A pinned key's public material, in the form its verifier takes.
#[derive(Clone)]
enum PublicKey {
    /// RS256, PS256, ES256, ES384, EdDSA: jsonwebtoken's verifiers.
    Jwt(DecodingKey),
    /// ES512.
    P521(Box<p521::ecdsa::VerifyingKey>),
}

impl PublicKey {
    /// Checks `compact`'s signature under this key with `algorithm` (the key's pinned one).
    fn verify(&self, algorithm: ForeignAlgorithm, compact: &Compact) -> Result<(), JwsError> {
        match (self, algorithm.jwt()) {
            (PublicKey::Jwt(key), Some(alg)) => verify_with(alg, key, compact),
            (PublicKey::P521(key), None) => {
                use p521::ecdsa::signature::Verifier as _;
                // Exactly r || s, 66 bytes each (RFC 7518 §3.4): no DER, no other length.
                let signature = p521::ecdsa::Signature::from_slice(compact.signature())
                    .map_err(|_| JwsError::BadSignature)?;
                key.verify(&compact.signing_input, &signature)
                    .map_err(|_| JwsError::BadSignature)
            }
            // A key is built for its pinned algorithm only (`load_key`).
            _ => Err(JwsError::KeyUnusable),
        }
    }
}

impl fmt::Debug for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl ForeignKey {
    /// The key's `kid`, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm the key verifies.
    pub fn algorithm(&self) -> ForeignAlgorithm {
        self.algorithm
    }
}

/// A foreign token that passed every check of [`TrustedIssuer::verify`].
#[derive(Clone)]
pub struct VerifiedForeign {
    claims: Map<String, Value>,
    expires_at: Timestamp,
    claim_id: String,
    algorithm: ForeignAlgorithm,
    kid: Option<String>,
}

impl fmt::Debug for VerifiedForeign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims stay out of Debug: they may carry personal data.
        f.debug_struct("VerifiedForeign")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .field("claim_id", &self.claim_id)
            .finish_non_exhaustive()
    }
}

impl VerifiedForeign {
    /// Every claim of the payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// `sub`, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// `jti`, when present (always a string: anything else was refused).
    pub fn jti(&self) -> Option<&str> {
        self.claims.get("jti").and_then(Value::as_str)
    }

    /// The instant from which this verifier refuses the token: `exp` plus the leeway. A one-time
    /// claim of the token must be kept at least until then, or the token could be replayed
    /// inside the leeway window after its record was collected.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The identity to claim the token under, once (docs/DESIGN.md §3.4); see [`claim_id`].
    pub fn claim_id(&self) -> &str {
        &self.claim_id
    }

    /// The algorithm the token was verified with.
    pub fn algorithm(&self) -> ForeignAlgorithm {
        self.algorithm
    }

    /// The `kid` of the key that verified the token, if the key had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

/// The one-time-claim identity of a verified foreign token, as 64 lowercase hex digits.
///
/// - With a `jti`: SHA-256 of a domain-separation prefix, then `iss` and `jti`, each preceded by
///   its byte length as a big-endian u64, so no two (`iss`, `jti`) pairs share an encoding.
/// - Without: SHA-256 of another domain-separation prefix, then the **decoded payload bytes**
///   (which include the verified `iss`).
///
/// Never the token text: one token has many spellings (ECDSA's `s` and `n - s` both verify, and
/// the signature is not part of what was signed), and each spelling would be a fresh claim.
pub fn claim_id(issuer: &str, jti: Option<&str>, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    match jti {
        Some(jti) => {
            hash.update(CLAIM_ID_JTI);
            hash.update((issuer.len() as u64).to_be_bytes());
            hash.update(issuer.as_bytes());
            hash.update((jti.len() as u64).to_be_bytes());
            hash.update(jti.as_bytes());
        }
        None => {
            hash.update(CLAIM_ID_PAYLOAD);
            hash.update(payload);
        }
    }
    let digest = hash.finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A foreign issuer whose JWTs we accept: its `iss`, the audience its tokens must name for us,
/// and its verification keys.
#[derive(Clone)]
pub struct TrustedIssuer {
    issuer: String,
    audience: String,
    keys: Vec<ForeignKey>,
    skipped: Vec<SkippedKey>,
    leeway: Duration,
}

/// A key of a JWK Set that was left out (not trusted, not an error): which, and why. Whoever
/// loads a set logs these (the server does at start), so a key the issuer signs with but we
/// cannot use is visible before its first token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedKey {
    /// Its position in the set's `keys`.
    pub index: usize,
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// Why: `use is not sig`, `key_ops lack verify`, or `algorithm or curve not accepted
    /// (<kty> <crv or alg>)`.
    pub reason: String,
}

impl fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys)
            .field("skipped", &self.skipped)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl TrustedIssuer {
    /// An issuer from its JWK Set document, with the default [`JwksOptions`].
    ///
    /// # Errors
    /// A [`JwksError`] when the set or one of its keys is refused (see the module documentation).
    pub fn from_jwks_json(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        json: &str,
    ) -> Result<Self, JwksError> {
        TrustedIssuer::from_jwks_json_with(issuer, audience, json, JwksOptions::default())
    }

    /// An issuer from its JWK Set document, read with `options`.
    ///
    /// # Errors
    /// A [`JwksError`] when the set or one of its keys is refused (see the module documentation).
    pub fn from_jwks_json_with(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        json: &str,
        options: JwksOptions,
    ) -> Result<Self, JwksError> {
        let issuer = issuer.into();
        let audience = audience.into();
        if issuer.is_empty() {
            return Err(JwksError::EmptyIssuer);
        }
        if audience.is_empty() {
            return Err(JwksError::EmptyAudience);
        }
        let (keys, skipped) = load_keys(json, options)?;
        Ok(TrustedIssuer {
            issuer,
            audience,
            keys,
            skipped,
            leeway: DEFAULT_LEEWAY,
        })
    }

    /// An issuer from a JWK Set file, with the default [`JwksOptions`].
    ///
    /// # Errors
    /// [`JwksError::Io`] when the file cannot be read, otherwise as
    /// [`TrustedIssuer::from_jwks_json`].
    pub fn from_jwks_file(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, JwksError> {
        TrustedIssuer::from_jwks_file_with(issuer, audience, path, JwksOptions::default())
    }

    /// An issuer from a JWK Set file, read with `options`.
    ///
    /// # Errors
    /// [`JwksError::Io`] when the file cannot be read, otherwise as
    /// [`TrustedIssuer::from_jwks_json`].
    pub fn from_jwks_file_with(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        path: impl AsRef<Path>,
        options: JwksOptions,
    ) -> Result<Self, JwksError> {
        let file = std::fs::File::open(path).map_err(JwksError::Io)?;
        let mut json = String::new();
        // Read one byte past the limit so an oversize file is recognised without reading it all.
        file.take(MAX_JWKS_LEN as u64 + 1)
            .read_to_string(&mut json)
            .map_err(JwksError::Io)?;
        TrustedIssuer::from_jwks_json_with(issuer, audience, &json, options)
    }

    /// Sets the allowance for clock skew applied to `exp` and `nbf` (default 30 s).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The `iss` tokens must carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The allowance for clock skew.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The usable keys, in the set's order.
    pub fn keys(&self) -> &[ForeignKey] {
        &self.keys
    }

    /// This issuer with only the keys `keep` accepts (e.g. those the issuer still lists after
    /// retiring one, without fetching the set again).
    pub fn retain_keys(&self, keep: impl Fn(&ForeignKey) -> bool) -> TrustedIssuer {
        let mut issuer = self.clone();
        issuer.keys.retain(|k| keep(k));
        issuer
    }

    /// The keys of the set that were left out, and why, in the set's order.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The signature half of [`TrustedIssuer::verify`]: parsing, key selection, the pinned
    /// algorithm and the signature, exactly as `verify` runs them, and nothing about the claims.
    /// It answers "did this issuer sign these bytes?", never "may this token be accepted?"; it
    /// exists for test suites of the signature layer (Wycheproof vectors carry no claims).
    ///
    /// # Errors
    /// [`ForeignError::Jws`] for a malformed token, a mismatched `alg` or a bad signature;
    /// [`ForeignError::UnknownKid`], [`ForeignError::NoKeyForAlgorithm`],
    /// [`ForeignError::KidRequired`] when no single key is named.
    pub fn verify_signature_only(&self, token: &str) -> Result<Compact, ForeignError> {
        Ok(self.verify_signature(token)?.0)
    }

    fn verify_signature(&self, token: &str) -> Result<(Compact, &ForeignKey), ForeignError> {
        let compact = parse_compact(token)?;
        let key = self.select_key(&compact)?;
        if compact.alg() != key.algorithm.as_str() {
            return Err(JwsError::AlgMismatch.into());
        }
        key.key.verify(key.algorithm, &compact)?;
        Ok((compact, key))
    }

    fn select_key(&self, compact: &Compact) -> Result<&ForeignKey, ForeignError> {
        if let Some(kid) = compact.kid() {
            return self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(ForeignError::UnknownKid);
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm.as_str() == compact.alg());
        match (candidates.next(), candidates.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(ForeignError::NoKeyForAlgorithm),
            (Some(_), Some(_)) => Err(ForeignError::KidRequired),
        }
    }

    /// Verifies a token of this issuer at `now`: the signature as in
    /// [`TrustedIssuer::verify_signature_only`], then the claims (module documentation).
    ///
    /// # Errors
    /// The first [`ForeignError`] met; time is checked last, so an expired token with a wrong
    /// audience reports the audience.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedForeign, ForeignError> {
        let (compact, key) = self.verify_signature(token)?;
        let claims = match serde_json::from_slice::<JsonObject>(compact.payload()) {
            Ok(JsonObject::Object(claims)) => claims,
            Ok(JsonObject::Duplicate) => return Err(ForeignError::DuplicateClaim),
            Ok(JsonObject::NotObject) => return Err(ForeignError::PayloadNotObject),
            Err(_) => return Err(ForeignError::PayloadNotJson),
        };
        match claims.get("iss") {
            None => return Err(ForeignError::MissingClaim("iss")),
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(ForeignError::IssuerMismatch),
            Some(_) => return Err(ForeignError::MalformedClaim("iss")),
        }
        let audience_ok = match claims.get("aud") {
            None => return Err(ForeignError::MissingClaim("aud")),
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => {
                let mut found = false;
                for aud in auds {
                    match aud {
                        Value::String(aud) => found |= *aud == self.audience,
                        _ => return Err(ForeignError::MalformedClaim("aud")),
                    }
                }
                found
            }
            Some(_) => return Err(ForeignError::MalformedClaim("aud")),
        };
        if !audience_ok {
            return Err(ForeignError::AudienceMismatch);
        }
        let exp = numeric_date(claims.get("exp"), "exp", f64::floor)?
            .ok_or(ForeignError::MissingClaim("exp"))?;
        let nbf = numeric_date(claims.get("nbf"), "nbf", f64::ceil)?;
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(jti)) => Some(jti.as_str()),
            Some(_) => return Err(ForeignError::MalformedClaim("jti")),
        };
        check_time(Some(exp), nbf, now, self.leeway)?;
        let claim_id = claim_id(&self.issuer, jti, compact.payload());
        Ok(VerifiedForeign {
            expires_at: Timestamp::from_unix_seconds(exp).saturating_add(self.leeway),
            claim_id,
            algorithm: key.algorithm,
            kid: key.kid.clone(),
            claims,
        })
    }
}

/// A JWT NumericDate as whole seconds. Fractions are rounded towards refusal: `exp` down, `nbf`
/// up. Out-of-range values saturate.
fn numeric_date(
    value: Option<&Value>,
    name: &'static str,
    round: fn(f64) -> f64,
) -> Result<Option<i64>, ForeignError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(seconds), _) => Ok(Some(seconds)),
            // `as` saturates for floats; JSON has no NaN.
            (None, Some(seconds)) => Ok(Some(round(seconds) as i64)),
            (None, None) => Err(ForeignError::MalformedClaim(name)),
        },
        Some(_) => Err(ForeignError::MalformedClaim(name)),
    }
}

/// A JWK Set's usable keys and the ones left out.
type LoadedKeys = (Vec<ForeignKey>, Vec<SkippedKey>);

fn load_keys(json: &str, options: JwksOptions) -> Result<LoadedKeys, JwksError> {
    if json.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge);
    }
    let document: Value = serde_json::from_str(json).map_err(|_| JwksError::NotJson)?;
    let entries = document
        .as_object()
        .and_then(|set| set.get("keys"))
        .and_then(Value::as_array)
        .ok_or(JwksError::NotAJwkSet)?;
    let mut keys: Vec<ForeignKey> = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let key = match load_key(index, entry, options)? {
            Loaded::Key(key) => key,
            Loaded::Skipped { kid, reason } => {
                skipped.push(SkippedKey { index, kid, reason });
                continue;
            }
        };
        if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
            return Err(JwksError::DuplicateKid { index });
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys);
    }
    Ok((keys, skipped))
}

/// One JWK, loaded: a key to pin, or one to leave out and why.
enum Loaded {
    Key(ForeignKey),
    Skipped { kid: Option<String>, reason: String },
}

/// A string member of a JWK, if present.
fn string_member<'a>(
    jwk: &'a Map<String, Value>,
    index: usize,
    member: &'static str,
) -> Result<Option<&'a str>, JwksError> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwksError::Malformed { index, member }),
    }
}

/// What to do with one JWK: pin it, skip it, or refuse the set.
fn classify(
    index: usize,
    kty: &str,
    crv: Option<&str>,
    alg: Option<&str>,
    options: JwksOptions,
) -> Result<Option<ForeignAlgorithm>, JwksError> {
    let contradiction = Err(JwksError::AlgorithmContradictsKey { index });
    // Algorithms that are consistent with a key type but that we do not accept: skip the key.
    const RSA_OTHER: [&str; 9] = [
        "RS384",
        "RS512",
        "PS384",
        "PS512",
        "RSA1_5",
        "RSA-OAEP",
        "RSA-OAEP-256",
        "RSA-OAEP-384",
        "RSA-OAEP-512",
    ];
    match kty {
        "RSA" => match alg {
            Some("RS256") => Ok(Some(ForeignAlgorithm::Rs256)),
            Some("PS256") => Ok(Some(ForeignAlgorithm::Ps256)),
            Some(other) if RSA_OTHER.contains(&other) => Ok(None),
            Some(_) => contradiction,
            None => match options.rsa_algorithm {
                Some(alg) => Ok(Some(alg.into())),
                None => Err(JwksError::AmbiguousRsaKey { index }),
            },
        },
        "EC" => {
            let key_agreement = alg.is_some_and(|a| a.starts_with("ECDH-ES"));
            match (crv, alg) {
                (None, _) => Err(JwksError::Malformed {
                    index,
                    member: "crv",
                }),
                (_, Some(_)) if key_agreement => Ok(None),
                (Some("P-256"), None | Some("ES256")) => Ok(Some(ForeignAlgorithm::Es256)),
                (Some("P-384"), None | Some("ES384")) => Ok(Some(ForeignAlgorithm::Es384)),
                (Some("P-521"), None | Some("ES512")) => Ok(Some(ForeignAlgorithm::Es512)),
                (Some("secp256k1"), None | Some("ES256K")) => Ok(None),
                (Some("P-256" | "P-384" | "P-521" | "secp256k1"), Some(_)) => contradiction,
                // A curve we do not know: nothing we could verify with it.
                (Some(_), _) => Ok(None),
            }
        }
        "OKP" => {
            let key_agreement = alg.is_some_and(|a| a.starts_with("ECDH-ES"));
            match (crv, alg) {
                (None, _) => Err(JwksError::Malformed {
                    index,
                    member: "crv",
                }),
                (Some("X25519" | "X448"), None) => Ok(None),
                (Some("X25519" | "X448"), Some(_)) if key_agreement => Ok(None),
                (Some("Ed25519"), None | Some("EdDSA")) => Ok(Some(ForeignAlgorithm::EdDsa)),
                // Ed448, and the fully-specified "Ed25519" algorithm name (RFC 9864), which our
                // pinned "EdDSA" tokens never carry.
                (Some("Ed448"), None | Some("EdDSA" | "Ed448"))
                | (Some("Ed25519"), Some("Ed25519")) => Ok(None),
                (Some("Ed25519" | "Ed448" | "X25519" | "X448"), Some(_)) => contradiction,
                (Some(_), _) => Ok(None),
            }
        }
        // "oct" is refused before classification; other key types are nothing we verify with.
        _ => Ok(None),
    }
}

fn load_key(index: usize, entry: &Value, options: JwksOptions) -> Result<Loaded, JwksError> {
    let jwk = entry.as_object().ok_or(JwksError::NotAnObject { index })?;
    if PRIVATE_MEMBERS
        .iter()
        .any(|member| jwk.contains_key(*member))
    {
        return Err(JwksError::PrivateKeyMaterial { index });
    }
    let kty = string_member(jwk, index, "kty")?.ok_or(JwksError::Malformed {
        index,
        member: "kty",
    })?;
    if kty == "oct" || jwk.contains_key("k") {
        return Err(JwksError::SymmetricKey { index });
    }
    let kid = string_member(jwk, index, "kid")?;
    let alg = string_member(jwk, index, "alg")?;
    let crv = string_member(jwk, index, "crv")?;
    let skip = |reason: String| {
        Ok(Loaded::Skipped {
            kid: kid.map(str::to_owned),
            reason,
        })
    };
    if string_member(jwk, index, "use")?.is_some_and(|key_use| key_use != "sig") {
        return skip("use is not sig".to_owned());
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops.as_array().ok_or(JwksError::Malformed {
            index,
            member: "key_ops",
        })?;
        let mut verifies = false;
        for op in ops {
            let op = op.as_str().ok_or(JwksError::Malformed {
                index,
                member: "key_ops",
            })?;
            verifies |= op == "verify";
        }
        if !verifies {
            return skip("key_ops lack verify".to_owned());
        }
    }
    let Some(algorithm) = classify(index, kty, crv, alg, options)? else {
        // What is shown comes from the set: bounded and printable, as it may reach a log.
        let shown = |s: &str| -> String {
            s.chars()
                .take(32)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect()
        };
        let what = [Some(kty), crv, alg]
            .into_iter()
            .flatten()
            .map(shown)
            .collect::<Vec<_>>()
            .join(" ");
        return skip(format!("algorithm or curve not accepted ({what})"));
    };
    let parsed: Jwk =
        serde_json::from_value(entry.clone()).map_err(|_| JwksError::InvalidKey { index })?;
    let decoding = match (algorithm, &parsed.algorithm) {
        (ForeignAlgorithm::Rs256 | ForeignAlgorithm::Ps256, AlgorithmParameters::RSA(rsa)) => {
            let n = strict_b64(index, &rsa.n)?;
            let e = strict_b64(index, &rsa.e)?;
            check_rsa(index, &n, &e)?;
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        (ForeignAlgorithm::Es512, AlgorithmParameters::EllipticCurve(ec)) => {
            let x = strict_b64(index, &ec.x)?;
            let y = strict_b64(index, &ec.y)?;
            if x.len() != 66 || y.len() != 66 {
                return Err(JwksError::InvalidKey { index });
            }
            let mut sec1 = Vec::with_capacity(133);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            // Decoding checks the point is on the curve and not the identity.
            let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| JwksError::InvalidKey { index })?;
            return Ok(Loaded::Key(ForeignKey {
                kid: kid.map(str::to_owned),
                algorithm,
                key: PublicKey::P521(Box::new(key)),
            }));
        }
        (
            ForeignAlgorithm::Es256 | ForeignAlgorithm::Es384,
            AlgorithmParameters::EllipticCurve(ec),
        ) => {
            let x = strict_b64(index, &ec.x)?;
            let y = strict_b64(index, &ec.y)?;
            let len = if algorithm == ForeignAlgorithm::Es256 {
                32
            } else {
                48
            };
            if x.len() != len || y.len() != len {
                return Err(JwksError::InvalidKey { index });
            }
            DecodingKey::from_jwk(&parsed).map_err(|_| JwksError::InvalidKey { index })?
        }
        (ForeignAlgorithm::EdDsa, AlgorithmParameters::OctetKeyPair(okp)) => {
            // jsonwebtoken slices the first 32 bytes without a length check: check it here.
            if strict_b64(index, &okp.x)?.len() != 32 {
                return Err(JwksError::InvalidKey { index });
            }
            DecodingKey::from_jwk(&parsed).map_err(|_| JwksError::InvalidKey { index })?
        }
        // The members do not match the kty we classified (e.g. kty RSA without n/e).
        _ => return Err(JwksError::InvalidKey { index }),
    };
    // Building a verifier decodes the public key: an EC point off the curve or an Ed25519
    // encoding that does not decompress is refused now, not at the first token.
    let jwt = algorithm.jwt().ok_or(JwksError::InvalidKey { index })?;
    (DEFAULT_PROVIDER.verifier_factory)(&jwt, &decoding)
        .map_err(|_| JwksError::InvalidKey { index })?;
    Ok(Loaded::Key(ForeignKey {
        kid: kid.map(str::to_owned),
        algorithm,
        key: PublicKey::Jwt(decoding),
    }))
}

fn strict_b64(index: usize, text: &str) -> Result<Vec<u8>, JwksError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwksError::InvalidKey { index })
}

/// Small primes for the trial division and the ROCA fingerprint test.
const SMALL_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// The public-key checks of an RSA JWK: size, exponent, and weak moduli.
fn check_rsa(index: usize, n: &[u8], e: &[u8]) -> Result<(), JwksError> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwksError::RsaModulusSize { index, bits });
    }
    if n.last().is_none_or(|low| low & 1 == 0) {
        return Err(JwksError::InvalidKey { index });
    }
    let e = strip_leading_zeros(e);
    if e.len() > 8 {
        return Err(JwksError::RsaExponent { index });
    }
    let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    // The bounds of the rsa crate (which would refuse such a key at every verification), plus
    // oddness: an even exponent is never invertible.
    if e < 3 || e % 2 == 0 || e > (1 << 33) - 1 {
        return Err(JwksError::RsaExponent { index });
    }
    if SMALL_PRIMES.iter().any(|&p| mod_small(n, p) == 0) || roca_fingerprint(n) {
        return Err(JwksError::WeakRsaKey { index });
    }
    Ok(())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// `n mod p` for a big-endian `n`.
fn mod_small(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u32, |r, b| (r * 256 + u32::from(*b)) % p)
}

/// The ROCA fingerprint (Nemec et al., CCS 2017): moduli from the vulnerable Infineon library are
/// built from primes of the form k·M + (65537^a mod M), so for every small prime p dividing M,
/// `n mod p` lies in the subgroup of Z_p* generated by 65537. A random modulus passes that test
/// for all 38 primes with negligible probability.
fn roca_fingerprint(n: &[u8]) -> bool {
    SMALL_PRIMES.iter().all(|&p| {
        let residue = mod_small(n, p);
        let generator = 65537 % p;
        let mut x = 1u32;
        loop {
            if x == residue {
                return true;
            }
            x = x * generator % p;
            if x == 1 {
                return false;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::tests::test_key;
    use crate::jose::{jwks, sign_compact};
    use crate::keys::{Key, KeyAlgorithm};
    use serde_json::json;
    use std::sync::Arc;

    const ISS: &str = "https://idp.example";
    const AUD: &str = "sessiond";
    const NOW: i64 = 1_800_000_000;

    fn now() -> Timestamp {
        Timestamp::from_unix_seconds(NOW)
    }

    /// An issuer whose keys are our own EdDSA test keys, published through `jwks`: the JWKS we
    /// serve is one a foreign verifier (ours) can load.
    fn issuer_of(keys: &[&Arc<Key>]) -> TrustedIssuer {
        let set = jwks(&keys.iter().map(|k| Arc::clone(k)).collect::<Vec<_>>());
        TrustedIssuer::from_jwks_json(ISS, AUD, &set.to_string()).unwrap()
    }

    /// An issuer with one P-521 key (ES512, inferred from the curve or named by `alg`) verifies
    /// ES512 tokens signed by it (r || s, 132 bytes), and nothing else: another key's, a
    /// tampered one, a DER-encoded signature, a key whose point is off the curve.
    #[test]
    fn es512_keys_verify_es512_tokens() {
        use p521::ecdsa::signature::hazmat::RandomizedPrehashSigner as _;
        use p521::ecdsa::{Signature, SigningKey};
        use sha2::Sha512;
        // ECDSA over SHA-512 of the signing input, as ES512 signs.
        let sign_bytes = |key: &SigningKey, msg: &[u8]| -> Signature {
            key.sign_prehash_with_rng(&mut rand_core::OsRng, &Sha512::digest(msg))
                .unwrap()
        };
        let scalar = |seed: u8| {
            let mut s = [0u8; 66];
            s[1..].fill(seed);
            s
        };
        let key = SigningKey::from_slice(&scalar(7)).unwrap();
        let other = SigningKey::from_slice(&scalar(9)).unwrap();
        let point = p521::ecdsa::VerifyingKey::from(&key).to_encoded_point(false);
        let raw = point.as_bytes();
        assert_eq!(raw.len(), 133, "uncompressed P-521 point");
        let (x, y) = raw[1..].split_at(66);
        let claims = json!({"iss": ISS, "aud": AUD, "exp": NOW + 60, "sub": "dev"});
        let input = |kid: &str| {
            let header = json!({"alg": "ES512", "kid": kid, "typ": "JWT"});
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )
        };
        let sign = |key: &SigningKey, kid: &str| {
            let input = input(kid);
            let signature = sign_bytes(key, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        };
        for alg in [None, Some("ES512")] {
            let mut jwk = json!({"kty":"EC","crv":"P-521","kid":"k521",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            let set = json!({ "keys": [jwk] }).to_string();
            let issuer = TrustedIssuer::from_jwks_json(ISS, AUD, &set).unwrap();
            assert_eq!(issuer.keys()[0].algorithm(), ForeignAlgorithm::Es512);
            assert!(issuer.skipped().is_empty());
            let good = sign(&key, "k521");
            let verified = issuer.verify(&good, now()).unwrap();
            assert_eq!(verified.algorithm(), ForeignAlgorithm::Es512);
            assert!(issuer.verify(&sign(&other, "k521"), now()).is_err());
            let mut tampered = good.clone();
            tampered.push('A');
            assert!(issuer.verify(&tampered, now()).is_err());
            let der = sign_bytes(&key, input("k521").as_bytes());
            let der = format!(
                "{}.{}",
                input("k521"),
                URL_SAFE_NO_PAD.encode(der.to_der().as_bytes())
            );
            assert!(issuer.verify(&der, now()).is_err());
        }
        // ES512 named on a P-256 key contradicts it; a point off the curve refuses the set.
        let mut off = y.to_vec();
        off[65] ^= 1;
        let off = json!({"keys":[{"kty":"EC","crv":"P-521","x":URL_SAFE_NO_PAD.encode(x),
            "y":URL_SAFE_NO_PAD.encode(&off)}]});
        assert!(matches!(
            TrustedIssuer::from_jwks_json(ISS, AUD, &off.to_string()),
            Err(JwksError::InvalidKey { .. })
        ));
    }

    /// Keys left out of a set are reported with their index, `kid` and reason.
    #[test]
    fn skipped_keys_are_reported() {
        let set = json!({"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"good","x": URL_SAFE_NO_PAD.encode([0u8; 32])},
            {"kty":"EC","crv":"secp256k1","kid":"k1","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"AA"},
            {"kty":"RSA","alg":"RS512","n":"AA","e":"AQAB"},
        ]});
        let issuer = TrustedIssuer::from_jwks_json(ISS, AUD, &set.to_string()).unwrap();
        let skipped: Vec<(usize, Option<&str>, &str)> = issuer
            .skipped()
            .iter()
            .map(|s| (s.index, s.kid.as_deref(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (
                    1,
                    Some("k1"),
                    "algorithm or curve not accepted (EC secp256k1)"
                ),
                (2, Some("enc"), "use is not sig"),
                (3, None, "algorithm or curve not accepted (RSA RS512)"),
            ]
        );
    }

    /// An issuer with one P-384 key (ES384, inferred from the curve or named by `alg`) verifies
    /// ES384 tokens signed by it, and nothing else: another key's, a tampered one, ES256 under
    /// the same `kid`.
    #[test]
    fn es384_keys_verify_es384_tokens() {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 97, "uncompressed P-384 point");
        let (x, y) = raw[1..].split_at(48);
        let claims = json!({"iss": ISS, "aud": AUD, "exp": NOW + 60, "sub": "dev"});
        let sign = |pair: &rcgen::KeyPair, kid: &str| {
            let mut header = Header::new(jsonwebtoken::Algorithm::ES384);
            header.kid = Some(kid.into());
            let key = EncodingKey::from_ec_der(&pair.serialize_der());
            encode(&header, &claims, &key).unwrap()
        };
        for alg in [None, Some("ES384")] {
            let mut jwk = json!({"kty":"EC","crv":"P-384","kid":"k384",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            let set = json!({ "keys": [jwk] }).to_string();
            let issuer = TrustedIssuer::from_jwks_json(ISS, AUD, &set).unwrap();
            assert_eq!(issuer.keys()[0].algorithm(), ForeignAlgorithm::Es384);
            let good = sign(&pair, "k384");
            let verified = issuer.verify(&good, now()).unwrap();
            assert_eq!(verified.algorithm(), ForeignAlgorithm::Es384);
            assert!(issuer.verify(&sign(&other, "k384"), now()).is_err());
            let mut tampered = good.clone();
            tampered.push('A');
            assert!(issuer.verify(&tampered, now()).is_err());
        }
        // A P-384 point of the wrong length refuses the set.
        let short = json!({"keys":[{"kty":"EC","crv":"P-384","x":URL_SAFE_NO_PAD.encode(&x[..32]),
            "y":URL_SAFE_NO_PAD.encode(&y[..32])}]});
        assert!(matches!(
            TrustedIssuer::from_jwks_json(ISS, AUD, &short.to_string()),
            Err(JwksError::InvalidKey { .. })
        ));
    }

    fn token(key: &Key, header: Value, claims: Value) -> String {
        let header = header.as_object().unwrap().clone();
        sign_compact(key, &header, claims.to_string().as_bytes())
            .unwrap()
            .expose()
            .clone()
    }

    fn good_claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 60, "jti": "j-1"})
    }

    fn ec_jwk(extra: Value) -> Value {
        // RFC 7515 A.3's P-256 public key.
        let mut jwk = json!({"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    /// A 2048-bit RSA modulus (RFC 7515 A.2's) for load-time checks.
    const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    fn rsa_jwk(extra: Value) -> Value {
        let mut jwk = json!({"kty":"RSA","n":RSA_N,"e":"AQAB"});
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    fn load(keys: Value) -> Result<TrustedIssuer, JwksError> {
        TrustedIssuer::from_jwks_json(ISS, AUD, &json!({ "keys": keys }).to_string())
    }

    #[test]
    fn accepts_a_good_token_and_derives_its_identity() {
        let key = Arc::new(test_key(KeyAlgorithm::EdDsa, 1));
        let issuer = issuer_of(&[&key]);
        let kid = key.id().as_str();
        let t = token(&key, json!({"kid": kid}), good_claims());
        let v = issuer.verify(&t, now()).unwrap();
        assert_eq!(v.subject(), Some("alice"));
        assert_eq!(v.jti(), Some("j-1"));
        assert_eq!(v.kid(), Some(kid));
        assert_eq!(v.algorithm(), ForeignAlgorithm::EdDsa);
        assert_eq!(v.expires_at(), Timestamp::from_unix_seconds(NOW + 60 + 30));
        assert_eq!(v.claim_id(), claim_id(ISS, Some("j-1"), b"ignored"));
        assert_eq!(v.claim_id().len(), 64);
        // Debug leaks no claims.
        assert!(!format!("{v:?}").contains("alice"));
    }

    #[test]
    fn claim_ids_are_domain_separated_and_length_prefixed() {
        let a = claim_id("ab", Some("c"), b"");
        assert_ne!(a, claim_id("a", Some("bc"), b""));
        assert_ne!(claim_id("i", Some("j"), b"x"), claim_id("i", None, b"x"));
        // The same payload under jti-less keying gives the same id whatever the token text.
        assert_eq!(claim_id("i", None, b"{}"), claim_id("other", None, b"{}"));
        // Pinned values: a change of encoding is a change of every stored claim id.
        let mut h = Sha256::new();
        h.update(b"sessiond/claim-id/v1/iss+jti\0");
        h.update(2u64.to_be_bytes());
        h.update(b"ab");
        h.update(1u64.to_be_bytes());
        h.update(b"c");
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, expected);
    }

    #[test]
    fn token_without_jti_is_keyed_on_the_decoded_payload() {
        let key = Arc::new(test_key(KeyAlgorithm::EdDsa, 2));
        let issuer = issuer_of(&[&key]);
        let claims = json!({"iss": ISS, "aud": [AUD, "other"], "exp": NOW + 60});
        let t = token(&key, json!({}), claims.clone());
        let v = issuer.verify(&t, now()).unwrap();
        assert_eq!(
            v.claim_id(),
            claim_id(ISS, None, claims.to_string().as_bytes())
        );
    }

    #[test]
    fn claims_negative_table() {
        let key = Arc::new(test_key(KeyAlgorithm::EdDsa, 3));
        let issuer = issuer_of(&[&key]);
        let kid = key.id().as_str().to_owned();
        // Key confusion: an HS256 key whose secret is the issuer's public key bytes.
        let public = key.ed25519().unwrap().verifying_key().to_bytes().to_vec();
        let confused = Key::from_material(
            crate::id::KeyId::generate(&crate::random::SeededRandom::new(1)),
            crate::keys::KeyPurpose::Access,
            KeyAlgorithm::Hs256,
            crate::secret::Secret::new(public),
            Timestamp::EPOCH,
        )
        .unwrap();
        let with = |patch: Value| {
            let mut c = good_claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            c
        };
        let signed = |claims: Value| token(&key, json!({"kid": kid}), claims);
        let raw = |payload: &str| {
            sign_compact(
                &key,
                json!({"kid": kid}).as_object().unwrap(),
                payload.as_bytes(),
            )
            .unwrap()
            .expose()
            .clone()
        };
        let cases: Vec<(&str, String, ForeignError)> = vec![
            (
                "payload not json",
                raw("not json"),
                ForeignError::PayloadNotJson,
            ),
            (
                "payload an array",
                raw("[1]"),
                ForeignError::PayloadNotObject,
            ),
            (
                "duplicate aud",
                raw(&format!(
                    r#"{{"iss":"{ISS}","aud":"x","aud":"{AUD}","exp":{}}}"#,
                    NOW + 60
                )),
                ForeignError::DuplicateClaim,
            ),
            (
                "no iss",
                signed(with(json!({"iss": null}))),
                ForeignError::MissingClaim("iss"),
            ),
            (
                "other iss",
                signed(with(json!({"iss": "https://evil.example"}))),
                ForeignError::IssuerMismatch,
            ),
            (
                "iss not a string",
                signed(with(json!({"iss": [ISS]}))),
                ForeignError::MalformedClaim("iss"),
            ),
            (
                "no aud",
                signed(with(json!({"aud": null}))),
                ForeignError::MissingClaim("aud"),
            ),
            (
                "other aud",
                signed(with(json!({"aud": "api"}))),
                ForeignError::AudienceMismatch,
            ),
            (
                "aud array without us",
                signed(with(json!({"aud": ["api", "web"]}))),
                ForeignError::AudienceMismatch,
            ),
            (
                "aud empty array",
                signed(with(json!({"aud": []}))),
                ForeignError::AudienceMismatch,
            ),
            (
                "aud array with a number",
                signed(with(json!({"aud": [AUD, 1]}))),
                ForeignError::MalformedClaim("aud"),
            ),
            (
                "aud a number",
                signed(with(json!({"aud": 1}))),
                ForeignError::MalformedClaim("aud"),
            ),
            (
                "no exp",
                signed(with(json!({"exp": null}))),
                ForeignError::MissingClaim("exp"),
            ),
            (
                "exp a string",
                signed(with(json!({"exp": "soon"}))),
                ForeignError::MalformedClaim("exp"),
            ),
            (
                "nbf a bool",
                signed(with(json!({"nbf": true}))),
                ForeignError::MalformedClaim("nbf"),
            ),
            (
                "jti a number",
                signed(with(json!({"jti": 7}))),
                ForeignError::MalformedClaim("jti"),
            ),
            (
                "expired past leeway",
                signed(with(json!({"exp": NOW - 30}))),
                JwsError::Expired.into(),
            ),
            (
                "expired by a fraction",
                signed(with(json!({"exp": (NOW - 30) as f64 + 0.9}))),
                JwsError::Expired.into(),
            ),
            (
                "not yet valid",
                signed(with(json!({"nbf": NOW + 31}))),
                JwsError::NotYetValid.into(),
            ),
            (
                "not yet valid by a fraction",
                signed(with(json!({"nbf": (NOW + 30) as f64 + 0.1}))),
                JwsError::NotYetValid.into(),
            ),
            (
                "unknown kid",
                token(&key, json!({"kid": "sk-unknown"}), good_claims()),
                ForeignError::UnknownKid,
            ),
            (
                "signed by a key the issuer does not have",
                token(
                    &test_key(KeyAlgorithm::EdDsa, 99),
                    json!({"kid": kid}),
                    good_claims(),
                ),
                JwsError::BadSignature.into(),
            ),
            (
                "HS256 with the issuer's public key as secret",
                token(&confused, json!({"kid": kid}), good_claims()),
                JwsError::AlgMismatch.into(),
            ),
        ];
        for (name, t, expected) in &cases {
            assert_eq!(
                issuer.verify(t, now()).err(),
                Some(*expected),
                "case: {name}"
            );
        }
        // Inside the leeway on both sides.
        issuer
            .verify(
                &signed(with(json!({"exp": NOW - 29, "nbf": NOW + 30}))),
                now(),
            )
            .unwrap();
        // The leeway is configurable.
        let strict = issuer.clone().with_leeway(Duration::ZERO);
        assert_eq!(
            strict
                .verify(&signed(with(json!({"exp": NOW}))), now())
                .err(),
            Some(JwsError::Expired.into())
        );
    }

    #[test]
    fn missing_kid_needs_exactly_one_key_for_the_alg() {
        let a = Arc::new(test_key(KeyAlgorithm::EdDsa, 4));
        let b = Arc::new(test_key(KeyAlgorithm::EdDsa, 5));
        let one = issuer_of(&[&a]);
        let two = issuer_of(&[&a, &b]);
        let no_kid = token(&a, json!({}), good_claims());
        one.verify(&no_kid, now()).unwrap();
        assert_eq!(
            two.verify(&no_kid, now()).err(),
            Some(ForeignError::KidRequired)
        );
        let hs = token(&test_key(KeyAlgorithm::Hs256, 4), json!({}), good_claims());
        assert_eq!(
            one.verify(&hs, now()).err(),
            Some(ForeignError::NoKeyForAlgorithm)
        );
        // With a kid, the second key's tokens verify.
        let by_b = token(&b, json!({"kid": b.id().as_str()}), good_claims());
        two.verify(&by_b, now()).unwrap();
    }

    #[test]
    fn jwks_load_table() {
        let ed_x = URL_SAFE_NO_PAD.encode(
            test_key(KeyAlgorithm::EdDsa, 6)
                .ed25519()
                .unwrap()
                .verifying_key()
                .as_bytes(),
        );
        let ok = |keys: Value| {
            load(keys).map(|i| {
                i.keys()
                    .iter()
                    .map(|k| (k.kid().map(str::to_owned), k.algorithm()))
                    .collect::<Vec<_>>()
            })
        };
        // Accepted, with the pinned algorithm.
        assert_eq!(
            ok(json!([ec_jwk(json!({"kid":"a"}))])).unwrap(),
            vec![(Some("a".into()), ForeignAlgorithm::Es256)]
        );
        assert_eq!(
            ok(json!([ec_jwk(json!({"alg":"ES256","use":"sig"}))])).unwrap(),
            vec![(None, ForeignAlgorithm::Es256)]
        );
        assert_eq!(
            ok(json!([{"kty":"OKP","crv":"Ed25519","x":ed_x}])).unwrap(),
            vec![(None, ForeignAlgorithm::EdDsa)]
        );
        assert_eq!(
            ok(json!([rsa_jwk(json!({"alg":"PS256"}))])).unwrap(),
            vec![(None, ForeignAlgorithm::Ps256)]
        );
        assert_eq!(
            ok(json!([rsa_jwk(
                json!({"alg":"RS256","kid":"r","key_ops":["verify"]})
            )]))
            .unwrap(),
            vec![(Some("r".into()), ForeignAlgorithm::Rs256)]
        );
        // Unusable keys are skipped, usable ones kept.
        assert_eq!(
            ok(json!([
                ec_jwk(json!({"kid":"enc","use":"enc"})),
                ec_jwk(json!({"kid":"ops","key_ops":["encrypt"]})),
                rsa_jwk(json!({"kid":"r5","alg":"RS512"})),
                rsa_jwk(json!({"kid":"oaep","alg":"RSA-OAEP-256"})),
                {"kty":"OKP","crv":"X25519","x":ed_x,"kid":"x"},
                {"kty":"OKP","crv":"Ed448","x":"AA","kid":"ed448"},
                ec_jwk(json!({"kid":"ecdh","alg":"ECDH-ES"})),
                {"kty":"EC","crv":"secp256k1","x":"AA","y":"AA","kid":"k1"},
                ec_jwk(json!({"kid":"ok"})),
            ]))
            .unwrap(),
            vec![(Some("ok".into()), ForeignAlgorithm::Es256)]
        );

        let mut small_n = URL_SAFE_NO_PAD.decode(RSA_N).unwrap();
        small_n.truncate(128);
        small_n[127] |= 1;
        let mut even_n = URL_SAFE_NO_PAD.decode(RSA_N).unwrap();
        *even_n.last_mut().unwrap() &= 0xfe;
        let refused: Vec<(&str, Value, &str)> = vec![
            ("not an object", json!(["x"]), "NotAnObject"),
            ("no kty", json!([{"crv":"P-256"}]), "Malformed"),
            (
                "kid not a string",
                json!([ec_jwk(json!({"kid":1}))]),
                "Malformed",
            ),
            (
                "alg not a string",
                json!([ec_jwk(json!({"alg":["ES256"]}))]),
                "Malformed",
            ),
            (
                "private EC key",
                json!([ec_jwk(
                    json!({"d":"jpsQnnGQmL-YBIffH1136cLNEcfJbWCfcFnp4vG5Jj4"})
                )]),
                "PrivateKeyMaterial",
            ),
            (
                "private RSA key",
                json!([rsa_jwk(json!({"alg":"RS256","p":"AQ"}))]),
                "PrivateKeyMaterial",
            ),
            (
                "private key even with use enc",
                json!([ec_jwk(json!({"use":"enc","d":"AA"}))]),
                "PrivateKeyMaterial",
            ),
            (
                "oct key",
                json!([{"kty":"oct","alg":"HS256","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ"}]),
                "SymmetricKey",
            ),
            (
                "oct key beside a good one",
                json!([ec_jwk(json!({})), {"kty":"oct","k":"AA"}]),
                "SymmetricKey",
            ),
            (
                "ES256 on P-384",
                json!([{"kty":"EC","crv":"P-384","alg":"ES256","x":"AA","y":"AA"}]),
                "AlgorithmContradictsKey",
            ),
            (
                "ES512 on P-256",
                json!([ec_jwk(json!({"alg":"ES512"}))]),
                "AlgorithmContradictsKey",
            ),
            (
                "RS256 on P-256",
                json!([ec_jwk(json!({"alg":"RS256"}))]),
                "AlgorithmContradictsKey",
            ),
            (
                "unknown alg on P-256",
                json!([ec_jwk(json!({"alg":"ES224"}))]),
                "AlgorithmContradictsKey",
            ),
            (
                "HS256 on RSA",
                json!([rsa_jwk(json!({"alg":"HS256"}))]),
                "AlgorithmContradictsKey",
            ),
            (
                "ES256 on RSA",
                json!([rsa_jwk(json!({"alg":"ES256"}))]),
                "AlgorithmContradictsKey",
            ),
            (
                "ES256 on Ed25519",
                json!([{"kty":"OKP","crv":"Ed25519","alg":"ES256","x":ed_x}]),
                "AlgorithmContradictsKey",
            ),
            (
                "RSA without alg",
                json!([rsa_jwk(json!({}))]),
                "AmbiguousRsaKey",
            ),
            (
                "RSA 1024 bits",
                json!([rsa_jwk(
                    json!({"alg":"RS256","n":URL_SAFE_NO_PAD.encode(&small_n)})
                )]),
                "RsaModulusSize",
            ),
            (
                "RSA even modulus",
                json!([rsa_jwk(
                    json!({"alg":"RS256","n":URL_SAFE_NO_PAD.encode(&even_n)})
                )]),
                "InvalidKey",
            ),
            (
                "RSA e = 1",
                json!([rsa_jwk(json!({"alg":"RS256","e":"AQ"}))]),
                "RsaExponent",
            ),
            (
                "RSA e even",
                json!([rsa_jwk(json!({"alg":"RS256","e":"AQAA"}))]),
                "RsaExponent",
            ),
            (
                "RSA e huge",
                json!([rsa_jwk(json!({"alg":"RS256","e":"AQAAAAAAAAAB"}))]),
                "RsaExponent",
            ),
            (
                "RSA without n",
                json!([{"kty":"RSA","alg":"RS256","e":"AQAB"}]),
                "InvalidKey",
            ),
            (
                "RSA n padded",
                json!([rsa_jwk(json!({"alg":"RS256","n":format!("{RSA_N}=")}))]),
                "InvalidKey",
            ),
            (
                "EC point off the curve",
                json!([ec_jwk(
                    json!({"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI6a0"})
                )]),
                "InvalidKey",
            ),
            (
                "EC x too short",
                json!([ec_jwk(
                    json!({"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVA"})
                )]),
                "InvalidKey",
            ),
            (
                "Ed25519 x too short",
                json!([{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]),
                "InvalidKey",
            ),
            (
                "Ed25519 x too long",
                json!([{"kty":"OKP","crv":"Ed25519","x":format!("{ed_x}AAAA")}]),
                "InvalidKey",
            ),
            (
                "duplicate kid",
                json!([ec_jwk(json!({"kid":"a"})), {"kty":"OKP","crv":"Ed25519","x":ed_x,"kid":"a"}]),
                "DuplicateKid",
            ),
            (
                "only skipped keys",
                json!([ec_jwk(json!({"use":"enc"}))]),
                "NoUsableKeys",
            ),
            ("empty set", json!([]), "NoUsableKeys"),
        ];
        for (name, keys, expected) in &refused {
            let err = load(keys.clone())
                .err()
                .unwrap_or_else(|| panic!("case {name} loaded"));
            let variant = format!("{err:?}");
            assert!(variant.starts_with(expected), "case {name}: {variant}");
        }
        assert!(matches!(
            TrustedIssuer::from_jwks_json(ISS, AUD, "[]"),
            Err(JwksError::NotAJwkSet)
        ));
        assert!(matches!(
            TrustedIssuer::from_jwks_json(ISS, AUD, "{"),
            Err(JwksError::NotJson)
        ));
        assert!(matches!(
            TrustedIssuer::from_jwks_json("", AUD, "{}"),
            Err(JwksError::EmptyIssuer)
        ));
        assert!(matches!(
            TrustedIssuer::from_jwks_json(ISS, AUD, &" ".repeat(MAX_JWKS_LEN + 1)),
            Err(JwksError::TooLarge)
        ));
    }

    #[test]
    fn rsa_without_alg_takes_the_configured_algorithm() {
        let set =
            json!({"keys": [rsa_jwk(json!({})), rsa_jwk(json!({"alg":"RS256","kid":"named"}))]});
        let options = JwksOptions::new().rsa_algorithm(RsaAlgorithm::Ps256);
        let issuer =
            TrustedIssuer::from_jwks_json_with(ISS, AUD, &set.to_string(), options).unwrap();
        let algs: Vec<_> = issuer.keys().iter().map(ForeignKey::algorithm).collect();
        assert_eq!(algs, vec![ForeignAlgorithm::Ps256, ForeignAlgorithm::Rs256]);
    }

    #[test]
    fn rsa_weak_moduli_are_refused() {
        let n = URL_SAFE_NO_PAD.decode(RSA_N).unwrap();
        assert!(check_rsa(0, &n, &[1, 0, 1]).is_ok());
        assert!(!roca_fingerprint(&n));
        // 2^2048 - 1: odd, 2048 bits, and a multiple of 3.
        let multiple_of_3 = vec![0xffu8; 256];
        assert_eq!(mod_small(&multiple_of_3, 3), 0);
        assert!(matches!(
            check_rsa(0, &multiple_of_3, &[1, 0, 1]),
            Err(JwksError::WeakRsaKey { .. })
        ));
        // A leading zero byte does not change the size.
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        assert!(check_rsa(0, &padded, &[1, 0, 1]).is_ok());
    }

    #[test]
    fn verifiers_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<TrustedIssuer>();
        send_sync::<VerifiedForeign>();
        send_sync::<ForeignError>();
        send_sync::<JwksError>();
    }

    #[test]
    fn jwks_file_loading() {
        let key = Arc::new(test_key(KeyAlgorithm::EdDsa, 8));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idp-jwks.json");
        std::fs::write(&path, jwks(std::slice::from_ref(&key)).to_string()).unwrap();
        let issuer = TrustedIssuer::from_jwks_file(ISS, AUD, &path).unwrap();
        assert_eq!(issuer.keys().len(), 1);
        assert!(matches!(
            TrustedIssuer::from_jwks_file(ISS, AUD, dir.path().join("missing.json")),
            Err(JwksError::Io(_))
        ));
    }
}
