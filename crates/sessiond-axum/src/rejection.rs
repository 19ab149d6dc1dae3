//! Refused requests: `application/problem+json` with the wire code by default (docs/DESIGN.md
//! §9.2), or whatever the application's handler makes of them (a redirect to its login page).

use std::fmt;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond::error::ErrorCode;

/// Why the layer refused a request: the wire code of the verdict, `unauthorized` when no
/// credential came at all, or `unavailable` (503) when it could not be checked. Its default
/// response is problem+json, the same body the sessiond server sends:
///
/// ```
/// use axum::response::IntoResponse;
/// use sessiond::ErrorCode;
/// use sessiond_axum::Refusal;
///
/// let response = Refusal::new(ErrorCode::CsrfMissing).into_response();
/// assert_eq!(response.status(), 403);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    code: ErrorCode,
}

impl Refusal {
    /// A refusal with `code`.
    ///
    /// ```
    /// use axum::response::{IntoResponse, Response};
    /// use sessiond::ErrorCode;
    /// use sessiond_axum::{CookieAuth, Refusal};
    ///
    /// // A handler's own refusal, answered as the layer answers: 403 `forbidden`.
    /// async fn admin(auth: CookieAuth) -> Response {
    ///     let role = auth.session.claims.get("role").and_then(|r| r.as_str());
    ///     if role != Some("admin") {
    ///         return Refusal::new(ErrorCode::Forbidden).into_response();
    ///     }
    ///     format!("welcome, {}", auth.session.user_id).into_response()
    /// }
    /// ```
    pub fn new(code: ErrorCode) -> Self {
        Refusal { code }
    }

    /// The wire code.
    ///
    /// ```
    /// use axum::response::{IntoResponse, Redirect};
    /// use sessiond::ErrorCode;
    /// # fn f(service: sessiond::SessionService) {
    /// // An expired session goes back to the login page, with a word of explanation.
    /// let sessions = sessiond_axum::Sessions::embedded(service)
    ///     .on_refusal(|refusal, _request| match refusal.code() {
    ///         ErrorCode::SessionExpired => Redirect::to("/login?expired=1").into_response(),
    ///         _ => refusal.into_response(),
    ///     })
    ///     .build();
    /// # let _ = sessions; }
    /// ```
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Whether the credential could not be checked (503), as opposed to a verdict about it.
    /// A handler that redirects refused requests to a login page should answer an outage with
    /// the default response instead: the person is not logged out, the service is down.
    ///
    /// ```
    /// use sessiond::ErrorCode;
    /// use sessiond_axum::Refusal;
    ///
    /// assert!(Refusal::new(ErrorCode::Unavailable).is_outage());
    /// assert!(!Refusal::new(ErrorCode::SessionRevoked).is_outage());
    /// ```
    pub fn is_outage(&self) -> bool {
        self.code.is_outage()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = serde_json::json!({
            "type": format!("urn:sessiond:problem:{}", code.as_str()),
            "title": code.title(),
            "status": code.status(),
            "code": code.as_str(),
        });
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if code.is_outage() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What the application makes of a refusal (see [`crate::SessionsBuilder::on_refusal`]).
pub(crate) type RefusalHandler = Arc<dyn Fn(Refusal, &Parts) -> Response + Send + Sync>;
