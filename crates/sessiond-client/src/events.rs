//! The event streams (docs/DESIGN.md §9.6) as [`Stream`]s of typed [`Event`]s: parsing (the
//! WHATWG event-stream grammar, by `eventsource-stream`), the idle bound on a silent connection,
//! and reconnection with `Last-Event-ID` after a bounded [`Backoff`].

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::stream::{self, Stream, StreamExt};
use reqwest::Url;
use sessiond::SessionId;
use sessiond::{KeyId, Timestamp};
use sessiond_api::{EventData, HeartbeatData, ResyncData};

use crate::error::ClientError;
use crate::Client;

/// One event of a stream, with its `id` (`<boot>-<seq>`, what `Last-Event-ID` resumes from).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The session was revoked (`data.reason`: the revoke reason). Terminal on a per-session
    /// stream.
    Revoked {
        /// The event id.
        id: String,
        /// Which session, why, when.
        data: EventData,
    },
    /// The session expired (`data.reason`: `idle_expired`, `absolute_expired`, `deleted`,
    /// `certificate_expired`). Per-session streams only, and terminal there.
    Expired {
        /// The event id.
        id: String,
        /// Which session, why, when.
        data: EventData,
    },
    /// The session's tokens were refreshed.
    Refreshed {
        /// The event id.
        id: String,
        /// Which session, when.
        data: EventData,
    },
    /// Events were lost and cannot be replayed (per-user streams): re-read the user's sessions
    /// ([`Client::user_sessions`]).
    Resync {
        /// The event id.
        id: String,
        /// Why (`replay_unavailable`).
        reason: String,
    },
    /// The deployment-wide stream is alive ([`Client::deployment_events`]): every event up to
    /// this one's id has been sent.
    Heartbeat {
        /// The event id (resuming from it replays nothing already sent).
        id: String,
        /// The server's time when it was sent.
        at: Timestamp,
        /// The access-token keys that verify now (the JWKS's `kid`s).
        keys: Vec<KeyId>,
    },
}

impl Event {
    /// The event id.
    pub fn id(&self) -> &str {
        match self {
            Event::Revoked { id, .. }
            | Event::Expired { id, .. }
            | Event::Refreshed { id, .. }
            | Event::Resync { id, .. }
            | Event::Heartbeat { id, .. } => id,
        }
    }

    /// The session the event is about (`None` for [`Event::Resync`] and [`Event::Heartbeat`]).
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            Event::Revoked { data, .. }
            | Event::Expired { data, .. }
            | Event::Refreshed { data, .. } => Some(&data.session_id),
            Event::Resync { .. } | Event::Heartbeat { .. } => None,
        }
    }

    /// Whether the session has ended ([`Event::Revoked`] or [`Event::Expired`]).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Revoked { .. } | Event::Expired { .. })
    }

    /// The typed event of a parsed one; `Ok(None)` for an event name this version does not know
    /// (a newer server), which a stream skips.
    fn from_sse(
        route: &'static str,
        raw: eventsource_stream::Event,
    ) -> Result<Option<Event>, ClientError> {
        let data = |raw: &eventsource_stream::Event| {
            serde_json::from_str::<EventData>(&raw.data)
                .map_err(|e| ClientError::decode(route, 200, &e))
        };
        let event = match raw.event.as_str() {
            "revoked" => Event::Revoked {
                data: data(&raw)?,
                id: raw.id,
            },
            "expired" => Event::Expired {
                data: data(&raw)?,
                id: raw.id,
            },
            "refreshed" => Event::Refreshed {
                data: data(&raw)?,
                id: raw.id,
            },
            "resync" => Event::Resync {
                reason: serde_json::from_str::<ResyncData>(&raw.data)
                    .map_err(|e| ClientError::decode(route, 200, &e))?
                    .reason,
                id: raw.id,
            },
            "heartbeat" => {
                let beat = serde_json::from_str::<HeartbeatData>(&raw.data)
                    .map_err(|e| ClientError::decode(route, 200, &e))?;
                Event::Heartbeat {
                    at: beat.at,
                    keys: beat.keys,
                    id: raw.id,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}

/// How a stream waits between reconnection attempts: `initial`, doubling per consecutive
/// failure up to `max`; optionally giving up after `max_attempts` consecutive failures. The
/// count restarts when an event arrives.
///
/// ```
/// use std::time::Duration;
/// use sessiond_client::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).max_attempts(20);
/// # let _ = backoff;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_attempts: Option<u32>,
}

impl Backoff {
    /// Waits of `initial`, doubling up to `max` (at least `initial`); never gives up.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            max_attempts: None,
        }
    }

    /// Gives up (the stream yields its last error and ends) after `attempts` consecutive failed
    /// reconnections.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The wait before reconnection attempt `failures` (1 for the first): what the streams
    /// use, and what a task that reopens a stream itself should use too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessiond_client::Backoff;
    ///
    /// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    /// assert_eq!(b.delay(1), Duration::from_millis(100));
    /// assert_eq!(b.delay(3), Duration::from_millis(400));
    /// assert_eq!(b.delay(30), Duration::from_secs(1));
    /// ```
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    fn exhausted(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|max| failures >= max)
    }
}

impl Default for Backoff {
    /// 250 ms doubling to 10 s, without end.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(10))
    }
}

/// One open event stream, parsed.
type Connection = Pin<
    Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<ClientError>>> + Send>,
>;

/// What a stream needs between polls.
struct Follow {
    client: Client,
    route: &'static str,
    url: Url,
    /// The id of the last event seen: sent as `Last-Event-ID` on reconnection.
    last_id: Option<String>,
    /// Per-session streams end after their terminal event.
    ends_on_terminal: bool,
    connection: Option<Connection>,
    /// Consecutive failures since the last event.
    failures: u32,
    done: bool,
}

impl Client {
    /// Opens the stream at `url` (resuming after `last_id`).
    async fn open_stream(
        &self,
        route: &'static str,
        url: Url,
        last_id: Option<&str>,
    ) -> Result<Connection, ClientError> {
        let mut request = self
            .request(reqwest::Method::GET, url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id.and_then(|id| reqwest::header::HeaderValue::from_str(id).ok()) {
            request = request.header("last-event-id", id);
        }
        // No total timeout on a stream: the answer's head within the request timeout, then each
        // read within the idle bound.
        let response = tokio::time::timeout(self.inner.request_timeout, request.send())
            .await
            .map_err(|_| ClientError::Timeout { route })?
            .map_err(|e| ClientError::transport(route, e))?;
        let response = Client::success(route, response).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::Decode {
                route,
                status: response.status().as_u16(),
                reason: String::from("not an event stream"),
            });
        }
        let idle = self.inner.stream_idle_timeout;
        let bytes = stream::unfold(Some(response), move |response| async move {
            let mut response = response?;
            match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(response))),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(ClientError::transport(route, e)), None)),
                Err(_) => Some((Err(ClientError::Timeout { route }), None)),
            }
        });
        Ok(Box::pin(bytes.eventsource()))
    }

    /// The stream of `route` at `url`, its first connection already open.
    pub(crate) async fn follow(
        &self,
        route: &'static str,
        url: Url,
        ends_on_terminal: bool,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + Send + 'static, ClientError> {
        let connection = self.open_stream(route, url.clone(), None).await?;
        let state = Follow {
            client: self.clone(),
            route,
            url,
            last_id: None,
            ends_on_terminal,
            connection: Some(connection),
            failures: 0,
            done: false,
        };
        Ok(stream::unfold(state, Follow::next))
    }
}

impl Follow {
    /// The next item: an event, or an error (see [`Client::user_events`] for which end it).
    async fn next(mut self) -> Option<(Result<Event, ClientError>, Follow)> {
        loop {
            if self.done {
                return None;
            }
            let connection = match self.connection.as_mut() {
                Some(connection) => connection,
                None => {
                    tokio::time::sleep(self.client.inner.backoff.delay(self.failures)).await;
                    let opened = self
                        .client
                        .open_stream(self.route, self.url.clone(), self.last_id.as_deref())
                        .await;
                    match opened {
                        Ok(connection) => self.connection.insert(connection),
                        Err(e) => {
                            self.failures = self.failures.saturating_add(1);
                            self.done = !e.is_outage()
                                || self.client.inner.backoff.exhausted(self.failures);
                            return Some((Err(e), self));
                        }
                    }
                }
            };
            match connection.next().await {
                Some(Ok(raw)) => {
                    if !raw.id.is_empty() {
                        self.last_id = Some(raw.id.clone());
                    }
                    match Event::from_sse(self.route, raw) {
                        Ok(Some(event)) => {
                            self.failures = 0;
                            self.done = self.ends_on_terminal && event.is_terminal();
                            return Some((Ok(event), self));
                        }
                        Ok(None) => {}
                        // One event lost: say so, and go on.
                        Err(e) => return Some((Err(e), self)),
                    }
                }
                // The connection ended or broke: reconnect (the server replays from
                // `Last-Event-ID`, or sends `resync`).
                Some(Err(_)) | None => {
                    self.connection = None;
                    self.failures = self.failures.saturating_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let b =
            Backoff::new(Duration::from_millis(100), Duration::from_millis(1000)).max_attempts(3);
        let waits: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
        assert!(!b.exhausted(2));
        assert!(b.exhausted(3));
        assert!(!Backoff::default().exhausted(u32::MAX));
    }

    #[test]
    fn events_parse_and_unknown_names_are_skipped() {
        let raw = |event: &str, data: &str| eventsource_stream::Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: String::from("17-3"),
            retry: None,
        };
        let data = r#"{"session_id":"ses-AAAAAAAAAAAAAAAAAAAAAA","reason":"logout","at":"2026-01-02T03:04:05Z"}"#;
        let e = Event::from_sse("r", raw("revoked", data)).unwrap().unwrap();
        assert!(e.is_terminal());
        assert_eq!(e.id(), "17-3");
        assert_eq!(
            e.session_id().map(|s| s.as_str()),
            Some("ses-AAAAAAAAAAAAAAAAAAAAAA")
        );
        let e = Event::from_sse("r", raw("resync", r#"{"reason":"replay_unavailable"}"#))
            .unwrap()
            .unwrap();
        assert_eq!(
            e,
            Event::Resync {
                id: String::from("17-3"),
                reason: String::from("replay_unavailable")
            }
        );
        let e = Event::from_sse("r", raw("heartbeat", r#"{"at":"2026-01-02T03:04:05Z"}"#))
            .unwrap()
            .unwrap();
        assert_eq!(e.session_id(), None);
        assert!(!e.is_terminal());
        assert_eq!(Event::from_sse("r", raw("hello", "{}")).unwrap(), None);
        assert!(matches!(
            Event::from_sse("r", raw("refreshed", "{}")),
            Err(ClientError::Decode { .. })
        ));
    }
}
