//! Shared state handed to every HTTP handler and WebSocket session.

use std::sync::Arc;

use store::{Conversations, LogReader, MembershipCache, MessageLog};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::delivery_hub::DeliveryHub;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub auth: Arc<Authenticator>,
    pub log: Arc<MessageLog>,
    pub reader: LogReader,
    pub conversations: Arc<Conversations>,
    pub membership: Arc<MembershipCache>,
    pub hub: Arc<DeliveryHub>,
    /// Every WebSocket connection task, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    pub shutdown: CancellationToken,
}
