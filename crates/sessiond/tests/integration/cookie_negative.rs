//! The attack matrix of the v1 session cookie (issue "Foundation", docs/DESIGN.md §3.1): every row is a
//! fresh database, one manipulation, and the exact error it must produce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sessiond::cookie;
use sessiond::keys::KeyPurpose;
use sessiond::{CookieSession, RequestContext, RevokeReason, ServiceConfig, SessionId};

use crate::common::{env_with, secs, user, TestEnv};

const IP: &str = "203.0.113.9";
const UA: &str = "test-agent/1.0";

#[derive(Debug, Clone, Copy)]
enum Case {
    Untouched,
    FlipMacFirstChar,
    TamperSessionId,
    TamperKeyId,
    StripVersion,
    EmptyVersion,
    Version99,
    ThreeSegments,
    FiveSegments,
    MacBadBase64,
    MacPadded,
    MacShort,
    MacLong,
    Empty,
    TooLong,
    IdleExpired,
    AbsoluteExpired,
    Revoked,
    UnknownKeyId,
    SignedByAccessKey,
    UnknownSession,
    RetiredKeyInsideRetention,
    RetiredKeyPastRetention,
    BoundarySlide,
    CsrfMissing,
    CsrfMismatch,
    CsrfRightToken,
    IpMismatch,
    IpMissing,
    UserAgentMismatch,
}

/// (case, expected: "ok" or the Debug form of the exact `SessionError`).
const MATRIX: &[(Case, &str)] = &[
    (Case::Untouched, "ok"),
    (Case::FlipMacFirstChar, "InvalidCredential(Cookie(BadMac))"),
    (Case::TamperSessionId, "InvalidCredential(Cookie(BadMac))"),
    (Case::TamperKeyId, "InvalidCredential(Key(UnknownKey))"),
    (
        Case::StripVersion,
        "InvalidCredential(Cookie(SegmentCount { found: 3 }))",
    ),
    (
        Case::EmptyVersion,
        "InvalidCredential(Cookie(UnsupportedVersion))",
    ),
    (
        Case::Version99,
        "InvalidCredential(Cookie(UnsupportedVersion))",
    ),
    (
        Case::ThreeSegments,
        "InvalidCredential(Cookie(SegmentCount { found: 3 }))",
    ),
    (
        Case::FiveSegments,
        "InvalidCredential(Cookie(SegmentCount { found: 5 }))",
    ),
    (
        Case::MacBadBase64,
        "InvalidCredential(Cookie(MalformedMac))",
    ),
    (Case::MacPadded, "InvalidCredential(Cookie(MalformedMac))"),
    (
        Case::MacShort,
        "InvalidCredential(Cookie(MacLength { found: 31 }))",
    ),
    (
        Case::MacLong,
        "InvalidCredential(Cookie(MacLength { found: 33 }))",
    ),
    (Case::Empty, "InvalidCredential(Cookie(Empty))"),
    (Case::TooLong, "InvalidCredential(Cookie(TooLong))"),
    (Case::IdleExpired, "Expired(Idle)"),
    (Case::AbsoluteExpired, "Expired(Absolute)"),
    (Case::Revoked, "Revoked"),
    (Case::UnknownKeyId, "InvalidCredential(Key(UnknownKey))"),
    (
        Case::SignedByAccessKey,
        "InvalidCredential(Key(WrongPurpose))",
    ),
    (Case::UnknownSession, "NotFound"),
    (Case::RetiredKeyInsideRetention, "ok"),
    (
        Case::RetiredKeyPastRetention,
        "InvalidCredential(Key(Retired))",
    ),
    (
        Case::BoundarySlide,
        "InvalidCredential(Cookie(MalformedSessionId))",
    ),
    (Case::CsrfMissing, "CsrfMissing"),
    (Case::CsrfMismatch, "CsrfMismatch"),
    (Case::CsrfRightToken, "ok"),
    (Case::IpMismatch, "BindingMismatch(Ip)"),
    (Case::IpMissing, "BindingMismatch(Ip)"),
    (Case::UserAgentMismatch, "BindingMismatch(UserAgent)"),
];

struct Input {
    cookie: String,
    ip: Option<String>,
    ua: Option<String>,
    csrf: Option<String>,
    require_csrf: bool,
}

fn segments(value: &str) -> Vec<String> {
    value.split('.').map(str::to_owned).collect()
}

/// Replaces the character at `i` by another character of the base64url alphabet.
fn swap_char(s: &str, i: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

async fn prepare(case: Case, env: &TestEnv, created: &CookieSession) -> Input {
    let value = created.cookie.expose().to_owned();
    let seg = segments(&value);
    let mac = URL_SAFE_NO_PAD.decode(&seg[3]).unwrap();
    let mut input = Input {
        cookie: value.clone(),
        ip: Some(IP.into()),
        ua: Some(UA.into()),
        csrf: None,
        require_csrf: false,
    };
    let cfg = env.service.config().clone();
    match case {
        Case::Untouched => {}
        Case::FlipMacFirstChar => {
            input.cookie = format!("v1.{}.{}.{}", seg[1], seg[2], swap_char(&seg[3], 0))
        }
        Case::TamperSessionId => {
            input.cookie = format!("v1.{}.{}.{}", swap_char(&seg[1], 10), seg[2], seg[3])
        }
        Case::TamperKeyId => {
            input.cookie = format!("v1.{}.{}.{}", seg[1], swap_char(&seg[2], 10), seg[3])
        }
        Case::StripVersion => input.cookie = value.trim_start_matches("v1.").to_owned(),
        Case::EmptyVersion => input.cookie = value.trim_start_matches("v1").to_owned(),
        Case::Version99 => input.cookie = format!("v99{}", value.trim_start_matches("v1")),
        Case::ThreeSegments => input.cookie = format!("v1.{}.{}", seg[1], seg[2]),
        Case::FiveSegments => input.cookie = format!("{value}.AAAA"),
        Case::MacBadBase64 => input.cookie = format!("v1.{}.{}.*{}", seg[1], seg[2], &seg[3][1..]),
        Case::MacPadded => input.cookie = format!("{value}="),
        Case::MacShort => {
            input.cookie = format!(
                "v1.{}.{}.{}",
                seg[1],
                seg[2],
                URL_SAFE_NO_PAD.encode(&mac[..31])
            )
        }
        Case::MacLong => {
            let mut long = mac.clone();
            long.push(0);
            input.cookie = format!("v1.{}.{}.{}", seg[1], seg[2], URL_SAFE_NO_PAD.encode(long));
        }
        Case::Empty => input.cookie = String::new(),
        Case::TooLong => input.cookie = format!("{value}{}", "A".repeat(64)),
        Case::IdleExpired => env.clock.advance(cfg.cookie.idle_ttl),
        Case::AbsoluteExpired => {
            // Stay active (validate every 30 minutes) until the absolute lifetime runs out.
            let ctx = RequestContext::default().ip(IP).user_agent(UA);
            for _ in 0..15 {
                env.clock.advance(secs(1800));
                env.service.validate_cookie(&value, &ctx).await.unwrap();
            }
            env.clock.advance(secs(1800));
        }
        Case::Revoked => {
            env.service
                .revoke(&created.session.id, &RevokeReason::logout())
                .await
                .unwrap();
        }
        Case::UnknownKeyId => {
            let kid = sessiond::KeyId::generate(&sessiond::OsRandom);
            input.cookie = format!("v1.{}.{}.{}", seg[1], kid, seg[3]);
        }
        Case::SignedByAccessKey => {
            let access = env.service.keys().active(KeyPurpose::Access).await.unwrap();
            input.cookie = format!("v1.{}.{}.{}", seg[1], access.id(), seg[3]);
        }
        Case::UnknownSession => {
            let key = env.service.keys().active(KeyPurpose::Cookie).await.unwrap();
            let sid = SessionId::generate(&sessiond::OsRandom);
            input.cookie = cookie::encode(&sid, &key).unwrap().expose().to_owned();
        }
        Case::RetiredKeyInsideRetention => {
            env.service.rotate_key(KeyPurpose::Cookie).await.unwrap();
            env.clock.advance(cfg.keys.retention - secs(1));
        }
        Case::RetiredKeyPastRetention => {
            env.service.rotate_key(KeyPurpose::Cookie).await.unwrap();
            env.clock.advance(cfg.keys.retention);
        }
        Case::BoundarySlide => {
            // Without length prefixes, moving the boundary between two segments keeps the MAC
            // input. Ours differ, and the slid cookie does not even parse.
            assert_eq!(b"a:bc".len(), b"ab:c".len());
            assert_ne!(cookie::mac_input("a", "bc"), cookie::mac_input("ab", "c"));
            assert_eq!(cookie::mac_input("a", "bc"), b"1:a:2:bc".to_vec());
            assert_eq!(cookie::mac_input("ab", "c"), b"2:ab:1:c".to_vec());
            let key = env.service.keys().active(KeyPurpose::Cookie).await.unwrap();
            assert_ne!(
                cookie::compute_mac(&key, "a", "bc").unwrap(),
                cookie::compute_mac(&key, "ab", "c").unwrap()
            );
            let (kid_head, kid_tail) = seg[2].split_at(1);
            input.cookie = format!("v1.{}{kid_head}.{kid_tail}.{}", seg[1], seg[3]);
        }
        Case::CsrfMissing => input.require_csrf = true,
        Case::CsrfMismatch => {
            input.csrf = Some(
                created
                    .csrf_token
                    .expose()
                    .replace(|c: char| c.is_ascii_digit(), "x")
                    + "x",
            );
            input.require_csrf = true;
        }
        Case::CsrfRightToken => {
            input.csrf = Some(created.csrf_token.expose().to_owned());
            input.require_csrf = true;
        }
        Case::IpMismatch => input.ip = Some("198.51.100.1".into()),
        Case::IpMissing => input.ip = None,
        Case::UserAgentMismatch => input.ua = Some("curl/8.0".into()),
    }
    input
}

#[tokio::test]
async fn cookie_attack_matrix() {
    let mut failures = Vec::new();
    for (case, expected) in MATRIX {
        let mut config = ServiceConfig::default();
        config.sessions.bind_ip = true;
        config.sessions.bind_user_agent = true;
        // Shorter than the idle window, so the retention boundary is reached while the session
        // itself is still alive.
        config.keys.retention = secs(1800);
        let env = env_with(config).await;
        let created = env
            .service
            .create_cookie_session(user("alice").ip(IP).user_agent(UA))
            .await
            .unwrap();
        let input = prepare(*case, &env, &created).await;
        let ctx = RequestContext {
            ip: input.ip.as_deref(),
            user_agent: input.ua.as_deref(),
            csrf_token: input.csrf.as_deref(),
            require_csrf: input.require_csrf,
        };
        let got = match env.service.validate_cookie(&input.cookie, &ctx).await {
            Ok(v) => {
                assert_eq!(v.session.id, created.session.id);
                "ok".to_owned()
            }
            Err(e) => format!("{e:?}"),
        };
        if got != *expected {
            failures.push(format!("{case:?}: expected {expected}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "attack matrix mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn key_bootstrap_failure_is_its_own_error() {
    let env = env_with(ServiceConfig::default()).await;
    // The same database opened with another master key: the active keys cannot be unsealed,
    // so no active key can be ensured and the service refuses to start.
    let wrong = sessiond::MasterKey::from_bytes([8u8; 32]);
    let err = sessiond::SessionService::builder(env.backend.store.clone(), wrong)
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:?}"),
        "Bootstrap { purpose: Cookie, source: Unseal }"
    );
    assert_eq!(err.to_string(), "cannot ensure an active cookie key");
}
