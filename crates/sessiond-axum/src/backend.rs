//! Where the layer's sessions live: the embedded library ([`SessionService`]) or, through the
//! same trait, a remote sessiond server. Application code never sees which.

use std::fmt;

use async_trait::async_trait;
use sessiond::error::ErrorCode;
use sessiond::{
    CookieSession, EndReason, NewSession, RequestContext, RevokeReason, Secret, Session,
    SessionError, SessionId, SessionService, Tenant, Timestamp, UserId, Validated,
};

/// Why a backend call did not succeed: a verdict or bad input ([`Failure::Refused`], with its
/// wire code), or an outage ([`Failure::Unavailable`]). The two are told apart by type, never by
/// text: a credential that could not be checked is neither accepted nor called invalid.
///
/// ```
/// use sessiond::ErrorCode;
/// use sessiond_axum::{Failure, Refusal};
///
/// // What the layer does with a failure: log an outage's cause, answer with the code only.
/// fn refusal(failure: &Failure) -> Refusal {
///     if let Failure::Unavailable(source) = failure {
///         tracing::warn!(error = %source, "session could not be checked");
///     }
///     Refusal::new(failure.code())
/// }
///
/// let revoked = refusal(&Failure::Refused(ErrorCode::SessionRevoked));
/// assert_eq!(revoked.code(), ErrorCode::SessionRevoked);
/// let outage = refusal(&Failure::Unavailable("connection refused".into()));
/// assert!(outage.is_outage());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The backend decided: the credential is refused (401/403 codes), the session is unknown,
    /// or the input is malformed.
    Refused(ErrorCode),
    /// Storage, keys or the remote server could not be reached; nothing was decided.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl Failure {
    /// The wire code: the refusal's, or `unavailable`.
    ///
    /// ```
    /// use sessiond::ErrorCode;
    /// use sessiond_axum::Failure;
    ///
    /// let failure = Failure::Unavailable("connection refused".into());
    /// assert_eq!(failure.code(), ErrorCode::Unavailable);
    /// assert_eq!(failure.code().status(), 503);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Refused(code) => *code,
            Failure::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(code) => write!(f, "refused: {code}"),
            Failure::Unavailable(source) => write!(f, "unavailable: {source}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        if e.is_outage() {
            Failure::Unavailable(Box::new(e))
        } else {
            Failure::Refused(e.code())
        }
    }
}

/// The session operations the layer and its helpers need. [`SessionService`] implements it
/// (the embedded library); a remote server client does too. Implement it to put something in
/// between (a cache, a circuit breaker), keeping the contract of each method.
///
/// A wrapper that logs every outage and every revocation, and delegates the rest:
///
/// ```
/// use std::sync::Arc;
///
/// use sessiond::{
///     CookieSession, EndReason, NewSession, RequestContext, RevokeReason, Secret, Session,
///     SessionId, Tenant, Timestamp, UserId, Validated,
/// };
/// use sessiond_axum::{Failure, SessionBackend, Sessions};
///
/// #[derive(Debug)]
/// struct Logged {
///     inner: Arc<dyn SessionBackend>,
/// }
///
/// /// Logs an outage (its cause stays in the log) and passes the result on unchanged.
/// fn logged<T>(operation: &str, result: Result<T, Failure>) -> Result<T, Failure> {
///     if let Err(Failure::Unavailable(source)) = &result {
///         tracing::warn!(operation, error = %source, "session backend unavailable");
///     }
///     result
/// }
///
/// #[async_trait::async_trait]
/// impl SessionBackend for Logged {
///     async fn validate_cookie(
///         &self,
///         cookie: &str,
///         ctx: &RequestContext<'_>,
///     ) -> Result<Validated, Failure> {
///         logged("validate_cookie", self.inner.validate_cookie(cookie, ctx).await)
///     }
///
///     async fn validate_access_token(
///         &self,
///         token: &str,
///         ctx: &RequestContext<'_>,
///     ) -> Result<Validated, Failure> {
///         logged("validate_access_token", self.inner.validate_access_token(token, ctx).await)
///     }
///
///     async fn create_cookie_session(&self, new: NewSession) -> Result<CookieSession, Failure> {
///         logged("create_cookie_session", self.inner.create_cookie_session(new).await)
///     }
///
///     async fn revoke(&self, id: &SessionId, reason: &RevokeReason) -> Result<(), Failure> {
///         let result = logged("revoke", self.inner.revoke(id, reason).await);
///         if result.is_ok() {
///             tracing::info!(session_id = %id, %reason, "session revoked");
///         }
///         result
///     }
///
///     async fn revoke_user(
///         &self,
///         user: &UserId,
///         tenant: &Tenant,
///         except: Option<&SessionId>,
///         reason: &RevokeReason,
///     ) -> Result<usize, Failure> {
///         let result = self.inner.revoke_user(user, tenant, except, reason).await;
///         let result = logged("revoke_user", result);
///         if let Ok(count) = &result {
///             tracing::info!(user_id = %user, %tenant, count, %reason, "sessions revoked");
///         }
///         result
///     }
///
///     async fn user_sessions(
///         &self,
///         user: &UserId,
///         tenant: &Tenant,
///     ) -> Result<Vec<Session>, Failure> {
///         logged("user_sessions", self.inner.user_sessions(user, tenant).await)
///     }
///
///     async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, Failure> {
///         logged("rotate_csrf", self.inner.rotate_csrf(id).await)
///     }
///
///     async fn ended(&self, validated: &Validated) -> Result<EndReason, Failure> {
///         logged("ended", self.inner.ended(validated).await)
///     }
///
///     fn now(&self) -> Timestamp {
///         self.inner.now()
///     }
/// }
///
/// # fn f(service: sessiond::SessionService) {
/// let backend = Logged { inner: Arc::new(service) };
/// let sessions = Sessions::with_backend(backend).build();
/// # let _ = sessions; }
/// ```
#[async_trait]
pub trait SessionBackend: Send + Sync + fmt::Debug + 'static {
    /// Validates a session cookie value: MAC, status, expiry, bindings, and CSRF as `ctx` asks
    /// ([`SessionService::validate_cookie`]).
    async fn validate_cookie(
        &self,
        cookie: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure>;

    /// Validates an access token ([`SessionService::validate_access_token`]).
    async fn validate_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure>;

    /// Creates a cookie session ([`SessionService::create_cookie_session`]).
    async fn create_cookie_session(&self, new: NewSession) -> Result<CookieSession, Failure>;

    /// Revokes one session. Revoking one already ended is not an error; an unknown id is
    /// `Refused(SessionNotFound)`.
    async fn revoke(&self, id: &SessionId, reason: &RevokeReason) -> Result<(), Failure>;

    /// Revokes every active session of `user` in `tenant` but `except`; returns how many.
    async fn revoke_user(
        &self,
        user: &UserId,
        tenant: &Tenant,
        except: Option<&SessionId>,
        reason: &RevokeReason,
    ) -> Result<usize, Failure>;

    /// The active sessions of `user` in `tenant`, oldest first.
    async fn user_sessions(&self, user: &UserId, tenant: &Tenant) -> Result<Vec<Session>, Failure>;

    /// Replaces a cookie session's CSRF token; returns the new plaintext.
    async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, Failure>;

    /// Resolves when the validated credential must stop being honoured: its session revoked or
    /// expired, or (access tokens) the token's `exp` passed. An `Err` means it could not even
    /// start watching (an outage): the caller must close the connection, not keep it open
    /// unwatched.
    async fn ended(&self, validated: &Validated) -> Result<EndReason, Failure>;

    /// The backend's current time, for cookie lifetimes.
    fn now(&self) -> Timestamp;
}

#[async_trait]
impl SessionBackend for SessionService {
    async fn validate_cookie(
        &self,
        cookie: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure> {
        Ok(SessionService::validate_cookie(self, cookie, ctx).await?)
    }

    async fn validate_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, Failure> {
        Ok(SessionService::validate_access_token(self, token, ctx).await?)
    }

    async fn create_cookie_session(&self, new: NewSession) -> Result<CookieSession, Failure> {
        Ok(SessionService::create_cookie_session(self, new).await?)
    }

    async fn revoke(&self, id: &SessionId, reason: &RevokeReason) -> Result<(), Failure> {
        SessionService::revoke(self, id, reason).await?;
        Ok(())
    }

    async fn revoke_user(
        &self,
        user: &UserId,
        tenant: &Tenant,
        except: Option<&SessionId>,
        reason: &RevokeReason,
    ) -> Result<usize, Failure> {
        let revoked = SessionService::revoke_user(self, user, Some(tenant), except, reason).await?;
        Ok(revoked.len())
    }

    async fn user_sessions(&self, user: &UserId, tenant: &Tenant) -> Result<Vec<Session>, Failure> {
        Ok(SessionService::user_sessions(self, user, Some(tenant)).await?)
    }

    async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, Failure> {
        Ok(SessionService::rotate_csrf(self, id).await?)
    }

    async fn ended(&self, validated: &Validated) -> Result<EndReason, Failure> {
        match self.watch_validated(validated).await {
            Ok(watch) => Ok(watch.wait().await),
            // The row is gone (collected after it expired): the session has ended.
            Err(e) if e.code() == ErrorCode::SessionNotFound => Ok(EndReason::Deleted),
            Err(e) => Err(e.into()),
        }
    }

    fn now(&self) -> Timestamp {
        SessionService::now(self)
    }
}
