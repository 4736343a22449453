//! Natter's state in NATS JetStream: provisioning, the conversation log (append and read), conversations and membership.
//!
//! Gateways and workers share this crate; it is the only code that talks to JetStream
//! streams and KV buckets directly.

mod batch_get;
mod conversations;
mod error;
mod inbox;
mod kv_get;
mod kv_listing;
mod log_append;
mod log_read;
mod media;
mod membership_cache;
mod multicast;
mod message_state;
mod mentions;
mod provision;
mod push;
mod pull_messages;
mod push_registered_users;
mod receipts;
mod search;
mod settings;
mod shards;
mod retry;

pub use conversations::{direct_conversation_id, ConversationLimits, Conversations};
pub use error::StoreError;
pub use log_append::{AppendOutcome, AppendRequest, MessageLog};
pub use log_read::{HistoryRequest, LogItem, LogReader, Page, MAX_PAGE};
pub use media::{MediaStorage, VersionedMediaRecord};
pub use membership_cache::{MemberSet, MembershipCache, MembershipChange};
pub use multicast::MulticastGroups;
pub use message_state::{MessageStates, VersionedState};
pub use mentions::Mentions;
pub use provision::{provision_layout, Storage};
pub use push::{PushStorage, Silence, VersionedRegistration};
pub use pull_messages::{open_pull_messages, recover_pull_messages, PULL_EXPIRES, PULL_HEARTBEAT};
pub use push_registered_users::RegisteredUsers;
pub use receipts::{Receipts, WatermarkMove};
pub use search::{LogBounds, SearchStorage};
pub use batch_get::{last_messages, LastMessage};
pub use shards::{FixedFacts, LogShard};
pub use settings::{storage_settings_from_environment, NATS_USER};
pub use retry::{retry_at_startup, STARTUP_PATIENCE};

/// Sends a ready-made frame (typing, receipt, presence) to every device of `user` connected anywhere.
///
/// Core NATS, not the log: these are ephemeral and carry no `seq`, so gateways forward them as they come.
pub async fn publish_event(client: &async_nats::Client, user: &subjects::Id, frame: &schemas::ServerFrame) -> Result<(), StoreError> {
    client
        .publish(subjects::deliver_subject(user), frame.to_json().into())
        .await
        .map_err(|error| error::from_nats("failed to publish an event", error))
}
