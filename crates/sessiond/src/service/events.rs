//! Publishing lifecycle events from [`SessionService`] (see [`crate::events`]).
//!
//! Every publish happens after the change it describes is committed, so a watcher that
//! subscribed before reading the row either sees the change in the row or receives the event.
//! A failed publish is logged and counted, never returned: the revocation or rotation has
//! already happened and must not be reported as failed; watchers still notice it at their next
//! store re-check.

use std::sync::Arc;

use super::SessionService;
use crate::clock::Timestamp;
use crate::events::{EventBus, SessionEvent};
use crate::session::{RevokeReason, Session};
use crate::store::SessionOwner;

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

    /// Publishes a `revoked` event for `session`.
    pub(crate) async fn publish_session_revoked(
        &self,
        session: &Session,
        reason: &RevokeReason,
        at: Timestamp,
    ) {
        self.publish(SessionEvent::revoked(
            session.id.clone(),
            session.user_id.clone(),
            Some(session.tenant.clone()),
            reason,
            at,
        ))
        .await;
    }

    /// Publishes a `revoked` event for each of `revoked`, as the revoking statement returned
    /// them.
    pub(crate) async fn publish_revoked(
        &self,
        revoked: &[SessionOwner],
        reason: &RevokeReason,
        at: Timestamp,
    ) {
        for owner in revoked {
            self.publish(SessionEvent::revoked(
                owner.id.clone(),
                owner.user_id.clone(),
                Some(owner.tenant.clone()),
                reason,
                at,
            ))
            .await;
        }
    }
}
