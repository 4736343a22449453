//! Version-tagged records Natter stores in JetStream: the message envelope and the KV values.
//!
//! Writers always write the newest version; readers accept every version ever written.
//! `golden/` holds one file per version and the tests read each of them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Body, Message, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("stored record is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored record has unknown version {0}")]
    UnknownVersion(u64),
    #[error("stored record has unknown kind {0:?}")]
    UnknownKind(String),
}

/// One entry of a conversation log as stored on `msg.<conv>`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub message: Message,
    /// Stream sequence of the conversation's previous entry (0 for the first): lets readers walk back without an index.
    pub prev_stream_seq: u64,
}

/// Version 1 of the log envelope. `kind` leaves room for edits, deletes and reactions as log entries.
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
    let envelope = StoredMessageV1 {
        v: 1,
        kind: MESSAGE_KIND.to_owned(),
        conversation_id: message.conversation_id.clone(),
        seq: message.seq,
        client_msg_id: message.client_msg_id.clone(),
        sender: message.sender.clone(),
        sender_device: message.sender_device.clone(),
        sent_at: message.sent_at,
        body: message.body.clone(),
        prev: stored.prev_stream_seq,
        reply_to: message.reply_to,
        mentions: message.mentions.clone(),
    };
    serde_json::to_vec(&envelope).expect("envelopes always serialize")
}

pub fn decode_stored_message(bytes: &[u8]) -> Result<StoredMessage, RecordError> {
    let head: VersionHead = serde_json::from_slice(bytes)?;
    match head.v {
        1 => {
            let envelope: StoredMessageV1 = serde_json::from_slice(bytes)?;
            if envelope.kind != MESSAGE_KIND {
                return Err(RecordError::UnknownKind(envelope.kind));
            }
            Ok(StoredMessage {
                message: Message {
                    conversation_id: envelope.conversation_id,
                    seq: envelope.seq,
                    client_msg_id: envelope.client_msg_id,
                    sender: envelope.sender,
                    sender_device: envelope.sender_device,
                    sent_at: envelope.sent_at,
                    body: envelope.body,
                    reply_to: envelope.reply_to,
                    mentions: envelope.mentions,
                },
                prev_stream_seq: envelope.prev,
            })
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
json_record!(ConversationRecord, MemberRecord, ClientMsgIdRecord, ReceiptRecord);

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
        let receipt = ReceiptRecord::from_bytes(&golden("receipt.v1.json")).unwrap();
        assert_eq!((receipt.read, receipt.delivered), (5, 8));
    }
}
