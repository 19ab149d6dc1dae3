//! The login code of the browser login handoff, wire format version 1 (docs/DESIGN.md §3.7).
//!
//! ```text
//! lc1.<key_id>.<payload>.<mac>
//! payload = base64url-no-pad(JSON {sid, sub, ten, clm, cc, exp, n})
//! mac     = base64url-no-pad(HMAC-SHA256(cookie key, "sessiond/login-code/v1\0" key_id "." payload))
//! ```
//!
//! The code is self-contained: nothing is stored when it is made. It names the session it will
//! create (`sid`), whose it is (`sub`, `ten`, `clm`), the PKCE challenge its exchange must answer
//! (`cc`, S256), its expiry (`exp`, Unix milliseconds) and 128 random bits (`n`), so no two codes
//! are alike. The MAC is keyed by a cookie key (the key ring's HMAC purpose) behind a label of its
//! own, so no cookie MAC is ever a login-code MAC or the other way round. Parsing is strict:
//! four segments, `lc1` only, at most [`MAX_LEN`] characters, a canonical key id, a MAC of
//! exactly 32 bytes compared in constant time, and only then is the payload decoded.
//! Single use is not the format's business: the exchange claims the code once through the claim
//! store (`crate::SessionService::exchange_login_code`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;
use crate::id::KeyId;
use crate::keys::Key;
use crate::secret::Secret;

/// The only accepted version prefix.
pub const VERSION: &str = "lc1";
/// The longest login code made or accepted (characters, all ASCII).
pub const MAX_LEN: usize = 2048;
/// The MAC's domain-separation label.
const LABEL: &[u8] = b"sessiond/login-code/v1\0";
/// The length of an S256 code challenge: base64url without padding of 32 bytes.
pub const CHALLENGE_LEN: usize = 43;

/// Why a login code (or its verifier) was refused. Every variant is a uniform 401 to the
/// outside; the variant goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginCodeError {
    /// Not a v1 login code: empty, too long, wrong segments or version, bad key id or MAC
    /// encoding, or a payload that does not decode (after its MAC verified).
    #[error("login code is malformed")]
    Malformed,
    /// The MAC does not verify under the named key.
    #[error("login code MAC does not verify")]
    BadMac,
    /// The key cannot compute MACs (defence in depth; cookie keys always can).
    #[error("login code key cannot compute MACs")]
    KeyNotHmac,
    /// The code verifier is malformed or its S256 hash is not the code's challenge.
    #[error("code verifier does not match the challenge")]
    VerifierMismatch,
}

impl LoginCodeError {
    /// A stable reason code for logs, metrics and audit records.
    pub fn reason(self) -> &'static str {
        match self {
            LoginCodeError::Malformed => "login_code_malformed",
            LoginCodeError::BadMac | LoginCodeError::KeyNotHmac => "login_code_bad_mac",
            LoginCodeError::VerifierMismatch => "code_verifier_mismatch",
        }
    }
}

/// What a login code carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The id the session will have.
    pub sid: String,
    /// The user.
    pub sub: String,
    /// The tenant.
    pub ten: String,
    /// The session's custom claims.
    pub clm: Map<String, Value>,
    /// The S256 code challenge.
    pub cc: String,
    /// The expiry, Unix milliseconds.
    pub exp: i64,
    /// 16 random bytes, base64url.
    pub n: String,
}

impl Payload {
    /// The expiry as a timestamp.
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.exp)
    }
}

fn keyed(key: &Key) -> Result<Hmac<Sha256>, LoginCodeError> {
    key.hmac().cloned().ok_or(LoginCodeError::KeyNotHmac)
}

fn feed(mut mac: Hmac<Sha256>, key_id: &str, payload: &str) -> Hmac<Sha256> {
    mac.update(LABEL);
    mac.update(key_id.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac
}

/// Whether `challenge` is an S256 code challenge: exactly 43 base64url characters (32 bytes).
pub fn is_challenge(challenge: &str) -> bool {
    challenge.len() == CHALLENGE_LEN
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// Checks `verifier` against the S256 `challenge` in constant time: 43 to 128 characters of
/// `[A-Za-z0-9-._~]` (RFC 7636), whose SHA-256, base64url without padding, is the challenge.
///
/// # Errors
/// [`LoginCodeError::VerifierMismatch`].
pub fn check_verifier(challenge: &str, verifier: &str) -> Result<(), LoginCodeError> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let equal: bool = computed.as_bytes().ct_eq(challenge.as_bytes()).into();
    if well_formed && equal {
        Ok(())
    } else {
        Err(LoginCodeError::VerifierMismatch)
    }
}

/// Builds the login code of `payload`, MAC'd by `key`.
///
/// # Errors
/// [`LoginCodeError::KeyNotHmac`] for a key without HMAC material; [`LoginCodeError::Malformed`]
/// when the code would be longer than [`MAX_LEN`] (too many claims).
pub fn encode(payload: &Payload, key: &Key) -> Result<Secret<String>, LoginCodeError> {
    let json = serde_json::to_vec(payload).map_err(|_| LoginCodeError::Malformed)?;
    let body = URL_SAFE_NO_PAD.encode(json);
    let mac = feed(keyed(key)?, key.id().as_str(), &body)
        .finalize()
        .into_bytes();
    let code = format!(
        "{VERSION}.{}.{body}.{}",
        key.id().as_str(),
        URL_SAFE_NO_PAD.encode(mac)
    );
    if code.len() > MAX_LEN {
        return Err(LoginCodeError::Malformed);
    }
    Ok(Secret::new(code))
}

/// A login code that parsed; its MAC is not yet verified and its payload not yet decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCode<'a> {
    key_id: KeyId,
    body: &'a str,
    mac: [u8; 32],
}

impl ParsedCode<'_> {
    /// The key the code claims to be MAC'd with.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Verifies the MAC under `key` (constant time), then decodes the payload.
    ///
    /// # Errors
    /// [`LoginCodeError::BadMac`], [`LoginCodeError::KeyNotHmac`], or
    /// [`LoginCodeError::Malformed`] for a payload that does not decode.
    pub fn verify(&self, key: &Key) -> Result<Payload, LoginCodeError> {
        feed(keyed(key)?, self.key_id.as_str(), self.body)
            // `verify_slice` compares in constant time (subtle).
            .verify_slice(&self.mac)
            .map_err(|_| LoginCodeError::BadMac)?;
        let json = URL_SAFE_NO_PAD
            .decode(self.body)
            .map_err(|_| LoginCodeError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| LoginCodeError::Malformed)
    }
}

/// Parses a login code. Does not verify the MAC.
///
/// # Errors
/// [`LoginCodeError::Malformed`].
pub fn parse(code: &str) -> Result<ParsedCode<'_>, LoginCodeError> {
    if code.is_empty() || code.len() > MAX_LEN {
        return Err(LoginCodeError::Malformed);
    }
    let mut parts = code.split('.');
    let (Some(VERSION), Some(kid), Some(body), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(LoginCodeError::Malformed);
    };
    let key_id = KeyId::parse(kid).map_err(|_| LoginCodeError::Malformed)?;
    let mac: [u8; 32] = URL_SAFE_NO_PAD
        .decode(mac)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(LoginCodeError::Malformed)?;
    Ok(ParsedCode { key_id, body, mac })
}

/// The claim-store id of a login code: SHA-256 of its text, base64url (never the text itself).
pub fn claim_id(code: &str) -> String {
    format!(
        "login:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(code.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, KeyPurpose};
    use crate::random::SeededRandom;

    fn hmac_key() -> Key {
        Key::from_material(
            KeyId::generate(&SeededRandom::new(7)),
            KeyPurpose::Cookie,
            KeyAlgorithm::Hs256,
            Secret::new(vec![7; 32]),
            Timestamp::EPOCH,
        )
        .unwrap()
    }

    fn payload() -> Payload {
        Payload {
            sid: "ses-AAAAAAAAAAAAAAAAAAAAAA".into(),
            sub: "alice".into(),
            ten: "default".into(),
            clm: Map::new(),
            cc: URL_SAFE_NO_PAD.encode(Sha256::digest(b"v".repeat(43))),
            exp: 1_000,
            n: "bm9uY2U".into(),
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let key = hmac_key();
        let code = encode(&payload(), &key).unwrap();
        let text = code.expose();
        assert!(text.starts_with("lc1.") && text.len() <= MAX_LEN);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.key_id(), key.id());
        assert_eq!(parsed.verify(&key).unwrap(), payload());

        // Any changed segment fails: version, key id, payload, MAC, extra or missing segments.
        let segs: Vec<&str> = text.split('.').collect();
        let other_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Payload {
                sub: "mallory".into(),
                ..payload()
            })
            .unwrap(),
        );
        let flipped_mac = {
            let mut m = URL_SAFE_NO_PAD.decode(segs[3]).unwrap();
            m[0] ^= 1;
            URL_SAFE_NO_PAD.encode(m)
        };
        let cases: Vec<(String, LoginCodeError)> = vec![
            (String::new(), LoginCodeError::Malformed),
            ("x".repeat(MAX_LEN + 1), LoginCodeError::Malformed),
            (
                format!("lc2.{}.{}.{}", segs[1], segs[2], segs[3]),
                LoginCodeError::Malformed,
            ),
            (format!("{text}.x"), LoginCodeError::Malformed),
            (
                format!("lc1.{}.{}", segs[1], segs[2]),
                LoginCodeError::Malformed,
            ),
            (
                format!("lc1.nope.{}.{}", segs[2], segs[3]),
                LoginCodeError::Malformed,
            ),
            (
                format!("lc1.{}.{}.AAAA", segs[1], segs[2]),
                LoginCodeError::Malformed,
            ),
            (
                format!("lc1.{}.{other_body}.{}", segs[1], segs[3]),
                LoginCodeError::BadMac,
            ),
            (
                format!("lc1.{}.{}.{flipped_mac}", segs[1], segs[2]),
                LoginCodeError::BadMac,
            ),
        ];
        for (input, want) in cases {
            let got = parse(&input).and_then(|p| p.verify(&key));
            assert_eq!(got, Err(want), "{input:.40}");
        }
        // The same payload under the cookie format's MAC input does not verify.
        let cookie_mac = crate::cookie::compute_mac(&key, segs[2], segs[1]).unwrap();
        let forged = format!(
            "lc1.{}.{}.{}",
            segs[1],
            segs[2],
            URL_SAFE_NO_PAD.encode(cookie_mac)
        );
        assert_eq!(
            parse(&forged).and_then(|p| p.verify(&key)),
            Err(LoginCodeError::BadMac)
        );
        // Two codes of one payload differ only if the payload does (the nonce makes them differ).
        assert_ne!(claim_id(text), claim_id(&format!("{text}x")));
        assert!(!claim_id(text).contains(text));
    }

    #[test]
    fn challenges_and_verifiers() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        // RFC 7636 appendix B.
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_challenge(challenge));
        assert_eq!(check_verifier(challenge, verifier), Ok(()));
        for bad in [
            "",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c=",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
        ] {
            assert!(!is_challenge(bad), "{bad}");
        }
        for bad in [
            "",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            "short",
            &"a".repeat(129),
        ] {
            assert_eq!(
                check_verifier(challenge, bad),
                Err(LoginCodeError::VerifierMismatch)
            );
        }
    }
}
