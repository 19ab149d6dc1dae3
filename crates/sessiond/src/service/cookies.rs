//! Cookie sessions on [`SessionService`]: creation, validation with the sliding idle window, and
//! CSRF (docs/DESIGN.md §3.1, §5.4, §5.5).

use super::checks::{check_context, check_csrf, check_status, sha256};
use super::effects::{Effect, Rejection};
use super::{CookieSession, Credential, NewSession, RequestContext, SessionService, Validated};
use crate::clock::Timestamp;
use crate::cookie;
use crate::error::{CredentialError, SessionError};
use crate::id::SessionId;
use crate::keys::{KeyError, KeyPurpose};
use crate::secret::Secret;
use crate::session::{Session, SessionKind, SessionRecord};

impl SessionService {
    /// Creates a cookie session: the row, the signed cookie value and a CSRF token.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for oversize or reserved input, [`SessionError::Keys`]
    /// without an active cookie key, [`SessionError::Store`] on storage failure (nothing is
    /// created then).
    pub async fn create_cookie_session(
        &self,
        new: NewSession,
    ) -> Result<CookieSession, SessionError> {
        let key = self.inner.keys.active(KeyPurpose::Cookie).await?;
        let policy = &self.inner.config.cookie;
        let csrf = self.new_token_secret();
        let csrf_hash = sha256(csrf.expose().as_bytes());
        let session = self.new_session_row(
            new,
            SessionKind::Cookie,
            policy.idle_ttl,
            policy.absolute_ttl,
        )?;
        let record = SessionRecord::new(session, key.id().clone(), Some(csrf_hash), None);
        let value = cookie::encode(&record.session.id, &key)
            // Only fails for a key without HMAC material, which the cookie purpose never has.
            .map_err(|_| SessionError::Keys(KeyError::Malformed))?;
        self.insert(&record).await?;
        Ok(CookieSession {
            session: record.session,
            cookie: value,
            csrf_token: csrf,
        })
    }

    /// Validates a session cookie value: format, MAC (constant time) under a usable cookie key,
    /// then the row: exists, not revoked, idle and absolute windows, bindings, CSRF. A success
    /// slides the idle window, writing at most once per touch interval.
    ///
    /// # Errors
    /// The [`SessionError`] for the first check that failed; each failure is counted and
    /// (rate-bounded) audited. Storage failures are [`SessionError::Store`], never a verdict.
    pub async fn validate_cookie(
        &self,
        value: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, SessionError> {
        self.settle(ctx.ip, async {
            check_context(ctx)?;
            let invalid = |e: CredentialError| SessionError::InvalidCredential(e);
            let parsed = cookie::parse(value).map_err(|e| invalid(e.into()))?;
            let key = self
                .inner
                .keys
                .verifier(parsed.key_id(), KeyPurpose::Cookie)
                .await?
                .map_err(|refusal| invalid(CredentialError::Key(refusal)))?;
            parsed.verify(&key).map_err(|e| invalid(e.into()))?;

            let record = self
                .inner
                .backend
                .session(parsed.session_id())
                .await?
                .ok_or(SessionError::NotFound)?;
            let now = self.inner.clock.now();
            let checked = if record.key_id != *parsed.key_id() {
                Err(invalid(CredentialError::KeyMismatch))
            } else if record.session.kind != SessionKind::Cookie {
                Err(invalid(CredentialError::WrongKind))
            } else {
                check_status(&record.session, now)
                    .and_then(|()| self.check_binding(&record.session, ctx))
                    .and_then(|()| check_csrf(record.csrf_hash.as_ref(), ctx))
            };
            checked.map_err(|e| Rejection::about(e, &record.session))?;
            let session = self.touch(record.session, now).await;
            let deadline = session.deadline();
            Ok(Validated {
                session,
                deadline,
                credential: Credential::Cookie {
                    key_id: parsed.key_id().clone(),
                },
            })
        })
        .await
    }

    /// Slides the idle window if the last recorded activity is at least one touch interval old.
    /// A failed write is logged and does not fail the validation: the credential was checked
    /// against a row that was read successfully; only the bookkeeping is late.
    async fn touch(&self, mut session: Session, now: Timestamp) -> Session {
        let interval = self.inner.config.cookie.touch_interval;
        if now < session.last_seen_at.saturating_add(interval) {
            return session;
        }
        let idle = now.saturating_add(self.inner.config.cookie.idle_ttl);
        let stale_at = now.saturating_sub(interval);
        match self
            .inner
            .backend
            .touch_session(&session.id, now, idle, stale_at)
            .await
        {
            Ok(_) => {
                session.last_seen_at = now;
                session.idle_expires_at = idle;
            }
            Err(e) => {
                tracing::warn!(session_id = %session.id, error = %e, "could not record session activity");
            }
        }
        session
    }

    /// Checks a CSRF token against a session without validating a credential (for callers that
    /// validated the cookie separately).
    ///
    /// # Errors
    /// [`SessionError::CsrfMissing`], [`SessionError::CsrfMismatch`], or the session's status.
    pub async fn check_csrf(
        &self,
        id: &SessionId,
        token: Option<&str>,
    ) -> Result<(), SessionError> {
        let record = self.row(id).await?;
        check_status(&record.session, self.inner.clock.now())?;
        let ctx = RequestContext {
            csrf_token: token,
            require_csrf: true,
            ..RequestContext::default()
        };
        match check_csrf(record.csrf_hash.as_ref(), &ctx) {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .refused(Rejection::about(e, &record.session), None)
                .await),
        }
    }

    /// Issues a new CSRF token for an active session; the old one stops matching at once.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::Revoked`], [`SessionError::Expired`], or
    /// [`SessionError::Store`].
    pub async fn rotate_csrf(&self, id: &SessionId) -> Result<Secret<String>, SessionError> {
        let token = self.new_token_secret();
        let hash = sha256(token.expose().as_bytes());
        let now = self.inner.clock.now();
        let Some(owner) = self.inner.backend.set_csrf_hash(id, &hash, now).await? else {
            let record = self.row(id).await?;
            check_status(&record.session, now)?;
            // Active by status yet not updated: it became inactive between the two reads.
            return Err(SessionError::Revoked);
        };
        self.apply(now, vec![Effect::CsrfRotated { owner }]).await;
        Ok(token)
    }
}
