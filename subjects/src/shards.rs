//! The message log's shards: which stream and per-message buckets hold a conversation, and where a new conversation goes.
//!
//! A shard is one log stream plus the buckets written on every send (index, thread index,
//! folded states, idempotency records, receipts), so all of a send's JetStream writes scale out together.
//! Shard 0 keeps the original names (`MESSAGES`, `msg.<conv>`, `msgindex`, ...), so a deployment
//! that never sets a shard count, or that had one stream before, needs no migration: raising the
//! count only sends *new* conversations to the new shards, and a conversation's shard, recorded
//! with it at creation, never changes.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};

use crate::{Id, StorageSettings};

/// One shard of the message log. Shard 0 is the original stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shard(pub u32);

/// Shards the NATS users file grants (`nats-config/users.conf`): a stream name is one subject
/// token, so permissions name each shard's stream and buckets. More shards need a regenerated file.
pub const MAX_MESSAGE_SHARDS: u32 = 16;

impl Shard {
    pub const FIRST: Shard = Shard(0);

    /// Shards `0..count`.
    pub fn all(count: u32) -> impl Iterator<Item = Shard> {
        (0..count).map(Shard)
    }

    /// Where a conversation created while the deployment has `count` shards lives, for good: a
    /// stable hash of its id (FNV-1a), so placement does not depend on which process creates it.
    pub fn for_new_conversation(conversation: &Id, count: u32) -> Shard {
        let hash = conversation.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
        Shard((hash % u64::from(count.max(1))) as u32)
    }

    /// `name` for shard 0, `name_<k>` for shard k: KV bucket and stream names allow `_`, never `.`.
    fn suffixed(self, name: &str) -> String {
        match self.0 {
            0 => name.to_owned(),
            shard => format!("{name}_{shard}"),
        }
    }

    /// `MESSAGES`, `MESSAGES_1`, ...
    pub fn message_stream(self) -> String {
        self.suffixed(crate::MESSAGE_STREAM)
    }

    /// `msg.<conv>` in shard 0, `msg.<k>.<conv>` in shard k: distinct token counts, so no two shards' subjects overlap.
    pub fn message_subject(self, conversation: &Id) -> String {
        match self.0 {
            0 => format!("{MESSAGE_SUBJECT_PREFIX}{conversation}"),
            shard => format!("{MESSAGE_SUBJECT_PREFIX}{shard}.{conversation}"),
        }
    }

    /// What the shard's stream captures: `msg.*` or `msg.<k>.*`.
    pub fn message_subjects_filter(self) -> String {
        match self.0 {
            0 => format!("{MESSAGE_SUBJECT_PREFIX}*"),
            shard => format!("{MESSAGE_SUBJECT_PREFIX}{shard}.*"),
        }
    }

    pub fn message_index_bucket(self) -> String {
        self.suffixed(crate::MESSAGE_INDEX_BUCKET)
    }

    pub fn thread_index_bucket(self) -> String {
        self.suffixed(crate::THREAD_INDEX_BUCKET)
    }

    pub fn message_state_bucket(self) -> String {
        self.suffixed(crate::MESSAGE_STATE_BUCKET)
    }

    pub fn client_msg_id_bucket(self) -> String {
        self.suffixed(crate::CLIENT_MSG_ID_BUCKET)
    }

    /// Watermarks are written by every send (the sender's read) and every read and delivery, keyed by conversation.
    pub fn receipts_bucket(self) -> String {
        self.suffixed(crate::RECEIPTS_BUCKET)
    }

    /// The shard's log stream.
    pub fn message_stream_config(self, settings: &StorageSettings) -> stream::Config {
        stream::Config {
            name: self.message_stream(),
            description: Some(format!("conversation log, shard {}: {}<conversation>", self.0, self.message_subject_prefix())),
            subjects: vec![self.message_subjects_filter()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: settings.message_ttl,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            allow_direct: true,
            deny_delete: false,
            ..Default::default()
        }
    }

    fn message_subject_prefix(self) -> String {
        self.message_subjects_filter().trim_end_matches('*').to_owned()
    }

    /// The buckets every send writes, in the order they are provisioned.
    pub fn bucket_configs(self, settings: &StorageSettings) -> Vec<kv::Config> {
        let ttl = settings.message_ttl;
        let shard = self.0;
        vec![
            crate::layout::bucket(&self.message_index_bucket(), &format!("history index, shard {shard}: <conversation>.<seq> -> stream sequence"), ttl, settings),
            crate::layout::bucket(&self.thread_index_bucket(), &format!("thread index, shard {shard}: <conversation>.<parent seq>.<reply seq> -> stream sequence"), ttl, settings),
            crate::layout::bucket(&self.message_state_bucket(), &format!("folded state, shard {shard}: <conversation>.<seq> -> edits, delete, reactions"), ttl, settings),
            crate::layout::bucket(&self.client_msg_id_bucket(), &format!("idempotency, shard {shard}: <conversation>.<client_msg_id> -> ack"), ttl, settings),
            crate::layout::bucket(&self.receipts_bucket(), &format!("watermarks, shard {shard}: <conversation>.<user>[.<device>] -> read, delivered"), Duration::ZERO, settings),
        ]
    }

    /// Every stream name of the shard: its log and its buckets' streams.
    pub fn stream_names(self) -> Vec<String> {
        let buckets = [self.message_index_bucket(), self.thread_index_bucket(), self.message_state_bucket(), self.client_msg_id_bucket(), self.receipts_bucket()];
        std::iter::once(self.message_stream()).chain(buckets.iter().map(|bucket| crate::kv_stream_name(bucket))).collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

const MESSAGE_SUBJECT_PREFIX: &str = "msg.";

/// (shard, conversation) from a message subject, `msg.<conv>` or `msg.<k>.<conv>`.
pub fn parse_message_subject(subject: &str) -> Option<(Shard, Id)> {
    let rest = subject.strip_prefix(MESSAGE_SUBJECT_PREFIX)?;
    match rest.split_once('.') {
        None => Some((Shard::FIRST, Id::parse(rest).ok()?)),
        Some((shard, conversation)) => {
            let shard: u32 = shard.parse().ok().filter(|shard| *shard > 0)?;
            Some((Shard(shard), Id::parse(conversation).ok()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_zero_keeps_the_original_names_and_others_are_suffixed() {
        let conversation = Id::parse("g-1").unwrap();
        assert_eq!(Shard(0).message_stream(), "MESSAGES");
        assert_eq!(Shard(0).message_subject(&conversation), "msg.g-1");
        assert_eq!(Shard(0).message_index_bucket(), "msgindex");
        assert_eq!(Shard(3).message_stream(), "MESSAGES_3");
        assert_eq!(Shard(3).message_subject(&conversation), "msg.3.g-1");
        assert_eq!(Shard(3).client_msg_id_bucket(), "msgids_3");
        for shard in Shard::all(4) {
            assert_eq!(parse_message_subject(&shard.message_subject(&conversation)), Some((shard, conversation.clone())));
            assert!(crate::permissions::subject_matches(&shard.message_subjects_filter(), &shard.message_subject(&conversation)));
            for other in Shard::all(4).filter(|other| *other != shard) {
                assert!(!crate::permissions::subject_matches(&other.message_subjects_filter(), &shard.message_subject(&conversation)));
            }
        }
        assert_eq!(parse_message_subject("msg.0.g-1"), None, "shard 0 has one spelling only");
        assert_eq!(parse_message_subject("msg.x.g-1"), None);
    }

    #[test]
    fn placement_is_stable_and_spreads_conversations() {
        let ids: Vec<Id> = (0..3_000).map(|n| Id::parse(&format!("g-{n:08}")).unwrap()).collect();
        let mut counts = [0usize; 3];
        for id in &ids {
            let shard = Shard::for_new_conversation(id, 3);
            assert_eq!(shard, Shard::for_new_conversation(id, 3));
            counts[shard.0 as usize] += 1;
        }
        assert!(counts.iter().all(|count| (800..=1_200).contains(count)), "{counts:?}");
        assert!(ids.iter().all(|id| Shard::for_new_conversation(id, 1) == Shard::FIRST));
    }
}
