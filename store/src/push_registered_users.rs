//! Which users have at least one push registration, kept in memory from a watch of the `push-devices` bucket.
//!
//! The fanout asks this for every message before anything else, so a conversation whose members
//! never registered a device costs a map lookup — not a Redis call or a KV listing per message.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use subjects::Id;
use tokio_util::sync::CancellationToken;

use crate::error::{from_nats, StoreError};
use crate::push::PushStorage;

/// Devices with a registration, by user.
pub struct RegisteredUsers {
    devices_by_user: Mutex<HashMap<Id, BTreeSet<Id>>>,
}

impl RegisteredUsers {
    /// Opens the watch (every current key first, then changes) and returns the set and the task that keeps it current until `shutdown`.
    pub async fn start(push: &PushStorage, shutdown: CancellationToken) -> Result<(Arc<RegisteredUsers>, tokio::task::JoinHandle<()>), StoreError> {
        let users = Arc::new(RegisteredUsers { devices_by_user: Mutex::new(HashMap::new()) });
        let watch = push.devices.watch_with_history(">").await.map_err(|error| from_nats("failed to watch push registrations", error))?;
        let task = tokio::spawn(users.clone().apply_changes(push.devices.clone(), watch, shutdown));
        Ok((users, task))
    }

    pub fn has_registrations(&self, user: &Id) -> bool {
        self.devices_by_user.lock().expect("registered users lock poisoned").contains_key(user)
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some((user, device)) = subjects::parse_push_device_key(&entry.key) else { return };
        let mut devices_by_user = self.devices_by_user.lock().expect("registered users lock poisoned");
        if entry.operation == kv::Operation::Put {
            devices_by_user.entry(user).or_default().insert(device);
        } else if let Some(devices) = devices_by_user.get_mut(&user) {
            devices.remove(&device);
            if devices.is_empty() {
                devices_by_user.remove(&user);
            }
        }
    }

    async fn apply_changes(self: Arc<Self>, bucket: kv::Store, mut watch: kv::Watch, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = watch.next() => next,
            };
            match next {
                Some(Ok(entry)) => self.apply(&entry),
                Some(Err(error)) => tracing::warn!(%error, "push registration watch error"),
                None => {
                    // The watch ended (connection trouble): replaying the history brings every key back.
                    match bucket.watch_with_history(">").await {
                        Ok(restarted) => watch = restarted,
                        Err(error) => {
                            tracing::warn!(%error, "failed to restart the push registration watch; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}
