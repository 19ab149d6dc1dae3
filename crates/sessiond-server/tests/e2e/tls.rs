//! `[tls]`: HTTPS with client certificates. Certificates are generated here (rcgen) and carry
//! wall-clock times, so the one expiry test uses real time (about 3 s).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::harness::{self, Options, Server};

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
    params: CertificateParams,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn params(names: &[&str], not_before: i64, not_after: i64) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("ca"));
    p.not_before = OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    p.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    p
}

fn new_ca(name: &str) -> Issued {
    let now = unix_now();
    let mut params = params(&[name], now - 3600, now + 86_400);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Issued { cert, key, params }
}

fn leaf(ca: &Issued, names: &[&str], not_before: i64, not_after: i64, client: bool) -> Issued {
    let mut params = params(names, not_before, not_after);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Issued { cert, key, params }
}

fn client_cert(ca: &Issued, not_before: i64, not_after: i64) -> Issued {
    leaf(ca, &["client.test"], not_before, not_after, true)
}

/// A server with `[tls]` (CA-verified client certificates, optional unless `require`).
async fn spawn_tls(ca: &Issued, require: bool) -> (Server, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let server = leaf(
        ca,
        &["localhost", "127.0.0.1"],
        now - 3600,
        now + 86_400,
        false,
    );
    std::fs::write(dir.path().join("server.pem"), server.cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server.key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let config = format!(
        "[cookie_sessions]\nidle_ttl = \"2h\"\nabsolute_ttl = \"8h\"\n\n\
         [tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\
         client_ca_file = \"ca.pem\"\nrequire_client_cert = {require}\n"
    );
    let server = harness::spawn_in(
        dir,
        Options {
            config,
            ..Options::default()
        },
    )
    .await;
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    (server, addr)
}

/// Connects over TLS trusting `ca`, presenting `client` when given.
async fn connect(
    addr: std::net::SocketAddr,
    ca: &Issued,
    client: Option<&Issued>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One HTTP/1.1 request on a kept-alive connection: (status, JSON body).
async fn http(
    stream: &mut TlsStream<TcpStream>,
    method: &str,
    path: &str,
    api_key: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {api_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    Ok((status, body))
}

/// Whether a connection attempt with `client` gets any HTTP answer. With TLS 1.3 the server's
/// refusal of a client certificate can arrive after the client's `connect` returned, so the
/// first request is the test.
async fn answered(
    addr: std::net::SocketAddr,
    ca: &Issued,
    client: Option<&Issued>,
    api_key: &str,
) -> bool {
    match connect(addr, ca, client).await {
        Ok(mut stream) => http(&mut stream, "GET", "/healthz", api_key, None)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether the server logged `text` within two seconds (its log is read asynchronously).
async fn logged(server: &Server, text: &str) -> bool {
    for _ in 0..40 {
        if server.logs().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn handshake_refuses_expired_unknown_and_missing_client_certificates() {
    let ca = new_ca("sessiond test CA");
    let other_ca = new_ca("some other CA");
    let now = unix_now();
    let valid = client_cert(&ca, now - 60, now + 3600);
    let expired = client_cert(&ca, now - 7200, now - 3600);
    let not_yet = client_cert(&ca, now + 3600, now + 7200);
    let unknown = client_cert(&other_ca, now - 60, now + 3600);

    let (optional, addr) = spawn_tls(&ca, false).await;
    let (required, required_addr) = spawn_tls(&ca, true).await;
    let key = optional.api_key.clone();
    let table: [(&str, std::net::SocketAddr, Option<&Issued>, bool); 7] = [
        ("valid, optional", addr, Some(&valid), true),
        ("none, optional", addr, None, true),
        ("expired", addr, Some(&expired), false),
        ("not yet valid", addr, Some(&not_yet), false),
        ("unknown CA", addr, Some(&unknown), false),
        ("valid, required", required_addr, Some(&valid), true),
        ("none, required", required_addr, None, false),
    ];
    for (name, at, client, want) in table {
        assert_eq!(answered(at, &ca, client, &key).await, want, "{name}");
    }
    assert!(logged(&optional, "TLS handshake refused").await);
    assert!(logged(&required, "TLS handshake refused").await);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let _ = plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut head = [0u8; 8];
    let n = plain.read(&mut head).await.unwrap_or(0);
    assert!(!head[..n].starts_with(b"HTTP/"), "plain HTTP was served");
}

#[tokio::test]
async fn validate_over_mtls_is_bounded_by_the_client_certificate() {
    let ca = new_ca("sessiond test CA");
    let now = unix_now();
    // Ten minutes: earlier than the session's idle (2 h) and absolute (8 h) expiry.
    let cert = client_cert(&ca, now - 60, now + 600);
    let not_after = cert.params.not_after.unix_timestamp();
    let (server, addr) = spawn_tls(&ca, false).await;
    let key = server.api_key.clone();

    let mut with_cert = connect(addr, &ca, Some(&cert)).await.unwrap();
    let (status, created) = http(
        &mut with_cert,
        "POST",
        "/v1/sessions",
        &key,
        Some(json!({"user_id": "alice", "kind": "cookie"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let cookie = created["cookie"].as_str().unwrap().to_owned();
    let validate = json!({ "cookie": cookie });

    let (status, body) = http(
        &mut with_cert,
        "POST",
        "/v1/sessions/validate",
        &key,
        Some(validate.clone()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = sessiond::Timestamp::parse_rfc3339(body["deadline"].as_str().unwrap()).unwrap();
    assert_eq!(deadline.unix_seconds(), not_after, "{body}");

    // The same session without a client certificate: the session's own (later) deadline.
    let mut without = connect(addr, &ca, None).await.unwrap();
    let (status, body) = http(
        &mut without,
        "POST",
        "/v1/sessions/validate",
        &key,
        Some(validate),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let plain = sessiond::Timestamp::parse_rfc3339(body["deadline"].as_str().unwrap()).unwrap();
    assert!(plain.unix_seconds() > not_after + 3000, "{body}");
}

#[tokio::test]
async fn connection_closes_when_the_client_certificate_expires() {
    let ca = new_ca("sessiond test CA");
    let (server, addr) = spawn_tls(&ca, false).await;
    let key = server.api_key.clone();
    let cert = client_cert(&ca, unix_now() - 60, unix_now() + 3);
    let not_after = cert.params.not_after.unix_timestamp();

    let mut stream = connect(addr, &ca, Some(&cert)).await.unwrap();
    let connected = Instant::now();
    // Open after the handshake: a request is answered on it.
    let (status, _) = http(&mut stream, "GET", "/healthz", &key, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Then the server closes it at notAfter (seconds precision, so 2–3 s after the handshake).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut rest)).await;
    let closed_after = connected.elapsed();
    assert!(read.is_ok(), "the connection was still open after 8 s");
    assert!(rest.is_empty(), "unexpected bytes before close");
    let closed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        closed_at >= not_after as f64 - 0.1,
        "closed at {closed_at}, before notAfter {not_after}"
    );
    assert!(
        closed_after <= Duration::from_secs(5),
        "closed only after {closed_after:?}"
    );
    assert!(
        logged(
            &server,
            "client certificate expired; closing the connection"
        )
        .await
    );
    // A new connection with the same certificate is refused at the handshake once the
    // notAfter second is over: webpki treats notAfter as inclusive at one-second precision,
    // whereas sessiond ends a connection at `now >= notAfter` (a handshake inside that last
    // second is closed again at once by the same timer).
    let past = UNIX_EPOCH + Duration::from_secs(not_after as u64 + 1) + Duration::from_millis(100);
    if let Ok(wait) = past.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    assert!(!answered(addr, &ca, Some(&cert), &key).await);
}

/// Sends a GET for an event stream on `stream` and reads until the server closes the
/// connection: (the raw response, when the read ended).
async fn read_stream(
    stream: &mut TlsStream<TcpStream>,
    path: &str,
    api_key: &str,
) -> (String, SystemTime) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {api_key}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the stream was still open after 8 s");
    // A close without close_notify is an error to rustls; the bytes before it are what counts.
    (
        String::from_utf8_lossy(&raw).into_owned(),
        SystemTime::now(),
    )
}

#[tokio::test]
async fn event_streams_over_mtls_end_when_the_client_certificate_expires() {
    let ca = new_ca("sessiond test CA");
    let (server, addr) = spawn_tls(&ca, false).await;
    let key = server.api_key.clone();
    let cert = client_cert(&ca, unix_now() - 60, unix_now() + 3);
    let not_after = cert.params.not_after.unix_timestamp() as f64;

    let mut session_stream = connect(addr, &ca, Some(&cert)).await.unwrap();
    let (status, created) = http(
        &mut session_stream,
        "POST",
        "/v1/sessions",
        &key,
        Some(json!({"user_id": "erin", "kind": "cookie"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let mut user_stream = connect(addr, &ca, Some(&cert)).await.unwrap();

    let key2 = key.clone();
    let user = tokio::spawn(async move {
        read_stream(&mut user_stream, "/v1/events?user_id=erin", &key2).await
    });
    let (raw, ended) = read_stream(
        &mut session_stream,
        &format!("/v1/sessions/{id}/events"),
        &key,
    )
    .await;
    let ended = ended.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // The terminal event, then the end of the chunked body: written before the close.
    let event = raw
        .find("event: expired")
        .unwrap_or_else(|| panic!("no expired event in {raw}"));
    let data = &raw[event..];
    assert!(data.contains("\"reason\":\"certificate_expired\""), "{raw}");
    assert!(data.contains(&format!("\"session_id\":\"{id}\"")), "{raw}");
    assert!(
        raw.ends_with("0\r\n\r\n"),
        "the body did not end cleanly: {raw:?}"
    );
    assert!(
        ended >= not_after - 0.1,
        "ended at {ended}, notAfter {not_after}"
    );
    assert!(
        ended <= not_after + 2.5,
        "ended at {ended}, notAfter {not_after}"
    );

    // The per-user stream ends too (no event: it carries no deadline of its own).
    let (raw, ended) = user.await.unwrap();
    let ended = ended.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.ends_with("0\r\n\r\n"),
        "the body did not end cleanly: {raw:?}"
    );
    assert!(!raw.contains("event:"), "{raw}");
    assert!(
        ended >= not_after - 0.1 && ended <= not_after + 2.5,
        "ended at {ended}"
    );

    // The session itself lives on: only the connection's credential expired.
    let mut fresh = connect(addr, &ca, None).await.unwrap();
    let (status, body) = http(&mut fresh, "GET", &format!("/v1/sessions/{id}"), &key, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["session"]["revoked_at"].is_null(), "{body}");
}
