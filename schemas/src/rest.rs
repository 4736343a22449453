//! Request and response bodies of the HTTP API.

use serde::{Deserialize, Serialize};
use utoipa::{ToSchema, IntoParams};

use crate::{Body, ConversationKind, ErrorCode, Message, MessageUpdate, ReactionAction, Role, Timestamp};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevTokenRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateConversationRequest {
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    /// End-to-end encrypted: the conversation accepts only `ciphertext` bodies, for good.
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    pub id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub members: Vec<Member>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMemberRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InboxEntry {
    pub id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub last_message: Option<Message>,
    pub unread: u64,
    #[serde(default)]
    pub encrypted: bool,
    /// Unread messages (after the read watermark) that mention the caller.
    #[serde(default)]
    pub unread_mentions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Inbox {
    pub conversations: Vec<InboxEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostMessageRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub conversation_id: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub client_msg_id: String,
    pub body: Body,
    /// The `seq` of the message this one replies to, in the same conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Member ids the message mentions; only for a `ciphertext` body (a readable text's `@id`s are found by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 50)]
    pub mentions: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostMessageResponse {
    pub conversation_id: String,
    pub seq: u64,
    pub client_msg_id: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: Timestamp,
    /// Additive to PROTOCOL.md: true when this was a resend (also signalled by status 200).
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
    /// Changes in the page's range that the server could not fold (an encrypted conversation's edits and reactions), for the client to fold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<MessageUpdate>,
}

/// `PATCH /v1/conversations/{id}/messages/{seq}`: the message's new body (text, or ciphertext when encrypted).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EditMessageRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub client_msg_id: String,
    pub body: Body,
}

/// `DELETE /v1/conversations/{id}/messages/{seq}`: the delete's idempotency key; a fresh one when absent.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteMessageQuery {
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub client_msg_id: Option<String>,
}

/// `POST /v1/conversations/{id}/messages/{seq}/reactions`: put an emoji on or take it off.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReactRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub client_msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default)]
    pub action: ReactionAction,
    /// An encrypted conversation's reaction, as ciphertext, instead of `emoji`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Read,
    Delivered,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub conversation_id: String,
    pub seq: u64,
    pub kind: ReceiptKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `{"error":{"code","message"}}`, the body of every HTTP error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The JWT claims Natter reads (and mints in dev mode); `sub` is the user id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `"analyst"` ([`crate::ANALYST_ROLE`]) lets the token use the analysts' search; absent for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// An analyst's scope: these conversations only; absent = every conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyst_conversations: Option<Vec<String>>,
}

/// Query of `GET /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub before: Option<u64>,
    pub after: Option<u64>,
    /// Messages per page; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

/// Query of `GET /v1/conversations/{id}/messages/{seq}/replies`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepliesQuery {
    /// Only replies with a larger `seq`: the last `seq` of the previous page.
    pub after: Option<u64>,
    /// Replies per page; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

/// Query of `GET /v1/ws` (and `?device=` on `POST /v1/messages`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectQuery {
    pub token: Option<String>,
    pub device: Option<String>,
    pub resume: Option<String>,
}
