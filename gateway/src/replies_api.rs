//! `GET /v1/conversations/{id}/messages/{seq}/replies`: one message's thread, read from the thread index.

use axum::extract::State;
use axum::Json;
use schemas::{ErrorBody, HistoryPage, RepliesQuery};
use store::MAX_PAGE;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiPath, ApiQuery, Caller};
use crate::send::require_member;
use crate::state::AppState;

/// Replies per page when the request names none, as for history.
const DEFAULT_PAGE: u64 = 50;

/// A page of the replies to one message, ascending `seq`; `after` pages on from the previous page's last `seq`.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages/{seq}/replies", tag = "messages", security(("bearer" = [])), params(
    ("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("seq" = u64, Path, description = "The `seq` of the message whose replies are listed", minimum = 1),
    RepliesQuery,
), responses(
    (status = 200, description = "The page of replies", body = HistoryPage),
    (status = 400, description = "`invalid`: a bad id, seq or limit", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
))]
pub async fn replies(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((id, seq)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RepliesQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    let parent = match seq.parse::<u64>() {
        Ok(parent) if parent >= 1 => parent,
        _ => return Err(ApiError::invalid("seq must be a whole number, 1 or more")),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    require_member(&state, &conversation, &caller).await?;
    let (messages, has_more) = state.reader.thread(&conversation, parent, query.after.unwrap_or(0), limit, &caller).await?;
    Ok(Json(HistoryPage { messages, has_more, updates: Vec::new() }))
}
