//! The search benchmark: fills a throwaway log with synthetic messages, times the indexer catching up (messages/s), then times queries through the search service (p50/p99).
//!
//! It writes its synthetic log entries straight to JetStream (not through the gateway's append):
//! it measures indexing and querying, and must be pointed at a NATS of its own (`natter-indexer bench` starts one).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::{Body, Message, SearchServiceReply, SearchServiceRequest, SearchStatus, StoredMessage};
use store::Storage;
use subjects::Id;
use tokio_util::sync::CancellationToken;

use crate::IndexerConfig;

/// Publishes awaited together: enough to keep JetStream busy, far below async-nats' in-flight limit.
const PUBLISH_WINDOW: usize = 512;
/// Distinct words in the synthetic vocabulary.
const VOCABULARY_SIZE: usize = 20_000;
/// Synthetic messages are spread over this many days before now (recency ranking has something to do).
const HISTORY_DAYS: i64 = 90;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub messages: u64,
    pub conversations: u64,
    pub queries: u64,
    /// Conversations each simulated user's query is restricted to.
    pub conversations_per_user: usize,
    /// How long the indexer may take to catch up before the run fails.
    pub index_deadline: Duration,
}

impl BenchOptions {
    /// Small enough for a test: proves the whole path works, not how fast it is.
    pub fn smoke() -> BenchOptions {
        BenchOptions { messages: 2_000, conversations: 50, queries: 100, conversations_per_user: 20, index_deadline: Duration::from_secs(120) }
    }

    pub fn full(messages: u64, queries: u64) -> BenchOptions {
        BenchOptions { messages, conversations: 10_000, queries, conversations_per_user: 20, index_deadline: Duration::from_secs(4 * 3600) }
    }
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub messages: u64,
    pub documents: u64,
    pub publish_seconds: f64,
    pub index_seconds: f64,
    pub index_messages_per_second: f64,
    pub queries: u64,
    pub queries_with_hits: u64,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub query_max_ms: f64,
}

impl BenchReport {
    pub fn to_markdown(&self) -> String {
        format!(
            "| indexed messages | index throughput | query p50 | query p99 | query max | queries (with hits) |\n|---|---|---|---|---|---|\n| {} | {:.0} msg/s ({:.1} s) | {:.2} ms | {:.2} ms | {:.2} ms | {} ({}) |",
            self.documents, self.index_messages_per_second, self.index_seconds, self.query_p50_ms, self.query_p99_ms, self.query_max_ms, self.queries, self.queries_with_hits
        )
    }
}

/// Runs the benchmark against `nats` (which must be a throwaway server) with an index in `index_dir`.
pub async fn run_benchmark(nats: async_nats::Client, index_dir: PathBuf, options: &BenchOptions, mut on_progress: impl FnMut(&str)) -> anyhow::Result<BenchReport> {
    let storage = Storage::provision(async_nats::jetstream::new(nats.clone()), &subjects::StorageSettings::default()).await?;
    let vocabulary = vocabulary();
    let mut rng = StdRng::seed_from_u64(7);
    let published = Instant::now();
    publish_messages(&storage, &vocabulary, options, &mut rng, &mut on_progress).await?;
    let publish_seconds = published.elapsed().as_secs_f64();
    on_progress(&format!("published {} messages in {publish_seconds:.1} s; indexing", options.messages));

    let shutdown = CancellationToken::new();
    let indexing = Instant::now();
    let indexer = tokio::spawn(crate::run(IndexerConfig::new(index_dir), nats.clone(), shutdown.clone()));
    let status = wait_until_indexed(&nats, options, &mut on_progress).await;
    let index_seconds = indexing.elapsed().as_secs_f64();
    let outcome = match status {
        Ok(status) => run_queries(&nats, &vocabulary, options, &mut rng).await.map(|latencies| (status, latencies)),
        Err(error) => Err(error),
    };
    shutdown.cancel();
    indexer.await.context("indexer task panicked")??;
    let (status, (mut latencies, queries_with_hits)) = outcome?;
    latencies.sort_by(f64::total_cmp);
    Ok(BenchReport {
        messages: options.messages,
        documents: status.documents,
        publish_seconds,
        index_seconds,
        index_messages_per_second: options.messages as f64 / index_seconds.max(1e-9),
        queries: options.queries,
        queries_with_hits,
        query_p50_ms: percentile(&latencies, 0.50),
        query_p99_ms: percentile(&latencies, 0.99),
        query_max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Pronounceable made-up words; their frequencies are skewed like a natural language's.
fn vocabulary() -> Vec<String> {
    let syllables = ["ka", "lo", "mi", "tra", "ve", "no", "su", "ri", "pe", "dan", "gor", "li", "ze", "bu", "fa", "to", "ne", "shi", "ro", "wa"];
    let mut rng = StdRng::seed_from_u64(1);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < VOCABULARY_SIZE {
        let length = rng.random_range(1..=4);
        let word: String = (0..length).map(|_| syllables[rng.random_range(0..syllables.len())]).collect();
        words.insert(word);
    }
    let mut words: Vec<String> = words.into_iter().collect();
    // Shuffled, so that the frequent words are not all the short ones.
    for index in (1..words.len()).rev() {
        words.swap(index, rng.random_range(0..=index));
    }
    words
}

fn skewed_word<'a>(vocabulary: &'a [String], rng: &mut StdRng) -> &'a str {
    let position = (rng.random::<f64>().powf(3.0) * vocabulary.len() as f64) as usize;
    &vocabulary[position.min(vocabulary.len() - 1)]
}

fn conversation_id(index: u64) -> String {
    format!("bench-{index}")
}

async fn publish_messages(
    storage: &Storage,
    vocabulary: &[String],
    options: &BenchOptions,
    rng: &mut StdRng,
    on_progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    let mut seqs = vec![0_u64; options.conversations as usize];
    let now = time::OffsetDateTime::now_utc();
    let span_ms = HISTORY_DAYS * 24 * 3600 * 1000;
    let mut acks = Vec::with_capacity(PUBLISH_WINDOW);
    for number in 0..options.messages {
        let conversation = number % options.conversations;
        seqs[conversation as usize] += 1;
        let words = rng.random_range(4..=20);
        let text = (0..words).map(|_| skewed_word(vocabulary, rng)).collect::<Vec<_>>().join(" ");
        let age_ms = span_ms - span_ms * number as i64 / options.messages.max(1) as i64;
        let message = Message::new(
            conversation_id(conversation),
            seqs[conversation as usize],
            format!("m{number}"),
            format!("user-{}", rng.random_range(0..options.conversations * 2)),
            "bench".to_owned(),
            now - time::Duration::milliseconds(age_ms),
            Body::text(text),
            None,
        );
        let bytes = schemas::encode_stored_message(&StoredMessage::message(message, 0));
        let subject = subjects::Shard::FIRST.message_subject(&Id::parse(&conversation_id(conversation))?);
        acks.push(storage.jetstream.publish(subject, bytes.into()).await.context("failed to publish a benchmark message")?);
        if acks.len() == PUBLISH_WINDOW {
            for ack in acks.drain(..) {
                ack.await.context("a benchmark message was not stored")?;
            }
        }
        if number > 0 && number % 100_000 == 0 {
            on_progress(&format!("published {number} messages"));
        }
    }
    for ack in acks {
        ack.await.context("a benchmark message was not stored")?;
    }
    Ok(())
}

async fn wait_until_indexed(nats: &async_nats::Client, options: &BenchOptions, on_progress: &mut impl FnMut(&str)) -> anyhow::Result<SearchStatus> {
    let deadline = Instant::now() + options.index_deadline;
    let mut last_report = Instant::now();
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(REQUEST_TIMEOUT, nats.request(subjects::SEARCH_STATUS_SUBJECT, Vec::new().into())).await {
            let status: SearchStatus = serde_json::from_slice(&reply.payload).context("unreadable status reply")?;
            if status.stream_last_seq > 0 && status.indexed_stream_seq >= status.stream_last_seq {
                return Ok(status);
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                on_progress(&format!("indexed through {} of {}", status.indexed_stream_seq, status.stream_last_seq));
                last_report = Instant::now();
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the indexer did not catch up within {:?}", options.index_deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sequential queries of one or two skewed words (every fifth a prefix), each restricted to a random user's conversations.
async fn run_queries(nats: &async_nats::Client, vocabulary: &[String], options: &BenchOptions, rng: &mut StdRng) -> anyhow::Result<(Vec<f64>, u64)> {
    let mut latencies = Vec::with_capacity(options.queries as usize);
    let mut queries_with_hits = 0;
    for number in 0..options.queries {
        let conversations = (0..options.conversations_per_user).map(|_| conversation_id(rng.random_range(0..options.conversations))).collect();
        let first = skewed_word(vocabulary, rng);
        let q = match number % 5 {
            0 => format!("{}*", &first[..first.len().min(3)]),
            1 | 2 => format!("{first} {}", skewed_word(vocabulary, rng)),
            _ => first.to_owned(),
        };
        let request = SearchServiceRequest { q, conversations: Some(conversations), limit: 20, offset: 0, max_stream_seq: None, now_ms: None, aggregate: false };
        let payload = serde_json::to_vec(&request)?;
        let started = Instant::now();
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, nats.request(subjects::SEARCH_SUBJECT, payload.into())).await.context("a search timed out")??;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let reply: SearchServiceReply = serde_json::from_slice(&reply.payload).context("unreadable search reply")?;
        if let Some(error) = reply.error {
            anyhow::bail!("search {:?} failed: {}", request.q, error.message);
        }
        if !reply.hits.is_empty() {
            queries_with_hits += 1;
        }
    }
    Ok((latencies, queries_with_hits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.50), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
