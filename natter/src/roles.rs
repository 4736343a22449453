//! One role against the configured NATS: `natter gateway`, `natter fanout`, `natter media`, `natter push` and `natter indexer`, and the connect and bind steps `natter run` shares.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use subjects::permissions::Role;

use crate::config::NatterConfig;

/// A NATS connection named after its role, so `nats server report connections` tells them apart,
/// with the configured user and the role's inbox prefix.
pub async fn connect_nats(config: &NatterConfig, role: Role) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new().name(format!("natter-{}", role.user()));
    let options = crate::nats_credentials::apply(options, config, role)?;
    crate::nats_tls::apply(options, config)?
        .connect(config.nats_server_addresses()?)
        .await
        .with_context(|| format!("failed to connect to NATS at {}", config.nats_urls()))
}

pub async fn bind_listener(config: &NatterConfig) -> anyhow::Result<TcpListener> {
    let listen_address = config.listen_address();
    TcpListener::bind(listen_address)
        .await
        .with_context(|| format!("failed to listen on {listen_address}"))
}

/// `natter gateway`: the same as the `natter-gateway` binary, with the config file honoured too.
pub async fn run_gateway(config: &NatterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gateway_config = gateway::GatewayConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Gateway).await?;
    let listener = bind_listener(config).await?;
    gateway::run(gateway_config, listener, nats, shutdown).await
}

/// `natter fanout`: the same as the `natter-fanout` binary, with the config file honoured too.
pub async fn run_fanout(config: &NatterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let fanout_config = fanout::FanoutConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Fanout).await?;
    let readiness = fanout::readiness(nats.clone(), fanout_config.redis_url.as_deref(), &fanout_config.storage)?;
    let operations = serve_worker_operations(config, readiness, &shutdown).await?;
    with_operations(Box::pin(fanout::run(fanout_config, nats, shutdown.clone())), operations, shutdown).await
}

/// `natter media`: the same as the `natter-media` binary, with the config file honoured too.
pub async fn run_media(config: &NatterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let media_config = media::MediaWorkerConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Media).await?;
    let operations = serve_worker_operations(config, media::readiness(nats.clone()), &shutdown).await?;
    with_operations(Box::pin(media::run(media_config, nats, shutdown.clone())), operations, shutdown).await
}

/// `natter push`: the same as the `natter-push` binary, with the config file honoured too.
pub async fn run_push(config: &NatterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let push_config = push::PushWorkerConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Push).await?;
    let operations = serve_worker_operations(config, push::readiness(nats.clone()), &shutdown).await?;
    with_operations(Box::pin(push::run(push_config, nats, shutdown.clone())), operations, shutdown).await
}

/// `natter indexer`: the same as the `natter-indexer` binary, with the config file honoured too.
pub async fn run_indexer(config: &NatterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let indexer_config = indexer::IndexerConfig::from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Indexer).await?;
    let operations = serve_worker_operations(config, indexer::readiness(nats.clone(), &indexer_config.storage), &shutdown).await?;
    with_operations(Box::pin(indexer::run(indexer_config, nats, shutdown.clone())), operations, shutdown).await
}

/// `natter provision`: creates or updates every stream, bucket and object store, then exits. Run it
/// (as the `provisioner` NATS user) before roles that run as their own users, which only open them.
pub async fn run_provision(config: &NatterConfig) -> anyhow::Result<()> {
    let settings = store::storage_settings_from_environment(config.environment())?;
    let nats = connect_nats(config, Role::Provisioner).await?;
    store::provision_layout(nats.clone(), &settings).await.context("failed to provision streams and buckets")?;
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("streams, buckets and object stores are in place");
    Ok(())
}

/// A worker's `/metrics` `/healthz` `/readyz` on `NATTER_METRICS_LISTEN`, bound before the role starts so a bad address fails fast.
async fn serve_worker_operations(
    config: &NatterConfig,
    readiness: telemetry::Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let Some(address) = config.metrics_listen_address() else { return Ok(None) };
    let listener = TcpListener::bind(address).await.with_context(|| format!("failed to listen on {address} ({})", crate::config::METRICS_LISTEN))?;
    Ok(Some(tokio::spawn(telemetry::serve_operations(listener, readiness, shutdown.clone()))))
}

/// Runs the role; whichever way it ends, the operations server is stopped and waited for.
/// Callers box the role: a worker's whole future is tens of KB in debug builds, and held by value
/// in its caller's it overflowed a test thread's 2 MB stack.
async fn with_operations(
    role: impl std::future::Future<Output = anyhow::Result<()>>,
    operations: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let outcome = role.await;
    if let Some(operations) = operations {
        shutdown.cancel();
        match operations.await {
            Ok(Err(error)) => tracing::warn!(error = %format!("{error:#}"), "operations server failed"),
            Err(join_error) => tracing::warn!(%join_error, "operations server panicked"),
            Ok(Ok(())) => {}
        }
    }
    outcome
}
