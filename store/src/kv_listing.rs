//! Lists the live entries of a KV bucket under a key filter (`<conv>.*`), which async-nats only offers for the whole bucket.

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{from_nats, StoreError};

const KV_OPERATION_HEADER: &str = "KV-Operation";
const MARKER_REASON_HEADER: &str = "Nats-Marker-Reason";

/// Every (key, value) currently under `filter` (a KV key pattern such as `c1.*`), skipping deleted keys.
///
/// An ordered consumer delivering the last message per subject reads exactly one entry per key,
/// so the cost follows the number of matching keys, not the bucket's size.
pub(crate) async fn list_entries(client: &async_nats::Client, store: &kv::Store, filter: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
    let prefix = store.prefix.as_str();
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("natter key listing".to_owned()),
            filter_subject: format!("{prefix}{filter}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|error| from_nats("failed to list keys", error))?;
    let mut entries = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(entries);
    }
    let mut messages = consumer.messages().await.map_err(|error| from_nats("failed to list keys", error))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|error| from_nats("failed to list keys", error))?;
        let pending = message.info().map_err(|error| from_nats("failed to list keys", error))?.pending;
        let removed = message.headers.as_ref().is_some_and(|headers| {
            headers.get(KV_OPERATION_HEADER).is_some_and(|op| op.as_str() != "PUT") || headers.get(MARKER_REASON_HEADER).is_some()
        });
        if !removed {
            if let Some(key) = message.subject.strip_prefix(prefix) {
                entries.push((key.to_owned(), message.payload.clone()));
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(entries)
}
