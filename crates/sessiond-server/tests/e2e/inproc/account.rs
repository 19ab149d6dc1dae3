//! The account routes over HTTP (in process): a browser session's access token lists and ends
//! the user's own sessions, in its own tenant, and nobody else's.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::handoff::{browser_server, exchange_from, login_code, pkce, ORIGIN};
use super::TestApp;
use crate::harness::Reply;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
    (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

/// Logs `user` in through the handoff (in `tenant`) from a browser saying `ua`: (access token,
/// session id).
async fn log_in_as(s: &TestApp, user: &str, tenant: &str, ua: &str) -> (String, String) {
    let (verifier, challenge) = pkce(&format!("{user}/{tenant}/{ua}"));
    let code = s
        .post(
            "/v1/browser/login-codes",
            json!({"user_id": user, "tenant": tenant, "code_challenge": challenge,
                "code_challenge_method": "S256"}),
        )
        .await;
    assert_eq!(code.status, 201, "{}", code.text);
    let r = s
        .request(
            Method::POST,
            "/auth/browser/login",
            Some(&json!({"code": code.body["login_code"], "code_verifier": verifier})),
            &[("origin", ORIGIN), ("user-agent", ua)],
            false,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.body["access_token"].as_str().unwrap().to_owned(),
        r.body["session_id"].as_str().unwrap().to_owned(),
    )
}

async fn as_page(s: &TestApp, method: Method, path: &str, token: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    s.request(
        method,
        path,
        None,
        &[("origin", ORIGIN), ("authorization", &bearer)],
        false,
    )
    .await
}

fn ids(list: &Value) -> Vec<String> {
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn revoke_reason(s: &TestApp, id: &str) -> Value {
    let got = s.get(&format!("/v1/sessions/{id}")).await;
    got.body["session"]["revoke_reason"].clone()
}

#[tokio::test]
async fn the_device_list_is_the_users_own_in_the_tokens_tenant() {
    let s = browser_server("").await;
    let (_, old) = log_in_as(&s, "uma", "default", IPHONE).await;
    s.advance(Duration::from_secs(5));
    let (token, current) = log_in_as(&s, "uma", "default", CHROME).await;
    // Neither another user's nor another tenant's session of the same user is listed.
    let (_, other_user) = log_in_as(&s, "vic", "default", CHROME).await;
    let (_, other_tenant) = log_in_as(&s, "uma", "t2", CHROME).await;

    let r = as_page(&s, Method::GET, "/auth/browser/sessions", &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
    // Newest `last_seen_at` first.
    assert_eq!(ids(&r.body), [current.clone(), old.clone()]);
    assert!(!ids(&r.body).contains(&other_user));
    assert!(!ids(&r.body).contains(&other_tenant));
    let list = r.body["sessions"].as_array().unwrap();
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[1]["current"], false);
    assert_eq!(list[0]["user_agent"], CHROME);
    assert_eq!(list[0]["ip"], "127.0.0.1");
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(list[0]["last_seen_at"].is_string());
    assert_eq!(list[0]["device"]["browser"], "Chrome", "{}", r.text);
    assert_eq!(list[0]["device"]["browser_version"], "120.0.0.0");
    assert_eq!(list[0]["device"]["category"], "pc");
    assert!(list[0]["device"]["os"]
        .as_str()
        .unwrap()
        .starts_with("Windows"));
    assert_eq!(list[1]["device"]["os"], "iPhone", "{}", r.text);
    assert_eq!(list[1]["device"]["category"], "smartphone");
    s.stop().await;
}

#[tokio::test]
async fn revoking_touches_only_the_users_own_sessions() {
    let s = browser_server("").await;
    let (token, current) = log_in_as(&s, "wes", "default", CHROME).await;
    let (_, mine) = log_in_as(&s, "wes", "default", IPHONE).await;
    let (_, other_user) = log_in_as(&s, "xia", "default", CHROME).await;
    let (_, other_tenant) = log_in_as(&s, "wes", "t2", CHROME).await;
    let revoke = |id: &str| format!("/auth/browser/sessions/{id}/revoke");

    // Another user's, another tenant's, a malformed or unknown id: 404, and nothing changes.
    for id in [
        other_user.as_str(),
        other_tenant.as_str(),
        "ses-nope",
        "ses-AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        as_page(&s, Method::POST, &revoke(id), &token)
            .await
            .assert_problem(404, "session_not_found");
    }
    assert_eq!(revoke_reason(&s, &other_user).await, Value::Null);
    assert_eq!(revoke_reason(&s, &other_tenant).await, Value::Null);

    let r = as_page(&s, Method::POST, &revoke(&mine), &token).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(revoke_reason(&s, &mine).await, "user_revoked");
    // Already ended: not an active session of this user any more.
    as_page(&s, Method::POST, &revoke(&mine), &token)
        .await
        .assert_problem(404, "session_not_found");

    // The current one: a logout; the token stops working.
    let r = as_page(&s, Method::POST, &revoke(&current), &token).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(revoke_reason(&s, &current).await, "logout");
    as_page(&s, Method::GET, "/auth/browser/sessions", &token)
        .await
        .assert_problem(401, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn revoke_others_keeps_the_current_session() {
    let s = browser_server("").await;
    let (token, current) = log_in_as(&s, "yan", "default", CHROME).await;
    let (_, second) = log_in_as(&s, "yan", "default", IPHONE).await;
    let (_, third) = log_in_as(&s, "yan", "default", "curl/8.0").await;
    let (_, other_user) = log_in_as(&s, "zed", "default", CHROME).await;
    let (_, other_tenant) = log_in_as(&s, "yan", "t2", CHROME).await;
    let r = as_page(
        &s,
        Method::POST,
        "/auth/browser/sessions/revoke-others",
        &token,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"revoked": 2}));
    for id in [&second, &third] {
        assert_eq!(revoke_reason(&s, id).await, "user_revoked");
    }
    for id in [&current, &other_user, &other_tenant] {
        assert_eq!(revoke_reason(&s, id).await, Value::Null);
    }
    let r = as_page(&s, Method::GET, "/auth/browser/sessions", &token).await;
    assert_eq!(ids(&r.body), [current]);
    s.stop().await;
}

/// What the account routes refuse: `token_expired` only for an expired access token of ours,
/// `unauthorized` for everything else, 403 for a foreign origin.
#[tokio::test]
async fn account_routes_refuse_what_is_not_a_live_browser_token() {
    let s = browser_server("").await;
    let (token, _) = log_in_as(&s, "abe", "default", CHROME).await;
    let tokens_kind = s
        .post("/v1/sessions", json!({"user_id": "abe", "kind": "tokens"}))
        .await;
    let other_kind = tokens_kind.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let paths = [
        (Method::GET, "/auth/browser/sessions"),
        (Method::POST, "/auth/browser/sessions/revoke-others"),
        (Method::GET, "/auth/browser/events"),
    ];
    for (method, path) in &paths {
        for bad in ["", "garbage", &other_kind, &format!("{token}x")] {
            as_page(&s, method.clone(), path, bad)
                .await
                .assert_problem(401, "unauthorized");
        }
        s.request(method.clone(), path, None, &[("origin", ORIGIN)], false)
            .await
            .assert_problem(401, "unauthorized");
        // No token at all is 401 whatever the origin; a token from a foreign origin is 403.
        s.request(
            method.clone(),
            path,
            None,
            &[("origin", "https://evil.example")],
            false,
        )
        .await
        .assert_problem(401, "unauthorized");
        let bearer = format!("Bearer {token}");
        let foreign = s
            .request(
                method.clone(),
                path,
                None,
                &[
                    ("origin", "https://evil.example"),
                    ("authorization", &bearer),
                ],
                false,
            )
            .await;
        foreign.assert_problem(403, "origin_not_allowed");
        assert!(foreign.headers.get("access-control-allow-origin").is_none());
    }
    // The access token's own expiry (10 minutes by default, plus 30 s of leeway; the session
    // lives on).
    s.advance(Duration::from_secs(600 + 30));
    for (method, path) in &paths {
        as_page(&s, method.clone(), path, &token)
            .await
            .assert_problem(401, "token_expired");
    }
    s.stop().await;
}

/// A code exchanged from a foreign origin makes no session: the list stays as it was.
#[tokio::test]
async fn a_login_from_a_foreign_origin_never_reaches_the_list() {
    let s = browser_server("").await;
    let (token, current) = log_in_as(&s, "bea", "default", CHROME).await;
    let (verifier, challenge) = pkce("bea-evil");
    let code = login_code(&s, "bea", &challenge).await;
    exchange_from(
        &s,
        "https://evil.example",
        code["login_code"].as_str().unwrap(),
        &verifier,
    )
    .await
    .assert_problem(403, "origin_not_allowed");
    let r = as_page(&s, Method::GET, "/auth/browser/sessions", &token).await;
    assert_eq!(ids(&r.body), [current]);
    s.stop().await;
}

/// A page on sessiond's own origin: browsers send no `Origin` on a same-origin `GET`, only
/// `Sec-Fetch-Site: same-origin`; that reads the list. Without it, or from another site, 403.
#[tokio::test]
async fn a_same_origin_get_needs_no_origin_header() {
    let s = browser_server("").await;
    let (token, current) = log_in_as(&s, "cal", "default", CHROME).await;
    let bearer = format!("Bearer {token}");
    let r = s
        .request(
            Method::GET,
            "/auth/browser/sessions",
            None,
            &[
                ("authorization", &bearer),
                ("sec-fetch-site", "same-origin"),
            ],
            false,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.body), [current]);
    // Only the reads: a browser always sends `Origin` on a POST.
    s.request(
        Method::POST,
        "/auth/browser/sessions/revoke-others",
        None,
        &[
            ("authorization", &bearer),
            ("sec-fetch-site", "same-origin"),
        ],
        false,
    )
    .await
    .assert_problem(403, "origin_not_allowed");
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![
            ("authorization", bearer.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![
            ("authorization", bearer.as_str()),
            ("sec-fetch-site", "same-site"),
        ],
        vec![
            ("authorization", bearer.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://evil.example"),
        ],
    ] {
        s.request(Method::GET, "/auth/browser/sessions", None, &headers, false)
            .await
            .assert_problem(403, "origin_not_allowed");
    }
    s.stop().await;
}
