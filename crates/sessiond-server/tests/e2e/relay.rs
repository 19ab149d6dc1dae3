//! The `examples/relay` WebSocket relay against the real binary: connections close with 1008
//! on revocation (and the latency of that) and at the credential's deadline.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use sessiond_relay::{Relay, RelayConfig, CLOSE_POLICY};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{spawn, Options, Server};

async fn start_relay(s: &Server) -> String {
    let relay = Relay::new(RelayConfig {
        sessiond_url: s.base.clone(),
        api_key: s.api_key.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Small frames (close frames) must not wait for delayed ACKs.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, relay.router()).await });
    format!("ws://{addr}/ws")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, cookie: Option<&str>) -> Result<Ws, String> {
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", format!("__Host-sessiond={c}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Waits for the close frame: (when, code, reason).
async fn close_frame(mut ws: Ws) -> (Instant, u16, String) {
    while let Some(msg) = ws.next().await {
        if let Message::Close(frame) = msg.unwrap() {
            let at = Instant::now();
            let frame = frame.expect("a close frame with a code");
            return (at, u16::from(frame.code), frame.reason.to_string());
        }
    }
    panic!("connection ended without a close frame");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// 200 connections of one user over 4 sessions; one user-wide revoke closes them all.
/// Prints the latency from the revoke call returning to each close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_closes_200_connections_on_user_revoke() {
    let s = spawn(Options::default()).await;
    let url = start_relay(&s).await;

    // Three cookie sessions and one token session.
    let mut creds: Vec<(String, bool)> = Vec::new();
    for _ in 0..3 {
        let r = s
            .post(
                "/v1/sessions",
                json!({"user_id": "carol", "kind": "cookie"}),
            )
            .await;
        creds.push((r.body["cookie"].as_str().unwrap().to_owned(), true));
    }
    let r = s
        .post(
            "/v1/sessions",
            json!({"user_id": "carol", "kind": "tokens"}),
        )
        .await;
    creds.push((
        r.body["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        false,
    ));

    let mut waiting = Vec::new();
    for i in 0..200 {
        let (cred, is_cookie) = &creds[i % creds.len()];
        let ws = if *is_cookie {
            connect(&url, Some(cred)).await
        } else {
            connect(&format!("{url}?access_token={cred}"), None).await
        }
        .unwrap();
        waiting.push(tokio::spawn(close_frame(ws)));
    }

    let r = s.post("/v1/users/carol/sessions/revoke", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let revoked_at = Instant::now();
    assert_eq!(r.body["revoked"], 4);

    let mut latencies = Vec::new();
    let all = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(waiting),
    )
    .await
    .expect("every connection closes within 10 s");
    for joined in all {
        let (at, code, reason) = joined.unwrap();
        assert_eq!(code, CLOSE_POLICY);
        assert_eq!(reason, "revoked");
        latencies.push(at.saturating_duration_since(revoked_at));
    }
    assert_eq!(latencies.len(), 200);
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "relay revocation latency, 200 connections: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );

    // A revoked credential is refused before the upgrade.
    assert!(connect(&url, Some(&creds[0].0)).await.is_err());
    assert!(connect(&url, None).await.is_err());
}

/// An access token's `exp` closes the connection with 1008 `expired`.
#[tokio::test]
async fn relay_closes_at_the_token_deadline() {
    let s = spawn(Options {
        config: "[token_sessions]\naccess_ttl = \"2s\"\nleeway = \"0s\"\n".into(),
        ..Options::default()
    })
    .await;
    let url = start_relay(&s).await;
    let r = s
        .post("/v1/sessions", json!({"user_id": "dave", "kind": "tokens"}))
        .await;
    let token = r.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = connect(&format!("{url}?access_token={token}"), None)
        .await
        .unwrap();
    // The connection works until then (echo).
    futures_util::SinkExt::send(&mut ws, Message::text("ping"))
        .await
        .unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, Message::text("ping"));
    let (_, code, reason) = tokio::time::timeout(Duration::from_secs(10), close_frame(ws))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (CLOSE_POLICY, "expired"));
}
