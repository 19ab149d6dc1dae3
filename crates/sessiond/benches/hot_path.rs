//! Hot-path benchmarks, each against a baseline measured in the same run.
//!
//! - `cookie/validate_sqlite`: `SessionService::validate_cookie` on a file-backed SQLite store,
//!   clock pinned so no touch write happens (the hot path: parse, key lookup, constant-time MAC
//!   check, the row from the row cache, status/binding/CSRF checks);
//!   `cookie/validate_sqlite_uncached_rows`: the same with the row cache off (a row read each).
//! - `cookie/sqlite_row_cached`: the store's row read alone, answered by the row cache (the proof
//!   that nobody else wrote, the lookup, the copy); `cookie/sqlite_others_wrote`: that proof
//!   alone (the cost of noticing other processes' writes); `cookie/sqlite_row_read`: the row
//!   read with the row cache off.
//! - `cookie/parse_verify`: the same cookie parsed and MAC-verified, no store.
//! - `baseline/hmac_sha256`: bare HMAC-SHA256 of the same MAC input with a pre-keyed state.
//!
//! - `access/validate_{eddsa,hs256}_sqlite`: `validate_access_token` of a token seen before
//!   (the verified-token cache answers for the signature and claims; key status, time and the
//!   session row are checked), against `access/baseline_*`: the bare signature check of the
//!   same token with ed25519-dalek / hmac directly.
//! - `access/validate_eddsa_sqlite_first_sight`: every validation a token the cache has not
//!   seen (5,000 sessions' tokens in turn, the cache held to 64 entries: every lookup misses and
//!   inserts); `access/validate_eddsa_sqlite_uncached`: the seen token with the cache off.
//! - `refresh/rotate_sqlite`: one refresh rotation (verify, compare-and-swap, new pair), chained
//!   on a pinned clock (every rotation inside one grace window: the longest kept chain);
//!   `refresh/rotate_sqlite_steady`: the same with the clock moved 11 s per refresh.
//!
//! Run: `cargo bench -p sessiond --bench hot_path`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sessiond::cache::CacheLimits;
use sessiond::cookie;
use sessiond::keys::KeyAlgorithm;
use sessiond::keys::KeyPurpose;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::SessionStore;
use sessiond::{
    ManualClock, MasterKey, NewSession, RequestContext, ServiceConfig, SessionKind, SessionService,
    Timestamp, UserId,
};

/// A cookie service on the SQLite file at `path`, its clock pinned (no touch write).
async fn cookie_service(
    path: &std::path::Path,
    options: SqliteOptions,
) -> (SessionService, Arc<SqliteStore>) {
    let store = Arc::new(
        SqliteStore::open(path.to_str().unwrap(), options)
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
    let service = SessionService::builder(store.clone(), MasterKey::from_bytes([1; 32]))
        .clock(Arc::new(clock))
        .start()
        .await
        .unwrap();
    (service, store)
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let (service, value, store) = rt.block_on(async {
        let (service, store) = cookie_service(&path, SqliteOptions::default()).await;
        // Some neighbours so the row lookup is an index probe, not a one-row table scan.
        for i in 0..2000 {
            service
                .create_cookie_session(NewSession::new(UserId::new(format!("user{i}")).unwrap()))
                .await
                .unwrap();
        }
        let created = service
            .create_cookie_session(NewSession::new(UserId::new("bench").unwrap()))
            .await
            .unwrap();
        (service, created.cookie.expose().clone(), store)
    });
    let ctx = RequestContext::default();
    // Sanity: the benchmarked call succeeds.
    rt.block_on(service.validate_cookie(&value, &ctx)).unwrap();

    let key = rt
        .block_on(service.keys().active(KeyPurpose::Cookie))
        .unwrap();
    let parsed = cookie::parse(&value).unwrap();
    let input = cookie::mac_input(parsed.session_id().as_str(), parsed.key_id().as_str());
    let raw_key = [0x42u8; 32];
    let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&raw_key).unwrap();

    let mut group = c.benchmark_group("cookie");
    group.bench_function("validate_sqlite", |b| {
        b.iter(|| {
            rt.block_on(service.validate_cookie(black_box(&value), &ctx))
                .unwrap()
        })
    });
    // The same file through a second store with the row cache off (a store of its own, as
    // another process would open it): every read is the row read.
    let mut uncached_options = SqliteOptions::default();
    uncached_options.row_cache = CacheLimits::off();
    let (uncached_service, uncached_store) = rt.block_on(cookie_service(&path, uncached_options));
    rt.block_on(uncached_service.validate_cookie(&value, &ctx))
        .unwrap();
    group.bench_function("validate_sqlite_uncached_rows", |b| {
        b.iter(|| {
            rt.block_on(uncached_service.validate_cookie(black_box(&value), &ctx))
                .unwrap()
        })
    });
    let sid = parsed.session_id().clone();
    group.bench_function("sqlite_row_cached", |b| {
        b.iter(|| {
            rt.block_on(store.session(black_box(&sid)))
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("sqlite_others_wrote", |b| {
        b.iter(|| assert!(!store.others_wrote().unwrap().unwrap()))
    });
    group.bench_function("sqlite_row_read", |b| {
        b.iter(|| {
            rt.block_on(uncached_store.session(black_box(&sid)))
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("parse_verify", |b| {
        b.iter(|| {
            cookie::parse(black_box(&value))
                .unwrap()
                .verify(&key)
                .unwrap()
        })
    });
    group.finish();

    c.bench_function("baseline/hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(&input));
            mac.finalize().into_bytes()
        })
    });
}

struct TokenFixture {
    service: SessionService,
    clock: ManualClock,
    access: String,
    refresh: String,
    _dir: tempfile::TempDir,
}

async fn token_fixture(alg: KeyAlgorithm) -> TokenFixture {
    token_fixture_with(alg, ServiceConfig::default(), 2000)
        .await
        .0
}

/// A token service with `sessions` other sessions, and their access tokens.
async fn token_fixture_with(
    alg: KeyAlgorithm,
    mut config: ServiceConfig,
    sessions: usize,
) -> (TokenFixture, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    config.keys.access_algorithm = alg;
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
    let service = SessionService::builder(Arc::new(store), MasterKey::from_bytes([2; 32]))
        .clock(Arc::new(clock.clone()))
        .config(config)
        .start()
        .await
        .unwrap();
    let mut others = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let created = service
            .create_token_session(
                NewSession::new(UserId::new(format!("user{i}")).unwrap()),
                SessionKind::Tokens,
            )
            .await
            .unwrap();
        others.push(created.tokens.access_token.expose().clone());
    }
    let created = service
        .create_token_session(
            NewSession::new(UserId::new("bench").unwrap()),
            SessionKind::Tokens,
        )
        .await
        .unwrap();
    let fixture = TokenFixture {
        access: created.tokens.access_token.expose().clone(),
        refresh: created.tokens.refresh_token.expose().clone(),
        service,
        clock,
        _dir: dir,
    };
    (fixture, others)
}

fn split_token(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (
        input.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(sig).unwrap(),
    )
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = RequestContext::default();
    let ed = rt.block_on(token_fixture(KeyAlgorithm::EdDsa));
    let hs = rt.block_on(token_fixture(KeyAlgorithm::Hs256));
    rt.block_on(ed.service.validate_access_token(&ed.access, &ctx))
        .unwrap();
    rt.block_on(hs.service.validate_access_token(&hs.access, &ctx))
        .unwrap();

    // Bare signature checks of the very same tokens, with the primitives directly.
    let (ed_input, ed_sig) = split_token(&ed.access);
    let jwks = rt.block_on(ed.service.jwks());
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&ed_sig).unwrap();
    let (hs_input, hs_sig) = split_token(&hs.access);
    // The HS256 baseline keys its own HMAC (same length, same work) since the key ring does not
    // hand out secrets; only the comparison result differs, not the cost.
    let hs_mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).unwrap();

    let mut group = c.benchmark_group("access");
    group.bench_function("validate_eddsa_sqlite", |b| {
        b.iter(|| {
            rt.block_on(
                ed.service
                    .validate_access_token(black_box(&ed.access), &ctx),
            )
            .unwrap()
        })
    });
    group.bench_function("validate_hs256_sqlite", |b| {
        b.iter(|| {
            rt.block_on(
                hs.service
                    .validate_access_token(black_box(&hs.access), &ctx),
            )
            .unwrap()
        })
    });
    let mut small = ServiceConfig::default();
    small.verified_tokens = CacheLimits::new(64, 1 << 20);
    let (first, others) = rt.block_on(token_fixture_with(KeyAlgorithm::EdDsa, small, 5000));
    // Each pair's first use is recorded once (a write): done here, so the run only reads.
    for token in &others {
        rt.block_on(first.service.validate_access_token(token, &ctx))
            .unwrap();
    }
    let mut next = 0usize;
    group.bench_function("validate_eddsa_sqlite_first_sight", |b| {
        b.iter(|| {
            next = (next + 1) % others.len();
            rt.block_on(
                first
                    .service
                    .validate_access_token(black_box(&others[next]), &ctx),
            )
            .unwrap()
        })
    });
    let mut off = ServiceConfig::default();
    off.verified_tokens = CacheLimits::off();
    let (uncached, _) = rt.block_on(token_fixture_with(KeyAlgorithm::EdDsa, off, 2000));
    rt.block_on(
        uncached
            .service
            .validate_access_token(&uncached.access, &ctx),
    )
    .unwrap();
    group.bench_function("validate_eddsa_sqlite_uncached", |b| {
        b.iter(|| {
            rt.block_on(
                uncached
                    .service
                    .validate_access_token(black_box(&uncached.access), &ctx),
            )
            .unwrap()
        })
    });
    group.bench_function("baseline_ed25519_verify", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(&ed_input), &signature)
                .unwrap()
        })
    });
    group.bench_function("baseline_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = hs_mac.clone();
            mac.update(black_box(&hs_input));
            let _ = mac.verify_slice(&hs_sig);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("refresh");
    let current = std::cell::RefCell::new(ed.refresh.clone());
    group.bench_function("rotate_sqlite", |b| {
        b.iter(|| {
            let token = current.borrow().clone();
            let next = rt.block_on(ed.service.refresh(&token, &ctx)).unwrap();
            *current.borrow_mut() = next.tokens.refresh_token.expose().clone();
        })
    });
    // Steady state: one refresh per 11 s of clock (past the grace window each time), as a
    // client refreshing on its own does; the chain above, on a pinned clock, is the worst case
    // (every rotation inside one grace window).
    let steady = rt.block_on(token_fixture(KeyAlgorithm::EdDsa));
    let current = std::cell::RefCell::new(steady.refresh.clone());
    group.bench_function("rotate_sqlite_steady", |b| {
        b.iter(|| {
            steady.clock.advance(std::time::Duration::from_secs(11));
            let token = current.borrow().clone();
            let next = rt.block_on(steady.service.refresh(&token, &ctx)).unwrap();
            *current.borrow_mut() = next.tokens.refresh_token.expose().clone();
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path, tokens);
criterion_main!(benches);
