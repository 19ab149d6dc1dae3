//! Known-answer tests of the JWS layer against the RFCs' own examples: RFC 7515 A.1 (HS256),
//! RFC 7515 A.3 (ES256, through a foreign issuer's JWK) and RFC 8037 A.4 (Ed25519, where
//! signing is deterministic, so our signature must be the RFC's byte for byte).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sessiond::jose::foreign::{claim_id, ForeignError, TrustedIssuer};
use sessiond::jose::{self, JwsError};
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::{Clock, KeyId, ManualClock, Secret, SeededRandom, Timestamp};

/// The payload of RFC 7515 A.1–A.3, CRLF line breaks included.
const RFC7515_PAYLOAD_B64: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const RFC7515_PAYLOAD: &[u8] =
    b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
const RFC7515_EXP: i64 = 1_300_819_380;

/// RFC 7515 A.1.
const A1_HEADER_B64: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
const A1_KEY_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A1_SIGNATURE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// RFC 7515 A.3.
const A3_HEADER_B64: &str = "eyJhbGciOiJFUzI1NiJ9";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// RFC 8037 A.1 key and A.4 signature.
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const A4_PAYLOAD: &[u8] = b"Example of Ed25519 signing";
const A4_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.\
     hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// The order of the P-256 group, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn key(algorithm: KeyAlgorithm, material_b64: &str) -> Key {
    Key::from_material(
        KeyId::generate(&SeededRandom::new(1)),
        KeyPurpose::Access,
        algorithm,
        Secret::new(URL_SAFE_NO_PAD.decode(material_b64).unwrap()),
        Timestamp::EPOCH,
    )
    .unwrap()
}

#[test]
fn rfc7515_a1_hs256() {
    let token = format!("{A1_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{A1_SIGNATURE}");
    let key = key(KeyAlgorithm::Hs256, A1_KEY_K);
    let compact = jose::parse_compact(&token).unwrap();
    assert_eq!(
        (compact.alg(), compact.typ(), compact.kid()),
        ("HS256", Some("JWT"), None)
    );
    assert_eq!(compact.payload(), RFC7515_PAYLOAD);
    jose::verify(&key, &compact).unwrap();
    // Our HMAC over the RFC's signing input is the RFC's MAC.
    let mac = jose::sign(&key, compact.signing_input()).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.encode(mac), A1_SIGNATURE);

    // The token's exp, on a clock pinned a minute before it, and at it.
    let claims: Value = serde_json::from_slice(compact.payload()).unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp, RFC7515_EXP);
    let clock = ManualClock::new(Timestamp::from_unix_seconds(exp - 60));
    jose::check_time(Some(exp), None, clock.now(), Duration::ZERO).unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        jose::check_time(Some(exp), None, clock.now(), Duration::ZERO),
        Err(JwsError::Expired)
    );

    // One bit of the payload changed: the MAC no longer verifies.
    let tampered = format!("{A1_HEADER_B64}.{}.{A1_SIGNATURE}", {
        let mut p = RFC7515_PAYLOAD.to_vec();
        p[8] ^= 1;
        URL_SAFE_NO_PAD.encode(p)
    });
    let tampered = jose::parse_compact(&tampered).unwrap();
    assert_eq!(jose::verify(&key, &tampered), Err(JwsError::BadSignature));
}

fn a3_issuer() -> TrustedIssuer {
    // No `alg` in the RFC's JWK: EC P-256 admits ES256 only, so that is what the key is pinned to.
    let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}]});
    TrustedIssuer::from_jwks_json("joe", "sessiond", &set.to_string()).unwrap()
}

#[test]
fn rfc7515_a3_es256_through_a_foreign_jwk() {
    let issuer = a3_issuer();
    let token = format!("{A3_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{A3_SIGNATURE}");
    let compact = issuer.verify_signature_only(&token).unwrap();
    assert_eq!(compact.payload(), RFC7515_PAYLOAD);
    // The full verification gets past the signature and stops at the claims the RFC's token
    // does not have.
    let at = Timestamp::from_unix_seconds(RFC7515_EXP - 60);
    assert_eq!(
        issuer.verify(&token, at).err(),
        Some(ForeignError::MissingClaim("aud"))
    );
    // A changed payload does not verify.
    let other = format!(
        "{A3_HEADER_B64}.{}.{A3_SIGNATURE}",
        URL_SAFE_NO_PAD.encode(b"{}")
    );
    assert_eq!(
        issuer.verify_signature_only(&other).err(),
        Some(ForeignError::Jws(JwsError::BadSignature))
    );
}

/// `n - s` for a big-endian 32-byte `s < n`.
fn negate_mod_n(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    assert_eq!(borrow, 0);
    out
}

#[test]
fn rfc7515_a3_malleability_gives_two_tokens_one_claim_id() {
    // ECDSA: (r, s) and (r, n - s) are both valid signatures of the same bytes. The two token
    // texts differ; the one-time-claim identity must not.
    let issuer = a3_issuer();
    let signature = URL_SAFE_NO_PAD.decode(A3_SIGNATURE).unwrap();
    let (r, s) = signature.split_at(32);
    let mut twin_signature = r.to_vec();
    twin_signature.extend(negate_mod_n(s));
    let token = format!("{A3_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{A3_SIGNATURE}");
    let twin = format!(
        "{A3_HEADER_B64}.{RFC7515_PAYLOAD_B64}.{}",
        URL_SAFE_NO_PAD.encode(&twin_signature)
    );
    assert_ne!(token, twin);
    let a = issuer.verify_signature_only(&token).unwrap();
    let b = issuer.verify_signature_only(&twin).unwrap();
    assert_eq!(
        claim_id("joe", None, a.payload()),
        claim_id("joe", None, b.payload())
    );
}

#[test]
fn rfc8037_a4_ed25519_signature_is_the_rfcs() {
    let key = Arc::new(key(KeyAlgorithm::EdDsa, ED_D));
    // The public key derived from the RFC's private key is the RFC's `x`.
    let published = jose::jwks(std::slice::from_ref(&key));
    assert_eq!(published["keys"][0]["x"], ED_X);

    let header = json!({"alg": "EdDSA"}).as_object().unwrap().clone();
    let token = jose::sign_compact(&key, &header, A4_PAYLOAD).unwrap();
    assert_eq!(token.expose(), A4_TOKEN);

    let compact = jose::parse_compact(A4_TOKEN).unwrap();
    assert_eq!(compact.payload(), A4_PAYLOAD);
    jose::verify(&key, &compact).unwrap();

    // The same token through a foreign issuer holding the RFC's public JWK.
    let set = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]});
    let issuer = TrustedIssuer::from_jwks_json("rfc8037", "sessiond", &set.to_string()).unwrap();
    issuer.verify_signature_only(A4_TOKEN).unwrap();
}
