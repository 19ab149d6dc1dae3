//! API-key authentication is one layer on the whole `/v1` router: every `/v1` route the API
//! describes answers 401 `unauthorized` without a valid key, and is routed with one.

use reqwest::Method;

use super::{spawn_app, Options};

/// Every `(method, path)` of `/openapi.json` under `/v1`, path parameters filled in.
async fn v1_routes(s: &super::TestApp) -> Vec<(Method, String)> {
    let doc = s
        .request(Method::GET, "/openapi.json", None, &[], false)
        .await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    let mut routes = Vec::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let path = path
            .replace("{id}", "ses-AAAAAAAAAAAAAAAAAAAAAA")
            .replace("{user_id}", "alice");
        assert!(!path.contains('{'), "unfilled parameter in {path}");
        // Without `user_id` the events route is the deployment-wide stream, which never ends;
        // an empty one answers at once (400), after authentication.
        let path = if path == "/v1/events" {
            String::from("/v1/events?user_id=")
        } else {
            path
        };
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            routes.push((method, path.clone()));
        }
    }
    routes
}

#[tokio::test]
async fn every_v1_route_refuses_a_request_without_a_valid_key() {
    let s = spawn_app(Options::default()).await;
    let routes = v1_routes(&s).await;
    assert_eq!(routes.len(), 12, "{routes:?}");
    let wrong = [("authorization", "Bearer sessiond_not-a-key")];
    let empty = [("authorization", "Bearer ")];
    let basic = [("authorization", "Basic dXNlcjpwYXNz")];
    for (method, path) in &routes {
        for headers in [&[][..], &wrong[..], &empty[..], &basic[..]] {
            s.request(method.clone(), path, None, headers, false)
                .await
                .assert_problem(401, "unauthorized");
        }
        // With the key the route exists: whatever it answers, it is neither an unknown route
        // nor a wrong method (so the list above is the router's, not a stale description).
        let r = s.request(method.clone(), path, None, &[], true).await;
        assert_ne!(r.code(), "unauthorized", "{method} {path}: {}", r.text);
        assert_ne!(r.code(), "not_found", "{method} {path}: {}", r.text);
        assert_ne!(r.status, 405, "{method} {path}: {}", r.text);
    }
    // Unknown paths and wrong methods under /v1 answer as before, key or not.
    s.request(Method::GET, "/v1/nowhere", None, &[], false)
        .await
        .assert_problem(404, "not_found");
    s.request(Method::DELETE, "/v1/sessions", None, &[], false)
        .await
        .assert_problem(405, "method_not_allowed");
    s.stop().await;
}

/// The `Bearer` scheme name is case-insensitive (RFC 9110 §11.1).
#[tokio::test]
async fn the_bearer_scheme_matches_in_any_case() {
    let s = spawn_app(Options::default()).await;
    let key = s.api_key.clone();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {key}");
        let r = s
            .request(
                Method::GET,
                "/v1/users/alice/sessions",
                None,
                &[("authorization", &value)],
                false,
            )
            .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.text);
    }
    s.stop().await;
}

/// Every extractor rejection is problem+json with a wire code (issue 12, item 8): path
/// parameters that do not decode, unknown and duplicate query parameters.
#[tokio::test]
async fn malformed_paths_and_queries_are_problems() {
    let s = spawn_app(Options::default()).await;
    for path in [
        "/v1/sessions/%FF%FE",
        "/v1/sessions/%C3%28/revoke",
        "/v1/users/%80/sessions",
        "/v1/users/alice/sessions?tenant=a&tenant=b",
        "/v1/users/alice/sessions?surprise=1",
        "/v1/users/alice/sessions?tenant=%FF",
        "/v1/events?user_id=alice&user_id=bob",
        "/v1/events?user_id=alice&surprise=1",
    ] {
        let method = if path.ends_with("/revoke") {
            Method::POST
        } else {
            Method::GET
        };
        let r = s.request(method, path, None, &[], true).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        r.assert_problem(400, "invalid_request");
    }
    s.stop().await;
}

/// A `verify`-scoped key (`sessiond api-keys create --scope verify`) may validate, read and
/// watch, and nothing else: every route that changes state answers 403 `forbidden`, before its
/// body is even read. An `admin` key (the default) reaches every route.
#[tokio::test]
async fn a_verify_key_validates_and_watches_but_cannot_change_anything() {
    let s = spawn_app(Options::default()).await;
    let out = s
        .cli(&[
            "api-keys",
            "create",
            "--name",
            "resource server",
            "--scope",
            "verify",
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("scope verify"), "{stdout}");
    let key = stdout.lines().nth(1).unwrap().trim().to_owned();
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
    let read_only = [
        (Method::POST, "/v1/sessions/validate"),
        (Method::GET, "/v1/sessions/{id}"),
        (Method::GET, "/v1/users/{user_id}/sessions"),
        (Method::GET, "/v1/sessions/{id}/events"),
        (Method::GET, "/v1/events"),
    ];
    let routes = v1_routes(&s).await;
    let mut forbidden = 0;
    for (method, path) in &routes {
        let template = path
            .trim_end_matches("?user_id=")
            .replace("ses-AAAAAAAAAAAAAAAAAAAAAA", "{id}")
            .replace("alice", "{user_id}");
        let r = s.request(method.clone(), path, None, &headers, false).await;
        if read_only.contains(&(method.clone(), template.as_str())) {
            assert_ne!(r.code(), "forbidden", "{method} {path}: {}", r.text);
            assert_ne!(r.code(), "unauthorized", "{method} {path}: {}", r.text);
        } else {
            r.assert_problem(403, "forbidden");
            forbidden += 1;
        }
    }
    assert_eq!(forbidden, routes.len() - read_only.len());
    // The read-only routes work for real: a session the admin key created validates.
    let created = s
        .create_session("alice", sessiond_server::dto::KindParam::Cookie)
        .await;
    let body = serde_json::json!({"cookie": created.cookie.unwrap()});
    let r = s
        .request(
            Method::POST,
            "/v1/sessions/validate",
            Some(&body),
            &headers,
            false,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = s.cli(&["api-keys", "list"]).await;
    assert!(String::from_utf8(list.stdout).unwrap().contains("verify"));
    s.stop().await;
}
