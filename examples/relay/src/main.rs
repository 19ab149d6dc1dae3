//! `sessiond-relay`: a WebSocket relay enforcing sessiond sessions live.
//!
//! `sessiond-relay --listen 127.0.0.1:9000 --sessiond http://127.0.0.1:8080` with the API key in
//! `SESSIOND_API_KEY`.

use anyhow::Context;
use sessiond_relay::{Relay, RelayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RELAY_LOG"))
        .init();
    let mut listen = String::from("127.0.0.1:9000");
    let mut sessiond_url = String::from("http://127.0.0.1:8080");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs an address")?,
            "--sessiond" => sessiond_url = args.next().context("--sessiond needs a URL")?,
            other => anyhow::bail!("unknown argument {other}; use --listen ADDR --sessiond URL"),
        }
    }
    let api_key = std::env::var("SESSIOND_API_KEY").context("SESSIOND_API_KEY is not set")?;
    // The sessiond client speaks TLS through rustls with the provider the application picks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let relay = Relay::new(RelayConfig {
        sessiond_url,
        api_key,
    })?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("relay listening on {}", listener.local_addr()?);
    // Close frames are small writes: do not let Nagle hold them for a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, relay.router()).await?;
    Ok(())
}
