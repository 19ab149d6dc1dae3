//! Shared test fixtures: fresh backends and a service on a manual clock.

use std::sync::Arc;
use std::time::Duration;

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
