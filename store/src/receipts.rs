//! Read watermarks per (conversation, user, device) and read and delivered ones folded per user; monotonic by compare-and-set.
//!
//! Each key holds one record (the bucket keeps no history), so the store is compacted by
//! construction. A lower `seq` never moves a watermark back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use schemas::{ReceiptKind, ReceiptRecord};
use subjects::{Id, Shard};

use crate::batch_get;
use crate::error::{from_nats, StoreError};
use crate::{Mentions, Storage};

/// Compare-and-set rounds before giving up on a key many writers are moving at once.
const MAX_CAS_ATTEMPTS: usize = 32;

/// Which of the two records a watermark change moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkMove {
    pub device_moved: bool,
    pub user_moved: bool,
}

/// Beyond this many remembered records the memory starts over; a miss costs one extra read.
const MAX_REMEMBERED_RECORDS: usize = 100_000;

#[derive(Clone)]
pub struct Receipts {
    client: async_nats::Client,
    /// Each conversation's watermarks live in its log shard's `receipts` bucket.
    storage: Storage,
    /// Reading past a mention purges it, so the user's mention listing stays small.
    mentions: Mentions,
    /// The last record (and its revision) this process wrote or read per key: the next
    /// compare-and-set tries it directly, one round trip instead of two while no one else wrote.
    /// Watermarks only grow, so a remembered value that already covers a `seq` is proof enough.
    remembered: Arc<Mutex<HashMap<String, (u64, ReceiptRecord)>>>,
}

impl Receipts {
    pub fn new(client: async_nats::Client, storage: &Storage) -> Receipts {
        Receipts { mentions: Mentions::new(client.clone(), storage), client, storage: storage.clone(), remembered: Arc::default() }
    }

    /// Moves the user's `kind` watermark up to `seq` (never down), and for reads the device's too.
    ///
    /// Delivered is folded per user only: nothing reads a device's delivered watermark, and
    /// writing it doubled the receipts stream's writes (every message moves every member device's).
    pub async fn advance(&self, conversation: &Id, user: &Id, device: &Id, kind: ReceiptKind, seq: u64) -> Result<WatermarkMove, StoreError> {
        let device_moved = match kind {
            ReceiptKind::Read => self.advance_key(conversation, &subjects::device_receipt_key(conversation, user, device), kind, seq).await?,
            ReceiptKind::Delivered => false,
        };
        let user_moved = self.advance_key(conversation, &subjects::user_receipt_key(conversation, user), kind, seq).await?;
        if kind == ReceiptKind::Read && user_moved {
            // Best effort: a mention left behind is purged by the user's next inbox listing.
            if let Err(error) = self.mentions.forget_read(user, conversation, seq).await {
                tracing::debug!(%error, %conversation, %user, "failed to purge read mentions");
            }
        }
        Ok(WatermarkMove { device_moved, user_moved })
    }

    /// Moves only the user's folded watermark; the device's follows through the coalescer.
    pub async fn advance_user(&self, conversation: &Id, user: &Id, kind: ReceiptKind, seq: u64) -> Result<bool, StoreError> {
        self.advance_key(conversation, &subjects::user_receipt_key(conversation, user), kind, seq).await
    }

    /// The user's folded watermarks in each conversation: per shard, one round trip per 256 conversations, shards in parallel.
    pub async fn user_watermarks(&self, user: &Id, conversations: &[Id]) -> Result<HashMap<Id, ReceiptRecord>, StoreError> {
        let shards = self.storage.shards_of(conversations).await?;
        let mut by_shard: HashMap<Shard, (&kv::Store, Vec<&Id>)> = HashMap::new();
        for conversation in conversations {
            let shard = &shards[conversation];
            by_shard.entry(shard.shard).or_insert_with(|| (&shard.receipts, Vec::new())).1.push(conversation);
        }
        let reads = by_shard.into_values().map(|(bucket, conversations)| async move {
            let subject_of = |conversation: &Id| format!("{}{}", bucket.prefix, subjects::user_receipt_key(conversation, user));
            let subjects: Vec<String> = conversations.iter().map(|conversation| subject_of(conversation)).collect();
            let found = batch_get::last_messages(&self.client, &bucket.stream_name, &subjects).await?;
            let mut watermarks = Vec::with_capacity(found.len());
            for (conversation, subject) in conversations.into_iter().zip(&subjects) {
                if let Some(last) = found.get(subject) {
                    watermarks.push((conversation.clone(), ReceiptRecord::from_bytes(&last.payload).map_err(StoreError::internal)?));
                }
            }
            Ok::<_, StoreError>(watermarks)
        });
        let mut watermarks = HashMap::with_capacity(conversations.len());
        for read in futures::future::join_all(reads).await {
            watermarks.extend(read?);
        }
        Ok(watermarks)
    }

    pub async fn watermarks(&self, conversation: &Id, user: &Id) -> Result<ReceiptRecord, StoreError> {
        let entry = self.storage.shard_of(conversation).await?.receipts.entry(subjects::user_receipt_key(conversation, user)).await.map_err(|error| from_nats("failed to read receipts", error))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => ReceiptRecord::from_bytes(&entry.value).map_err(StoreError::internal),
            _ => Ok(ReceiptRecord::default()),
        }
    }

    async fn advance_key(&self, conversation: &Id, key: &str, kind: ReceiptKind, seq: u64) -> Result<bool, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        let bucket = &shard.receipts;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let remembered = self.remembered.lock().expect("receipt memory lock poisoned").get(key).cloned();
            let (mut record, revision) = match remembered {
                Some((revision, record)) => (record, Some(revision)),
                None => match bucket.entry(key).await.map_err(|error| from_nats("failed to read receipts", error))? {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        (ReceiptRecord::from_bytes(&entry.value).map_err(StoreError::internal)?, Some(entry.revision))
                    }
                    _ => (ReceiptRecord { v: 1, ..ReceiptRecord::default() }, None),
                },
            };
            let watermark = match kind {
                ReceiptKind::Read => &mut record.read,
                ReceiptKind::Delivered => &mut record.delivered,
            };
            if *watermark >= seq {
                return Ok(false);
            }
            *watermark = seq;
            // Whatever has been read has been delivered.
            record.delivered = record.delivered.max(record.read);
            record.v = 1;
            let written = match revision {
                Some(revision) => match bucket.update(key, record.to_bytes().into(), revision).await {
                    Ok(new_revision) => Some(new_revision),
                    Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Err(error) => return Err(from_nats("failed to write receipts", error)),
                },
                None => match bucket.create(key, record.to_bytes().into()).await {
                    Ok(new_revision) => Some(new_revision),
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => None,
                    Err(error) => return Err(from_nats("failed to write receipts", error)),
                },
            };
            let mut remembered = self.remembered.lock().expect("receipt memory lock poisoned");
            match written {
                Some(new_revision) => {
                    if remembered.len() >= MAX_REMEMBERED_RECORDS {
                        remembered.clear();
                    }
                    remembered.insert(key.to_owned(), (new_revision, record));
                    return Ok(true);
                }
                // Someone else wrote this key: forget what we knew and read it again.
                None => {
                    remembered.remove(key);
                }
            }
        }
        Err(StoreError::Unavailable(format!("receipt {key} is too contended; retry")))
    }
}
