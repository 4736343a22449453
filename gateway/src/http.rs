//! The HTTP API of PROTOCOL.md: dev tokens, conversations and members, messages and history, media, push registration, search; plus the web client at `/`.

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use schemas::{
    AddMemberRequest, ConnectQuery, Conversation, ConversationKind, CreateConversationRequest, DevTokenRequest, HistoryPage, HistoryQuery,
    Inbox, PostMessageRequest, PostMessageResponse, ReceiptRequest, TokenResponse,
};
use store::{HistoryRequest, MAX_PAGE};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiJson, Caller};
use crate::receipts::apply_client_receipt;
use crate::send::{require_member, send_message};
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
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn dev_token(State(state): State<AppState>, ApiJson(request): ApiJson<DevTokenRequest>) -> Result<Json<TokenResponse>, ApiError> {
    if !state.config.dev_mode {
        return Err(ApiError::not_found("dev sign-in is only available in dev mode"));
    }
    let user = parse_id("user", &request.user)?;
    Ok(Json(TokenResponse { token: state.auth.mint(&user) }))
}

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
    Ok((StatusCode::CREATED, Json(conversation)))
}

async fn get_conversation(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> Result<Json<Conversation>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    Ok(Json(state.conversations.get_for_member(&conversation, &caller).await?))
}

async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<AddMemberRequest>,
) -> Result<Json<Conversation>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let user = parse_id("user", &request.user)?;
    Ok(Json(state.conversations.add_member(&conversation, &caller, &user).await?))
}

async fn remove_member(State(state): State<AppState>, Caller(caller): Caller, Path((id, user)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let user = parse_id("user", &user)?;
    state.conversations.remove_member(&conversation, &caller, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn inbox(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Inbox>, ApiError> {
    let conversations = state.conversations.inbox(&caller, &state.receipts).await?;
    Ok(Json(Inbox { conversations }))
}

async fn post_receipt(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(query): Query<ConnectQuery>,
    ApiJson(request): ApiJson<ReceiptRequest>,
) -> Result<StatusCode, ApiError> {
    let device = parse_id("device", query.device.as_deref().unwrap_or("http"))?;
    apply_client_receipt(&state, &caller, &device, &request.conversation_id, request.seq, request.kind).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
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
    let (messages, has_more) = state.reader.page(&conversation, request).await?;
    Ok(Json(HistoryPage { messages, has_more }))
}

async fn post_message(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    Query(query): Query<ConnectQuery>,
    ApiJson(request): ApiJson<PostMessageRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_id("device", query.device.as_deref().unwrap_or("http"))?;
    // One id per HTTP send; the log entry carries it to the workers' log lines.
    let request_id = ulid::Ulid::new().to_string();
    tracing::debug!(%request_id, user = %caller, "http send");
    let outcome = send_message(&state, &caller, &device, peer.ip(), &request.conversation_id, &request.client_msg_id, request.body, &request_id).await?;
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
