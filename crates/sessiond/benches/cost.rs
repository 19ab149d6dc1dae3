//! Instruction counts of the hot paths, for A/B comparisons that a busy machine cannot blur:
//! run under `valgrind --tool=callgrind`, which counts instructions (all threads, the SQLite
//! worker included), not seconds. The program does the set-up, then `N` operations of one kind;
//! the cost of one operation is `(Ir(N) - Ir(0)) / N`.
//!
//! ```text
//! cargo bench -p sessiond --bench cost --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/cost-<hash> refresh 2000
//! ```
//!
//! Operations: `refresh` (chained, clock pinned: every rotation inside one grace window),
//! `refresh-steady` (the clock moved 11 s per refresh), `validate-eddsa`, `validate-hs256`,
//! `validate-cookie` (clock pinned: no touch write).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use sessiond::keys::KeyAlgorithm;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{
    ManualClock, MasterKey, NewSession, RequestContext, SeededRandom, ServiceConfig, SessionKind,
    SessionService, Timestamp, UserId,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "refresh".into());
    let n: u64 = args.next().map_or(1000, |v| v.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&op, n));
}

async fn run(op: &str, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cost.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    let mut config = ServiceConfig::default();
    if op == "validate-hs256" {
        config.keys.access_algorithm = KeyAlgorithm::Hs256;
    }
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_795_305_600_000));
    let service = SessionService::builder(Arc::new(store), MasterKey::from_bytes([3; 32]))
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(9)))
        .config(config)
        .start()
        .await
        .unwrap();
    for i in 0..200 {
        service
            .create_token_session(
                NewSession::new(UserId::new(format!("user{i}")).unwrap()),
                SessionKind::Tokens,
            )
            .await
            .unwrap();
    }
    let ctx = RequestContext::default();
    let bench = NewSession::new(UserId::new("bench").unwrap());
    match op {
        "refresh" | "refresh-steady" => {
            let created = service
                .create_token_session(bench, SessionKind::Tokens)
                .await
                .unwrap();
            let mut token = created.tokens.refresh_token.expose().clone();
            for _ in 0..n {
                if op == "refresh-steady" {
                    clock.advance(Duration::from_secs(11));
                }
                let next = service.refresh(&token, &ctx).await.unwrap();
                token = next.tokens.refresh_token.expose().clone();
            }
        }
        "validate-eddsa" | "validate-hs256" => {
            let created = service
                .create_token_session(bench, SessionKind::Tokens)
                .await
                .unwrap();
            for _ in 0..n {
                service
                    .validate_access_token(created.tokens.access_token.expose(), &ctx)
                    .await
                    .unwrap();
            }
        }
        "validate-cookie" => {
            let created = service.create_cookie_session(bench).await.unwrap();
            for _ in 0..n {
                service
                    .validate_cookie(created.cookie.expose(), &ctx)
                    .await
                    .unwrap();
            }
        }
        other => panic!("unknown operation {other}"),
    }
}
