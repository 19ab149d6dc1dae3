//! The browser routes where the log matters: development cookies (a warning at start) and the
//! bound-IP check (the refusal's reason is logged). The rest runs in process (`inproc::browser`).

use reqwest::Method;
use serde_json::json;

use crate::harness::{spawn, Options, Server};

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

#[tokio::test]
async fn insecure_development_cookies_drop_secure_and_the_prefix() {
    let s = spawn(Options {
        config: "[cookies]\nsecure = false\n".into(),
        ..Options::default()
    })
    .await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "hal", "kind": "cookie"}))
        .await;
    let set = created.body["set_cookie"][0].as_str().unwrap();
    assert!(
        set.starts_with("sessiond=") && !set.contains("Secure"),
        "{set}"
    );
    let logs = s.stop().await;
    assert!(
        logs.contains("cookies.secure = false"),
        "a warning at start: {logs}"
    );
}

/// Creates a browser session recorded with `ip` and refreshes it once with `extra` headers:
/// the status of the refresh.
async fn refresh_bound(s: &Server, ip: &str, extra: &[(&str, &str)]) -> u16 {
    let created = s
        .post(
            "/v1/sessions",
            json!({"user_id": "ivy", "kind": "browser", "ip": ip}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let value = cookie_value(created.body["set_cookie"][0].as_str().unwrap());
    let cookie = format!("__Host-sessiond-refresh={value}");
    let mut headers = vec![("cookie", cookie.as_str()), ("origin", ORIGIN)];
    headers.extend_from_slice(extra);
    let r = s
        .request(Method::POST, "/auth/browser/refresh", None, &headers, false)
        .await;
    if r.status != 200 {
        r.assert_problem(401, "unauthorized");
    }
    r.status.as_u16()
}

/// With `bind_ip`, the browser refresh checks the client's address: the connection's peer, or,
/// behind a trusted proxy, the `X-Forwarded-For` hop it appended. (The test client is the peer
/// 127.0.0.1.)
#[tokio::test]
async fn browser_refresh_checks_the_bound_ip() {
    let direct = spawn(Options {
        config: format!(
            "[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n[sessions]\nbind_ip = true\n"
        ),
        ..Options::default()
    })
    .await;
    assert_eq!(refresh_bound(&direct, "127.0.0.1", &[]).await, 200);
    assert_eq!(refresh_bound(&direct, "::ffff:127.0.0.1", &[]).await, 200);
    assert_eq!(refresh_bound(&direct, "203.0.113.9", &[]).await, 401);
    // Without trusted proxies, a forwarded-for header is nobody's word.
    let spoof = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(refresh_bound(&direct, "203.0.113.9", &spoof).await, 401);
    let logs = direct.stop().await;
    assert!(logs.contains("ip_mismatch"), "the reason is logged");

    let proxied = spawn(Options {
        config: format!(
            "[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n\
             [sessions]\nbind_ip = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n"
        ),
        ..Options::default()
    })
    .await;
    let forwarded = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
    assert_eq!(
        refresh_bound(&proxied, "203.0.113.9", &forwarded).await,
        200
    );
    // The left-most entry is whatever the client wrote; only the proxy's own append counts.
    assert_eq!(
        refresh_bound(&proxied, "198.51.100.1", &forwarded).await,
        401
    );
    // The proxy sent no header: the client's address is unknown, which fails closed.
    assert_eq!(refresh_bound(&proxied, "203.0.113.9", &[]).await, 401);
    proxied.stop().await;
}
