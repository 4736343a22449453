//! The history scenario: fill the log with many messages over many conversations, then time 50-message pages over HTTP.
//!
//! The fill goes straight to JetStream, in the stored envelope format and with the index and
//! idempotency records exactly as `store::MessageLog` writes them (`log_append.rs`): going through
//! the gateway would take far longer than a session has, and what is measured is the read path.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use schemas::{Body, ClientMsgIdRecord, Message, StoredMessage};
use serde::{Deserialize, Serialize};
use subjects::Id;

use crate::recorder::new_histogram;
use crate::report::Percentiles;
use crate::system_under_test::Target;

/// PubAcks awaited at once while filling; below async-nats' default of 5,000 in flight (see PITFALLS.md).
const FILL_IN_FLIGHT: usize = 2000;
/// Conversation creations in flight; at 32 the gateway answered `internal` under load (see BENCHMARKS.md).
const HTTP_CONCURRENCY: usize = 4;
const READER: &str = "hreader";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryOptions {
    pub conversations: usize,
    pub messages: usize,
    /// Pages read after the fill, one at a time (latency, not throughput).
    pub pages: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReport {
    pub conversations: usize,
    pub messages_in_stream: u64,
    pub fill_seconds: f64,
    pub fill_messages_per_second: f64,
    /// `GET …/messages?limit=50` (the newest page), ms.
    pub latest_page_ms: Percentiles,
    /// `GET …/messages?before=<random seq>&limit=50` (an older page), ms.
    pub older_page_ms: Percentiles,
    /// Pages that came back short or failed.
    pub bad_pages: u64,
}

pub async fn run_history(target: &Target, options: &HistoryOptions) -> anyhow::Result<HistoryReport> {
    let per_conversation = options.messages.div_ceil(options.conversations).max(1);
    eprintln!("history: creating {} conversations over HTTP", options.conversations);
    let conversations = create_direct_conversations(target, options.conversations).await?;
    let nats = async_nats::connect(&target.nats_url).await.context("history: connect")?;
    let jetstream = jetstream::new(nats);
    eprintln!("history: filling {} messages ({per_conversation} per conversation) straight into JetStream", per_conversation * conversations.len());
    let fill_started = Instant::now();
    let mut previous_stream_seq = vec![0u64; conversations.len()];
    for seq in 1..=per_conversation as u64 {
        // One round = the next message of every conversation, so conversations interleave in the stream.
        let round = futures::stream::iter(conversations.iter().enumerate()).map(|(position, conversation)| {
            let jetstream = jetstream.clone();
            let prev = previous_stream_seq[position];
            async move { append_one(&jetstream, conversation, seq, prev).await.map(|stream_seq| (position, stream_seq)) }
        });
        let outcomes: Vec<anyhow::Result<(usize, u64)>> = round.buffer_unordered(FILL_IN_FLIGHT).collect().await;
        for outcome in outcomes {
            let (position, stream_seq) = outcome?;
            previous_stream_seq[position] = stream_seq;
        }
        if seq % 10 == 0 {
            eprintln!("  history fill: {} messages, {:.0}/s", seq as usize * conversations.len(), (seq as usize * conversations.len()) as f64 / fill_started.elapsed().as_secs_f64());
        }
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let messages_in_stream = jetstream.get_stream(subjects::MESSAGE_STREAM).await?.info().await?.state.messages;
    eprintln!("history: {messages_in_stream} messages in the stream after {fill_seconds:.1} s; waiting for the fanout to drain");
    wait_for_fanout_to_drain(&jetstream).await?;

    let http = reqwest::Client::new();
    let tokens: Vec<String> = (0..conversations.len()).map(|partner| target.token(&format!("hpartner{partner}"))).collect();
    let mut latest = new_histogram();
    let mut older = new_histogram();
    let mut bad_pages = 0;
    for page in 0..options.pages {
        let which = rand::random_range(0..conversations.len());
        let (conversation, token) = (&conversations[which], &tokens[which]);
        let (query, histogram, expected) = if page % 2 == 0 {
            ("limit=50".to_owned(), &mut latest, 50.min(per_conversation))
        } else {
            let before = rand::random_range(51.min(per_conversation as u64)..=per_conversation as u64 + 1);
            (format!("before={before}&limit=50"), &mut older, 50.min(before as usize - 1))
        };
        let started = Instant::now();
        let response = http.get(format!("{}/v1/conversations/{conversation}/messages?{query}", target.http_url(0))).bearer_auth(token).send().await;
        let body: Option<schemas::HistoryPage> = match response {
            Ok(response) if response.status().is_success() => response.json().await.ok(),
            _ => None,
        };
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
        if body.is_none_or(|page| page.messages.len() != expected) {
            bad_pages += 1;
        }
    }
    Ok(HistoryReport {
        conversations: conversations.len(),
        messages_in_stream,
        fill_seconds,
        fill_messages_per_second: (per_conversation * conversations.len()) as f64 / fill_seconds,
        latest_page_ms: Percentiles::of(&latest),
        older_page_ms: Percentiles::of(&older),
        bad_pages,
    })
}

/// The log entry, then its index and idempotency records (as `MessageLog::write_records` does); returns the stream sequence.
async fn append_one(jetstream: &jetstream::Context, conversation: &str, seq: u64, prev_stream_seq: u64) -> anyhow::Result<u64> {
    let conversation_id = Id::parse(conversation)?;
    let client_msg_id = Id::parse(&format!("h{seq}"))?;
    let message = Message::new(
        conversation.to_owned(),
        seq,
        client_msg_id.to_string(),
        READER.to_owned(),
        "hdevice".to_owned(),
        time::OffsetDateTime::now_utc(),
        Body::text(crate::natter_clients::MESSAGE_TEXT),
        None,
    );
    let envelope = schemas::encode_stored_message(&StoredMessage::message(message.clone(), prev_stream_seq));
    let publish = PublishMessage::build()
        .payload(envelope.into())
        .message_id(subjects::publish_dedupe_id(&conversation_id, &client_msg_id))
        .expected_last_subject_sequence(prev_stream_seq);
    let ack = jetstream.send_publish(subjects::Shard::FIRST.message_subject(&conversation_id), publish).await?.await.context("history: append")?;
    let index = jetstream.send_publish(
        subjects::kv_key_subject(subjects::MESSAGE_INDEX_BUCKET, &subjects::message_index_key(&conversation_id, seq)),
        PublishMessage::build().payload(ack.sequence.to_string().into()),
    );
    let record = ClientMsgIdRecord { v: 1, seq, stream_seq: ack.sequence, sent_at: message.sent_at, reply_to: None, mentions: Vec::new() };
    let idempotency = jetstream.send_publish(
        subjects::kv_key_subject(subjects::CLIENT_MSG_ID_BUCKET, &subjects::client_msg_id_key(&conversation_id, &client_msg_id)),
        PublishMessage::build().payload(record.to_bytes().into()),
    );
    let (index, idempotency) = tokio::join!(index, idempotency);
    let (index, idempotency) = tokio::join!(index?, idempotency?);
    index.context("history: index record")?;
    idempotency.context("history: idempotency record")?;
    Ok(ack.sequence)
}

/// Two-member groups, each created (and later read) by its own owner `hpartner<k>`.
pub async fn create_direct_conversations(target: &Target, count: usize) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let creations = futures::stream::iter(0..count).map(|partner| {
        let http = http.clone();
        // Each conversation has its own owner, who later reads its history: one user in 1,000 conversations
        // runs the gateway out of JetStream consumers for key listings (error 10026; see BENCHMARKS.md).
        let token = target.token(&format!("hpartner{partner}"));
        async move {
            // A retry or two: under a parallel burst the gateway has answered `internal` now and then (see BENCHMARKS.md).
            let mut last_failure = None;
            for attempt in 0..5u64 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                let response = http
                    .post(format!("{}/v1/conversations", target.http_url(partner)))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"kind": "group", "title": format!("history {partner}"), "members": [format!("hfriend{partner}")]}))
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                if status.is_success() {
                    return body["id"].as_str().map(str::to_owned).context("no id");
                }
                last_failure = Some(format!("create conversation: {status} {body}"));
            }
            anyhow::bail!(last_failure.unwrap_or_default())
        }
    });
    creations.buffered(HTTP_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}

/// The fanout worker reads every filled message too; measuring while it still works would measure it.
async fn wait_for_fanout_to_drain(jetstream: &jetstream::Context) -> anyhow::Result<()> {
    let give_up_at = Instant::now() + Duration::from_secs(600);
    let stream = jetstream.get_stream(subjects::MESSAGE_STREAM).await?;
    loop {
        let pending = stream.consumer_info(subjects::FANOUT_CONSUMER).await?.num_pending;
        if pending == 0 || Instant::now() >= give_up_at {
            if pending > 0 {
                eprintln!("history: fanout still has {pending} pending; measuring anyway");
            }
            return Ok(());
        }
        eprintln!("  fanout pending: {pending}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
