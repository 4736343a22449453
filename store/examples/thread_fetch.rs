//! Measures a thread fetch (`LogReader::thread`) for a 20-reply thread in conversations of 1,000 and 100,000 messages.
//!
//! `cargo run --release -p store --example thread_fetch` — starts its own nats-server (NATTER_NATS_SERVER_BIN).
//! The logs are filled with raw pipelined publishes of real envelopes plus their history and
//! thread index entries (what `MessageLog::append` writes), because a million-round-trip fill
//! would measure the fill, not the read.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::future::try_join_all;
use schemas::{Body, Message, StoredMessage};
use store::{LogReader, Storage};
use subjects::{Id, StorageSettings};

const REPLIES: u64 = 20;
const PARENT: u64 = 10;
/// One message in this many (outside the measured thread) replies to some earlier message, so the thread bucket is busy too.
const OTHER_REPLY_EVERY: u64 = 5;
/// Publishes in flight at once: below async-nats' 5,000 un-acked limit (PITFALLS.md).
const IN_FLIGHT: usize = 2_000;
const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store_dir = tempfile::tempdir()?;
    let server = devservers::NatsServer::start(store_dir.path()).await?;
    let client = async_nats::connect(server.client_url()).await?;
    let storage = Storage::provision(jetstream::new(client.clone()), &StorageSettings::default()).await?;
    let reader = LogReader::new(storage.clone());
    let member = Id::parse("bench")?;

    for length in [1_000u64, 100_000] {
        let conversation = Id::parse(&format!("bench{length}"))?;
        let fill_started = Instant::now();
        fill(&storage, &conversation, length).await?;
        let fill_time = fill_started.elapsed();
        for _ in 0..20 {
            reader.thread(&conversation, PARENT, 0, 50, &member).await?;
        }
        let mut times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let (replies, has_more) = reader.thread(&conversation, PARENT, 0, 50, &member).await?;
            times.push(started.elapsed());
            anyhow::ensure!(replies.len() as u64 == REPLIES && !has_more, "expected {REPLIES} replies, got {}", replies.len());
            anyhow::ensure!(replies.iter().all(|reply| reply.reply_to == Some(PARENT)) && replies.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / ROUNDS as u32;
        let percentile = |p: f64| times[((ROUNDS as f64 * p) as usize).min(ROUNDS - 1)];
        println!(
            "conversation of {length:>7} messages (filled in {:.1} s): thread of {REPLIES} replies, {ROUNDS} fetches: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
            fill_time.as_secs_f64(),
            ms(mean),
            ms(percentile(0.50)),
            ms(percentile(0.99)),
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Appends `length` messages to `conversation`: 20 of them reply to [`PARENT`], spread over the whole log.
async fn fill(storage: &Storage, conversation: &Id, length: u64) -> anyhow::Result<()> {
    let jetstream = &storage.jetstream;
    let mut stream_seq = storage.shard(subjects::Shard::FIRST).await?.messages.clone().info().await?.state.last_sequence;
    let mut pending = Vec::with_capacity(IN_FLIGHT * 3);
    let spacing = (length - PARENT) / REPLIES;
    for seq in 1..=length {
        stream_seq += 1;
        let reply_to = if seq > PARENT && (seq - PARENT).is_multiple_of(spacing) && (seq - PARENT) / spacing <= REPLIES {
            Some(PARENT)
        } else if seq > 1 && seq.is_multiple_of(OTHER_REPLY_EVERY) {
            // Any earlier message but the measured parent.
            Some(seq / 2 + u64::from(seq / 2 == PARENT))
        } else {
            None
        };
        let message = Message::new(
            conversation.to_string(),
            seq,
            format!("m{seq}"),
            "bench".to_owned(),
            "bench".to_owned(),
            time::OffsetDateTime::now_utc(),
            Body::text("a message of about the usual length for a chat"),
            reply_to,
        );
        let envelope = schemas::encode_stored_message(&StoredMessage::message(message, stream_seq - 1));
        let index_value: bytes::Bytes = stream_seq.to_string().into();
        pending.push((Some(stream_seq), jetstream.publish(subjects::Shard::FIRST.message_subject(conversation), envelope.into()).await?));
        let index_key = subjects::message_index_key(conversation, seq);
        pending.push((None, jetstream.publish(subjects::kv_key_subject(subjects::MESSAGE_INDEX_BUCKET, &index_key), index_value.clone()).await?));
        if let Some(parent) = reply_to {
            let thread_key = subjects::thread_index_key(conversation, parent, seq);
            pending.push((None, jetstream.publish(subjects::kv_key_subject(subjects::THREAD_INDEX_BUCKET, &thread_key), index_value).await?));
        }
        if pending.len() >= IN_FLIGHT || seq == length {
            let batch = std::mem::take(&mut pending);
            let expected: Vec<Option<u64>> = batch.iter().map(|(expected, _)| *expected).collect();
            let acks = try_join_all(batch.into_iter().map(|(_, ack)| ack.into_future())).await?;
            for (expected, ack) in expected.into_iter().zip(acks) {
                // The envelopes' prev pointers and index values assume nothing else writes to the log meanwhile.
                anyhow::ensure!(expected.is_none_or(|expected| expected == ack.sequence), "the log moved under the fill");
            }
        }
    }
    Ok(())
}
