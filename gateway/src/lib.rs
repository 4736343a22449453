//! The Natter gateway: WebSocket and HTTP front door that authenticates, authorises, appends to JetStream and delivers to connected devices.

mod api_error;
mod auth;
mod auth_extract;
pub mod config;
mod delivery_hub;
mod delivery_order;
mod http;
mod outbound;
mod send;
mod session;
mod state;
mod sync;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use store::{Conversations, LogReader, MembershipCache, MessageLog, Storage};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::Authenticator;
pub use config::{GatewayConfig, JwtConfig, Limits};

use crate::delivery_hub::DeliveryHub;
use crate::state::AppState;

/// How long open sockets get to close after shutdown starts.
const CONNECTION_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled, then closes every socket with a reason and flushes NATS.
pub async fn run(config: GatewayConfig, listener: TcpListener, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let storage = Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage)
        .await
        .context("failed to provision streams and buckets")?;
    let (membership, membership_task) = MembershipCache::start(nats.clone(), &storage, shutdown.clone()).await?;
    let reader = LogReader::new(storage.clone());
    let delivery_tasks = TaskTracker::new();
    let state = AppState {
        auth: Arc::new(Authenticator::new(&config.jwt)),
        log: Arc::new(MessageLog::new(storage.clone())),
        reader: reader.clone(),
        conversations: Arc::new(Conversations::new(nats.clone(), storage.clone(), membership.clone())),
        membership,
        hub: Arc::new(DeliveryHub::new(nats.clone(), reader, delivery_tasks.clone())),
        connections: TaskTracker::new(),
        shutdown: shutdown.clone(),
        config: Arc::new(config),
    };
    tracing::info!(address = %listener.local_addr()?, "gateway listening");
    axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("http server failed")?;
    // Writers saw the same token and are sending close frames with a reason.
    state.connections.close();
    if tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, state.connections.wait()).await.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    delivery_tasks.close();
    let _ = tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, delivery_tasks.wait()).await;
    let _ = membership_task.await;
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("gateway stopped");
    Ok(())
}
