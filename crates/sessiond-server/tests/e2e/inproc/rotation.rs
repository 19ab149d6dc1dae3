//! The refusals of the refresh routes, in process (docs/DESIGN.md §3.3).

use reqwest::Method;
use serde_json::{json, Value};

use super::{spawn_app, Options};
use crate::harness::jwt_part;
use crate::rotation::{metric, refresh_cookie_value};

const ORIGIN: &str = "https://app.example";

/// The refusals of the refresh routes change nothing: the browser routes refuse the refresh
/// token of a `tokens` session before rotating or revoking it, and `/v1/tokens/refresh` takes
/// the client's `ip`/`user_agent` for a bound session (failing closed without them).
#[tokio::test]
async fn refresh_routes_refuse_before_they_write() {
    let s = spawn_app(Options {
        config: format!(
            "[sessions]\nbind_ip = true\n[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n"
        ),
        ..Options::default()
    })
    .await;
    let created = s
        .post(
            "/v1/sessions",
            json!({"user_id": "native", "kind": "tokens", "ip": "198.51.100.7"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let refresh_token = created.body["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = format!("__Host-sessiond-refresh={refresh_token}");
    let rotated = r#"sessiond_refreshes_total{outcome="rotated"} "#;

    for route in ["/auth/browser/refresh", "/auth/browser/logout"] {
        s.request(
            Method::POST,
            route,
            None,
            &[("cookie", &cookie), ("origin", ORIGIN)],
            false,
        )
        .await
        .assert_problem(401, "unauthorized");
    }
    // Bound to an IP: none given, or another one, is a refusal without a write.
    s.post(
        "/v1/tokens/refresh",
        json!({"refresh_token": refresh_token}),
    )
    .await
    .assert_problem(401, "binding_mismatch");
    s.post(
        "/v1/tokens/refresh",
        json!({"refresh_token": refresh_token, "ip": "203.0.113.9"}),
    )
    .await
    .assert_problem(401, "binding_mismatch");
    s.post(
        "/v1/tokens/refresh",
        json!({"refresh_token": refresh_token, "ip": "x".repeat(65)}),
    )
    .await
    .assert_problem(400, "invalid_request");
    let metrics = s.get("/metrics").await.text;
    assert_eq!(metric(&metrics, rotated), 0, "{metrics}");
    let got = s.get(&format!("/v1/sessions/{id}")).await;
    assert!(got.body["session"]["revoked_at"].is_null(), "{}", got.text);

    // The same token, with the bound IP, is still the current one: it rotates.
    let ok = s
        .post(
            "/v1/tokens/refresh",
            json!({"refresh_token": refresh_token, "ip": "198.51.100.7", "user_agent": "native/1"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        jwt_part(ok.body["tokens"]["refresh_token"].as_str().unwrap(), 1)["gen"],
        json!(1)
    );
    let metrics = s.get("/metrics").await.text;
    assert_eq!(metric(&metrics, rotated), 1, "{metrics}");

    // Browser logout of a bound browser session from another address (the test client is
    // 127.0.0.1, the session was created for 203.0.113.9): logged out all the same.
    let browser = s
        .post(
            "/v1/sessions",
            json!({"user_id": "roamer", "kind": "browser", "ip": "203.0.113.9"}),
        )
        .await;
    let browser_id = browser.body["session"]["id"].as_str().unwrap().to_owned();
    let set: Value = browser.body["set_cookie"][0].clone();
    let value = refresh_cookie_value(set.as_str().unwrap()).unwrap();
    let out = s
        .request(
            Method::POST,
            "/auth/browser/logout",
            None,
            &[
                ("cookie", &format!("__Host-sessiond-refresh={value}")),
                ("origin", ORIGIN),
            ],
            false,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    let got = s.get(&format!("/v1/sessions/{browser_id}")).await;
    assert_eq!(
        got.body["session"]["revoke_reason"], "logout",
        "{}",
        got.text
    );
    s.stop().await;
}
