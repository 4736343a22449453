//! The send path shared by WebSocket `send` frames and `POST /v1/messages`: validate, authorise, append.
//!
//! `reply_to` is checked before the rate limiter (so a bad one spends no token) and again inside
//! the append, against the tail the message goes after: the second check is the one that makes a
//! reply never name a `seq` the conversation did not hold when it was stored.
//!
//! Mentions are decided here, before the rate limiter, against the cached member set
//! (`mentions.rs`): the log stores only members, so pushes and counts never reach outsiders.

use std::net::IpAddr;

use schemas::{Body, BodyError};
use store::{AppendOutcome, AppendRequest};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::rate_limit::LimitedAction;
use crate::state::AppState;

/// What a send refused while NATS is unreachable suggests: about one reconnect attempt of the client library.
const NATS_DOWN_RETRY_AFTER_MS: u64 = 250;

/// What the client asked to send, as a `send` frame or a `POST /v1/messages` body names it.
pub struct SendRequest<'a> {
    pub conversation_id: &'a str,
    pub client_msg_id: &'a str,
    pub body: Body,
    pub reply_to: Option<u64>,
    /// Client-named mentions, for a ciphertext body only.
    pub mentions: Option<Vec<String>>,
}

pub async fn send_message(
    state: &AppState,
    sender: &Id,
    sender_device: &Id,
    client_address: IpAddr,
    request: SendRequest<'_>,
    request_id: &str,
) -> Result<AppendOutcome, ApiError> {
    let SendRequest { conversation_id, client_msg_id, body, reply_to, mentions } = request;
    let conversation = parse_id("conversation_id", conversation_id)?;
    let client_msg_id = parse_id("client_msg_id", client_msg_id)?;
    check_body(state, &body)?;
    if reply_to == Some(0) {
        return Err(ApiError::invalid("reply_to is a seq: 1 or more"));
    }
    require_log_reachable(state)?;
    let members = state.membership.members(&conversation).await?;
    if !members.contains_key(sender) {
        return Err(ApiError::forbidden(format!("you are not a member of {conversation}")));
    }
    let mentions = crate::mentions::mentions_of_send(&body, mentions.as_deref(), &members, sender)?;
    if body.ciphertext.is_none() && state.conversations.is_encrypted(&conversation).await? {
        // Refused before anything is stored: a plaintext body would sit in history, search and push previews.
        return Err(ApiError::invalid(format!("{conversation} is end-to-end encrypted: only ciphertext bodies are accepted")));
    }
    if let Some(media_id) = &body.media_id {
        crate::media_api::require_sendable_media(state, sender, &conversation, media_id).await?;
    }
    if let Some(parent) = reply_to
        && !state.log.holds_seq(&conversation, parent).await?
    {
        return Err(ApiError::invalid(format!("reply_to {parent} is not a message of {conversation}")));
    }
    // Last of the checks, so a refused request never spends a token, and first of the costs.
    state.rate_limiter.check(LimitedAction::Send, sender, client_address).await?;
    if let Some(text) = &body.text {
        // Only readable text: an encrypted conversation's ciphertext is nobody's business here.
        state.content_filter.check(sender, &conversation, text).await?;
    }
    let outcome = state
        .log
        .append(AppendRequest { conversation: conversation.clone(), client_msg_id, sender: sender.clone(), sender_device: sender_device.clone(), body, reply_to, mentions, request_id: Some(request_id.to_owned()), change: None })
        .await?;
    // Writing in a conversation means having read it up to one's own message: the log moved the
    // user's read watermark before the ack. No receipt frame follows: the sender's other devices
    // get the message itself, which says as much.
    Ok(outcome)
}

/// A body's rules (not empty, ciphertext alone, under the size cap) as an API error: `too_large` or `invalid`.
pub fn check_body(state: &AppState, body: &Body) -> Result<(), ApiError> {
    body.validate(state.config.limits.max_body_bytes).map_err(|error| match error {
        BodyError::TooLarge { .. } => ApiError::too_large(error.to_string()),
        other => ApiError::invalid(other.to_string()),
    })
}

/// `unavailable` at once while NATS is unreachable: an append now would wait out its whole timeout and
/// leave the client guessing; the client retries with the same client_msg_id, so saying so costs nothing.
pub fn require_log_reachable(state: &AppState) -> Result<(), ApiError> {
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::unavailable("the message log is unreachable; retry shortly", NATS_DOWN_RETRY_AFTER_MS));
    }
    Ok(())
}

/// `forbidden` unless `user` belongs to `conversation` (unknown conversations included, so ids cannot be probed).
pub async fn require_member(state: &AppState, conversation: &Id, user: &Id) -> Result<(), ApiError> {
    match state.membership.role_of(conversation, user).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::forbidden(format!("you are not a member of {conversation}"))),
    }
}
