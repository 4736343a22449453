//! The inbox: a user's conversations, newest activity first, with the last message and the unread count, in a fixed number of round trips.
//!
//! Three batch direct gets (last entry per conversation, one per log shard, conversation records,
//! the user's watermarks) replace one round trip per conversation; then, in parallel, one direct get per
//! conversation whose last entry is an edit, delete or reaction (it points at the latest
//! message), and one batch get of the last messages' folded states (a deleted one shows as a tombstone).
//! The user's mention keys come from one prefix listing (every conversation at once); keys found
//! already read are purged on the way out (one more round trip, only when there are any).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use schemas::{ConversationRecord, InboxEntry, Message, StoredMessage, Timestamp};
use subjects::{Id, Shard};

use crate::batch_get::{last_messages, LastMessage};
use crate::error::{from_nats, StoreError};
use crate::mentions::tally;
use crate::message_state::MessageStates;
use crate::shards::LogShard;
use crate::{Conversations, Mentions, Receipts};

impl Conversations {
    pub async fn inbox(&self, user: &Id, receipts: &Receipts) -> Result<Vec<InboxEntry>, StoreError> {
        let conversations = self.conversations_of(user).await?;
        let shards = self.storage.shards_of(&conversations).await?;
        let message_subjects: Vec<String> = conversations.iter().map(|conversation| shards[conversation].shard.message_subject(conversation)).collect();
        let records_bucket = &self.storage.conversations;
        let record_subjects: Vec<String> = conversations.iter().map(|conversation| format!("{}{conversation}", records_bucket.prefix)).collect();
        let mentions = Mentions::new(self.client.clone(), &self.storage);
        let (last, records, watermarks, mention_keys) = tokio::try_join!(
            self.last_entries_by_shard(&conversations, &shards, &message_subjects),
            last_messages(&self.client, &records_bucket.stream_name, &record_subjects),
            receipts.user_watermarks(user, &conversations),
            mentions.entries_of(user),
        )?;
        let mention_tally = tally(mention_keys, &conversations, &watermarks);

        let mut last_entries: HashMap<&Id, StoredMessage> = HashMap::new();
        for (conversation, message_subject) in conversations.iter().zip(&message_subjects) {
            if let Some(entry) = last.get(message_subject) {
                last_entries.insert(conversation, schemas::decode_stored_message(&entry.payload).map_err(StoreError::internal)?);
            }
        }
        let mut last_messages_by_conversation = self.latest_messages(&last_entries, &shards).await?;
        let folded_state = MessageStates::new(self.storage.clone())
            .get_each(&last_messages_by_conversation.iter().map(|(conversation, message)| ((*conversation).clone(), message.seq)).collect::<Vec<_>>())
            .await?;

        let mut entries: Vec<(Timestamp, InboxEntry)> = Vec::with_capacity(conversations.len());
        for (conversation, record_subject) in conversations.iter().zip(&record_subjects) {
            let Some(record) = records.get(record_subject) else { continue };
            let record = ConversationRecord::from_bytes(&record.payload).map_err(StoreError::internal)?;
            let last_message = last_messages_by_conversation.remove(conversation).map(|message| {
                let state = folded_state.get(&(conversation.clone(), message.seq)).map(|(state, revision)| (state, *revision));
                schemas::fold_message(message, state, Some(user.as_str()))
            });
            let last_entry = last_entries.get(conversation).map(|entry| &entry.message);
            let read = watermarks.get(conversation).map_or(0, |watermark| watermark.read);
            // Everything after one's own latest entry is from others, and one's own entries never count.
            let unread = match last_entry {
                Some(entry) if entry.sender != user.as_str() => entry.seq.saturating_sub(read),
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

    /// The last entry of each conversation, keyed by its message subject: one batch direct get per shard, in parallel.
    async fn last_entries_by_shard(
        &self,
        conversations: &[Id],
        shards: &HashMap<Id, Arc<LogShard>>,
        message_subjects: &[String],
    ) -> Result<HashMap<String, LastMessage>, StoreError> {
        let mut by_shard: HashMap<Shard, (&LogShard, Vec<String>)> = HashMap::new();
        for (conversation, subject) in conversations.iter().zip(message_subjects) {
            let shard = &shards[conversation];
            by_shard.entry(shard.shard).or_insert_with(|| (shard, Vec::new())).1.push(subject.clone());
        }
        let reads = by_shard.into_values().map(|(shard, subjects)| async move {
            let stream_name = shard.shard.message_stream();
            last_messages(&self.client, &stream_name, &subjects).await
        });
        let mut last = HashMap::with_capacity(conversations.len());
        for read in join_all(reads).await {
            last.extend(read?);
        }
        Ok(last)
    }

    /// Each conversation's latest message: its last entry, or the message a change points back to.
    async fn latest_messages<'a>(
        &self,
        last_entries: &HashMap<&'a Id, StoredMessage>,
        shards: &HashMap<Id, Arc<LogShard>>,
    ) -> Result<HashMap<&'a Id, Message>, StoreError> {
        let mut latest = HashMap::with_capacity(last_entries.len());
        let mut pointed = Vec::new();
        for (conversation, entry) in last_entries {
            match (&entry.change, entry.latest_message_stream_seq) {
                (None, _) => {
                    latest.insert(*conversation, entry.message.clone());
                }
                (Some(_), Some(stream_seq)) => pointed.push((*conversation, stream_seq)),
                // A change appended before any message of its conversation was seen has no message to show.
                (Some(_), None) => {}
            }
        }
        let reads = join_all(pointed.iter().map(|(conversation, stream_seq)| shards[*conversation].messages.direct_get(*stream_seq))).await;
        for ((conversation, _), read) in pointed.into_iter().zip(reads) {
            match read {
                Ok(raw) => {
                    latest.insert(conversation, schemas::decode_stored_message(&raw.payload).map_err(StoreError::internal)?.message);
                }
                // Expired by retention since: the conversation shows no last message, as an empty one would.
                Err(error) if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {}
                Err(error) => return Err(from_nats("failed to read a conversation's latest message", error)),
            }
        }
        Ok(latest)
    }
}
