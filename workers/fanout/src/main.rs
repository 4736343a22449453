//! `natter-fanout`: runs one fanout worker against the NATS named by `NATTER_NATS_URL`.

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let nats_url = std::env::var("NATTER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let nats = async_nats::connect(&nats_url).await?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal_token.cancel();
    });
    let environment: std::collections::HashMap<String, String> = std::env::vars().collect();
    fanout::run(fanout::FanoutConfig::from_environment(&environment)?, nats, shutdown).await
}
