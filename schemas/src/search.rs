//! Search on the wire and on disk: `GET /v1/search`, the analysts' endpoint, the indexer's request/reply records, its commit payload and the audit record.

use serde::{Deserialize, Serialize};
use utoipa::{ToSchema, IntoParams};

use crate::records::json_record;
use crate::{ErrorDetail, Message, Timestamp};

/// The `role` claim that lets a token use the analysts' endpoint.
pub const ANALYST_ROLE: &str = "analyst";
/// Longest search query accepted, in characters (gateway and indexer both check it).
pub const MAX_SEARCH_QUERY_CHARS: usize = 256;

/// Query of `GET /v1/search`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words to search for (at most 256 characters once trimmed).
    #[param(required = true)]
    pub q: Option<String>,
    /// Only this conversation; absent = every conversation of the caller.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub conversation_id: Option<String>,
    /// Hits per page; 20 when absent.
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<u64>,
    /// Additive to PROTOCOL.md: the `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]+\.[0-9]+\.-?[0-9]+$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// The same message object history and `message` frames carry.
    pub message: Message,
    /// An HTML fragment of the text around the matches: text escaped, matches in `<b>…</b>`.
    pub highlight: String,
}

/// `{"hits":[{"message","highlight"}]}`, plus (additive) `next_cursor` when there may be more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/analytics/search`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsSearchRequest {
    /// Absent or empty: every indexed message in scope.
    #[serde(default)]
    pub q: Option<String>,
    /// Absent: every conversation the analyst's token allows.
    #[serde(default)]
    pub conversation_ids: Option<Vec<String>>,
    /// Hits returned beside the aggregations (0 allowed).
    #[serde(default)]
    #[schema(maximum = 100)]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationCount {
    pub conversation_id: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SenderCount {
    pub sender: String,
    pub count: u64,
}

/// Message counts for one query: in total, per UTC day (ascending), per conversation and per sender (descending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SearchAggregations {
    pub total: u64,
    pub per_day: Vec<DayCount>,
    pub per_conversation: Vec<ConversationCount>,
    pub per_sender: Vec<SenderCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsSearchResponse {
    pub hits: Vec<SearchHit>,
    pub aggregations: SearchAggregations,
}

/// Gateway → indexer on `svc.search`. The gateway has authorised the scope; the indexer applies it inside the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchServiceRequest {
    /// Empty matches everything (analysts only; the gateway refuses it for users).
    pub q: String,
    /// Conversations to search; `None` = all of them (an analyst with an unrestricted scope).
    pub conversations: Option<Vec<String>>,
    pub limit: u64,
    #[serde(default)]
    pub offset: u64,
    /// Only log entries up to this stream sequence, so a later page ranks the same set as the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_seq: Option<u64>,
    /// The "now" of recency ranking in unix milliseconds; every page of one search shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<i64>,
    /// Also count the matches per day, conversation and sender.
    #[serde(default)]
    pub aggregate: bool,
}

/// Indexer → gateway: hits, or an error with a PROTOCOL.md code (`invalid` for a query without searchable words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchServiceReply {
    #[serde(default)]
    pub hits: Vec<SearchHit>,
    #[serde(default)]
    pub has_more: bool,
    /// The stream sequence the search saw up to; the next page passes it back.
    #[serde(default)]
    pub max_stream_seq: u64,
    #[serde(default)]
    pub now_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregations: Option<SearchAggregations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Reply on `svc.search.status` from whichever replica answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStatus {
    pub replica: String,
    /// Last stream sequence the replica's index has committed.
    pub indexed_stream_seq: u64,
    pub stream_first_seq: u64,
    pub stream_last_seq: u64,
    /// `stream_last_seq - indexed_stream_seq`: entries appended but not searchable yet.
    pub lag: u64,
    /// Searchable messages in the replica's index.
    pub documents: u64,
}

/// Stored in every Tantivy commit: where the index stands in the log. Resuming starts right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCommitPayload {
    pub v: u64,
    pub indexed_stream_seq: u64,
    /// The stream `indexed_stream_seq` counts in; absent in older commits (`MESSAGES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// One analyst query, written to `SEARCH_AUDIT` before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchAuditRecord {
    pub v: u64,
    pub analyst: String,
    pub q: String,
    /// The conversations searched; `None` = every conversation.
    pub conversations: Option<Vec<String>>,
    pub limit: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
}

json_record!(IndexCommitPayload, SearchAuditRecord);

#[cfg(test)]
mod tests {
    use super::*;

    use crate::golden;

    #[test]
    fn stored_search_records_stay_readable() {
        let payload = IndexCommitPayload::from_bytes(&golden("index-commit.v1.json")).unwrap();
        assert_eq!(payload.indexed_stream_seq, 1234);
        let audit = SearchAuditRecord::from_bytes(&golden("search-audit.v1.json")).unwrap();
        assert_eq!(audit.analyst, "ann");
        assert_eq!(audit.conversations.as_deref(), Some(&["g-1".to_owned()][..]));
        assert!(IndexCommitPayload::from_bytes(br#"{"v":2,"indexed_stream_seq":1}"#).is_err());
    }

    #[test]
    fn search_response_is_exactly_the_protocol_shape_without_a_cursor() {
        let response = SearchResponse { hits: Vec::new(), next_cursor: None };
        assert_eq!(serde_json::to_string(&response).unwrap(), r#"{"hits":[]}"#);
    }
}
