//! Rebuilding an index from the log: everything the stream holds now, written as one atomic commit, with progress for a bar.
//!
//! The old index stays the committed one until the rebuild's single commit replaces it, so a
//! rebuild killed at any point leaves the previous index (and its position) intact. The writer
//! lock makes the rebuild refuse to run while an indexer is using the directory.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use store::{SearchStorage, Storage};

use crate::index_schema::open_index;
use crate::index_writer_thread::{IndexWriterHandle, WriterCommand};
use crate::IndexerConfig;

/// How often progress is reported.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// A stalled log (nothing read for this long while entries remain) ends the rebuild with an error.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct ReindexProgress {
    /// Log entries read so far.
    pub entries_read: u64,
    /// Entries the log held when the rebuild started.
    pub entries_total: u64,
    pub elapsed: Duration,
}

impl ReindexProgress {
    pub fn entries_per_second(&self) -> f64 {
        self.entries_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReindexSummary {
    pub entries_read: u64,
    pub indexed_stream_seq: u64,
    pub elapsed: Duration,
}

/// Rebuilds the index in `config.index_dir` from the log's first entry through its last at the start.
pub async fn reindex(config: &IndexerConfig, nats: async_nats::Client, mut on_progress: impl FnMut(ReindexProgress)) -> anyhow::Result<ReindexSummary> {
    let storage = store::retry_at_startup("provision streams and buckets", || Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage))
        .await
        .context("failed to provision streams and buckets")?;
    let search_storage = store::retry_at_startup("provision search storage", || SearchStorage::provision(&storage, &config.storage)).await.context("failed to provision search storage")?;
    let index_dir = config.index_dir.clone();
    let feed = search_storage.feed_name().to_owned();
    let opened = tokio::task::spawn_blocking(move || open_index(&index_dir, &feed)).await.context("index opening panicked")??;
    let (writer, _snapshot) = IndexWriterHandle::start(&opened)?;
    let outcome = rebuild(&search_storage, &writer, config, &mut on_progress).await;
    let finished = writer.finish().await;
    let summary = outcome?;
    finished?;
    Ok(summary)
}

async fn rebuild(
    storage: &SearchStorage,
    writer: &IndexWriterHandle,
    config: &IndexerConfig,
    on_progress: &mut impl FnMut(ReindexProgress),
) -> anyhow::Result<ReindexSummary> {
    let started = Instant::now();
    let bounds = storage.log_bounds().await?;
    let target_seq = bounds.last_seq;
    let entries_total = (bounds.last_seq + 1).saturating_sub(bounds.first_seq.max(1));
    writer.send(WriterCommand::RemoveAll).await?;
    let mut entries_read = 0_u64;
    let mut next_seq = bounds.first_seq.max(1);
    let consumer_name = subjects::indexer_consumer_name(&config.replica, 0);
    let mut last_report = Instant::now();
    on_progress(ReindexProgress { entries_read, entries_total, elapsed: started.elapsed() });
    if next_seq <= target_seq {
        let mut entries = storage.read_log_from(&consumer_name, next_seq).await?;
        while next_seq <= target_seq {
            let entry = match tokio::time::timeout(STALL_TIMEOUT, entries.next()).await {
                Ok(Some(Ok(entry))) => entry,
                Ok(Some(Err(error))) => {
                    // A broken consumer is opened again from where the rebuild stands.
                    tracing::warn!(%error, next_seq, "the log reader broke during the rebuild; reopening");
                    entries = storage.read_log_from(&consumer_name, next_seq).await?;
                    continue;
                }
                Ok(None) => {
                    entries = storage.read_log_from(&consumer_name, next_seq).await?;
                    continue;
                }
                Err(_) => anyhow::bail!("no log entry arrived for {STALL_TIMEOUT:?} with entries {next_seq}..={target_seq} still to read"),
            };
            let Ok(info) = entry.info() else { continue };
            if info.stream_sequence < next_seq {
                continue;
            }
            if let Ok(stored) = schemas::decode_stored_message(&entry.payload) {
                writer.send(WriterCommand::for_entry(info.stream_sequence, stored)).await?;
            }
            next_seq = info.stream_sequence + 1;
            entries_read += 1;
            if last_report.elapsed() >= PROGRESS_INTERVAL {
                on_progress(ReindexProgress { entries_read, entries_total, elapsed: started.elapsed() });
                last_report = Instant::now();
            }
        }
        storage.drop_log_reader(&consumer_name).await;
    }
    writer.commit_and_wait(target_seq).await?;
    let elapsed = started.elapsed();
    on_progress(ReindexProgress { entries_read, entries_total, elapsed });
    Ok(ReindexSummary { entries_read, indexed_stream_seq: target_seq, elapsed })
}
