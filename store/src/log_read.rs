//! Reads a conversation's log by `seq`: history pages, ranges for sync and gap filling, the tail.
//!
//! Each message has its own subject (`msg.<conv>.<seq>`), so a page is one batch direct get by
//! subject (plus a tail read for the latest page): nothing here scans the stream, and cost does
//! not grow with the stream's size. The tail is the newest message matching `msg.<conv>.*`; the
//! server finds it through its subject index, at a cost that grows with the conversation's length.

use async_nats::jetstream::stream::DirectGetErrorKind;
use schemas::{Message, StoredMessage};
use subjects::Id;

use crate::batch_get;
use crate::error::{from_nats, StoreError};
use crate::Storage;

/// Largest page PROTOCOL.md allows.
pub const MAX_PAGE: u64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRequest {
    Latest { limit: u64 },
    Before { seq: u64, limit: u64 },
    After { seq: u64, limit: u64 },
}

#[derive(Clone)]
pub struct LogReader {
    storage: Storage,
    client: async_nats::Client,
    stream_name: String,
}

impl LogReader {
    pub fn new(storage: Storage) -> LogReader {
        let stream_name = storage.messages.cached_info().config.name.clone();
        LogReader { client: storage.jetstream.client(), stream_name, storage }
    }

    /// The conversation's last entry with its stream sequence, or None for an empty log.
    pub async fn last_entry(&self, conversation: &Id) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        let filter = subjects::conversation_messages_filter(conversation);
        match batch_get::last_message_matching(&self.client, &self.stream_name, &filter).await? {
            Some(last) => Ok(Some((last.stream_seq, decode(&last.payload)?))),
            None => Ok(None),
        }
    }

    /// The `seq` of the conversation's last message (0 when empty).
    pub async fn last_seq(&self, conversation: &Id) -> Result<u64, StoreError> {
        Ok(self.last_entry(conversation).await?.map_or(0, |(_, last)| last.message.seq))
    }

    pub async fn get_by_stream_seq(&self, stream_seq: u64) -> Result<StoredMessage, StoreError> {
        let raw = self.storage.messages.direct_get(stream_seq).await.map_err(|error| from_nats("failed to read message", error))?;
        decode(&raw.payload)
    }

    /// A history page per PROTOCOL.md: ascending `seq`, and whether older (or newer, for `After`) messages exist.
    ///
    /// Only a `Latest` page needs the tail (the newest of many subjects, the dearest read);
    /// `Before` and `After` pages are one batch get of the subjects they name.
    pub async fn page(&self, conversation: &Id, request: HistoryRequest) -> Result<(Vec<Message>, bool), StoreError> {
        match request {
            HistoryRequest::Latest { limit } => {
                let last = self.last_seq(conversation).await?;
                self.page_ending_at(conversation, last, limit).await
            }
            HistoryRequest::Before { seq, limit } => {
                let end = seq.saturating_sub(1);
                let (messages, more) = self.page_ending_at(conversation, end, limit).await?;
                if messages.last().is_some_and(|message| message.seq == end) || end == 0 {
                    return Ok((messages, more));
                }
                // `seq` is beyond the tail (or its predecessor expired): clamp to the tail as before.
                let last = self.last_seq(conversation).await?;
                self.page_ending_at(conversation, end.min(last), limit).await
            }
            HistoryRequest::After { seq, limit } => {
                // One more than asked for says whether newer messages exist.
                let mut messages = self.range(conversation, seq + 1, seq.saturating_add(limit.max(1) + 1)).await?;
                let more = messages.len() as u64 > limit.max(1);
                messages.truncate(limit.max(1) as usize);
                Ok((messages, more))
            }
        }
    }

    async fn page_ending_at(&self, conversation: &Id, end: u64, limit: u64) -> Result<(Vec<Message>, bool), StoreError> {
        if end == 0 {
            return Ok((Vec::new(), false));
        }
        let first = end.saturating_sub(limit.max(1) - 1).max(1);
        Ok((self.range(conversation, first, end).await?, first > 1))
    }

    /// Messages `first..=last` in order, skipping any that retention already removed.
    pub async fn range(&self, conversation: &Id, first: u64, last: u64) -> Result<Vec<Message>, StoreError> {
        let mut messages = Vec::new();
        let mut chunk_start = first.max(1);
        while chunk_start <= last {
            let chunk_end = last.min(chunk_start + MAX_PAGE - 1);
            let wanted: Vec<String> = (chunk_start..=chunk_end).map(|seq| subjects::message_subject(conversation, seq)).collect();
            let found = batch_get::last_messages(&self.client, &self.stream_name, &wanted).await?;
            for subject in &wanted {
                if let Some(entry) = found.get(subject) {
                    messages.push(decode(&entry.payload)?.message);
                }
            }
            chunk_start = chunk_end + 1;
        }
        Ok(messages)
    }

    /// One message by `seq`: a direct get of its subject; None if it does not exist (or expired).
    pub async fn get_by_seq(&self, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        match self.storage.messages.direct_get_last_for_subject(subjects::message_subject(conversation, seq)).await {
            Ok(raw) => Ok(Some(decode(&raw.payload)?)),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(error) => Err(from_nats("failed to read message", error)),
        }
    }
}

fn decode(payload: &[u8]) -> Result<StoredMessage, StoreError> {
    schemas::decode_stored_message(payload).map_err(|error| StoreError::Internal(format!("unreadable log entry: {error}")))
}
