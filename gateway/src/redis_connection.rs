//! The gateway's one Redis connection (presence, typing limits): reconnecting, failing fast while Redis is away.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Redis is local or in the same network: a connection that takes longer than this is not coming.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest any single command or pipeline may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects lazily, so a gateway starts (and serves messages) while Redis is down; presence catches
/// up once it answers. Reconnect backoff is short and capped: commands queued behind a reconnect
/// wait for it, and the presence refresh must stay within one heartbeat interval of a Redis restart.
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| format!("invalid NATTER_REDIS_URL {url:?}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200))
        .set_number_of_retries(3);
    let mut manager = ConnectionManager::new_lazy_with_config(client, config).context("failed to set up the redis connection")?;
    match redis::cmd("PING").query_async::<String>(&mut manager).await {
        Ok(_) => tracing::info!("connected to redis"),
        Err(error) => tracing::warn!(%error, "redis does not answer yet; presence and typing limits catch up once it does"),
    }
    Ok(manager)
}
