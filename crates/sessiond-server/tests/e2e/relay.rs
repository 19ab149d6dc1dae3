//! The `examples/relay` WebSocket relay against the real binary: connections close with 1008
//! on revocation (and the latency of that) and at the credential's deadline.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use sessiond_relay::{Relay, RelayConfig, CLOSE_POLICY};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{postgres_url, redis_url, unique, Cluster, Handle};
use crate::inproc::{spawn_app, Options as AppOptions};

/// A relay in this process in front of the sessiond at `base`; returns its `ws://` URL.
async fn start_relay(base: &str, api_key: &str) -> String {
    let relay = Relay::new(RelayConfig {
        sessiond_url: base.to_owned(),
        api_key: api_key.to_owned(),
    })
    .unwrap();
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

/// 200 connections of `user` over 4 sessions created on `creator` (three cookie sessions, one
/// token session), spread round-robin over `relays`; then one user-wide revoke on `revoker`.
/// Returns the latency from the revoke call returning to each close frame (1008 `revoked`),
/// sorted, after asserting that every connection got one.
async fn revoke_storm(
    relays: &[String],
    creator: &Handle,
    revoker: &Handle,
    user: &str,
) -> Vec<Duration> {
    let mut creds: Vec<(String, bool)> = Vec::new();
    for _ in 0..3 {
        let r = creator
            .post("/v1/sessions", json!({"user_id": user, "kind": "cookie"}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        creds.push((r.body["cookie"].as_str().unwrap().to_owned(), true));
    }
    let r = creator
        .post("/v1/sessions", json!({"user_id": user, "kind": "tokens"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    creds.push((
        r.body["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        false,
    ));

    let mut waiting = Vec::new();
    for i in 0..200 {
        let url = &relays[i % relays.len()];
        let (cred, is_cookie) = &creds[i % creds.len()];
        let ws = if *is_cookie {
            connect(url, Some(cred)).await
        } else {
            connect(&format!("{url}?access_token={cred}"), None).await
        }
        .unwrap();
        waiting.push(tokio::spawn(close_frame(ws)));
    }

    let r = revoker
        .post(&format!("/v1/users/{user}/sessions/revoke"), json!({}))
        .await;
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

    // A revoked credential is refused before the upgrade, on every relay.
    for url in relays {
        assert!(connect(url, Some(&creds[0].0)).await.is_err());
        assert!(connect(url, None).await.is_err());
    }
    latencies
}

fn report(label: &str, latencies: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "relay revocation latency, {label}, {} connections: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
    );
}

/// One node (SQLite, in-process event bus; the server runs in this process), one relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_closes_200_connections_on_user_revoke() {
    let s = spawn_app(AppOptions::default()).await;
    let relays = [start_relay(&s.base, &s.api_key).await];
    let node = s.handle();
    let latencies = revoke_storm(&relays, &node, &node, "carol").await;
    report("one node", &latencies);
    s.stop().await;
}

/// Three nodes on one PostgreSQL schema and Redis, one relay in front of each; the sessions are
/// created and revoked on node A; the connections held through B and C can only be closed by the
/// event crossing the Redis bus (every node, A included, hears events from its Redis subscriber).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_closes_200_connections_across_three_nodes() {
    let cluster = Cluster::start(3, &postgres_url(), Some(&redis_url())).await;
    let mut relays = Vec::new();
    for node in &cluster.nodes {
        relays.push(start_relay(&node.base, &node.api_key).await);
    }
    let a = cluster.nodes[0].handle();
    let latencies = revoke_storm(&relays, &a, &a, &unique("relay-user-")).await;
    report("three nodes (PostgreSQL + Redis)", &latencies);
}

/// Three nodes on PostgreSQL alone (no Redis): the events cross nodes over `LISTEN/NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_closes_200_connections_across_three_nodes_on_postgres_alone() {
    let cluster = Cluster::start(3, &postgres_url(), None).await;
    let mut relays = Vec::new();
    for node in &cluster.nodes {
        relays.push(start_relay(&node.base, &node.api_key).await);
    }
    let a = cluster.nodes[0].handle();
    let latencies = revoke_storm(&relays, &a, &a, &unique("relay-pg-user-")).await;
    report(
        "three nodes (PostgreSQL LISTEN/NOTIFY, no Redis)",
        &latencies,
    );
}

/// An access token's `exp` closes the connection with 1008 `expired`. The relay times the
/// deadline on its own (system) clock, so the token lives 2 s of real time; the server runs in
/// this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_closes_at_the_token_deadline() {
    let s = spawn_app(AppOptions {
        config: "[token_sessions]\naccess_ttl = \"2s\"\nleeway = \"0s\"\n".into(),
        ..AppOptions::default()
    })
    .await;
    let url = start_relay(&s.base, &s.api_key).await;
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
    s.stop().await;
}

/// `sessiond sessions revoke` (another process, on the cluster's database) closes connections
/// held through every node: the command publishes on the PostgreSQL bus like a node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_closes_relay_connections_on_every_node() {
    let cluster = Cluster::start(2, &postgres_url(), None).await;
    let a = cluster.nodes[0].handle();
    let created = a
        .post(
            "/v1/sessions",
            json!({"user_id": unique("relay-cli-"), "kind": "cookie"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let cookie = created.body["cookie"].as_str().unwrap().to_owned();
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let mut waiting = Vec::new();
    for node in &cluster.nodes {
        let url = start_relay(&node.base, &node.api_key).await;
        let ws = connect(&url, Some(&cookie)).await.unwrap();
        waiting.push(tokio::spawn(close_frame(ws)));
    }
    let out = cluster.cli(&["sessions", "revoke", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for joined in waiting {
        let (_, code, reason) = tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .expect("closed within 10 s of the command")
            .unwrap();
        assert_eq!((code, reason.as_str()), (CLOSE_POLICY, "revoked"));
    }
}

/// On the embedded SQLite default the CLI is another process with no bus to the server; the
/// server notices the foreign write (SQLite's `data_version`) and its streams re-check, so the
/// relay connection still closes, within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_on_sqlite_closes_relay_connections() {
    let s = spawn_app(AppOptions::default()).await;
    let url = start_relay(&s.base, &s.api_key).await;
    let created = s
        .post(
            "/v1/sessions",
            json!({"user_id": "cli-sqlite", "kind": "cookie"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let cookie = created.body["cookie"].as_str().unwrap().to_owned();
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let other = s
        .post(
            "/v1/sessions",
            json!({"user_id": "cli-sqlite", "kind": "cookie"}),
        )
        .await;
    let other_cookie = other.body["cookie"].as_str().unwrap().to_owned();
    let ws = connect(&url, Some(&cookie)).await.unwrap();
    let mut bystander = connect(&url, Some(&other_cookie)).await.unwrap();
    let closing = tokio::spawn(close_frame(ws));

    let out = s.cli(&["sessions", "revoke", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, code, reason) = tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("closed within 10 s of the command")
        .unwrap();
    assert_eq!((code, reason.as_str()), (CLOSE_POLICY, "revoked"));
    // The re-check ends only what was revoked: the user's other session keeps its connection.
    futures_util::SinkExt::send(&mut bystander, Message::text("still here"))
        .await
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), bystander.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("still here"));
}
