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
        Command::Serve { .. } => Server::build(config, secrets, Arc::new(SystemClock))
            .await?
            .run(shutdown_signal())
            .await
            .context("server failed"),
        other => admin::run(other, config, &secrets).await,
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
