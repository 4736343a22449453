//! `natter-gateway`: serves the gateway on `NATTER_LISTEN` against the NATS named by `NATTER_NATS_URL`.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8080";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let environment: HashMap<String, String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("NATTER_"))
        .collect();
    let config = gateway::GatewayConfig::from_environment(&environment)?;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let nats_urls = setting(&environment, "NATTER_NATS_URL").unwrap_or(DEFAULT_NATS_URL);
    let nats = async_nats::ConnectOptions::new()
        .name("natter-gateway")
        .connect(parse_nats_urls(nats_urls)?)
        .await
        .with_context(|| format!("failed to connect to NATS at {nats_urls}"))?;
    let listen_address = setting(&environment, "NATTER_LISTEN").unwrap_or(DEFAULT_LISTEN_ADDRESS);
    let listener = tokio::net::TcpListener::bind(listen_address)
        .await
        .with_context(|| format!("failed to listen on {listen_address}"))?;

    let shutdown = CancellationToken::new();
    let signal_task = tokio::spawn(cancel_on_shutdown_signal(shutdown.clone()));
    let outcome = gateway::run(config, listener, nats, shutdown).await;
    signal_task.abort();
    outcome
}

/// Empty counts as unset, as in `GatewayConfig::from_environment`.
fn setting<'a>(environment: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    environment
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// `NATTER_NATS_URL` may list several servers of one cluster, comma-separated.
fn parse_nats_urls(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let addresses = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse()
                .with_context(|| format!("NATTER_NATS_URL has an invalid server address {url:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!addresses.is_empty(), "NATTER_NATS_URL names no server");
    Ok(addresses)
}

/// SIGINT (terminal) and SIGTERM (container stop) both start the graceful shutdown.
async fn cancel_on_shutdown_signal(shutdown: CancellationToken) {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("failed to install signal handlers; only an error will stop the gateway");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    shutdown.cancel();
}
