//! Shared test fixtures: fresh backends and a service on a manual clock.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use sessiond::store::redis::{RedisClaimStore, RedisOptions};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::{
    ManualClock, MasterKey, NewSession, SeededRandom, ServiceConfig, SessionService, Timestamp,
    UserId,
};

/// 2026-11-22T00:00:00Z: tests start here and move the clock by hand.
pub const T0: Timestamp = Timestamp::from_unix_millis(1_795_305_600_000);

/// A backend plus whatever keeps it alive (a temporary directory).
pub struct TestBackend {
    pub store: Arc<dyn Backend>,
    pub _guard: Option<tempfile::TempDir>,
}

/// A fresh SQLite database in its own temporary directory.
pub async fn sqlite_backend() -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    TestBackend {
        store: Arc::new(store),
        _guard: Some(dir),
    }
}

/// Where the Redis tests find their server: `REDIS_URL`, or the local default.
#[cfg(feature = "redis")]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (in this process or another) uses.
#[cfg(feature = "redis")]
pub fn unique_redis_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "sessiond-test:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A claim store of its own in the Redis at [`redis_url`] (a fresh key prefix per call).
#[cfg(feature = "redis")]
pub async fn redis_claim_store() -> Arc<RedisClaimStore> {
    let mut options = RedisOptions::default();
    options.key_prefix = unique_redis_prefix();
    let url = redis_url();
    let store = RedisClaimStore::connect(&url, options)
        .await
        .unwrap_or_else(|e| {
            panic!("no Redis at REDIS_URL (default redis://127.0.0.1:6379): {e:?}")
        });
    Arc::new(store)
}

/// A claims-only store for `claims_conformance_suite!`.
#[cfg(feature = "redis")]
pub struct TestClaims {
    pub store: Arc<dyn sessiond::store::ClaimStore>,
}

/// A fresh Redis claim store, for `claims_conformance_suite!`.
#[cfg(feature = "redis")]
pub async fn redis_claims() -> TestClaims {
    TestClaims {
        store: redis_claim_store().await,
    }
}

/// A service over a fresh SQLite database, on a manual clock at [`T0`].
pub struct TestEnv {
    pub service: SessionService,
    pub clock: ManualClock,
    pub master: MasterKey,
    pub backend: TestBackend,
}

pub async fn env_with(config: ServiceConfig) -> TestEnv {
    let backend = sqlite_backend().await;
    let clock = ManualClock::new(T0);
    let master = MasterKey::from_bytes([7u8; 32]);
    let service = SessionService::builder(backend.store.clone(), master.clone())
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(42)))
        .config(config)
        .start()
        .await
        .unwrap();
    TestEnv {
        service,
        clock,
        master,
        backend,
    }
}

pub async fn env() -> TestEnv {
    env_with(ServiceConfig::default()).await
}

pub fn user(name: &str) -> NewSession {
    NewSession::new(UserId::new(name).unwrap())
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
