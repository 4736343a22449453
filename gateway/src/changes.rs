//! Edits, deletes and reactions, shared by the `edit`/`delete`/`react` frames and their HTTP twins: the rules, then one append.
//!
//! The rules are checked against the target as it stands (sender, age, deleted, reactions),
//! then the change is appended to the log like a message. A change racing another (an edit
//! against a delete from another device) may pass the checks on a state that is a moment old;
//! folding settles it by log order (the first delete sticks, the last edit wins), so the worst
//! case is a change that the fold then shows as overridden, never a revived message.

use std::net::IpAddr;

use schemas::{Body, Change, ChangeKind, ReactionAction, Role, MAX_EMOJIS_PER_MESSAGE};
use store::{AppendOutcome, AppendRequest};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::rate_limit::LimitedAction;
use crate::send::{check_body, require_log_reachable};
use crate::state::AppState;

/// What the client asked to change.
pub enum ChangeAction {
    Edit { body: Body },
    Delete,
    React { emoji: Option<String>, action: ReactionAction, body: Option<Body> },
}

pub struct ChangeRequest<'a> {
    pub conversation_id: &'a str,
    pub client_msg_id: &'a str,
    /// The `seq` of the message changed.
    pub target_seq: u64,
    pub action: ChangeAction,
}

pub async fn change_message(
    state: &AppState,
    user: &Id,
    device: &Id,
    client_address: IpAddr,
    request: ChangeRequest<'_>,
    request_id: &str,
) -> Result<AppendOutcome, ApiError> {
    let conversation = parse_id("conversation_id", request.conversation_id)?;
    let client_msg_id = parse_id("client_msg_id", request.client_msg_id)?;
    if request.target_seq == 0 {
        return Err(ApiError::invalid("seq names a message: 1 or more"));
    }
    let (kind, body, emoji, reaction) = check_shape(state, request.action)?;
    require_log_reachable(state)?;
    let Some(role) = state.membership.role_of(&conversation, user).await? else {
        return Err(ApiError::forbidden(format!("you are not a member of {conversation}")));
    };
    let encrypted = state.conversations.is_encrypted(&conversation).await?;
    check_readability(kind, &body, emoji.is_some(), encrypted, &conversation)?;
    let append = AppendRequest {
        conversation: conversation.clone(),
        client_msg_id,
        sender: user.clone(),
        sender_device: device.clone(),
        body,
        reply_to: None,
        // An edit's new `@` names are not mentions: a mention notifies once, when it is sent.
        mentions: Vec::new(),
        request_id: Some(request_id.to_owned()),
        change: Some(Change { kind, target_seq: request.target_seq, emoji, action: reaction }),
    };
    if state.log.is_recorded(&append.conversation, &append.client_msg_id).await? {
        // A resend: the original passed the rules (which may no longer hold, e.g. the edit window
        // closed since); the append answers it as the duplicate it is and repairs its records.
        let outcome = state.log.append(append).await?;
        let target_seq = request.target_seq;
        let deleted = state.reader.states().get(&conversation, target_seq).await?.is_some_and(|(folded, _)| folded.is_deleted());
        if kind == ChangeKind::Delete && deleted {
            // The first attempt may have stopped between the append and withdrawing the media.
            let target = state.reader.get_by_seq(&conversation, target_seq).await?;
            unshare_media(state, &conversation, target.map(|target| target.message.body)).await?;
        }
        return Ok(outcome);
    }
    let target = check_rules(state, user, role, &append).await?;
    state.rate_limiter.check(LimitedAction::Send, user, client_address).await?;
    if let Some(text) = append.body.text.as_deref().filter(|_| kind == ChangeKind::Edit) {
        // An edit is new text: the same policy as a send, or editing would be the way around it.
        state.content_filter.check(user, &conversation, text).await?;
    }
    let outcome = state.log.append(append).await?;
    if kind == ChangeKind::Delete {
        unshare_media(state, &conversation, Some(target)).await?;
    }
    Ok(outcome)
}

/// Checks what can be checked without storage; returns the entry's kind, body, emoji and reaction action.
fn check_shape(state: &AppState, action: ChangeAction) -> Result<(ChangeKind, Body, Option<String>, ReactionAction), ApiError> {
    let validate = |body: &Body| check_body(state, body);
    match action {
        ChangeAction::Edit { body } => {
            validate(&body)?;
            if body.media_id.is_some() {
                return Err(ApiError::invalid("an edit replaces the text; a message's media cannot be changed"));
            }
            Ok((ChangeKind::Edit, body, None, ReactionAction::Add))
        }
        ChangeAction::Delete => Ok((ChangeKind::Delete, Body::default(), None, ReactionAction::Add)),
        ChangeAction::React { emoji, action, body } => {
            let body = body.unwrap_or_default();
            match (&emoji, &body.ciphertext) {
                (Some(emoji), None) => schemas::validate_emoji(emoji).map_err(ApiError::invalid)?,
                (None, Some(_)) => validate(&body)?,
                _ => return Err(ApiError::invalid("a reaction is an `emoji`, or a ciphertext `body` in an end-to-end encrypted conversation")),
            }
            if body.text.is_some() || body.media_id.is_some() {
                return Err(ApiError::invalid("a reaction's body may only be ciphertext"));
            }
            Ok((ChangeKind::Reaction, body, emoji, action))
        }
    }
}

/// An encrypted conversation's edits and reactions are ciphertext, and a plaintext one's never are.
fn check_readability(kind: ChangeKind, body: &Body, has_emoji: bool, encrypted: bool, conversation: &Id) -> Result<(), ApiError> {
    let ciphertext = body.ciphertext.is_some();
    match kind {
        ChangeKind::Delete => Ok(()),
        _ if encrypted && (!ciphertext || has_emoji) => Err(ApiError::invalid(format!(
            "{conversation} is end-to-end encrypted: edits and reactions carry ciphertext only (no text, no emoji)"
        ))),
        _ if !encrypted && ciphertext => Err(ApiError::invalid(format!("{conversation} is not encrypted: ciphertext edits and reactions are for encrypted conversations"))),
        _ => Ok(()),
    }
}

/// Who may change what: the sender edits (within the window) and deletes; a group's owner deletes
/// anything; members react. Returns the target's body (a delete stops serving its media).
async fn check_rules(state: &AppState, user: &Id, role: Role, append: &AppendRequest) -> Result<Body, ApiError> {
    let change = append.change.as_ref().expect("a change request");
    let conversation = &append.conversation;
    let seq = change.target_seq;
    let (target, target_state) = tokio::try_join!(state.reader.get_by_seq(conversation, seq), state.reader.states().get(conversation, seq))?;
    let Some(target) = target else {
        return Err(ApiError::not_found(format!("{conversation} has no message {seq}")));
    };
    if target.change.is_some() {
        return Err(ApiError::invalid(format!("{seq} is an edit, delete or reaction, not a message")));
    }
    if target_state.as_ref().is_some_and(|(state, _)| state.is_deleted()) {
        return Err(ApiError::not_found(format!("message {seq} of {conversation} was deleted")));
    }
    let own = target.message.sender == user.as_str();
    match change.kind {
        ChangeKind::Edit => {
            if !own {
                return Err(ApiError::forbidden("only the sender edits a message"));
            }
            let window = state.config.limits.edit_window;
            let age = time::OffsetDateTime::now_utc() - target.message.sent_at;
            if age > window {
                return Err(ApiError::forbidden(format!("messages can be edited for {} s after sending; this one is older", window.as_secs())));
            }
        }
        ChangeKind::Delete => {
            if !own && role != Role::Owner {
                return Err(ApiError::forbidden("only the sender or the group's owner deletes a message"));
            }
        }
        ChangeKind::Reaction => {
            if let (ReactionAction::Add, Some(emoji), Some((state, _))) = (change.action, change.emoji.as_deref(), &target_state)
                && !state.emoji_in_use(emoji)
                && state.live_emojis() >= MAX_EMOJIS_PER_MESSAGE
            {
                return Err(ApiError::invalid(format!("a message carries at most {MAX_EMOJIS_PER_MESSAGE} different reactions")));
            }
        }
    }
    Ok(target.message.body)
}

/// A deleted message's media is no longer served to the conversation it was sent in.
async fn unshare_media(state: &AppState, conversation: &Id, body: Option<Body>) -> Result<(), ApiError> {
    let Some(media) = body.and_then(|body| body.media_id).and_then(|media| Id::parse(&media).ok()) else {
        return Ok(());
    };
    state.media.remove_share(&media, conversation).await?;
    Ok(())
}
