//! One-time claims on [`SessionService`] (docs/DESIGN.md §3.4): an id, or a JWT from a trusted issuer
//! (or from us), that works exactly once across every node.
//!
//! For a token, the claim is recorded only after every other check passed (signature, issuer,
//! audience, time), so a request that fails for another reason can be retried; the id is
//! (`iss`, `jti`), or SHA-256 of the decoded payload without a `jti` — never the token text,
//! which has many spellings. The record lives until the token's `exp` plus leeway.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::effects::Rejection;
use super::SessionService;
use crate::audit::{AuditEvent, AuditRecord};
use crate::clock::Timestamp;
use crate::error::{CredentialError, SessionError};
use crate::jose::foreign::{self, ForeignError, TrustedIssuer};
use crate::jose::{self, JwsError};
use crate::store::ClaimOutcome;
use crate::token::TokenKind;

/// The longest raw claim id accepted.
pub const MAX_CLAIM_ID_BYTES: usize = 256;

/// A token that was verified and claimed by this call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedToken {
    /// The issuer that vouched for it.
    pub issuer: String,
    /// Its `sub`, if any.
    pub subject: Option<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// Until when the claim is recorded (`exp` plus leeway).
    pub expires_at: Timestamp,
}

fn foreign_failure(e: ForeignError) -> SessionError {
    match e {
        ForeignError::Jws(JwsError::Expired) => SessionError::TokenExpired,
        other => SessionError::InvalidCredential(CredentialError::Foreign(other)),
    }
}

impl SessionService {
    /// Trusts `issuer` for [`SessionService::claim_token`], replacing any issuer of the same
    /// name (a refreshed JWK Set, say).
    pub fn set_trusted_issuer(&self, issuer: TrustedIssuer) {
        let mut issuers = match self.inner.issuers.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        issuers.insert(issuer.issuer().to_owned(), Arc::new(issuer));
    }

    /// The trusted issuer named `iss`, if configured.
    pub fn trusted_issuer(&self, iss: &str) -> Option<Arc<TrustedIssuer>> {
        let issuers = match self.inner.issuers.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        issuers.get(iss).cloned()
    }

    /// Claims a raw id until `expires_at`.
    ///
    /// # Errors
    /// [`SessionError::InvalidInput`] for an empty, oversize or control-character id;
    /// [`SessionError::Store`] when the claim store fails (nothing is decided then).
    pub async fn claim(
        &self,
        id: &str,
        expires_at: Timestamp,
    ) -> Result<ClaimOutcome, SessionError> {
        if id.is_empty() || id.len() > MAX_CLAIM_ID_BYTES || id.chars().any(char::is_control) {
            return Err(SessionError::InvalidInput(
                "claim id must be 1 to 256 bytes without control characters",
            ));
        }
        // Raw ids share the table with token claims; a prefix keeps the two spaces apart.
        let key = format!("id:{id}");
        Ok(self
            .inner
            .claims
            .claim(&key, expires_at, self.inner.clock.now())
            .await?)
    }

    /// Verifies a JWT from a trusted issuer (or one of our access tokens, whose session must be
    /// active, as for validation) and claims it once.
    ///
    /// # Errors
    /// [`SessionError::TokenAlreadyUsed`] when it was claimed before, [`SessionError::TokenExpired`],
    /// [`SessionError::InvalidCredential`] for any other verification failure (unknown issuer
    /// included), [`SessionError::Store`] when the claim store fails.
    pub async fn claim_token(&self, token: &str) -> Result<ClaimedToken, SessionError> {
        self.settle(None, async {
            self.claim_token_inner(token).await.map_err(Rejection::from)
        })
        .await
    }

    async fn claim_token_inner(&self, token: &str) -> Result<ClaimedToken, SessionError> {
        let now = self.inner.clock.now();
        // Which issuer? Read `iss` from the unverified payload only to choose the verifier; the
        // verifier then checks `iss` again under the signature.
        let compact = jose::parse_compact(token)
            .map_err(|e| SessionError::InvalidCredential(CredentialError::Foreign(e.into())))?;
        let iss = match serde_json::from_slice::<Value>(compact.payload()) {
            Ok(Value::Object(claims)) => match claims.get("iss") {
                Some(Value::String(iss)) => iss.clone(),
                _ => {
                    return Err(SessionError::InvalidCredential(
                        CredentialError::UnknownIssuer,
                    ))
                }
            },
            _ => {
                return Err(SessionError::InvalidCredential(CredentialError::Foreign(
                    ForeignError::PayloadNotObject,
                )))
            }
        };

        let claimed = if iss == self.inner.config.tokens.issuer {
            let policy = &self.inner.config.tokens;
            let (verified, _key) = self.verify_token(TokenKind::Access, token, now).await?;
            // Our own token is only as good as its session: a revoked or expired session's
            // tokens claim nothing, as they validate nothing.
            let record = self
                .token_row(
                    &verified,
                    super::tokens::Accept::TokenSessions,
                    super::tokens::Read::Cached,
                )
                .await
                .map_err(|rejection| rejection.error)?;
            super::checks::check_status(&record.session, now)?;
            let claims: Map<String, Value> =
                serde_json::from_slice(compact.payload()).unwrap_or_default();
            let id = foreign::claim_id(&iss, Some(verified.jti.expose()), compact.payload());
            let expires_at = verified.expires_at.saturating_add(policy.leeway);
            (
                id,
                ClaimedToken {
                    issuer: iss,
                    subject: Some(verified.subject),
                    claims,
                    expires_at,
                },
            )
        } else {
            let issuer = self
                .trusted_issuer(&iss)
                .ok_or(SessionError::InvalidCredential(
                    CredentialError::UnknownIssuer,
                ))?;
            let verified = issuer.verify(token, now).map_err(foreign_failure)?;
            let claimed = ClaimedToken {
                issuer: iss,
                subject: verified.subject().map(str::to_owned),
                claims: verified.claims().clone(),
                expires_at: verified.expires_at(),
            };
            (verified.claim_id().to_owned(), claimed)
        };
        let (id, claimed) = claimed;
        match self
            .inner
            .claims
            .claim(&format!("jwt:{id}"), claimed.expires_at, now)
            .await?
        {
            ClaimOutcome::Claimed => {
                let mut record = AuditRecord::new(now, AuditEvent::TokenClaimed, "claimed");
                record.user_id = claimed
                    .subject
                    .as_deref()
                    .and_then(|s| crate::UserId::new(s).ok());
                let effect = super::effects::Effect::TokenClaimed {
                    record: Box::new(record),
                };
                self.apply(now, vec![effect]).await;
                Ok(claimed)
            }
            ClaimOutcome::AlreadyUsed => Err(SessionError::TokenAlreadyUsed),
            ClaimOutcome::Expired => Err(SessionError::TokenExpired),
        }
    }
}
