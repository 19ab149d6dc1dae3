//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers, the
//! `ToSchema`/`IntoParams` wire types and the problem responses of [`crate::problem::doc`]: it
//! cannot drift from the code. It is valid OpenAPI 3.1 and exact: every status a route can
//! answer (besides the router's own 404 `not_found` and 405 `method_not_allowed`) is listed with
//! its codes, errors are `application/problem+json`, and each schema holds the server's rules
//! (`scripts/test` checks it with a validator and Schemathesis against a running server).

use axum::Json;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::problem::doc;
use crate::routes::{api, browser, dto, events, ops};
use sessiond_api::Problem;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`sessiond api-keys create`, or the bootstrap `SESSIOND_API_KEY`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The access token of a `browser` session (from `POST /auth/browser/login` \
                         or `/auth/browser/refresh`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The problem responses, once each, under `#/components/responses`.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, response) in doc::all() {
            components.responses.insert(name.to_owned(), response);
        }
    }
}

/// `ValidateRequest` takes exactly one credential: its derived object, and a `oneOf` of "this
/// one is a string" for each of [`dto::ValidateRequest::CREDENTIALS`] (a `null` is not given).
struct ExactlyOneCredential;

impl Modify for ExactlyOneCredential {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(derived) = components.schemas.remove("ValidateRequest") else {
            return;
        };
        let mut one_of = OneOfBuilder::new();
        for name in dto::ValidateRequest::CREDENTIALS {
            one_of = one_of.item(
                ObjectBuilder::new()
                    .required(name)
                    .property(name, ObjectBuilder::new().schema_type(Type::String)),
            );
        }
        let description = match &derived {
            RefOr::T(Schema::Object(object)) => object.description.clone(),
            _ => None,
        };
        let schema = AllOfBuilder::new()
            .item(derived)
            .item(one_of)
            .description(description);
        components
            .schemas
            .insert(String::from("ValidateRequest"), schema.into());
    }
}

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "sessiond", description = "Session and credential lifecycle service"),
    paths(
        api::create_session, api::validate, api::refresh, api::get_session, api::revoke_session,
        api::rotate_csrf, api::user_sessions, api::revoke_user, api::claim, api::create_login_code,
        events::session_events, events::user_events,
        browser::login, browser::refresh, browser::logout, browser::sessions,
        browser::revoke_session, browser::revoke_others, browser::events,
        ops::healthz, ops::readyz, ops::metrics, openapi, ops::jwks,
    ),
    components(schemas(
        Problem, dto::SessionView, dto::KindParam, dto::CreateSessionRequest, dto::TokensView,
        dto::CreateSessionResponse, dto::ValidateRequest, dto::CredentialView, dto::ValidateResponse,
        dto::RefreshRequest, dto::RefreshResponse, dto::RevokeRequest, dto::CsrfResponse,
        dto::SessionResponse, dto::SessionsResponse, dto::RevokeUserRequest, dto::RevokeUserResponse,
        dto::ClaimRequest, dto::TokenClaim, dto::IdClaim, dto::ClaimResponse,
        dto::BrowserRefreshResponse, dto::LoginCodeRequest, dto::ChallengeMethod,
        dto::LoginCodeResponse, dto::BrowserLoginRequest, dto::BrowserLoginResponse,
        dto::DeviceSession, dto::DeviceInfo, dto::DeviceSessionsResponse, dto::Health, dto::Readiness, dto::JwkSet, dto::PublicJwk,
    )),
    modifiers(&ApiKeyAuth, &ProblemResponses, &ExactlyOneCredential)
)]
pub(crate) struct ApiDoc;

/// This API's OpenAPI document, generated from the handlers and wire types.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)",
        content_type = "application/json", body = Object)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use sessiond::service::{MAX_CLAIM_ID_BYTES, MAX_IP_BYTES, MAX_USER_AGENT_BYTES};

    use super::*;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// Every operation: (method, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                all.push((method.clone(), path.clone(), op.clone()));
            }
        }
        all
    }

    /// A response, with a `$ref` to `#/components/responses/…` followed.
    fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
        match response["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/components/responses/").unwrap();
                &doc["components"]["responses"][name]
            }
            None => response,
        }
    }

    /// The `{name}` segments of a path template.
    fn placeholders(path: &str) -> BTreeSet<String> {
        path.split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert_eq!(ops.len(), 24);
        let mut ids = BTreeSet::new();
        for (method, path, op) in &ops {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
    }

    #[test]
    fn every_response_has_a_description_and_errors_are_problems() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, response) in responses {
                let response = resolve(&doc, response);
                let description = response["description"].as_str().unwrap_or("");
                assert!(
                    !description.is_empty(),
                    "{method} {path} {status}: no description"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object().unwrap();
                    let types: Vec<&String> = content.keys().collect();
                    assert_eq!(
                        types,
                        ["application/problem+json"],
                        "{method} {path} {status}"
                    );
                    let schema = &content["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["allOf"][0]["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                    assert_eq!(
                        schema["allOf"][1]["properties"]["status"]["enum"][0]
                            .as_u64()
                            .map(|s| s.to_string()),
                        Some(status.clone()),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn path_parameters_are_the_templates_and_v1_routes_need_the_key() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{method} {path}: {p}");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(in_path, placeholders(&path), "{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"api_key": []}]),
                    "{method} {path}"
                );
                for status in ["401", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            } else if op.get("security").is_some() {
                // The account routes and the live-end stream: a browser session's access token.
                assert!(path.starts_with("/auth/browser/"), "{method} {path}");
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"access_token": []}]),
                    "{method} {path}"
                );
                for status in ["401", "403", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            if let Some(body) = op.get("requestBody") {
                for status in ["408", "413"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                // A required body is read as JSON only with its content type; an optional one is
                // read whatever the type.
                let required = body["required"] == true;
                assert_eq!(responses.contains_key("415"), required, "{method} {path}");
            }
        }
    }

    #[test]
    fn schema_limits_are_the_library_limits() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let max = |schema: &Value, field: &str| schema["properties"][field]["maxLength"].as_u64();
        let name = sessiond::id::MAX_NAME_BYTES as u64;
        let create = &schemas["CreateSessionRequest"];
        assert_eq!(max(create, "user_id"), Some(name));
        assert_eq!(max(create, "tenant"), Some(name));
        assert_eq!(max(create, "ip"), Some(MAX_IP_BYTES as u64));
        assert_eq!(max(create, "user_agent"), Some(MAX_USER_AGENT_BYTES as u64));
        assert_eq!(
            max(&schemas["IdClaim"], "id"),
            Some(MAX_CLAIM_ID_BYTES as u64)
        );
        assert_eq!(max(&schemas["RevokeUserRequest"], "tenant"), Some(name));
        assert_eq!(max(&schemas["LoginCodeRequest"], "user_id"), Some(name));
        assert_eq!(max(&schemas["LoginCodeRequest"], "tenant"), Some(name));
        assert_eq!(
            max(&schemas["LoginCodeResponse"], "login_code"),
            Some(sessiond::login_code::MAX_LEN as u64)
        );
        let validate = &schemas["ValidateRequest"]["allOf"];
        for (i, credential) in dto::ValidateRequest::CREDENTIALS.iter().enumerate() {
            assert!(
                validate[0]["properties"][credential].is_object(),
                "{credential}"
            );
            assert_eq!(validate[1]["oneOf"][i]["required"][0], *credential);
        }
        for field in ["ip", "user_agent"] {
            assert_eq!(
                max(&validate[0], field),
                max(&schemas["RefreshRequest"], field)
            );
        }
    }
}
