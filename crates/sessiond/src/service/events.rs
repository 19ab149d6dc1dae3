//! Publishing lifecycle events from [`SessionService`] (see [`crate::events`]).
//!
//! Every publish happens after the change it describes is committed, so a watcher that
//! subscribed before reading the row either sees the change in the row or receives the event.
//! A failed publish is logged and counted, never returned: the revocation or rotation has
//! already happened and must not be reported as failed; watchers still notice it at their next
//! store re-check.

use std::collections::HashMap;
use std::sync::Arc;

use super::SessionService;
use crate::clock::Timestamp;
use crate::events::{EventBus, SessionEvent};
use crate::id::{SessionId, Tenant, UserId};
use crate::store::StoreError;

/// The tenants of sessions about to be revoked together, for their events.
#[derive(Debug)]
pub(crate) enum Tenants {
    /// All of them are in this tenant.
    One(Tenant),
    /// Looked up per session (a revocation across tenants).
    ById(HashMap<SessionId, Tenant>),
}

impl SessionService {
    /// The bus lifecycle events are published on; subscribe to it to follow every session
    /// (the server's SSE streams do).
    pub fn events(&self) -> &Arc<dyn EventBus> {
        &self.inner.events
    }

    /// Publishes `event`, logging and counting a failure.
    pub(crate) async fn publish(&self, event: SessionEvent) {
        let kind = event.kind;
        let session_id = event.session_id.clone();
        match self.inner.events.publish(event).await {
            Ok(()) => self.inner.metrics.event_published(),
            Err(e) => {
                self.inner.metrics.event_publish_error();
                tracing::error!(%kind, %session_id, error = %e, "event publish failed");
            }
        }
    }

    /// The tenants of `user`'s sessions a user-wide revocation is about to revoke: `tenant`
    /// when given, else the active sessions' tenants read now (before the revocation, so a
    /// failure leaves nothing changed).
    pub(crate) async fn tenants_before_revoke(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        now: Timestamp,
    ) -> Result<Tenants, StoreError> {
        if let Some(t) = tenant {
            return Ok(Tenants::One(t.clone()));
        }
        let sessions = self.inner.backend.user_sessions(user, None, now).await?;
        Ok(Tenants::ById(
            sessions.into_iter().map(|s| (s.id, s.tenant)).collect(),
        ))
    }

    /// The tenant of a session that was just revoked, read back for its event.
    pub(crate) async fn tenant_of(&self, id: &SessionId) -> Option<Tenant> {
        match self.inner.backend.session(id).await {
            Ok(row) => row.map(|r| r.session.tenant),
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e, "could not read a revoked session's tenant for its event");
                None
            }
        }
    }
}
