//! `sessiond-axum-app`: the example application (see `lib.rs`), on the embedded library by
//! default, or against a remote sessiond server when `SESSIOND_URL` is set.
//!
//! Settings (environment):
//! - `APP_LISTEN`: where to listen (default `127.0.0.1:3000`; open <http://localhost:3000>,
//!   since browsers keep `Secure` cookies on `localhost` only, not on `127.0.0.1`).
//! - `APP_DATA`: the embedded mode's directory (default `./axum-app-data`): `sessions.db`
//!   (SQLite) and `master.key` (created on first run, mode 0600; it encrypts the signing keys).
//! - `SESSIOND_URL` (+ `SESSIOND_API_KEY`): use that sessiond server instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{MasterKey, OsRandom, Secret, SessionService};
use sessiond_axum::Sessions;
use sessiond_axum_app::{app, with_login_redirect, Notes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let listen: SocketAddr = std::env::var("APP_LISTEN")
        .unwrap_or_else(|_| String::from("127.0.0.1:3000"))
        .parse()
        .context("APP_LISTEN must be host:port")?;
    let sessions = match std::env::var("SESSIOND_URL") {
        Ok(url) => {
            // reqwest (in the client) uses rustls with the provider the process installs.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let key = std::env::var("SESSIOND_API_KEY").unwrap_or_default();
            let client = sessiond_client::Client::builder(url.as_str())
                .api_key(Secret::new(key))
                .build()
                .context("SESSIOND_URL")?;
            tracing::info!(sessiond = %url, "sessions on a remote sessiond server");
            with_login_redirect(Sessions::remote(client))
        }
        Err(_) => {
            let dir = PathBuf::from(
                std::env::var("APP_DATA").unwrap_or_else(|_| String::from("axum-app-data")),
            );
            let service = embedded(&dir).await?;
            tracing::info!(data = %dir.display(), "sessions in the embedded library (SQLite)");
            with_login_redirect(Sessions::embedded(service))
        }
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app(&sessions, Notes::default()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// The embedded library on SQLite in `dir`, with its master key from `dir/master.key`, and a
/// task that deletes expired sessions every ten minutes.
async fn embedded(dir: &Path) -> anyhow::Result<SessionService> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    let master = master_key(&dir.join("master.key")).await?;
    let db = dir.join("sessions.db");
    let db = db.to_str().context("APP_DATA must be UTF-8")?;
    let store = SqliteStore::open(db, SqliteOptions::default())
        .await
        .context("open the SQLite database")?;
    let service = SessionService::builder(Arc::new(store), master)
        .start()
        .await
        .context("start the session service")?;
    let gc = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = gc.gc().await {
                tracing::warn!(error = %e, "garbage collection failed; retrying later");
            }
        }
    });
    Ok(service)
}

/// The master key in `path`, created (32 random bytes, base64, mode 0600) when missing.
async fn master_key(path: &Path) -> anyhow::Result<MasterKey> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => MasterKey::from_base64(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate(&OsRandom);
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            options.mode(0o600);
            let mut file = options
                .open(path)
                .await
                .with_context(|| format!("create {}", path.display()))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, key.to_base64().expose().as_bytes())
                .await?;
            tracing::info!(path = %path.display(), "created a new master key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}
