//! Follows the conversation log from the index's committed position: decodes entries, feeds the writer thread, commits by count or time, and drops what the log expired.
//!
//! Exactly-once in effect: the only cursor is the stream sequence inside the last Tantivy commit.
//! Entries after it are read again after a crash and replace their documents by key, so nothing
//! is lost (the commit is atomic and includes its payload) and nothing is doubled.

use std::time::Duration;

use futures::StreamExt;
use store::SearchStorage;
use subjects::Id;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::index_writer_thread::{IndexWriterHandle, SharedSnapshot, WriterCommand};

/// Pause before opening the log again after the consumer broke (NATS restart, lost connection).
const REOPEN_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct CommitPolicy {
    /// Longest a read entry waits to become searchable while the indexer is caught up.
    pub max_delay: Duration,
    /// Commit after this many entries whatever the time; also the backlog above which time-based commits pause.
    pub max_entries: u64,
    /// How often the log's bounds are read: expired entries are removed, and lag is measured.
    pub retention_check_interval: Duration,
    /// How often the lag is written to the log; `natter_index_lag_messages` is updated at every retention check too.
    pub lag_log_interval: Duration,
}

/// Where the follower stands between commits.
struct Progress {
    /// The next stream sequence wanted; everything below it has been sent to the writer.
    next_seq: u64,
    /// Entries sent since the last commit (documents or not: skipped ones move the position too).
    uncommitted_entries: u64,
    /// When the oldest uncommitted entry was read.
    oldest_uncommitted: Option<Instant>,
    /// Entries the consumer still had after the last one read: a backlog means catching up.
    backlog: u64,
    /// Everything below this has been removed as expired.
    removed_before: u64,
}

/// Reads the log into the index until `shutdown`, then commits what was read. Returns an error only when the writer fails.
pub async fn follow_log(
    storage: &SearchStorage,
    writer: &IndexWriterHandle,
    snapshot: &SharedSnapshot,
    replica: &Id,
    policy: &CommitPolicy,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let start_seq = snapshot.current().indexed_stream_seq + 1;
    let mut progress = Progress { next_seq: start_seq, uncommitted_entries: 0, oldest_uncommitted: None, backlog: 0, removed_before: 0 };
    let mut retention_check = tokio::time::interval(policy.retention_check_interval);
    let mut lag_log = tokio::time::interval_at(Instant::now() + policy.lag_log_interval, policy.lag_log_interval);
    let mut generation = 0_u64;
    tracing::info!(start_seq, "indexer following the log");
    'reopen: loop {
        generation += 1;
        let consumer_name = subjects::indexer_consumer_name(replica, generation);
        let mut entries = tokio::select! {
            _ = shutdown.cancelled() => break 'reopen,
            opened = storage.read_log_from(&consumer_name, progress.next_seq) => match opened {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%error, "failed to open the log for indexing; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'reopen,
                        _ = tokio::time::sleep(REOPEN_DELAY) => continue 'reopen,
                    }
                }
            },
        };
        loop {
            let commit_due = commit_deadline(&progress, policy);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    storage.drop_log_reader(&consumer_name).await;
                    break 'reopen;
                }
                _ = sleep_until_optional(commit_due) => commit_now(writer, &mut progress).await?,
                _ = retention_check.tick() => {
                    remove_expired(storage, writer, &mut progress).await?;
                    measure_lag(storage, snapshot, false).await;
                }
                _ = lag_log.tick() => measure_lag(storage, snapshot, true).await,
                next = entries.next() => match next {
                    Some(Ok(entry)) => {
                        read_entry(writer, &mut progress, &entry).await?;
                        if progress.uncommitted_entries >= policy.max_entries {
                            commit_now(writer, &mut progress).await?;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, next_seq = progress.next_seq, "the indexer's consumer broke; reopening from the next entry");
                        storage.drop_log_reader(&consumer_name).await;
                        continue 'reopen;
                    }
                    None => {
                        storage.drop_log_reader(&consumer_name).await;
                        continue 'reopen;
                    }
                },
            }
        }
    }
    if progress.uncommitted_entries > 0 {
        writer.commit_and_wait(progress.next_seq - 1).await?;
    }
    Ok(())
}

/// When the uncommitted entries must be committed by time: only while caught up, since during a
/// catch-up every commit is a new segment to merge, and the count alone keeps memory bounded.
fn commit_deadline(progress: &Progress, policy: &CommitPolicy) -> Option<Instant> {
    if progress.backlog >= policy.max_entries {
        return None;
    }
    progress.oldest_uncommitted.map(|oldest| oldest + policy.max_delay)
}

async fn sleep_until_optional(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn read_entry(writer: &IndexWriterHandle, progress: &mut Progress, entry: &async_nats::jetstream::Message) -> anyhow::Result<()> {
    let Ok(info) = entry.info() else {
        tracing::warn!(subject = %entry.subject, "log entry without JetStream metadata; skipped");
        return Ok(());
    };
    let stream_seq = info.stream_sequence;
    progress.backlog = info.pending;
    if stream_seq < progress.next_seq {
        return Ok(()); // Already read: a consumer opened again can start at an entry it delivered before.
    }
    match schemas::decode_stored_message(&entry.payload) {
        Ok(stored) => writer.send(WriterCommand::for_entry(stream_seq, stored)).await?,
        Err(error) => tracing::error!(%error, stream_seq, "unreadable log entry; not indexed"),
    }
    progress.next_seq = stream_seq + 1;
    progress.uncommitted_entries += 1;
    progress.oldest_uncommitted.get_or_insert_with(Instant::now);
    Ok(())
}

async fn commit_now(writer: &IndexWriterHandle, progress: &mut Progress) -> anyhow::Result<()> {
    if progress.uncommitted_entries == 0 {
        progress.oldest_uncommitted = None;
        return Ok(());
    }
    // Not waited for: the writer thread commits while the follower reads on, in order.
    writer.send(WriterCommand::Commit { through_seq: progress.next_seq - 1, done: None }).await?;
    progress.uncommitted_entries = 0;
    progress.oldest_uncommitted = None;
    Ok(())
}

/// Entries below the log's first sequence were removed by its age (or size) limit: their documents go too.
async fn remove_expired(storage: &SearchStorage, writer: &IndexWriterHandle, progress: &mut Progress) -> anyhow::Result<()> {
    let bounds = match storage.log_bounds().await {
        Ok(bounds) => bounds,
        Err(error) => {
            tracing::warn!(%error, "failed to read the log's bounds; expired messages stay searchable until the next check");
            return Ok(());
        }
    };
    if bounds.first_seq <= progress.removed_before.max(1) {
        return Ok(());
    }
    writer.send(WriterCommand::RemoveBefore { first_kept_seq: bounds.first_seq }).await?;
    progress.removed_before = bounds.first_seq;
    // The removal becomes visible with a commit; without new entries, make one at the same position.
    let through_seq = progress.next_seq.saturating_sub(1);
    writer.send(WriterCommand::Commit { through_seq, done: None }).await?;
    progress.uncommitted_entries = 0;
    progress.oldest_uncommitted = None;
    tracing::debug!(first_kept_seq = bounds.first_seq, "removed expired messages from the index");
    Ok(())
}

/// Sets the index lag gauges, and with `log` writes the lag to the log as well.
async fn measure_lag(storage: &SearchStorage, snapshot: &SharedSnapshot, log: bool) {
    let indexed_stream_seq = snapshot.current().indexed_stream_seq;
    match storage.log_bounds().await {
        Ok(bounds) => {
            let lag = bounds.last_seq.saturating_sub(indexed_stream_seq);
            let metrics = telemetry::indexer_metrics();
            metrics.index_lag_messages.set(i64::try_from(lag).unwrap_or(i64::MAX));
            metrics.indexed_stream_seq.set(i64::try_from(indexed_stream_seq).unwrap_or(i64::MAX));
            if log {
                tracing::info!(indexed_stream_seq, stream_last_seq = bounds.last_seq, lag, "index lag");
            }
        }
        Err(error) => tracing::warn!(%error, "failed to read the log's bounds for the lag"),
    }
}
