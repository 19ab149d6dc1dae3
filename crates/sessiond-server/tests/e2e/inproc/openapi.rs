//! `/openapi.json` against the router that serves it: every documented operation is routed,
//! each parameter is where the handler reads it, optional bodies are optional, and errors are
//! `application/problem+json` in the document and on the wire. (The document's own validity and
//! its schemas against real traffic are checked by `tools/openapi/check.sh` in `scripts/test`:
//! openapi-spec-validator and Schemathesis.)

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sessiond_server::dto::KindParam;

use super::{spawn_app, Options, TestApp};

/// What came back; the body only when it is not an event stream (which would not end).
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

async fn send(
    s: &TestApp,
    method: &Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    auth: bool,
) -> Answer {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("{}{path_and_query}", s.base))
        .timeout(Duration::from_secs(20));
    if auth {
        req = req.bearer_auth(&s.api_key);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = if content_type.starts_with("text/event-stream") {
        Value::Null
    } else {
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null)
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// A documented response, with a `$ref` to `#/components/responses/…` followed.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(r) => &doc["components"]["responses"][r.rsplit('/').next().unwrap()],
        None => response,
    }
}

#[tokio::test]
async fn the_document_describes_the_router() {
    let s = spawn_app(Options::default()).await;
    let doc = send(&s, &Method::GET, "/openapi.json", &[], None, false).await;
    assert_eq!(doc.status, 200);
    assert!(doc.content_type.starts_with("application/json"));
    let doc = doc.body;
    // A real session, so that `{id}` routes answer from a row, not from a 404.
    let session = s.create_session("alice", KindParam::Cookie).await.session;
    let mut operations = 0;
    // Every mismatch, so that one run lists them all.
    let mut failures: Vec<String> = Vec::new();
    macro_rules! check {
        ($ok:expr, $($why:tt)+) => {
            if !$ok {
                failures.push(format!($($why)+));
            }
        };
    }
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{method} {template}");
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let of = |location: &str| -> Vec<Value> {
                params
                    .iter()
                    .filter(|p| p["in"] == location)
                    .cloned()
                    .collect()
            };

            // Path parameters are exactly the template's placeholders, filled in here.
            let placeholders: BTreeSet<&str> = template
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let in_path = of("path");
            let documented: BTreeSet<&str> = in_path
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            check!(
                documented == placeholders,
                "{what}: path parameters {documented:?}, template {placeholders:?}"
            );
            let path = template
                .replace("{id}", session.id.as_str())
                .replace("{user_id}", "alice");
            assert!(!path.contains('{'), "{what}: unknown placeholder");

            // Every documented query parameter, with a valid value: the handler reads them
            // from the query (its extractor refuses any other name with 400).
            let query: Vec<String> = of("query")
                .iter()
                .map(|p| match p["name"].as_str().unwrap() {
                    "user_id" => String::from("user_id=alice"),
                    "tenant" => String::from("tenant=default"),
                    other => panic!("{what}: no test value for query parameter {other}"),
                })
                .collect();
            let with_query = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{}", query.join("&"))
            };

            // Header and cookie parameters go where they are documented (the browser routes
            // answer 401 to these values, but only after reading them).
            let mut cookie = String::new();
            let mut headers: Vec<(String, String)> = Vec::new();
            for p in of("header") {
                headers.push((p["name"].as_str().unwrap().to_owned(), String::from("x")));
            }
            for p in of("cookie") {
                cookie = format!("{}=x", p["name"].as_str().unwrap());
            }
            if !cookie.is_empty() {
                headers.push((String::from("cookie"), cookie));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();

            // The route exists with the key, and takes an absent optional body (or refuses an
            // absent required one as a bad request, never as an unknown route).
            let body = &op["requestBody"];
            // The API key for `/v1`; the browser routes' access token never gets that far here
            // (no allowed origin is configured).
            let browser = template.starts_with("/auth/browser/");
            let auth = op.get("security").is_some() && !browser;
            let r = send(&s, &method, &with_query, &headers, None, auth).await;
            check!(r.code() != "not_found", "{what}: not routed");
            check!(r.status != 405, "{what}: not routed for this method");
            let documented_status = |status: StatusCode| {
                op["responses"]
                    .as_object()
                    .unwrap()
                    .contains_key(status.as_str())
            };
            check!(
                documented_status(r.status),
                "{what}: {} is not documented ({})",
                r.status,
                r.body
            );
            let bearer_route = browser && op.get("security").is_some();
            if bearer_route {
                // No access token: 401 before the origin is looked at.
                check!(r.status == 401, "{what}: {}", r.body);
            } else if browser {
                // No allowed origin is configured: the origin refusal, after the route.
                check!(r.status == 403, "{what}: {}", r.body);
            } else if body.is_null() || body["required"] != true {
                check!(
                    r.status.is_success(),
                    "{what}: without a body (optional or none): {} {}",
                    r.status,
                    r.body
                );
            } else {
                check!(
                    r.status == 400 || r.status == 415,
                    "{what}: a required body was not given: {} {}",
                    r.status,
                    r.body
                );
            }
            if !query.is_empty() {
                let r = send(
                    &s,
                    &method,
                    &format!("{with_query}&undocumented=1"),
                    &headers,
                    None,
                    auth,
                )
                .await;
                check!(
                    r.status == 400,
                    "{what}: an undocumented query parameter: {}",
                    r.status
                );
            }

            // One error of each operation, on the wire and in the document: problem+json.
            let (status, r) = if auth {
                let r = send(&s, &method, &with_query, &[], None, false).await;
                (401, r)
            } else if bearer_route {
                (401, send(&s, &method, &path, &[], None, false).await)
            } else if browser {
                (403, send(&s, &method, &path, &[], None, false).await)
            } else {
                continue;
            };
            check!(r.status == status, "{what}: {}", r.status);
            check!(
                r.content_type == "application/problem+json",
                "{what}: a {status} served as {}",
                r.content_type
            );
            let documented = resolve(&doc, &op["responses"][status.to_string()]);
            let types: Vec<String> = documented["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            check!(
                types == ["application/problem+json"],
                "{what}: a {status} documented as {types:?}"
            );
            check!(
                !documented["description"].as_str().unwrap_or("").is_empty(),
                "{what}: {status} without a description"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(operations, 24);
    // The revocations above took their optional bodies as absent: the session is revoked.
    let revoked = s.get(&format!("/v1/sessions/{}", session.id)).await;
    assert_eq!(
        revoked.body["session"]["revoke_reason"],
        json!("logout"),
        "{}",
        revoked.text
    );
    s.stop().await;
}

/// Bodies the document refuses, the server refuses, each with its problem (Schemathesis found
/// the first: serde's derive took an array of a struct's fields, so `[null, null]` revoked every
/// session of the user).
#[tokio::test]
async fn bodies_are_one_json_object_of_one_shape() {
    let s = spawn_app(Options::default()).await;
    let session = s.create_session("alice", KindParam::Cookie).await.session;
    let revoke_all = "/v1/users/alice/sessions/revoke";
    let revoke = format!("/v1/sessions/{}/revoke", session.id);
    let big = " ".repeat(70 * 1024);
    // (route, body, status, code)
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        // The fields as an array, in order.
        (revoke_all, "[null, null]", 400, "invalid_request"),
        (&revoke, "[\"logout\"]", 400, "invalid_request"),
        (
            "/v1/sessions",
            r#"["bob", null, "cookie", null, null, null]"#,
            400,
            "invalid_request",
        ),
        (
            "/v1/sessions/validate",
            r#"["c", null, null, null, false, null, null]"#,
            400,
            "invalid_request",
        ),
        ("/v1/claims", r#"["t"]"#, 400, "invalid_request"),
        // Other JSON values.
        (revoke_all, "1", 400, "invalid_request"),
        (revoke_all, "\"x\"", 400, "invalid_request"),
        // A claim is a token or an id with its expiry: not both, nothing else.
        (
            "/v1/claims",
            r#"{"id": "x1", "expires_at": "2030-01-01T00:00:00Z", "token": "t"}"#,
            400,
            "invalid_request",
        ),
        (
            "/v1/claims",
            r#"{"id": "x2", "expires_at": "2030-01-01T00:00:00Z", "extra": 1}"#,
            400,
            "invalid_request",
        ),
        (
            "/v1/claims",
            r#"{"token": "t", "extra": 1}"#,
            400,
            "invalid_request",
        ),
        // An optional body over the limit is a problem too (it was axum's text/plain 413).
        (&revoke, &big, 413, "payload_too_large"),
        (revoke_all, &big, 413, "payload_too_large"),
    ];
    for (path, body, status, code) in cases {
        let r = s
            .raw(
                Method::POST,
                path,
                body.as_bytes().to_vec(),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(r.status, status, "{path} {:.60}: {}", body, r.text);
        r.assert_problem(status, code);
    }
    // None of those revoked anything; an absent or null optional body is no body.
    let listed = s.get("/v1/users/alice/sessions").await;
    assert_eq!(
        listed.body["sessions"].as_array().unwrap().len(),
        1,
        "{}",
        listed.text
    );
    for body in ["", "null", " \n"] {
        let r = s
            .raw(
                Method::POST,
                &revoke,
                body.as_bytes().to_vec(),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(r.status, 204, "{body:?}: {}", r.text);
    }
    s.stop().await;
}
