//! Search in JetStream: the log as the indexer reads it (bounds, a consumer from a sequence) and the analysts' audit stream.

use async_nats::jetstream::{self, consumer, stream::Stream};
use schemas::SearchAuditRecord;
use subjects::{Id, Provisioning, StorageSettings};

use crate::error::{from_nats, StoreError};
use crate::provision::not_provisioned;
use crate::Storage;

/// Handles the indexer and the gateway's analyst endpoint use; cheap to clone.
#[derive(Clone)]
pub struct SearchStorage {
    jetstream: jetstream::Context,
    /// The stream the indexer follows (see [`subjects::search_feed_stream`]); opened when used, so
    /// the gateway, which only records queries, needs no access to it.
    feed: String,
}

/// The stream sequences the log holds now: `first..=last` (`first > last` when it is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub first_seq: u64,
    pub last_seq: u64,
}

impl SearchStorage {
    /// Creates or updates the audit stream and, with several log shards, the search feed beside the
    /// already provisioned log; opening needs nothing more.
    pub async fn provision(storage: &Storage, settings: &StorageSettings) -> Result<SearchStorage, StoreError> {
        let search = SearchStorage { jetstream: storage.jetstream.clone(), feed: subjects::search_feed_stream(settings) };
        if settings.provisioning == Provisioning::OpenExisting {
            return Ok(search);
        }
        storage
            .jetstream
            .create_or_update_stream(subjects::search_audit_stream_config(settings))
            .await
            .map_err(|error| from_nats("failed to create or update the search audit stream", error))?;
        if let Some(feed) = subjects::search_feed_config(settings) {
            storage.jetstream.create_or_update_stream(feed).await.map_err(|error| from_nats("failed to create or update the search feed", error))?;
        }
        Ok(search)
    }

    /// The stream the index's positions are sequences of; an index built from another must start over.
    pub fn feed_name(&self) -> &str {
        &self.feed
    }

    async fn feed(&self) -> Result<Stream, StoreError> {
        self.jetstream.get_stream(&self.feed).await.map_err(|error| not_provisioned(&self.feed, error))
    }

    /// Records an analyst's query durably (after JetStream's PubAck); the query must not run if this fails.
    pub async fn record_analyst_query(&self, record: &SearchAuditRecord) -> Result<(), StoreError> {
        let analyst = Id::parse(&record.analyst).map_err(|error| StoreError::Invalid(error.to_string()))?;
        self.jetstream
            .publish(subjects::search_audit_subject(&analyst), record.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to write the search audit record", error))?
            .await
            .map_err(|error| from_nats("the search audit record was not stored", error))?;
        Ok(())
    }

    /// Where the log starts and ends now: what expired is below `first_seq`, lag is measured to `last_seq`.
    pub async fn log_bounds(&self) -> Result<LogBounds, StoreError> {
        let info = self.feed().await?.get_info().await.map_err(|error| from_nats("failed to read the message stream's state", error))?;
        Ok(LogBounds { first_seq: info.state.first_sequence, last_seq: info.state.last_sequence })
    }

    /// A consumer over the log from `start_seq` on (see [`subjects::indexer_consumer_config`]); any previous one of that name is replaced.
    pub async fn read_log_from(&self, consumer_name: &str, start_seq: u64) -> Result<consumer::pull::Stream, StoreError> {
        // A consumer of the same name left by a crash would keep its old start: drop it first.
        let feed = self.feed().await?;
        let _ = feed.delete_consumer(consumer_name).await;
        let consumer = feed
            .create_consumer(subjects::indexer_consumer_config(consumer_name, start_seq))
            .await
            .map_err(|error| from_nats("failed to create the indexer's consumer", error))?;
        consumer.messages().await.map_err(|error| from_nats("failed to pull from the indexer's consumer", error))
    }

    /// Removes a consumer when the indexer stops or moves on; a failure only leaves it to its inactivity timeout.
    pub async fn drop_log_reader(&self, consumer_name: &str) {
        let deleted = match self.feed().await {
            Ok(feed) => feed.delete_consumer(consumer_name).await.map(|_| ()).map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = deleted {
            tracing::debug!(%error, consumer_name, "failed to delete an indexer consumer; it expires on its own");
        }
    }
}
