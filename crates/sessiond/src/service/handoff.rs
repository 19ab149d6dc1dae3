//! The browser login handoff on [`SessionService`] (docs/DESIGN.md §3.7): the application's
//! backend, having authenticated a user, gets a short-lived [`crate::login_code`] bound to the
//! page's PKCE challenge; the page exchanges it, with its code verifier, for a `browser` session
//! created at that moment, on sessiond's origin, so the refresh cookie is set by sessiond itself.
//!
//! Nothing is stored when a code is made: a code that is never exchanged leaves no row and
//! counts toward no limit. The exchange checks everything that can be checked without a write
//! first (format, MAC, expiry, the verifier), so a wrong verifier cannot burn the code; then it
//! claims the code once in the claim store (atomic across nodes; the id is a hash of the code,
//! never its text) and only then creates the session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{NewSession, RequestContext, SessionService, TokenSession};
use crate::clock::{is_expired, Timestamp};
use crate::error::{CredentialError, SessionError};
use crate::id::{SessionId, Tenant, UserId};
use crate::keys::{KeyError, KeyPurpose};
use crate::login_code::{self, LoginCodeError, Payload};
use crate::secret::Secret;
use crate::session::SessionKind;
use crate::store::ClaimOutcome;

/// A login code and what it promises.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoginCode {
    /// The code (a bearer credential until exchanged or expired).
    pub code: Secret<String>,
    /// The id the session will have once the code is exchanged (no row exists before).
    pub session_id: SessionId,
    /// Until when the code may be exchanged (exclusive).
    pub expires_at: Timestamp,
}

fn refused(e: LoginCodeError) -> SessionError {
    SessionError::InvalidCredential(CredentialError::LoginCode(e))
}

impl SessionService {
    /// Makes a login code for a `browser` session of `new`'s user, tenant and claims, bound to
    /// the S256 `code_challenge`, valid for [`super::ServiceConfig::login_code_ttl`]. `new`'s
    /// `ip` and `user_agent` are ignored: the session records those of the exchange.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for a challenge that is not 43 base64url characters, a
    /// reserved claim name, or claims too large for a code of at most
    /// [`login_code::MAX_LEN`] characters; [`SessionError::Keys`] or [`SessionError::Store`]
    /// when no cookie key is available.
    pub async fn create_login_code(
        &self,
        mut new: NewSession,
        code_challenge: &str,
    ) -> Result<LoginCode, SessionError> {
        if !login_code::is_challenge(code_challenge) {
            return Err(SessionError::InvalidInput(
                "code_challenge must be 43 base64url characters (S256)",
            ));
        }
        new.ip = None;
        new.user_agent = None;
        Self::check_new(&new)?;
        let key = self.inner.keys.active(KeyPurpose::Cookie).await?;
        let now = self.inner.clock.now();
        let expires_at = now.saturating_add(self.inner.config.login_code_ttl);
        let session_id = SessionId::generate(self.inner.rng.as_ref());
        let nonce: [u8; 16] = crate::random::bytes(self.inner.rng.as_ref());
        let payload = Payload {
            sid: session_id.as_str().to_owned(),
            sub: new.user_id.as_str().to_owned(),
            ten: new.tenant.as_str().to_owned(),
            clm: new.claims,
            cc: code_challenge.to_owned(),
            exp: expires_at.unix_millis(),
            n: URL_SAFE_NO_PAD.encode(nonce),
        };
        let code = login_code::encode(&payload, &key).map_err(|e| match e {
            LoginCodeError::Malformed => {
                SessionError::InvalidInput("claims too large for a login code (2048 characters)")
            }
            // Only a key without HMAC material, which the cookie purpose never has.
            _ => SessionError::Keys(KeyError::Malformed),
        })?;
        Ok(LoginCode {
            code,
            session_id,
            expires_at,
        })
    }

    /// Exchanges a login code and its PKCE `code_verifier` for a new `browser` session with the
    /// id the code names, recording `ctx`'s ip and user agent; `max_per_user` applies as at any
    /// creation. Checks, in order: format and MAC (under a cookie key that still verifies),
    /// expiry, the verifier; then claims the code (once, across nodes), then creates the session.
    /// A refusal before the claim leaves the code usable.
    ///
    /// # Errors
    /// [`SessionError::InvalidCredential`] (malformed, forged, wrong verifier),
    /// [`SessionError::TokenExpired`], [`SessionError::TokenAlreadyUsed`],
    /// [`SessionError::InvalidInput`] for oversize client facts, [`SessionError::Keys`] or
    /// [`SessionError::Store`] (nothing was decided; if the claim succeeded but the session
    /// could not be stored, the code is spent and the user logs in again).
    pub async fn exchange_login_code(
        &self,
        code: &str,
        code_verifier: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<TokenSession, SessionError> {
        self.settle(ctx.ip, async {
            super::checks::check_context(ctx)?;
            let parsed = login_code::parse(code).map_err(refused)?;
            let key = self
                .inner
                .keys
                .verifier(parsed.key_id(), KeyPurpose::Cookie)
                .await?
                .map_err(|r| SessionError::InvalidCredential(CredentialError::Key(r)))?;
            let payload = parsed.verify(&key).map_err(refused)?;
            let now = self.inner.clock.now();
            let expires_at = payload.expires_at();
            if is_expired(expires_at, now) {
                return Err(SessionError::TokenExpired.into());
            }
            login_code::check_verifier(&payload.cc, code_verifier).map_err(refused)?;
            // MAC'd by us, so these parse; a failure means a code of another version of us.
            let malformed = |_| refused(LoginCodeError::Malformed);
            let session_id = SessionId::parse(&payload.sid).map_err(malformed)?;
            let mut new = NewSession::new(UserId::new(payload.sub).map_err(malformed)?)
                .tenant(Tenant::new(payload.ten).map_err(malformed)?)
                .claims(payload.clm);
            new.ip = ctx.ip.map(str::to_owned);
            new.user_agent = ctx.user_agent.map(str::to_owned);
            // The last step before the session: only a fully valid exchange spends the code.
            let claim_id = login_code::claim_id(code);
            match self.inner.claims.claim(&claim_id, expires_at, now).await? {
                ClaimOutcome::Claimed => {}
                ClaimOutcome::AlreadyUsed => return Err(SessionError::TokenAlreadyUsed.into()),
                _ => return Err(SessionError::TokenExpired.into()),
            }
            Ok(self
                .create_token_session_as(session_id, new, SessionKind::Browser)
                .await?)
        })
        .await
    }
}
