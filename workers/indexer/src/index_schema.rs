//! The index's fields and text analysis, and opening the on-disk index with the log position its last commit recorded.

use std::path::Path;

use anyhow::Context;
use schemas::{IndexCommitPayload, Message};
use tantivy::directory::MmapDirectory;
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, TokenStream};
use tantivy::{DateTime, Index, TantivyDocument, Term};

/// The analyzer of message text, registered under this name: split on anything that is not a
/// letter or digit (Unicode-aware), lowercase (Unicode), then fold accents to ASCII, so
/// `MÜNCHEN`, `München` and `munchen` are one term.
pub const TEXT_ANALYZER: &str = "natter_text";
/// Tokens longer than this are dropped: they are base64 blobs or keyboard mashing, not words.
const LONGEST_TOKEN_BYTES: usize = 64;

/// Field names; `conversation`, `sender` and `sent_at` are also what the aggregations name.
pub const KEY_FIELD: &str = "key";
pub const CONVERSATION_FIELD: &str = "conversation";
pub const SENDER_FIELD: &str = "sender";
pub const TEXT_FIELD: &str = "text";
pub const SENT_AT_FIELD: &str = "sent_at";
pub const STREAM_SEQ_FIELD: &str = "stream_seq";
pub const MESSAGE_FIELD: &str = "message";

/// The index layout version: a layout change gets a new directory (`v2`) and a reindex, never a misread.
const LAYOUT_DIRECTORY: &str = "v1";

#[derive(Clone, Copy)]
pub struct SearchFields {
    /// `<conversation>:<seq>`: the identity a redelivered or edited entry replaces by.
    pub key: Field,
    pub conversation: Field,
    pub sender: Field,
    pub text: Field,
    pub sent_at: Field,
    pub stream_seq: Field,
    /// The message object as clients get it elsewhere, returned as is in hits.
    pub message: Field,
}

impl SearchFields {
    fn schema() -> (Schema, SearchFields) {
        let mut builder = Schema::builder();
        let text_indexing = TextFieldIndexing::default().set_tokenizer(TEXT_ANALYZER).set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let fields = SearchFields {
            key: builder.add_text_field(KEY_FIELD, STRING),
            conversation: builder.add_text_field(CONVERSATION_FIELD, STRING | FAST),
            sender: builder.add_text_field(SENDER_FIELD, STRING | FAST),
            text: builder.add_text_field(TEXT_FIELD, TextOptions::default().set_indexing_options(text_indexing)),
            sent_at: builder.add_date_field(SENT_AT_FIELD, DateOptions::default().set_indexed().set_fast().set_precision(DateTimePrecision::Milliseconds)),
            stream_seq: builder.add_u64_field(STREAM_SEQ_FIELD, NumericOptions::default().set_indexed().set_fast()),
            message: builder.add_text_field(MESSAGE_FIELD, STORED),
        };
        (builder.build(), fields)
    }

    /// The document for one message; `None` when there is nothing the server may search (no text, or end-to-end encrypted).
    pub fn document(&self, stream_seq: u64, message: &Message) -> Option<TantivyDocument> {
        let text = searchable_text(message)?;
        let mut document = TantivyDocument::default();
        document.add_text(self.key, message_key(&message.conversation_id, message.seq));
        document.add_text(self.conversation, &message.conversation_id);
        document.add_text(self.sender, &message.sender);
        document.add_text(self.text, text);
        let sent_at_ms = (message.sent_at.unix_timestamp_nanos() / 1_000_000) as i64;
        document.add_date(self.sent_at, DateTime::from_timestamp_millis(sent_at_ms));
        document.add_u64(self.stream_seq, stream_seq);
        document.add_text(self.message, schemas_message_json(message));
        Some(document)
    }

    pub fn key_term(&self, conversation_id: &str, seq: u64) -> Term {
        Term::from_field_text(self.key, &message_key(conversation_id, seq))
    }
}

/// The text the server may index: a message's `text` (media captions included), never a `ciphertext` body.
pub fn searchable_text(message: &Message) -> Option<&str> {
    if message.body.ciphertext.is_some() {
        return None;
    }
    message.body.text.as_deref().filter(|text| !text.trim().is_empty())
}

pub fn message_key(conversation_id: &str, seq: u64) -> String {
    format!("{conversation_id}:{seq}")
}

fn schemas_message_json(message: &Message) -> String {
    serde_json::to_string(message).expect("messages always serialize")
}

pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(LONGEST_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The terms `text` analyses to, in order: what a query word must equal to match.
pub fn analyse(text: &str) -> Vec<String> {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut tokens = Vec::new();
    while stream.advance() {
        tokens.push(stream.token().text.clone());
    }
    tokens
}

/// An open index, its fields, and where its last commit left the log.
pub struct OpenedIndex {
    pub index: Index,
    pub fields: SearchFields,
    pub indexed_stream_seq: u64,
    /// The stream `indexed_stream_seq` is a sequence of.
    pub feed: String,
}

/// Opens the index under `directory` (creating it when absent) and reads the position its last commit stored.
///
/// A position in another stream than `feed` means nothing here (the log went from one shard to
/// several, so the indexer now follows the search feed): the index starts over, empty, from the
/// feed's beginning, which holds every shard's whole history.
pub fn open_index(directory: &Path, feed: &str) -> anyhow::Result<OpenedIndex> {
    let layout_directory = directory.join(LAYOUT_DIRECTORY);
    std::fs::create_dir_all(&layout_directory).with_context(|| format!("failed to create the index directory {}", layout_directory.display()))?;
    let (schema, fields) = SearchFields::schema();
    let mmap = MmapDirectory::open(&layout_directory).with_context(|| format!("failed to open the index directory {}", layout_directory.display()))?;
    let index = Index::open_or_create(mmap, schema).context("failed to open the search index (a different layout needs a reindex)")?;
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
    let mut committed = committed_position(&index)?;
    if committed.indexed_stream_seq > 0 && committed.stream.as_deref().unwrap_or(subjects::MESSAGE_STREAM) != feed {
        tracing::warn!(was = committed.stream.as_deref().unwrap_or(subjects::MESSAGE_STREAM), now = feed, "the index followed another stream; rebuilding it from the start");
        let mut writer: tantivy::IndexWriter = index.writer(REBUILD_WRITER_MEMORY_BYTES).context("failed to open the index writer to start over")?;
        writer.delete_all_documents().context("failed to empty the index")?;
        let mut prepared = writer.prepare_commit().context("failed to prepare the emptied index's commit")?;
        prepared.set_payload(&commit_payload(0, feed));
        prepared.commit().context("failed to commit the emptied index")?;
        writer.wait_merging_threads().context("failed to finish index merges")?;
        committed = IndexCommitPayload { v: 1, indexed_stream_seq: 0, stream: Some(feed.to_owned()) };
    }
    Ok(OpenedIndex { index, fields, indexed_stream_seq: committed.indexed_stream_seq, feed: feed.to_owned() })
}

/// Memory for the one-off writer that empties an index that must start over.
const REBUILD_WRITER_MEMORY_BYTES: usize = 15_000_000;

/// The log position stored in the index's last commit; 0 for a new index.
fn committed_position(index: &Index) -> anyhow::Result<IndexCommitPayload> {
    let metas = index.load_metas().context("failed to read the index's commit")?;
    match metas.payload {
        None => Ok(IndexCommitPayload { v: 1, indexed_stream_seq: 0, stream: None }),
        Some(payload) => IndexCommitPayload::from_bytes(payload.as_bytes()).context("the index's commit payload is unreadable"),
    }
}

pub fn commit_payload(indexed_stream_seq: u64, feed: &str) -> String {
    String::from_utf8(IndexCommitPayload { v: 1, indexed_stream_seq, stream: Some(feed.to_owned()) }.to_bytes()).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        assert_eq!(analyse(text), expected, "text {text:?}");
    }

    #[test]
    fn analysis_is_unicode_case_and_accent_insensitive() {
        check("Hello, World!", &["hello", "world"]);
        check("MÜNCHEN münchen Munchen", &["munchen", "munchen", "munchen"]);
        check("Straße", &["strasse"]);
        check("ΑΘΗΝΑ αθηνα", &["αθηνα", "αθηνα"]);
        check("e-mail don't", &["e", "mail", "don", "t"]);
        check(&"x".repeat(65), &[]);
    }

    #[test]
    fn encrypted_and_empty_bodies_are_not_searchable() {
        let mut message = schemas::Message::new(
            "c".to_owned(),
            1,
            "m".to_owned(),
            "alice".to_owned(),
            "d".to_owned(),
            time::OffsetDateTime::UNIX_EPOCH,
            schemas::Body::text("hi"),
            None,
        );
        assert_eq!(searchable_text(&message), Some("hi"));
        message.body = schemas::Body { ciphertext: Some("c2VjcmV0".to_owned()), ..Default::default() };
        assert_eq!(searchable_text(&message), None);
        message.body = schemas::Body { media_id: Some("m1".to_owned()), text: Some("  ".to_owned()), ..Default::default() };
        assert_eq!(searchable_text(&message), None);
    }
}
