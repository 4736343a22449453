//! Version-tagged records Natter stores in JetStream: the message envelope and the KV values.
//!
//! Writers always write the newest version; readers accept every version ever written.
//! `golden/` holds one file per version and the tests read each of them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Body, Change, ChangeKind, Message, ReactionAction, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("stored record is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored record has unknown version {0}")]
    UnknownVersion(u64),
    #[error("stored record has unknown kind {0:?}")]
    UnknownKind(String),
    #[error("stored record lacks {0}")]
    MissingField(&'static str),
}

/// One entry of a conversation log as stored on `msg.<conv>`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub message: Message,
    /// Stream sequence of the conversation's previous entry (0 for the first): lets readers walk back without an index.
    pub prev_stream_seq: u64,
    /// For an edit, delete or reaction: what it changes (its `message` carries seq, sender, time and an edit's body).
    pub change: Option<Change>,
    /// For a change: the stream sequence of the conversation's latest message before it, so the
    /// inbox shows the last message, not a reaction, without walking back.
    pub latest_message_stream_seq: Option<u64>,
}

impl StoredMessage {
    pub fn message(message: Message, prev_stream_seq: u64) -> StoredMessage {
        StoredMessage { message, prev_stream_seq, change: None, latest_message_stream_seq: None }
    }

    /// The stream sequence of the conversation's latest message as of this entry, which is at `stream_seq`.
    pub fn latest_message_at(&self, stream_seq: u64) -> Option<u64> {
        match self.change {
            None => Some(stream_seq),
            Some(_) => self.latest_message_stream_seq,
        }
    }
}

/// Version 1 of the log envelope; `kind` is `message`, or `edit`/`delete`/`reaction` with a `target`.
#[derive(Serialize, Deserialize)]
struct StoredMessageV1 {
    v: u64,
    kind: String,
    conversation_id: String,
    seq: u64,
    client_msg_id: String,
    sender: String,
    sender_device: String,
    #[serde(with = "time::serde::rfc3339")]
    sent_at: Timestamp,
    body: Body,
    prev: u64,
    /// Added without a version bump: optional, and absent in entries written before replies existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    /// The changed message's `seq`, for every kind but `message` (added without a version bump, as were the next two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<ReactionAction>,
    /// A change's pointer to the latest message before it (stream sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latest_message: Option<u64>,
    /// Added without a version bump, like `reply_to`: absent in entries without mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<String>,
}

#[derive(Deserialize)]
struct VersionHead {
    v: u64,
}

const MESSAGE_KIND: &str = "message";

pub fn encode_stored_message(stored: &StoredMessage) -> Vec<u8> {
    let message = &stored.message;
    let change = stored.change.as_ref();
    let envelope = StoredMessageV1 {
        v: 1,
        kind: change.map_or(MESSAGE_KIND, |change| change.kind.as_str()).to_owned(),
        conversation_id: message.conversation_id.clone(),
        seq: message.seq,
        client_msg_id: message.client_msg_id.clone(),
        sender: message.sender.clone(),
        sender_device: message.sender_device.clone(),
        sent_at: message.sent_at,
        body: message.body.clone(),
        prev: stored.prev_stream_seq,
        reply_to: message.reply_to,
        target: change.map(|change| change.target_seq),
        emoji: change.and_then(|change| change.emoji.clone()),
        action: change.filter(|change| change.kind == ChangeKind::Reaction).map(|change| change.action),
        latest_message: stored.latest_message_stream_seq.filter(|_| change.is_some()),
        mentions: message.mentions.clone(),
    };
    serde_json::to_vec(&envelope).expect("envelopes always serialize")
}

pub fn decode_stored_message(bytes: &[u8]) -> Result<StoredMessage, RecordError> {
    let head: VersionHead = serde_json::from_slice(bytes)?;
    match head.v {
        1 => {
            let envelope: StoredMessageV1 = serde_json::from_slice(bytes)?;
            let change_kind = match envelope.kind.as_str() {
                MESSAGE_KIND => None,
                "edit" => Some(ChangeKind::Edit),
                "delete" => Some(ChangeKind::Delete),
                "reaction" => Some(ChangeKind::Reaction),
                _ => return Err(RecordError::UnknownKind(envelope.kind)),
            };
            let change = match change_kind {
                None => None,
                Some(kind) => {
                    let target_seq = envelope.target.ok_or_else(|| RecordError::MissingField("target"))?;
                    Some(Change { kind, target_seq, emoji: envelope.emoji, action: envelope.action.unwrap_or_default() })
                }
            };
            let mut message = Message::new(
                envelope.conversation_id,
                envelope.seq,
                envelope.client_msg_id,
                envelope.sender,
                envelope.sender_device,
                envelope.sent_at,
                envelope.body,
                envelope.reply_to,
            );
            message.mentions = envelope.mentions;
            let latest_message_stream_seq = envelope.latest_message.filter(|_| change.is_some());
            Ok(StoredMessage { message, prev_stream_seq: envelope.prev, change, latest_message_stream_seq })
        }
        other => Err(RecordError::UnknownVersion(other)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Member,
}

/// `conversations` bucket value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub v: u64,
    pub id: String,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// End-to-end encrypted: only `ciphertext` bodies are accepted. Fixed at creation; absent in older records (false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The message-log shard holding the conversation (`subjects::Shard`). Fixed at creation; absent in older records (0, the original stream).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `members` and `memberships` bucket value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub v: u64,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: Timestamp,
}

/// `msgids` bucket value: what the original send was acked with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMsgIdRecord {
    pub v: u64,
    pub seq: u64,
    pub stream_seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: Timestamp,
    /// The message's `reply_to`, so a resend can repair its thread entry without reading the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// The message's mentions, so a resend can repair their unread-mention keys the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

/// `multicast` bucket value: the group is delivered by multicast since `since` (set once, when it first reached the threshold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticastRecord {
    pub v: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub since: Timestamp,
}

/// `receipts` bucket value: how far a device (or, folded, a user) has read and received a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub v: u64,
    pub read: u64,
    pub delivered: u64,
}

/// `to_bytes` / `from_bytes` for a version-1 JSON record; a record of another version is refused, not misread.
macro_rules! json_record {
    ($($record:ty),*) => {$(
        impl $record {
            pub fn to_bytes(&self) -> Vec<u8> {
                serde_json::to_vec(self).expect("records always serialize")
            }
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, $crate::RecordError> {
                let record: Self = serde_json::from_slice(bytes)?;
                if record.v != 1 {
                    return Err($crate::RecordError::UnknownVersion(record.v));
                }
                Ok(record)
            }
        }
    )*};
}
pub(crate) use json_record;
json_record!(ConversationRecord, MemberRecord, ClientMsgIdRecord, ReceiptRecord, MulticastRecord);

#[cfg(test)]
mod tests {
    use super::*;

    use crate::golden;

    #[test]
    fn every_stored_message_version_stays_readable() {
        let stored = decode_stored_message(&golden("message.v1.json")).unwrap();
        assert_eq!(stored.message.seq, 7);
        assert_eq!(stored.message.body.text.as_deref(), Some("hello"));
        assert_eq!(stored.prev_stream_seq, 41);
        assert_eq!(stored.message.sent_at, time::macros::datetime!(2026-11-28 10:00:00.123 UTC));
    }

    #[test]
    fn newest_writer_round_trips_and_matches_golden() {
        let stored = decode_stored_message(&golden("message.v1.json")).unwrap();
        let written = encode_stored_message(&stored);
        assert_eq!(decode_stored_message(&written).unwrap(), stored);
        let as_value: serde_json::Value = serde_json::from_slice(&written).unwrap();
        let golden_value: serde_json::Value = serde_json::from_slice(&golden("message.v1.json")).unwrap();
        assert_eq!(as_value, golden_value);
    }

    #[test]
    fn changes_stay_readable_and_round_trip() {
        for (file, kind) in [("edit.v1.json", ChangeKind::Edit), ("delete.v1.json", ChangeKind::Delete), ("reaction.v1.json", ChangeKind::Reaction)] {
            let stored = decode_stored_message(&golden(file)).unwrap();
            let change = stored.change.clone().unwrap_or_else(|| panic!("{file} is a change"));
            assert_eq!((change.kind, change.target_seq), (kind, 7), "{file}");
            assert_eq!(decode_stored_message(&encode_stored_message(&stored)).unwrap(), stored, "{file}");
            let written: serde_json::Value = serde_json::from_slice(&encode_stored_message(&stored)).unwrap();
            assert_eq!(written, serde_json::from_slice::<serde_json::Value>(&golden(file)).unwrap(), "{file}");
        }
        let reaction = decode_stored_message(&golden("reaction.v1.json")).unwrap().change.unwrap();
        assert_eq!((reaction.emoji.as_deref(), reaction.action), (Some("👍"), ReactionAction::Remove));
        assert!(matches!(decode_stored_message(br#"{"v":1,"kind":"edit","conversation_id":"c","seq":2,"client_msg_id":"m","sender":"a","sender_device":"d","sent_at":"2026-11-28T10:00:00Z","body":{},"prev":1}"#), Err(RecordError::MissingField("target"))));
    }

    #[test]
    fn mentions_ride_on_the_v1_envelope_without_a_version_bump() {
        let plain = decode_stored_message(&golden("message.v1.json")).unwrap();
        assert!(plain.message.mentions.is_empty(), "entries written before mentions existed have none");
        let stored = decode_stored_message(&golden("message-mentions.v1.json")).unwrap();
        assert_eq!(stored.message.mentions, ["bob", "carol"]);
        let written: serde_json::Value = serde_json::from_slice(&encode_stored_message(&stored)).unwrap();
        assert_eq!(written, serde_json::from_slice::<serde_json::Value>(&golden("message-mentions.v1.json")).unwrap());
    }

    #[test]
    fn unknown_versions_are_refused_not_misread() {
        assert!(matches!(decode_stored_message(br#"{"v":99}"#), Err(RecordError::UnknownVersion(99))));
    }

    #[test]
    fn kv_records_stay_readable() {
        let conversation = ConversationRecord::from_bytes(&golden("conversation.v1.json")).unwrap();
        assert_eq!(conversation.kind, ConversationKind::Group);
        assert!(!conversation.encrypted, "records written before the flag existed are not encrypted");
        let encrypted = ConversationRecord::from_bytes(&golden("conversation-encrypted.v1.json")).unwrap();
        assert!(encrypted.encrypted);
        assert_eq!(encrypted.to_bytes(), golden("conversation-encrypted.v1.json").trim_ascii_end(), "the flag is written only when set");
        let member = MemberRecord::from_bytes(&golden("member.v1.json")).unwrap();
        assert_eq!(member.role, Role::Owner);
        let ack = ClientMsgIdRecord::from_bytes(&golden("msgid.v1.json")).unwrap();
        assert_eq!((ack.seq, ack.stream_seq), (3, 99));
        let multicast = MulticastRecord::from_bytes(&golden("multicast.v1.json")).unwrap();
        assert_eq!(multicast.since, time::macros::datetime!(2026-12-01 10:00 UTC));
        let receipt = ReceiptRecord::from_bytes(&golden("receipt.v1.json")).unwrap();
        assert_eq!((receipt.read, receipt.delivered), (5, 8));
    }
}
