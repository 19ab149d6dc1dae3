//! Every `/v1` route over HTTP, plus the operations endpoints and error shapes (in process).

use reqwest::Method;
use serde_json::json;

use super::{spawn_app, Options};

fn assert_cookie_attrs(set_cookie: &str, name: &str, http_only: bool, same_site: &str) {
    assert!(set_cookie.starts_with(&format!("{name}=")), "{set_cookie}");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert!(set_cookie.contains("; Path=/"), "{set_cookie}");
    assert!(
        set_cookie.contains(&format!("; SameSite={same_site}")),
        "{set_cookie}"
    );
    assert_eq!(set_cookie.contains("; HttpOnly"), http_only, "{set_cookie}");
    assert!(
        !set_cookie.contains("Domain="),
        "__Host- cookies carry no Domain: {set_cookie}"
    );
    assert!(set_cookie.contains("; Max-Age="), "{set_cookie}");
}

#[tokio::test]
async fn cookie_session_lifecycle_over_http() {
    let s = spawn_app(Options::default()).await;
    let created = s.post("/v1/sessions", json!({"user_id": "alice", "kind": "cookie", "ip": "203.0.113.5", "claims": {"role": "admin"}})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let b = &created.body;
    let id = b["session"]["id"].as_str().unwrap().to_owned();
    let cookie = b["cookie"].as_str().unwrap().to_owned();
    let csrf = b["csrf_token"].as_str().unwrap().to_owned();
    assert!(b.get("tokens").is_none());
    let set = b["set_cookie"].as_array().unwrap();
    assert_eq!(set.len(), 2);
    assert_cookie_attrs(set[0].as_str().unwrap(), "__Host-sessiond", true, "Lax");
    assert_cookie_attrs(
        set[1].as_str().unwrap(),
        "__Host-sessiond-csrf",
        false,
        "Lax",
    );
    assert!(set[0].as_str().unwrap().contains(&cookie));
    for field in [
        "id",
        "user_id",
        "tenant",
        "kind",
        "created_at",
        "last_seen_at",
        "idle_expires_at",
        "absolute_expires_at",
        "revoked_at",
        "revoke_reason",
        "ip",
        "user_agent",
        "claims",
    ] {
        assert!(b["session"].get(field).is_some(), "session lacks {field}");
    }
    assert_eq!(b["session"]["claims"]["role"], "admin");

    let v = s
        .post("/v1/sessions/validate", json!({"cookie": cookie}))
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.body["credential"]["type"], "cookie");
    assert_eq!(v.body["deadline"], b["session"]["idle_expires_at"]);
    let header = format!("other=1; __Host-sessiond={cookie}; __Host-sessiond-csrf={csrf}");
    let v = s
        .post(
            "/v1/sessions/validate",
            json!({"cookie_header": header, "csrf_token": csrf, "require_csrf": true}),
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": cookie, "require_csrf": true}),
    )
    .await
    .assert_problem(403, "csrf_missing");
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": cookie, "csrf_token": "nope"}),
    )
    .await
    .assert_problem(403, "csrf_mismatch");
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": format!("{cookie}x")}),
    )
    .await
    .assert_problem(401, "invalid_credential");
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": cookie, "access_token": "x"}),
    )
    .await
    .assert_problem(400, "invalid_request");

    let rotated = s.post(&format!("/v1/sessions/{id}/csrf"), json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_csrf = rotated.body["csrf_token"].as_str().unwrap();
    assert_ne!(new_csrf, csrf);
    s.post(
        "/v1/sessions/validate",
        json!({"cookie": cookie, "csrf_token": csrf}),
    )
    .await
    .assert_problem(403, "csrf_mismatch");
    assert_eq!(
        s.post(
            "/v1/sessions/validate",
            json!({"cookie": cookie, "csrf_token": new_csrf})
        )
        .await
        .status,
        200
    );

    let got = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (got.status.as_u16(), got.body["session"]["id"].as_str()),
        (200, Some(id.as_str()))
    );
    let list = s.get("/v1/users/alice/sessions").await;
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 1);

    let r = s
        .request(
            Method::POST,
            &format!("/v1/sessions/{id}/revoke"),
            None,
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            &format!("/v1/sessions/{id}/revoke"),
            json!({"reason": "admin_action"}),
        )
        .await;
    assert_eq!(r.status, 204, "revoke is idempotent");
    s.post("/v1/sessions/validate", json!({"cookie": cookie}))
        .await
        .assert_problem(401, "session_revoked");
    let got = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(got.body["session"]["revoke_reason"], "logout");
    s.get("/v1/sessions/ses-AAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_problem(404, "session_not_found");
    s.post("/v1/sessions/ses-AAAAAAAAAAAAAAAAAAAAAA/revoke", json!({}))
        .await
        .assert_problem(404, "session_not_found");
    s.post(
        &format!("/v1/sessions/{id}/revoke"),
        json!({"reason": "Bad Reason"}),
    )
    .await
    .assert_problem(400, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn revoke_all_but_current_over_http() {
    let s = spawn_app(Options::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let c = s
            .post(
                "/v1/sessions",
                json!({"user_id": "bob", "kind": "cookie", "tenant": "acme"}),
            )
            .await;
        ids.push(c.body["session"]["id"].as_str().unwrap().to_owned());
    }
    let r = s
        .post(
            "/v1/users/bob/sessions/revoke",
            json!({"except": ids[2], "tenant": "acme"}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["revoked"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text
    );
    let list = s.get("/v1/users/bob/sessions?tenant=acme").await;
    let left: Vec<&str> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![ids[2].as_str()]);
    let r = s
        .request(
            Method::POST,
            "/v1/users/bob/sessions/revoke",
            None,
            &[],
            true,
        )
        .await;
    assert_eq!(r.body["revoked"].as_u64(), Some(1));
    s.stop().await;
}

#[tokio::test]
async fn token_session_refresh_and_reuse_over_http() {
    let s = spawn_app(Options {
        config: "[token_sessions]\nrefresh_grace = \"0s\"\n".into(),
        ..Options::default()
    })
    .await;
    let created = s
        .post(
            "/v1/sessions",
            json!({"user_id": "carol", "kind": "tokens"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let t = &created.body["tokens"];
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().unwrap() > 590);
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    assert!(created.body.get("set_cookie").is_none() && created.body.get("cookie").is_none());

    let v = s
        .post("/v1/sessions/validate", json!({"access_token": access}))
        .await;
    assert_eq!(
        (v.status.as_u16(), v.body["credential"]["type"].as_str()),
        (200, Some("access_token")),
        "{}",
        v.text
    );
    let r = s
        .post("/v1/tokens/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let next_refresh = r.body["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let next_access = r.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The new pair is used (changed with the rotation rules of docs/DESIGN.md: an unused pair's
    // predecessor would be a lost response and be re-issued)...
    let v = s
        .post(
            "/v1/sessions/validate",
            json!({"access_token": next_access}),
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    // ...so with no grace window, presenting the predecessor again is theft: the session dies.
    s.post("/v1/tokens/refresh", json!({"refresh_token": refresh}))
        .await
        .assert_problem(401, "refresh_token_reused");
    s.post(
        "/v1/sessions/validate",
        json!({"access_token": next_access}),
    )
    .await
    .assert_problem(401, "session_revoked");
    s.post("/v1/tokens/refresh", json!({"refresh_token": next_refresh}))
        .await
        .assert_problem(401, "session_revoked");
    s.post("/v1/tokens/refresh", json!({"refresh_token": access}))
        .await
        .assert_problem(401, "invalid_credential");
    let metrics = s
        .request(Method::GET, "/metrics", None, &[], false)
        .await
        .text;
    assert!(
        metrics.contains("sessiond_refresh_reuse_detected_total 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn claims_over_http() {
    let s = spawn_app(Options::default()).await;
    let until = "2999-01-01T00:00:00Z";
    let r = s
        .post("/v1/claims", json!({"id": "enrol-7", "expires_at": until}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["claimed"].as_bool()),
        (201, Some(true)),
        "{}",
        r.text
    );
    s.post("/v1/claims", json!({"id": "enrol-7", "expires_at": until}))
        .await
        .assert_problem(409, "token_already_used");
    s.post(
        "/v1/claims",
        json!({"id": "old", "expires_at": "2000-01-01T00:00:00Z"}),
    )
    .await
    .assert_problem(401, "token_expired");
    let created = s
        .post("/v1/sessions", json!({"user_id": "dan", "kind": "tokens"}))
        .await;
    let access = created.body["tokens"]["access_token"].as_str().unwrap();
    let r = s.post("/v1/claims", json!({"token": access})).await;
    assert_eq!(
        (r.status.as_u16(), r.body["issuer"].as_str()),
        (201, Some("sessiond")),
        "{}",
        r.text
    );
    s.post("/v1/claims", json!({"token": access}))
        .await
        .assert_problem(409, "token_already_used");
    s.post("/v1/claims", json!({"token": "not.a.jwt"}))
        .await
        .assert_problem(401, "invalid_credential");
    s.post("/v1/claims", json!({"nothing": true}))
        .await
        .assert_problem(400, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn errors_are_problem_json() {
    let s = spawn_app(Options::default()).await;
    let json_ct = [("content-type", "application/json")];
    s.raw(
        Method::POST,
        "/v1/sessions",
        b"{not json".to_vec(),
        &json_ct,
    )
    .await
    .assert_problem(400, "invalid_request");
    s.raw(
        Method::POST,
        "/v1/sessions",
        br#"{"user_id": 5, "kind": "cookie"}"#.to_vec(),
        &json_ct,
    )
    .await
    .assert_problem(400, "invalid_request");
    s.raw(
        Method::POST,
        "/v1/sessions",
        br#"{"user_id": "x", "kind": "cookie", "surprise": 1}"#.to_vec(),
        &json_ct,
    )
    .await
    .assert_problem(400, "invalid_request");
    let big = format!(
        r#"{{"user_id": "x", "kind": "cookie", "user_agent": "{}"}}"#,
        "a".repeat(70 * 1024)
    );
    s.raw(Method::POST, "/v1/sessions", big.into_bytes(), &json_ct)
        .await
        .assert_problem(413, "payload_too_large");
    s.raw(
        Method::POST,
        "/v1/sessions",
        b"{}".to_vec(),
        &[("content-type", "text/plain")],
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    s.request(
        Method::POST,
        "/v1/sessions",
        Some(&json!({"user_id": "x", "kind": "cookie"})),
        &[],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    s.request(
        Method::POST,
        "/v1/sessions",
        Some(&json!({"user_id": "x", "kind": "cookie"})),
        &[("authorization", "Bearer sessiond_wrong")],
        false,
    )
    .await
    .assert_problem(401, "unauthorized");
    s.request(Method::GET, "/v1/nowhere", None, &[], true)
        .await
        .assert_problem(404, "not_found");
    s.request(Method::GET, "/nowhere", None, &[], false)
        .await
        .assert_problem(404, "not_found");
    let r = s
        .request(Method::DELETE, "/v1/sessions", None, &[], true)
        .await;
    r.assert_problem(405, "method_not_allowed");
    s.post("/v1/sessions", json!({"user_id": "", "kind": "cookie"}))
        .await
        .assert_problem(400, "invalid_request");
    s.post(
        "/v1/sessions",
        json!({"user_id": "x", "kind": "cookie", "claims": {"sub": "y"}}),
    )
    .await
    .assert_problem(400, "invalid_request");
    s.post("/v1/sessions", json!({"user_id": "x", "kind": "bearer"}))
        .await
        .assert_problem(400, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn operations_endpoints() {
    let s = spawn_app(Options::default()).await;
    let h = s.request(Method::GET, "/healthz", None, &[], false).await;
    assert_eq!(h.status, 200);
    let r = s.request(Method::GET, "/readyz", None, &[], false).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let jwks = s
        .request(Method::GET, "/.well-known/jwks.json", None, &[], false)
        .await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none());
    s.post("/v1/sessions", json!({"user_id": "eve", "kind": "cookie"}))
        .await;
    s.post("/v1/sessions/validate", json!({"cookie": "v1.garbage"}))
        .await;
    let m = s.request(Method::GET, "/metrics", None, &[], false).await;
    assert!(m
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for needle in [
        "sessiond_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"201\"} 1",
        "sessiond_http_request_duration_seconds_bucket",
        "sessiond_sessions_created_total 1",
        "sessiond_sessions_revoked_total 0",
        "sessiond_validation_failures_total{reason=\"cookie_segments\"} 1",
        "sessiond_refresh_reuse_detected_total 0",
    ] {
        assert!(
            m.text.contains(needle),
            "metrics lack {needle}:\n{}",
            m.text
        );
    }
    let doc = s
        .request(Method::GET, "/openapi.json", None, &[], false)
        .await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/v1/sessions",
        "/v1/sessions/validate",
        "/v1/tokens/refresh",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/revoke",
        "/v1/sessions/{id}/csrf",
        "/v1/users/{user_id}/sessions",
        "/v1/users/{user_id}/sessions/revoke",
        "/v1/claims",
        "/auth/browser/refresh",
        "/auth/browser/logout",
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    s.stop().await;
}
