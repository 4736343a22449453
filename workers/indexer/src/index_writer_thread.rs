//! The one thread that owns the Tantivy writer: applies index commands in order and commits with the log position in the commit's payload.
//!
//! Tantivy's writing and committing is blocking, CPU- and fsync-bound work, so it never runs on
//! the async runtime: the log follower sends commands over a bounded channel (which is also its
//! backpressure) and goes on reading while a commit runs. Dropping the channel without a final
//! `Commit` discards what was not committed, exactly as a crash would.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use schemas::{Change, Message};
use tantivy::query::RangeQuery;
use tantivy::{IndexReader, IndexWriter, ReloadPolicy, Searcher, Term};
use tokio::sync::{mpsc, oneshot};

use crate::index_changes::ChangesSinceCommit;
use crate::index_schema::{commit_payload, OpenedIndex, SearchFields};

/// Commands waiting for the writer; beyond this the follower waits (backpressure, bounded memory).
const COMMAND_QUEUE: usize = 8_192;
/// Tantivy's indexing memory budget: segments are flushed to disk (uncommitted) when it fills.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

pub enum WriterCommand {
    /// Add (or replace, by its key) one message's document.
    Index { stream_seq: u64, message: Box<Message> },
    /// Apply an edit or delete (the log entry `entry`) to its target's document.
    Change { entry: Box<Message>, change: Change },
    /// Remove every document of an entry below `first_kept_seq`: the log no longer holds them.
    RemoveBefore { first_kept_seq: u64 },
    /// Remove everything (a rebuild starts from an empty index).
    RemoveAll,
    /// Make everything sent so far durable and searchable, recording `through_seq` as the index's position.
    Commit { through_seq: u64, done: Option<oneshot::Sender<anyhow::Result<()>>> },
}

impl WriterCommand {
    /// The command for one log entry: a message is indexed, a change applied to its target.
    pub fn for_entry(stream_seq: u64, stored: schemas::StoredMessage) -> WriterCommand {
        match stored.change {
            None => WriterCommand::Index { stream_seq, message: Box::new(stored.message) },
            Some(change) => WriterCommand::Change { entry: Box::new(stored.message), change },
        }
    }
}

/// What searches read: one searcher and the position it reflects, swapped together after each commit.
pub struct SearchSnapshot {
    pub searcher: Searcher,
    pub indexed_stream_seq: u64,
}

/// The latest snapshot; the lock is held only to clone or swap an `Arc`.
#[derive(Clone)]
pub struct SharedSnapshot(Arc<Mutex<Arc<SearchSnapshot>>>);

impl SharedSnapshot {
    pub fn current(&self) -> Arc<SearchSnapshot> {
        self.0.lock().expect("snapshot lock poisoned").clone()
    }

    fn replace(&self, snapshot: SearchSnapshot) {
        *self.0.lock().expect("snapshot lock poisoned") = Arc::new(snapshot);
    }
}

pub struct IndexWriterHandle {
    commands_tx: mpsc::Sender<WriterCommand>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl IndexWriterHandle {
    /// Takes the index's writer lock (only one writer per directory, across processes) and starts the thread.
    pub fn start(opened: &OpenedIndex) -> anyhow::Result<(IndexWriterHandle, SharedSnapshot)> {
        let writer: IndexWriter = opened.index.writer(WRITER_MEMORY_BYTES).map_err(|error| match error {
            tantivy::TantivyError::LockFailure(..) => anyhow::anyhow!("another indexer holds this index directory; stop it first ({error})"),
            other => anyhow::Error::new(other).context("failed to open the index writer"),
        })?;
        let reader = opened.index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().context("failed to open an index reader")?;
        let snapshot = SharedSnapshot(Arc::new(Mutex::new(Arc::new(SearchSnapshot {
            searcher: reader.searcher(),
            indexed_stream_seq: opened.indexed_stream_seq,
        }))));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let fields = opened.fields;
        let feed = opened.feed.clone();
        let published = snapshot.clone();
        let thread = std::thread::Builder::new()
            .name("index-writer".to_owned())
            .spawn(move || apply_commands(writer, reader, fields, &feed, commands_rx, published))
            .context("failed to start the index writer thread")?;
        Ok((IndexWriterHandle { commands_tx, thread }, snapshot))
    }

    /// Queues a command; fails only when the writer thread has stopped (its error is in [`IndexWriterHandle::finish`]).
    pub async fn send(&self, command: WriterCommand) -> anyhow::Result<()> {
        self.commands_tx.send(command).await.map_err(|_| anyhow::anyhow!("the index writer stopped"))
    }

    /// Commits through `through_seq` and waits until it is durable and searchable.
    pub async fn commit_and_wait(&self, through_seq: u64) -> anyhow::Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.send(WriterCommand::Commit { through_seq, done: Some(done_tx) }).await?;
        done_rx.await.map_err(|_| anyhow::anyhow!("the index writer stopped during a commit"))?
    }

    /// Stops the thread, discarding anything not committed, and reports how it ended.
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.commands_tx);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("failed to wait for the index writer")?
            .map_err(|_| anyhow::anyhow!("the index writer thread panicked"))?
    }
}

fn apply_commands(
    mut writer: IndexWriter,
    reader: IndexReader,
    fields: SearchFields,
    feed: &str,
    mut commands_rx: mpsc::Receiver<WriterCommand>,
    snapshot: SharedSnapshot,
) -> anyhow::Result<()> {
    let mut changes = ChangesSinceCommit::default();
    while let Some(command) = commands_rx.blocking_recv() {
        match command {
            WriterCommand::Index { stream_seq, message } => {
                let Some(document) = fields.document(stream_seq, &message) else { continue };
                // Deletes apply to documents added before them, so this replaces, never duplicates.
                writer.delete_term(fields.key_term(&message.conversation_id, message.seq));
                writer.add_document(document).context("failed to add a document")?;
                changes.note_added(stream_seq, &message);
            }
            WriterCommand::Change { entry, change } => {
                // A change whose target cannot be read back (a damaged document) leaves that one
                // document stale; stopping the writer would leave the whole index behind.
                if let Err(error) = changes.apply(&mut writer, &reader, &fields, &entry, &change) {
                    tracing::error!(error = format!("{error:#}"), conversation = %entry.conversation_id, target = change.target_seq, "failed to apply a change to the index");
                }
            }
            WriterCommand::RemoveBefore { first_kept_seq } => {
                let below = RangeQuery::new(std::ops::Bound::Unbounded, std::ops::Bound::Excluded(Term::from_field_u64(fields.stream_seq, first_kept_seq)));
                writer.delete_query(Box::new(below)).context("failed to remove expired documents")?;
            }
            WriterCommand::RemoveAll => {
                writer.delete_all_documents().context("failed to clear the index")?;
            }
            WriterCommand::Commit { through_seq, done } => {
                let outcome = commit(&mut writer, &reader, through_seq, feed, &snapshot);
                changes.clear();
                let failed = outcome.as_ref().err().map(|error| format!("{error:#}"));
                if let Some(done) = done {
                    let _ = done.send(outcome);
                }
                if let Some(error) = failed {
                    anyhow::bail!("index commit failed: {error}");
                }
            }
        }
    }
    // Uncommitted work is dropped here, as a crash would drop it; merges in flight finish first.
    writer.rollback().context("failed to discard uncommitted index work")?;
    writer.wait_merging_threads().context("failed to finish index merges")?;
    Ok(())
}

fn commit(writer: &mut IndexWriter, reader: &IndexReader, through_seq: u64, feed: &str, snapshot: &SharedSnapshot) -> anyhow::Result<()> {
    let mut prepared = writer.prepare_commit().context("failed to prepare an index commit")?;
    prepared.set_payload(&commit_payload(through_seq, feed));
    prepared.commit().context("failed to commit the index")?;
    reader.reload().context("failed to reload the index reader")?;
    snapshot.replace(SearchSnapshot { searcher: reader.searcher(), indexed_stream_seq: through_seq });
    Ok(())
}
