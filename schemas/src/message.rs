//! A chat message as clients see it, and the rules a message body must follow.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ReactionSummary, Timestamp};

/// One message of a conversation; `seq` is gapless per conversation (1, 2, 3 …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub conversation_id: String,
    pub seq: u64,
    pub client_msg_id: String,
    pub sender: String,
    pub sender_device: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: Timestamp,
    pub body: Body,
    /// The `seq` of the message this one replies to, in the same conversation; absent for a plain message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When the sender last edited it (the body is the edited one); absent if never edited.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    /// A tombstone: the message was deleted and its body removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// Who deleted it: the sender, or a group's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
    /// Reactions per emoji, in the order they were first put on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionSummary>,
    /// Version of the folded state (edits, delete, reactions): of two views of one message, the higher is newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Members the message mentions (`@id` in its text, or named by the sender of a ciphertext body), in order; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

impl Message {
    /// A plain message as first stored: nothing folded in yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(conversation_id: String, seq: u64, client_msg_id: String, sender: String, sender_device: String, sent_at: Timestamp, body: Body, reply_to: Option<u64>) -> Message {
        Message {
            conversation_id,
            seq,
            client_msg_id,
            sender,
            sender_device,
            sent_at,
            body,
            reply_to,
            edited_at: None,
            deleted: false,
            deleted_at: None,
            deleted_by: None,
            reactions: Vec::new(),
            revision: None,
            mentions: Vec::new(),
        }
    }
}

/// `{"text"}`, `{"media_id","text"?}` or `{"ciphertext"}`; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body needs one of text, media_id or ciphertext")]
    Empty,
    #[error("ciphertext cannot be combined with text or media_id")]
    MixedCiphertext,
    #[error("body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
}

impl Body {
    pub fn text(text: impl Into<String>) -> Body {
        Body { text: Some(text.into()), ..Body::default() }
    }

    /// Bytes of user content, the figure the text cap applies to.
    pub fn content_len(&self) -> usize {
        [&self.text, &self.media_id, &self.ciphertext].iter().filter_map(|part| part.as_ref()).map(String::len).sum()
    }

    pub fn validate(&self, max_bytes: usize) -> Result<(), BodyError> {
        if self.ciphertext.is_some() && (self.text.is_some() || self.media_id.is_some()) {
            return Err(BodyError::MixedCiphertext);
        }
        if self.text.is_none() && self.media_id.is_none() && self.ciphertext.is_none() {
            return Err(BodyError::Empty);
        }
        let size = self.content_len();
        if size > max_bytes {
            return Err(BodyError::TooLarge { size, limit: max_bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Result<(), BodyError>) {
        let body: Body = serde_json::from_str(body).unwrap();
        assert_eq!(body.validate(10), expected, "body {body:?}");
    }

    #[test]
    fn body_rules() {
        check(r#"{"text":"hi"}"#, Ok(()));
        check(r#"{"text":"hi","extra":1}"#, Ok(()));
        check(r#"{"media_id":"m1","text":"cap"}"#, Ok(()));
        check(r#"{"ciphertext":"abc"}"#, Ok(()));
        check(r#"{}"#, Err(BodyError::Empty));
        check(r#"{"ciphertext":"a","text":"b"}"#, Err(BodyError::MixedCiphertext));
        check(r#"{"text":"01234567890"}"#, Err(BodyError::TooLarge { size: 11, limit: 10 }));
    }
}
