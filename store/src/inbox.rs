//! The inbox: a user's conversations, newest activity first, with the last message and the unread count, in a fixed number of round trips.
//!
//! Three batch direct gets (last message per conversation, conversation records, the
//! user's watermarks) and one prefix listing (the user's mention keys, every conversation at
//! once) replace one round trip per conversation. Mention keys found already read are purged
//! on the way out (one more round trip, only when there are any).

use schemas::{ConversationRecord, InboxEntry, Timestamp};
use subjects::Id;

use crate::batch_get::last_messages;
use crate::error::StoreError;
use crate::mentions::tally;
use crate::{Conversations, Mentions, Receipts};

impl Conversations {
    pub async fn inbox(&self, user: &Id, receipts: &Receipts) -> Result<Vec<InboxEntry>, StoreError> {
        let conversations = self.conversations_of(user).await?;
        let message_subjects: Vec<String> = conversations.iter().map(subjects::message_subject).collect();
        let records_bucket = &self.storage.conversations;
        let record_subjects: Vec<String> = conversations.iter().map(|conversation| format!("{}{conversation}", records_bucket.prefix)).collect();
        let stream_name = self.storage.messages.cached_info().config.name.clone();
        let mentions = Mentions::new(self.client.clone(), &self.storage);
        let (last, records, watermarks, mention_keys) = tokio::try_join!(
            last_messages(&self.client, &stream_name, &message_subjects),
            last_messages(&self.client, &records_bucket.stream_name, &record_subjects),
            receipts.user_watermarks(user, &conversations),
            mentions.entries_of(user),
        )?;
        let mention_tally = tally(mention_keys, &conversations, &watermarks);

        let mut entries: Vec<(Timestamp, InboxEntry)> = Vec::with_capacity(conversations.len());
        for ((conversation, message_subject), record_subject) in conversations.iter().zip(&message_subjects).zip(&record_subjects) {
            let Some(record) = records.get(record_subject) else { continue };
            let record = ConversationRecord::from_bytes(&record.payload).map_err(StoreError::internal)?;
            let last_message = match last.get(message_subject) {
                Some(entry) => Some(schemas::decode_stored_message(&entry.payload).map_err(StoreError::internal)?.message),
                None => None,
            };
            let read = watermarks.get(conversation).map_or(0, |watermark| watermark.read);
            // Everything after one's own latest message is from others, and one's own messages never count.
            let unread = match &last_message {
                Some(message) if message.sender != user.as_str() => message.seq.saturating_sub(read),
                _ => 0,
            };
            let activity = last_message.as_ref().map_or(record.created_at, |message| message.sent_at);
            // Never more than `unread`: a mention key can outlive the message it names (the log's TTL).
            let unread_mentions = mention_tally.unread.get(conversation).copied().unwrap_or(0).min(unread);
            entries.push((activity, InboxEntry { id: record.id, kind: record.kind, title: record.title, last_message, unread, encrypted: record.encrypted, unread_mentions }));
        }
        if !mention_tally.stale_keys.is_empty() {
            // Mentions read by sending (which moves the watermark without a read receipt) or whose purge failed.
            mentions.purge_quietly(&mention_tally.stale_keys).await;
        }
        entries.sort_by(|left, right| right.0.cmp(&left.0));
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }
}
