//! A worker's pull-consumer message stream that survives its consumer's leader moving to another NATS node.
//!
//! async-nats parks one pull request on the consumer's leader and sends the next only when
//! messages arrive, the request expires, or the client itself reconnects. When the leader dies
//! or is partitioned while the worker's own connection stays up, the request is gone with it:
//! the stream reports a missed heartbeat and nothing else happens until the request's expiry
//! (30 s + 5 s by default) — the worker stalls. A missed heartbeat therefore re-opens the
//! stream, which sends a fresh pull request to whichever node leads the consumer now.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{MessagesError, MessagesErrorKind, Stream};
use async_nats::jetstream::consumer::PullConsumer;

use crate::error::{from_nats, StoreError};

/// The server sends a heartbeat this often while a pull waits; two missed ones (4 s) mean the
/// request is gone. A leader election takes 4–9 s, so detection does not add much on top.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Each pull request expires after this, so even a lost request is replaced within it (plus the client's 5 s margin).
pub const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// Opens the consumer's message stream with a short heartbeat and expiry (see the module note).
pub async fn open_pull_messages(consumer: &PullConsumer) -> Result<Stream, StoreError> {
    consumer
        .stream()
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|error| from_nats("failed to pull from the consumer", error))
}

/// Handles a pull error: after a missed heartbeat the stream is replaced by a fresh one.
///
/// Only a missed heartbeat: it comes at most once per two heartbeats, whereas "no responders"
/// (no consumer leader right now) answers each fresh pull at once and would make this a busy loop.
/// If re-opening fails (no leader yet), the old stream stays and reports the next missed
/// heartbeat a few seconds later, which tries again — no loop of its own needed.
pub async fn recover_pull_messages(consumer: &PullConsumer, messages: &mut Stream, error: &MessagesError, worker: &str) {
    if error.kind() != MessagesErrorKind::MissingHeartbeat {
        tracing::warn!(%error, worker, "pull error");
        return;
    }
    match open_pull_messages(consumer).await {
        Ok(fresh) => {
            tracing::warn!(%error, worker, "pull request lost (the consumer's leader moved?); pulling again");
            *messages = fresh;
        }
        Err(reopen_error) => tracing::warn!(%error, %reopen_error, worker, "pull request lost and pulling again failed; retrying at the next heartbeat"),
    }
}
