//! The folded state of each message (`msgstate` bucket): edits, delete and reactions applied by compare-and-set.
//!
//! Folding is commutative and idempotent (see `schemas::MessageStateRecord`), so the gateway
//! that appended a change, a resend of it, and the fanout worker that delivers it may all apply
//! it, in any order: whoever comes first writes it, the others find it there.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use schemas::{MessageStateRecord, StoredMessage};
use subjects::{Id, Shard};

use crate::batch_get::last_messages;
use crate::error::{from_nats, StoreError};
use crate::shards::LogShard;
use crate::Storage;

/// Compare-and-set attempts before giving up; each loss means another change landed, which is progress.
const MAX_CAS_ATTEMPTS: u32 = 64;

/// A message's folded state and its revision (the bucket's sequence for it: higher is newer).
pub type VersionedState = (MessageStateRecord, u64);

#[derive(Clone)]
pub struct MessageStates {
    storage: Storage,
}

impl MessageStates {
    pub fn new(storage: Storage) -> MessageStates {
        MessageStates { storage }
    }

    /// The state of message `seq`, None when nothing was ever folded into it.
    pub async fn get(&self, conversation: &Id, seq: u64) -> Result<Option<VersionedState>, StoreError> {
        let entry = self
            .storage
            .shard_of(conversation)
            .await?
            .message_state
            .entry(subjects::message_state_key(conversation, seq))
            .await
            .map_err(|error| from_nats("failed to read message state", error))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some((decode(&entry.value)?, entry.revision))),
            _ => Ok(None),
        }
    }

    /// The states of many messages of one conversation in one batch direct get.
    pub async fn get_many(&self, conversation: &Id, seqs: impl IntoIterator<Item = u64>) -> Result<HashMap<u64, VersionedState>, StoreError> {
        let wanted: Vec<(Id, u64)> = seqs.into_iter().map(|seq| (conversation.clone(), seq)).collect();
        Ok(self.get_each(&wanted).await?.into_iter().map(|((_, seq), state)| (seq, state)).collect())
    }

    /// The states of messages of any conversations (the inbox's last messages): one batch direct get per shard, in parallel.
    pub async fn get_each(&self, messages: &[(Id, u64)]) -> Result<HashMap<(Id, u64), VersionedState>, StoreError> {
        let conversations: Vec<Id> = messages.iter().map(|(conversation, _)| conversation.clone()).collect();
        let shards = self.storage.shards_of(&conversations).await?;
        let mut by_shard: HashMap<Shard, (Arc<LogShard>, Vec<&(Id, u64)>)> = HashMap::new();
        for message in messages {
            let shard = shards[&message.0].clone();
            by_shard.entry(shard.shard).or_insert_with(|| (shard, Vec::new())).1.push(message);
        }
        let client = self.storage.jetstream.client();
        let reads = by_shard.into_values().map(|(shard, messages)| {
            let client = client.clone();
            async move {
                let bucket = &shard.message_state;
                let subject_of = |(conversation, seq): &(Id, u64)| format!("{}{}", bucket.prefix, subjects::message_state_key(conversation, *seq));
                let subjects: Vec<String> = messages.iter().map(|message| subject_of(message)).collect();
                let found = last_messages(&client, &bucket.stream_name, &subjects).await?;
                let mut states = Vec::with_capacity(found.len());
                for (message, subject) in messages.into_iter().zip(&subjects) {
                    // States are only ever put; an empty payload would be a delete or expiry marker.
                    if let Some(last) = found.get(subject).filter(|last| !last.payload.is_empty()) {
                        states.push((message.clone(), (decode(&last.payload)?, last.stream_seq)));
                    }
                }
                Ok::<_, StoreError>(states)
            }
        });
        let mut states = HashMap::new();
        for read in futures::future::join_all(reads).await {
            states.extend(read?);
        }
        Ok(states)
    }

    /// Folds the change `entry` into its target's state; returns the state after it. A no-op when it
    /// is already there, and for a plain message or a change the server cannot read.
    pub async fn apply(&self, conversation: &Id, entry: &StoredMessage) -> Result<Option<VersionedState>, StoreError> {
        let Some(change) = &entry.change else { return Ok(None) };
        let key = subjects::message_state_key(conversation, change.target_seq);
        let shard = self.storage.shard_of(conversation).await?;
        let bucket = &shard.message_state;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = bucket.entry(key.as_str()).await.map_err(|error| from_nats("failed to read message state", error))?;
            let (mut state, revision) = match current {
                Some(current) if current.operation == kv::Operation::Put => (decode(&current.value)?, Some(current.revision)),
                _ => (MessageStateRecord::new(), None),
            };
            if !state.apply(&entry.message, change) {
                return Ok(revision.map(|revision| (state, revision)));
            }
            let bytes: bytes::Bytes = state.to_bytes().into();
            let written = match revision {
                Some(revision) => match bucket.update(key.as_str(), bytes, revision).await {
                    Ok(new_revision) => Some(new_revision),
                    Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Err(error) => return Err(from_nats("failed to write message state", error)),
                },
                None => match bucket.create(key.as_str(), bytes).await {
                    Ok(new_revision) => Some(new_revision),
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => None,
                    Err(error) => return Err(from_nats("failed to write message state", error)),
                },
            };
            if let Some(new_revision) = written {
                return Ok(Some((state, new_revision)));
            }
        }
        Err(StoreError::Unavailable(format!("message {} of {conversation} is changing too fast; retry", change.target_seq)))
    }
}

fn decode(bytes: &[u8]) -> Result<MessageStateRecord, StoreError> {
    MessageStateRecord::from_bytes(bytes).map_err(StoreError::internal)
}
