//! What every session kind shares on [`SessionService`]: new rows, revocation (one, all, all but
//! one), reads, key rotation, garbage collection (docs/DESIGN.md §5.3, §5.7, §5.8).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::checks::check_client;
use super::effects::Effect;
use super::types::{MAX_CLAIMS_BYTES, RESERVED_CLAIMS};
use super::{GcReport, NewSession, SessionService};
use crate::audit::AuditQuery;
use crate::audit::AuditRecord;
use crate::error::SessionError;
use crate::id::{KeyId, SessionId, Tenant, UserId};
use crate::keys::{
    KeyAlgorithm, KeyError, KeyInfo, KeyOrigin, KeyPurpose, KeyRetirement, OperatorKeyChange,
};
use crate::random;
use crate::secret::Secret;
use crate::session::{RevokeReason, Session, SessionKind, SessionRecord};
use crate::store::{Revocation, RevokeOutcome, StoreError};

impl SessionService {
    /// Revokes one session. Idempotent: revoking a revoked session changes nothing.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke(
        &self,
        id: &SessionId,
        reason: &RevokeReason,
    ) -> Result<RevokeOutcome, SessionError> {
        let now = self.inner.clock.now();
        // One round trip: the revoking statement returns whose session it was.
        Ok(
            match self.inner.backend.revoke_session(id, now, reason).await? {
                Revocation::Revoked(owner) => {
                    let effect = Effect::Revoked {
                        owner,
                        reason: reason.clone(),
                    };
                    self.apply(now, vec![effect]).await;
                    RevokeOutcome::Revoked
                }
                Revocation::AlreadyRevoked => RevokeOutcome::AlreadyRevoked,
                // `Revocation` is non-exhaustive: anything else changed nothing we know of.
                _ => RevokeOutcome::NotFound,
            },
        )
    }

    /// Revokes every active session of `user` (in `tenant`, or all tenants), except `except`
    /// ("log out other devices"). Returns the revoked ids.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn revoke_user(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        except: Option<&SessionId>,
        reason: &RevokeReason,
    ) -> Result<Vec<SessionId>, SessionError> {
        let now = self.inner.clock.now();
        let revoked = self
            .inner
            .backend
            .revoke_user_sessions(user, tenant, except, now, reason)
            .await?;
        let ids = revoked.iter().map(|o| o.id.clone()).collect();
        let effects = revoked
            .into_iter()
            .map(|owner| Effect::Revoked {
                owner,
                reason: reason.clone(),
            })
            .collect();
        self.apply(now, effects).await;
        Ok(ids)
    }

    /// The active sessions of `user`, oldest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<Session>, SessionError> {
        Ok(self
            .inner
            .backend
            .user_sessions(user, tenant, self.inner.clock.now())
            .await?)
    }

    /// The stored row of `id`, or [`SessionError::NotFound`].
    pub(crate) async fn row(&self, id: &SessionId) -> Result<SessionRecord, SessionError> {
        self.inner
            .backend
            .session(id)
            .await?
            .ok_or(SessionError::NotFound)
    }

    /// A session by id, revoked and expired ones included.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn session(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(self.inner.backend.session(id).await?.map(|r| r.session))
    }

    /// Rotates the key of `purpose` and audits it.
    ///
    /// # Errors
    /// [`SessionError::Keys`].
    pub async fn rotate_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, SessionError> {
        let info = self
            .inner
            .keys
            .rotate(purpose)
            .await
            .map_err(SessionError::Keys)?;
        let effect = Effect::KeyRotated {
            key_id: info.id.clone(),
            purpose,
        };
        self.apply(self.now(), vec![effect]).await;
        Ok(info)
    }

    /// Brings the active key of `purpose` in line with the operator's configuration
    /// (`configured`: the material the operator supplies, or `None`) and audits what changed:
    /// `key_rotated` for a new active key, `key_retired` (`operator_replaced`,
    /// `operator_withdrawn`) for an operator key it replaced. See
    /// [`crate::KeyRing::reconcile_operator_key`] (docs/DESIGN.md §4.5). A server runs it at every
    /// start, after the service is built.
    ///
    /// # Errors
    /// The ring's: [`KeyError::OperatorKeyRetired`] means the configured material was retired
    /// and the server must refuse to start.
    pub async fn reconcile_operator_key(
        &self,
        purpose: KeyPurpose,
        configured: Option<(KeyAlgorithm, &Secret<Vec<u8>>)>,
    ) -> Result<OperatorKeyChange, KeyError> {
        let change = self
            .inner
            .keys
            .reconcile_operator_key(purpose, configured)
            .await?;
        let mut effects = Vec::new();
        match &change {
            OperatorKeyChange::Adopted { key, retired } => {
                effects.push(Effect::KeyRotated {
                    key_id: key.id.clone(),
                    purpose,
                });
                if retired.origin == KeyOrigin::Operator {
                    effects.push(Effect::KeyRetired {
                        key_id: retired.id.clone(),
                        why: "operator_replaced",
                    });
                }
            }
            OperatorKeyChange::Withdrawn { key, retired } => {
                effects.push(Effect::KeyRotated {
                    key_id: key.id.clone(),
                    purpose,
                });
                effects.push(Effect::KeyRetired {
                    key_id: retired.id.clone(),
                    why: "operator_withdrawn",
                });
            }
            _ => {}
        }
        self.apply(self.now(), effects).await;
        Ok(change)
    }

    /// Ends key `id` at once (emergency) and audits it: `key_retired` (`retired`) for the key,
    /// `key_rotated` for the key that replaced it when it was the active one. See
    /// [`crate::KeyRing::retire`] (docs/DESIGN.md §4.6) for when other nodes stop using it.
    ///
    /// # Errors
    /// [`KeyError::NoSuchKey`], [`KeyError::Store`]; nothing changes then.
    pub async fn retire_key(&self, id: &KeyId) -> Result<KeyRetirement, KeyError> {
        let retirement = self.inner.keys.retire(id).await?;
        if retirement.ended {
            let mut effects = vec![Effect::KeyRetired {
                key_id: id.clone(),
                why: "retired",
            }];
            if let Some(new) = &retirement.replacement {
                effects.push(Effect::KeyRotated {
                    key_id: new.id.clone(),
                    purpose: new.purpose,
                });
            }
            self.apply(self.now(), effects).await;
        }
        Ok(retirement)
    }

    /// Deletes expired sessions and retired keys past retention, in batches of
    /// [`super::ServiceConfig::gc_batch`], yielding between batches so validations are never
    /// stalled.
    ///
    /// # Errors
    /// [`SessionError::Store`]; what was deleted before the failure stays deleted.
    pub async fn gc(&self) -> Result<GcReport, SessionError> {
        let batch = self.inner.config.gc_batch.max(1);
        let now = self.inner.clock.now();
        let backend = &self.inner.backend;
        let report = GcReport {
            sessions: drain(batch, || backend.delete_expired_sessions(now, batch)).await?,
            keys: drain(batch, || backend.delete_expired_keys(now, batch)).await?,
            claims: drain(batch, || {
                self.inner.claims.delete_expired_claims(now, batch)
            })
            .await?,
        };
        if report != GcReport::default() {
            tracing::info!(
                sessions = report.sessions,
                keys = report.keys,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Audit records matching `query`, newest first.
    ///
    /// # Errors
    /// [`SessionError::Store`].
    pub async fn audit_records(
        &self,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, SessionError> {
        Ok(self.inner.backend.audit_records(query).await?)
    }

    pub(crate) fn new_token_secret(&self) -> Secret<String> {
        let bytes: [u8; 32] = random::bytes(self.inner.rng.as_ref());
        Secret::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The rules a new session's input must meet: client facts, no reserved claim names,
    /// claims within [`MAX_CLAIMS_BYTES`].
    pub(crate) fn check_new(new: &NewSession) -> Result<(), SessionError> {
        check_client(new.ip.as_deref(), new.user_agent.as_deref())?;
        if new
            .claims
            .keys()
            .any(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(SessionError::InvalidInput(
                "claims may not use a reserved claim name",
            ));
        }
        let claims_len = serde_json::to_vec(&new.claims)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if claims_len > MAX_CLAIMS_BYTES {
            return Err(SessionError::InvalidInput("claims exceed 4096 bytes"));
        }
        Ok(())
    }

    pub(crate) fn new_session_row(
        &self,
        new: NewSession,
        kind: SessionKind,
        idle_ttl: Duration,
        absolute_ttl: Duration,
    ) -> Result<Session, SessionError> {
        let id = SessionId::generate(self.inner.rng.as_ref());
        self.new_session_row_as(id, new, kind, idle_ttl, absolute_ttl)
    }

    /// [`SessionService::new_session_row`] with an id chosen before (a login code's).
    pub(crate) fn new_session_row_as(
        &self,
        id: SessionId,
        new: NewSession,
        kind: SessionKind,
        idle_ttl: Duration,
        absolute_ttl: Duration,
    ) -> Result<Session, SessionError> {
        Self::check_new(&new)?;
        let now = self.inner.clock.now();
        let absolute = now.saturating_add(absolute_ttl);
        Ok(Session {
            id,
            user_id: new.user_id,
            tenant: new.tenant,
            kind,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.saturating_add(idle_ttl).min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoke_reason: None,
            ip: new.ip,
            user_agent: new.user_agent,
            claims: new.claims,
        })
    }

    /// Stores a new session (evicting the user's oldest beyond `max_per_user` in the same step)
    /// and applies its effects.
    pub(crate) async fn insert(&self, record: &SessionRecord) -> Result<(), SessionError> {
        let max = match self.inner.config.sessions.max_per_user {
            0 => None,
            n => Some(n),
        };
        let now = record.session.created_at;
        let evicted = self.inner.backend.create_session(record, max, now).await?;
        let mut effects = vec![Effect::Created {
            session: record.session.clone(),
            key_id: record.key_id.clone(),
        }];
        effects.extend(evicted.into_iter().map(|owner| Effect::Revoked {
            owner,
            reason: RevokeReason::evicted(),
        }));
        self.apply(now, effects).await;
        Ok(())
    }
}

/// Runs `delete` (one batch of at most `batch` rows) until a batch comes back short, yielding
/// between batches; returns how many rows were deleted in all.
async fn drain<F, Fut>(batch: u32, mut delete: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?;
        total += n;
        tokio::task::yield_now().await;
        if n < u64::from(batch) {
            return Ok(total);
        }
    }
}
