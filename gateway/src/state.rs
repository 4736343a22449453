//! Shared state handed to every HTTP handler and WebSocket session.

use std::sync::Arc;

use store::{Conversations, LogReader, MembershipCache, MessageLog, Receipts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::delivery_hub::DeliveryHub;
use crate::receipt_coalescer::DeliveredSink;

/// Cheap to clone: every connection's session and task holds one. The services are behind one
/// `Arc` because they are large by value (each JetStream handle caches its stream's info): held
/// by value, they cost every idle WebSocket connection ~40 KiB (measured with `size_of_val`).
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

pub struct AppServices {
    pub config: Arc<GatewayConfig>,
    pub auth: Arc<Authenticator>,
    pub log: Arc<MessageLog>,
    pub reader: LogReader,
    pub conversations: Arc<Conversations>,
    pub membership: Arc<MembershipCache>,
    pub hub: Arc<DeliveryHub>,
    /// Which groups are delivered by multicast; a group reaching `multicast_min_members` is flagged here.
    pub multicast_groups: Arc<store::MulticastGroups>,
    pub receipts: Receipts,
    /// Coalesced delivered watermarks: receipt frames and writes.
    pub delivered: DeliveredSink,
    pub nats: async_nats::Client,
    /// Device presence in Redis; a no-op handle when Redis is not configured.
    pub presence: crate::presence::Presence,
    /// Deny-list and spam signal for readable text.
    pub content_filter: Arc<crate::content_filter::ContentFilter>,
    /// Token buckets for sends, connects and uploads, shared through Redis.
    pub rate_limiter: Arc<crate::rate_limit::RateLimiter>,
    /// One relayed `typing` per user, conversation and window.
    pub typing: Arc<crate::typing::TypingLimiter>,
    /// Every WebSocket connection task, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    pub shutdown: CancellationToken,
    /// Media records, quarantine and served objects, upload jobs.
    pub media: store::MediaStorage,
    /// Push registrations and notification settings.
    pub push: store::PushStorage,
    /// The analysts' audit stream.
    pub search: store::SearchStorage,
    /// Signs and checks upload and download URLs.
    pub media_urls: Arc<crate::media_urls::UrlSigner>,
}
