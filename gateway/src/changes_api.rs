//! The HTTP twins of the `edit`, `delete` and `react` frames: `PATCH`/`DELETE /v1/conversations/{id}/messages/{seq}` and `POST …/reactions`.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use schemas::{ConnectQuery, DeleteMessageQuery, EditMessageRequest, ErrorBody, PostMessageResponse, ReactRequest};
use store::AppendOutcome;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::changes::{change_message, ChangeAction, ChangeRequest};
use crate::state::AppState;

/// Edits the caller's own message within the edit window; answered like a send, with the edit's own `seq`.
#[utoipa::path(patch, path = "/v1/conversations/{id}/messages/{seq}", tag = "messages", security(("bearer" = [])), params(
    ("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("seq" = u64, Path, description = "The `seq` of the message to edit", minimum = 1),
    ("device" = Option<String>, Query, description = "The editing device; `http` when absent", pattern = "^[A-Za-z0-9_-]{1,64}$"),
), request_body = EditMessageRequest, responses(
    (status = 201, description = "The edit is stored", body = PostMessageResponse),
    (status = 200, description = "A resend of a stored edit", body = PostMessageResponse),
    (status = 400, description = "`invalid`: a bad id or body, or the seq is not a message", body = ErrorBody),
    (status = 403, description = "`forbidden`: not a member, not the sender, or the edit window has closed", body = ErrorBody),
    (status = 404, description = "`not_found`: no such message, or it was deleted", body = ErrorBody),
    (status = 422, description = "`content_refused`: refused by the content policy", body = ErrorBody),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
pub async fn edit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    ApiPath((id, seq)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ConnectQuery>,
    ApiJson(request): ApiJson<EditMessageRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let action = ChangeAction::Edit { body: request.body };
    respond(&state, peer, &caller, query, &id, &seq, request.client_msg_id, action).await
}

/// Deletes a message (the sender's own, or any as the group's owner): history, search and pushes keep a tombstone without its body.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{seq}", tag = "messages", security(("bearer" = [])), params(
    ("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("seq" = u64, Path, description = "The `seq` of the message to delete", minimum = 1),
    DeleteMessageQuery,
), responses(
    (status = 201, description = "The delete is stored", body = PostMessageResponse),
    (status = 200, description = "A resend of a stored delete", body = PostMessageResponse),
    (status = 400, description = "`invalid`: a bad id, or the seq is not a message", body = ErrorBody),
    (status = 403, description = "`forbidden`: not a member, or neither the sender nor the group's owner", body = ErrorBody),
    (status = 404, description = "`not_found`: no such message, or it was already deleted", body = ErrorBody),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    ApiPath((id, seq)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeleteMessageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    // Without a key of the client's, each request is a new delete; a second one finds the message gone (404).
    let client_msg_id = query.client_msg_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
    respond(&state, peer, &caller, ConnectQuery::default(), &id, &seq, client_msg_id, ChangeAction::Delete).await
}

/// Puts an emoji on a message or takes it off: one reaction per user and emoji, so repeating either changes nothing.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages/{seq}/reactions", tag = "messages", security(("bearer" = [])), params(
    ("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("seq" = u64, Path, description = "The `seq` of the message reacted to", minimum = 1),
    ("device" = Option<String>, Query, description = "The reacting device; `http` when absent", pattern = "^[A-Za-z0-9_-]{1,64}$"),
), request_body = ReactRequest, responses(
    (status = 201, description = "The reaction is stored", body = PostMessageResponse),
    (status = 200, description = "A resend of a stored reaction", body = PostMessageResponse),
    (status = 400, description = "`invalid`: a bad id or emoji, the seq is not a message, or too many different reactions", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
    (status = 404, description = "`not_found`: no such message, or it was deleted", body = ErrorBody),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
pub async fn react(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    ApiPath((id, seq)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ConnectQuery>,
    ApiJson(request): ApiJson<ReactRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let action = ChangeAction::React { emoji: request.emoji, action: request.action, body: request.body };
    respond(&state, peer, &caller, query, &id, &seq, request.client_msg_id, action).await
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    state: &AppState,
    peer: std::net::SocketAddr,
    caller: &subjects::Id,
    query: ConnectQuery,
    conversation_id: &str,
    seq: &str,
    client_msg_id: String,
    action: ChangeAction,
) -> Result<(StatusCode, Json<PostMessageResponse>), ApiError> {
    let device = parse_id("device", query.device.as_deref().unwrap_or("http"))?;
    let target_seq = match seq.parse::<u64>() {
        Ok(target) if target >= 1 => target,
        _ => return Err(ApiError::invalid("seq must be a whole number, 1 or more")),
    };
    let request_id = ulid::Ulid::new().to_string();
    let request = ChangeRequest { conversation_id, client_msg_id: &client_msg_id, target_seq, action };
    let outcome: AppendOutcome = change_message(state, caller, &device, peer.ip(), request, &request_id).await?;
    let status = if outcome.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    let response = PostMessageResponse { conversation_id: conversation_id.to_owned(), seq: outcome.seq, client_msg_id, sent_at: outcome.sent_at, duplicate: outcome.duplicate };
    Ok((status, Json(response)))
}
