//! `sessiond`: the command line around [`sessiond_server`]: parse the arguments, set up logging,
//! load the configuration and the secrets, then serve until SIGTERM/ctrl-c or run an admin
//! command.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sessiond::SystemClock;
use sessiond_server::{Config, Overrides, Secrets, Server};

use crate::cli::{Cli, Command};

mod admin;
mod cli;

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
    let secrets = Secrets::from_env();
    match runtime.block_on(run(cli.command, config, secrets)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sessiond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config, secrets: Secrets) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => {
            // Installed before the server starts: a SIGTERM that arrives right after
            // "listening on" drains the server instead of killing the process.
            let shutdown = shutdown_signal()?;
            Server::build(config, secrets, Arc::new(SystemClock))
                .await?
                .run(shutdown)
                .await
                .context("server failed")
        }
        other => admin::run(other, config, &secrets).await,
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed now, not when the future
/// is first polled.
///
/// # Errors
/// When a signal handler cannot be installed.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown signal received; draining in-flight requests");
    })
}

/// Resolves on Ctrl-C.
///
/// # Errors
/// Never on this platform; the signature matches Unix's.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; draining in-flight requests");
    })
}
