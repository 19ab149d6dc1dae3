//! Request extractors with errors in problem+json: handlers take [`ApiJson`], [`OptionalJson`],
//! [`ApiPath`] and [`ApiQuery`], never axum's own `Json`, `Path`, `Query` (or a bare `Bytes`
//! body) extractors, whose rejections are `text/plain` (clippy's `disallowed-types` holds the
//! line for the first three; see `clippy.toml`).

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::problem::ApiError;

/// `T` read from a JSON object, and from nothing else: serde's derived `Deserialize` of a struct
/// also takes a JSON array of its fields in order, a second spelling of every body that the API
/// does not have (and its description does not allow). Every request body is an object.
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

/// A JSON body, an object: malformed JSON (or another JSON value) is 400 `invalid_request`, an
/// oversize body 413, a wrong content type 415. Never echoes the body.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<JsonObject<T>>::from_request(req, state).await {
            Ok(axum::Json(JsonObject(v))) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge)
            }
            Err(_) => Err(ApiError::BadRequest("malformed JSON body")),
        }
    }
}

/// An optional JSON body: an empty (or all-whitespace) body, or JSON `null`, is `T::default()`;
/// anything else must be a JSON object for `T` (400 `invalid_request` otherwise, whatever its
/// content type: these bodies have always been read as JSON). An oversize body is 413. Never
/// echoes the body.
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = match Bytes::from_request(req, state).await {
            Ok(body) => body,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge)
            }
            Err(_) => return Err(ApiError::BadRequest("unreadable body")),
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice::<Option<JsonObject<T>>>(&body)
            .map(|v| OptionalJson(v.map(|JsonObject(v)| v).unwrap_or_default()))
            .map_err(|_| ApiError::BadRequest("malformed JSON body"))
    }
}

/// Path parameters: one that does not decode (invalid percent-encoding or UTF-8) is 400
/// `invalid_request`, never echoed.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[allow(clippy::disallowed_types)] // The one wrapper.
        let path = axum::extract::Path::<T>::from_request_parts(parts, state).await;
        match path {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(_) => Err(ApiError::BadRequest("malformed path parameter")),
        }
    }
}

/// The query string: an unknown, duplicate or malformed parameter, or one whose value does not
/// decode to UTF-8, is 400 `invalid_request` (the parameter types say which are known:
/// `#[serde(deny_unknown_fields)]`). axum's decoder would turn invalid UTF-8 into U+FFFD, a
/// different name than the client sent; this one refuses it.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        let utf8 = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .is_ok();
        if !utf8 {
            return Err(ApiError::BadRequest("query string is not UTF-8"));
        }
        #[allow(clippy::disallowed_types)] // The one wrapper.
        let query = axum::extract::Query::<T>::from_request_parts(parts, state).await;
        match query {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(_) => Err(ApiError::BadRequest("malformed query string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JsonObject;
    use crate::routes::dto::{ClaimRequest, RevokeUserRequest, ValidateRequest};

    fn object<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str::<JsonObject<T>>(json).map(|JsonObject(v)| v)
    }

    #[test]
    fn bodies_are_objects_only() {
        // The same fields as an array, which serde's derive would take: refused.
        assert!(serde_json::from_str::<RevokeUserRequest>("[null, null]").is_ok());
        assert!(object::<RevokeUserRequest>("[null, null]").is_err());
        assert!(object::<RevokeUserRequest>(r#"{"except": null}"#).is_ok());
        for bad in ["[]", "null", "1", "\"x\"", "true"] {
            assert!(object::<ValidateRequest>(bad).is_err(), "{bad}");
        }
        // Field rules still hold inside the object: unknown and duplicate fields.
        assert!(object::<ValidateRequest>(r#"{"cookie": "c", "extra": 1}"#).is_err());
        assert!(object::<ValidateRequest>(r#"{"cookie": "c", "cookie": "d"}"#).is_err());
        // An untagged enum of objects: one shape or the other, never both, nothing else.
        assert!(matches!(
            object::<ClaimRequest>(r#"{"token": "t"}"#),
            Ok(ClaimRequest::Token(_))
        ));
        assert!(matches!(
            object::<ClaimRequest>(r#"{"id": "i", "expires_at": "2030-01-01T00:00:00Z"}"#),
            Ok(ClaimRequest::Id(_))
        ));
        for bad in [
            r#"{"token": "t", "id": "i", "expires_at": "2030-01-01T00:00:00Z"}"#,
            r#"{"token": "t", "x": 1}"#,
            r#"{"id": "i"}"#,
            r#"["t"]"#,
        ] {
            assert!(object::<ClaimRequest>(bad).is_err(), "{bad}");
        }
    }
}
