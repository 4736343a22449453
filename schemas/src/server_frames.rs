//! Frames the server sends over the WebSocket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, FrameId, Message, MessageUpdate, ReceiptKind, Timestamp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The send is durable in JetStream; `duplicate` when it was a resend of an earlier one.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        client_msg_id: String,
        seq: u64,
        #[serde(with = "time::serde::rfc3339")]
        sent_at: Timestamp,
        duplicate: bool,
    },
    Message {
        message: Message,
    },
    /// An edit, delete or reaction (`update`, with its own `seq`) and the changed message as it now stands, if it is still kept.
    MessageUpdated {
        update: MessageUpdate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Message>,
    },
    /// Ends a `sync`: every missed message was sent; `cursors` are where each conversation now stands.
    Synced {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        cursors: BTreeMap<String, u64>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
    },
    /// Another member is typing in a conversation.
    Typing {
        conversation_id: String,
        user: String,
    },
    /// A member's read or delivered watermark moved; `device` names which of their devices when known.
    Receipt {
        conversation_id: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        kind: ReceiptKind,
        seq: u64,
    },
    /// A user the client shares a conversation with came online or went offline.
    Presence {
        user: String,
        status: PresenceStatus,
        #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        last_seen: Option<Timestamp>,
    },
    /// The caller's upload was scanned: `ready` (usable in a message) or `rejected` with a reason.
    Media {
        media_id: String,
        status: crate::MediaStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

impl ServerFrame {
    pub fn error(id: Option<FrameId>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error { id, code, message: message.into(), retry_after_ms: None }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}
