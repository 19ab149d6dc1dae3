//! Publishing lifecycle events from [`SessionService`] (see [`crate::events`]).
//!
//! Every publish happens after the change it describes is committed, so a watcher that
//! subscribed before reading the row either sees the change in the row or receives the event.
//! A failed publish is logged and counted, never returned: the revocation or rotation has
//! already happened and must not be reported as failed; watchers still notice it at their next
//! store re-check.

use std::sync::Arc;

use super::SessionService;
use crate::events::{EventBus, SessionEvent};

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
}
