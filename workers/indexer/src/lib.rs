//! The indexer worker: follows the conversation log into a Tantivy index on disk and answers search requests from it over NATS.
//!
//! Every replica keeps a whole index of its own (its own directory and its own position in the
//! log) and joins one queue group for requests, so replicas add query capacity and
//! availability; a replica's position lives only in its index's last commit (see `log_follower.rs`).

mod aggregations;
pub mod bench;
mod index_schema;
mod index_writer_thread;
mod index_changes;
mod log_follower;
mod query_text;
mod ranking;
pub mod reindex;
mod search_service;
mod searcher;
#[cfg(test)]
mod search_tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use store::{SearchStorage, Storage};
use subjects::{Id, StorageSettings};
use tokio_util::sync::CancellationToken;

pub use log_follower::CommitPolicy;
pub use query_text::MAX_QUERY_CHARS;
pub use ranking::{recency_blend, RECENCY_HALF_LIFE_MS, RECENCY_WEIGHT};

#[derive(Debug, Clone)]
pub struct IndexerConfig {
    pub storage: StorageSettings,
    /// Where this replica keeps its index (`NATTER_SEARCH_INDEX_DIR`); one indexer per directory.
    pub index_dir: PathBuf,
    /// Names this replica's consumers and status replies; random unless configured.
    pub replica: Id,
    pub commit_policy: CommitPolicy,
}

impl IndexerConfig {
    pub fn new(index_dir: PathBuf) -> IndexerConfig {
        IndexerConfig {
            storage: StorageSettings::default(),
            index_dir,
            replica: Id::parse(&ulid::Ulid::new().to_string().to_lowercase()).expect("ulids are valid ids"),
            commit_policy: CommitPolicy {
                max_delay: Duration::from_millis(200),
                max_entries: 10_000,
                retention_check_interval: Duration::from_secs(10),
                lag_log_interval: Duration::from_secs(30),
            },
        }
    }

    /// Reads `NATTER_*` values: storage settings, `NATTER_SEARCH_INDEX_DIR` (default `<NATTER_DATA_DIR>/search-index`),
    /// `NATTER_SEARCH_REPLICA`, `NATTER_SEARCH_COMMIT_MILLIS`, `NATTER_SEARCH_COMMIT_MAX_ENTRIES`,
    /// `NATTER_SEARCH_RETENTION_CHECK_MILLIS` and `NATTER_SEARCH_LAG_LOG_SECS`.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<IndexerConfig> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let index_dir = match get("NATTER_SEARCH_INDEX_DIR") {
            Some(directory) => PathBuf::from(directory),
            None => PathBuf::from(get("NATTER_DATA_DIR").unwrap_or(".natter-data")).join("search-index"),
        };
        let mut config = IndexerConfig { storage: store::storage_settings_from_environment(environment)?, ..IndexerConfig::new(index_dir) };
        if let Some(replica) = get("NATTER_SEARCH_REPLICA") {
            config.replica = Id::parse(replica).context("NATTER_SEARCH_REPLICA must be an id ([A-Za-z0-9_-]{1,64})")?;
        }
        let millis = |name: &str| -> anyhow::Result<Option<Duration>> {
            get(name).map(|value| value.parse().map(Duration::from_millis).with_context(|| format!("{name} must be whole milliseconds"))).transpose()
        };
        if let Some(delay) = millis("NATTER_SEARCH_COMMIT_MILLIS")? {
            config.commit_policy.max_delay = delay;
        }
        if let Some(interval) = millis("NATTER_SEARCH_RETENTION_CHECK_MILLIS")? {
            config.commit_policy.retention_check_interval = interval;
        }
        if let Some(seconds) = get("NATTER_SEARCH_LAG_LOG_SECS") {
            config.commit_policy.lag_log_interval = Duration::from_secs(seconds.parse().context("NATTER_SEARCH_LAG_LOG_SECS must be whole seconds")?);
        }
        if let Some(entries) = get("NATTER_SEARCH_COMMIT_MAX_ENTRIES") {
            config.commit_policy.max_entries = entries.parse().context("NATTER_SEARCH_COMMIT_MAX_ENTRIES must be a count")?;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let policy = &self.commit_policy;
        anyhow::ensure!(!policy.max_delay.is_zero(), "the search commit delay must be at least 1 ms");
        anyhow::ensure!(policy.max_entries > 0, "the search commit size must be at least 1 entry");
        anyhow::ensure!(!policy.retention_check_interval.is_zero(), "the search retention check interval must be at least 1 ms");
        anyhow::ensure!(!policy.lag_log_interval.is_zero(), "the search lag log interval must be at least 1 s");
        Ok(())
    }
}

/// What an indexer's `/readyz` checks: NATS and the stream it follows (its consumer is ephemeral, recreated whenever it breaks).
pub fn readiness(nats: async_nats::Client, settings: &StorageSettings) -> telemetry::Readiness {
    telemetry::Readiness::new(nats).stream(&subjects::search_feed_stream(settings))
}

/// Runs until `shutdown`: indexes the log and answers searches; what was read is committed before it returns.
pub async fn run(config: IndexerConfig, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let storage = store::retry_at_startup("provision streams and buckets", || Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage))
        .await
        .context("failed to provision streams and buckets")?;
    let search_storage = store::retry_at_startup("provision search storage", || SearchStorage::provision(&storage, &config.storage)).await.context("failed to provision search storage")?;
    let index_dir = config.index_dir.clone();
    let feed = search_storage.feed_name().to_owned();
    let opened = tokio::task::spawn_blocking(move || index_schema::open_index(&index_dir, &feed)).await.context("index opening panicked")??;
    telemetry::indexer_metrics().indexed_stream_seq.set(i64::try_from(opened.indexed_stream_seq).unwrap_or(i64::MAX));
    let (writer, snapshot) = index_writer_thread::IndexWriterHandle::start(&opened)?;
    let index = searcher::SearchIndex { fields: opened.fields, snapshot: snapshot.clone() };
    let service_shutdown = shutdown.child_token();
    let service = tokio::spawn(search_service::serve(nats.clone(), index, search_storage.clone(), config.replica.clone(), service_shutdown.clone()));
    tracing::info!(index_dir = %config.index_dir.display(), indexed_stream_seq = opened.indexed_stream_seq, "indexer running");
    let followed = log_follower::follow_log(&search_storage, &writer, &snapshot, &config.replica, &config.commit_policy, &shutdown).await;
    // The service stops answering before the writer goes, so no search reads a closing index.
    service_shutdown.cancel();
    let served = service.await.context("search service task panicked")?;
    let finished = writer.finish().await;
    nats.flush().await.context("failed to flush NATS")?;
    // The writer's own error first: when it fails, the follower only knows that it stopped.
    finished?;
    followed?;
    served?;
    tracing::info!("indexer stopped");
    Ok(())
}
