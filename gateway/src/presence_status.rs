//! Who sees a user's presence (their contacts), reading users' presence from Redis, and announcing it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use redis::aio::ConnectionManager;
use redis::Value;
use schemas::{PresenceStatus, ServerFrame, Timestamp};
use store::{Conversations, MembershipCache, StoreError};
use subjects::Id;

use crate::presence_scripts::PresenceScripts;

/// Users per STATUS script call, so one call never blocks Redis for long.
const STATUS_BATCH: usize = 256;
/// Member sets loaded at once when a user is in many conversations.
const MEMBER_LOADS_IN_FLIGHT: usize = 16;
/// Cap on any one presence read or write, so a stuck Redis cannot stall a connection or the presence task.
pub const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The users who see one user's presence: everyone they share a conversation with.
#[derive(Clone)]
pub struct ContactDirectory {
    pub conversations: Arc<Conversations>,
    pub membership: Arc<MembershipCache>,
}

impl ContactDirectory {
    /// The union of the members of `user`'s conversations, without `user`.
    pub async fn contacts_of(&self, user: &Id) -> Result<BTreeSet<Id>, StoreError> {
        let conversations = self.conversations.conversations_of(user).await?;
        let member_sets: Vec<_> = futures::stream::iter(conversations)
            .map(|conversation| async move { self.membership.members(&conversation).await })
            .buffer_unordered(MEMBER_LOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut contacts: BTreeSet<Id> = member_sets.iter().flat_map(|members| members.keys().cloned()).collect();
        contacts.remove(user);
        Ok(contacts)
    }
}

/// One user's presence as Redis has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPresence {
    pub online: bool,
    pub last_seen: Option<Timestamp>,
}

impl UserPresence {
    pub fn to_frame(&self, user: &Id) -> ServerFrame {
        let status = if self.online { PresenceStatus::Online } else { PresenceStatus::Offline };
        let last_seen = if self.online { None } else { self.last_seen };
        ServerFrame::Presence { user: user.to_string(), status, last_seen }
    }
}

/// Reads presence from Redis; shared by the presence task and every connection's snapshot.
#[derive(Clone)]
pub struct PresenceReader {
    pub redis: ConnectionManager,
    pub scripts: Arc<PresenceScripts>,
}

impl PresenceReader {
    /// The presence of each of `users`, in order, in one round trip.
    pub async fn statuses(&self, users: &[Id]) -> anyhow::Result<Vec<UserPresence>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for chunk in users.chunks(STATUS_BATCH) {
            self.scripts.queue_status(&mut pipe, chunk);
        }
        let mut redis = self.redis.clone();
        let replies: Vec<Vec<Value>> = tokio::time::timeout(REDIS_CALL_TIMEOUT, self.scripts.query(&mut redis, &pipe))
            .await
            .map_err(|_| anyhow::anyhow!("presence read timed out"))??;
        let fields: Vec<Value> = replies.into_iter().flatten().collect();
        anyhow::ensure!(fields.len() == users.len() * 2, "presence read returned {} fields for {} users", fields.len(), users.len());
        Ok(fields.chunks(2).map(|pair| UserPresence { online: integer(&pair[0]) > 0, last_seen: unix_millis(&pair[1]) }).collect())
    }
}

/// Tells every contact of `user` what Redis says about them now.
///
/// Called after a transition, but it re-reads rather than trusting the transition: when two gateways
/// announce racing transitions (last device gone here, a new one there), both end up announcing the
/// state after the race, whichever publishes last.
pub async fn announce_current_status(reader: &PresenceReader, directory: &ContactDirectory, nats: &async_nats::Client, user: &Id) -> anyhow::Result<()> {
    let contacts = directory.contacts_of(user).await?;
    if contacts.is_empty() {
        return Ok(());
    }
    let presence = reader.statuses(std::slice::from_ref(user)).await?.remove(0);
    let frame = presence.to_frame(user);
    for contact in &contacts {
        store::publish_event(nats, contact, &frame).await?;
    }
    tracing::debug!(%user, online = presence.online, contacts = contacts.len(), "presence announced");
    Ok(())
}

pub fn integer(value: &Value) -> i64 {
    match value {
        Value::Int(number) => *number,
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(|text| text.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn unix_millis(value: &Value) -> Option<Timestamp> {
    let millis = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse::<i128>().ok()?,
        Value::Int(number) => i128::from(*number),
        _ => return None,
    };
    Timestamp::from_unix_timestamp_nanos(millis * 1_000_000).ok()
}
