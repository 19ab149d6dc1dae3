//! [`Sessions`]: the handle the layer carries and the application calls to log in and out.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use axum::Extension;
use sessiond::cookie::{CookieSettings, SameSite};
use sessiond::{
    EndReason, NewSession, RequestContext, RevokeReason, Secret, Session, SessionId,
    SessionService, Validated,
};

use crate::backend::{Failure, SessionBackend};
use crate::rejection::{Refusal, RefusalHandler};

/// The default header a page sends its CSRF token in.
///
/// ```
/// # fn main() -> Result<(), axum::http::Error> {
/// use axum::http::Request;
/// use sessiond_axum::DEFAULT_CSRF_HEADER;
///
/// // What a page's script sends on a POST, with the token read from the CSRF cookie.
/// let request = Request::post("/notes")
///     .header(DEFAULT_CSRF_HEADER, "token-from-the-csrf-cookie")
///     .body(String::from("text=hello"))?;
/// assert!(request.headers().contains_key("x-csrf-token"));
/// # Ok(()) }
/// ```
pub const DEFAULT_CSRF_HEADER: &str = "x-csrf-token";
/// The default form field a server-rendered form sends its CSRF token in.
///
/// ```
/// use sessiond_axum::{CookieAuth, DEFAULT_CSRF_FIELD};
///
/// // The hidden field of a form that `CsrfForm` checks when it comes back.
/// fn csrf_field(auth: &CookieAuth) -> String {
///     let token = auth.csrf_token().map(|t| t.expose().as_str()).unwrap_or_default();
///     format!(r#"<input type="hidden" name="{DEFAULT_CSRF_FIELD}" value="{token}">"#)
/// }
/// ```
pub const DEFAULT_CSRF_FIELD: &str = "csrf_token";

/// How the layer finds the client's address (for IP binding and the devices page).
type ClientIp = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The sessions of an axum application: a [`SessionBackend`] (the embedded
/// [`SessionService`] or a remote server) with the cookie and CSRF settings. Cheap to clone.
///
/// Put it on the router with [`Sessions::layer`]; the extractors ([`crate::CookieAuth`],
/// [`crate::BearerAuth`], [`crate::CsrfForm`]) find it there. Handlers log in and out through it.
///
/// ```no_run
/// # async fn example(service: sessiond::SessionService) {
/// use axum::{routing::get, Router};
/// use sessiond_axum::{CookieAuth, Sessions};
///
/// async fn me(auth: CookieAuth) -> String {
///     format!("hello {}", auth.session.user_id)
/// }
///
/// let sessions = Sessions::embedded(service).build();
/// let app: Router = Router::new().route("/me", get(me)).layer(sessions.layer());
/// # }
/// ```
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn SessionBackend>,
    cookies: CookieSettings,
    csrf_header: HeaderName,
    csrf_field: String,
    on_refusal: Option<RefusalHandler>,
    client_ip: ClientIp,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("backend", &self.inner.backend)
            .field("cookies", &self.inner.cookies)
            .field("csrf_header", &self.inner.csrf_header)
            .field("csrf_field", &self.inner.csrf_field)
            .finish_non_exhaustive()
    }
}

/// Builds [`Sessions`]: from [`Sessions::embedded`] or [`Sessions::with_backend`].
///
/// ```
/// # fn f(service: sessiond::SessionService) {
/// use axum::http::HeaderName;
/// use sessiond::cookie::{CookieSettings, SameSite};
/// use sessiond_axum::Sessions;
///
/// let sessions = Sessions::embedded(service)
///     .cookies(CookieSettings::new(true, SameSite::Strict))
///     .csrf_header(HeaderName::from_static("x-xsrf-token"))
///     .csrf_field("_csrf")
///     .build();
/// # let _ = sessions; }
/// ```
#[must_use = "call build() to get the Sessions"]
pub struct SessionsBuilder {
    inner: Inner,
}

impl fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("backend", &self.inner.backend)
            .field("cookies", &self.inner.cookies)
            .finish_non_exhaustive()
    }
}

impl SessionsBuilder {
    /// The cookies' names and attributes (default: `Secure`, `__Host-sessiond` and
    /// `__Host-sessiond-csrf`, `SameSite=Lax`). With a remote server, use the same settings
    /// as its `[cookies]` section.
    ///
    /// ```
    /// use sessiond::cookie::{CookieSettings, SameSite};
    /// # fn f(service: sessiond::SessionService) {
    /// // Plain-http development on localhost: no `Secure`, no `__Host-` prefix.
    /// let sessions = sessiond_axum::Sessions::embedded(service)
    ///     .cookies(CookieSettings::new(false, SameSite::Lax))
    ///     .build();
    /// # }
    /// ```
    pub fn cookies(mut self, cookies: CookieSettings) -> Self {
        self.inner.cookies = cookies;
        self
    }

    /// The request header that carries the CSRF token on unsafe methods (default
    /// [`DEFAULT_CSRF_HEADER`]).
    ///
    /// ```
    /// # fn f(service: sessiond::SessionService) {
    /// use axum::http::HeaderName;
    /// let sessions = sessiond_axum::Sessions::embedded(service)
    ///     .csrf_header(HeaderName::from_static("x-xsrf-token"))
    ///     .build();
    /// # }
    /// ```
    pub fn csrf_header(mut self, name: HeaderName) -> Self {
        self.inner.csrf_header = name;
        self
    }

    /// The form field [`crate::CsrfForm`] reads the CSRF token from (default
    /// [`DEFAULT_CSRF_FIELD`]).
    ///
    /// ```
    /// # fn f(service: sessiond::SessionService) {
    /// let sessions = sessiond_axum::Sessions::embedded(service).csrf_field("_csrf").build();
    /// # }
    /// ```
    pub fn csrf_field(mut self, name: impl Into<String>) -> Self {
        self.inner.csrf_field = name.into();
        self
    }

    /// Makes the response of every refused request (default: problem+json with the wire code).
    /// A server-rendered application redirects to its login page, but should keep the default
    /// for an outage ([`Refusal::is_outage`]): the person is not logged out, sessiond is down.
    ///
    /// ```
    /// use axum::response::{IntoResponse, Redirect};
    /// # fn f(service: sessiond::SessionService) {
    /// let sessions = sessiond_axum::Sessions::embedded(service)
    ///     .on_refusal(|refusal, _request| {
    ///         if refusal.is_outage() {
    ///             refusal.into_response()
    ///         } else {
    ///             Redirect::to("/login").into_response()
    ///         }
    ///     })
    ///     .build();
    /// # }
    /// ```
    pub fn on_refusal<F>(mut self, handler: F) -> Self
    where
        F: Fn(Refusal, &Parts) -> Response + Send + Sync + 'static,
    {
        self.inner.on_refusal = Some(Arc::new(handler));
        self
    }

    /// How to find the client's address (for IP binding and the devices page). The default
    /// is the connection's peer from axum's `ConnectInfo<SocketAddr>`, when the server was
    /// started with `into_make_service_with_connect_info`. Behind a reverse proxy, read the
    /// address your proxy sets, and only from requests that came through it.
    ///
    /// ```
    /// # fn f(service: sessiond::SessionService) {
    /// let sessions = sessiond_axum::Sessions::embedded(service)
    ///     .client_ip(|request| {
    ///         let value = request.headers.get("x-real-ip")?.to_str().ok()?;
    ///         Some(value.to_owned())
    ///     })
    ///     .build();
    /// # }
    /// ```
    pub fn client_ip<F>(mut self, find: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.inner.client_ip = Arc::new(find);
        self
    }

    /// The [`Sessions`].
    ///
    /// ```
    /// # fn f(service: sessiond::SessionService) {
    /// use axum::Router;
    /// use sessiond_axum::Sessions;
    ///
    /// let sessions = Sessions::embedded(service).build();
    /// // Cheap to clone: the layer holds one, the application may keep another.
    /// let app: Router = Router::new().layer(sessions.layer());
    /// # let _ = (app, sessions); }
    /// ```
    pub fn build(self) -> Sessions {
        Sessions {
            inner: Arc::new(self.inner),
        }
    }
}

fn peer_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The value of the cookie `name` in `headers` (every `Cookie` header is searched).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessiond::cookie::from_header(h, name))
}

impl Sessions {
    /// Sessions in the embedded library: validation and every change happen in this process,
    /// on the service's store.
    ///
    /// ```
    /// # fn f(service: sessiond::SessionService) {
    /// use sessiond_axum::Sessions;
    ///
    /// // `service`: the application's `SessionService`, started once at boot.
    /// let sessions = Sessions::embedded(service).build();
    /// # let _ = sessions; }
    /// ```
    pub fn embedded(service: SessionService) -> SessionsBuilder {
        Sessions::with_backend(service)
    }

    /// Sessions on a remote sessiond server (feature `remote`): [`crate::RemoteBackend`] on the
    /// system clock. The application code is the same as with [`Sessions::embedded`].
    ///
    /// ```no_run
    /// # fn run() -> Result<(), sessiond_client::ClientError> {
    /// use sessiond::Secret;
    /// use sessiond_axum::Sessions;
    ///
    /// let client = sessiond_client::Client::builder("http://127.0.0.1:8080")
    ///     .api_key(Secret::new(std::env::var("SESSIOND_API_KEY").unwrap_or_default()))
    ///     .build()?;
    /// let sessions = Sessions::remote(client).build();
    /// # let _ = sessions; Ok(()) }
    /// ```
    #[cfg(feature = "remote")]
    pub fn remote(client: sessiond_client::Client) -> SessionsBuilder {
        Sessions::with_backend(crate::RemoteBackend::new(client))
    }

    /// Sessions in any [`SessionBackend`] (a remote sessiond server's client, or your own
    /// wrapper around one).
    ///
    /// ```
    /// # fn f(client: sessiond_client::Client) {
    /// use std::time::Duration;
    /// use sessiond_axum::{RemoteBackend, Sessions};
    ///
    /// // A remote backend with its own settings (`Sessions::remote` takes the defaults).
    /// let backend = RemoteBackend::new(client).recheck(Duration::from_millis(500));
    /// let sessions = Sessions::with_backend(backend).build();
    /// # let _ = sessions; }
    /// ```
    pub fn with_backend(backend: impl SessionBackend) -> SessionsBuilder {
        SessionsBuilder {
            inner: Inner {
                backend: Arc::new(backend),
                cookies: CookieSettings::new(true, SameSite::Lax),
                csrf_header: HeaderName::from_static(DEFAULT_CSRF_HEADER),
                csrf_field: DEFAULT_CSRF_FIELD.to_owned(),
                on_refusal: None,
                client_ip: Arc::new(peer_ip),
            },
        }
    }

    /// The layer that makes these sessions available to the extractors of every route it
    /// wraps.
    ///
    /// ```
    /// # fn f(sessions: sessiond_axum::Sessions) {
    /// use axum::{routing::get, Router};
    /// use sessiond_axum::CookieAuth;
    ///
    /// async fn me(auth: CookieAuth) -> String {
    ///     format!("hello {}", auth.session.user_id)
    /// }
    /// async fn health() -> &'static str {
    ///     "ok"
    /// }
    ///
    /// // A layer wraps the routes added before it: `/health` needs no session.
    /// let app: Router = Router::new()
    ///     .route("/me", get(me))
    ///     .layer(sessions.layer())
    ///     .route("/health", get(health));
    /// # let _ = app; }
    /// ```
    pub fn layer(&self) -> Extension<Sessions> {
        Extension(self.clone())
    }

    /// The backend.
    ///
    /// ```
    /// use sessiond::{RequestContext, Validated};
    /// use sessiond_axum::{Failure, Sessions};
    ///
    /// // A token that came another way than the `Authorization` header (a WebSocket's first
    /// // message, say), validated as `BearerAuth` would.
    /// async fn check(sessions: &Sessions, token: &str) -> Result<Validated, Failure> {
    ///     let ctx = RequestContext::default();
    ///     sessions.backend().validate_access_token(token, &ctx).await
    /// }
    /// ```
    pub fn backend(&self) -> &dyn SessionBackend {
        &*self.inner.backend
    }

    /// The cookie settings in force.
    ///
    /// ```
    /// use axum::http::{header, HeaderMap};
    /// use sessiond_axum::Sessions;
    ///
    /// // Whether the browser sent a session cookie at all, valid or not: "your session has
    /// // ended" rather than "please log in".
    /// fn had_session(sessions: &Sessions, headers: &HeaderMap) -> bool {
    ///     let name = &sessions.cookie_settings().session;
    ///     headers
    ///         .get_all(header::COOKIE)
    ///         .iter()
    ///         .filter_map(|v| v.to_str().ok())
    ///         .any(|h| sessiond::cookie::from_header(h, name).is_some())
    /// }
    /// ```
    pub fn cookie_settings(&self) -> &CookieSettings {
        &self.inner.cookies
    }

    pub(crate) fn csrf_header(&self) -> &HeaderName {
        &self.inner.csrf_header
    }

    pub(crate) fn csrf_field(&self) -> &str {
        &self.inner.csrf_field
    }

    pub(crate) fn client_ip(&self, parts: &Parts) -> Option<String> {
        (self.inner.client_ip)(parts)
    }

    /// The response to `refusal` of the request `parts`.
    pub(crate) fn reject(&self, refusal: Refusal, parts: &Parts) -> Response {
        match &self.inner.on_refusal {
            Some(handler) => handler(refusal, parts),
            None => refusal.into_response(),
        }
    }

    /// The session cookie's value in `headers` (every `Cookie` header is searched).
    pub(crate) fn session_cookie(&self, headers: &HeaderMap) -> Option<String> {
        cookie(headers, &self.inner.cookies.session)
    }

    /// The CSRF cookie's value in `headers`: the token the browser holds, for a form the page
    /// renders (a hidden field named as [`SessionsBuilder::csrf_field`]). Not a check: the
    /// extractors compare what comes back with the session's own token.
    pub(crate) fn csrf_cookie(&self, headers: &HeaderMap) -> Option<String> {
        cookie(headers, &self.inner.cookies.csrf)
    }

    /// Creates a cookie session for `new` and returns the `Set-Cookie` headers that hand it to
    /// the browser (the `HttpOnly` session cookie and the JavaScript-readable CSRF cookie).
    /// The client's IP and User-Agent are recorded from `request` unless `new` sets them.
    ///
    /// A session cookie the request already carries is revoked first when it is valid (reason
    /// `superseded`): a login never keeps or reuses a session that existed before it, so a
    /// session identifier planted in the browser beforehand (session fixation) is worth
    /// nothing.
    ///
    /// ```no_run
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use sessiond::{NewSession, UserId};
    /// use sessiond_axum::{LoginRequest, Sessions};
    ///
    /// async fn login(sessions: Sessions, request: LoginRequest) -> Response {
    ///     // ... check the password first ...
    ///     let user = UserId::new("alice").expect("a valid user id");
    ///     match sessions.log_in(&request, NewSession::new(user)).await {
    ///         Ok(logged_in) => (logged_in, Redirect::to("/")).into_response(),
    ///         Err(refusal) => refusal.into_response(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`]: `invalid_request` for bad input (claims, IP, User-Agent), `unavailable`
    /// when the backend cannot be reached (then nothing was created).
    pub async fn log_in(
        &self,
        request: &LoginRequest,
        mut new: NewSession,
    ) -> Result<LoggedIn, Refusal> {
        if new.ip.is_none() {
            new.ip.clone_from(&request.ip);
        }
        if new.user_agent.is_none() {
            new.user_agent.clone_from(&request.user_agent);
        }
        if let Some(old) = &request.cookie {
            // Validated as the request it came with (bindings included): only a session this
            // browser could use is one it could have been fixed to.
            let ctx = RequestContext {
                ip: request.ip.as_deref(),
                user_agent: request.user_agent.as_deref(),
                ..RequestContext::default()
            };
            match self.backend().validate_cookie(old.expose(), &ctx).await {
                Ok(previous) => {
                    self.backend()
                        .revoke(&previous.session.id, &superseded())
                        .await
                        .map_err(refusal)?;
                }
                // Not a live session of ours: nothing to revoke, and nothing of it is kept.
                Err(Failure::Refused(_)) => {}
                Err(e @ Failure::Unavailable(_)) => return Err(refusal(e)),
            }
        }
        let created = self
            .backend()
            .create_cookie_session(new)
            .await
            .map_err(refusal)?;
        let now = self.backend().now();
        let until = created.session.deadline();
        let cookies = &self.inner.cookies;
        let set_cookies = vec![
            cookies.session_cookie(created.cookie.expose(), now, until),
            cookies.csrf_cookie(created.csrf_token.expose(), now, until),
        ];
        Ok(LoggedIn {
            session: created.session,
            csrf_token: created.csrf_token,
            set_cookies: SetCookies(set_cookies),
        })
    }

    /// Revokes the validated session (reason `logout`) and returns the `Set-Cookie` headers
    /// that delete its cookies.
    ///
    /// ```no_run
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// async fn logout(sessions: Sessions, auth: CookieAuth) -> Response {
    ///     match sessions.log_out(&auth).await {
    ///         Ok(cleared) => (cleared, Redirect::to("/login")).into_response(),
    ///         Err(refusal) => refusal.into_response(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`] (`unavailable` when the backend cannot be reached: the session may still
    /// be live, so the cookies are not cleared either).
    pub async fn log_out(&self, validated: &Validated) -> Result<SetCookies, Refusal> {
        self.backend()
            .revoke(&validated.session.id, &RevokeReason::logout())
            .await
            .map_err(refusal)?;
        Ok(self.clear_cookies())
    }

    /// The `Set-Cookie` headers that delete the session, CSRF and refresh cookies.
    ///
    /// ```
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use sessiond_axum::Sessions;
    ///
    /// // For a browser whose session already ended (nothing to revoke): its cookies still go.
    /// async fn forget_me(sessions: Sessions) -> Response {
    ///     (sessions.clear_cookies(), Redirect::to("/login")).into_response()
    /// }
    /// ```
    pub fn clear_cookies(&self) -> SetCookies {
        SetCookies(self.inner.cookies.clear_all().to_vec())
    }

    /// Revokes every other session of the validated session's user in its tenant ("log out
    /// other devices"); the current one stays. Returns how many were revoked.
    ///
    /// ```no_run
    /// use axum::response::{IntoResponse, Response};
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// async fn log_out_others(sessions: Sessions, auth: CookieAuth) -> Response {
    ///     match sessions.log_out_others(&auth).await {
    ///         Ok(count) => format!("logged out of {count} other device(s)").into_response(),
    ///         Err(refusal) => refusal.into_response(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`] (`unavailable` when the backend cannot be reached).
    pub async fn log_out_others(&self, validated: &Validated) -> Result<usize, Refusal> {
        let s = &validated.session;
        self.backend()
            .revoke_user(
                &s.user_id,
                &s.tenant,
                Some(&s.id),
                &RevokeReason::revoked_all(),
            )
            .await
            .map_err(refusal)
    }

    /// Replaces the validated cookie session's CSRF token: the old one stops working at once.
    /// Returns the new token and its `Set-Cookie`.
    ///
    /// ```no_run
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// async fn change_password(sessions: Sessions, auth: CookieAuth) -> Response {
    ///     // ... change the password; then tokens copied into older pages stop working:
    ///     match sessions.rotate_csrf(&auth).await {
    ///         Ok(rotated) => (rotated, Redirect::to("/settings")).into_response(),
    ///         Err(refusal) => refusal.into_response(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`]: the session's status when it ended meanwhile, `unavailable` when the
    /// backend cannot be reached.
    pub async fn rotate_csrf(&self, validated: &Validated) -> Result<CsrfRotated, Refusal> {
        let token = self
            .backend()
            .rotate_csrf(&validated.session.id)
            .await
            .map_err(refusal)?;
        let set_cookie = self.inner.cookies.csrf_cookie(
            token.expose(),
            self.backend().now(),
            validated.session.deadline(),
        );
        Ok(CsrfRotated {
            csrf_token: token,
            set_cookies: SetCookies(vec![set_cookie]),
        })
    }

    /// The active sessions of the validated session's user in its tenant, oldest first, each
    /// marked whether it is the one making this request: a "your devices" page.
    ///
    /// ```no_run
    /// use axum::response::{IntoResponse, Response};
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// async fn devices(sessions: Sessions, auth: CookieAuth) -> Response {
    ///     let devices = match sessions.devices(&auth).await {
    ///         Ok(devices) => devices,
    ///         Err(refusal) => return refusal.into_response(),
    ///     };
    ///     let mut page = String::new();
    ///     for device in devices {
    ///         let browser = device.session.user_agent.as_deref().unwrap_or("unknown browser");
    ///         let this = if device.current { " (this device)" } else { "" };
    ///         let seen = device.session.last_seen_at;
    ///         page.push_str(&format!("{browser}, last seen {seen}{this}\n"));
    ///     }
    ///     page.into_response()
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`] (`unavailable` when the backend cannot be reached).
    pub async fn devices(&self, validated: &Validated) -> Result<Vec<Device>, Refusal> {
        let s = &validated.session;
        let sessions = self
            .backend()
            .user_sessions(&s.user_id, &s.tenant)
            .await
            .map_err(refusal)?;
        Ok(sessions
            .into_iter()
            .map(|session| Device {
                current: session.id == s.id,
                session,
            })
            .collect())
    }

    /// Revokes `id` if it is an active session of the validated session's own user and tenant
    /// (reason `logout`); returns whether it was. A session of anyone else is never touched,
    /// whatever id the request names.
    ///
    /// ```no_run
    /// use axum::extract::Path;
    /// use axum::http::StatusCode;
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use sessiond::SessionId;
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// // POST /devices/{id}/revoke
    /// async fn revoke(sessions: Sessions, auth: CookieAuth, Path(id): Path<String>) -> Response {
    ///     let Ok(id) = SessionId::parse(&id) else {
    ///         return StatusCode::NOT_FOUND.into_response();
    ///     };
    ///     match sessions.revoke_device(&auth, &id).await {
    ///         Ok(true) => Redirect::to("/devices").into_response(),
    ///         Ok(false) => StatusCode::NOT_FOUND.into_response(),
    ///         Err(refusal) => refusal.into_response(),
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`] (`unavailable` when the backend cannot be reached).
    pub async fn revoke_device(
        &self,
        validated: &Validated,
        id: &SessionId,
    ) -> Result<bool, Refusal> {
        let s = &validated.session;
        let own = self
            .backend()
            .user_sessions(&s.user_id, &s.tenant)
            .await
            .map_err(refusal)?
            .iter()
            .any(|session| &session.id == id);
        if !own {
            return Ok(false);
        }
        match self.backend().revoke(id, &RevokeReason::logout()).await {
            Ok(()) => Ok(true),
            Err(Failure::Refused(_)) => Ok(false),
            Err(e) => Err(refusal(e)),
        }
    }

    /// Resolves when the validated credential must stop being honoured, for closing a
    /// WebSocket or an event stream: the session revoked (on any node the backend hears from)
    /// or expired, or the access token's `exp` passed. Dropping the future stops watching.
    ///
    /// ```no_run
    /// use sessiond_axum::{CookieAuth, Sessions};
    ///
    /// async fn stream(sessions: Sessions, auth: CookieAuth) {
    ///     tokio::select! {
    ///         end = sessions.ended(&auth) => {
    ///             // close the connection; `end` says why
    ///         }
    ///         _ = std::future::pending::<()>() => {} // serve the connection
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Failure`] when watching could not start (an outage): close the connection then too.
    pub async fn ended(&self, validated: &Validated) -> Result<EndReason, Failure> {
        self.backend().ended(validated).await
    }
}

fn superseded() -> RevokeReason {
    // Invariant: "superseded" matches the reason grammar `[a-z0-9_]{1,64}`.
    RevokeReason::new("superseded").unwrap_or_else(|_| RevokeReason::logout())
}

fn refusal(failure: Failure) -> Refusal {
    if let Failure::Unavailable(source) = &failure {
        tracing::warn!(error = %source, "session backend unavailable");
    }
    Refusal::new(failure.code())
}

/// What a login needs of its request (an extractor): the client's IP and User-Agent, recorded
/// with the new session, and the session cookie it may already carry, revoked by
/// [`Sessions::log_in`].
///
/// ```no_run
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Redirect, Response};
/// use axum::Form;
/// use serde::Deserialize;
/// use sessiond::{NewSession, UserId};
/// use sessiond_axum::{LoginRequest, Sessions};
///
/// #[derive(Deserialize)]
/// struct Credentials {
///     user: String,
///     password: String,
/// }
///
/// async fn login(
///     sessions: Sessions,
///     request: LoginRequest,
///     Form(credentials): Form<Credentials>,
/// ) -> Response {
///     tracing::info!(ip = ?request.ip, user_agent = ?request.user_agent, "login attempt");
///     // ... check credentials.password against the stored hash first ...
///     let Ok(user) = UserId::new(credentials.user) else {
///         return StatusCode::BAD_REQUEST.into_response();
///     };
///     match sessions.log_in(&request, NewSession::new(user)).await {
///         Ok(logged_in) => (logged_in, Redirect::to("/")).into_response(),
///         Err(refusal) => refusal.into_response(),
///     }
/// }
/// ```
#[derive(Clone)]
pub struct LoginRequest {
    /// The client's address, as [`SessionsBuilder::client_ip`] finds it.
    pub ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    cookie: Option<Secret<String>>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("has_cookie", &self.cookie.is_some())
            .finish()
    }
}

impl LoginRequest {
    pub(crate) fn from_parts(sessions: &Sessions, parts: &Parts) -> Self {
        LoginRequest {
            ip: sessions.client_ip(parts),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            cookie: sessions.session_cookie(&parts.headers).map(Secret::new),
        }
    }
}

/// `Set-Cookie` headers to add to a response (`IntoResponseParts`).
///
/// ```
/// use axum::response::{IntoResponse, Redirect, Response};
/// use sessiond_axum::SetCookies;
///
/// // Before the body, like any other response parts.
/// fn leave(cleared: SetCookies) -> Response {
///     (cleared, Redirect::to("/goodbye")).into_response()
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SetCookies(Vec<String>);

impl SetCookies {
    /// The header values.
    ///
    /// ```
    /// use axum::http::{header, HeaderMap, HeaderValue};
    /// use sessiond_axum::SetCookies;
    ///
    /// // A response assembled by hand rather than through `IntoResponseParts`.
    /// fn add_to(headers: &mut HeaderMap, cookies: &SetCookies) {
    ///     for value in cookies.values() {
    ///         if let Ok(value) = HeaderValue::from_str(value) {
    ///             headers.append(header::SET_COOKIE, value);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn values(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for SetCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values carry the session cookie: only their count is shown.
        f.debug_struct("SetCookies")
            .field("count", &self.0.len())
            .finish()
    }
}

impl IntoResponseParts for SetCookies {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        for value in self.0 {
            // Cookie values are base64url and the attributes ASCII: always a valid header.
            if let Ok(value) = HeaderValue::from_str(&value) {
                res.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        Ok(res)
    }
}

/// A new login: the session and the cookies that hand it to the browser. Add it to the
/// response (`IntoResponseParts`).
///
/// ```no_run
/// use axum::response::{Html, IntoResponse, Response};
/// use sessiond::{NewSession, UserId};
/// use sessiond_axum::{LoginRequest, Sessions};
///
/// // Called once the password is checked: the welcome page carries a form, and its token.
/// async fn start_session(sessions: &Sessions, request: &LoginRequest, user: UserId) -> Response {
///     match sessions.log_in(request, NewSession::new(user)).await {
///         Ok(logged_in) => {
///             tracing::info!(session_id = %logged_in.session.id, "logged in");
///             let page = format!(
///                 r#"<form method="post" action="/notes">
///                      <input type="hidden" name="csrf_token" value="{}">…</form>"#,
///                 logged_in.csrf_token.expose()
///             );
///             (logged_in, Html(page)).into_response()
///         }
///         Err(refusal) => refusal.into_response(),
///     }
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct LoggedIn {
    /// The new session.
    pub session: Session,
    /// The CSRF token (also in the CSRF cookie), e.g. for a form rendered in the same response.
    pub csrf_token: Secret<String>,
    /// The session and CSRF cookies.
    pub set_cookies: SetCookies,
}

/// A rotated CSRF token and its cookie. Add it to the response (`IntoResponseParts`).
///
/// ```no_run
/// use axum::response::{IntoResponse, Response};
/// use sessiond_axum::{CookieAuth, Sessions};
///
/// // A single-page app asks for a fresh token: in the body, and in the CSRF cookie.
/// async fn new_csrf_token(sessions: Sessions, auth: CookieAuth) -> Response {
///     match sessions.rotate_csrf(&auth).await {
///         Ok(rotated) => {
///             let token = rotated.csrf_token.expose().clone();
///             (rotated, token).into_response()
///         }
///         Err(refusal) => refusal.into_response(),
///     }
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct CsrfRotated {
    /// The new token.
    pub csrf_token: Secret<String>,
    /// The CSRF cookie.
    pub set_cookies: SetCookies,
}

/// One of the user's active sessions, for a "your devices" page.
///
/// ```
/// use sessiond_axum::Device;
///
/// fn label(device: &Device) -> String {
///     let browser = device.session.user_agent.as_deref().unwrap_or("unknown browser");
///     let address = device.session.ip.as_deref().unwrap_or("unknown address");
///     let this = if device.current { " (this device)" } else { "" };
///     format!("{browser} at {address}, since {}{this}", device.session.created_at)
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Device {
    /// The session: created, last seen, IP and User-Agent as recorded.
    pub session: Session,
    /// Whether it is the session making this request.
    pub current: bool,
}

/// Responses that carry cookies add them as `Set-Cookie` headers.
macro_rules! set_cookies_into_response_parts {
    ($($t:ty),*) => {$(
        impl IntoResponseParts for $t {
            type Error = std::convert::Infallible;

            fn into_response_parts(self, res: ResponseParts) -> Result<ResponseParts, Self::Error> {
                self.set_cookies.into_response_parts(res)
            }
        }
    )*};
}

set_cookies_into_response_parts!(LoggedIn, CsrfRotated);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_cookie_value() {
        let secret = "v1.ses-secretvalue.sk-key.mac";
        let request = LoginRequest {
            ip: Some("192.0.2.1".into()),
            user_agent: Some("ua".into()),
            cookie: Some(Secret::new(secret.to_owned())),
        };
        let cookies = SetCookies(vec![format!("__Host-sessiond={secret}; HttpOnly")]);
        for shown in [format!("{request:?}"), format!("{cookies:?}")] {
            assert!(!shown.contains("secretvalue"), "{shown}");
        }
        assert!(format!("{request:?}").contains("has_cookie: true"));
    }
}
