//! Which groups are delivered by multicast (`multicast` bucket): flagged once when a group reaches the threshold, followed by every gateway and fanout worker.
//!
//! A flag is never removed: a group that shrinks keeps multicast, which works at any size. Each
//! process holds every flag in memory (one entry per large group) from a listing at start plus a
//! watch, and tells its listeners about each new one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{self, CreateErrorKind};
use futures::StreamExt;
use schemas::{MulticastRecord, Timestamp};
use subjects::Id;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::{from_nats, StoreError};
use crate::kv_listing::list_entries;
use crate::Storage;

/// New flags waiting for a slow listener; one that falls behind re-reads every flag (`all`).
const CHANGES_QUEUE: usize = 1024;

pub struct MulticastGroups {
    bucket: kv::Store,
    flags: RwLock<HashMap<Id, Timestamp>>,
    changes: broadcast::Sender<Id>,
}

impl MulticastGroups {
    /// Loads every flag and follows the bucket until `shutdown`.
    pub async fn start(client: &async_nats::Client, storage: &Storage, shutdown: CancellationToken) -> Result<(Arc<MulticastGroups>, tokio::task::JoinHandle<()>), StoreError> {
        let bucket = storage.multicast.clone();
        // The watch first, then the listing: a flag set between the two is seen by both, never by neither.
        let watch = bucket.watch_all().await.map_err(|error| from_nats("failed to watch multicast groups", error))?;
        let groups = Arc::new(MulticastGroups { bucket: bucket.clone(), flags: RwLock::new(HashMap::new()), changes: broadcast::channel(CHANGES_QUEUE).0 });
        for (key, value) in list_entries(client, &bucket, "*").await? {
            groups.note(&key, &value);
        }
        let task = tokio::spawn(groups.clone().follow(watch, shutdown));
        Ok((groups, task))
    }

    /// Since when `conversation` is delivered by multicast, if it is.
    pub fn since(&self, conversation: &Id) -> Option<Timestamp> {
        self.flags.read().expect("multicast flags lock poisoned").get(conversation).copied()
    }

    pub fn all(&self) -> Vec<Id> {
        self.flags.read().expect("multicast flags lock poisoned").keys().cloned().collect()
    }

    /// Each conversation flagged from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Id> {
        self.changes.subscribe()
    }

    /// Flags `conversation` (idempotent: the first flag's time stands).
    pub async fn flag(&self, conversation: &Id) -> Result<(), StoreError> {
        if self.since(conversation).is_some() {
            return Ok(());
        }
        let record = MulticastRecord { v: 1, since: time::OffsetDateTime::now_utc() };
        match self.bucket.create(conversation.as_str(), record.to_bytes().into()).await {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(from_nats("failed to flag a multicast group", error)),
        }
    }

    fn note(&self, key: &str, value: &[u8]) {
        let (Ok(conversation), Ok(record)) = (Id::parse(key), MulticastRecord::from_bytes(value)) else {
            tracing::warn!(key, "unreadable multicast flag; ignored");
            return;
        };
        let new = self.flags.write().expect("multicast flags lock poisoned").insert(conversation.clone(), record.since).is_none();
        if new {
            let _ = self.changes.send(conversation);
        }
    }

    async fn follow(self: Arc<Self>, mut watch: kv::Watch, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = watch.next() => next,
            };
            match next {
                Some(Ok(entry)) if entry.operation == kv::Operation::Put => self.note(&entry.key, &entry.value),
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::warn!(%error, "multicast flag watch error"),
                None => loop {
                    // Flags are only ever added, so the restarted watch's replay brings back whatever was missed.
                    match self.bucket.watch_all().await {
                        Ok(restarted) => {
                            watch = restarted;
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "failed to restart the multicast flag watch; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                            }
                        }
                    }
                },
            }
        }
    }
}
