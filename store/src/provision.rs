//! Creates or updates every stream and bucket from the definitions in `subjects`, idempotently, at start.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use schemas::ConversationRecord;
use subjects::{Id, Provisioning, Shard, StorageSettings, MAX_MESSAGE_SHARDS};

use crate::batch_get::last_messages;
use crate::error::{from_nats, StoreError};
use crate::kv_get::get_confirmed;
use crate::shards::{FixedFacts, LogShard, ShardTable};

/// Handles to every stream and bucket; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub jetstream: jetstream::Context,
    pub conversations: kv::Store,
    pub members: kv::Store,
    pub memberships: kv::Store,
    pub mentions: kv::Store,
    pub multicast: kv::Store,
    shards: Arc<ShardTable>,
}

impl Storage {
    /// Creates or updates the layout (safe to run from every process at every start), or only
    /// opens it when `settings` say the layout belongs to the provisioner.
    pub async fn provision(jetstream: jetstream::Context, settings: &StorageSettings) -> Result<Storage, StoreError> {
        let count = settings.message_shards;
        if !(1..=MAX_MESSAGE_SHARDS).contains(&count) {
            return Err(StoreError::Invalid(format!("the message log has 1 to {MAX_MESSAGE_SHARDS} shards, not {count}")));
        }
        let mut shards = Vec::new();
        if settings.provisioning == Provisioning::OpenExisting {
            for shard in Shard::all(count) {
                shards.push(LogShard::open(&jetstream, shard).await?);
            }
            return Storage::open_buckets(jetstream, count, shards).await;
        }
        // Conversations never move, so a shard once used must stay consumed: fewer shards would strand them.
        if jetstream.get_stream(Shard(count).message_stream()).await.is_ok() {
            return Err(StoreError::Invalid(format!(
                "message stream {} exists, so the log has more than the {count} shards configured; the shard count can grow but never shrink",
                Shard(count).message_stream()
            )));
        }
        for shard in Shard::all(count) {
            shards.push(LogShard::provision(&jetstream, shard, settings).await?);
        }
        for config in subjects::bucket_configs(settings) {
            let bucket = config.bucket.clone();
            jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|error| from_nats(&format!("failed to create or update bucket {bucket}"), error))?;
        }
        Storage::open_buckets(jetstream, count, shards).await
    }

    async fn open_buckets(jetstream: jetstream::Context, count: u32, shards: Vec<LogShard>) -> Result<Storage, StoreError> {
        let open = |bucket: &'static str| {
            let jetstream = jetstream.clone();
            async move {
                jetstream.get_key_value(bucket).await.map_err(|error| not_provisioned(bucket, error))
            }
        };
        Ok(Storage {
            conversations: open(subjects::CONVERSATIONS_BUCKET).await?,
            members: open(subjects::MEMBERS_BUCKET).await?,
            memberships: open(subjects::MEMBERSHIPS_BUCKET).await?,
            mentions: open(subjects::MENTIONS_BUCKET).await?,
            multicast: open(subjects::MULTICAST_BUCKET).await?,
            shards: Arc::new(ShardTable::new(jetstream.clone(), count, shards)),
            jetstream,
        })
    }

    /// Shards new conversations are spread over (`NATTER_MESSAGE_SHARDS`); consumers follow all of them.
    pub fn shard_count(&self) -> u32 {
        self.shards.count
    }

    pub async fn shard(&self, shard: Shard) -> Result<Arc<LogShard>, StoreError> {
        self.shards.shard(shard).await
    }

    /// Shards `0..shard_count()`, for the workers that consume every shard.
    pub async fn every_shard(&self) -> Result<Vec<Arc<LogShard>>, StoreError> {
        let mut shards = Vec::new();
        for shard in Shard::all(self.shard_count()) {
            shards.push(self.shard(shard).await?);
        }
        Ok(shards)
    }

    /// Where a conversation being created now goes.
    pub fn shard_for_new_conversation(&self, conversation: &Id) -> Shard {
        Shard::for_new_conversation(conversation, self.shard_count())
    }

    /// A conversation's shard and encryption, from its record; `None` when it has no record.
    pub async fn fixed_facts(&self, conversation: &Id) -> Result<Option<FixedFacts>, StoreError> {
        if let Some(facts) = self.shards.remembered(conversation) {
            return Ok(Some(facts));
        }
        // Confirmed with the leader on a miss: a replica can lag a conversation created a moment ago
        // elsewhere, and a miss would send its first append to `not_found` and its first read to shard 0.
        let Some(bytes) = get_confirmed(&self.conversations, conversation.as_str(), "conversation").await? else { return Ok(None) };
        let facts = FixedFacts::of(&ConversationRecord::from_bytes(&bytes).map_err(StoreError::internal)?);
        self.shards.remember(conversation, facts);
        Ok(Some(facts))
    }

    /// The shard holding a conversation's log. One without a record (not created, or created before
    /// records said where) reads as shard 0, the original stream; that answer is not remembered.
    pub async fn shard_of(&self, conversation: &Id) -> Result<Arc<LogShard>, StoreError> {
        let shard = self.fixed_facts(conversation).await?.map_or(Shard::FIRST, |facts| facts.shard);
        self.shard(shard).await
    }

    /// The shards of many conversations: remembered ones at no cost, the rest from one batch read of their records.
    pub async fn shards_of(&self, conversations: &[Id]) -> Result<HashMap<Id, Arc<LogShard>>, StoreError> {
        let mut placements: HashMap<Id, Shard> = HashMap::with_capacity(conversations.len());
        let mut unknown = Vec::new();
        for conversation in conversations {
            match self.shards.remembered(conversation) {
                Some(facts) => {
                    placements.insert(conversation.clone(), facts.shard);
                }
                None => unknown.push(conversation),
            }
        }
        if !unknown.is_empty() {
            let subject_of = |conversation: &Id| format!("{}{conversation}", self.conversations.prefix);
            let subjects: Vec<String> = unknown.iter().map(|conversation| subject_of(conversation)).collect();
            let records = last_messages(&self.jetstream.client(), &self.conversations.stream_name, &subjects).await?;
            for (conversation, subject) in unknown.into_iter().zip(&subjects) {
                let shard = match records.get(subject).filter(|record| !record.payload.is_empty()) {
                    Some(record) => {
                        let facts = FixedFacts::of(&ConversationRecord::from_bytes(&record.payload).map_err(StoreError::internal)?);
                        self.shards.remember(conversation, facts);
                        facts.shard
                    }
                    None => Shard::FIRST,
                };
                placements.insert(conversation.clone(), shard);
            }
        }
        let mut shards = HashMap::with_capacity(placements.len());
        for (conversation, shard) in placements {
            shards.insert(conversation, self.shard(shard).await?);
        }
        Ok(shards)
    }

    /// The shard to append to: only a conversation with a record takes messages.
    pub async fn shard_for_append(&self, conversation: &Id) -> Result<Arc<LogShard>, StoreError> {
        match self.fixed_facts(conversation).await? {
            Some(facts) => self.shard(facts.shard).await,
            None => Err(StoreError::NotFound(format!("conversation {conversation} not found"))),
        }
    }
}

/// Every stream, bucket and object store, created or updated; what `natter provision` runs before
/// the roles start with their own NATS users.
pub async fn provision_layout(client: async_nats::Client, settings: &StorageSettings) -> Result<(), StoreError> {
    let settings = StorageSettings { provisioning: Provisioning::CreateOrUpdate, ..settings.clone() };
    let storage = Storage::provision(jetstream::new(client.clone()), &settings).await?;
    crate::SearchStorage::provision(&storage, &settings).await?;
    crate::MediaStorage::provision(client.clone(), &settings).await?;
    crate::PushStorage::provision(client, &settings).await?;
    Ok(())
}

/// Opening a missing stream or bucket names the fix.
pub(crate) fn not_provisioned(name: &str, error: impl std::fmt::Display + std::fmt::Debug) -> StoreError {
    from_nats(&format!("failed to open {name} (a role with its own NATS user only opens the layout: run `natter provision` first)"), error)
}
