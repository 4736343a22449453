//! Frames a client sends over the WebSocket, and the parser that turns bad ones into `invalid` errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Body, ReactionAction};

/// A client's correlation id, echoed on the reply; any JSON scalar the client chose.
pub type FrameId = serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        client_msg_id: String,
        body: Body,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
        /// Member ids the message mentions; only for a `ciphertext` body, which the server cannot read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mentions: Option<Vec<String>>,
    },
    /// Replaces the text of one's own message `seq`; acked like a send, with the edit's own `seq`.
    Edit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        client_msg_id: String,
        seq: u64,
        body: Body,
    },
    /// Deletes message `seq` (one's own, or any as a group's owner).
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        client_msg_id: String,
        seq: u64,
    },
    /// Puts an emoji on message `seq` or takes it off; an encrypted conversation's reaction is a ciphertext `body` instead.
    React {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        client_msg_id: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
        #[serde(default)]
        action: ReactionAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Body>,
    },
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        cursors: BTreeMap<String, u64>,
    },
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
    },
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
        conversation_id: String,
        seq: u64,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FrameId>,
    },
}

/// Why a text frame is not a valid client frame, with the `id` to echo when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<FrameId>,
    pub message: String,
}

#[derive(Deserialize)]
struct FrameHead {
    #[serde(default, rename = "type")]
    frame_type: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<FrameId>,
}

const KNOWN_TYPES: [&str; 8] = ["send", "edit", "delete", "react", "sync", "typing", "read", "ping"];

/// Parses one text frame; the error says what was wrong in words a client developer can act on.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // serde would happily read a struct from a JSON array; frames are objects only.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError { id: None, message: "frame is not a JSON object".to_owned() });
    }
    let head: FrameHead = serde_json::from_str(text)
        .map_err(|error| FrameError { id: None, message: format!("frame is not a JSON object: {error}") })?;
    let id = head.id.filter(|id| !id.is_object() && !id.is_array());
    let frame_type = match head.frame_type {
        Some(serde_json::Value::String(frame_type)) => frame_type,
        Some(_) => return Err(FrameError { id, message: "`type` must be a string".to_owned() }),
        None => return Err(FrameError { id, message: "frame has no `type`".to_owned() }),
    };
    if !KNOWN_TYPES.contains(&frame_type.as_str()) {
        return Err(FrameError { id, message: format!("unknown frame type {frame_type:?}") });
    }
    serde_json::from_str(text)
        .map_err(|error| FrameError { id, message: format!("bad `{frame_type}` frame: {error}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let outcome = parse_client_frame(input);
        match (outcome, expected) {
            (Ok(frame), Ok(expected_json)) => {
                let expected: ClientFrame = serde_json::from_str(expected_json).unwrap();
                assert_eq!(frame, expected, "input {input}");
            }
            (Err(error), Err(fragment)) => assert!(error.message.contains(fragment), "{input}: {}", error.message),
            (outcome, expected) => panic!("input {input}: got {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parses_frames_and_explains_bad_ones() {
        check(r#"{"type":"ping","id":1}"#, Ok(r#"{"type":"ping","id":1}"#));
        check(r#"{"type":"ping","future_field":true}"#, Ok(r#"{"type":"ping"}"#));
        check(
            r#"{"type":"send","id":"a","conversation_id":"c","client_msg_id":"m","body":{"text":"hi"}}"#,
            Ok(r#"{"type":"send","id":"a","conversation_id":"c","client_msg_id":"m","body":{"text":"hi"}}"#),
        );
        check(r#"{"type":"sync","cursors":{"c":3}}"#, Ok(r#"{"type":"sync","cursors":{"c":3}}"#));
        check(
            r#"{"type":"react","conversation_id":"c","client_msg_id":"r","seq":3,"emoji":"👍"}"#,
            Ok(r#"{"type":"react","conversation_id":"c","client_msg_id":"r","seq":3,"emoji":"👍","action":"add"}"#),
        );
        check(r#"{"type":"react","conversation_id":"c","client_msg_id":"r","seq":3,"emoji":"👍","action":"flip"}"#, Err("bad `react` frame"));
        check(r#"{"type":"delete","conversation_id":"c","client_msg_id":"d","seq":3}"#, Ok(r#"{"type":"delete","conversation_id":"c","client_msg_id":"d","seq":3}"#));
        check(r#"{"type":"edit","conversation_id":"c","client_msg_id":"e","seq":3}"#, Err("bad `edit` frame"));
        check("not json", Err("not a JSON object"));
        check("[1,2]", Err("not a JSON object"));
        check(r#"{"id":1}"#, Err("no `type`"));
        check(r#"{"type":7}"#, Err("must be a string"));
        check(r#"{"type":"dance"}"#, Err("unknown frame type"));
        check(r#"{"type":"send","conversation_id":"c"}"#, Err("bad `send` frame"));
        check(r#"{"type":"read","conversation_id":"c","seq":-1}"#, Err("bad `read` frame"));
    }

    #[test]
    fn echoes_the_id_of_a_bad_frame() {
        let error = parse_client_frame(r#"{"type":"send","id":"x1"}"#).unwrap_err();
        assert_eq!(error.id, Some(serde_json::json!("x1")));
    }

    #[test]
    fn a_numeric_id_written_back_is_the_number_that_came_in() {
        // Found by fuzzing: without serde_json's float_roundtrip a large id came back as another number.
        let input = r#"{"type":"sync","id":777777777777700000000000000000000000000000000000961233341,"cursors":{}}"#;
        let frame = parse_client_frame(input).unwrap();
        let again = parse_client_frame(&serde_json::to_string(&frame).unwrap()).unwrap();
        assert_eq!(again, frame);
    }
}
