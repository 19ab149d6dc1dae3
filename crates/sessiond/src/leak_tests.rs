//! No secret in any log line, error message or audit record.
//!
//! Runs the whole cookie-session lifecycle (including failures, rotations, revocations and GC)
//! with every `tracing` event at TRACE level captured, then searches the captured text, every
//! error's `Display` and `Debug`, and every audit record for each secret the run produced:
//! cookie values and their MAC segments, CSRF plaintexts, the master key and the raw material
//! of every signing key, in every encoding we might plausibly print.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use tracing_subscriber::fmt::MakeWriter;

use crate::audit::AuditQuery;
use crate::keys::KeyPurpose;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::{
    ManualClock, MasterKey, NewSession, RequestContext, RevokeReason, ServiceConfig,
    SessionService, Timestamp, UserId,
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn encodings(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let debug = format!("{:?}", &bytes[..8.min(bytes.len())]);
    vec![
        hex,
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        debug.trim_end_matches(']').to_owned(),
    ]
}

#[test]
fn no_secret_reaches_logs_errors_or_audit() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    // Global, so events from sqlx's SQLite worker threads are captured too. This is the only
    // test in the binary that installs a subscriber.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut secrets: Vec<String> = Vec::new();
    let mut haystack = String::new();

    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leak.db");
        let store = Arc::new(
            SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let master = MasterKey::from_bytes([0x5a; 32]);
        secrets.push(master.to_base64().expose().clone());
        secrets.extend(encodings(&[0x5a; 32]));
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
        let mut config = ServiceConfig::default();
        config.sessions.bind_ip = true;
        config.sessions.max_per_user = 2;
        let service = SessionService::builder(store.clone(), master)
            .clock(Arc::new(clock.clone()))
            .config(config)
            .start()
            .await
            .unwrap();

        let mut errors: Vec<crate::SessionError> = Vec::new();
        let mut cookies = Vec::new();
        for _ in 0..3 {
            let c = service
                .create_cookie_session(
                    NewSession::new(UserId::new("leaky").unwrap()).ip("192.0.2.1"),
                )
                .await
                .unwrap();
            secrets.push(c.cookie.expose().clone());
            secrets.push(c.cookie.expose().rsplit('.').next().unwrap().to_owned());
            secrets.push(c.csrf_token.expose().clone());
            haystack.push_str(&format!("{c:?}\n"));
            cookies.push(c);
            clock.advance(std::time::Duration::from_secs(1));
        }
        let c = &cookies[2];
        let ok = RequestContext::default()
            .ip("192.0.2.1")
            .csrf(c.csrf_token.expose());
        let v = service
            .validate_cookie(c.cookie.expose(), &ok)
            .await
            .unwrap();
        haystack.push_str(&format!("{v:?}\n"));
        let new_csrf = service.rotate_csrf(&c.session.id).await.unwrap();
        secrets.push(new_csrf.expose().clone());
        errors.push(
            service
                .validate_cookie(c.cookie.expose(), &ok)
                .await
                .unwrap_err(),
        );
        let value = c.cookie.expose();
        let last = if value.ends_with('A') { "E" } else { "A" };
        let forged = format!("{}{last}", &value[..value.len() - 1]);
        errors.push(service.validate_cookie(&forged, &ok).await.unwrap_err());
        errors.push(
            service
                .validate_cookie(c.cookie.expose(), &RequestContext::default().ip("10.9.9.9"))
                .await
                .unwrap_err(),
        );
        errors.push(
            service
                .validate_cookie(
                    cookies[0].cookie.expose(),
                    &RequestContext::default().ip("192.0.2.1"),
                )
                .await
                .unwrap_err(),
        );
        errors.push(
            service
                .check_csrf(&c.session.id, Some("guess"))
                .await
                .unwrap_err(),
        );
        for purpose in KeyPurpose::ALL {
            service.rotate_key(purpose).await.unwrap();
        }
        clock.advance(std::time::Duration::from_secs(120));
        service
            .validate_cookie(
                c.cookie.expose(),
                &RequestContext::default().ip("192.0.2.1"),
            )
            .await
            .unwrap();
        service
            .revoke(&c.session.id, &RevokeReason::logout())
            .await
            .unwrap();
        errors.push(
            service
                .validate_cookie(c.cookie.expose(), &ok)
                .await
                .unwrap_err(),
        );
        service
            .revoke_user(
                &UserId::new("leaky").unwrap(),
                None,
                None,
                &RevokeReason::revoked_all(),
            )
            .await
            .unwrap();
        clock.advance(std::time::Duration::from_secs(30 * 3600));
        service.gc().await.unwrap();
        errors.push(
            service
                .validate_cookie(cookies[1].cookie.expose(), &ok)
                .await
                .unwrap_err(),
        );

        // Token sessions: issue, validate, refresh, a concurrent retry, reuse, claim.
        let tokens = service
            .create_token_session(
                NewSession::new(UserId::new("tokeny").unwrap()),
                crate::SessionKind::Browser,
            )
            .await
            .unwrap();
        let at = tokens.tokens.access_token.expose().clone();
        let rt1 = tokens.tokens.refresh_token.expose().clone();
        service
            .validate_access_token(&at, &RequestContext::default())
            .await
            .unwrap();
        let next = service
            .refresh(&rt1, &RequestContext::default())
            .await
            .unwrap();
        haystack.push_str(&format!("{tokens:?}\n{next:?}\n"));
        // The new pair is in use, so the old refresh token below is reuse, not a lost response.
        service
            .validate_access_token(
                next.tokens.access_token.expose(),
                &RequestContext::default(),
            )
            .await
            .unwrap();
        service.claim_token(&at).await.unwrap();
        errors.push(service.claim_token(&at).await.unwrap_err());
        clock.advance(std::time::Duration::from_secs(60));
        errors.push(
            service
                .refresh(&rt1, &RequestContext::default())
                .await
                .unwrap_err(),
        );
        errors.push(
            service
                .validate_access_token(
                    next.tokens.access_token.expose(),
                    &RequestContext::default(),
                )
                .await
                .unwrap_err(),
        );
        let tampered = format!("{}x", &at[..at.len() - 1]);
        errors.push(
            service
                .validate_access_token(&tampered, &RequestContext::default())
                .await
                .unwrap_err(),
        );
        for t in [&tokens.tokens, &next.tokens] {
            for value in [t.access_token.expose(), t.refresh_token.expose()] {
                secrets.push(value.clone());
                secrets.push(value.rsplit('.').next().unwrap().to_owned());
            }
            // The refresh secret travels as the refresh token's jti.
            let payload = t.refresh_token.expose().split('.').nth(1).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            secrets.push(claims["jti"].as_str().unwrap().to_owned());
        }

        // Every key the run made, in every encoding (they are still cached in the ring).
        for purpose in KeyPurpose::ALL {
            for key in service.keys().verifying_keys(purpose).await {
                if let Some(secret) = key.hmac_secret() {
                    secrets.extend(encodings(secret));
                }
                if let Some(sk) = key.ed25519() {
                    secrets.extend(encodings(&sk.to_bytes()));
                }
                haystack.push_str(&format!("{key:?}\n"));
            }
        }
        for e in &errors {
            haystack.push_str(&format!("{e}\n{e:?}\n"));
        }
        let trail = service
            .audit_records(&AuditQuery::latest(1000))
            .await
            .unwrap();
        assert!(
            trail.len() > 10,
            "the run should have produced a real audit trail"
        );
        haystack.push_str(&serde_json::to_string(&trail).unwrap());
        haystack.push_str(&format!(
            "{service:?}\n{:?}\n",
            service.metrics().snapshot()
        ));
    });

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 20,
        "log capture did not work: {logs}"
    );
    assert!(
        logs.contains("sqlx::query"),
        "the storage layer's statement log was not captured"
    );
    haystack.push_str(&logs);
    assert!(secrets.len() > 30);
    for secret in &secrets {
        assert!(
            secret.len() >= 16,
            "secret too short to search for reliably"
        );
        assert!(
            !haystack.contains(secret.as_str()),
            "a secret leaked into logs, errors or audit"
        );
    }
}
