//! The message log's shards as this process holds them: each shard's stream and buckets, and which shard each conversation lives in.
//!
//! A conversation's shard and its encryption are fixed when it is created and written in its
//! record, so both are remembered here without ever going stale: a miss costs one record read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_nats::jetstream::{self, kv, stream::Stream};
use schemas::ConversationRecord;
use subjects::{Id, Shard, StorageSettings};

use crate::error::{from_nats, StoreError};
use crate::provision::not_provisioned;

/// Beyond this many remembered conversations the memory starts over; a miss costs one read.
const MAX_REMEMBERED_CONVERSATIONS: usize = 100_000;

/// One shard's log stream and the buckets every send to it writes.
pub struct LogShard {
    pub shard: Shard,
    pub messages: Stream,
    pub message_index: kv::Store,
    pub thread_index: kv::Store,
    pub message_state: kv::Store,
    pub client_msg_ids: kv::Store,
    pub receipts: kv::Store,
}

impl LogShard {
    /// Creates or updates the shard's stream and buckets.
    pub(crate) async fn provision(jetstream: &jetstream::Context, shard: Shard, settings: &StorageSettings) -> Result<LogShard, StoreError> {
        jetstream
            .create_or_update_stream(shard.message_stream_config(settings))
            .await
            .map_err(|error| from_nats(&format!("failed to create or update message stream {}", shard.message_stream()), error))?;
        for config in shard.bucket_configs(settings) {
            let bucket = config.bucket.clone();
            jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|error| from_nats(&format!("failed to create or update bucket {bucket}"), error))?;
        }
        LogShard::open(jetstream, shard).await
    }

    /// Opens what the provisioner made.
    pub(crate) async fn open(jetstream: &jetstream::Context, shard: Shard) -> Result<LogShard, StoreError> {
        let open_bucket = |bucket: String| async move { jetstream.get_key_value(&bucket).await.map_err(|error| not_provisioned(&bucket, error)) };
        let stream_name = shard.message_stream();
        Ok(LogShard {
            shard,
            messages: jetstream.get_stream(&stream_name).await.map_err(|error| not_provisioned(&stream_name, error))?,
            message_index: open_bucket(shard.message_index_bucket()).await?,
            thread_index: open_bucket(shard.thread_index_bucket()).await?,
            message_state: open_bucket(shard.message_state_bucket()).await?,
            client_msg_ids: open_bucket(shard.client_msg_id_bucket()).await?,
            receipts: open_bucket(shard.receipts_bucket()).await?,
        })
    }

    /// Whether the stream is replicated: a lagging replica can then miss what the leader has.
    pub fn is_replicated(&self) -> bool {
        self.messages.cached_info().config.num_replicas > 1
    }
}

/// What never changes about a conversation once created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedFacts {
    pub shard: Shard,
    pub encrypted: bool,
}

/// Open shards and remembered placements; shared by every clone of [`crate::Storage`].
pub(crate) struct ShardTable {
    jetstream: jetstream::Context,
    /// Shards new conversations are spread over.
    pub(crate) count: u32,
    open: RwLock<HashMap<Shard, Arc<LogShard>>>,
    facts: Mutex<HashMap<Id, FixedFacts>>,
}

impl ShardTable {
    pub(crate) fn new(jetstream: jetstream::Context, count: u32, shards: Vec<LogShard>) -> ShardTable {
        let open = shards.into_iter().map(|shard| (shard.shard, Arc::new(shard))).collect();
        ShardTable { jetstream, count, open: RwLock::new(open), facts: Mutex::default() }
    }

    /// The shard's handles; a shard beyond this process's count (a conversation placed by a process
    /// configured with more shards) is opened on first use.
    pub(crate) async fn shard(&self, shard: Shard) -> Result<Arc<LogShard>, StoreError> {
        if let Some(open) = self.open.read().expect("shard table lock poisoned").get(&shard) {
            return Ok(open.clone());
        }
        let opened = Arc::new(LogShard::open(&self.jetstream, shard).await?);
        Ok(self.open.write().expect("shard table lock poisoned").entry(shard).or_insert(opened).clone())
    }

    pub(crate) fn remembered(&self, conversation: &Id) -> Option<FixedFacts> {
        self.facts.lock().expect("facts lock poisoned").get(conversation).copied()
    }

    pub(crate) fn remember(&self, conversation: &Id, facts: FixedFacts) {
        let mut remembered = self.facts.lock().expect("facts lock poisoned");
        if remembered.len() >= MAX_REMEMBERED_CONVERSATIONS {
            remembered.clear();
        }
        remembered.insert(conversation.clone(), facts);
    }
}

impl FixedFacts {
    pub(crate) fn of(record: &ConversationRecord) -> FixedFacts {
        FixedFacts { shard: Shard(record.shard), encrypted: record.encrypted }
    }
}
