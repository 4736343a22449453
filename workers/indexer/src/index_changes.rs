//! Edits and deletes in the index: a delete removes the message's document, an edit rewrites its text; reactions are not searched.
//!
//! The log is read in order, so applying each change as it comes gives the log's outcome: the
//! last edit wins and a deleted message stays gone. An edit needs the document it rewrites,
//! which may still be uncommitted (invisible to searchers), so the writer thread remembers what
//! it added and removed since its last commit.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use schemas::{Change, ChangeKind, Message};
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{IndexReader, IndexWriter, TantivyDocument};

use crate::index_schema::{message_key, SearchFields, STREAM_SEQ_FIELD};

/// What the writer did since its last commit, by message key.
#[derive(Default)]
pub struct ChangesSinceCommit {
    added: HashMap<String, (u64, Message)>,
    deleted: HashSet<String>,
}

impl ChangesSinceCommit {
    pub fn note_added(&mut self, stream_seq: u64, message: &Message) {
        let key = message_key(&message.conversation_id, message.seq);
        self.deleted.remove(&key);
        self.added.insert(key, (stream_seq, message.clone()));
    }

    /// After a commit the searcher sees everything: nothing to remember.
    pub fn clear(&mut self) {
        self.added.clear();
        self.deleted.clear();
    }

    /// Applies one change (`entry` is its log entry) to the target's document.
    pub fn apply(&mut self, writer: &mut IndexWriter, reader: &IndexReader, fields: &SearchFields, entry: &Message, change: &Change) -> anyhow::Result<()> {
        let key = message_key(&entry.conversation_id, change.target_seq);
        match change.kind {
            ChangeKind::Delete => {
                writer.delete_term(fields.key_term(&entry.conversation_id, change.target_seq));
                self.added.remove(&key);
                self.deleted.insert(key);
            }
            ChangeKind::Edit => {
                let Some(text) = entry.body.text.clone() else { return Ok(()) };
                if self.deleted.contains(&key) {
                    return Ok(());
                }
                let current = match self.added.get(&key) {
                    Some(added) => Some(added.clone()),
                    None => committed_document(reader, fields, &key)?,
                };
                // No document: never searchable (encrypted, no text) or expired; an edit does not make it so.
                let Some((stream_seq, mut message)) = current else { return Ok(()) };
                message.body.text = Some(text);
                message.edited_at = Some(entry.sent_at);
                writer.delete_term(fields.key_term(&entry.conversation_id, change.target_seq));
                if let Some(document) = fields.document(stream_seq, &message) {
                    writer.add_document(document).context("failed to add an edited document")?;
                    self.note_added(stream_seq, &message);
                }
            }
            ChangeKind::Reaction => {}
        }
        Ok(())
    }
}

/// The committed document of message `key`, with the stream sequence it was indexed at.
fn committed_document(reader: &IndexReader, fields: &SearchFields, key: &str) -> anyhow::Result<Option<(u64, Message)>> {
    let searcher = reader.searcher();
    let query = TermQuery::new(tantivy::Term::from_field_text(fields.key, key), IndexRecordOption::Basic);
    let Some((_, address)) = searcher.search(&query, &TopDocs::with_limit(1)).context("failed to look up an edited message")?.into_iter().next() else {
        return Ok(None);
    };
    let document: TantivyDocument = searcher.doc(address).context("failed to read an edited message's document")?;
    // The stream sequence is a fast field, not a stored one: read it from the document's segment.
    let column = searcher.segment_reader(address.segment_ord).fast_fields().u64(STREAM_SEQ_FIELD).context("the index has no stream sequence column")?;
    let stream_seq = column.first(address.doc_id).context("document without its stream sequence")?;
    let message_json = document.get_first(fields.message).and_then(|value| value.as_str().map(str::to_owned)).context("document without its message")?;
    let message: Message = serde_json::from_str(&message_json).context("stored message is unreadable")?;
    Ok(Some((stream_seq, message)))
}
