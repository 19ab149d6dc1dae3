//! Server-Sent Event streams (docs/DESIGN.md §6.3, §9.6): `GET /v1/sessions/{id}/events` and
//! `GET /v1/events?user_id=&tenant=`.
//!
//! # Wire format
//! Every event is `event: revoked|expired|refreshed`, `data: {"session_id", "reason"?, "at"}`
//! and an `id:` of the form `<boot>-<seq>`: `boot` names this server process (its start time in
//! Unix milliseconds), `seq` grows monotonically within it. Idle streams carry a
//! `: keep-alive` comment every `[events] keep_alive`.
//!
//! # Per-session stream
//! Built on [`sessiond::SessionService::watch`]: the stream ends after its terminal event,
//! `revoked` (learned from the event bus, or from a re-read of the row after a bus lag) or
//! `expired` (the deadline passed by the injected clock; `reason` is `idle_expired`,
//! `absolute_expired` or `deleted`). A session that has already ended gets its terminal event
//! at once and the stream closes. `refreshed` events of the session pass through while it lives.
//! On an mTLS connection the client certificate's `notAfter` is one more deadline: the stream
//! ends with `expired` (`reason` `certificate_expired`) then, and only after that event has been
//! written does the connection close (see [`crate::tls`]).
//!
//! # Per-user and deployment-wide streams, and resume
//! Carries the bus events (`revoked`, `refreshed`) of one user (`user_id`), or without
//! `user_id` of every user of the deployment, and of one tenant when `tenant` is given (an event
//! whose tenant is unknown passes: a revocation is never hidden). Expiry is not published on the
//! bus, so it does not appear here; clients keep their own deadline. On an mTLS connection the
//! stream ends (without an event) when the client certificate expires.
//!
//! The deployment-wide stream is what a process that watches many sessions holds open (one per
//! process, never one per connection: the axum layer's remote backend, local verifiers). Besides
//! the `: keep-alive` comment it sends `event: heartbeat`, `data: {"at", "keys"}` every `[events]
//! keep_alive`, with an `id:` up to which every event has been sent: a client that has seen a
//! heartbeat within its bound knows it has missed nothing older than that bound. `keys` are the
//! access-token keys that verify now (the JWKS's `kid`s), so a retired key reaches local
//! verifiers within one heartbeat.
//! The node keeps the last `[events] replay_buffer` bus events in memory. A client that
//! reconnects with `Last-Event-ID` gets the missed events of its user replayed first. When they
//! cannot be replayed — the id names another server process (a restart, another node), is
//! older than the buffer, or the node itself lagged behind the bus — the stream sends
//! `event: resync` with `data: {"reason": "replay_unavailable"}` (and an `id:` to resume from
//! later): the client must re-read its sessions (`GET /v1/users/{user_id}/sessions`).
//!
//! # Limits
//! At most `[events] max_streams_per_key` streams are open per API key; one more is 429
//! `too_many_streams`. A key is counted by its public id (the authenticated caller), so spelling
//! the `Authorization` header differently does not open more.

use sessiond::error::ErrorCode;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use sessiond::{
    EndReason, EventKind, ExtraDeadline, KeyId, SessionError, SessionEvent, SessionId,
    SessionService, Tenant, Timestamp, UserId,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::auth::ApiCaller;
use crate::extract::{ApiPath, ApiQuery};
use crate::hub::{EventHub, Item};
use crate::problem::doc::{ApiKeyRefused, BadRequest, NoSuchSession, TooManyStreams, Unavailable};
use crate::problem::ApiError;
use crate::routes::dto::{EventData, HeartbeatData, ResyncData, SessionPath};
use crate::state::AppState;
use crate::tls::ClientCertificate;

/// Events a slow client may have queued before its stream stops reading the fan-out.
const CLIENT_QUEUE: usize = 64;

fn sse_event(id: String, kind: EventKind, event: &SessionEvent) -> Event {
    sse_data(
        id,
        kind,
        &event.session_id,
        event.reason.as_deref(),
        event.at,
    )
}

fn sse_data(
    id: String,
    kind: EventKind,
    session_id: &SessionId,
    reason: Option<&str>,
    at: Timestamp,
) -> Event {
    let data = EventData {
        session_id: session_id.clone(),
        reason: reason.map(str::to_owned),
        at,
    };
    let json = serde_json::to_string(&data).unwrap_or_else(|_| String::from("{}"));
    Event::default().event(kind.as_str()).id(id).data(json)
}

fn resync_event(id: String) -> Event {
    let data = ResyncData {
        reason: ResyncData::REPLAY_UNAVAILABLE.to_owned(),
    };
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| String::from(r#"{"reason":"replay_unavailable"}"#));
    Event::default().event("resync").id(id).data(json)
}

fn heartbeat_event(id: String, at: Timestamp, keys: Vec<KeyId>) -> Event {
    let json =
        serde_json::to_string(&HeartbeatData { at, keys }).unwrap_or_else(|_| String::from("{}"));
    Event::default().event("heartbeat").id(id).data(json)
}

pub(crate) fn sse_response(state: &AppState, rx: mpsc::Receiver<Event>) -> Response {
    let keep_alive = state
        .config
        .events
        .keep_alive
        .0
        .max(Duration::from_millis(10));
    Sse::new(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response()
}

/// The terminal event of a watch that ended with `end`.
fn terminal(
    hub: &EventHub,
    service: &SessionService,
    session_id: &SessionId,
    end: &EndReason,
    revoked_at: Option<Timestamp>,
) -> Event {
    let now = service.now();
    let at = match end.kind() {
        EventKind::Revoked => revoked_at.unwrap_or(now),
        _ => now,
    };
    let reason = match end.revoke_reason() {
        Some(r) => Some(r.as_str().to_owned()),
        None if end.kind() == EventKind::Revoked => None,
        None => Some(end.code().to_owned()),
    };
    sse_data(
        hub.id(hub.next_seq()),
        end.kind(),
        session_id,
        reason.as_deref(),
        at,
    )
}

/// `GET /v1/sessions/{id}/events`: the session's `refreshed` events, then its terminal
/// `revoked` or `expired` event, after which the stream closes.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "events", params(SessionPath),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "SSE: `refreshed`, then `revoked` or `expired`; closes after the terminal event"),
        BadRequest, ApiKeyRefused, NoSuchSession, TooManyStreams, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn session_events(
    State(state): State<AppState>,
    Extension(caller): Extension<ApiCaller>,
    client_cert: Option<Extension<ClientCertificate>>,
    ApiPath(SessionPath { id }): ApiPath<SessionPath>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id).map_err(|_| ApiError::NotFound(ErrorCode::UnknownSession))?;
    let hub = state.events.clone();
    let slot = hub.acquire(caller.key_id().cloned())?;
    // Subscribe to the fan-out before the watch reads the row: no `refreshed` is lost between.
    let mut fanout = hub.subscribe();
    // On an mTLS connection the certificate bounds the stream like it bounds validate's
    // deadline: `expired` (`certificate_expired`) is sent before the connection is closed.
    let extra = client_cert.map(|Extension(c)| ExtraDeadline::certificate(c.not_after));
    let watch = match state.service.watch(&id, extra).await {
        Ok(w) => w,
        Err(SessionError::NotFound) => return Err(ApiError::NotFound(ErrorCode::UnknownSession)),
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let service = state.service.clone();
    let revoked_at = watch.session().revoked_at;
    if let Some(end) = watch.ended() {
        let event = terminal(&hub, &service, &id, end, revoked_at);
        let _ = tx.try_send(event);
        drop(tx);
        drop(slot);
        return Ok(sse_response(&state, rx));
    }
    tokio::spawn(async move {
        let _slot = slot;
        let wait = watch.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                end = &mut wait => {
                    let revoked_at = match &end {
                        EndReason::Revoked { .. } => service.session(&id).await.ok().flatten().and_then(|s| s.revoked_at),
                        _ => None,
                    };
                    let _ = tx.send(terminal(&hub, &service, &id, &end, revoked_at)).await;
                    break;
                }
                item = fanout.recv() => match item {
                    Ok(Item::Event(s)) if s.event.session_id == id && s.event.kind == EventKind::Refreshed => {
                        if tx.send(sse_event(hub.id(s.seq), EventKind::Refreshed, &s.event)).await.is_err() {
                            break;
                        }
                    }
                    // Revocations end the watch (which re-reads the row after a bus lag).
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        // Keep waiting for the watch alone.
                        let end = (&mut wait).await;
                        let _ = tx.send(terminal(&hub, &service, &id, &end, None)).await;
                        break;
                    }
                },
                () = tx.closed() => break,
                () = hub.shutting_down() => break,
            }
        }
    });
    Ok(sse_response(&state, rx))
}

/// `?user_id=&tenant=` of the per-user stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserEventsQuery {
    /// The user whose sessions to follow: 1 to 256 bytes, no control characters. Without it,
    /// every user's (the deployment-wide stream, with `heartbeat` events).
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: Option<String>,
    /// Only this tenant (events of unknown tenant pass): 1 to 256 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: Option<String>,
}

/// The `Last-Event-ID` request header of the per-user stream (documentation: the handler reads
/// the header map).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documentation only.
pub(crate) struct LastEventId {
    /// Resume after this event id (the `id:` of an event a stream sent).
    #[param(rename = "Last-Event-ID", value_type = String, required = false)]
    pub last_event_id: Option<String>,
}

fn wanted(event: &SessionEvent, user: Option<&UserId>, tenant: Option<&Tenant>) -> bool {
    user.is_none_or(|user| event.user_id == *user)
        && match (tenant, &event.tenant) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
}

/// `GET /v1/events?user_id=&tenant=`: the bus events of one user, or of every user, with
/// `Last-Event-ID` resume from the node's replay ring (see the module documentation).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(UserEventsQuery, LastEventId),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "SSE: `revoked` and `refreshed` events of the user (of every user \
                without `user_id`, then with a `heartbeat` event every `[events] keep_alive`); \
                `resync` when a resume cannot be replayed"),
        BadRequest, ApiKeyRefused, TooManyStreams, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn user_events(
    State(state): State<AppState>,
    Extension(caller): Extension<ApiCaller>,
    client_cert: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<UserEventsQuery>,
) -> Result<Response, ApiError> {
    let user = query
        .user_id
        .as_deref()
        .map(|u| {
            UserId::new(u).map_err(|_| {
                ApiError::BadRequest("user_id must be 1 to 256 bytes without control characters")
            })
        })
        .transpose()?;
    let tenant = query
        .tenant
        .as_deref()
        .map(|t| Tenant::new(t).map_err(|_| ApiError::BadRequest("tenant must be 1 to 256 bytes")))
        .transpose()?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let hub = state.events.clone();
    let slot = hub.acquire(caller.key_id().cloned())?;
    let mut fanout = hub.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let service = state.service.clone();
    let keep_alive = state
        .config
        .events
        .keep_alive
        .0
        .max(Duration::from_millis(10));
    tokio::spawn(async move {
        let _slot = slot;
        // Heartbeats on the deployment-wide stream only.
        let mut heartbeat = tokio::time::interval(keep_alive);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // On an mTLS connection the stream ends (cleanly) when the client certificate expires.
        let cert_expiry = async {
            match client_cert {
                Some(Extension(c)) => crate::tls::until(&service, c.not_after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cert_expiry);
        let mut sent_upto = match last_event_id {
            Some(last) => {
                let (replay, newest) = hub.replay_after(&last);
                match replay {
                    Some(events) => {
                        for s in events
                            .iter()
                            .filter(|s| wanted(&s.event, user.as_ref(), tenant.as_ref()))
                        {
                            if tx
                                .send(sse_event(hub.id(s.seq), s.event.kind, &s.event))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    None => {
                        if tx.send(resync_event(hub.id(newest))).await.is_err() {
                            return;
                        }
                    }
                }
                newest
            }
            None => hub.newest(),
        };
        loop {
            tokio::select! {
                item = fanout.recv() => {
                    let events = match item {
                        Ok(Item::Event(s)) => vec![s],
                        Ok(Item::Gap) => {
                            sent_upto = hub.newest();
                            if tx.send(resync_event(hub.id(sent_upto))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // This stream fell behind the fan-out: catch up from the ring.
                            let (replay, newest) = hub.replay_after(&hub.id(sent_upto));
                            match replay {
                                Some(events) => events,
                                None => {
                                    sent_upto = newest;
                                    if tx.send(resync_event(hub.id(newest))).await.is_err() {
                                        return;
                                    }
                                    continue;
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    for s in events {
                        if s.seq <= sent_upto {
                            continue;
                        }
                        sent_upto = s.seq;
                        if wanted(&s.event, user.as_ref(), tenant.as_ref())
                            && tx.send(sse_event(hub.id(s.seq), s.event.kind, &s.event)).await.is_err()
                        {
                            return;
                        }
                    }
                }
                _ = heartbeat.tick(), if user.is_none() => {
                    let keys = service.access_key_ids().await;
                    if tx.send(heartbeat_event(hub.id(sent_upto), service.now(), keys)).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                () = hub.shutting_down() => return,
                () = &mut cert_expiry => return,
            }
        }
    });
    Ok(sse_response(&state, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Events as EventsConfig;
    use crate::hub::Stamped;
    use sessiond::{OsRandom, RevokeReason};

    fn hub(capacity: usize) -> EventHub {
        EventHub::new(&EventsConfig {
            replay_buffer: capacity,
            ..EventsConfig::default()
        })
    }

    fn revoked(user: &str) -> SessionEvent {
        SessionEvent::revoked(
            SessionId::generate(&OsRandom),
            UserId::new(user).unwrap(),
            None,
            &RevokeReason::logout(),
            Timestamp::from_unix_millis(0),
        )
    }

    fn seqs(events: Option<Vec<Stamped>>) -> Option<Vec<u64>> {
        events.map(|v| v.iter().map(|s| s.seq).collect())
    }

    #[test]
    fn replay_after_bounds_and_foreign_ids() {
        let h = hub(3);
        for _ in 0..5 {
            h.record(revoked("alice"));
        }
        // Ring holds 3, 4, 5; 2 was the last evicted, so "after 2" is still complete.
        assert_eq!(seqs(h.replay_after(&h.id(2)).0), Some(vec![3, 4, 5]));
        assert_eq!(seqs(h.replay_after(&h.id(4)).0), Some(vec![5]));
        assert_eq!(seqs(h.replay_after(&h.id(5)).0), Some(vec![]));
        assert_eq!(h.replay_after(&h.id(5)).1, 5);
        // Too old, from the future, another process, garbage: resync.
        for bad in [h.id(1), h.id(6), String::from("1-3"), String::from("x")] {
            assert_eq!(seqs(h.replay_after(&bad).0), None, "{bad}");
        }
        // A gap makes everything before it unreplayable.
        h.gap();
        assert_eq!(seqs(h.replay_after(&h.id(5)).0), None);
        h.record(revoked("bob"));
        assert_eq!(seqs(h.replay_after(&h.id(6)).0), Some(vec![7]));
    }

    #[test]
    fn tenant_filter_lets_unknown_tenants_through() {
        let alice = UserId::new("alice").unwrap();
        let t1 = Tenant::new("t1").unwrap();
        let t2 = Tenant::new("t2").unwrap();
        let mut e = revoked("alice");
        assert!(wanted(&e, Some(&alice), Some(&t1)), "unknown tenant passes");
        e.tenant = Some(t2.clone());
        assert!(!wanted(&e, Some(&alice), Some(&t1)));
        assert!(wanted(&e, Some(&alice), Some(&t2)));
        assert!(wanted(&e, Some(&alice), None));
        assert!(!wanted(&revoked("bob"), Some(&alice), None));
        // The deployment-wide stream: every user, still by tenant.
        assert!(wanted(&revoked("bob"), None, None));
        assert!(wanted(&e, None, Some(&t2)));
        assert!(!wanted(&e, None, Some(&t1)));
    }
}
