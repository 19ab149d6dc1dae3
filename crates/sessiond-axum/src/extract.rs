//! The extractors: a validated cookie session ([`CookieAuth`], CSRF enforced on unsafe methods),
//! a validated access token ([`BearerAuth`]), a CSRF-checked form ([`CsrfForm`]), and the
//! optional variants (`Option<CookieAuth>`, `Option<BearerAuth>`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use sessiond::error::ErrorCode;
use sessiond::{RequestContext, Secret, Validated};

use crate::backend::Failure;
use crate::rejection::Refusal;
use crate::sessions::{LoginRequest, Sessions};

/// The largest form body [`CsrfForm`] reads.
///
/// ```
/// use sessiond_axum::MAX_FORM_BYTES;
///
/// // A larger body is refused (413) unread. A comment form stays far below the limit,
/// // even with every byte of the comment percent-encoded.
/// const MAX_COMMENT_BYTES: usize = 8 * 1024;
/// assert!(3 * MAX_COMMENT_BYTES < MAX_FORM_BYTES);
/// ```
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The answer when the layer is missing: a programming error, reported loudly.
fn no_layer() -> Response {
    tracing::error!("sessiond_axum extractor used on a route without Sessions::layer()");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "sessiond_axum: the route is not wrapped in Sessions::layer()",
    )
        .into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Sessions {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Sessions>()
            .cloned()
            .ok_or_else(no_layer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LoginRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Sessions::from_request_parts(parts, state).await?;
        Ok(LoginRequest::from_parts(&sessions, parts))
    }
}

/// Whether [`CookieAuth`] checks a CSRF token on unsafe methods: [`CsrfHeader`] (the default)
/// or [`NoCsrf`] (a per-route opt-out).
///
/// Code shared by handlers of either policy is generic over it:
///
/// ```
/// use sessiond_axum::{CookieAuth, CsrfHeader, CsrfPolicy, NoCsrf};
///
/// fn greeting<C: CsrfPolicy>(auth: &CookieAuth<C>) -> String {
///     format!("hello {}", auth.session.user_id)
/// }
///
/// async fn page(auth: CookieAuth) -> String {
///     greeting(&auth)
/// }
/// async fn beacon(auth: CookieAuth<NoCsrf>) -> String {
///     greeting(&auth)
/// }
///
/// assert!(CsrfHeader::CHECK && !NoCsrf::CHECK);
/// ```
pub trait CsrfPolicy: Send + Sync + 'static {
    /// Whether POST, PUT, PATCH and DELETE must carry the CSRF token in the header.
    const CHECK: bool;
}

/// CSRF is enforced: POST, PUT, PATCH and DELETE must carry the session's CSRF token in the
/// configured header ([`crate::SessionsBuilder::csrf_header`]); `csrf_missing` or
/// `csrf_mismatch` (403) otherwise.
///
/// It is the default: `CookieAuth` is `CookieAuth<CsrfHeader>`.
///
/// ```
/// use axum::{routing::post, Router};
/// use sessiond_axum::{CookieAuth, CsrfHeader};
///
/// // A POST without the session's token in `x-csrf-token` never reaches the handler.
/// async fn delete_note(auth: CookieAuth<CsrfHeader>) -> String {
///     format!("deleted by {}", auth.session.user_id)
/// }
///
/// let routes: Router = Router::new().route("/notes/delete", post(delete_note));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CsrfHeader;

impl CsrfPolicy for CsrfHeader {
    const CHECK: bool = true;
}

/// No CSRF check (a per-route opt-out). Safe only for routes that change nothing, or that
/// check the token another way ([`CsrfForm`] does, from a form field).
///
/// ```
/// use axum::{routing::post, Router};
/// use sessiond_axum::{CookieAuth, NoCsrf};
///
/// // `navigator.sendBeacon` cannot set headers; the beacon only records a page view.
/// async fn page_view(auth: CookieAuth<NoCsrf>) -> &'static str {
///     tracing::info!(user_id = %auth.session.user_id, "page viewed");
///     "recorded"
/// }
///
/// let routes: Router = Router::new().route("/beacon", post(page_view));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct NoCsrf;

impl CsrfPolicy for NoCsrf {
    const CHECK: bool = false;
}

/// A request authenticated by a valid session cookie: the session, the credential and the
/// `deadline` (dereferences to [`Validated`]). On POST, PUT, PATCH and DELETE the CSRF token
/// is required in the header unless the route opts out with `CookieAuth<NoCsrf>`.
///
/// A refused request gets the application's refusal response (default: problem+json with the
/// wire code; `unauthorized` when no cookie came); one whose session could not be checked gets
/// 503 `unavailable`, never 401. `Option<CookieAuth>` is `None` for a request without a valid
/// session (an outage is still 503).
///
/// ```no_run
/// use axum::routing::{get, post};
/// use axum::Router;
/// use sessiond_axum::{CookieAuth, NoCsrf};
///
/// async fn page(auth: CookieAuth) -> String {
///     format!("{} until {}", auth.session.user_id, auth.deadline)
/// }
/// async fn transfer(auth: CookieAuth) -> &'static str {
///     "checked: session and CSRF header"
/// }
/// async fn beacon(auth: CookieAuth<NoCsrf>) -> &'static str {
///     "a POST that changes nothing"
/// }
/// async fn home(auth: Option<CookieAuth>) -> &'static str {
///     if auth.is_some() { "welcome back" } else { "hello stranger" }
/// }
///
/// let routes: Router = Router::new()
///     .route("/page", get(page))
///     .route("/transfer", post(transfer))
///     .route("/beacon", post(beacon))
///     .route("/", get(home));
/// ```
pub struct CookieAuth<C: CsrfPolicy = CsrfHeader> {
    validated: Validated,
    csrf_cookie: Option<Secret<String>>,
    _csrf: PhantomData<C>,
}

impl<C: CsrfPolicy> CookieAuth<C> {
    /// The validation result.
    ///
    /// ```
    /// use sessiond_axum::CookieAuth;
    ///
    /// async fn export(auth: CookieAuth) -> &'static str {
    ///     // The job outlives the request: it takes the validation with it.
    ///     let validated = auth.into_inner();
    ///     tokio::spawn(async move {
    ///         let session = &validated.session;
    ///         tracing::info!(user_id = %session.user_id, session_id = %session.id, "export");
    ///     });
    ///     "export started"
    /// }
    /// ```
    pub fn into_inner(self) -> Validated {
        self.validated
    }

    /// The CSRF token the browser holds (its CSRF cookie), for a form this response renders:
    /// put it in a hidden field named as the layer's CSRF field (default `csrf_token`), and
    /// [`CsrfForm`] checks it when the form comes back. `None` when the browser sent no CSRF
    /// cookie. Reading it here checks nothing; the check is the session's.
    ///
    /// ```
    /// use sessiond_axum::CookieAuth;
    ///
    /// async fn page(auth: CookieAuth) -> String {
    ///     let token = auth.csrf_token().map(|t| t.expose().clone()).unwrap_or_default();
    ///     format!(r#"<form method="post" action="/notes">
    ///                  <input type="hidden" name="csrf_token" value="{token}">…</form>"#)
    /// }
    /// ```
    pub fn csrf_token(&self) -> Option<&Secret<String>> {
        self.csrf_cookie.as_ref()
    }
}

impl<C: CsrfPolicy> Deref for CookieAuth<C> {
    type Target = Validated;

    fn deref(&self) -> &Validated {
        &self.validated
    }
}

impl<C: CsrfPolicy> fmt::Debug for CookieAuth<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CookieAuth").field(&self.validated).finish()
    }
}

fn unsafe_method(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn user_agent(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// Validates the request's session cookie. `Ok(None)`: no cookie at all.
async fn validate_cookie(
    sessions: &Sessions,
    parts: &Parts,
    csrf: Option<&str>,
    require_csrf: bool,
) -> Option<Result<Validated, Failure>> {
    let cookie = sessions.session_cookie(&parts.headers)?;
    let ip = sessions.client_ip(parts);
    let ctx = RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(parts),
        csrf_token: csrf,
        require_csrf,
    };
    Some(sessions.backend().validate_cookie(&cookie, &ctx).await)
}

/// The CSRF header's value (`None` when absent or not text).
fn csrf_header<'p>(sessions: &Sessions, parts: &'p Parts) -> Option<&'p str> {
    parts
        .headers
        .get(sessions.csrf_header())
        .and_then(|v| v.to_str().ok())
}

impl<S: Send + Sync, C: CsrfPolicy> FromRequestParts<S> for CookieAuth<C> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Sessions::from_request_parts(parts, state).await?;
        let require = C::CHECK && unsafe_method(&parts.method);
        let csrf = if C::CHECK {
            csrf_header(&sessions, parts)
        } else {
            None
        };
        match validate_cookie(&sessions, parts, csrf, require).await {
            Some(Ok(validated)) => Ok(CookieAuth {
                validated,
                csrf_cookie: sessions.csrf_cookie(&parts.headers).map(Secret::new),
                _csrf: PhantomData,
            }),
            Some(Err(failure)) => Err(refuse(&sessions, parts, &failure)),
            None => Err(sessions.reject(Refusal::new(ErrorCode::Unauthorized), parts)),
        }
    }
}

impl<S: Send + Sync, C: CsrfPolicy> OptionalFromRequestParts<S> for CookieAuth<C> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let required = <Self as FromRequestParts<S>>::from_request_parts(parts, state).await;
        optional(required, parts)
    }
}

/// The optional variant of an extractor's outcome: a refused credential (or none) is `None`,
/// but an outage stays a 503 and a missing layer stays an error. (The `Err` is the response
/// axum sends, moved once; boxing it would only add an allocation.)
#[allow(clippy::result_large_err)]
fn optional<T>(required: Result<T, Response>, parts: &Parts) -> Result<Option<T>, Response> {
    match required {
        Ok(auth) => Ok(Some(auth)),
        Err(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => Err(response),
        Err(_) if parts.extensions.get::<Sessions>().is_none() => Err(no_layer()),
        Err(_) => Ok(None),
    }
}

/// Logs an outage (the detail stays in the log; the response says only `unavailable`) and
/// makes the refusal's response.
fn refuse(sessions: &Sessions, parts: &Parts, failure: &Failure) -> Response {
    if let Failure::Unavailable(source) = failure {
        tracing::warn!(error = %source, "session could not be checked");
    }
    sessions.reject(Refusal::new(failure.code()), parts)
}

/// A request authenticated by a valid access token in `Authorization: Bearer` (the scheme is
/// case-insensitive): the session, the credential and the `deadline` (dereferences to
/// [`Validated`]). No CSRF check: a bearer token is never sent by the browser on its own.
/// Refusals as for [`CookieAuth`]; `Option<BearerAuth>` is `None` without a valid token.
///
/// ```no_run
/// use sessiond_axum::BearerAuth;
///
/// async fn api(auth: BearerAuth) -> String {
///     format!("{} ({})", auth.session.user_id, auth.session.tenant)
/// }
/// ```
pub struct BearerAuth {
    validated: Validated,
}

impl BearerAuth {
    /// The validation result.
    ///
    /// ```
    /// use sessiond::Validated;
    /// use sessiond_axum::BearerAuth;
    ///
    /// async fn whoami(auth: BearerAuth) -> String {
    ///     let Validated { session, deadline, .. } = auth.into_inner();
    ///     format!("{} in {}, until {deadline}", session.user_id, session.tenant)
    /// }
    /// ```
    pub fn into_inner(self) -> Validated {
        self.validated
    }
}

impl Deref for BearerAuth {
    type Target = Validated;

    fn deref(&self) -> &Validated {
        &self.validated
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BearerAuth").field(&self.validated).finish()
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S: Send + Sync> FromRequestParts<S> for BearerAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Sessions::from_request_parts(parts, state).await?;
        let Some(token) = bearer(parts) else {
            return Err(sessions.reject(Refusal::new(ErrorCode::Unauthorized), parts));
        };
        let ip = sessions.client_ip(parts);
        let ctx = RequestContext {
            ip: ip.as_deref(),
            user_agent: user_agent(parts),
            ..RequestContext::default()
        };
        match sessions.backend().validate_access_token(token, &ctx).await {
            Ok(validated) => Ok(BearerAuth { validated }),
            Err(failure) => Err(refuse(&sessions, parts, &failure)),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for BearerAuth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let required = <Self as FromRequestParts<S>>::from_request_parts(parts, state).await;
        optional(required, parts)
    }
}

/// A server-rendered form (`application/x-www-form-urlencoded`) from a valid cookie session
/// whose CSRF token came in the form field ([`crate::SessionsBuilder::csrf_field`], default
/// `csrf_token`): for HTML forms, which cannot set headers. The session is checked (and the
/// token compared in constant time) before the form is parsed into `T`; `T` may ignore the
/// token field (serde ignores unknown fields unless told otherwise).
///
/// Refusals as for [`CookieAuth`]; a body that is not a form is 415 `unsupported_media_type`,
/// one that does not parse into `T` is 400 `invalid_request`, one over [`MAX_FORM_BYTES`] is
/// 413 `payload_too_large`.
///
/// ```no_run
/// use serde::Deserialize;
/// use sessiond_axum::CsrfForm;
///
/// #[derive(Deserialize)]
/// struct Comment {
///     text: String,
/// }
///
/// // <form method="post"><input type="hidden" name="csrf_token" value="..."> ...
/// async fn comment(CsrfForm { auth, form }: CsrfForm<Comment>) -> String {
///     format!("{} says {}", auth.session.user_id, form.text)
/// }
/// ```
#[derive(Debug)]
pub struct CsrfForm<T> {
    /// The validated session.
    pub auth: CookieAuth<NoCsrf>,
    /// The form.
    pub form: T,
}

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let sessions = Sessions::from_request_parts(&mut parts, state).await?;
        let plain = |code| Refusal::new(code).into_response();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(plain(ErrorCode::UnsupportedMediaType));
        }
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| plain(ErrorCode::PayloadTooLarge))?;
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| plain(ErrorCode::InvalidRequest))?;
        let token = fields
            .iter()
            .find(|(name, _)| name == sessions.csrf_field())
            .map(|(_, value)| value.as_str());
        let validated = match validate_cookie(&sessions, &parts, token, true).await {
            Some(Ok(validated)) => validated,
            Some(Err(failure)) => return Err(refuse(&sessions, &parts, &failure)),
            None => return Err(sessions.reject(Refusal::new(ErrorCode::Unauthorized), &parts)),
        };
        let form =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| plain(ErrorCode::InvalidRequest))?;
        Ok(CsrfForm {
            auth: CookieAuth {
                validated,
                csrf_cookie: sessions.csrf_cookie(&parts.headers).map(Secret::new),
                _csrf: PhantomData,
            },
            form,
        })
    }
}
