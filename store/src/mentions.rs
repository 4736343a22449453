//! Unread mentions: one `mentions` key per (mentioned user, conversation, seq), counted against the read watermark and purged once read.
//!
//! The append writes the keys beside the message's other records (`log_append.rs`). Reading
//! past a mention purges its key, and the purge marker itself expires (the bucket has
//! `limit_markers`), so a user's listing stays about the size of their unread mentions: the
//! inbox counts them with one prefix listing for every conversation at once. Purging is best
//! effort; a key left behind is only a stale entry the next inbox listing finds and purges again.

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::kv;
use futures::future::join_all;
use schemas::ReceiptRecord;
use subjects::Id;

use crate::error::{from_nats, StoreError};
use crate::kv_listing::list_entries;
use crate::Storage;

/// Reads and purges unread mentions; cheap to clone.
#[derive(Clone)]
pub struct Mentions {
    client: async_nats::Client,
    bucket: kv::Store,
}

/// A user's unread mentions per conversation, and the keys found that are already read (or of conversations the user left).
#[derive(Debug, Default)]
pub(crate) struct MentionTally {
    pub unread: HashMap<Id, u64>,
    pub stale_keys: Vec<String>,
}

impl Mentions {
    pub fn new(client: async_nats::Client, storage: &Storage) -> Mentions {
        Mentions { client, bucket: storage.mentions.clone() }
    }

    /// How many messages after `read` in `conversation` mention `user`: one prefix listing.
    pub async fn unread_in(&self, user: &Id, conversation: &Id, read: u64) -> Result<u64, StoreError> {
        let entries = list_entries(&self.client, &self.bucket, &subjects::mentions_in_conversation_filter(user, conversation)).await?;
        let unread = entries.iter().filter_map(|(key, _)| subjects::parse_mention_key(key)).filter(|(_, seq)| *seq > read).count();
        Ok(u64::try_from(unread).unwrap_or(u64::MAX))
    }

    /// Purges `user`'s mentions in `conversation` at or below `read`, after their read watermark moved there.
    pub async fn forget_read(&self, user: &Id, conversation: &Id, read: u64) -> Result<(), StoreError> {
        let entries = list_entries(&self.client, &self.bucket, &subjects::mentions_in_conversation_filter(user, conversation)).await?;
        let read_keys: Vec<String> =
            entries.into_iter().filter(|(key, _)| subjects::parse_mention_key(key).is_some_and(|(_, seq)| seq <= read)).map(|(key, _)| key).collect();
        purge_keys(&self.bucket, &read_keys).await
    }

    /// Every mention key of `user`, all conversations: the inbox's one listing.
    pub(crate) async fn entries_of(&self, user: &Id) -> Result<Vec<String>, StoreError> {
        let entries = list_entries(&self.client, &self.bucket, &subjects::mentions_of_user_filter(user)).await?;
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    }

    /// Best effort: a key that stays is counted as read again next time and purged then.
    pub(crate) async fn purge_quietly(&self, keys: &[String]) {
        if let Err(error) = purge_keys(&self.bucket, keys).await {
            tracing::debug!(%error, keys = keys.len(), "failed to purge read mentions; the next listing retries");
        }
    }
}

/// Splits a user's mention keys into unread counts per conversation and stale keys, against the user's
/// conversations and folded read watermarks.
pub(crate) fn tally(keys: Vec<String>, conversations: &[Id], watermarks: &HashMap<Id, ReceiptRecord>) -> MentionTally {
    let mut tally = MentionTally::default();
    let conversations: HashSet<&Id> = conversations.iter().collect();
    for key in keys {
        let Some((conversation, seq)) = subjects::parse_mention_key(&key) else { continue };
        let read = watermarks.get(&conversation).map_or(0, |watermark| watermark.read);
        if seq > read && conversations.contains(&conversation) {
            *tally.unread.entry(conversation).or_default() += 1;
        } else {
            tally.stale_keys.push(key);
        }
    }
    tally
}

/// Purges keys concurrently; the markers expire on their own (`subjects::MENTION_PURGE_MARKER_TTL`).
async fn purge_keys(bucket: &kv::Store, keys: &[String]) -> Result<(), StoreError> {
    let purges = keys.iter().map(|key| bucket.purge_with_ttl(key, subjects::MENTION_PURGE_MARKER_TTL));
    for result in join_all(purges).await {
        result.map_err(|error| from_nats("failed to purge a read mention", error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Id {
        Id::parse(text).unwrap()
    }

    #[test]
    fn mentions_above_the_watermark_count_and_the_rest_are_stale() {
        let keys = ["bob.c1.3", "bob.c1.5", "bob.c1.9", "bob.c2.1", "bob.gone.4", "bob.c1"].map(str::to_owned).to_vec();
        let watermarks = HashMap::from([(id("c1"), ReceiptRecord { v: 1, read: 5, delivered: 5 })]);
        let tally = tally(keys, &[id("c1"), id("c2")], &watermarks);
        assert_eq!(tally.unread, HashMap::from([(id("c1"), 1), (id("c2"), 1)]));
        assert_eq!(tally.stale_keys, ["bob.c1.3", "bob.c1.5", "bob.gone.4"]);
    }
}
