//! Trusted foreign issuers where the log matters (what is skipped and warned about at start), and
//! the test issuer's keys, tokens and JWKS server that `inproc::issuers` uses too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sessiond::keys::{Key, KeyAlgorithm, KeyPurpose};
use sessiond::{KeyId, Secret, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{spawn, Options};

pub(crate) const IDP: &str = "https://idp.example";

pub(crate) fn idp_key(seed: u8) -> Key {
    Key::from_material(
        KeyId::generate(&sessiond::OsRandom),
        KeyPurpose::Access,
        KeyAlgorithm::EdDsa,
        Secret::new(vec![seed; 32]),
        Timestamp::EPOCH,
    )
    .unwrap()
}

pub(crate) fn jwk(key: &Key, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(key.info().public_key.clone().unwrap())})
}

pub(crate) fn token(key: &Key, kid: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"iss": IDP, "aud": "sessiond", "sub": "device-1", "jti": jti, "iat": now, "exp": now + 300});
    let mut header = Map::new();
    header.insert("kid".into(), json!(kid));
    sessiond::jose::sign_compact(key, &header, &serde_json::to_vec(&claims).unwrap())
        .unwrap()
        .expose()
        .clone()
}

/// A one-route HTTP server that serves whatever JWK Set it currently holds, counting requests.
pub(crate) async fn jwks_server(initial: Value) -> (String, Arc<Mutex<Value>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                h.fetch_add(1, Ordering::SeqCst);
                let text = b.lock().unwrap().to_string();
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, body, hits)
}

/// Every key of an issuer's set that sessiond leaves out is logged at start, with its `kid` and
/// why; a plain-HTTP (loopback) `jwks_url` is warned about (issue 12, item 7).
#[tokio::test]
async fn skipped_issuer_keys_and_plain_http_are_logged_at_start() {
    let good = idp_key(3);
    let set = json!({"keys": [
        jwk(&good, "good"),
        {"kty": "EC", "crv": "secp256k1", "kid": "k1-skipped", "x": "AA", "y": "AA"},
        {"kty": "RSA", "alg": "RS512", "kid": "rs512-skipped", "n": "AA", "e": "AQAB"},
    ]});
    let (url, _, _) = jwks_server(set).await;
    let s = spawn(Options {
        config: format!(
            "[[issuers]]\nissuer = \"{IDP}\"\naudience = \"sessiond\"\njwks_url = \"{url}\"\n"
        ),
        ..Options::default()
    })
    .await;
    let logs = s.stop().await;
    let skipped: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("issuer key skipped"))
        .collect();
    assert_eq!(skipped.len(), 2, "{logs}");
    assert!(skipped[0].contains("k1-skipped") && skipped[0].contains("secp256k1"));
    assert!(skipped[1].contains("rs512-skipped") && skipped[1].contains("RS512"));
    assert!(
        logs.contains("jwks_url is plain http:// to a loopback address"),
        "{logs}"
    );
}
