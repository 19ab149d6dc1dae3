//! Hot-path benchmarks, each against a baseline measured in the same run.
//!
//! - `cookie/validate_sqlite`: `SessionService::validate_cookie` on a file-backed SQLite store,
//!   clock pinned so no touch write happens (the hot path: parse, key lookup, constant-time MAC
//!   check, one row read, status/binding/CSRF checks).
//! - `cookie/sqlite_row_read`: the store's row read alone (the floor of any stateful check).
//! - `cookie/parse_verify`: the same cookie parsed and MAC-verified, no store.
//! - `baseline/hmac_sha256`: bare HMAC-SHA256 of the same MAC input with a pre-keyed state.
//!
//! Run: `cargo bench -p sessiond --bench hot_path`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use sessiond::cookie;
use sessiond::keys::KeyPurpose;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::SessionStore;
use sessiond::{
    ManualClock, MasterKey, NewSession, RequestContext, SessionService, Timestamp, UserId,
};

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let (service, value, store) = rt.block_on(async {
        let store = Arc::new(
            SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
        let service = SessionService::builder(store.clone(), MasterKey::from_bytes([1; 32]))
            .clock(Arc::new(clock))
            .start()
            .await
            .unwrap();
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
    let sid = parsed.session_id().clone();
    group.bench_function("sqlite_row_read", |b| {
        b.iter(|| {
            rt.block_on(store.session(black_box(&sid)))
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

criterion_group!(benches, hot_path);
criterion_main!(benches);
