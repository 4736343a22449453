//! Names and definitions of every NATS subject, stream, consumer and KV bucket Natter uses.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};

use crate::Id;

/// The conversation log: one subject per conversation, ordered and durable; shard 0's name (see [`crate::Shard`]).
pub const MESSAGE_STREAM: &str = "MESSAGES";
/// Durable consumer the fanout workers share (a work queue over the log).
pub const FANOUT_CONSUMER: &str = "fanout";
/// Conversation metadata: `<conv>` → kind, title, owner, created_at.
pub const CONVERSATIONS_BUCKET: &str = "conversations";
/// Membership by conversation: `<conv>.<user>` → role.
pub const MEMBERS_BUCKET: &str = "members";
/// Membership by user: `<user>.<conv>` → joined_at; feeds the inbox.
pub const MEMBERSHIPS_BUCKET: &str = "memberships";
/// Per-conversation index `<conv>.<seq>` → stream sequence, so history pages need no scan.
pub const MESSAGE_INDEX_BUCKET: &str = "msgindex";
/// Thread index `<conv>.<parent_seq>.<reply_seq>` → stream sequence, so a thread is listed by prefix, not by scanning.
pub const THREAD_INDEX_BUCKET: &str = "threadindex";
/// Folded state per message `<conv>.<seq>` → its edits, delete and reactions, so history shows a message as it now stands without reading its changes.
pub const MESSAGE_STATE_BUCKET: &str = "msgstate";
/// Durable idempotency record `<conv>.<client_msg_id>` → ack, for resends older than the duplicate window.
pub const CLIENT_MSG_ID_BUCKET: &str = "msgids";
/// Unread mentions `<user>.<conv>.<seq>` → stream sequence: one key per mention, purged once the user has read past it.
pub const MENTIONS_BUCKET: &str = "mentions";
/// How long a purged mention's marker stays before the server drops it, so a user's listing shrinks back to their unread mentions.
pub const MENTION_PURGE_MARKER_TTL: Duration = Duration::from_secs(60);

/// Groups delivered by multicast: `<conv>` → since when (set once, when the group first reaches the threshold).
pub const MULTICAST_BUCKET: &str = "multicast";

/// Watermarks: read per device at `<conv>.<user>.<device>`; read and delivered folded per user at `<conv>.<user>`.
pub const RECEIPTS_BUCKET: &str = "receipts";

/// Header on deliveries carrying the conversation id, so gateways route without parsing the body.
pub const HEADER_CONVERSATION: &str = "Natter-Conversation";
/// Header on deliveries carrying the message's per-conversation `seq`.
pub const HEADER_SEQ: &str = "Natter-Seq";
/// Header on deliveries carrying the message's stream sequence.
pub const HEADER_STREAM_SEQ: &str = "Natter-Stream-Seq";
/// Header on deliveries carrying the message's sender, so gateways know whom a delivered receipt concerns.
pub const HEADER_SENDER: &str = "Natter-Sender";
/// Header on deliveries carrying the message's `sent_at` in Unix microseconds, so gateways time delivery without parsing the body.
pub const HEADER_SENT_AT_MICROS: &str = "Natter-Sent-At-Micros";
/// Header on log appends (and the deliveries and push jobs made from them) naming the gateway request or connection that caused them, for log correlation.
pub const HEADER_REQUEST_ID: &str = "Natter-Request-Id";

const MULTICAST_SUBJECT_PREFIX: &str = "mcast.";
const DELIVER_SUBJECT_PREFIX: &str = "deliver.";

/// `deliver.<user>`: core NATS subject gateways subscribe to for a connected user's devices.
pub fn deliver_subject(user: &Id) -> String {
    format!("{DELIVER_SUBJECT_PREFIX}{user}")
}

/// `deliver.*`: every user's delivery subject, for gateways' and workers' permissions.
pub fn every_deliver_subject() -> String {
    format!("{DELIVER_SUBJECT_PREFIX}*")
}

/// `mcast.<conv>`: a large group's deliveries, published once for every gateway holding one of its members.
pub fn multicast_subject(conversation: &Id) -> String {
    format!("{MULTICAST_SUBJECT_PREFIX}{conversation}")
}

/// `mcast.*`: every group's multicast subject, for permissions.
pub fn every_multicast_subject() -> String {
    format!("{MULTICAST_SUBJECT_PREFIX}*")
}

/// `<conv>.<user>` in [`MEMBERS_BUCKET`].
pub fn member_key(conversation: &Id, user: &Id) -> String {
    format!("{conversation}.{user}")
}

/// Filter for every member key of one conversation in [`MEMBERS_BUCKET`].
pub fn members_of_conversation_filter(conversation: &Id) -> String {
    format!("{conversation}.*")
}

/// Splits a [`MEMBERS_BUCKET`] key into (conversation, user).
pub fn parse_member_key(key: &str) -> Option<(Id, Id)> {
    let (conversation, user) = key.split_once('.')?;
    Some((Id::parse(conversation).ok()?, Id::parse(user).ok()?))
}

/// `<user>.<conv>` in [`MEMBERSHIPS_BUCKET`].
pub fn membership_key(user: &Id, conversation: &Id) -> String {
    format!("{user}.{conversation}")
}

/// Filter for every conversation key of one user in [`MEMBERSHIPS_BUCKET`].
pub fn memberships_of_user_filter(user: &Id) -> String {
    format!("{user}.*")
}

/// Splits a [`MEMBERSHIPS_BUCKET`] key into (user, conversation).
pub fn parse_membership_key(key: &str) -> Option<(Id, Id)> {
    let (user, conversation) = key.split_once('.')?;
    Some((Id::parse(user).ok()?, Id::parse(conversation).ok()?))
}

/// `<conv>.<seq>` in [`MESSAGE_INDEX_BUCKET`].
pub fn message_index_key(conversation: &Id, seq: u64) -> String {
    format!("{conversation}.{seq}")
}

/// `<conv>.<seq>` in [`MESSAGE_STATE_BUCKET`].
pub fn message_state_key(conversation: &Id, seq: u64) -> String {
    format!("{conversation}.{seq}")
}

/// `<conv>.<parent_seq>.<reply_seq>` in [`THREAD_INDEX_BUCKET`].
pub fn thread_index_key(conversation: &Id, parent_seq: u64, reply_seq: u64) -> String {
    format!("{conversation}.{parent_seq}.{reply_seq}")
}

/// `<conv>.<parent_seq>.*`: every reply to one message in [`THREAD_INDEX_BUCKET`].
pub fn thread_replies_filter(conversation: &Id, parent_seq: u64) -> String {
    format!("{conversation}.{parent_seq}.*")
}

/// The reply's `seq` from a [`THREAD_INDEX_BUCKET`] key.
pub fn reply_seq_of_thread_key(key: &str) -> Option<u64> {
    key.rsplit_once('.')?.1.parse().ok()
}

/// `<user>.<conv>.<seq>` in [`MENTIONS_BUCKET`]: `user` is mentioned in message `seq` of `conversation`.
pub fn mention_key(user: &Id, conversation: &Id, seq: u64) -> String {
    format!("{user}.{conversation}.{seq}")
}

/// `<user>.>`: every mention of one user in [`MENTIONS_BUCKET`], all conversations (the inbox's one listing).
pub fn mentions_of_user_filter(user: &Id) -> String {
    format!("{user}.>")
}

/// `<user>.<conv>.*`: one user's mentions in one conversation in [`MENTIONS_BUCKET`].
pub fn mentions_in_conversation_filter(user: &Id, conversation: &Id) -> String {
    format!("{user}.{conversation}.*")
}

/// (conversation, seq) from a [`MENTIONS_BUCKET`] key.
pub fn parse_mention_key(key: &str) -> Option<(Id, u64)> {
    let mut parts = key.split('.');
    let (_user, conversation, seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((Id::parse(conversation).ok()?, seq.parse().ok()?))
}

/// `<conv>.<client_msg_id>` in [`CLIENT_MSG_ID_BUCKET`].
pub fn client_msg_id_key(conversation: &Id, client_msg_id: &Id) -> String {
    format!("{conversation}.{client_msg_id}")
}

/// `<conv>.<user>.<device>` in [`RECEIPTS_BUCKET`]: one device's watermarks.
pub fn device_receipt_key(conversation: &Id, user: &Id, device: &Id) -> String {
    format!("{conversation}.{user}.{device}")
}

/// `<conv>.<user>` in [`RECEIPTS_BUCKET`]: the highest watermarks over the user's devices.
pub fn user_receipt_key(conversation: &Id, user: &Id) -> String {
    format!("{conversation}.{user}")
}

/// `Nats-Msg-Id` of a send: JetStream drops a second publish with the same id inside the window.
pub fn publish_dedupe_id(conversation: &Id, client_msg_id: &Id) -> String {
    format!("{conversation}:{client_msg_id}")
}

/// The subject a KV bucket stores `key` under, for raw reads that async-nats has no helper for.
pub fn kv_key_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The stream that backs a KV bucket.
pub fn kv_stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Operator-tunable parts of the stream and bucket definitions.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Replicas per stream and bucket: 1 on a single node, 3 on a cluster.
    pub replicas: usize,
    /// Message retention (the stream's max age); zero keeps messages forever.
    pub message_ttl: Duration,
    /// How long JetStream itself remembers `Nats-Msg-Id`s; older resends hit the msgids bucket.
    pub duplicate_window: Duration,
    /// Whether a process creates the streams and buckets it uses or only opens them.
    pub provisioning: Provisioning,
    /// Shards of the message log new conversations are spread over; a conversation keeps the shard it was created in.
    pub message_shards: u32,
}

/// Who creates the layout. A role running as its own NATS user (see [`crate::permissions`]) may not
/// create or update streams, so it opens what `natter provision` made; without users every process
/// provisions at start, which keeps the all-in-one launcher and tests one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provisioning {
    #[default]
    CreateOrUpdate,
    OpenExisting,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            replicas: 1,
            message_ttl: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            provisioning: Provisioning::CreateOrUpdate,
            message_shards: 1,
        }
    }
}

/// The fanout workers' shared durable consumer: every copy pulls from it, so adding copies adds throughput.
pub fn fanout_consumer_config(ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(FANOUT_CONSUMER.to_owned()),
        description: Some("fanout: msg.* -> deliver.<user>".to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

/// A history-1 file-backed KV bucket with the deployment's replicas.
pub(crate) fn bucket(name: &str, description: &str, max_age: Duration, settings: &StorageSettings) -> kv::Config {
    kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Every KV bucket outside the log's shards (see [`crate::Shard::bucket_configs`]), in the order they are provisioned.
pub fn bucket_configs(settings: &StorageSettings) -> Vec<kv::Config> {
    let forever = Duration::ZERO;
    vec![
        bucket(CONVERSATIONS_BUCKET, "conversation metadata by id", forever, settings),
        bucket(MEMBERS_BUCKET, "membership: <conversation>.<user> -> role", forever, settings),
        bucket(MEMBERSHIPS_BUCKET, "membership: <user>.<conversation>", forever, settings),
        bucket(MULTICAST_BUCKET, "multicast groups: <conversation> -> since", forever, settings),
        mentions_bucket(settings),
    ]
}

/// Mentions are purged as they are read; `limit_markers` lets a purge marker expire too (per-message
/// TTL), so a user's prefix listing stays the size of their unread mentions instead of growing with
/// every mention ever read.
fn mentions_bucket(settings: &StorageSettings) -> kv::Config {
    kv::Config {
        limit_markers: Some(MENTION_PURGE_MARKER_TTL),
        ..bucket(MENTIONS_BUCKET, "unread mentions: <user>.<conversation>.<seq> -> stream sequence", settings.message_ttl, settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_parsers() {
        let conversation = Id::parse("c1").unwrap();
        let user = Id::parse("alice").unwrap();
        assert_eq!(parse_member_key(&member_key(&conversation, &user)), Some((conversation.clone(), user.clone())));
        assert_eq!(parse_membership_key(&membership_key(&user, &conversation)), Some((user.clone(), conversation.clone())));
        assert_eq!(reply_seq_of_thread_key(&thread_index_key(&Id::parse("c1").unwrap(), 3, 17)), Some(17));
        assert_eq!(parse_mention_key(&mention_key(&user, &Id::parse("c2").unwrap(), 9)), Some((Id::parse("c2").unwrap(), 9)));
        assert_eq!(parse_mention_key("alice.c1"), None);
        assert_eq!(parse_mention_key("alice.c1.9.1"), None);
    }
}
