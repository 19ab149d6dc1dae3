//! The browser login handoff over HTTP (in process): `POST /v1/browser/login-codes` by the
//! application's backend, `POST /auth/browser/login` by the page with its PKCE verifier.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{spawn_app, Options, TestApp};
use crate::harness::Reply;

pub const ORIGIN: &str = "https://app.example";

/// A PKCE pair made from `seed`: (code_verifier, code_challenge).
pub fn pkce(seed: &str) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(seed.as_bytes()));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub async fn browser_server(extra: &str) -> TestApp {
    spawn_app(Options {
        config: format!("[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n{extra}"),
        ..Options::default()
    })
    .await
}

/// `POST /v1/browser/login-codes` for `user` with `challenge`, which must succeed.
pub async fn login_code(s: &TestApp, user: &str, challenge: &str) -> Value {
    let r = s
        .post(
            "/v1/browser/login-codes",
            json!({"user_id": user, "code_challenge": challenge, "code_challenge_method": "S256"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

/// `POST /auth/browser/login` from the page at `origin`.
pub async fn exchange_from(s: &TestApp, origin: &str, code: &str, verifier: &str) -> Reply {
    s.request(
        Method::POST,
        "/auth/browser/login",
        Some(&json!({"code": code, "code_verifier": verifier})),
        &[("origin", origin), ("user-agent", "HandoffTest/1.0")],
        false,
    )
    .await
}

pub async fn exchange(s: &TestApp, code: &str, verifier: &str) -> Reply {
    exchange_from(s, ORIGIN, code, verifier).await
}

/// A logged-in page: (access token, refresh cookie header, session id).
pub async fn log_in(s: &TestApp, user: &str) -> (String, String, String) {
    let (verifier, challenge) = pkce(user);
    let code = login_code(s, user, &challenge).await;
    let r = exchange(s, code["login_code"].as_str().unwrap(), &verifier).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let set = r.set_cookies();
    let pair = set[0].split(';').next().unwrap().to_owned();
    (
        r.body["access_token"].as_str().unwrap().to_owned(),
        pair,
        r.body["session_id"].as_str().unwrap().to_owned(),
    )
}

async fn active_sessions(s: &TestApp, user: &str) -> Vec<Value> {
    let r = s.get(&format!("/v1/users/{user}/sessions")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn login_code_exchange_creates_the_browser_session() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("ann");
    let code = login_code(&s, "ann", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    assert!(text.len() <= 2048);
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)));
    let sid = code["session_id"].as_str().unwrap();
    let expires = code["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");
    // No session before the exchange.
    s.get(&format!("/v1/sessions/{sid}"))
        .await
        .assert_problem(404, "session_not_found");

    let r = exchange(&s, text, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["session_id"], sid);
    assert_eq!(r.body["expires_in"], 600);
    assert!(r.body["access_token"].is_string() && r.body["expires_at"].is_string());
    assert!(r.body.get("refresh_token").is_none());
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    let set = r.set_cookies();
    assert_eq!(set.len(), 1);
    assert!(
        set[0].starts_with("__Host-sessiond-refresh=") && set[0].contains("SameSite=Strict"),
        "{}",
        set[0]
    );
    let got = s.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(got.body["session"]["kind"], "browser", "{}", got.text);
    assert_eq!(got.body["session"]["user_id"], "ann");
    assert_eq!(got.body["session"]["user_agent"], "HandoffTest/1.0");
    assert_eq!(got.body["session"]["ip"], "127.0.0.1");
    // The cookie refreshes; the access token validates.
    let v = s
        .validate_access_token(r.body["access_token"].as_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}", e.text));
    assert_eq!(v.session.id, sid);
    let pair = set[0].split(';').next().unwrap();
    let refreshed = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[
                ("cookie", pair),
                ("origin", ORIGIN),
                ("user-agent", "HandoffTest/1.0"),
            ],
            false,
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    s.stop().await;
}

#[tokio::test]
async fn a_code_works_once() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("bob");
    let code = login_code(&s, "bob", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    assert_eq!(exchange(&s, text, &verifier).await.status, 200);
    let again = exchange(&s, text, &verifier).await;
    // Failures are not cacheable either.
    assert_eq!(again.headers["cache-control"], "no-store");
    again.assert_problem(401, "unauthorized");
    assert_eq!(active_sessions(&s, "bob").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_verifier_does_not_burn_the_code() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("cy");
    let (other, _) = pkce("someone else");
    let code = login_code(&s, "cy", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    for wrong in [other.as_str(), "", "short", &format!("{verifier}x")] {
        exchange(&s, text, wrong)
            .await
            .assert_problem(401, "unauthorized");
    }
    assert!(active_sessions(&s, "cy").await.is_empty());
    assert_eq!(exchange(&s, text, &verifier).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn an_expired_code_creates_nothing() {
    let s = browser_server("[browser]\nlogin_code_ttl = \"20s\"\n").await;
    let (verifier, challenge) = pkce("dee");
    let code = login_code(&s, "dee", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    let sid = code["session_id"].as_str().unwrap();
    s.advance(Duration::from_secs(20));
    exchange(&s, text, &verifier)
        .await
        .assert_problem(401, "unauthorized");
    s.get(&format!("/v1/sessions/{sid}"))
        .await
        .assert_problem(404, "session_not_found");
    assert!(active_sessions(&s, "dee").await.is_empty());
    s.stop().await;
}

/// A code that is never exchanged leaves no row and takes no place under `max_per_user`; an
/// exchange counts as any creation does (the oldest is evicted).
#[tokio::test]
async fn unexchanged_codes_do_not_count_toward_max_per_user() {
    let s = browser_server("[sessions]\nmax_per_user = 1\n").await;
    let (va, ca) = pkce("a");
    let (vb, cb) = pkce("b");
    let first = login_code(&s, "eve", &ca).await;
    let second = login_code(&s, "eve", &cb).await;
    assert_ne!(first["session_id"], second["session_id"]);
    assert!(active_sessions(&s, "eve").await.is_empty());
    let r = exchange(&s, second["login_code"].as_str().unwrap(), &vb).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let active = active_sessions(&s, "eve").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], second["session_id"]);
    // Exchanged late (within its lifetime), the first code's session evicts the second's.
    let r = exchange(&s, first["login_code"].as_str().unwrap(), &va).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let active = active_sessions(&s, "eve").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], first["session_id"]);
    let evicted = s
        .get(&format!(
            "/v1/sessions/{}",
            second["session_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(evicted.body["session"]["revoke_reason"], "evicted");
    s.stop().await;
}

#[tokio::test]
async fn forged_and_tampered_codes_are_refused() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("fay");
    let code = login_code(&s, "fay", &challenge).await;
    let text = code["login_code"].as_str().unwrap().to_owned();
    let segs: Vec<&str> = text.split('.').collect();
    assert_eq!(segs.len(), 4, "{text:.20}");
    // A payload naming another user, with the original MAC.
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segs[2]).unwrap()).unwrap();
    payload["sub"] = json!("mallory");
    let other_user = format!(
        "{}.{}.{}.{}",
        segs[0],
        segs[1],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
        segs[3]
    );
    let mut flipped = text.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        String::new(),
        String::from("garbage"),
        other_user,
        flipped,
        format!("{text}.x"),
        text[..text.len() - 1].to_owned(),
        format!("lc2{}", &text[3..]),
        "a".repeat(4000),
    ];
    for forged in &cases {
        exchange(&s, forged, &verifier)
            .await
            .assert_problem(401, "unauthorized");
    }
    assert!(active_sessions(&s, "fay").await.is_empty());
    assert!(active_sessions(&s, "mallory").await.is_empty());
    // A body that is not the request's shape is a 400, as everywhere.
    s.request(
        Method::POST,
        "/auth/browser/login",
        Some(&json!({"code": text})),
        &[("origin", ORIGIN)],
        false,
    )
    .await
    .assert_problem(400, "invalid_request");
    // The real code still works.
    assert_eq!(exchange(&s, &text, &verifier).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_anything() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("gil");
    let code = login_code(&s, "gil", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    let r = exchange_from(&s, "https://evil.example", text, &verifier).await;
    assert_eq!(r.headers["cache-control"], "no-store");
    r.assert_problem(403, "origin_not_allowed");
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert!(r.set_cookies().is_empty());
    assert!(active_sessions(&s, "gil").await.is_empty());
    assert_eq!(exchange(&s, text, &verifier).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn sixteen_concurrent_exchanges_of_one_code_make_one_session() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("hal");
    let code = login_code(&s, "hal", &challenge).await;
    let text = code["login_code"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let h = s.handle();
            let body = json!({"code": text, "code_verifier": verifier});
            tokio::spawn(async move {
                h.send_with(
                    Method::POST,
                    "/auth/browser/login",
                    Some(&body),
                    &[("origin", ORIGIN)],
                    false,
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            _ => r.assert_problem(401, "unauthorized"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(active_sessions(&s, "hal").await.len(), 1);
    s.stop().await;
}

/// With the claim store unreachable (Redis on a port nothing listens on) nothing can be decided:
/// the exchange is 503, never a session and never a 401 that would send the user back to the
/// login form; the code stays usable.
#[tokio::test]
async fn an_unreachable_claim_store_is_an_outage_and_creates_nothing() {
    let s = browser_server("").await;
    let (verifier, challenge) = pkce("ivy");
    let code = login_code(&s, "ivy", &challenge).await;
    let text = code["login_code"].as_str().unwrap();
    s.stop().await;
    let down = spawn_app(Options {
        config: format!(
            "redis_url = \"redis://127.0.0.1:1\"\n[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n"
        ),
        ..Options::default()
    })
    .await;
    let (verifier2, challenge2) = pkce("ivy2");
    let code2 = login_code(&down, "ivy2", &challenge2).await;
    let r = exchange(&down, code2["login_code"].as_str().unwrap(), &verifier2).await;
    r.assert_problem(503, "unavailable");
    assert!(r.set_cookies().is_empty());
    assert!(active_sessions(&down, "ivy2").await.is_empty());
    // A code of another deployment (another master key) is refused as forged, not served.
    exchange(&down, text, &verifier)
        .await
        .assert_problem(401, "unauthorized");
    down.stop().await;
}

/// `POST /v1/browser/login-codes` refuses what it cannot make a code of: 400 `invalid_request`.
#[tokio::test]
async fn login_code_requests_are_checked() {
    let s = browser_server("").await;
    let (_, challenge) = pkce("ida");
    // 43 base64url characters, but not canonical: the last one's 2 unused bits set.
    let noncanonical = format!("{}B", &challenge[..42]);
    let cases = [
        json!({"user_id": "ida", "code_challenge": noncanonical, "code_challenge_method": "S256"}),
        json!({"user_id": "ida", "code_challenge": challenge, "code_challenge_method": "plain"}),
        json!({"user_id": "ida", "code_challenge": challenge}),
        json!({"user_id": "ida", "code_challenge": &challenge[1..], "code_challenge_method": "S256"}),
        json!({"user_id": "ida", "code_challenge": format!("{}=", &challenge[1..]), "code_challenge_method": "S256"}),
        json!({"user_id": "ida", "code_challenge": format!("{challenge}A"), "code_challenge_method": "S256"}),
        json!({"user_id": "", "code_challenge": challenge, "code_challenge_method": "S256"}),
        json!({"user_id": "ida", "code_challenge": challenge, "code_challenge_method": "S256",
            "claims": {"sub": "x"}}),
        json!({"user_id": "ida", "code_challenge": challenge, "code_challenge_method": "S256",
            "claims": {"big": "x".repeat(2000)}}),
    ];
    for body in cases {
        s.post("/v1/browser/login-codes", body.clone())
            .await
            .assert_problem(400, "invalid_request");
    }
    // Without the API key: 401.
    s.request(
        Method::POST,
        "/v1/browser/login-codes",
        Some(&json!({"user_id": "ida", "code_challenge": challenge, "code_challenge_method": "S256"})),
        &[],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    // Claims and tenant travel in the code into the session.
    let (verifier, challenge) = pkce("ida2");
    let r = s
        .post(
            "/v1/browser/login-codes",
            json!({"user_id": "ida", "tenant": "t1", "claims": {"role": "admin"},
                "code_challenge": challenge, "code_challenge_method": "S256"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ok = exchange(&s, r.body["login_code"].as_str().unwrap(), &verifier).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let got = s
        .get(&format!(
            "/v1/sessions/{}",
            ok.body["session_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(got.body["session"]["tenant"], "t1", "{}", got.text);
    assert_eq!(
        got.body["session"]["claims"]["role"], "admin",
        "{}",
        got.text
    );
    s.stop().await;
}
