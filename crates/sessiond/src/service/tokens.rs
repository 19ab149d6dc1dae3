//! Token sessions on [`SessionService`]: access + refresh pairs bound to a session row, stateful
//! access validation, and refresh rotation with reuse detection (DESIGN §3.3).
//!
//! # Rotation
//! The row stores SHA-256 of the current refresh secret, of the previous one, when it rotated,
//! and the generation. A refresh presenting the current secret derives the successor
//! deterministically, `HMAC(refresh key, "sessiond/refresh/v1" | sid | generation | secret)`,
//! and swaps the stored hash with a compare-and-swap. Concurrent refreshes of the same token lose
//! the swap, find their secret as the *previous* one inside the grace window, derive the very
//! same successor and return it: two tabs or a retry never fork the session. The previous secret
//! after the grace window, or any older one at any time, is presumed stolen: the whole session
//! is revoked (`refresh_token_reused`).

use std::sync::Arc;

use hmac::Mac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Credential, NewSession, RequestContext, SessionService, Validated};
use crate::audit::{AuditEvent, AuditRecord};
use crate::clock::{is_expired, Timestamp};
use crate::error::{CredentialError, SessionError};
use crate::events::SessionEvent;
use crate::jose::JwsError;
use crate::keys::{Key, KeyError, KeyPurpose};
use crate::secret::Secret;
use crate::session::{RefreshState, RevokeReason, Session, SessionKind, SessionRecord};
use crate::store::{RefreshRotation, RevokeOutcome};
use crate::token::{self, TokenError, TokenKind, VerifiedToken};

/// An access + refresh pair. Both values are bearer credentials.
#[derive(Debug)]
#[non_exhaustive]
pub struct TokenPair {
    /// The access JWT.
    pub access_token: Secret<String>,
    /// The refresh JWT (for browser sessions, it belongs only in the HttpOnly cookie).
    pub refresh_token: Secret<String>,
    /// The access token's `exp`.
    pub access_expires_at: Timestamp,
    /// The refresh token's `exp` (the session's idle or absolute end, whichever is first).
    pub refresh_expires_at: Timestamp,
}

/// A token session and its current pair.
#[derive(Debug)]
#[non_exhaustive]
pub struct TokenSession {
    /// The session row (public part).
    pub session: Session,
    /// The pair.
    pub tokens: TokenPair,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.ct_eq(b))
}

/// The successor of `secret` at `generation`, keyed by the key that signed the presented token.
fn successor(
    key: &Key,
    session: &Session,
    generation: u64,
    secret: &str,
) -> Result<Secret<String>, SessionError> {
    let mut mac = key
        .hmac()
        .ok_or(SessionError::Keys(KeyError::Malformed))?
        .clone();
    mac.update(b"sessiond/refresh/v1\0");
    mac.update(session.id.as_str().as_bytes());
    mac.update(&generation.to_be_bytes());
    mac.update(secret.as_bytes());
    Ok(Secret::new(
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
    ))
}

fn token_failure(e: TokenError) -> SessionError {
    match e {
        TokenError::Jws(JwsError::Expired) => SessionError::TokenExpired,
        TokenError::Key(KeyError::Store(s)) => SessionError::Store(s),
        other => SessionError::InvalidCredential(CredentialError::Token(other)),
    }
}

impl SessionService {
    /// Creates a token session (`kind` [`SessionKind::Tokens`] or [`SessionKind::Browser`]) and
    /// its first pair. The row keeps only SHA-256 of the refresh secret.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for another kind or bad input, [`SessionError::Keys`],
    /// [`SessionError::Store`].
    pub async fn create_token_session(
        &self,
        new: NewSession,
        kind: SessionKind,
    ) -> Result<TokenSession, SessionError> {
        if !matches!(kind, SessionKind::Tokens | SessionKind::Browser) {
            return Err(SessionError::InvalidInput(
                "token sessions are of kind tokens or browser",
            ));
        }
        let policy = &self.inner.config.tokens;
        let refresh_key = self
            .inner
            .keys
            .active(KeyPurpose::Refresh)
            .await
            .map_err(SessionError::Keys)?;
        let access_key = self
            .inner
            .keys
            .active(KeyPurpose::Access)
            .await
            .map_err(SessionError::Keys)?;
        let session = self.new_session_row(
            new,
            kind,
            policy.refresh_idle_ttl,
            policy.refresh_absolute_ttl,
        )?;
        let secret = self.new_token_secret();
        let refresh = RefreshState {
            hash: sha256(secret.expose().as_bytes()),
            previous_hash: None,
            rotated_at: None,
            generation: 0,
        };
        let now = session.created_at;
        let tokens = self.pair(&session, &access_key, &refresh_key, &secret, now)?;
        let record = SessionRecord::new(session, refresh_key.id().clone(), None, Some(refresh));
        self.insert(&record).await?;
        Ok(TokenSession {
            session: record.session,
            tokens,
        })
    }

    fn pair(
        &self,
        session: &Session,
        access_key: &Key,
        refresh_key: &Key,
        secret: &Secret<String>,
        now: Timestamp,
    ) -> Result<TokenPair, SessionError> {
        let policy = &self.inner.config.tokens;
        let keys_failed = |_| SessionError::Keys(KeyError::Malformed);
        let access_exp = now
            .saturating_add(policy.access_ttl)
            .min(session.absolute_expires_at);
        let refresh_exp = session.deadline();
        // 128 random bits: unique per access token (one-time claims key on it).
        let jti = URL_SAFE_NO_PAD.encode(crate::random::bytes::<16>(self.inner.rng.as_ref()));
        let access_token = token::issue(
            access_key,
            policy,
            TokenKind::Access,
            session,
            &jti,
            now,
            access_exp,
        )
        .map_err(keys_failed)?;
        let refresh_token = token::issue(
            refresh_key,
            policy,
            TokenKind::Refresh,
            session,
            secret.expose(),
            now,
            refresh_exp,
        )
        .map_err(keys_failed)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            access_expires_at: Timestamp::from_unix_seconds(access_exp.unix_seconds()),
            refresh_expires_at: Timestamp::from_unix_seconds(refresh_exp.unix_seconds()),
        })
    }

    /// Validates an access token: signature with the `kid`'s access key (algorithm pinned),
    /// `typ`, `iss`, `aud`, `exp`/`nbf` with leeway, then the session row — a revoked session's
    /// access tokens stop working at once. The deadline is the earliest of the token's `exp` and
    /// the session's expiries.
    ///
    /// # Errors
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`], the session's status,
    /// binding errors, or [`SessionError::Store`].
    pub async fn validate_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, SessionError> {
        let mut known: Option<Session> = None;
        let result = self.validate_access_inner(token, ctx, &mut known).await;
        if let Err(e) = &result {
            self.record_failure(e, known.as_ref(), ctx.ip).await;
        }
        result
    }

    async fn validate_access_inner(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
        known: &mut Option<Session>,
    ) -> Result<Validated, SessionError> {
        let now = self.inner.clock.now();
        let policy = &self.inner.config.tokens;
        let (claims, _key) = token::verify(&self.inner.keys, policy, TokenKind::Access, token, now)
            .await
            .map_err(token_failure)?;
        let record = self.token_row(&claims, known).await?;
        self.check_status(&record.session, now)?;
        self.check_binding(&record.session, ctx)?;
        let deadline = record.session.deadline().min(claims.expires_at);
        Ok(Validated {
            session: record.session,
            deadline,
            credential: Credential::AccessToken {
                key_id: claims.key_id,
                expires_at: claims.expires_at,
            },
        })
    }

    /// The row a verified token points at, checked to belong to it.
    async fn token_row(
        &self,
        claims: &VerifiedToken,
        known: &mut Option<Session>,
    ) -> Result<SessionRecord, SessionError> {
        let record = self
            .inner
            .backend
            .session(&claims.session_id)
            .await?
            .ok_or(SessionError::NotFound)?;
        *known = Some(record.session.clone());
        if !matches!(
            record.session.kind,
            SessionKind::Tokens | SessionKind::Browser
        ) {
            return Err(SessionError::InvalidCredential(CredentialError::WrongKind));
        }
        if record.session.user_id.as_str() != claims.subject {
            return Err(SessionError::InvalidCredential(
                CredentialError::SubjectMismatch,
            ));
        }
        Ok(record)
    }

    /// Exchanges a refresh token for a new pair, rotating the refresh secret (see the module
    /// documentation for the concurrency and reuse rules). Refreshing slides the session's idle
    /// window; it never extends the absolute lifetime.
    ///
    /// # Errors
    /// [`SessionError::RefreshTokenReused`] (the session is now revoked),
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`], the session's status,
    /// binding errors, or [`SessionError::Store`].
    pub async fn refresh(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<TokenSession, SessionError> {
        let mut known: Option<Session> = None;
        let result = self.refresh_inner(refresh_token, ctx, &mut known).await;
        if let Err(e) = &result {
            self.record_failure(e, known.as_ref(), ctx.ip).await;
        }
        result
    }

    async fn refresh_inner(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
        known: &mut Option<Session>,
    ) -> Result<TokenSession, SessionError> {
        let policy = &self.inner.config.tokens;
        let now = self.inner.clock.now();
        let (claims, signing_key) = token::verify(
            &self.inner.keys,
            policy,
            TokenKind::Refresh,
            refresh_token,
            now,
        )
        .await
        .map_err(token_failure)?;
        let presented = sha256(claims.jti.expose().as_bytes());
        // Two passes at most: a lost compare-and-swap re-reads the row and lands in the
        // "previous secret" branch.
        for _ in 0..2 {
            let record = self.token_row(&claims, known).await?;
            self.check_status(&record.session, now)?;
            self.check_binding(&record.session, ctx)?;
            let state = record
                .refresh
                .as_ref()
                .ok_or(SessionError::InvalidCredential(CredentialError::WrongKind))?;
            let session = &record.session;

            if ct_eq(&presented, &state.hash) {
                let next = successor(
                    &signing_key,
                    session,
                    state.generation + 1,
                    claims.jti.expose(),
                )?;
                let next_hash = sha256(next.expose().as_bytes());
                let idle = now.saturating_add(policy.refresh_idle_ttl);
                let rotation = RefreshRotation {
                    id: &session.id,
                    expected_hash: &state.hash,
                    new_hash: &next_hash,
                    now,
                    idle_expires_at: idle,
                };
                if self.inner.backend.rotate_refresh(rotation).await? {
                    let mut session = record.session.clone();
                    session.last_seen_at = now;
                    session.idle_expires_at = idle.min(session.absolute_expires_at);
                    self.audit(
                        AuditRecord::new(now, AuditEvent::SessionRefreshed, "rotated")
                            .about(&session),
                    )
                    .await;
                    self.publish(SessionEvent::refreshed(&session, now)).await;
                    return self.issue_pair(session, &next, now).await;
                }
                continue;
            }

            let in_grace = state
                .previous_hash
                .as_ref()
                .is_some_and(|p| ct_eq(&presented, p))
                && state
                    .rotated_at
                    .is_some_and(|at| !is_expired(at.saturating_add(policy.refresh_grace), now));
            if in_grace {
                let next = successor(&signing_key, session, state.generation, claims.jti.expose())?;
                if ct_eq(&sha256(next.expose().as_bytes()), &state.hash) {
                    return self.issue_pair(record.session, &next, now).await;
                }
            }
            return Err(self.refresh_reused(session, now).await);
        }
        // Two lost swaps in a row: a third party rotated twice within this call. Treat the
        // presented token as an old generation.
        match known.clone() {
            Some(session) => Err(self.refresh_reused(&session, now).await),
            None => Err(SessionError::NotFound),
        }
    }

    async fn issue_pair(
        &self,
        session: Session,
        secret: &Secret<String>,
        now: Timestamp,
    ) -> Result<TokenSession, SessionError> {
        let access_key = self
            .inner
            .keys
            .active(KeyPurpose::Access)
            .await
            .map_err(SessionError::Keys)?;
        let refresh_key = self
            .inner
            .keys
            .active(KeyPurpose::Refresh)
            .await
            .map_err(SessionError::Keys)?;
        let tokens = self.pair(&session, &access_key, &refresh_key, secret, now)?;
        Ok(TokenSession { session, tokens })
    }

    /// Revokes the session of a presented old refresh token and reports the reuse.
    async fn refresh_reused(&self, session: &Session, now: Timestamp) -> SessionError {
        let reason = RevokeReason::refresh_token_reused();
        match self
            .inner
            .backend
            .revoke_session(&session.id, now, &reason)
            .await
        {
            Ok(RevokeOutcome::Revoked) => {
                self.inner.metrics.sessions_revoked(1);
                self.inner.metrics.refresh_reuse();
                tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reused: session revoked");
                self.audit(
                    AuditRecord::new(now, AuditEvent::RefreshReused, reason.as_str())
                        .about(session),
                )
                .await;
                self.audit(
                    AuditRecord::new(now, AuditEvent::SessionRevoked, reason.as_str())
                        .about(session),
                )
                .await;
                self.publish_session_revoked(session, &reason, now).await;
                SessionError::RefreshTokenReused
            }
            Ok(_) => SessionError::RefreshTokenReused,
            Err(e) => SessionError::Store(e),
        }
    }

    /// Logs out with an access token: validates it, then revokes its session (every token of
    /// the session stops working).
    ///
    /// # Errors
    /// As [`SessionService::validate_access_token`].
    pub async fn logout_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Session, SessionError> {
        let validated = self.validate_access_token(token, ctx).await?;
        self.revoke(&validated.session.id, &RevokeReason::logout())
            .await?;
        Ok(validated.session)
    }

    /// Logs out with a refresh token (the browser's logout): verifies it (signature, type,
    /// issuer, audience, time) and revokes its session. Any generation of the session's refresh
    /// token is accepted here: revoking is always the safe direction.
    ///
    /// # Errors
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`],
    /// [`SessionError::NotFound`], [`SessionError::Store`].
    pub async fn logout_refresh_token(&self, refresh_token: &str) -> Result<Session, SessionError> {
        let now = self.inner.clock.now();
        let policy = &self.inner.config.tokens;
        let (claims, _key) = token::verify(
            &self.inner.keys,
            policy,
            TokenKind::Refresh,
            refresh_token,
            now,
        )
        .await
        .map_err(token_failure)?;
        let mut known = None;
        let record = self.token_row(&claims, &mut known).await?;
        self.revoke(&record.session.id, &RevokeReason::logout())
            .await?;
        Ok(record.session)
    }

    /// The public keys that verify access tokens now, as a JWK Set (active and retained EdDSA
    /// keys; HS256 keys are never published).
    pub async fn jwks(&self) -> serde_json::Value {
        let keys: Vec<Arc<Key>> = self.inner.keys.verifying_keys(KeyPurpose::Access).await;
        crate::jose::jwks(&keys)
    }
}
