//! `sessiond`: the server and its admin commands.
//!
//! # Layout
//! - [`cli`]: the command line; [`config`]: layered configuration (file, environment, flags).
//! - [`startup`]: storage, master key, signing keys, trusted issuers.
//! - [`app`]: state and router; [`routes`]: handlers by audience; [`extract`]: JSON and API-key
//!   extractors; [`problem`]: errors as `application/problem+json`; [`cookies`]: browser
//!   cookies; [`metrics`]: Prometheus; [`openapi`]: the generated API description; [`tls`]:
//!   HTTPS and client certificates.
#![forbid(unsafe_code)]

mod app;
mod cli;
mod config;
mod cookies;
mod extract;
mod issuers;
mod metrics;
mod openapi;
mod problem;
mod routes;
mod startup;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use sessiond::keys::KeyPurpose;
use sessiond::{RevokeReason, Secret, SessionId, Tenant, UserId};

use crate::cli::{ApiKeysAction, Cli, Command, KeysAction, Purpose, SessionsAction};
use crate::config::{Config, Overrides};

fn init_logging() {
    let filter = std::env::var("SESSIOND_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the process (ring): JWK Set fetches over https.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging();
    let overrides = Overrides {
        listen: match &cli.command {
            Command::Serve { listen } => listen.clone(),
            _ => None,
        },
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        redis_url: cli.global.redis_url.clone(),
    };
    let config = match Config::load(cli.global.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sessiond: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sessiond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Strips credentials from a database URL for logging.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => {
            startup::open_backend(&config).await?;
            println!(
                "migrations applied to {}",
                redact_url(&config.database_url())
            );
            Ok(())
        }
        other => admin(other, config).await,
    }
}

async fn admin(command: Command, config: Config) -> anyhow::Result<()> {
    let backend = startup::open_backend(&config).await?;
    let (master, _) = startup::master_key(&config, false)?;
    let service = startup::build_service(&config, backend, master, None).await?;
    match command {
        Command::Keys {
            action: KeysAction::List,
        } => {
            println!(
                "{:<28} {:<8} {:<6} {:<8} {:<26} verify_until",
                "id", "purpose", "alg", "state", "created_at"
            );
            for k in service.keys().list().await? {
                let state = if k.is_active() { "active" } else { "retired" };
                let until = k
                    .verify_until
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{:<28} {:<8} {:<6} {:<8} {:<26} {until}",
                    k.id.as_str(),
                    k.purpose.as_str(),
                    k.algorithm.as_str(),
                    state,
                    k.created_at.to_rfc3339()
                );
            }
        }
        Command::Keys {
            action: KeysAction::Rotate { purpose },
        } => {
            let purposes: Vec<KeyPurpose> = match purpose {
                Some(Purpose::Cookie) => vec![KeyPurpose::Cookie],
                Some(Purpose::Access) => vec![KeyPurpose::Access],
                Some(Purpose::Refresh) => vec![KeyPurpose::Refresh],
                None => KeyPurpose::ALL.to_vec(),
            };
            for p in purposes {
                let info = service.rotate_key(p).await?;
                println!(
                    "rotated {p} key: new active key {} ({}); the previous one verifies until {}",
                    info.id,
                    info.algorithm,
                    service.now().saturating_add(config.keys.retention.0)
                );
            }
        }
        Command::Sessions {
            action: SessionsAction::List { user, tenant },
        } => {
            let user = UserId::new(user).context("--user")?;
            let tenant = tenant.map(Tenant::new).transpose().context("--tenant")?;
            let sessions = service.user_sessions(&user, tenant.as_ref()).await?;
            println!(
                "{:<28} {:<8} {:<10} {:<26} {:<26} absolute_expires_at",
                "id", "kind", "tenant", "created_at", "last_seen_at"
            );
            for s in &sessions {
                println!(
                    "{:<28} {:<8} {:<10} {:<26} {:<26} {}",
                    s.id.as_str(),
                    s.kind.as_str(),
                    s.tenant.as_str(),
                    s.created_at.to_rfc3339(),
                    s.last_seen_at.to_rfc3339(),
                    s.absolute_expires_at.to_rfc3339()
                );
            }
            println!("{} active session(s)", sessions.len());
        }
        Command::Sessions {
            action: SessionsAction::Revoke { id, reason },
        } => {
            let id = SessionId::parse(&id).context("session id (expected ses-…)")?;
            let reason = RevokeReason::new(&reason).context("--reason")?;
            let outcome = service.revoke(&id, &reason).await?;
            println!("{id}: {outcome:?}");
        }
        Command::Sessions {
            action:
                SessionsAction::RevokeAll {
                    user,
                    except,
                    tenant,
                },
        } => {
            let user = UserId::new(user).context("--user")?;
            let except = except
                .map(|e| SessionId::parse(&e))
                .transpose()
                .context("--except (expected ses-…)")?;
            let tenant = tenant.map(Tenant::new).transpose().context("--tenant")?;
            let ids = service
                .revoke_user(
                    &user,
                    tenant.as_ref(),
                    except.as_ref(),
                    &RevokeReason::revoked_all(),
                )
                .await?;
            println!("revoked {} session(s)", ids.len());
        }
        Command::ApiKeys {
            action: ApiKeysAction::Create { name },
        } => {
            let (info, key) = service.create_api_key(&name).await?;
            println!("created API key {} ({})", info.id, info.name);
            println!("{}", key.expose());
            eprintln!("This is the only time the key is shown; sessiond stores only its hash.");
        }
        Command::ApiKeys {
            action: ApiKeysAction::List,
        } => {
            println!(
                "{:<28} {:<24} {:<26} revoked_at",
                "id", "name", "created_at"
            );
            for k in service.api_keys().await? {
                println!(
                    "{:<28} {:<24} {:<26} {}",
                    k.id.as_str(),
                    k.name,
                    k.created_at.to_rfc3339(),
                    k.revoked_at
                        .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        Command::ApiKeys {
            action: ApiKeysAction::Revoke { id },
        } => {
            let id = sessiond::ApiKeyId::parse(&id).context("API key id (expected ak-…)")?;
            let revoked = service.revoke_api_key(&id).await?;
            println!(
                "{id}: {}",
                if revoked {
                    "revoked"
                } else {
                    "not found or already revoked"
                }
            );
        }
        Command::Gc => {
            let report = service.gc().await?;
            println!(
                "deleted {} expired session(s), {} claim(s), {} retired key(s)",
                report.sessions, report.claims, report.keys
            );
        }
        Command::Serve { .. } | Command::Migrate => {}
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(data_dir = %config.data_dir.display(), database = %redact_url(&config.database_url()), "sessiond starting");
    let (backend, sqlite) = startup::open_backend_and_sqlite(&config).await?;
    let (master, source) = startup::master_key(&config, true)?;
    match &source {
        startup::MasterKeySource::Environment => {
            tracing::info!("master key from SESSIOND_MASTER_KEY")
        }
        startup::MasterKeySource::File(p) => {
            tracing::info!(path = %p.display(), "master key from file")
        }
        startup::MasterKeySource::Created(p) => {
            tracing::warn!(path = %p.display(), "created a new master key file (mode 0600); back it up: without it the signing keys cannot be opened")
        }
    }
    let service = startup::build_service(&config, backend, master, sqlite)
        .await
        .context("cannot ensure signing keys; refusing to start")?;
    for key in service.keys().list().await? {
        if key.is_active() {
            tracing::info!(purpose = key.purpose.as_str(), key_id = %key.id, alg = key.algorithm.as_str(), "active signing key");
        }
    }
    let bootstrap = match std::env::var("SESSIOND_API_KEY") {
        Ok(k) if k.len() < 32 => anyhow::bail!("SESSIOND_API_KEY must be at least 32 characters"),
        Ok(k) => {
            tracing::info!("SESSIOND_API_KEY accepted as a bootstrap API key");
            Some(Secret::new(k))
        }
        Err(_) => None,
    };
    if !config.cookies.secure {
        tracing::warn!("cookies.secure = false: cookies lose Secure and the __Host- prefix; use only for plain-http development");
    }
    if config.cookies.allowed_origins.is_empty() {
        tracing::info!("cookies.allowed_origins is empty: /auth/browser/* refuses every request until origins are configured");
    }
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let gc_interval = config.gc.interval.0;
    let remote = issuers::RemoteIssuers::new(service.clone(), &config)?;
    if let Some(remote) = &remote {
        remote.start().await;
    }
    let mut state = app::AppState::new(service.clone(), config, bootstrap);
    state.remote_issuers = remote;
    let events = state.events.clone();
    // On SIGTERM/ctrl-c: end the event streams too, or the drain would wait for them forever.
    let shutdown = async move {
        shutdown_signal().await;
        events.shut_down();
    };
    let gc = tokio::spawn(gc_loop(service.clone(), gc_interval));
    match tls {
        Some((acceptor, client_certs)) => {
            tracing::info!(%addr, tls = true, client_certs, "listening on {addr}");
            tls::serve(listener, acceptor, app::router(state), service, shutdown).await;
        }
        None => {
            tracing::info!(%addr, "listening on {addr}");
            // TCP_NODELAY: small responses and SSE events leave at once instead of waiting for
            // Nagle's algorithm (measured: p99 revocation-to-close latency halves).
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            // The peer address feeds the browser routes' client IP (`sessions.bind_ip`).
            let app =
                app::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("server failed")?;
        }
    }
    gc.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn gc_loop(service: sessiond::SessionService, every: Duration) {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
