//! One-time claims through the service: raw ids, trusted foreign issuers and our own tokens.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sessiond::jose::foreign::TrustedIssuer;
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::store::ClaimOutcome;
use sessiond::{KeyId, SessionKind, Timestamp};

use crate::common::{env, secs, user, TestEnv};

const IDP: &str = "https://idp.example";

fn idp_key() -> Key {
    Key::from_material(
        KeyId::parse("sk-AAAAAAAAAAAAAAAAAAAAAA").unwrap(),
        KeyPurpose::Access,
        KeyAlgorithm::EdDsa,
        sessiond::Secret::new(vec![0x42; 32]),
        Timestamp::EPOCH,
    )
    .unwrap()
}

fn trust_idp(env: &TestEnv) {
    let key = idp_key();
    let x = URL_SAFE_NO_PAD.encode(key.info().public_key.clone().unwrap());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "idp-1", "alg": "EdDSA", "use": "sig"}]});
    let issuer = TrustedIssuer::from_jwks_json(IDP, "sessiond", &jwks.to_string()).unwrap();
    env.service.set_trusted_issuer(issuer);
}

fn idp_token(env: &TestEnv, extra: Value, typ: Option<&str>) -> String {
    let now = env.service.now().unix_seconds();
    let mut claims =
        json!({"iss": IDP, "aud": "sessiond", "sub": "device-7", "exp": now + 300, "iat": now});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = Map::new();
    header.insert("kid".into(), json!("idp-1"));
    if let Some(typ) = typ {
        header.insert("typ".into(), json!(typ));
    }
    sessiond::jose::sign_compact(&idp_key(), &header, &serde_json::to_vec(&claims).unwrap())
        .unwrap()
        .expose()
        .clone()
}

#[tokio::test]
async fn raw_ids_claim_once_until_they_expire() {
    let env = env().await;
    let until = env.service.now().saturating_add(secs(60));
    assert_eq!(
        env.service.claim("enrol-1", until).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        env.service.claim("enrol-1", until).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
    assert_eq!(
        env.service
            .claim("enrol-2", env.service.now())
            .await
            .unwrap(),
        ClaimOutcome::Expired
    );
    for bad in ["", "a\nb", &"x".repeat(257)] {
        assert_eq!(
            env.service.claim(bad, until).await.unwrap_err().code(),
            "invalid_request"
        );
    }
    env.clock.advance(secs(60));
    assert_eq!(env.service.gc().await.unwrap().claims, 1);
}

#[tokio::test]
async fn a_trusted_issuers_token_works_once() {
    let env = env().await;
    trust_idp(&env);
    let token = idp_token(&env, json!({"jti": "login-123"}), None);
    let claimed = env.service.claim_token(&token).await.unwrap();
    assert_eq!(
        (claimed.issuer.as_str(), claimed.subject.as_deref()),
        (IDP, Some("device-7"))
    );
    let err = env.service.claim_token(&token).await.unwrap_err();
    assert_eq!(
        (format!("{err:?}").as_str(), err.code().as_str()),
        ("TokenAlreadyUsed", "token_already_used")
    );
    // The claim is kept for exp + leeway, then collected.
    env.clock.advance(secs(300 + 30));
    assert_eq!(
        env.service.claim_token(&token).await.unwrap_err().code(),
        "token_expired"
    );
    assert_eq!(env.service.gc().await.unwrap().claims, 1);
}

#[tokio::test]
async fn a_failed_check_records_no_claim() {
    let env = env().await;
    // Unknown issuer first: the same token works once the issuer is trusted.
    let token = idp_token(&env, json!({"jti": "retry-me"}), None);
    let err = env.service.claim_token(&token).await.unwrap_err();
    assert_eq!(format!("{err:?}"), "InvalidCredential(UnknownIssuer)");
    trust_idp(&env);
    let wrong_aud = idp_token(&env, json!({"jti": "retry-me", "aud": "other"}), None);
    assert_eq!(
        format!(
            "{:?}",
            env.service.claim_token(&wrong_aud).await.unwrap_err()
        ),
        "InvalidCredential(Foreign(AudienceMismatch))"
    );
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}A",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 1]
    );
    assert!(env.service.claim_token(&tampered).await.is_err());
    env.service.claim_token(&token).await.unwrap();
}

#[tokio::test]
async fn without_jti_the_decoded_payload_is_the_identity_not_the_spelling() {
    let env = env().await;
    trust_idp(&env);
    let plain = idp_token(&env, json!({}), None);
    // Same payload under another header: a different token text, the same claims.
    let respelled = idp_token(&env, json!({}), Some("JWT"));
    assert_ne!(plain, respelled);
    assert_eq!(plain.split('.').nth(1), respelled.split('.').nth(1));
    env.service.claim_token(&plain).await.unwrap();
    assert_eq!(
        env.service
            .claim_token(&respelled)
            .await
            .unwrap_err()
            .code(),
        "token_already_used"
    );
}

#[tokio::test]
async fn our_own_access_token_can_be_claimed_once() {
    let env = env().await;
    let created = env
        .service
        .create_token_session(user("yan"), SessionKind::Tokens)
        .await
        .unwrap();
    let token = created.tokens.access_token.expose();
    let claimed = env.service.claim_token(token).await.unwrap();
    assert_eq!(claimed.issuer, "sessiond");
    assert_eq!(
        env.service.claim_token(token).await.unwrap_err().code(),
        "token_already_used"
    );
    // A refresh token is not a claimable credential.
    assert!(env
        .service
        .claim_token(created.tokens.refresh_token.expose())
        .await
        .is_err());
}

/// 100 concurrent claims of one token: exactly one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_token_have_one_winner() {
    let env = env().await;
    trust_idp(&env);
    let token: Arc<str> = idp_token(&env, json!({"jti": "contested"}), None).into();
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (service, token, barrier) = (env.service.clone(), token.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            service.claim_token(&token).await.map_err(|e| e.code())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(code) => assert_eq!(code, "token_already_used"),
        }
    }
    assert_eq!(ok, 1);
}

/// Hardening: our own access token claims nothing once its session is revoked (it used to be
/// claimable until its `exp`), and nothing is recorded for it.
#[tokio::test]
async fn a_revoked_sessions_access_token_cannot_be_claimed() {
    let env = env().await;
    let created = env
        .service
        .create_token_session(user("gone"), SessionKind::Tokens)
        .await
        .unwrap();
    env.service
        .revoke(&created.session.id, &sessiond::RevokeReason::logout())
        .await
        .unwrap();
    let err = env
        .service
        .claim_token(created.tokens.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "session_revoked");
    let trail = env
        .service
        .audit_records(&sessiond::audit::AuditQuery::latest(100))
        .await
        .unwrap();
    assert!(!trail
        .iter()
        .any(|r| r.event == sessiond::audit::AuditEvent::TokenClaimed));
}
