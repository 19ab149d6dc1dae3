//! Token sessions: the RFC 8725 / OWASP attack matrix, rotation with reuse detection, races,
//! lifetimes, logout and JWKS.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sessiond::cache::CacheLimits;
use sessiond::jose;
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::{
    KeyId, RequestContext, RevokeReason, ServiceConfig, SessionKind, Timestamp, UserId,
};

use crate::common::{env, env_with, secs, user, TestEnv};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn decode(token: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut parts = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let p = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

/// Re-signs `claims` under `header` with `key` (a key we hold: the test plays an insider who
/// can sign but tries to bend the policy, or an attacker with their own key).
fn sign(key: &Key, header: Map<String, Value>, claims: &Map<String, Value>) -> String {
    jose::sign_compact(key, &header, &serde_json::to_vec(claims).unwrap())
        .unwrap()
        .expose()
        .clone()
}

/// Signs without the builder's own policy check (which refuses e.g. `crit`): what an insider
/// with the key, or a buggy client library, could produce.
fn sign_raw(key: &Key, header: Map<String, Value>, claims: &Map<String, Value>) -> String {
    let input = format!(
        "{}.{}",
        b64(&Value::Object(header)),
        b64(&Value::Object(claims.clone()))
    );
    let sig = jose::sign(key, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn unsigned(header: Value, claims: &Map<String, Value>, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(&header),
        b64(&Value::Object(claims.clone()))
    )
}

fn attacker_ed25519() -> Key {
    Key::from_material(
        KeyId::generate(&sessiond::OsRandom),
        KeyPurpose::Access,
        KeyAlgorithm::EdDsa,
        sessiond::Secret::new(vec![0x66; 32]),
        Timestamp::EPOCH,
    )
    .unwrap()
}

struct Fixture {
    access: String,
    refresh: String,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

async fn fixture(env: &TestEnv) -> Fixture {
    let created = env
        .service
        .create_token_session(user("tara"), SessionKind::Tokens)
        .await
        .unwrap();
    let access = created.tokens.access_token.expose().clone();
    let (header, claims) = decode(&access);
    Fixture {
        access,
        refresh: created.tokens.refresh_token.expose().clone(),
        header,
        claims,
    }
}

async fn access_key(env: &TestEnv) -> Arc<Key> {
    env.service.keys().active(KeyPurpose::Access).await.unwrap()
}

async fn refresh_key(env: &TestEnv) -> Arc<Key> {
    env.service
        .keys()
        .active(KeyPurpose::Refresh)
        .await
        .unwrap()
}

fn with(map: &Map<String, Value>, k: &str, v: Value) -> Map<String, Value> {
    let mut m = map.clone();
    m.insert(k.into(), v);
    m
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Genuine,
    AlgNone,
    AlgNoneCapital,
    AlgNoneUpper,
    KeyConfusionHs256WithPublicKey,
    UnknownKid,
    KidNotString,
    KidOfHmacKeyWithOtherAlg,
    KidOfRefreshKey,
    RefreshAsAccess,
    WrongAudience,
    WrongIssuer,
    ExpiredBeyondLeeway,
    ExpiredWithinLeeway,
    NotYetValid,
    CritHeader,
    JwkHeaderAttackerKey,
    JkuHeaderAttackerKey,
    X5uHeaderAttackerKey,
    Whitespace,
    NonAscii,
    TwoSegments,
    FourSegments,
    PayloadChangedSignatureKept,
    Oversize,
    SessionRevoked,
}

/// (case, the Debug form of the exact error, or "ok").
const MATRIX: &[(Case, &str)] = &[
    (Case::Genuine, "ok"),
    (Case::AlgNone, "InvalidCredential(Token(Jws(AlgNone)))"),
    (
        Case::AlgNoneCapital,
        "InvalidCredential(Token(Jws(AlgNone)))",
    ),
    (Case::AlgNoneUpper, "InvalidCredential(Token(Jws(AlgNone)))"),
    (
        Case::KeyConfusionHs256WithPublicKey,
        "InvalidCredential(Token(Jws(AlgMismatch)))",
    ),
    (
        Case::UnknownKid,
        "InvalidCredential(Token(Key(UnknownKey)))",
    ),
    (
        Case::KidNotString,
        "InvalidCredential(Token(Jws(KidNotString)))",
    ),
    (
        Case::KidOfHmacKeyWithOtherAlg,
        "InvalidCredential(Token(Key(WrongPurpose)))",
    ),
    (
        Case::KidOfRefreshKey,
        "InvalidCredential(Token(Key(WrongPurpose)))",
    ),
    (Case::RefreshAsAccess, "InvalidCredential(Token(WrongType))"),
    (
        Case::WrongAudience,
        "InvalidCredential(Token(WrongAudience))",
    ),
    (Case::WrongIssuer, "InvalidCredential(Token(WrongIssuer))"),
    (Case::ExpiredBeyondLeeway, "TokenExpired"),
    (Case::ExpiredWithinLeeway, "ok"),
    (
        Case::NotYetValid,
        "InvalidCredential(Token(Jws(NotYetValid)))",
    ),
    (
        Case::CritHeader,
        "InvalidCredential(Token(Jws(CritUnsupported)))",
    ),
    (
        Case::JwkHeaderAttackerKey,
        "InvalidCredential(Token(Jws(BadSignature)))",
    ),
    (
        Case::JkuHeaderAttackerKey,
        "InvalidCredential(Token(Key(UnknownKey)))",
    ),
    (
        Case::X5uHeaderAttackerKey,
        "InvalidCredential(Token(Jws(BadSignature)))",
    ),
    (
        Case::Whitespace,
        "InvalidCredential(Token(Jws(Whitespace)))",
    ),
    (Case::NonAscii, "InvalidCredential(Token(Jws(NonAscii)))"),
    (
        Case::TwoSegments,
        "InvalidCredential(Token(Jws(SegmentCount { found: 2 })))",
    ),
    (
        Case::FourSegments,
        "InvalidCredential(Token(Jws(SegmentCount { found: 4 })))",
    ),
    (
        Case::PayloadChangedSignatureKept,
        "InvalidCredential(Token(Jws(BadSignature)))",
    ),
    (Case::Oversize, "InvalidCredential(Token(Jws(TooLarge)))"),
    (Case::SessionRevoked, "Revoked"),
];

async fn prepare(case: Case, env: &TestEnv, f: &Fixture) -> String {
    let kid = f.header["kid"].clone();
    let (h, c) = (&f.header, &f.claims);
    let parts: Vec<&str> = f.access.split('.').collect();
    let now = env.service.now().unix_seconds();
    match case {
        Case::Genuine => f.access.clone(),
        Case::AlgNone => unsigned(json!({"alg": "none", "typ": "at+jwt", "kid": kid}), c, ""),
        Case::AlgNoneCapital => unsigned(
            json!({"alg": "None", "typ": "at+jwt", "kid": kid}),
            c,
            "AAAA",
        ),
        Case::AlgNoneUpper => unsigned(json!({"alg": "NONE", "typ": "at+jwt", "kid": kid}), c, ""),
        Case::KeyConfusionHs256WithPublicKey => {
            // The classic: sign HS256 with the server's *public* Ed25519 key as HMAC secret.
            let public = access_key(env).await.info().public_key.clone().unwrap();
            let forged_key = Key::from_material(
                KeyId::parse(kid.as_str().unwrap()).unwrap(),
                KeyPurpose::Access,
                KeyAlgorithm::Hs256,
                sessiond::Secret::new(public),
                Timestamp::EPOCH,
            )
            .unwrap();
            sign(&forged_key, with(h, "alg", json!("HS256")), c)
        }
        Case::UnknownKid => sign(
            &*access_key(env).await,
            with(
                h,
                "kid",
                json!(KeyId::generate(&sessiond::OsRandom).as_str()),
            ),
            c,
        ),
        Case::KidNotString => unsigned(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": 7}),
            c,
            parts[2],
        ),
        Case::KidOfHmacKeyWithOtherAlg => {
            // alg EdDSA, but kid names an HS256 (refresh) key.
            let refresh = refresh_key(env).await;
            let attacker = attacker_ed25519();
            sign(&attacker, with(h, "kid", json!(refresh.id().as_str())), c)
        }
        Case::KidOfRefreshKey => {
            let refresh = refresh_key(env).await;
            sign(
                &refresh,
                with(
                    &with(h, "kid", json!(refresh.id().as_str())),
                    "alg",
                    json!("HS256"),
                ),
                c,
            )
        }
        Case::RefreshAsAccess => f.refresh.clone(),
        Case::WrongAudience => sign(
            &*access_key(env).await,
            h.clone(),
            &with(c, "aud", json!("someone-else")),
        ),
        Case::WrongIssuer => sign(
            &*access_key(env).await,
            h.clone(),
            &with(c, "iss", json!("https://evil.example")),
        ),
        Case::ExpiredBeyondLeeway => {
            env.clock.advance(secs(600 + 30));
            f.access.clone()
        }
        Case::ExpiredWithinLeeway => {
            env.clock.advance(secs(600 + 29));
            f.access.clone()
        }
        Case::NotYetValid => sign(
            &*access_key(env).await,
            h.clone(),
            &with(c, "nbf", json!(now + 120)),
        ),
        Case::CritHeader => sign_raw(&*access_key(env).await, with(h, "crit", json!(["exp"])), c),
        Case::JwkHeaderAttackerKey => {
            let attacker = attacker_ed25519();
            let x = URL_SAFE_NO_PAD.encode(attacker.info().public_key.clone().unwrap());
            let header = with(h, "jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": x}));
            sign(&attacker, header, c)
        }
        Case::JkuHeaderAttackerKey => {
            let attacker = attacker_ed25519();
            let header = with(
                &with(h, "jku", json!("https://evil.example/jwks.json")),
                "kid",
                json!(attacker.id().as_str()),
            );
            sign(&attacker, header, c)
        }
        Case::X5uHeaderAttackerKey => {
            let attacker = attacker_ed25519();
            sign(
                &attacker,
                with(h, "x5u", json!("https://evil.example/cert.pem")),
                c,
            )
        }
        Case::Whitespace => format!("{} .{}.{}", parts[0], parts[1], parts[2]),
        Case::NonAscii => format!("{}.{}é.{}", parts[0], parts[1], parts[2]),
        Case::TwoSegments => format!("{}.{}", parts[0], parts[1]),
        Case::FourSegments => format!("{}.AAAA", f.access),
        Case::PayloadChangedSignatureKept => {
            let forged = b64(&Value::Object(with(c, "sub", json!("mallory"))));
            format!("{}.{forged}.{}", parts[0], parts[2])
        }
        Case::Oversize => {
            let big = with(c, "pad", json!("x".repeat(9000)));
            let header = b64(&Value::Object(h.clone()));
            format!("{header}.{}.{}", b64(&Value::Object(big)), parts[2])
        }
        Case::SessionRevoked => {
            let sid = sessiond::SessionId::parse(c["sid"].as_str().unwrap()).unwrap();
            env.service
                .revoke(&sid, &RevokeReason::logout())
                .await
                .unwrap();
            f.access.clone()
        }
    }
}

/// Every case with the verified-token cache on (warmed with the genuine token first, so a
/// revocation or expiry after a hit is covered) and off, each forged token presented twice: the
/// cache changes no verdict, and a refusal is never remembered as anything else.
#[tokio::test]
async fn access_token_attack_matrix() {
    let mut failures = Vec::new();
    for cache in [true, false] {
        let mut config = ServiceConfig::default();
        if !cache {
            config.verified_tokens = CacheLimits::off();
        }
        for (case, expected) in MATRIX {
            let env = env_with(config.clone()).await;
            let f = fixture(&env).await;
            env.service
                .validate_access_token(&f.access, &RequestContext::default())
                .await
                .unwrap();
            let token = prepare(*case, &env, &f).await;
            for attempt in 1..=2 {
                let got = match env
                    .service
                    .validate_access_token(&token, &RequestContext::default())
                    .await
                {
                    Ok(v) => {
                        assert_eq!(v.session.user_id.as_str(), "tara");
                        "ok".to_owned()
                    }
                    Err(e) => format!("{e:?}"),
                };
                if got != *expected {
                    failures.push(format!(
                        "{case:?} (cache {cache}, attempt {attempt}): expected {expected}, got {got}"
                    ));
                }
            }
            let stats = env.service.cache_stats()[0].1;
            if cache {
                // The genuine token was kept, and the cases that present it again hit it (an
                // expired hit is dropped: the second attempt misses).
                let expected_hits = match case {
                    Case::ExpiredBeyondLeeway => 1,
                    _ if token == f.access => 2,
                    _ => 0,
                };
                assert_eq!(stats.hits, expected_hits, "{case:?}: {stats:?}");
            } else {
                assert_eq!((stats.hits, stats.entries), (0, 0), "{case:?}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "token attack matrix mismatches:\n{}",
        failures.join("\n")
    );
}

/// A cached token is still checked for what can change: the clock (expired, counted from the
/// token's own `exp`), the key (retired on this node), the session (revoked). Only tokens that
/// passed are kept, refresh tokens never, and the cache stays within its limits.
#[tokio::test]
async fn the_verified_token_cache_answers_only_for_the_signature() {
    let mut config = ServiceConfig::default();
    config.verified_tokens = CacheLimits::new(4, 1 << 20);
    let env = env_with(config).await;
    let ctx = RequestContext::default();
    let stats = |env: &TestEnv| env.service.cache_stats()[0].1;

    let a = fixture(&env).await;
    env.service
        .validate_access_token(&a.access, &ctx)
        .await
        .unwrap();
    assert_eq!(
        (stats(&env).misses, stats(&env).hits, stats(&env).entries),
        (1, 0, 1)
    );
    env.service
        .validate_access_token(&a.access, &ctx)
        .await
        .unwrap();
    assert_eq!((stats(&env).hits, stats(&env).entries), (1, 1));

    // Refresh tokens are not cached; a refusal is not either.
    env.service.refresh(&a.refresh, &ctx).await.unwrap();
    assert_eq!(stats(&env).entries, 1);
    let forged = format!("{}x", a.access);
    for _ in 0..2 {
        env.service
            .validate_access_token(&forged, &ctx)
            .await
            .unwrap_err();
    }
    assert_eq!(stats(&env).entries, 1);

    // Expiry: from the cached token's own exp, with the leeway.
    env.clock.advance(secs(600 + 29));
    env.service
        .validate_access_token(&a.access, &ctx)
        .await
        .unwrap();
    env.clock.advance(secs(1));
    let err = env
        .service
        .validate_access_token(&a.access, &ctx)
        .await
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "TokenExpired");
    assert_eq!(stats(&env).entries, 0, "an expired hit is dropped");

    // Revocation after a hit.
    let b = fixture(&env).await;
    env.service
        .validate_access_token(&b.access, &ctx)
        .await
        .unwrap();
    env.service
        .validate_access_token(&b.access, &ctx)
        .await
        .unwrap();
    let sid = sessiond::SessionId::parse(b.claims["sid"].as_str().unwrap()).unwrap();
    env.service
        .revoke(&sid, &RevokeReason::logout())
        .await
        .unwrap();
    let err = env
        .service
        .validate_access_token(&b.access, &ctx)
        .await
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "Revoked");

    // Key retirement after a hit: refused, with the code of the uncached path; the cache is
    // emptied.
    let c = fixture(&env).await;
    env.service
        .validate_access_token(&c.access, &ctx)
        .await
        .unwrap();
    env.service
        .validate_access_token(&c.access, &ctx)
        .await
        .unwrap();
    let kid = KeyId::parse(c.header["kid"].as_str().unwrap()).unwrap();
    env.service.retire_key(&kid).await.unwrap();
    assert_eq!(stats(&env).entries, 0);
    let err = env
        .service
        .validate_access_token(&c.access, &ctx)
        .await
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "InvalidCredential(Token(Key(Retired)))");

    // Bounded: many tokens, never more than 4 entries.
    for _ in 0..20 {
        let f = fixture(&env).await;
        env.service
            .validate_access_token(&f.access, &ctx)
            .await
            .unwrap();
        assert!(stats(&env).entries <= 4, "{:?}", stats(&env));
    }
    assert!(stats(&env).evictions >= 16, "{:?}", stats(&env));
}

#[tokio::test]
async fn access_presented_as_refresh_and_refresh_after_revoke_are_refused() {
    let env = env().await;
    let f = fixture(&env).await;
    let err = env
        .service
        .refresh(&f.access, &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "InvalidCredential(Token(WrongType))");
    let sid = sessiond::SessionId::parse(f.claims["sid"].as_str().unwrap()).unwrap();
    env.service
        .revoke(&sid, &RevokeReason::logout())
        .await
        .unwrap();
    let err = env
        .service
        .refresh(&f.refresh, &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "Revoked");
}

#[tokio::test]
async fn tokens_carry_the_registered_and_custom_claims() {
    let env = env().await;
    let mut custom = Map::new();
    custom.insert("role".into(), json!("admin"));
    let created = env
        .service
        .create_token_session(user("uma").claims(custom), SessionKind::Tokens)
        .await
        .unwrap();
    let (h, c) = decode(created.tokens.access_token.expose());
    assert_eq!(
        (h["typ"].as_str(), h["alg"].as_str()),
        (Some("at+jwt"), Some("EdDSA"))
    );
    assert!(h["kid"].as_str().unwrap().starts_with("sk-"));
    for claim in [
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "tenant",
    ] {
        assert!(c.contains_key(claim), "access token lacks {claim}");
    }
    assert_eq!(c["sub"], "uma");
    assert_eq!(c["role"], "admin");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    let (rh, rc) = decode(created.tokens.refresh_token.expose());
    assert_eq!(
        (rh["typ"].as_str(), rh["alg"].as_str()),
        (Some("refresh+jwt"), Some("HS256"))
    );
    assert_ne!(rc["aud"], c["aud"], "access and refresh audiences differ");
    assert!(
        !rc.contains_key("role"),
        "custom claims stay out of refresh tokens"
    );
    // The row holds only the hash of the refresh secret.
    let record = env
        .backend
        .store
        .session(&created.session.id)
        .await
        .unwrap()
        .unwrap();
    let secret = rc["jti"].as_str().unwrap();
    let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).into();
    assert_eq!(record.refresh.unwrap().hash, hash);
    let v = env
        .service
        .validate_access_token(
            created.tokens.access_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(v.deadline, created.tokens.access_expires_at);
}

#[tokio::test]
async fn refresh_rotates_and_the_predecessor_converges_inside_the_grace_window() {
    let env = env().await;
    let f = fixture(&env).await;
    let ctx = RequestContext::default();
    env.clock.advance(secs(60));
    let first = env.service.refresh(&f.refresh, &ctx).await.unwrap();
    assert_ne!(first.tokens.refresh_token.expose(), &f.refresh);
    // A retry of the same refresh token within the grace window gets the same successor.
    env.clock.advance(secs(9));
    let retry = env.service.refresh(&f.refresh, &ctx).await.unwrap();
    assert_eq!(
        decode(retry.tokens.refresh_token.expose()).1["jti"],
        decode(first.tokens.refresh_token.expose()).1["jti"]
    );
    // The successor works and rotates again; the session slid its idle window.
    let second = env
        .service
        .refresh(first.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    assert_eq!(second.session.last_seen_at, env.service.now());
    env.service
        .validate_access_token(second.tokens.access_token.expose(), &ctx)
        .await
        .unwrap();
}

/// Changed with the rotation rules of docs/DESIGN.md: the predecessor after the grace window is
/// reuse once its successor has been *used* (here: an access token of the new pair validated);
/// before that it is a lost response (`rotation::lost_response_*`).
#[tokio::test]
async fn predecessor_after_the_grace_window_revokes_the_session_once_the_successor_was_used() {
    let env = env().await;
    let f = fixture(&env).await;
    let ctx = RequestContext::default();
    let next = env.service.refresh(&f.refresh, &ctx).await.unwrap();
    env.service
        .validate_access_token(next.tokens.access_token.expose(), &ctx)
        .await
        .unwrap();
    env.clock.advance(secs(10)); // exactly the grace window: outside it
    let err = env.service.refresh(&f.refresh, &ctx).await.unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
    let session = env
        .service
        .session(&next.session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.revoke_reason.unwrap().as_str(),
        "refresh_token_reused"
    );
    // Every token of the session is dead from now on, the legitimate successor included.
    for t in [next.tokens.access_token.expose(), &f.access] {
        assert_eq!(
            env.service
                .validate_access_token(t, &ctx)
                .await
                .unwrap_err()
                .code(),
            "session_revoked"
        );
    }
    assert_eq!(
        env.service
            .refresh(next.tokens.refresh_token.expose(), &ctx)
            .await
            .unwrap_err()
            .code(),
        "session_revoked"
    );
    let trail = env
        .service
        .audit_records(&sessiond::audit::AuditQuery::session(&next.session.id))
        .await
        .unwrap();
    assert!(trail
        .iter()
        .any(|r| r.event == sessiond::audit::AuditEvent::RefreshReused));
    assert_eq!(env.service.metrics().snapshot().refresh_reuse_detected, 1);
}

/// Changed with the rotation rules of docs/DESIGN.md (was: the grandparent revoked the session):
/// any token rotated out less than the grace window ago gets the session's current pair,
/// however many rotations happened since.
#[tokio::test]
async fn grandparent_inside_the_grace_window_converges_on_the_current_pair() {
    let env = env().await;
    let f = fixture(&env).await;
    let ctx = RequestContext::default();
    let child = env.service.refresh(&f.refresh, &ctx).await.unwrap();
    env.clock.advance(secs(1));
    let grandchild = env
        .service
        .refresh(child.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    env.clock.advance(secs(1));
    let late = env.service.refresh(&f.refresh, &ctx).await.unwrap();
    assert_eq!(
        decode(late.tokens.refresh_token.expose()).1["jti"],
        decode(grandchild.tokens.refresh_token.expose()).1["jti"]
    );
    assert!(env
        .service
        .session(&child.session.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}

/// 50 concurrent refreshes of one token: all succeed, one successor, the session stays active.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_converge_on_one_successor() {
    let env = env().await;
    let f = fixture(&env).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (service, token, barrier) = (env.service.clone(), f.refresh.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            service.refresh(&token, &RequestContext::default()).await
        }));
    }
    let mut successors = std::collections::BTreeSet::new();
    for t in tasks {
        let pair = t.await.unwrap().expect("a concurrent refresh failed");
        successors.insert(
            decode(pair.tokens.refresh_token.expose()).1["jti"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(successors.len(), 1, "the session forked");
    let sid = sessiond::SessionId::parse(f.claims["sid"].as_str().unwrap()).unwrap();
    let record = env.backend.store.session(&sid).await.unwrap().unwrap();
    assert!(record.session.revoked_at.is_none());
    assert_eq!(record.refresh.unwrap().generation, 1);
}

#[tokio::test]
async fn refresh_slides_idle_but_never_extends_the_absolute_lifetime() {
    let env = env().await;
    let created = env
        .service
        .create_token_session(user("vic"), SessionKind::Browser)
        .await
        .unwrap();
    let ctx = RequestContext::default();
    let mut refresh = created.tokens.refresh_token.expose().clone();
    // Refresh every 13 days: idle (14 d) never runs out, absolute (30 d) does.
    for _ in 0..2 {
        env.clock.advance(secs(13 * 86_400));
        let next = env.service.refresh(&refresh, &ctx).await.unwrap();
        assert!(next.session.idle_expires_at <= created.session.absolute_expires_at);
        assert_eq!(
            next.session.absolute_expires_at,
            created.session.absolute_expires_at
        );
        assert!(next.tokens.refresh_expires_at <= created.session.absolute_expires_at);
        refresh = next.tokens.refresh_token.expose().clone();
    }
    env.clock.advance(secs(4 * 86_400));
    let err = env.service.refresh(&refresh, &ctx).await.unwrap_err();
    assert!(
        matches!(err.code().as_str(), "token_expired" | "session_expired"),
        "{err:?}"
    );
    // Idle: 14 days without a refresh end a fresh session.
    let other = env
        .service
        .create_token_session(user("wes"), SessionKind::Tokens)
        .await
        .unwrap();
    env.clock.advance(secs(14 * 86_400));
    let err = env
        .service
        .refresh(other.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code().as_str(), "token_expired" | "session_expired"),
        "{err:?}"
    );
}

#[tokio::test]
async fn logout_with_an_access_token_ends_every_token_of_the_session() {
    let env = env().await;
    let f = fixture(&env).await;
    let ctx = RequestContext::default();
    let session = env
        .service
        .logout_access_token(&f.access, &ctx)
        .await
        .unwrap();
    assert_eq!(session.user_id, UserId::new("tara").unwrap());
    assert_eq!(
        env.service
            .validate_access_token(&f.access, &ctx)
            .await
            .unwrap_err()
            .code(),
        "session_revoked"
    );
    assert_eq!(
        env.service
            .refresh(&f.refresh, &ctx)
            .await
            .unwrap_err()
            .code(),
        "session_revoked"
    );
}

#[tokio::test]
async fn jwks_publishes_active_and_retained_access_keys_only() {
    let env = env().await;
    let f = fixture(&env).await;
    let before = env.service.jwks().await;
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    env.service.rotate_key(KeyPurpose::Access).await.unwrap();
    let after = env.service.jwks().await;
    let keys = after["keys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the retired key stays published for its retention window"
    );
    for k in keys {
        let obj = k.as_object().unwrap();
        let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(
            (
                k["kty"].as_str(),
                k["crv"].as_str(),
                k["alg"].as_str(),
                k["use"].as_str()
            ),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig"))
        );
    }
    // Tokens of the retired key keep validating inside retention; new ones use the new key.
    env.service
        .validate_access_token(&f.access, &RequestContext::default())
        .await
        .unwrap();
    env.clock.advance(secs(24 * 3600));
    assert_eq!(
        env.service.jwks().await["keys"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn hs256_access_keys_work_and_are_never_published() {
    let mut config = ServiceConfig::default();
    config.keys.access_algorithm = KeyAlgorithm::Hs256;
    let env = env_with(config).await;
    let created = env
        .service
        .create_token_session(user("xia"), SessionKind::Tokens)
        .await
        .unwrap();
    assert_eq!(
        decode(created.tokens.access_token.expose()).0["alg"],
        "HS256"
    );
    env.service
        .validate_access_token(
            created.tokens.access_token.expose(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert!(env.service.jwks().await["keys"]
        .as_array()
        .unwrap()
        .is_empty());
    // Short HS256 secrets are refused outright.
    let short = Key::from_material(
        KeyId::generate(&sessiond::OsRandom),
        KeyPurpose::Access,
        KeyAlgorithm::Hs256,
        sessiond::Secret::new(vec![1; 31]),
        Timestamp::EPOCH,
    );
    assert!(short.is_err());
}

/// Hardening: validation applies the session-creation rules to the request's `ip` and
/// `user_agent` (a 60 KB value with a newline used to reach the audit trail), before anything
/// is read or written.
#[tokio::test]
async fn validation_refuses_oversize_client_facts_before_auditing_them() {
    let env = env().await;
    let cookie = env.service.create_cookie_session(user("ua")).await.unwrap();
    let tokens = env
        .service
        .create_token_session(user("ua"), SessionKind::Tokens)
        .await
        .unwrap();
    let huge = format!("{}\nforged-line", "1".repeat(60 * 1024));
    let before = env
        .service
        .audit_records(&sessiond::audit::AuditQuery::latest(1000))
        .await
        .unwrap()
        .len();
    for ctx in [
        RequestContext::default().ip(&huge),
        RequestContext::default().user_agent(&huge),
    ] {
        let e = env
            .service
            .validate_cookie(cookie.cookie.expose(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        let e = env
            .service
            .validate_access_token(tokens.tokens.access_token.expose(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        // A forged credential with the same facts: still the input error, nothing audited.
        let e = env
            .service
            .validate_cookie("v1.garbage", &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_request");
    }
    let after = env
        .service
        .audit_records(&sessiond::audit::AuditQuery::latest(1000))
        .await
        .unwrap();
    assert_eq!(after.len(), before, "{after:?}");
}
