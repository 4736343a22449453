//! The Natter gateway: WebSocket and HTTP front door that authenticates, authorises, appends to JetStream and delivers to connected devices.

mod api_error;
mod auth;
mod auth_extract;
mod changes;
mod changes_api;
pub mod config;
mod delivery_hub;
mod delivery_order;
mod heartbeat;
mod http;
mod media_api;
mod multicast_router;
mod media_download;
pub mod media_settings;
mod media_upload;
mod media_urls;
mod mentions;
pub mod openapi;
mod outbound;
mod presence;
mod presence_scripts;
mod presence_snapshot;
mod presence_status;
mod push_api;
mod receipt_coalescer;
mod receipts;
mod replies_api;
pub mod content_filter;
pub mod rate_limit;
mod redis_connection;
mod send;
mod search_api;
mod session;
mod state;
mod sync;
mod typing;
mod ws;
mod web_client;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use store::{Conversations, LogReader, MembershipCache, MessageLog, Receipts, Storage};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AnalystScope, Authenticator};
pub use config::{GatewayConfig, JwtConfig, Limits};
pub use store::ConversationLimits;

use crate::delivery_hub::DeliveryHub;
use crate::presence::{Presence, PresenceSettings};
use crate::presence_status::ContactDirectory;
use crate::typing::TypingLimiter;
use crate::state::{AppServices, AppState};

/// How long open sockets get to close after shutdown starts.
const CONNECTION_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled, then closes every socket with a reason and flushes NATS.
pub async fn run(config: GatewayConfig, listener: TcpListener, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    // Registered up front, so the first scrape lists every family the gateway exports, at zero.
    telemetry::gateway_metrics().declare_slow_consumer_reasons(&delivery_hub::SLOW_CONSUMER_REASONS);
    telemetry::store_metrics();
    let storage = store::retry_at_startup("provision streams and buckets", || Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage))
        .await
        .context("failed to provision streams and buckets")?;
    let (membership, membership_task) = MembershipCache::start(nats.clone(), &storage, shutdown.clone()).await?;
    let (multicast_groups, multicast_groups_task) = store::MulticastGroups::start(&nats, &storage, shutdown.clone()).await?;
    let media = store::retry_at_startup("provision media storage", || store::MediaStorage::provision(nats.clone(), &config.storage)).await.context("failed to provision media storage")?;
    let push = store::retry_at_startup("provision push storage", || store::PushStorage::provision(nats.clone(), &config.storage)).await.context("failed to provision push storage")?;
    let search = store::retry_at_startup("provision search storage", || store::SearchStorage::provision(&storage, &config.storage)).await.context("failed to provision search storage")?;
    let reader = LogReader::new(storage.clone());
    let receipts = Receipts::new(nats.clone(), &storage);
    let coalescer_timing = receipt_coalescer::CoalescerTiming {
        announce_interval: config.limits.delivered_announce_interval,
        store_interval: config.limits.delivered_store_interval,
    };
    let (delivered, watermark_task) =
        receipt_coalescer::start_coalescer(receipts.clone(), membership.clone(), multicast_groups.clone(), nats.clone(), coalescer_timing, shutdown.clone());
    let delivery_tasks = TaskTracker::new();
    let conversations = Arc::new(Conversations::new(nats.clone(), storage.clone(), membership.clone()).with_limits(config.limits.conversations));
    let redis = match &config.redis_url {
        Some(url) => Some(redis_connection::connect(url).await?),
        None => None,
    };
    let (presence, presence_task) = match &redis {
        Some(redis) => {
            let settings = PresenceSettings {
                gateway_instance: ulid::Ulid::new().to_string(),
                heartbeat_interval: config.heartbeat_interval,
                nats: nats.clone(),
                directory: ContactDirectory { conversations: conversations.clone(), membership: membership.clone() },
                tasks: delivery_tasks.clone(),
            };
            let (presence, task) = Presence::start(redis.clone(), settings);
            (presence, Some(task))
        }
        None => {
            tracing::info!("NATTER_REDIS_URL is not set: presence is off and typing is rate-limited per gateway");
            (Presence::disabled(), None)
        }
    };
    // The gateway creates the streams it needs; it owns no durable consumer, so only the log stream and Redis are checked.
    let readiness = telemetry::Readiness::new(nats.clone()).stream(subjects::MESSAGE_STREAM).redis(redis.clone());
    let hub = Arc::new(DeliveryHub::new(nats.clone(), reader.clone(), delivery_tasks.clone(), delivered.clone()));
    let router_services = multicast_router::RouterServices {
        client: nats.clone(),
        hub: hub.clone(),
        groups: multicast_groups.clone(),
        membership: membership.clone(),
        conversations: conversations.clone(),
        reader: reader.clone(),
    };
    let (router, router_task) = multicast_router::start(router_services, shutdown.clone());
    hub.set_multicast_router(router);
    let state = AppState::new(AppServices {
        auth: Arc::new(Authenticator::new(&config.jwt)),
        media,
        push,
        search,
        media_urls: Arc::new(crate::media_urls::UrlSigner::new(&config.jwt.secret)),
        log: Arc::new(MessageLog::new(storage.clone()).with_sender_read_receipts(receipts.clone())),
        reader: reader.clone(),
        conversations,
        membership,
        hub: hub.clone(),
        multicast_groups: multicast_groups.clone(),
        receipts,
        delivered,
        nats: nats.clone(),
        presence: presence.clone(),
        rate_limiter: Arc::new(crate::rate_limit::RateLimiter::new(redis.clone(), config.rate_limits.clone())),
        content_filter: Arc::new(crate::content_filter::ContentFilter::new(config.content_policy.clone(), redis.clone())?),
        typing: Arc::new(TypingLimiter::new(redis)),
        connections: TaskTracker::new(),
        shutdown: shutdown.clone(),
        config: Arc::new(config),
    });
    tracing::info!(address = %listener.local_addr()?, "gateway listening");
    // Frames are small and latency-bound: without TCP_NODELAY, Nagle holds a second small write
    // back until the peer's delayed ACK (~40 ms), which the load generator measured on every ack.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
    });
    // The peer address is what per-address rate limits count.
    let router = http::router(state.clone()).merge(telemetry::operations_routes(readiness));
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("http server failed")?;
    // Writers saw the same token and are sending close frames with a reason.
    state.connections.close();
    if tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, state.connections.wait()).await.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    // Every connection's disconnect is queued by now: presence announces them before NATS is flushed.
    if let Some(presence_task) = presence_task {
        let _ = tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, presence.stop()).await;
        presence_task.abort();
    }
    delivery_tasks.close();
    let _ = tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, delivery_tasks.wait()).await;
    let _ = watermark_task.await;
    let _ = membership_task.await;
    let _ = multicast_groups_task.await;
    let _ = router_task.await;
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("gateway stopped");
    Ok(())
}
