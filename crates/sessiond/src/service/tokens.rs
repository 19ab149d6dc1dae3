//! Token sessions on [`SessionService`]: access + refresh pairs bound to a session row, stateful
//! access validation, and refresh rotation with reuse detection (docs/DESIGN.md, "Refresh
//! rotation").
//!
//! # Rotation
//! Every refresh secret has a generation. The successor of a secret is derived, never stored:
//! `HMAC(refresh key, "sessiond/refresh/v1" | sid | generation | secret)`, with the key recorded
//! on the row's step. The row keeps SHA-256 of the current secret, its generation, whether the
//! current pair has been used, and the recent steps of the path to it; [`super::rotation`]
//! decides from those whether a presented token rotates, converges on the current pair, is a
//! lost response to re-issue, or is reuse. Writes are compare-and-swaps on the current hash;
//! a request that loses one decides again against the winner's row.

use std::sync::Arc;

use hmac::Mac;
use subtle::ConstantTimeEq;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::checks::{check_context, check_status, sha256};
use super::effects::{Effect, Refresh, Rejection};
use super::rotation::{self, Reuse, Rules, Verdict};
use super::{Credential, NewSession, RequestContext, SessionService, Validated};
use crate::clock::Timestamp;
use crate::error::{CredentialError, SessionError};
use crate::id::KeyId;
use crate::jose::JwsError;
use crate::keys::{Key, KeyError, KeyPurpose};
use crate::secret::Secret;
use crate::session::{
    RefreshState, RefreshStep, RevokeReason, Session, SessionKind, SessionRecord,
};
use crate::store::{RefreshRotation, Revocation};
use crate::token::{self, Issue, TokenError, TokenKind, VerifiedToken};

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

/// The verdict about one of our tokens as the service reports it: expiry is its own code.
fn token_failure(e: TokenError) -> SessionError {
    match e {
        TokenError::Jws(JwsError::Expired) => SessionError::TokenExpired,
        other => SessionError::InvalidCredential(CredentialError::Token(other)),
    }
}

/// How a token operation reads its session row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// As validation does: the store's row cache may answer.
    Cached,
    /// Past any cache: what the database holds now.
    Current,
}

/// Which session kinds a refresh-token operation accepts. Checked on the row before anything is
/// written, so a refusal changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Accept {
    /// Token and browser sessions (`POST /v1/tokens/refresh`: a backend may proxy the browser
    /// flow and hold the browser session's refresh token itself).
    TokenSessions,
    /// Browser sessions only (`/auth/browser/*`: the refresh cookie of a `tokens` session has
    /// no business there).
    Browser,
}

impl Accept {
    fn allows(self, kind: SessionKind) -> bool {
        match self {
            Accept::TokenSessions => matches!(kind, SessionKind::Tokens | SessionKind::Browser),
            Accept::Browser => kind == SessionKind::Browser,
        }
    }
}

impl SessionService {
    /// Verifies one of our tokens of `kind` (signature under its `kid`'s key, claims, time); an
    /// outage of the key ring is an outage, a refusal a verdict.
    ///
    /// Access tokens go through the verified-token cache (docs/DESIGN.md §15.1): a token verified
    /// before (same SHA-256 over all its bytes, signature included) skips the signature and the
    /// claims, which depend on nothing but those bytes and the key's material; the key's status
    /// and the time are checked again on every hit. Only tokens that passed are kept. Refresh
    /// tokens are never cached (each one is presented about once).
    pub(super) async fn verify_token(
        &self,
        kind: TokenKind,
        token: &str,
        now: Timestamp,
    ) -> Result<(VerifiedToken, Arc<Key>), SessionError> {
        let policy = &self.inner.config.tokens;
        let cache = &self.inner.verified;
        let digest = (kind == TokenKind::Access && cache.is_on()).then(|| sha256(token.as_bytes()));
        if let Some(digest) = &digest {
            if let Some(cached) = cache.get(digest) {
                match token::recheck(&self.inner.keys, policy, kind, &cached, now).await? {
                    Some(Ok(found)) => return Ok(found),
                    Some(Err(refused)) => {
                        cache.remove(digest);
                        return Err(token_failure(refused));
                    }
                    // The key stopped verifying: the full check gives the refusal its code.
                    None => cache.remove(digest),
                }
            }
        }
        let (verified, key) = token::verify(&self.inner.keys, policy, kind, token, now)
            .await?
            .map_err(token_failure)?;
        if let Some(digest) = digest {
            let size = verified.size_estimate();
            cache.insert(digest, Arc::new(verified.clone()), size);
        }
        Ok((verified, key))
    }

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
        let id = crate::id::SessionId::generate(self.inner.rng.as_ref());
        self.create_token_session_as(id, new, kind).await
    }

    /// [`SessionService::create_token_session`] with the id chosen before (a login code's).
    pub(super) async fn create_token_session_as(
        &self,
        id: crate::id::SessionId,
        new: NewSession,
        kind: SessionKind,
    ) -> Result<TokenSession, SessionError> {
        if !matches!(kind, SessionKind::Tokens | SessionKind::Browser) {
            return Err(SessionError::InvalidInput(
                "token sessions are of kind tokens or browser",
            ));
        }
        let policy = &self.inner.config.tokens;
        let (access_key, refresh_key) = self.pair_keys().await?;
        let session = self.new_session_row_as(
            id,
            new,
            kind,
            policy.refresh_idle_ttl,
            policy.refresh_absolute_ttl,
        )?;
        let secret = self.new_token_secret();
        let refresh = RefreshState {
            hash: sha256(secret.expose().as_bytes()),
            generation: 0,
            used: false,
            chain: Vec::new(),
        };
        let now = session.created_at;
        let tokens = self.pair(&session, &access_key, &refresh_key, &secret, 0, now)?;
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
        generation: u64,
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
            Issue {
                jti: &jti,
                generation,
                now,
                exp: access_exp,
            },
        )
        .map_err(keys_failed)?;
        let refresh_token = token::issue(
            refresh_key,
            policy,
            TokenKind::Refresh,
            session,
            Issue {
                jti: secret.expose(),
                generation,
                now,
                exp: refresh_exp,
            },
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
    /// the session's expiries. The first validation of an access token of the session's current
    /// pair records that the pair is in use (one write per pair, not per validation): from then
    /// on, the pair's predecessor outside the grace window is reuse, not a lost response.
    ///
    /// # Errors
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`], the session's status,
    /// binding errors, or [`SessionError::Store`].
    pub async fn validate_access_token(
        &self,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Validated, SessionError> {
        self.settle(ctx.ip, async {
            check_context(ctx)?;
            let now = self.inner.clock.now();
            let (claims, _key) = self.verify_token(TokenKind::Access, token, now).await?;
            let record = self
                .token_row(&claims, Accept::TokenSessions, Read::Cached)
                .await?;
            check_status(&record.session, now)
                .and_then(|()| self.check_binding(&record.session, ctx))
                .map_err(|e| Rejection::about(e, &record.session))?;
            if let (Some(state), Some(generation)) = (&record.refresh, claims.generation) {
                if generation == state.generation && !state.used {
                    self.mark_used(&record.session.id, generation).await;
                }
            }
            let deadline = record.session.deadline().min(claims.expires_at);
            Ok(Validated {
                session: record.session,
                deadline,
                credential: Credential::AccessToken {
                    key_id: claims.key_id,
                    expires_at: claims.expires_at,
                },
            })
        })
        .await
    }

    /// Records the first use of the current pair. A failed write is logged, not surfaced: the
    /// credential was checked against a row that was read; what is lost is only that a
    /// rotated-out predecessor may still be taken for a lost response until the pair is used
    /// again (and its holder's next refresh then reveals any second party).
    async fn mark_used(&self, id: &crate::id::SessionId, generation: u64) {
        if let Err(e) = self.inner.backend.mark_refresh_used(id, generation).await {
            tracing::warn!(session_id = %id, error = %e, "could not record first use of a token pair");
        }
    }

    /// The row a verified token points at, checked to belong to it and to be of a kind
    /// `accept` allows.
    pub(super) async fn token_row(
        &self,
        claims: &VerifiedToken,
        accept: Accept,
        read: Read,
    ) -> Result<SessionRecord, Rejection> {
        let record = match read {
            Read::Cached => self.row(&claims.session_id).await?,
            Read::Current => self
                .inner
                .backend
                .session_current(&claims.session_id)
                .await?
                .ok_or(SessionError::NotFound)?,
        };
        let refusal = if !accept.allows(record.session.kind) {
            CredentialError::WrongKind
        } else if record.session.user_id.as_str() != claims.subject {
            CredentialError::SubjectMismatch
        } else {
            return Ok(record);
        };
        Err(Rejection::about(
            SessionError::InvalidCredential(refusal),
            &record.session,
        ))
    }

    /// Exchanges the refresh token of a `tokens` or `browser` session for a new pair, rotating
    /// the refresh secret by the rules of the module documentation: concurrent and recent
    /// refreshes converge on one pair, a lost response is re-issued, reuse revokes the session.
    /// Refreshing slides the session's idle window; it never extends the absolute lifetime.
    ///
    /// # Errors
    /// [`SessionError::RefreshTokenReused`] (the session is now revoked),
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`], the session's status,
    /// binding errors (a bound session refreshed without the bound facts fails closed),
    /// [`SessionError::InvalidInput`] for an oversize `ip`/`user_agent`, or
    /// [`SessionError::Store`]. Every refusal happens before anything is written.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<TokenSession, SessionError> {
        self.refresh_accepting(refresh_token, ctx, Accept::TokenSessions)
            .await
    }

    /// [`SessionService::refresh`] for the browser's refresh endpoint: only `browser` sessions;
    /// the refresh token of any other kind is refused before anything is written.
    ///
    /// # Errors
    /// As [`SessionService::refresh`].
    pub async fn refresh_browser(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<TokenSession, SessionError> {
        self.refresh_accepting(refresh_token, ctx, Accept::Browser)
            .await
    }

    async fn refresh_accepting(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
        accept: Accept,
    ) -> Result<TokenSession, SessionError> {
        self.settle(ctx.ip, async {
            check_context(ctx)?;
            let policy = &self.inner.config.tokens;
            let rules = Rules {
                grace: policy.refresh_grace,
                lost_response_window: policy.lost_response_window,
            };
            let now = self.inner.clock.now();
            let (claims, signing_key) = self
                .verify_token(TokenKind::Refresh, refresh_token, now)
                .await?;
            let presented_hash = sha256(claims.jti.expose().as_bytes());
            let mut first_look = None;
            // A lost compare-and-swap decides once more against the winner's row, and that second
            // decision never writes (the token is no longer current, and a step that rotated it
            // out now exists); the third pass is a margin that is never reached in practice.
            // The first pass may decide on a cached copy of the row, which may predate a
            // change made on another node whose invalidation is on its way (docs/DESIGN.md
            // §15.5): if its swap loses, the three passes above follow on the row as the
            // database holds it.
            for pass in 0..4 {
                let read = if pass == 0 {
                    Read::Cached
                } else {
                    Read::Current
                };
                let record = self.token_row(&claims, accept, read).await?;
                check_status(&record.session, now)
                    .and_then(|()| self.check_binding(&record.session, ctx))
                    .map_err(|e| Rejection::about(e, &record.session))?;
                let SessionRecord {
                    session, refresh, ..
                } = record;
                let Some(state) = refresh else {
                    let wrong = SessionError::InvalidCredential(CredentialError::WrongKind);
                    return Err(Rejection::about(wrong, &session));
                };
                let is_current = ct_eq(&presented_hash, &state.hash);
                // A token from before generations were named is recognised only as the current one.
                let presented = match claims.generation {
                    Some(g) => g,
                    None if is_current => state.generation,
                    None => u64::MAX,
                };
                let verdict =
                    rotation::decide(rules, &state, presented, is_current, now, first_look);
                match verdict {
                    Verdict::Rotate | Verdict::Reissue => {
                        let reissue = verdict == Verdict::Reissue;
                        let generation = state.generation.saturating_add(1);
                        let next =
                            successor(&signing_key, &session, generation, claims.jti.expose())?;
                        let next_hash = sha256(next.expose().as_bytes());
                        let step = rotation::step(generation, presented, now, signing_key.id());
                        let chain =
                            rotation::next_chain(&state.chain, step, reissue, rules.grace, now);
                        let idle = now.saturating_add(policy.refresh_idle_ttl);
                        let swap = RefreshRotation {
                            id: &session.id,
                            expected_hash: &state.hash,
                            only_if_unused: reissue,
                            new_hash: &next_hash,
                            generation,
                            chain: &chain,
                            now,
                            idle_expires_at: idle,
                        };
                        if self.inner.backend.rotate_refresh(swap).await? {
                            let mut session = session;
                            session.last_seen_at = now;
                            session.idle_expires_at = idle.min(session.absolute_expires_at);
                            let how = if reissue {
                                Refresh::Reissued
                            } else {
                                Refresh::Rotated
                            };
                            return Ok(self
                                .refreshed(session, how, ctx, &next, generation, now)
                                .await?);
                        }
                        if first_look.is_none() {
                            first_look = Some(
                                rotation::rotated_out_by(&state.chain, presented)
                                    .and_then(|i| state.chain.get(i))
                                    .map(|s| s.generation),
                            );
                        }
                    }
                    Verdict::Converge { from } => {
                        let steps = state.chain.get(from..).unwrap_or_default();
                        let current = self
                            .derive_along(&session, claims.jti.expose(), steps)
                            .await?;
                        if !ct_eq(&sha256(current.expose().as_bytes()), &state.hash) {
                            // Signed by us, named a generation on the path, yet does not lead to
                            // the current secret: not a predecessor we issued.
                            return Err(self.refresh_reused(session, Reuse::NotOnChain, now).await);
                        }
                        let generation = state.generation;
                        return Ok(self
                            .refreshed(session, Refresh::Converged, ctx, &current, generation, now)
                            .await?);
                    }
                    Verdict::Reused(why) => {
                        return Err(self.refresh_reused(session, why, now).await)
                    }
                }
            }
            Err(SessionError::Store(crate::store::StoreError::Backend(
                "refresh rotation did not settle after three compare-and-swaps on the current row"
                    .into(),
            ))
            .into())
        })
        .await
    }

    /// Answers a refresh with the pair of `secret` and applies its effects.
    async fn refreshed(
        &self,
        session: Session,
        how: Refresh,
        ctx: &RequestContext<'_>,
        secret: &Secret<String>,
        generation: u64,
        now: Timestamp,
    ) -> Result<TokenSession, SessionError> {
        let effect = Effect::Refreshed {
            session: session.clone(),
            how,
            ip: ctx.ip.map(str::to_owned),
        };
        self.apply(now, vec![effect]).await;
        self.issue_pair(session, secret, generation, now).await
    }

    /// Walks `steps` forward from `secret`, deriving each step's secret under its recorded key.
    async fn derive_along(
        &self,
        session: &Session,
        secret: &str,
        steps: &[RefreshStep],
    ) -> Result<Secret<String>, SessionError> {
        let mut current = Secret::new(secret.to_owned());
        for step in steps {
            // A step inside the grace window was derived moments ago: its key must still verify.
            let key = self
                .inner
                .keys
                .verifier(&step.key_id, KeyPurpose::Refresh)
                .await?
                .map_err(|_| SessionError::Keys(KeyError::NoActiveKey(KeyPurpose::Refresh)))?;
            current = successor(&key, session, step.generation, current.expose())?;
        }
        Ok(current)
    }

    async fn issue_pair(
        &self,
        session: Session,
        secret: &Secret<String>,
        generation: u64,
        now: Timestamp,
    ) -> Result<TokenSession, SessionError> {
        let (access_key, refresh_key) = self.pair_keys().await?;
        let tokens = self.pair(&session, &access_key, &refresh_key, secret, generation, now)?;
        Ok(TokenSession { session, tokens })
    }

    /// The active access and refresh keys, which sign a new pair.
    async fn pair_keys(&self) -> Result<(Arc<Key>, Arc<Key>), SessionError> {
        let keys = &self.inner.keys;
        let access = keys.active(KeyPurpose::Access).await;
        let refresh = keys.active(KeyPurpose::Refresh).await;
        Ok((
            access.map_err(SessionError::Keys)?,
            refresh.map_err(SessionError::Keys)?,
        ))
    }

    /// Revokes the session of a presented refresh token that counts as reuse, and reports it.
    async fn refresh_reused(&self, session: Session, why: Reuse, now: Timestamp) -> Rejection {
        let reason = RevokeReason::refresh_token_reused();
        match self
            .inner
            .backend
            .revoke_session(&session.id, now, &reason)
            .await
        {
            Ok(Revocation::Revoked(owner)) => {
                let effects = vec![
                    Effect::ReuseDetected {
                        session: session.clone(),
                        why: why.as_str(),
                    },
                    Effect::Revoked { owner, reason },
                ];
                self.apply(now, effects).await;
                Rejection::about(SessionError::RefreshTokenReused, &session)
            }
            Ok(_) => Rejection::about(SessionError::RefreshTokenReused, &session),
            Err(e) => Rejection::from(e),
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

    /// The browser's logout with its refresh cookie: verifies the token (signature, type,
    /// issuer, audience, time) and revokes its session, which must be a `browser` session (any
    /// other kind is refused and nothing changes). Any generation of the session's refresh token
    /// is accepted, and so is a request whose IP or User-Agent no longer matches a bound session
    /// (a person logging out from a new network must be logged out); the mismatch is audited.
    ///
    /// # Errors
    /// [`SessionError::InvalidCredential`], [`SessionError::TokenExpired`],
    /// [`SessionError::NotFound`], [`SessionError::Store`].
    pub async fn logout_browser(
        &self,
        refresh_token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<Session, SessionError> {
        self.settle(ctx.ip, async {
            let now = self.inner.clock.now();
            let (claims, _key) = self
                .verify_token(TokenKind::Refresh, refresh_token, now)
                .await?;
            let record = self
                .token_row(&claims, Accept::Browser, Read::Cached)
                .await?;
            if let Err(mismatch) = self.check_binding(&record.session, ctx) {
                let effect = Effect::CheckOverridden {
                    reason: mismatch.reason(),
                    session: record.session.clone(),
                    ip: ctx.ip.map(str::to_owned),
                };
                self.apply(now, vec![effect]).await;
            }
            self.revoke(&record.session.id, &RevokeReason::logout())
                .await?;
            Ok(record.session)
        })
        .await
    }

    /// The public keys that verify access tokens now, as a JWK Set (active and retained EdDSA
    /// keys; HS256 keys are never published).
    pub async fn jwks(&self) -> serde_json::Value {
        let keys: Vec<Arc<Key>> = self.inner.keys.verifying_keys(KeyPurpose::Access).await;
        crate::jose::jwks(&keys)
    }

    /// The ids of the keys [`SessionService::jwks`] publishes: the access-token keys that verify
    /// now. A key missing here has been retired (or collected): its tokens are refused.
    pub async fn access_key_ids(&self) -> Vec<KeyId> {
        let keys: Vec<Arc<Key>> = self.inner.keys.verifying_keys(KeyPurpose::Access).await;
        keys.iter().map(|k| k.id().clone()).collect()
    }
}
