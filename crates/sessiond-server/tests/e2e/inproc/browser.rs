//! The browser hybrid over HTTP (in process): refresh cookie attributes, Origin checks, rotation
//! with reuse detection, logout.

use reqwest::Method;
use serde_json::json;

use super::{spawn_app, Options, TestApp};

const ORIGIN: &str = "https://app.example";

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

async fn browser_server() -> TestApp {
    spawn_app(Options {
        config: format!("[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n[token_sessions]\nrefresh_grace = \"0s\"\n"),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn browser_refresh_rotates_the_cookie_and_detects_reuse() {
    let s = browser_server().await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "fay", "kind": "browser"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(
        created.body["tokens"].get("refresh_token").is_none(),
        "the refresh token never leaves the cookie"
    );
    assert!(created.body["tokens"]["access_token"].is_string());
    let set = created.body["set_cookie"].as_array().unwrap();
    assert_eq!(set.len(), 1);
    let refresh_cookie = set[0].as_str().unwrap();
    for attr in [
        "__Host-sessiond-refresh=",
        "; HttpOnly",
        "; Secure",
        "; Path=/",
        "; SameSite=Strict",
        "; Max-Age=",
    ] {
        assert!(
            refresh_cookie.contains(attr),
            "{refresh_cookie} lacks {attr}"
        );
    }
    let first = cookie_value(refresh_cookie);
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();

    let cookie = format!("__Host-sessiond-refresh={first}");
    let ok = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.body["access_token"].is_string() && ok.body["expires_at"].is_string());
    // The manual clock stands still: the whole access lifetime (default 10 minutes) is left.
    assert_eq!(ok.body["expires_in"], 600, "{}", ok.text);
    assert!(ok.body.get("refresh_token").is_none());
    assert_eq!(ok.headers.get("cache-control").unwrap(), "no-store");
    let rotated = ok.set_cookies();
    assert_eq!(rotated.len(), 1);
    assert!(rotated[0].contains("SameSite=Strict") && rotated[0].contains("HttpOnly"));
    let second = cookie_value(&rotated[0]);
    assert_ne!(first, second);
    let v = s
        .post(
            "/v1/sessions/validate",
            json!({"access_token": ok.body["access_token"]}),
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.text);

    // A wrong or missing origin is 403 `origin_not_allowed` (configuration, not the session);
    // every session failure a uniform 401 `unauthorized` (log in again): no cookie, garbage.
    let second_cookie = format!("__Host-sessiond-refresh={second}");
    for headers in [
        vec![
            ("cookie", second_cookie.as_str()),
            ("origin", "https://evil.example"),
        ],
        vec![("cookie", second_cookie.as_str())],
    ] {
        s.request(Method::POST, "/auth/browser/refresh", None, &headers, false)
            .await
            .assert_problem(403, "origin_not_allowed");
    }
    for headers in [
        vec![("origin", ORIGIN)],
        vec![
            ("cookie", "__Host-sessiond-refresh=garbage"),
            ("origin", ORIGIN),
        ],
    ] {
        s.request(Method::POST, "/auth/browser/refresh", None, &headers, false)
            .await
            .assert_problem(401, "unauthorized");
    }
    // The first cookie again, after the (zero) grace window: theft, the session is revoked.
    s.request(
        Method::POST,
        "/auth/browser/refresh",
        None,
        &[("cookie", &cookie), ("origin", ORIGIN)],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    let got = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        got.body["session"]["revoke_reason"], "refresh_token_reused",
        "{}",
        got.text
    );
    s.request(
        Method::POST,
        "/auth/browser/refresh",
        None,
        &[("cookie", &second_cookie), ("origin", ORIGIN)],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn browser_logout_revokes_and_clears() {
    let s = browser_server().await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "gil", "kind": "browser"}))
        .await;
    let value = cookie_value(created.body["set_cookie"][0].as_str().unwrap());
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let cookie = format!("__Host-sessiond-refresh={value}");
    s.request(
        Method::POST,
        "/auth/browser/logout",
        None,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
        false,
    )
    .await
    .assert_problem(403, "origin_not_allowed");
    let out = s
        .request(
            Method::POST,
            "/auth/browser/logout",
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert!(
        out.headers.get("clear-site-data").is_none(),
        "off by default: it would clear the application's own data"
    );
    let cleared = out.set_cookies();
    assert_eq!(cleared.len(), 3);
    for (c, name) in cleared.iter().zip([
        "__Host-sessiond=",
        "__Host-sessiond-refresh=",
        "__Host-sessiond-csrf=",
    ]) {
        assert!(c.starts_with(name) && c.contains("Max-Age=0"), "{c}");
    }
    let got = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(got.body["session"]["revoke_reason"], "logout");
    s.request(
        Method::POST,
        "/auth/browser/refresh",
        None,
        &[("cookie", &cookie), ("origin", ORIGIN)],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    s.stop().await;
}

/// CORS on the browser routes: an allowed origin gets `Access-Control-Allow-Origin` (itself) with
/// credentials, on answers and preflights; any other origin gets no CORS header at all, so its
/// page cannot read the answer (and the server refuses it too). `Vary: Origin` either way.
#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let s = browser_server().await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "gus", "kind": "browser"}))
        .await;
    let cookie = format!(
        "__Host-sessiond-refresh={}",
        cookie_value(created.body["set_cookie"][0].as_str().unwrap())
    );
    for path in ["/auth/browser/refresh", "/auth/browser/logout"] {
        // Preflight from the application's origin.
        let pre = s
            .request(
                Method::OPTIONS,
                path,
                None,
                &[
                    ("origin", ORIGIN),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
                false,
            )
            .await;
        assert!(pre.status.is_success(), "{path}: {}", pre.status);
        assert_eq!(pre.headers["access-control-allow-origin"], ORIGIN);
        assert_eq!(pre.headers["access-control-allow-credentials"], "true");
        assert_eq!(pre.headers["access-control-allow-methods"], "GET, POST");
        assert!(pre.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("content-type"));
        assert!(pre.headers["vary"].to_str().unwrap().contains("origin"));
        // Preflight from anywhere else: no CORS headers, so the browser stops there.
        let foreign = s
            .request(
                Method::OPTIONS,
                path,
                None,
                &[
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "POST"),
                ],
                false,
            )
            .await;
        assert!(foreign.headers.get("access-control-allow-origin").is_none());
        assert!(foreign
            .headers
            .get("access-control-allow-credentials")
            .is_none());
    }
    // The answers themselves: readable by the allowed origin (success and failure alike).
    let ok = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    assert!(ok.headers["vary"].to_str().unwrap().contains("origin"));
    let refused = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[("origin", ORIGIN)],
            false,
        )
        .await;
    refused.assert_problem(401, "unauthorized");
    assert_eq!(refused.headers["access-control-allow-origin"], ORIGIN);
    let foreign = s
        .request(
            Method::POST,
            "/auth/browser/refresh",
            None,
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            false,
        )
        .await;
    foreign.assert_problem(403, "origin_not_allowed");
    assert!(foreign.headers.get("access-control-allow-origin").is_none());
    // The /v1 API is for servers: no CORS there.
    let api = s
        .request(
            Method::OPTIONS,
            "/v1/sessions",
            None,
            &[
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
            ],
            false,
        )
        .await;
    assert!(api.headers.get("access-control-allow-origin").is_none());
    s.stop().await;
}

/// `cookies.name` renames the three cookies (keeping `__Host-`), so two deployments on one host
/// keep theirs apart; `cookies.clear_site_data` adds exactly the directives asked for.
#[tokio::test]
async fn cookie_names_and_clear_site_data_are_settings() {
    let s = spawn_app(Options {
        config: format!(
            "[cookies]\nallowed_origins = [\"{ORIGIN}\"]\nname = \"shop\"\n\
             clear_site_data = [\"storage\", \"cache\"]\n"
        ),
        ..Options::default()
    })
    .await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "hal", "kind": "browser"}))
        .await;
    let set = created.body["set_cookie"][0].as_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-shop-refresh="), "{set}");
    let cookie = format!("__Host-shop-refresh={}", cookie_value(&set));
    // The default name is not this deployment's cookie.
    let other = format!("__Host-sessiond-refresh={}", cookie_value(&set));
    s.request(
        Method::POST,
        "/auth/browser/refresh",
        None,
        &[("cookie", &other), ("origin", ORIGIN)],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    let out = s
        .request(
            Method::POST,
            "/auth/browser/logout",
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_eq!(out.headers["clear-site-data"], "\"storage\", \"cache\"");
    let cleared = out.set_cookies();
    for name in ["__Host-shop=", "__Host-shop-refresh=", "__Host-shop-csrf="] {
        assert!(cleared.iter().any(|c| c.starts_with(name)), "{cleared:?}");
    }
    s.stop().await;
}
