//! Reads one key of a bucket whose keys are only ever put, never deleted, the way a replicated bucket needs: a direct get, and a miss asked again of the bucket's leader.
//!
//! Direct gets are answered by any replica, and on a cluster one that lags (a key put a moment ago
//! through another node, a replica back from a crash) answers "not found". A miss is therefore
//! confirmed with the leader: a hit costs one round trip, a miss two. One replica cannot lag.

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use crate::error::{from_nats, StoreError};

/// The value of `key`, or None when the bucket has none; `what` names it in errors.
pub(crate) async fn get_confirmed(bucket: &kv::Store, key: &str, what: &str) -> Result<Option<bytes::Bytes>, StoreError> {
    if let Some(value) = bucket.get(key).await.map_err(|error| from_nats(&format!("failed to read {what}"), error))? {
        return Ok(Some(value));
    }
    if bucket.stream.cached_info().config.num_replicas <= 1 {
        return Ok(None);
    }
    match bucket.stream.get_last_raw_message_by_subject(&format!("{}{key}", bucket.prefix)).await {
        // Keys are only ever put, so the last entry is a value.
        Ok(raw) => Ok(Some(raw.payload).filter(|payload| !payload.is_empty())),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(from_nats(&format!("failed to read {what} from its leader"), error)),
    }
}
