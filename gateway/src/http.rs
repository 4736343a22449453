//! The HTTP API of PROTOCOL.md: dev tokens, conversations and members, messages and history, media, push registration, search; plus the web client at `/`.

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use schemas::{
    AddMemberRequest, ConnectQuery, Conversation, ConversationKind, CreateConversationRequest, DevTokenRequest, HistoryPage, HistoryQuery,
    ErrorBody, Inbox, PostMessageRequest, PostMessageResponse, ReceiptRequest, TokenResponse,
};
use store::{HistoryRequest, MAX_PAGE};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::receipts::apply_client_receipt;
use crate::send::{require_member, send_message, SendRequest};
use crate::state::AppState;

/// Page size when a history request names none.
const DEFAULT_PAGE: u64 = 50;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_frame_bytes;
    Router::new()
        .merge(crate::web_client::routes())
        .route("/v1/dev/token", post(dev_token))
        .route("/v1/conversations", post(create_conversation).get(inbox))
        .route("/v1/conversations/{id}", get(get_conversation))
        .route("/v1/conversations/{id}/members", post(add_member))
        .route("/v1/conversations/{id}/members/{user}", delete(remove_member))
        .route("/v1/conversations/{id}/messages", get(history))
        .route("/v1/conversations/{id}/messages/{seq}", patch(crate::changes_api::edit).delete(crate::changes_api::delete))
        .route("/v1/conversations/{id}/messages/{seq}/reactions", post(crate::changes_api::react))
        .route("/v1/conversations/{id}/messages/{seq}/replies", get(crate::replies_api::replies))
        .route("/v1/messages", post(post_message))
        .route("/v1/receipts", post(post_receipt))
        .route("/v1/search", get(crate::search_api::search))
        .route("/v1/analytics/search", post(crate::search_api::analytics_search))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/devices/{device}/push", post(crate::push_api::register).delete(crate::push_api::unregister))
        .route("/v1/conversations/{id}/settings", put(crate::push_api::conversation_settings))
        .route("/v1/settings/notifications", put(crate::push_api::notification_settings).get(crate::push_api::get_notification_settings))
        .route("/v1/media", post(crate::media_api::create_upload))
        .route("/v1/media/{id}", get(crate::media_api::metadata))
        // The upload streams its body itself and enforces the signed size, so the JSON body cap does not apply.
        .route("/v1/media/{id}/upload", put(crate::media_upload::upload).layer(DefaultBodyLimit::disable()))
        .route("/v1/media/{id}/file", get(crate::media_download::file))
        .route("/v1/media/{id}/thumbnail", get(crate::media_download::thumbnail))
        .route("/v1/openapi.json", get(crate::openapi::openapi_json))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Development sign-in: a token for any user id, only when the server runs in dev mode.
#[utoipa::path(post, path = "/v1/dev/token", tag = "auth", request_body = DevTokenRequest, responses(
    (status = 200, description = "A token for the user", body = TokenResponse),
    (status = 404, description = "`not_found`: the server is not in dev mode", body = ErrorBody),
))]
async fn dev_token(State(state): State<AppState>, ApiJson(request): ApiJson<DevTokenRequest>) -> Result<Json<TokenResponse>, ApiError> {
    if !state.config.dev_mode {
        return Err(ApiError::not_found("dev sign-in is only available in dev mode"));
    }
    let user = parse_id("user", &request.user)?;
    Ok(Json(TokenResponse { token: state.auth.mint(&user) }))
}

/// The one direct conversation with another user (the same id every time), or a new group owned by the caller.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])), request_body = CreateConversationRequest, responses(
    (status = 201, description = "The conversation", body = Conversation),
    (status = 403, description = "`forbidden`: the caller or a member is in too many conversations", body = ErrorBody),
))]
async fn create_conversation(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<CreateConversationRequest>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let members = request.members.iter().map(|member| parse_id("members", member)).collect::<Result<Vec<Id>, ApiError>>()?;
    let conversation = match request.kind {
        ConversationKind::Direct => {
            let [other] = members.as_slice() else {
                return Err(ApiError::invalid("a direct conversation names exactly one other member"));
            };
            state.conversations.open_direct(&caller, other, request.encrypted).await?
        }
        ConversationKind::Group => state.conversations.create_group(&caller, request.title, &members, request.encrypted).await?,
    };
    flag_if_large(&state, &conversation).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

/// One conversation the caller is a member of.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$")), responses(
    (status = 200, description = "The conversation", body = Conversation),
    (status = 400, description = "`invalid`: a bad conversation id", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
async fn get_conversation(State(state): State<AppState>, Caller(caller): Caller, ApiPath(id): ApiPath<String>) -> Result<Json<Conversation>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    Ok(Json(state.conversations.get_for_member(&conversation, &caller).await?))
}

/// The group's owner adds a member.
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])), params(("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = AddMemberRequest, responses(
    (status = 200, description = "The conversation with its new member", body = Conversation),
    (status = 403, description = "`forbidden`: the caller is not the owner, or the group is full", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<AddMemberRequest>,
) -> Result<Json<Conversation>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let user = parse_id("user", &request.user)?;
    let conversation = state.conversations.add_member(&conversation, &caller, &user).await?;
    flag_if_large(&state, &conversation).await?;
    Ok(Json(conversation))
}

/// A group that reached the multicast threshold is flagged, for good: from then on the fanout
/// publishes each delivery once, and gateways holding its members take it. Before answering, so a
/// failed flag is retried with the (idempotent) request.
async fn flag_if_large(state: &AppState, conversation: &Conversation) -> Result<(), ApiError> {
    if conversation.kind == ConversationKind::Group && conversation.members.len() >= state.config.limits.multicast_min_members {
        state.multicast_groups.flag(&parse_id("conversation id", &conversation.id)?).await?;
    }
    Ok(())
}

/// The owner removes a member, or a member leaves.
#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user}", tag = "conversations", security(("bearer" = [])), params(
    ("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("user" = String, Path, description = "The member's user id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
), responses(
    (status = 204, description = "Removed"),
    (status = 400, description = "`invalid`: a bad id, or leaving a direct conversation", body = ErrorBody),
    (status = 403, description = "`forbidden`: only the owner removes others", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
))]
async fn remove_member(State(state): State<AppState>, Caller(caller): Caller, ApiPath((id, user)): ApiPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let user = parse_id("user", &user)?;
    state.conversations.remove_member(&conversation, &caller, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's inbox, newest activity first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])), responses(
    (status = 200, description = "The inbox", body = Inbox),
))]
async fn inbox(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Inbox>, ApiError> {
    let conversations = state.conversations.inbox(&caller, &state.receipts).await?;
    Ok(Json(Inbox { conversations }))
}

/// Marks a conversation read or delivered up to `seq` for the caller's device.
#[utoipa::path(post, path = "/v1/receipts", tag = "messages", security(("bearer" = [])), params(("device" = Option<String>, Query, description = "The sending device; `http` when absent", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = ReceiptRequest, responses(
    (status = 204, description = "Recorded"),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
async fn post_receipt(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<ConnectQuery>,
    ApiJson(request): ApiJson<ReceiptRequest>,
) -> Result<StatusCode, ApiError> {
    let device = parse_id("device", query.device.as_deref().unwrap_or("http"))?;
    apply_client_receipt(&state, &caller, &device, &request.conversation_id, request.seq, request.kind).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of a conversation's messages in ascending `seq`: the latest, or before or after a `seq`.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])), params(("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"), HistoryQuery), responses(
    (status = 200, description = "The page", body = HistoryPage),
    (status = 400, description = "`invalid`: a bad id, limit, or both before and after", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let request = match (query.before, query.after) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("use before or after, not both")),
        (Some(seq), None) => HistoryRequest::Before { seq, limit },
        (None, Some(seq)) => HistoryRequest::After { seq, limit },
        (None, None) => HistoryRequest::Latest { limit },
    };
    require_member(&state, &conversation, &caller).await?;
    let page = state.reader.page(&conversation, request, &caller).await?;
    Ok(Json(HistoryPage { messages: page.messages, has_more: page.has_more, updates: page.updates }))
}

/// Sends a message; the same `client_msg_id` again answers 200 with the original `seq` and stores nothing.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", security(("bearer" = [])), params(("device" = Option<String>, Query, description = "The sending device; `http` when absent", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = PostMessageRequest, responses(
    (status = 201, description = "Stored", body = PostMessageResponse),
    (status = 200, description = "A resend of a stored message", body = PostMessageResponse),
    (status = 400, description = "`invalid`: a bad id or body, a `reply_to` that names no message of the conversation, or `mentions` that are not ids, more than 50, or beside a readable body", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member, or the media is someone else's", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
    (status = 422, description = "`content_refused`: refused by the content policy", body = ErrorBody),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
async fn post_message(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<ConnectQuery>,
    ApiJson(request): ApiJson<PostMessageRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_id("device", query.device.as_deref().unwrap_or("http"))?;
    // One id per HTTP send; the log entry carries it to the workers' log lines.
    let request_id = ulid::Ulid::new().to_string();
    tracing::debug!(%request_id, user = %caller, "http send");
    let send = SendRequest {
        conversation_id: &request.conversation_id,
        client_msg_id: &request.client_msg_id,
        body: request.body,
        reply_to: request.reply_to,
        mentions: request.mentions,
    };
    let outcome = send_message(&state, &caller, &device, peer.ip(), send, &request_id).await?;
    let status = if outcome.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    let response = PostMessageResponse {
        conversation_id: request.conversation_id,
        seq: outcome.seq,
        client_msg_id: request.client_msg_id,
        sent_at: outcome.sent_at,
        duplicate: outcome.duplicate,
    };
    Ok((status, Json(response)))
}
