//! Per-process cache of conversation membership, invalidated by a watch on the members bucket.
//!
//! Every gateway and fanout worker keeps one. The watch is opened before the first read,
//! so no change can slip between a load and its invalidation; a removal reaches every
//! process within the watch's latency (milliseconds), well inside the 1 s promise.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use futures::StreamExt;
use schemas::{MemberRecord, Role};
use subjects::Id;
use tokio_util::sync::CancellationToken;

use crate::error::{from_nats, StoreError};
use crate::kv_listing::list_entries;
use crate::Storage;

pub type MemberSet = BTreeMap<Id, Role>;

/// Beyond this many cached conversations the cache starts over; a reload is one listing.
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

#[derive(Default)]
struct CacheState {
    members: HashMap<Id, Arc<MemberSet>>,
    /// Bumped for a conversation on every change seen by the watch; a load that started
    /// before a bump must not be cached.
    change_counters: HashMap<Id, u64>,
    /// Bumped when the whole cache is dropped (watch restarted, or size cap hit).
    generation: u64,
}

/// One membership change the watch saw: (conversation, user, whether the user is now a member).
pub type MembershipChange = (Id, Id, bool);

/// Changes waiting for a slow listener; one that falls behind is told it lagged.
const CHANGES_QUEUE: usize = 4096;

pub struct MembershipCache {
    client: async_nats::Client,
    members_bucket: kv::Store,
    state: Mutex<CacheState>,
    changes: tokio::sync::broadcast::Sender<MembershipChange>,
}

impl MembershipCache {
    /// Opens the watch, then returns the cache and the task that applies invalidations until `shutdown`.
    pub async fn start(
        client: async_nats::Client,
        storage: &Storage,
        shutdown: CancellationToken,
    ) -> Result<(Arc<MembershipCache>, tokio::task::JoinHandle<()>), StoreError> {
        let changes = tokio::sync::broadcast::channel(CHANGES_QUEUE).0;
        let cache = Arc::new(MembershipCache { client, members_bucket: storage.members.clone(), state: Mutex::new(CacheState::default()), changes });
        let watch = cache.members_bucket.watch_all().await.map_err(|error| from_nats("failed to watch membership", error))?;
        let task = tokio::spawn(cache.clone().apply_changes(watch, shutdown));
        Ok((cache, task))
    }

    /// Every membership change from now on, as the watch sees it (after the cache has dropped the conversation).
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<MembershipChange> {
        self.changes.subscribe()
    }

    pub async fn members(&self, conversation: &Id) -> Result<Arc<MemberSet>, StoreError> {
        let (generation, counter) = {
            let state = self.state.lock().expect("membership cache lock poisoned");
            if let Some(members) = state.members.get(conversation) {
                return Ok(members.clone());
            }
            (state.generation, state.change_counters.get(conversation).copied().unwrap_or(0))
        };
        let loaded = Arc::new(self.load(conversation).await?);
        let mut state = self.state.lock().expect("membership cache lock poisoned");
        let unchanged = state.generation == generation && state.change_counters.get(conversation).copied().unwrap_or(0) == counter;
        if unchanged {
            if state.members.len() >= MAX_CACHED_CONVERSATIONS {
                state.members.clear();
            }
            state.members.insert(conversation.clone(), loaded.clone());
        }
        Ok(loaded)
    }

    pub async fn role_of(&self, conversation: &Id, user: &Id) -> Result<Option<Role>, StoreError> {
        Ok(self.members(conversation).await?.get(user).copied())
    }

    async fn load(&self, conversation: &Id) -> Result<MemberSet, StoreError> {
        let entries = list_entries(&self.client, &self.members_bucket, &subjects::members_of_conversation_filter(conversation)).await?;
        let mut members = MemberSet::new();
        for (key, value) in entries {
            let Some((_, user)) = subjects::parse_member_key(&key) else { continue };
            let record = MemberRecord::from_bytes(&value).map_err(StoreError::internal)?;
            members.insert(user, record.role);
        }
        Ok(members)
    }

    /// Drops what is cached for `conversation`; writers call it so their own next read sees their write.
    pub fn invalidate(&self, conversation: Id) {
        let mut state = self.state.lock().expect("membership cache lock poisoned");
        state.members.remove(&conversation);
        if state.change_counters.len() >= MAX_CACHED_CONVERSATIONS {
            state.change_counters.clear();
            state.members.clear();
            state.generation += 1;
        }
        *state.change_counters.entry(conversation).or_default() += 1;
    }

    fn invalidate_everything(&self) {
        let mut state = self.state.lock().expect("membership cache lock poisoned");
        state.members.clear();
        state.change_counters.clear();
        state.generation += 1;
    }

    async fn apply_changes(self: Arc<Self>, mut watch: kv::Watch, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = watch.next() => next,
            };
            match next {
                Some(Ok(entry)) => {
                    if let Some((conversation, user)) = subjects::parse_member_key(&entry.key) {
                        self.invalidate(conversation.clone());
                        let _ = self.changes.send((conversation, user, entry.operation == kv::Operation::Put));
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "membership watch error"),
                None => {
                    // The watch ended (connection trouble): anything cached may now be stale.
                    self.invalidate_everything();
                    match self.members_bucket.watch_all().await {
                        Ok(restarted) => watch = restarted,
                        Err(error) => {
                            tracing::warn!(%error, "failed to restart membership watch; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}
