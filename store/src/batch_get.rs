//! JetStream batch direct get (`multi_last`, nats-server ≥ 2.11): the last message of many subjects in one round trip.
//!
//! async-nats 0.51 has no helper for it, so this speaks the API directly: one request to
//! `$JS.API.DIRECT.GET.<stream>`, answered by one message per subject that has any, then
//! a `204 EOB` status (or `404` when none has).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::try_join_all;
use futures::StreamExt;

use crate::error::{from_nats, StoreError};

/// Subjects per request; the server caps a batch, and smaller requests also spread over time.
const SUBJECTS_PER_REQUEST: usize = 256;
/// Most keys one wildcard listing returns (a user's conversations, a group's members).
const MAX_MATCHING_SUBJECTS: usize = 100_000;
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
const SUBJECT_HEADER: &str = "Nats-Subject";
const SEQUENCE_HEADER: &str = "Nats-Sequence";
const END_OF_BATCH: u16 = 204;
const NOTHING_FOUND: u16 = 404;
const TOO_MANY_RESULTS: u16 = 413;
/// Messages per page when a listing is too large for one `multi_last`.
const PAGE_OF_MATCHES: usize = 500;

/// One subject's last message.
#[derive(Debug, Clone)]
pub struct LastMessage {
    pub stream_seq: u64,
    pub payload: Bytes,
    pub headers: async_nats::HeaderMap,
}

/// The last message on each of `subjects` in `stream`; subjects without messages are absent from the map.
pub async fn last_messages(client: &async_nats::Client, stream: &str, subjects: &[String]) -> Result<HashMap<String, LastMessage>, StoreError> {
    let requests = subjects.chunks(SUBJECTS_PER_REQUEST).map(|chunk| last_messages_of_chunk(client, stream, chunk));
    let mut found = HashMap::with_capacity(subjects.len());
    for chunk in try_join_all(requests).await? {
        found.extend(chunk);
    }
    Ok(found)
}

/// The last message of every subject matching `filter` (a subject with wildcards): one request
/// while the server agrees to answer it whole, else pages of the matching messages in stream order.
pub async fn last_messages_matching(client: &async_nats::Client, stream: &str, filter: &str) -> Result<HashMap<String, LastMessage>, StoreError> {
    let request = serde_json::json!({ "multi_last": [filter], "batch": MAX_MATCHING_SUBJECTS });
    match send_batch_request(client, stream, request).await {
        // The server caps how many subjects one multi_last may answer (a group of ~1,000 members hit it).
        Err(StoreError::Internal(message)) if message.contains(&format!("status {TOO_MANY_RESULTS}")) => {
            last_messages_matching_paged(client, stream, filter).await
        }
        other => other,
    }
}

/// Walks every message matching `filter` in pages (`next_by_subj`), keeping the newest per subject.
async fn last_messages_matching_paged(client: &async_nats::Client, stream: &str, filter: &str) -> Result<HashMap<String, LastMessage>, StoreError> {
    let mut found: HashMap<String, LastMessage> = HashMap::new();
    let mut next_seq = 1;
    loop {
        let request = serde_json::json!({ "seq": next_seq, "next_by_subj": filter, "batch": PAGE_OF_MATCHES });
        let page = send_batch_request(client, stream, request).await?;
        let Some(highest) = page.values().map(|message| message.stream_seq).max() else {
            return Ok(found);
        };
        for (subject, message) in page {
            match found.get(&subject) {
                Some(known) if known.stream_seq > message.stream_seq => {}
                _ => {
                    found.insert(subject, message);
                }
            }
        }
        if found.len() > MAX_MATCHING_SUBJECTS {
            return Err(StoreError::Internal(format!("more than {MAX_MATCHING_SUBJECTS} subjects match {filter}")));
        }
        next_seq = highest + 1;
    }
}

async fn last_messages_of_chunk(client: &async_nats::Client, stream: &str, subjects: &[String]) -> Result<HashMap<String, LastMessage>, StoreError> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let request = serde_json::json!({ "multi_last": subjects, "batch": subjects.len() });
    send_batch_request(client, stream, request).await
}

async fn send_batch_request(client: &async_nats::Client, stream: &str, request: serde_json::Value) -> Result<HashMap<String, LastMessage>, StoreError> {
    let mut found = HashMap::new();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.map_err(|error| from_nats("failed to subscribe for a batch get", error))?;
    client
        .publish_with_reply(subjects::permissions::direct_get_subject(stream), inbox, request.to_string().into())
        .await
        .map_err(|error| from_nats("failed to send a batch get", error))?;
    let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
    loop {
        let reply = tokio::time::timeout_at(deadline, replies.next())
            .await
            .map_err(|_| StoreError::Unavailable("batch get timed out".to_owned()))?
            .ok_or_else(|| StoreError::Unavailable("batch get subscription closed".to_owned()))?;
        if let Some(status) = reply.status {
            match status.as_u16() {
                END_OF_BATCH | NOTHING_FOUND => return Ok(found),
                other => return Err(StoreError::Internal(format!("batch get failed with status {other}: {:?}", reply.description))),
            }
        }
        let Some(headers) = reply.headers else {
            // A JSON error body instead of messages, e.g. when the server does not support batches.
            return Err(StoreError::Internal(format!("batch get answered {}", String::from_utf8_lossy(&reply.payload))));
        };
        let subject = headers.get(SUBJECT_HEADER).map(|value| value.as_str().to_owned());
        let stream_seq = headers.get(SEQUENCE_HEADER).and_then(|value| value.as_str().parse().ok());
        if let (Some(subject), Some(stream_seq)) = (subject, stream_seq) {
            found.insert(subject, LastMessage { stream_seq, payload: reply.payload, headers });
        }
    }
}
