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
    assert_eq!(routes.len(), 11, "{routes:?}");
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
