//! The search service: `svc.search` and `svc.search.status` as a NATS service in one queue group, so replicas share the requests.

use std::sync::Arc;

use anyhow::Context;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use schemas::{SearchServiceReply, SearchServiceRequest, SearchStatus};
use store::SearchStorage;
use subjects::Id;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::searcher::{SearchError, SearchIndex};

/// Searches one replica runs at once; more wait (in NATS and here) instead of overcommitting the CPU.
fn search_concurrency() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(2)
}

/// Answers requests until `shutdown`; searches in flight are finished and answered.
pub async fn serve(nats: async_nats::Client, index: SearchIndex, storage: SearchStorage, replica: Id, shutdown: CancellationToken) -> anyhow::Result<()> {
    let service = nats
        .service_builder()
        .description("full-text search over the conversation log")
        .queue_group(subjects::SEARCH_QUEUE_GROUP)
        .start(subjects::SEARCH_SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|error| anyhow::anyhow!("failed to start the search service: {error}"))?;
    let mut searches = service.endpoint(subjects::SEARCH_SUBJECT).await.map_err(|error| anyhow::anyhow!("failed to serve {}: {error}", subjects::SEARCH_SUBJECT))?;
    let mut statuses =
        service.endpoint(subjects::SEARCH_STATUS_SUBJECT).await.map_err(|error| anyhow::anyhow!("failed to serve {}: {error}", subjects::SEARCH_STATUS_SUBJECT))?;
    let limiter = Arc::new(Semaphore::new(search_concurrency()));
    let requests_in_flight = TaskTracker::new();
    tracing::info!(replica = %replica, "search service running");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(request) = searches.next() => {
                let permit = limiter.clone().acquire_owned().await.context("search limiter closed")?;
                let index = index.clone();
                requests_in_flight.spawn(async move {
                    let reply = answer_search(index, &request.message.payload).await;
                    let bytes = serde_json::to_vec(&reply).expect("replies always serialize");
                    if let Err(error) = request.respond(Ok(bytes.into())).await {
                        tracing::warn!(%error, "failed to answer a search");
                    }
                    drop(permit);
                });
            }
            Some(request) = statuses.next() => {
                let status = status(&index, &storage, &replica).await;
                let bytes = serde_json::to_vec(&status).expect("statuses always serialize");
                if let Err(error) = request.respond(Ok(bytes.into())).await {
                    tracing::warn!(%error, "failed to answer a status request");
                }
            }
            else => break,
        }
    }
    drop(searches);
    drop(statuses);
    requests_in_flight.close();
    requests_in_flight.wait().await;
    if let Err(error) = service.stop().await {
        tracing::debug!(%error, "failed to stop the search service cleanly");
    }
    Ok(())
}

async fn answer_search(index: SearchIndex, payload: &[u8]) -> SearchServiceReply {
    let request: SearchServiceRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(error) => return SearchError::Invalid(format!("unreadable search request: {error}")).into_reply(),
    };
    // Searching is CPU work on Tantivy's blocking APIs: off the runtime.
    match tokio::task::spawn_blocking(move || index.search(&request)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => error.into_reply(),
        Err(join_error) => SearchError::Internal(anyhow::anyhow!("search task failed: {join_error}")).into_reply(),
    }
}

pub async fn status(index: &SearchIndex, storage: &SearchStorage, replica: &Id) -> SearchStatus {
    let snapshot = index.snapshot.current();
    let bounds = storage.log_bounds().await.ok();
    let stream_last_seq = bounds.map(|bounds| bounds.last_seq).unwrap_or(0);
    SearchStatus {
        replica: replica.to_string(),
        indexed_stream_seq: snapshot.indexed_stream_seq,
        stream_first_seq: bounds.map(|bounds| bounds.first_seq).unwrap_or(0),
        stream_last_seq,
        lag: stream_last_seq.saturating_sub(snapshot.indexed_stream_seq),
        documents: snapshot.searcher.num_docs(),
    }
}
