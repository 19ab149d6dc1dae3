//! The event streams through the client: a session's stream ends with its terminal event
//! (revoked; expired on the manual clock); a user's stream resumes with `Last-Event-ID` after
//! its connection is cut, and surfaces `resync` when the server cannot replay.

use std::time::Duration;

use futures_util::StreamExt;
use sessiond::{ErrorCode, OsRandom, SessionId, UserId};
use sessiond_client::api::KindParam;
use sessiond_client::{ClientError, Event};

use crate::harness::{builder, next_event, spawn, Proxy, WAIT};

/// Waits until `stream` reports an outage: its connection is gone (and reconnecting fails while
/// the proxy refuses), so nothing more can arrive on it.
async fn outage<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Event, ClientError>> + Unpin,
{
    let failed = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the cut is noticed")
        .expect("the stream goes on");
    assert!(matches!(&failed, Err(e) if e.is_outage()), "{failed:?}");
}

#[tokio::test]
async fn a_session_stream_ends_with_revoked() {
    let app = spawn("").await;
    let (id, _) = app.create("gil", KindParam::Tokens).await;
    let (_, other) = app.create("gil", KindParam::Tokens).await;
    let stream = app.client.session_events(&id).await.unwrap();
    futures_util::pin_mut!(stream);
    // Another session's revocation is not on this stream.
    let other = SessionId::parse(&other.session.id).unwrap();
    app.client.revoke_session(&other, None).await.unwrap();
    app.client.revoke_session(&id, Some("admin")).await.unwrap();
    match next_event(&mut stream).await {
        Some(Event::Revoked { data, id: event_id }) => {
            assert_eq!(data.session_id, id);
            assert_eq!(data.reason.as_deref(), Some("admin"));
            assert!(!event_id.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        next_event(&mut stream).await.is_none(),
        "ends after revoked"
    );

    // Already ended: the terminal event at once, then the end.
    let stream = app.client.session_events(&id).await.unwrap();
    futures_util::pin_mut!(stream);
    assert!(matches!(
        next_event(&mut stream).await,
        Some(Event::Revoked { .. })
    ));
    assert!(next_event(&mut stream).await.is_none());

    // Unknown: refused when opening.
    let e = app
        .client
        .session_events(&SessionId::generate(&OsRandom))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(ErrorCode::UnknownSession), "{e:?}");
}

#[tokio::test]
async fn a_session_stream_ends_with_expired_on_the_clock() {
    let app = spawn("[cookie_sessions]\nidle_ttl = \"30m\"\n").await;
    let (id, _) = app.create("hal", KindParam::Cookie).await;
    let stream = app.client.session_events(&id).await.unwrap();
    futures_util::pin_mut!(stream);
    app.advance(Duration::from_secs(30 * 60));
    match next_event(&mut stream).await {
        Some(Event::Expired { data, .. }) => {
            assert_eq!(data.session_id, id);
            assert_eq!(data.reason.as_deref(), Some("idle_expired"));
        }
        other => panic!("{other:?}"),
    }
    assert!(next_event(&mut stream).await.is_none());
}

#[tokio::test]
async fn refreshed_events_reach_both_streams() {
    let app = spawn("").await;
    let (id, created) = app.create("ivy", KindParam::Tokens).await;
    let session = app.client.session_events(&id).await.unwrap();
    let user = app
        .client
        .user_events(&UserId::new("ivy").unwrap(), None)
        .await
        .unwrap();
    futures_util::pin_mut!(session, user);
    let refresh = created.tokens.unwrap().refresh_token.unwrap();
    app.client
        .refresh(&sessiond_client::api::RefreshRequest::new(refresh))
        .await
        .unwrap();
    for event in [next_event(&mut session).await, next_event(&mut user).await] {
        match event {
            Some(Event::Refreshed { data, .. }) => assert_eq!(data.session_id, id),
            other => panic!("{other:?}"),
        }
    }
}

/// The connection is cut; a revocation made while it is down arrives after the reconnection,
/// replayed from `Last-Event-ID`. Without the header the server would start from now and the
/// revocation would never come.
#[tokio::test]
async fn a_user_stream_resumes_after_its_connection_is_cut() {
    let app = spawn("").await;
    let proxy = Proxy::start(app.server.base_url()).await;
    let client = builder(&proxy.base(), &app.api_key).build().unwrap();
    let jo = UserId::new("jo").unwrap();
    let (first, _) = app.create("jo", KindParam::Cookie).await;
    let (second, _) = app.create("jo", KindParam::Cookie).await;
    let stream = client.user_events(&jo, None).await.unwrap();
    futures_util::pin_mut!(stream);
    app.client.revoke_session(&first, None).await.unwrap();
    let seen = next_event(&mut stream).await.unwrap();
    assert_eq!(seen.session_id(), Some(&first), "{seen:?}");

    proxy.cut();
    outage(&mut stream).await;
    app.client
        .revoke_session(&second, Some("admin"))
        .await
        .unwrap();
    proxy.open();

    match next_event(&mut stream).await {
        Some(Event::Revoked { data, .. }) => {
            assert_eq!(data.session_id, second);
            assert_eq!(data.reason.as_deref(), Some("admin"));
        }
        other => panic!("not replayed: {other:?}"),
    }
    // And live events follow.
    let (third, _) = app.create("jo", KindParam::Cookie).await;
    app.client.revoke_session(&third, None).await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap().session_id(),
        Some(&third)
    );
}

/// The ring holds two events; three other revocations happen while the connection is down, so
/// the last seen id is gone from it: the reconnection starts with `resync`, then live events.
#[tokio::test]
async fn a_user_stream_surfaces_resync_when_replay_is_unavailable() {
    let app = spawn("[events]\nreplay_buffer = 2\n").await;
    let proxy = Proxy::start(app.server.base_url()).await;
    let client = builder(&proxy.base(), &app.api_key).build().unwrap();
    let kim = UserId::new("kim").unwrap();
    let (first, _) = app.create("kim", KindParam::Cookie).await;
    let stream = client.user_events(&kim, None).await.unwrap();
    futures_util::pin_mut!(stream);
    app.client.revoke_session(&first, None).await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap().session_id(),
        Some(&first)
    );

    proxy.cut();
    outage(&mut stream).await;
    for _ in 0..3 {
        let (other, _) = app.create("lou", KindParam::Cookie).await;
        app.client.revoke_session(&other, None).await.unwrap();
    }
    proxy.open();
    match next_event(&mut stream).await {
        Some(Event::Resync { reason, id }) => {
            assert_eq!(reason, "replay_unavailable");
            assert!(!id.is_empty());
        }
        other => panic!("expected resync: {other:?}"),
    }
    let (next, _) = app.create("kim", KindParam::Cookie).await;
    app.client.revoke_session(&next, None).await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap().session_id(),
        Some(&next)
    );
}

/// A bounded backoff gives up: the stream yields its outages and ends.
#[tokio::test]
async fn a_bounded_backoff_gives_up() {
    let app = spawn("").await;
    let proxy = Proxy::start(app.server.base_url()).await;
    let client = builder(&proxy.base(), &app.api_key)
        .reconnect(
            sessiond_client::Backoff::new(Duration::from_millis(10), Duration::from_millis(20))
                .max_attempts(3),
        )
        .build()
        .unwrap();
    let stream = client
        .user_events(&UserId::new("max").unwrap(), None)
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    proxy.cut();
    let mut errors: Vec<ClientError> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            errors.push(item.expect_err("no event while cut"));
        }
    })
    .await
    .expect("the stream gives up");
    assert_eq!(errors.len(), 2, "{errors:?}"); // the drop counts as the first failure
    assert!(errors.iter().all(ClientError::is_outage), "{errors:?}");
}

/// The deployment-wide stream: every user's revocations, by tenant when asked, and heartbeats.
#[tokio::test]
async fn the_deployment_stream_carries_every_user_and_heartbeats() {
    let app = spawn("[events]\nkeep_alive = \"100ms\"\n").await;
    let stream = app.client.deployment_events(None).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut beats = 0;
    let mut revoked = Vec::new();
    let (a, _) = app.create("kim", KindParam::Cookie).await;
    let (b, _) = app.create("lee", KindParam::Cookie).await;
    app.client.revoke_session(&a, None).await.unwrap();
    app.client.revoke_session(&b, None).await.unwrap();
    while revoked.len() < 2 || beats < 2 {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an event within the wait")
            .expect("the stream goes on")
            .unwrap();
        match event {
            Event::Heartbeat { id, .. } => {
                assert!(!id.is_empty());
                beats += 1;
            }
            Event::Revoked { data, .. } => revoked.push(data.session_id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(revoked, [a, b]);
}
