//! Edits, deletes and reactions: log entries that point at an earlier message, and how their effect is folded into it.
//!
//! A change is an entry of the conversation log with its own `seq`, so order, sync, idempotency
//! and durability are the log's. What history shows is the target message with every change
//! folded in, kept in a `msgstate` record per message. Folding is decided by each change's own
//! `seq` (last edit wins, the first delete sticks, per user and emoji the latest reaction wins),
//! so applying changes in any order, or twice, gives the state of the log's order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Body, Message, Timestamp};

/// Distinct emojis one message may carry; a reaction beyond it is refused.
pub const MAX_EMOJIS_PER_MESSAGE: usize = 50;
/// Longest reaction, in bytes: an emoji with modifiers, or a short name like `:party_parrot:`.
pub const MAX_EMOJI_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Edit,
    Delete,
    Reaction,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Edit => "edit",
            ChangeKind::Delete => "delete",
            ChangeKind::Reaction => "reaction",
        }
    }
}

/// Whether a reaction is put on or taken off; setting what is already set changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReactionAction {
    #[default]
    Add,
    Remove,
}

/// What a log entry that is not a message does to its target; the entry's `body` is an edit's new body.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub target_seq: u64,
    /// A reaction's emoji; absent in an end-to-end encrypted conversation, where it is inside the ciphertext body.
    pub emoji: Option<String>,
    pub action: ReactionAction,
}

/// A change as clients see it, in `message_updated` frames and in history's `updates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageUpdate {
    pub conversation_id: String,
    /// The change's own `seq` in the conversation log.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The `seq` of the message it changes.
    pub target_seq: u64,
    pub client_msg_id: String,
    pub sender: String,
    pub sender_device: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: Timestamp,
    /// An edit's new body; an encrypted conversation's reaction, as ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ReactionAction>,
}

impl MessageUpdate {
    pub fn new(entry: &Message, change: &Change) -> MessageUpdate {
        let has_body = entry.body != Body::default();
        MessageUpdate {
            conversation_id: entry.conversation_id.clone(),
            seq: entry.seq,
            kind: change.kind,
            target_seq: change.target_seq,
            client_msg_id: entry.client_msg_id.clone(),
            sender: entry.sender.clone(),
            sender_device: entry.sender_device.clone(),
            sent_at: entry.sent_at,
            body: has_body.then(|| entry.body.clone()),
            emoji: change.emoji.clone(),
            action: (change.kind == ChangeKind::Reaction).then_some(change.action),
        }
    }
}

/// One emoji's reactions on a message, as a reader sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: u64,
    /// Whether the reader is one of them.
    pub me: bool,
}

/// `msgstate` bucket value: everything the server folded into one message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageStateRecord {
    pub v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<DeleteState>,
    /// emoji → user → that user's latest reaction with it (kept when removed, so an older add cannot revive it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, BTreeMap<String, ReactionState>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditState {
    pub seq: u64,
    pub body: Body,
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteState {
    pub seq: u64,
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionState {
    pub seq: u64,
    pub on: bool,
}

crate::records::json_record!(MessageStateRecord);

/// Whether the server folds this change into its target: it cannot fold what it cannot read
/// (an encrypted edit or reaction); those reach clients as they are. A delete is metadata and always folds.
pub fn server_folds(change: &Change, entry_body: &Body) -> bool {
    match change.kind {
        ChangeKind::Delete => true,
        ChangeKind::Edit => entry_body.ciphertext.is_none(),
        ChangeKind::Reaction => change.emoji.is_some(),
    }
}

impl MessageStateRecord {
    pub fn new() -> MessageStateRecord {
        MessageStateRecord { v: 1, ..MessageStateRecord::default() }
    }

    /// Folds one change (the log entry `entry`) in; false when the state already reflects it or a later change.
    pub fn apply(&mut self, entry: &Message, change: &Change) -> bool {
        if !server_folds(change, &entry.body) {
            return false;
        }
        match change.kind {
            ChangeKind::Edit => {
                if self.edit.as_ref().is_some_and(|edit| edit.seq >= entry.seq) {
                    return false;
                }
                self.edit = Some(EditState { seq: entry.seq, body: entry.body.clone(), at: entry.sent_at });
                true
            }
            ChangeKind::Delete => {
                if self.deleted.as_ref().is_some_and(|deleted| deleted.seq <= entry.seq) {
                    return false;
                }
                self.deleted = Some(DeleteState { seq: entry.seq, by: entry.sender.clone(), at: entry.sent_at });
                true
            }
            ChangeKind::Reaction => {
                let Some(emoji) = &change.emoji else { return false };
                let by_user = self.reactions.entry(emoji.clone()).or_default();
                if by_user.get(&entry.sender).is_some_and(|reaction| reaction.seq >= entry.seq) {
                    return false;
                }
                by_user.insert(entry.sender.clone(), ReactionState { seq: entry.seq, on: change.action == ReactionAction::Add });
                true
            }
        }
    }

    /// Whether this change is already folded in (or superseded), so nobody needs to write it.
    pub fn reflects(&self, entry: &Message, change: &Change) -> bool {
        !self.clone().apply(entry, change)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// Emojis someone currently reacts with.
    pub fn live_emojis(&self) -> usize {
        self.reactions.values().filter(|by_user| by_user.values().any(|reaction| reaction.on)).count()
    }

    pub fn emoji_in_use(&self, emoji: &str) -> bool {
        self.reactions.get(emoji).is_some_and(|by_user| by_user.values().any(|reaction| reaction.on))
    }

    pub fn has_reaction(&self, emoji: &str, user: &str) -> bool {
        self.reactions.get(emoji).and_then(|by_user| by_user.get(user)).is_some_and(|reaction| reaction.on)
    }
}

/// The message as `reader` sees it with `state` (at KV `revision`) folded in: edited body, tombstone, reaction counts.
pub fn fold_message(mut message: Message, state: Option<(&MessageStateRecord, u64)>, reader: Option<&str>) -> Message {
    let Some((state, revision)) = state else { return message };
    message.revision = Some(revision);
    if let Some(deleted) = &state.deleted {
        // A tombstone keeps the message's place (seq, sender, time, thread) and nothing it said.
        message.body = Body::default();
        message.deleted = true;
        message.deleted_at = Some(deleted.at);
        message.deleted_by = Some(deleted.by.clone());
        return message;
    }
    if let Some(edit) = &state.edit {
        message.body.text = edit.body.text.clone();
        message.edited_at = Some(edit.at);
    }
    let mut reactions: Vec<(u64, ReactionSummary)> = state
        .reactions
        .iter()
        .filter_map(|(emoji, by_user)| {
            let live: Vec<(&String, &ReactionState)> = by_user.iter().filter(|(_, reaction)| reaction.on).collect();
            let first_seq = live.iter().map(|(_, reaction)| reaction.seq).min()?;
            let me = reader.is_some_and(|reader| live.iter().any(|(user, _)| user.as_str() == reader));
            Some((first_seq, ReactionSummary { emoji: emoji.clone(), count: live.len() as u64, me }))
        })
        .collect();
    // Emojis in the order they were first put on, as chat apps show them.
    reactions.sort_by_key(|(first_seq, _)| *first_seq);
    message.reactions = reactions.into_iter().map(|(_, summary)| summary).collect();
    message
}

/// A reaction must be short and printable: it lands in keys' values and on every member's screen.
pub fn validate_emoji(emoji: &str) -> Result<(), String> {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return Err(format!("emoji must be 1 to {MAX_EMOJI_BYTES} bytes"));
    }
    if emoji.chars().any(|character| character.is_control() || character.is_whitespace()) {
        return Err("emoji must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
#[path = "message_change_tests.rs"]
mod tests;
