//! [`Server`]: the server with one owned lifecycle. Built from a parsed configuration, the
//! environment's secrets and a clock, it owns the listener and every background task (garbage
//! collection, the SQLite external-write poller, the JWK Set refresher, the event hub's pump);
//! [`Server::run`] serves until its shutdown future resolves, then ends the event streams,
//! drains in-flight requests and stops every background task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sessiond::{Clock, OsRandom, Secret, SessionService};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::api_keys::ApiKeys;
use crate::config::{Config, Secrets};
use crate::issuers::RemoteIssuers;
use crate::startup::{self, MasterKeySource, StartError};
use crate::state::AppState;

/// A background task, not yet started.
type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A built server: storage open, keys ensured, listener bound, background tasks ready to start.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<(TlsAcceptor, bool)>,
    state: AppState,
    tasks: Vec<Task>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens (and migrates) the database, opens the master key, ensures the signing keys, loads
    /// trusted issuers and binds `config.listen` (port 0 picks a free port). Nothing is served
    /// and no background task runs until [`Server::run`].
    ///
    /// # Errors
    /// [`StartError`]: storage, the master key, the signing keys, TLS or the listener cannot be
    /// set up, or the bootstrap API key is shorter than 32 characters.
    pub async fn build(
        config: Config,
        secrets: Secrets,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, StartError> {
        tracing::info!(data_dir = %config.data_dir.display(), database = %config.database.redacted(), "sessiond starting");
        let storage = startup::open_storage(&config, startup::Role::Server).await?;
        let (master, source) = startup::master_key(&config, &secrets, true)?;
        match &source {
            MasterKeySource::Environment => {
                tracing::info!("master key from SESSIOND_MASTER_KEY")
            }
            MasterKeySource::File(p) => {
                tracing::info!(path = %p.display(), "master key from file")
            }
            MasterKeySource::Created(p) => {
                tracing::warn!(path = %p.display(), "created a new master key file (mode 0600); back it up: without it the signing keys cannot be opened")
            }
        }
        let (service, external_writes) = startup::build_service(
            &config,
            storage.backend,
            master,
            clock.clone(),
            storage.sqlite,
        )
        .await?;
        startup::apply_operator_keys(&config, &service).await?;
        for key in service.keys().list().await.map_err(StartError::ListKeys)? {
            if key.is_active() {
                tracing::info!(purpose = key.purpose.as_str(), key_id = %key.id, alg = key.algorithm.as_str(), origin = key.origin.as_str(), "active signing key");
            }
        }
        let bootstrap = match secrets.api_key {
            Some(k) if k.expose().len() < 32 => {
                return Err(StartError::BootstrapApiKey);
            }
            Some(k) => {
                tracing::info!("SESSIOND_API_KEY accepted as a bootstrap API key");
                Some(Secret::new(k.expose().clone()))
            }
            None => None,
        };
        if !config.cookies.secure {
            tracing::warn!("cookies.secure = false: cookies lose Secure and the __Host- prefix; use only for plain-http development");
        }
        if config.cookies.allowed_origins.is_empty() {
            tracing::info!("cookies.allowed_origins is empty: /auth/browser/* refuses every request until origins are configured");
        }
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::acceptor)
            .transpose()
            .map_err(|e| StartError::Tls(Box::new(e)))?;
        let listen = |source| StartError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(listen)?;
        let addr = listener.local_addr().map_err(listen)?;
        let mut tasks: Vec<Task> = Vec::new();
        tasks.push(Box::pin(gc_loop(service.clone(), config.gc.interval.0)));
        if let Some(poller) = external_writes {
            tasks.push(Box::pin(poller.watch()));
        }
        let remote =
            RemoteIssuers::new(service.clone(), &config).map_err(StartError::JwksClient)?;
        if let Some(remote) = &remote {
            remote.fetch_all().await;
            tasks.push(Box::pin(remote.clone().refresh_loop()));
        }
        let api_keys = ApiKeys::new(
            storage.api_keys,
            clock,
            Arc::new(OsRandom),
            crate::api_keys::DEFAULT_CACHE_TTL,
        );
        let state = AppState::new(service, Arc::new(config), api_keys, bootstrap, remote);
        tasks.push(Box::pin(state.events.pump(&state.service)));
        Ok(Server {
            listener,
            addr,
            tls,
            state,
            tasks,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every route, with its state: what [`Server::run`] serves.
    pub fn router(&self) -> Router {
        crate::app::router(self.state.clone())
    }

    /// Starts the background tasks and serves until `shutdown` resolves; then stops accepting,
    /// ends the event streams, drains the requests in flight and stops the background tasks.
    /// Plain HTTP and TLS are served alike, with the connection timeouts and caps of
    /// `[server]` (docs/DESIGN.md §9.8).
    ///
    /// # Errors
    /// None today: a failed `accept` (out of file descriptors, say) is logged and retried. The
    /// `Result` is kept for callers that propagate it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let Server {
            listener,
            addr,
            tls,
            state,
            tasks,
        } = self;
        let mut background = JoinSet::new();
        for task in tasks {
            background.spawn(task);
        }
        let events = state.events.clone();
        // On shutdown: end the event streams too, or the drain would wait for them forever.
        let shutdown = async move {
            shutdown.await;
            events.shut_down();
        };
        let acceptor = match tls {
            Some((acceptor, client_certs)) => {
                tracing::info!(%addr, tls = true, client_certs, "listening on {addr}");
                Some(acceptor)
            }
            None => {
                tracing::info!(%addr, "listening on {addr}");
                None
            }
        };
        crate::conn::serve(
            listener,
            acceptor,
            router,
            state.service.clone(),
            state.connections.clone(),
            shutdown,
        )
        .await;
        background.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Deletes expired rows every `every` (the first sweep one interval after start).
async fn gc_loop(service: SessionService, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = service.gc().await {
            tracing::warn!(error = %e, "garbage collection failed; retrying next interval");
        }
    }
}
