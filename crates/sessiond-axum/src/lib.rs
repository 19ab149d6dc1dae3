//! sessiond for axum applications: the half of session handling every application would
//! otherwise write by hand, in both of sessiond's forms (the embedded library, or a remote
//! sessiond server) with the same application code.
//!
//! - [`Sessions`]: the backend and the cookie/CSRF settings; [`Sessions::layer`] puts it on a
//!   router.
//! - Extractors: [`CookieAuth`] (a valid session cookie; on POST, PUT, PATCH and DELETE also
//!   the CSRF token in a header, unless the route opts out with `CookieAuth<NoCsrf>`),
//!   [`CsrfForm`] (the token from an HTML form field), [`BearerAuth`] (an access token), and
//!   `Option<…>` of the first and last. Each yields the session, the credential and its
//!   `deadline`.
//! - Refusals are problem+json with sessiond's wire codes (docs/DESIGN.md §8.1), or what the
//!   application makes of them ([`SessionsBuilder::on_refusal`]); a session that could not be
//!   checked is 503 `unavailable`, never 401.
//! - Responses: [`Sessions::log_in`] (`Set-Cookie` for the session and CSRF cookies; a session
//!   the browser already had is revoked, never reused), [`Sessions::log_out`],
//!   [`Sessions::log_out_others`], [`Sessions::rotate_csrf`], [`Sessions::devices`],
//!   [`Sessions::revoke_device`].
//! - Long-lived connections: [`Sessions::ended`] resolves when the session is revoked or
//!   expires, to close a WebSocket or an event stream.
//!
//! ```no_run
//! use axum::response::{IntoResponse, Redirect, Response};
//! use axum::routing::{get, post};
//! use axum::Router;
//! use sessiond::{NewSession, UserId};
//! use sessiond_axum::{CookieAuth, LoginRequest, Sessions};
//!
//! async fn login(sessions: Sessions, request: LoginRequest) -> Response {
//!     // ... check the password ...
//!     let user = UserId::new("alice").expect("a valid user id");
//!     match sessions.log_in(&request, NewSession::new(user)).await {
//!         Ok(cookies) => (cookies, Redirect::to("/")).into_response(),
//!         Err(refusal) => refusal.into_response(),
//!     }
//! }
//!
//! async fn home(auth: CookieAuth) -> String {
//!     format!("hello {}", auth.session.user_id)
//! }
//!
//! # async fn run(service: sessiond::SessionService) {
//! let sessions = Sessions::embedded(service).build();
//! let app: Router = Router::new()
//!     .route("/", get(home))
//!     .route("/login", post(login))
//!     .layer(sessions.layer());
//! # }
//! ```
#![deny(missing_docs)]

mod backend;
mod extract;
mod rejection;
#[cfg(feature = "remote")]
mod remote;
mod sessions;

pub use backend::{Failure, SessionBackend};
pub use extract::{
    BearerAuth, CookieAuth, CsrfForm, CsrfHeader, CsrfPolicy, NoCsrf, MAX_FORM_BYTES,
};
pub use rejection::Refusal;
#[cfg(feature = "remote")]
pub use remote::{RemoteBackend, DEFAULT_RECHECK};
pub use sessions::{
    CsrfRotated, Device, LoggedIn, LoginRequest, Sessions, SessionsBuilder, SetCookies,
    DEFAULT_CSRF_FIELD, DEFAULT_CSRF_HEADER,
};
