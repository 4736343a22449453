//! Reads a conversation's log by `seq`: history pages, ranges for sync and gap filling, the tail.
//!
//! A page costs one tail read plus, in parallel, one index read and one direct get per
//! message: nothing here scans the stream, so cost does not grow with the stream's size.

use async_nats::jetstream::stream::DirectGetErrorKind;
use futures::future::join_all;
use schemas::{Message, StoredMessage};
use subjects::Id;

use crate::error::{from_nats, StoreError};
use crate::Storage;

/// Largest page PROTOCOL.md allows.
pub const MAX_PAGE: u64 = 200;
/// How far a read walks back along `prev` pointers when an index entry is missing.
const MAX_FALLBACK_WALK: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRequest {
    Latest { limit: u64 },
    Before { seq: u64, limit: u64 },
    After { seq: u64, limit: u64 },
}

#[derive(Clone)]
pub struct LogReader {
    storage: Storage,
}

impl LogReader {
    pub fn new(storage: Storage) -> LogReader {
        LogReader { storage }
    }

    /// The conversation's last entry with its stream sequence, or None for an empty log.
    pub async fn last_entry(&self, conversation: &Id) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        match self.storage.messages.direct_get_last_for_subject(subjects::message_subject(conversation)).await {
            Ok(raw) => Ok(Some((raw.sequence, decode(&raw.payload)?))),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(error) => Err(from_nats("failed to read the conversation's tail", error)),
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
    /// A `Before` page reads the `seq`s it names and needs the tail only when they run past it.
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
                // Near the tail, most of the names would be past it; the tail says where to stop.
                let last = self.last_seq(conversation).await?;
                let end = seq.saturating_add(limit.max(1)).min(last);
                if end <= seq {
                    return Ok((Vec::new(), false));
                }
                Ok((self.range(conversation, seq + 1, end).await?, end < last))
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
            let reads = (chunk_start..=chunk_end).map(|seq| self.get_by_seq(conversation, seq));
            for read in join_all(reads).await {
                if let Some(stored) = read? {
                    messages.push(stored.message);
                }
            }
            chunk_start = chunk_end + 1;
        }
        Ok(messages)
    }

    /// One message by `seq`: index lookup, then a direct get; None if it does not exist (or expired).
    pub async fn get_by_seq(&self, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let key = subjects::message_index_key(conversation, seq);
        let indexed = self.storage.message_index.get(key).await.map_err(|error| from_nats("failed to read history index", error))?;
        match indexed.and_then(|bytes| std::str::from_utf8(&bytes).ok().and_then(|text| text.parse::<u64>().ok())) {
            Some(stream_seq) => match self.storage.messages.direct_get(stream_seq).await {
                Ok(raw) => Ok(Some(decode(&raw.payload)?)),
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(error) => Err(from_nats("failed to read message", error)),
            },
            None => self.walk_back_to(conversation, seq).await,
        }
    }

    /// The index entry is written just after the PubAck, so the newest messages may not have
    /// one yet: find them by walking back from the tail along `prev` pointers, boundedly.
    async fn walk_back_to(&self, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let Some((_, mut entry)) = self.last_entry(conversation).await? else {
            return Ok(None);
        };
        if entry.message.seq.saturating_sub(seq) > MAX_FALLBACK_WALK {
            // Far from the tail an entry without an index record has expired, not yet to be indexed.
            return Ok(None);
        }
        for _ in 0..=MAX_FALLBACK_WALK {
            if entry.message.seq == seq {
                return Ok(Some(entry));
            }
            if entry.message.seq < seq || entry.prev_stream_seq == 0 {
                return Ok(None);
            }
            entry = match self.storage.messages.direct_get(entry.prev_stream_seq).await {
                Ok(raw) => decode(&raw.payload)?,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(from_nats("failed to read message", error)),
            };
        }
        Ok(None)
    }
}

fn decode(payload: &[u8]) -> Result<StoredMessage, StoreError> {
    schemas::decode_stored_message(payload).map_err(|error| StoreError::Internal(format!("unreadable log entry: {error}")))
}
