//! Connections cannot be held open for free (issue 12 item 1; docs/DESIGN.md §9.8): a request
//! head that does not arrive within `server.header_read_timeout`, a body not within
//! `body_read_timeout`, a kept-alive connection idle past `keep_alive_timeout` are closed; at
//! `max_connections` the connection waiting longest for a request head is shed so a new one is
//! served; one address holds at most `max_connections_per_peer` (trusted proxies exempt); event
//! streams outlive every timeout and count toward the caps. Plain HTTP and TLS go through the
//! same connection builder. Real sockets and real time: the timeouts here are a few hundred
//! milliseconds, and each bound below leaves a loaded machine a second of slack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{spawn_app, spawn_app_in, Options, TestApp};

/// A request head cut short: the client stalls after it.
const HALF_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\n";
/// A whole request.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sessiond.test\r\n\r\n";
/// Scheduling slack on top of a timeout before a close counts as late.
const SLACK: Duration = Duration::from_millis(1000);
/// The short timeouts of these tests.
const SHORT: Duration = Duration::from_millis(300);

fn app(config: &str) -> Options {
    Options {
        config: config.to_owned(),
        ..Options::default()
    }
}

fn addr(s: &TestApp) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to `to` from the loopback address `source` (all of 127.0.0.0/8 is local).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// A connection that sent half a request head and stalls.
async fn stalled(to: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(to).await.unwrap();
    tcp.write_all(HALF_HEAD).await.unwrap();
    tcp
}

/// Reads until the server closes the connection (end of stream or reset): what it sent and
/// when the close came. `None`: still open after `within`.
async fn until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<(Vec<u8>, Instant)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut sent = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((sent, Instant::now())),
            Ok(Ok(n)) => sent.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server still holds the connection open (nothing read for 100 ms, no close).
async fn still_open<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    until_closed(stream, Duration::from_millis(100))
        .await
        .is_none()
}

/// The value of a `/metrics` sample line that starts with `series`.
async fn metric(s: &TestApp, series: &str) -> Option<u64> {
    let text = s
        .request(reqwest::Method::GET, "/metrics", None, &[], false)
        .await
        .text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Reads one response: its status, its head (lowercase) and its `Content-Length` body.
async fn response<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no response within 5 s")
            .expect("connection failed");
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, head, buf[head_end..head_end + length].to_vec())
}

/// `GET /healthz` on `stream`: its status.
async fn healthz<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> u16 {
    stream.write_all(HEALTHZ).await.unwrap();
    response(stream).await.0
}

/// A stalled head is closed within the header timeout from the connection's start, however the
/// client spends it (silent, half a head, a byte at a time); a head that arrives in time, even
/// in pieces, is served.
#[tokio::test]
async fn a_stalled_header_read_is_closed_within_the_header_timeout() {
    let s = spawn_app(app("[server]\nheader_read_timeout = \"300ms\"\n")).await;
    let to = addr(&s);

    let started = Instant::now();
    let silent = TcpStream::connect(to).await.unwrap();
    let half = stalled(to).await;
    let mut dribbling = TcpStream::connect(to).await.unwrap();
    let (mut dribble_read, mut dribble_write) = dribbling.split();
    let dribble = async move {
        // A byte every 50 ms: each read makes progress, the head never completes in time.
        for b in HEALTHZ.iter().take(HEALTHZ.len() - 2) {
            if dribble_write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (_, silent_closed, half_closed, dribble_closed) = tokio::join!(
        dribble,
        async move {
            let mut silent = silent;
            until_closed(&mut silent, Duration::from_secs(3)).await
        },
        async move {
            let mut half = half;
            until_closed(&mut half, Duration::from_secs(3)).await
        },
        until_closed(&mut dribble_read, Duration::from_secs(3)),
    );
    for (name, closed) in [
        ("silent", silent_closed),
        ("half a head", half_closed),
        ("a byte every 50 ms", dribble_closed),
    ] {
        let (sent, at) = closed.unwrap_or_else(|| panic!("{name}: still open after 3 s"));
        assert!(sent.is_empty(), "{name}: the server answered {sent:?}");
        let after = at - started;
        assert!(after >= SHORT, "{name}: closed early, after {after:?}");
        assert!(after < SHORT + SLACK, "{name}: closed after {after:?}");
    }

    // In time, even in two pieces: served.
    let mut slow = stalled(to).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.write_all(b"\r\n").await.unwrap();
    assert_eq!(response(&mut slow).await.0, 200);
    let closed = r#"sessiond_connections_closed_total{reason="header_timeout"}"#;
    assert_eq!(metric(&s, closed).await, Some(3));
    // This one and the scrape's own.
    assert_eq!(metric(&s, "sessiond_connections_open").await, Some(2));
    s.stop().await;
}

/// A kept-alive connection is closed after `keep_alive_timeout` without a request (and may be
/// reused before); a head begun after the idle wait gets the header timeout, not the idle one.
#[tokio::test]
async fn idle_keep_alive_and_the_next_head_have_their_own_timeouts() {
    // Idle: 300 ms, well before the 5 s header timeout.
    let s = spawn_app(app(
        "[server]\nkeep_alive_timeout = \"300ms\"\nheader_read_timeout = \"5s\"\n",
    ))
    .await;
    let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
    assert_eq!(healthz(&mut tcp).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        healthz(&mut tcp).await,
        200,
        "reused within the idle timeout"
    );
    let idle_from = Instant::now();
    let (sent, at) = until_closed(&mut tcp, Duration::from_secs(4))
        .await
        .expect("an idle kept-alive connection stays open");
    assert!(sent.is_empty(), "{sent:?}");
    let after = at - idle_from;
    assert!(after >= SHORT / 2, "closed early, after {after:?}");
    assert!(after < SHORT + SLACK, "closed after {after:?}");
    s.stop().await;

    // The next head: 300 ms from its first byte, well before the 5 s idle timeout.
    let s = spawn_app(app(
        "[server]\nkeep_alive_timeout = \"5s\"\nheader_read_timeout = \"300ms\"\n",
    ))
    .await;
    let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
    assert_eq!(healthz(&mut tcp).await, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    tcp.write_all(HALF_HEAD).await.unwrap();
    let head_from = Instant::now();
    let (sent, at) = until_closed(&mut tcp, Duration::from_secs(4))
        .await
        .expect("a stalled second head stays open");
    assert!(sent.is_empty(), "{sent:?}");
    let after = at - head_from;
    assert!(after >= SHORT / 2, "closed early, after {after:?}");
    assert!(after < SHORT + SLACK, "closed after {after:?}");
    s.stop().await;
}

/// A body that does not arrive within `body_read_timeout` (a `Content-Length` of 10^12 with 10
/// bytes sent, or a small one cut short) is answered 408 `request_timeout` and the connection
/// closed, whichever extractor reads it; a body that arrives in time, in pieces, is served.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let s = spawn_app(app("[server]\nbody_read_timeout = \"300ms\"\n")).await;
    let to = addr(&s);
    let cases = [
        ("/v1/sessions", 1_000_000_000_000_u64),
        ("/v1/sessions", 200),
        ("/v1/sessions/ses-x/revoke", 200),
        ("/v1/users/alice/sessions/revoke", 1_000_000_000_000),
    ];
    for (path, length) in cases {
        let mut tcp = TcpStream::connect(to).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: sessiond.test\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"user_id\"",
            s.api_key
        );
        let started = Instant::now();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let (sent, at) = until_closed(&mut tcp, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{path} {length}: still open after 3 s"));
        let after = at - started;
        assert!(after >= SHORT, "{path} {length}: early, after {after:?}");
        assert!(after < SHORT + SLACK, "{path} {length}: after {after:?}");
        let (status, head, body) = response(&mut sent.as_slice()).await;
        assert_eq!(status, 408, "{path} {length}: {head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("application/problem+json"), "{head}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "request_timeout", "{body}");
        assert_eq!(body["status"], 408, "{body}");
    }

    // In time, in two pieces.
    let body = br#"{"user_id":"alice","kind":"tokens"}"#;
    let mut tcp = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: sessiond.test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.api_key,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(&body[10..]).await.unwrap();
    let (status, head, _) = response(&mut tcp).await;
    assert_eq!(status, 201, "{head}");
    let closed = r#"sessiond_connections_closed_total{reason="body_timeout"}"#;
    assert_eq!(metric(&s, closed).await, Some(4));
    // The 408s are counted as such by the request metrics.
    let requests =
        r#"sessiond_http_requests_total{route="/v1/sessions",method="POST",status="408"}"#;
    assert_eq!(metric(&s, requests).await, Some(2));
    s.stop().await;
}

/// The slow-connection test: with the cap reached by stalled connections, a new request is
/// answered within 1 s, because the connection stalled longest is shed (and only it); the
/// others stay open until their header timeout (here 30 s) or the shutdown, which does not wait
/// for them. The answered connections stay open, idle, so the cap stays reached: each new one
/// sheds the next stalled connection, not an idle one that waits for less long.
#[tokio::test]
async fn at_the_cap_held_by_stalled_connections_a_new_request_is_answered_within_1s() {
    let s = spawn_app(app(
        "[server]\nmax_connections = 8\nmax_connections_per_peer = 0\n\
         header_read_timeout = \"30s\"\n",
    ))
    .await;
    let to = addr(&s);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(stalled(to).await);
    }
    // Let the server accept them all (in order: the oldest is the first).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answered = Vec::new();
    for (shed, oldest) in held.iter_mut().enumerate().take(3) {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(to).await.unwrap();
        assert_eq!(healthz(&mut tcp).await, 200);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
        answered.push(tcp);
        let (sent, _) = until_closed(oldest, Duration::from_secs(1))
            .await
            .unwrap_or_else(|| panic!("the oldest stalled connection ({shed}) was not shed"));
        assert!(sent.is_empty(), "{sent:?}");
    }
    for (i, tcp) in held.iter_mut().enumerate().skip(3) {
        assert!(
            still_open(tcp).await,
            "stalled connection {i} was closed too"
        );
    }
    for tcp in &mut answered {
        assert!(still_open(tcp).await, "an answered connection was closed");
    }
    // A real client too.
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("a client at the cap");
    assert_eq!(r.status(), 200);
    assert!(
        !still_open(&mut held[3]).await,
        "the next stalled one was not shed"
    );
    let stopping = Instant::now();
    s.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}

/// Event streams are long-lived: no timeout cuts them, and they count toward the cap; when
/// every connection is serving, a new one is refused (closed unanswered) until one ends.
#[tokio::test]
async fn event_streams_outlive_the_timeouts_and_count_toward_the_cap() {
    let s = spawn_app(app(
        "[server]\nmax_connections = 2\nheader_read_timeout = \"300ms\"\n\
         body_read_timeout = \"300ms\"\nkeep_alive_timeout = \"300ms\"\n\
         [events]\nkeep_alive = \"100ms\"\n",
    ))
    .await;
    let to = addr(&s);
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(to).await.unwrap();
        let request = format!(
            "GET /v1/events?user_id=alice HTTP/1.1\r\nHost: sessiond.test\r\n\
             Authorization: Bearer {}\r\n\r\n",
            s.api_key
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        streams.push(tcp);
    }
    // Three times every timeout: the streams keep sending keep-alive comments.
    let (first, second) = streams.split_at_mut(1);
    let (a, b) = tokio::join!(
        until_closed(&mut first[0], Duration::from_millis(1000)),
        until_closed(&mut second[0], Duration::from_millis(1000)),
    );
    assert!(
        a.is_none() && b.is_none(),
        "a stream was closed: {a:?} {b:?}"
    );
    for tcp in &mut streams {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains(": keep-alive"), "{text}");
    }

    // Both slots serve streams: nothing to shed, the new connection is closed unanswered.
    let mut refused = TcpStream::connect(to).await.unwrap();
    let _ = refused.write_all(HEALTHZ).await;
    let (sent, _) = until_closed(&mut refused, Duration::from_secs(2))
        .await
        .expect("a connection beyond the cap was served");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));

    // One stream ends: its slot is free again.
    drop(streams.pop());
    let mut served = false;
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(to).await.unwrap();
        if tcp.write_all(HEALTHZ).await.is_ok() {
            if let Some((sent, _)) = until_closed(&mut tcp, Duration::from_secs(2)).await {
                if sent.starts_with(b"HTTP/1.1 200") {
                    served = true;
                    break;
                }
            } else {
                // Answered and kept alive.
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no slot came free after a stream ended");
    drop(streams);
    s.stop().await;
}

/// One address holds at most `max_connections_per_peer`; the next is closed unanswered, another
/// address is still served, a trusted proxy (every client behind it shares its address) is not
/// capped, and a slot comes free when a connection ends.
#[tokio::test]
async fn the_per_peer_cap_refuses_the_extra_connection_except_from_trusted_proxies() {
    let s = spawn_app(app(
        "[server]\nmax_connections_per_peer = 2\nheader_read_timeout = \"30s\"\n\
         [sessions]\ntrusted_proxies = [\"127.0.0.3\"]\n",
    ))
    .await;
    let to = addr(&s);
    let mut first = connect_from([127, 0, 0, 1], to).await;
    first.write_all(HALF_HEAD).await.unwrap();
    let mut second = connect_from([127, 0, 0, 1], to).await;
    second.write_all(HALF_HEAD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut third = connect_from([127, 0, 0, 1], to).await;
    let _ = third.write_all(HEALTHZ).await;
    let (sent, _) = until_closed(&mut third, Duration::from_secs(2))
        .await
        .expect("a third connection from one address was served");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));

    let mut other = connect_from([127, 0, 0, 2], to).await;
    assert_eq!(healthz(&mut other).await, 200, "another address");

    let mut proxied = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from([127, 0, 0, 3], to).await;
        tcp.write_all(HALF_HEAD).await.unwrap();
        proxied.push(tcp);
    }
    let mut tcp = connect_from([127, 0, 0, 3], to).await;
    assert_eq!(healthz(&mut tcp).await, 200, "the trusted proxy's fourth");
    for tcp in &mut proxied {
        assert!(
            still_open(tcp).await,
            "a trusted proxy's connection was closed"
        );
    }
    assert!(still_open(&mut first).await && still_open(&mut second).await);
    let mut scrape = connect_from([127, 0, 0, 2], to).await;
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sessiond.test\r\n\r\n")
        .await
        .unwrap();
    let (_, _, body) = response(&mut scrape).await;
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("sessiond_connections_closed_total{reason=\"refused_per_peer\"} 1\n"),
        "{text}"
    );

    // The first ends: 127.0.0.1 may connect again.
    drop(first);
    let mut served = false;
    for _ in 0..40 {
        let mut tcp = connect_from([127, 0, 0, 1], to).await;
        if tcp.write_all(HEALTHZ).await.is_ok() {
            match until_closed(&mut tcp, Duration::from_millis(500)).await {
                None => served = true,
                Some((sent, _)) => served = sent.starts_with(b"HTTP/1.1 200"),
            }
            if served {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the address's slot did not come free");
    s.stop().await;
}

/// TLS goes through the same builder: a client that never starts its handshake, and one that
/// stalls in its head after the handshake, are closed within the header timeout; a request is
/// served.
#[tokio::test]
async fn tls_connections_have_the_same_timeouts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let s = spawn_app_in(
        dir,
        app("[server]\nheader_read_timeout = \"300ms\"\n\n\
             [tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n"),
    )
    .await;
    let to = addr(&s);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let started = Instant::now();
    let mut silent = TcpStream::connect(to).await.unwrap();
    let mut half = connector
        .connect(name.clone(), TcpStream::connect(to).await.unwrap())
        .await
        .unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    half.flush().await.unwrap();
    let (silent_closed, half_closed) = tokio::join!(
        until_closed(&mut silent, Duration::from_secs(3)),
        until_closed(&mut half, Duration::from_secs(3)),
    );
    for (name, closed) in [
        ("no handshake", silent_closed),
        ("half a head", half_closed),
    ] {
        let (sent, at) = closed.unwrap_or_else(|| panic!("{name}: still open after 3 s"));
        assert!(sent.is_empty(), "{name}: {sent:?}");
        let after = at - started;
        assert!(after < SHORT + SLACK, "{name}: closed after {after:?}");
    }

    let mut tls = connector
        .connect(name, TcpStream::connect(to).await.unwrap())
        .await
        .unwrap();
    assert_eq!(healthz(&mut tls).await, 200);
    s.stop().await;
}
