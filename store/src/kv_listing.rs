//! Lists the live entries of a KV bucket under a key filter (`<conv>.*`), which async-nats only offers for the whole bucket.

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::batch_get::last_messages_matching;
use crate::error::StoreError;

const KV_OPERATION_HEADER: &str = "KV-Operation";
const MARKER_REASON_HEADER: &str = "Nats-Marker-Reason";

/// Every (key, value) currently under `filter` (a KV key pattern such as `c1.*`), skipping deleted keys.
///
/// One batch direct get (`multi_last` with the wildcard) reads exactly one entry per key, so the
/// cost follows the number of matching keys, not the bucket's size — and, unlike an ordered
/// consumer, it leaves no consumer behind on the server.
pub(crate) async fn list_entries(client: &async_nats::Client, store: &kv::Store, filter: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
    let prefix = store.prefix.as_str();
    let found = last_messages_matching(client, &store.stream_name, &format!("{prefix}{filter}")).await?;
    let mut entries = Vec::with_capacity(found.len());
    for (subject, last) in found {
        let removed = last.headers.get(KV_OPERATION_HEADER).is_some_and(|op| op.as_str() != "PUT") || last.headers.get(MARKER_REASON_HEADER).is_some();
        if removed {
            continue;
        }
        if let Some(key) = subject.strip_prefix(prefix) {
            entries.push((key.to_owned(), last.payload));
        }
    }
    entries.sort_by(|left, right| left.0.cmp(&right.0));
    Ok(entries)
}
