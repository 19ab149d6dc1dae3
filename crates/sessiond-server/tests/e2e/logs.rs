//! The server's complete log output from a full run must contain none of the secrets it issued:
//! tokens, cookie values, CSRF tokens, API keys, login codes and PKCE verifiers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{spawn, Options};

#[tokio::test]
async fn no_issued_secret_appears_in_the_log() {
    let s = spawn(Options {
        config: "[cookies]\nallowed_origins = [\"https://app.example\"]\n".into(),
        log_level: "trace",
        ..Options::default()
    })
    .await;
    let mut secrets = vec![s.api_key.clone()];
    let out = s.cli(&["api-keys", "create", "--name", "scan"]).await;
    let created_key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("sessiond_"))
        .unwrap()
        .to_owned();
    secrets.push(created_key.clone());

    let c = s
        .post("/v1/sessions", json!({"user_id": "kim", "kind": "cookie"}))
        .await;
    let cookie = c.body["cookie"].as_str().unwrap().to_owned();
    let csrf = c.body["csrf_token"].as_str().unwrap().to_owned();
    let id = c.body["session"]["id"].as_str().unwrap().to_owned();
    secrets.extend([
        cookie.clone(),
        csrf.clone(),
        cookie.rsplit('.').next().unwrap().to_owned(),
    ]);
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": cookie, "csrf_token": csrf}),
    )
    .await;
    s.post(
        "/v1/sessions/validate",
        json!({"cookie_header": format!("__Host-sessiond={cookie}"), "csrf_token": "wrong"}),
    )
    .await;
    let rotated = s.post(&format!("/v1/sessions/{id}/csrf"), json!({})).await;
    secrets.push(rotated.body["csrf_token"].as_str().unwrap().to_owned());

    let t = s
        .post("/v1/sessions", json!({"user_id": "kim", "kind": "tokens"}))
        .await;
    let access = t.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = t.body["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post("/v1/sessions/validate", json!({"access_token": access}))
        .await;
    let r = s
        .post("/v1/tokens/refresh", json!({"refresh_token": refresh}))
        .await;
    let access2 = r.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh2 = r.body["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post("/v1/claims", json!({"token": access2})).await;
    s.post("/v1/claims", json!({"token": access2})).await;
    s.post(
        "/v1/sessions/validate",
        json!({"access_token": format!("{access}x")}),
    )
    .await;

    let b = s
        .post("/v1/sessions", json!({"user_id": "kim", "kind": "browser"}))
        .await;
    let browser_cookie = b.body["set_cookie"][0]
        .as_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let browser_refresh = browser_cookie.split_once('=').unwrap().1.to_owned();
    let br = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[
                ("cookie", &browser_cookie),
                ("origin", "https://app.example"),
            ],
            false,
        )
        .await;
    let rotated_cookie = br.set_cookies()[0].split(';').next().unwrap().to_owned();
    s.request(
        Method::POST,
        "/auth/browser/logout",
        None,
        &[
            ("cookie", &rotated_cookie),
            ("origin", "https://app.example"),
        ],
        false,
    )
    .await;
    // The login handoff: a login code, its PKCE verifier (a wrong one first), the exchange
    // (twice: the second is refused), and the account routes with the access token.
    let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(b"log scan verifier"));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let lc = s
        .post(
            "/v1/browser/login-codes",
            json!({"user_id": "kim", "code_challenge": challenge, "code_challenge_method": "S256"}),
        )
        .await;
    let code = lc.body["login_code"].as_str().unwrap().to_owned();
    let page = [("origin", "https://app.example")];
    let mut handoff_access = Vec::new();
    for v in [
        "wrong-verifier-wrong-verifier-wrong-verifier-0",
        &verifier,
        &verifier,
    ] {
        let r = s
            .request(
                Method::POST,
                "/auth/browser/login",
                Some(&json!({"code": code, "code_verifier": v})),
                &page,
                false,
            )
            .await;
        if let Some(access) = r.body["access_token"].as_str() {
            handoff_access.push(access.to_owned());
            secrets.push(r.set_cookies()[0].split(';').next().unwrap().to_owned());
        }
    }
    assert_eq!(handoff_access.len(), 1, "exactly one exchange succeeds");
    let bearer = format!("Bearer {}", handoff_access[0]);
    for path in [
        "/auth/browser/sessions",
        "/auth/browser/sessions/ses-nope/revoke",
    ] {
        let method = if path.ends_with("revoke") {
            Method::POST
        } else {
            Method::GET
        };
        s.request(
            method,
            path,
            None,
            &[page[0], ("authorization", &bearer)],
            false,
        )
        .await;
    }
    secrets.extend([code.clone(), verifier.clone(), handoff_access[0].clone()]);
    secrets.push(code.rsplit('.').next().unwrap().to_owned());

    s.request(
        Method::POST,
        "/v1/sessions",
        Some(&json!({"user_id": "x", "kind": "cookie"})),
        &[("authorization", "Bearer sessiond_guess")],
        false,
    )
    .await;
    s.post("/v1/users/kim/sessions/revoke", json!({})).await;
    for token in [&access, &refresh, &access2, &refresh2, &browser_refresh] {
        secrets.push(token.to_string());
        secrets.push(token.rsplit('.').next().unwrap().to_owned());
    }
    secrets.push(
        b.body["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    secrets.push(br.body["access_token"].as_str().unwrap().to_owned());
    secrets.push(rotated_cookie.split_once('=').unwrap().1.to_owned());

    let logs = s.stop().await;
    assert!(
        logs.lines().count() > 50,
        "the trace log should be substantial:\n{logs}"
    );
    for secret in &secrets {
        assert!(secret.len() >= 20, "too short to search for: {secret}");
        assert!(
            !logs.contains(secret.as_str()),
            "an issued secret appears in the server log"
        );
    }
    // And the log does carry the non-secret identifiers an operator needs.
    assert!(logs.contains(&id) || logs.contains("listening on"));
}
