//! `GET /v1/search` for members and `POST /v1/analytics/search` for analysts: input checks, authorisation and scope here; the search itself runs on an indexer behind `svc.search`.
//!
//! The gateway never touches Tantivy. It decides *which* conversations a request may see (the
//! caller's memberships, or an analyst token's scope) and the indexer applies that set inside
//! its query, so nothing outside it is ever matched, counted or ranked.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use schemas::{
    ErrorBody, AnalyticsSearchRequest, AnalyticsSearchResponse, SearchAuditRecord, SearchQuery, SearchResponse, SearchServiceReply, SearchServiceRequest,
    MAX_SEARCH_QUERY_CHARS,
};
use subjects::Id;

use crate::api_error::{parse_id, ApiError};
use crate::auth::AnalystScope;
use crate::auth_extract::{Analyst, ApiJson, ApiQuery, Caller};
use crate::send::require_member;
use crate::state::AppState;

const DEFAULT_SEARCH_LIMIT: u64 = 20;
const MAX_SEARCH_LIMIT: u64 = 50;
/// Pages reach at most this far into the ranking: deeper pages cost more and help nobody; refine the query instead.
const MAX_RESULT_WINDOW: u64 = 1_000;
const DEFAULT_ANALYST_HITS: u64 = 20;
const MAX_ANALYST_HITS: u64 = 100;
/// A search that takes longer is answered `unavailable`.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Searches the conversations the caller is a member of (or one of them); pages with `cursor`.
#[utoipa::path(get, path = "/v1/search", tag = "search", security(("bearer" = [])), params(SearchQuery), responses(
    (status = 200, description = "Hits, best first", body = SearchResponse),
    (status = 400, description = "`invalid`: no `q`, a bad limit, cursor or id, or nothing searchable", body = ErrorBody),
    (status = 403, description = "`forbidden`: the caller is not a member of `conversation_id`", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
pub async fn search(State(state): State<AppState>, Caller(caller): Caller, ApiQuery(query): ApiQuery<SearchQuery>) -> Result<Json<SearchResponse>, ApiError> {
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::invalid("q is required: the words to search for"));
    }
    check_query_length(q)?;
    let limit = query.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_SEARCH_LIMIT}")));
    }
    let cursor = query.cursor.as_deref().map(SearchCursor::parse).transpose()?;
    let offset = cursor.map_or(0, |cursor| cursor.offset);
    check_result_window(offset, limit)?;
    let conversations = match query.conversation_id.as_deref() {
        Some(conversation) => {
            let conversation = parse_id("conversation_id", conversation)?;
            require_member(&state, &conversation, &caller).await?;
            vec![conversation]
        }
        None => state.conversations.conversations_of(&caller).await?,
    };
    if conversations.is_empty() {
        return Ok(Json(SearchResponse { hits: Vec::new(), next_cursor: None }));
    }
    let request = SearchServiceRequest {
        q: q.to_owned(),
        conversations: Some(conversations.into_iter().map(Id::into_string).collect()),
        limit,
        offset,
        max_stream_seq: cursor.map(|cursor| cursor.max_stream_seq),
        now_ms: cursor.map(|cursor| cursor.now_ms),
        aggregate: false,
    };
    let reply = ask_indexer(&state, &request).await?;
    let next_offset = offset + limit;
    let next_cursor = (reply.has_more && next_offset < MAX_RESULT_WINDOW)
        .then(|| SearchCursor { offset: next_offset, max_stream_seq: reply.max_stream_seq, now_ms: reply.now_ms }.encode());
    Ok(Json(SearchResponse { hits: reply.hits, next_cursor }))
}

/// Analysts only: hits and counts per day, conversation and sender over the token's scope; every query is audited first.
#[utoipa::path(post, path = "/v1/analytics/search", tag = "search", security(("bearer" = [])), request_body = AnalyticsSearchRequest, responses(
    (status = 200, description = "Hits and aggregations", body = AnalyticsSearchResponse),
    (status = 403, description = "`forbidden`: not an analyst's token, or a conversation outside its scope", body = ErrorBody),
))]
pub async fn analytics_search(
    State(state): State<AppState>,
    Analyst { user, scope }: Analyst,
    ApiJson(request): ApiJson<AnalyticsSearchRequest>,
) -> Result<Json<AnalyticsSearchResponse>, ApiError> {
    let q = request.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    check_query_length(&q)?;
    let limit = request.limit.unwrap_or(DEFAULT_ANALYST_HITS);
    if limit > MAX_ANALYST_HITS {
        return Err(ApiError::invalid(format!("limit must be between 0 and {MAX_ANALYST_HITS}")));
    }
    let requested = request
        .conversation_ids
        .map(|conversations| conversations.iter().map(|conversation| parse_id("conversation_ids", conversation)).collect::<Result<Vec<Id>, ApiError>>())
        .transpose()?;
    if requested.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid("conversation_ids is empty; leave it out to search your whole scope"));
    }
    let conversations = analyst_conversations(&scope, requested)?;
    let conversations = conversations.map(|conversations| conversations.into_iter().map(Id::into_string).collect::<Vec<_>>());
    // Written before the query runs: a query that cannot be audited does not run.
    let audit = SearchAuditRecord { v: 1, analyst: user.to_string(), q: q.clone(), conversations: conversations.clone(), limit, at: time::OffsetDateTime::now_utc() };
    state.search.record_analyst_query(&audit).await?;
    let request = SearchServiceRequest { q, conversations, limit, offset: 0, max_stream_seq: None, now_ms: None, aggregate: true };
    let reply = ask_indexer(&state, &request).await?;
    Ok(Json(AnalyticsSearchResponse { hits: reply.hits, aggregations: reply.aggregations.unwrap_or_default() }))
}

/// The conversations an analyst's request may see: what it names, which must lie inside the token's scope; `None` = everything.
fn analyst_conversations(scope: &AnalystScope, requested: Option<Vec<Id>>) -> Result<Option<Vec<Id>>, ApiError> {
    match (scope, requested) {
        (AnalystScope::Everything, requested) => Ok(requested),
        (AnalystScope::Conversations(allowed), None) => Ok(Some(allowed.clone())),
        (AnalystScope::Conversations(allowed), Some(requested)) => {
            if let Some(outside) = requested.iter().find(|conversation| !allowed.contains(conversation)) {
                return Err(ApiError::forbidden(format!("conversation {outside} is outside your analyst scope")));
            }
            Ok(Some(requested))
        }
    }
}

/// A page must end inside the result window. Saturating: a forged cursor's offset near u64::MAX once overflowed
/// (a panic that dropped the connection in debug builds).
fn check_result_window(offset: u64, limit: u64) -> Result<(), ApiError> {
    if offset.saturating_add(limit) > MAX_RESULT_WINDOW {
        return Err(ApiError::invalid(format!("only the first {MAX_RESULT_WINDOW} results can be paged through; refine the query")));
    }
    Ok(())
}

fn check_query_length(q: &str) -> Result<(), ApiError> {
    if q.chars().count() > MAX_SEARCH_QUERY_CHARS {
        return Err(ApiError::invalid(format!("q is longer than {MAX_SEARCH_QUERY_CHARS} characters")));
    }
    Ok(())
}

async fn ask_indexer(state: &AppState, request: &SearchServiceRequest) -> Result<SearchServiceReply, ApiError> {
    let payload = serde_json::to_vec(request).expect("requests always serialize");
    let unavailable = |reason: String| {
        tracing::warn!(%reason, "search unavailable");
        ApiError::new(schemas::ErrorCode::Unavailable, "search is unavailable; retry shortly")
    };
    let reply = match tokio::time::timeout(SEARCH_TIMEOUT, state.nats.request(subjects::SEARCH_SUBJECT, payload.into())).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => return Err(unavailable(error.to_string())),
        Err(_) => return Err(unavailable(format!("no answer within {SEARCH_TIMEOUT:?}"))),
    };
    let reply: SearchServiceReply = serde_json::from_slice(&reply.payload).map_err(|error| unavailable(format!("unreadable search reply: {error}")))?;
    match reply.error {
        Some(error) => Err(ApiError::new(error.code, error.message)),
        None => Ok(reply),
    }
}

/// Where the next page starts, plus what keeps pages consistent: the log position and the "now" the first page was ranked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SearchCursor {
    offset: u64,
    max_stream_seq: u64,
    now_ms: i64,
}

impl SearchCursor {
    fn encode(&self) -> String {
        format!("{}.{}.{}", self.offset, self.max_stream_seq, self.now_ms)
    }

    fn parse(text: &str) -> Result<SearchCursor, ApiError> {
        let invalid = || ApiError::invalid("cursor is not one this server issued; pass next_cursor back unchanged");
        let mut parts = text.split('.');
        let (Some(offset), Some(max_stream_seq), Some(now_ms), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        Ok(SearchCursor {
            offset: offset.parse().map_err(|_| invalid())?,
            max_stream_seq: max_stream_seq.parse().map_err(|_| invalid())?,
            now_ms: now_ms.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Id {
        Id::parse(text).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = SearchCursor { offset: 20, max_stream_seq: 99, now_ms: 1_764_460_800_000 };
        assert_eq!(SearchCursor::parse(&cursor.encode()), Ok(cursor));
        for garbage in ["", "1.2", "1.2.3.4", "a.b.c", "-1.2.3", "1.2.x"] {
            assert!(SearchCursor::parse(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn pages_end_inside_the_result_window() {
        for (offset, limit, allowed) in [(0, 20, true), (980, 20, true), (981, 20, false), (u64::MAX, 1, false), (u64::MAX - 10, 50, false)] {
            assert_eq!(check_result_window(offset, limit).is_ok(), allowed, "offset {offset}, limit {limit}");
        }
    }

    #[test]
    fn analyst_scope_bounds_what_a_request_may_name() {
        let scoped = AnalystScope::Conversations(vec![id("a"), id("b")]);
        assert_eq!(analyst_conversations(&AnalystScope::Everything, None), Ok(None));
        assert_eq!(analyst_conversations(&AnalystScope::Everything, Some(vec![id("z")])), Ok(Some(vec![id("z")])));
        assert_eq!(analyst_conversations(&scoped, None), Ok(Some(vec![id("a"), id("b")])));
        assert_eq!(analyst_conversations(&scoped, Some(vec![id("b")])), Ok(Some(vec![id("b")])));
        let refused = analyst_conversations(&scoped, Some(vec![id("a"), id("c")])).unwrap_err();
        assert_eq!(refused.code, schemas::ErrorCode::Forbidden);
        assert!(refused.message.contains('c'), "{}", refused.message);
    }
}
