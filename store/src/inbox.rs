//! The inbox: a user's conversations, newest activity first, with the last message and the unread count, in a fixed number of round trips.
//!
//! Two batch direct gets (conversation records, the user's watermarks) and concurrent tail
//! reads (one direct get per conversation, 64 in flight) replace sequential round trips.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use schemas::{ConversationRecord, InboxEntry, Message, Timestamp};
use subjects::Id;

use crate::batch_get::last_messages;
use crate::error::StoreError;
use crate::{Conversations, LogReader, Receipts};

/// Tail reads in flight at once while building an inbox.
const TAILS_IN_FLIGHT: usize = 64;

impl Conversations {
    pub async fn inbox(&self, user: &Id, receipts: &Receipts) -> Result<Vec<InboxEntry>, StoreError> {
        let conversations = self.conversations_of(user).await?;
        let records_bucket = &self.storage.conversations;
        let record_subjects: Vec<String> = conversations.iter().map(|conversation| format!("{}{conversation}", records_bucket.prefix)).collect();
        let (mut last, records, watermarks) = tokio::try_join!(
            self.last_messages(&conversations),
            last_messages(&self.client, &records_bucket.stream_name, &record_subjects),
            receipts.user_watermarks(user, &conversations),
        )?;

        let mut entries: Vec<(Timestamp, InboxEntry)> = Vec::with_capacity(conversations.len());
        for (conversation, record_subject) in conversations.iter().zip(&record_subjects) {
            let Some(record) = records.get(record_subject) else { continue };
            let record = ConversationRecord::from_bytes(&record.payload).map_err(StoreError::internal)?;
            let last_message = last.remove(conversation);
            let read = watermarks.get(conversation).map_or(0, |watermark| watermark.read);
            // Everything after one's own latest message is from others, and one's own messages never count.
            let unread = match &last_message {
                Some(message) if message.sender != user.as_str() => message.seq.saturating_sub(read),
                _ => 0,
            };
            let activity = last_message.as_ref().map_or(record.created_at, |message| message.sent_at);
            entries.push((activity, InboxEntry { id: record.id, kind: record.kind, title: record.title, last_message, unread }));
        }
        entries.sort_by(|left, right| right.0.cmp(&left.0));
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Each conversation's last message. A tail is the newest of many subjects (`msg.<conv>.*`),
    /// which a batch get cannot answer, so these are single direct gets, many in flight at once.
    async fn last_messages(&self, conversations: &[Id]) -> Result<HashMap<Id, Message>, StoreError> {
        let reader = LogReader::new(self.storage.clone());
        let tails = futures::stream::iter(conversations.to_vec())
            .map(move |conversation| {
                let reader = reader.clone();
                async move { reader.last_entry(&conversation).await.map(|tail| (conversation, tail)) }
            })
            .buffer_unordered(TAILS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(tails.into_iter().filter_map(|(conversation, tail)| tail.map(|(_, stored)| (conversation, stored.message))).collect())
    }
}
