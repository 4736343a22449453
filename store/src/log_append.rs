//! Appends messages to a conversation's log with a gapless `seq` and idempotent resends.
//!
//! JetStream's stream leader is the ordering authority: every append carries
//! `Nats-Expected-Last-Subject-Sequence`, so two gateways racing on one conversation
//! cannot both take the same `seq`; the loser reloads the tail and retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::message::PublishMessage;
use schemas::{Body, Change, ClientMsgIdRecord, Message, ReceiptKind, StoredMessage, Timestamp};
use subjects::Id;

use crate::error::{from_nats, StoreError};
use crate::log_read::LogReader;
use crate::message_state::MessageStates;
use crate::retry::{retry_with_patience, Patience};
use crate::shards::LogShard;
use crate::{Receipts, Storage};

/// How long an append keeps retrying after losing races for the conversation's tail.
const APPEND_RETRY_BUDGET: Duration = Duration::from_secs(5);
/// Longest pause between retries; the pause is random below a cap that doubles from 100 µs.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long an append keeps trying to write the records of a message the log already holds.
const RECORDS_RETRY_BUDGET: Duration = Duration::from_secs(5);
/// Beyond this many cached tails, idle ones are dropped (they reload on next use).
const MAX_CACHED_TAILS: usize = 100_000;

pub struct AppendRequest {
    pub conversation: Id,
    pub client_msg_id: Id,
    pub sender: Id,
    pub sender_device: Id,
    pub body: Body,
    /// The `seq` this message replies to; must name a message already in the conversation.
    pub reply_to: Option<u64>,
    /// Members the message mentions, already checked by the caller (members, not the sender, no repeats).
    pub mentions: Vec<Id>,
    /// The gateway request or connection id, carried to the workers in [`subjects::HEADER_REQUEST_ID`].
    pub request_id: Option<String>,
    /// An edit, delete or reaction of an earlier message instead of a message; `body` is an edit's new body.
    pub change: Option<Change>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    pub seq: u64,
    pub stream_seq: u64,
    pub sent_at: Timestamp,
    /// The client_msg_id was already in the log: nothing new was stored.
    pub duplicate: bool,
    /// The stored message's `reply_to` (the original's, for a duplicate).
    pub reply_to: Option<u64>,
    /// The stored message's mentions (the original's, for a duplicate), for their unread-mention keys.
    pub mentions: Vec<String>,
}

/// Where a conversation's log ends, as last seen by this process.
#[derive(Debug, Clone, Copy)]
struct Tail {
    stream_seq: u64,
    seq: u64,
    /// The stream sequence of its latest message (not edit, delete or reaction), if known.
    latest_message_stream_seq: Option<u64>,
}

/// The append side of the log; one per process, shared by every connection.
pub struct MessageLog {
    storage: Storage,
    reader: LogReader,
    states: MessageStates,
    receipts: Option<Receipts>,
    /// One async lock per conversation serialises this process's appends to it, so they
    /// do not race each other for the tail; held across the PubAck on purpose.
    tails: Mutex<HashMap<Id, Arc<tokio::sync::Mutex<Option<Tail>>>>>,
}

impl MessageLog {
    pub fn new(storage: Storage) -> MessageLog {
        MessageLog { reader: LogReader::new(storage.clone()), states: MessageStates::new(storage.clone()), receipts: None, storage, tails: Mutex::new(HashMap::new()) }
    }

    /// Sending is reading: with receipts, each new message also moves its sender's read watermark
    /// to its `seq`, written beside the index records so it costs no extra round trip before the ack.
    pub fn with_sender_read_receipts(mut self, receipts: Receipts) -> MessageLog {
        self.receipts = Some(receipts);
        self
    }

    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let shard = self.storage.shard_for_append(&request.conversation).await?;
        let shard = shard.as_ref();
        if let Some(original) = self.recorded_send(shard, &request.conversation, &request.client_msg_id).await? {
            // The two records are written side by side, so the idempotency record can exist without its
            // index entry (the index put failed, e.g. while its bucket elected a leader); a resend is the
            // moment to make sure, or history would skip the message for good (and a thread its reply).
            self.write_indexes(shard, &request.conversation, &original).await?;
            if request.change.is_some() {
                // Likewise its fold into the target, which a gateway dying after the PubAck never wrote.
                let entry = self.reader.get_by_stream_seq(&request.conversation, original.stream_seq).await?;
                self.states.apply(&request.conversation, &entry).await?;
            }
            return Ok(original);
        }
        let tail_lock = self.tail_lock(&request.conversation);
        let mut tail_guard = tail_lock.lock().await;
        let give_up_at = Instant::now() + APPEND_RETRY_BUDGET;
        for attempt in 0u32.. {
            let (tail, cached) = match *tail_guard {
                Some(tail) => (tail, true),
                None => {
                    let (tail, last_message) = self.load_tail(shard, &request.conversation).await?;
                    *tail_guard = Some(tail);
                    if let Some(last) = last_message {
                        // A resend whose original is the tail, e.g. after a gateway died between
                        // PubAck and writing the idempotency record (records were repaired above).
                        if last.message.client_msg_id == request.client_msg_id.as_str() {
                            return Ok(AppendOutcome {
                                seq: tail.seq,
                                stream_seq: tail.stream_seq,
                                sent_at: last.message.sent_at,
                                duplicate: true,
                                reply_to: last.message.reply_to,
                                mentions: last.message.mentions.clone(),
                            });
                        }
                    }
                    (tail, false)
                }
            };
            if let Some(parent) = request.reply_to.filter(|&parent| parent == 0 || parent > tail.seq) {
                if cached && parent != 0 {
                    // Another gateway may have appended the parent since this tail was cached.
                    *tail_guard = None;
                    continue;
                }
                return Err(StoreError::Invalid(format!("reply_to {parent} is not a message of {} (its last seq is {})", request.conversation, tail.seq)));
            }
            let mut message = Message::new(
                request.conversation.to_string(),
                tail.seq + 1,
                request.client_msg_id.to_string(),
                request.sender.to_string(),
                request.sender_device.to_string(),
                time::OffsetDateTime::now_utc(),
                request.body.clone(),
                request.reply_to,
            );
            message.mentions = request.mentions.iter().map(ToString::to_string).collect();
            let stored = StoredMessage {
                message,
                prev_stream_seq: tail.stream_seq,
                change: request.change.clone(),
                latest_message_stream_seq: tail.latest_message_stream_seq,
            };
            let envelope = schemas::encode_stored_message(&stored);
            let message = &stored.message;
            let mut publish = PublishMessage::build()
                .payload(envelope.into())
                .message_id(subjects::publish_dedupe_id(&request.conversation, &request.client_msg_id))
                .expected_last_subject_sequence(tail.stream_seq);
            if let Some(request_id) = &request.request_id {
                publish = publish.header(subjects::HEADER_REQUEST_ID, request_id.as_str());
            }
            let publish_started = Instant::now();
            let ack_future = self
                .storage
                .jetstream
                .send_publish(shard.shard.message_subject(&request.conversation), publish)
                .await
                .map_err(|error| from_nats("failed to publish message", error))?;
            let acked = ack_future.await;
            if acked.is_ok() || matches!(&acked, Err(error) if lost_the_race_for_the_tail(error)) {
                // Conflicts are answers from the stream leader too; timeouts and broken connections are not latencies.
                telemetry::store_metrics().publish_ack_latency_seconds.observe(publish_started.elapsed().as_secs_f64());
            }
            match acked {
                Ok(ack) if ack.duplicate => {
                    drop(tail_guard);
                    let original = self.reader.get_by_stream_seq(&request.conversation, ack.sequence).await?;
                    let outcome = AppendOutcome {
                        seq: original.message.seq,
                        stream_seq: ack.sequence,
                        sent_at: original.message.sent_at,
                        duplicate: true,
                        reply_to: original.message.reply_to,
                        mentions: original.message.mentions.clone(),
                    };
                    self.write_records_patiently(shard, &request.conversation, &request.client_msg_id, &outcome).await?;
                    self.fold_patiently(&request.conversation, &original).await?;
                    return Ok(outcome);
                }
                Ok(ack) => {
                    *tail_guard = Some(Tail { stream_seq: ack.sequence, seq: message.seq, latest_message_stream_seq: stored.latest_message_at(ack.sequence) });
                    drop(tail_guard);
                    let outcome = AppendOutcome {
                        seq: message.seq,
                        stream_seq: ack.sequence,
                        sent_at: message.sent_at,
                        duplicate: false,
                        reply_to: message.reply_to,
                        mentions: message.mentions.clone(),
                    };
                    let sender_read = async {
                        match &self.receipts {
                            Some(receipts) => receipts.advance_user(&request.conversation, &request.sender, ReceiptKind::Read, outcome.seq).await.map(|_| ()),
                            None => Ok(()),
                        }
                    };
                    let (records, fold, read) = tokio::join!(
                        self.write_records_patiently(shard, &request.conversation, &request.client_msg_id, &outcome),
                        self.fold_patiently(&request.conversation, &stored),
                        sender_read
                    );
                    records?;
                    fold?;
                    if let Err(error) = read {
                        // The message is durable; a missed watermark only shows it as unread to its sender for a moment.
                        tracing::warn!(%error, conversation = %request.conversation, "failed to move the sender's read watermark");
                    }
                    return Ok(outcome);
                }
                Err(error) if lost_the_race_for_the_tail(&error) => {
                    tracing::debug!(conversation = %request.conversation, attempt, "lost the race for the tail; reloading");
                    *tail_guard = None;
                    if Instant::now() >= give_up_at {
                        break;
                    }
                    // Another gateway is appending to this conversation; a random pause lets
                    // its queue drain instead of losing every race to its warm cache.
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
                Err(error) => {
                    // The publish may or may not have landed: forget the tail so the next append reloads it.
                    *tail_guard = None;
                    return Err(from_nats("failed to append message", error));
                }
            }
        }
        Err(StoreError::Unavailable(format!("conversation {} is too contended; retry", request.conversation)))
    }

    /// Whether the conversation already holds message `seq`: lets a caller refuse a bad `reply_to`
    /// before it spends anything (a rate-limit token). A warm tail answers without a round trip; the
    /// append checks again against the tail it appends after, which is what makes it safe.
    pub async fn holds_seq(&self, conversation: &Id, seq: u64) -> Result<bool, StoreError> {
        if seq == 0 {
            return Ok(false);
        }
        let cached = {
            let tails = self.tails.lock().expect("tail map lock poisoned");
            tails.get(conversation).and_then(|lock| lock.try_lock().ok().and_then(|tail| *tail))
        };
        if cached.is_some_and(|tail| tail.seq >= seq) {
            return Ok(true);
        }
        Ok(self.reader.last_seq(conversation).await? >= seq)
    }

    /// Whether a send or change with this client_msg_id is already stored (its durable record exists).
    pub async fn is_recorded(&self, conversation: &Id, client_msg_id: &Id) -> Result<bool, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        Ok(self.recorded_send(&shard, conversation, client_msg_id).await?.is_some())
    }

    /// The ack of an earlier send with this client_msg_id, from the durable record (covers resends after the duplicate window).
    async fn recorded_send(&self, shard: &LogShard, conversation: &Id, client_msg_id: &Id) -> Result<Option<AppendOutcome>, StoreError> {
        let key = subjects::client_msg_id_key(conversation, client_msg_id);
        let Some(bytes) = shard.client_msg_ids.get(key).await.map_err(|error| from_nats("failed to read idempotency record", error))? else {
            return Ok(None);
        };
        let record = ClientMsgIdRecord::from_bytes(&bytes).map_err(StoreError::internal)?;
        Ok(Some(AppendOutcome {
            seq: record.seq,
            stream_seq: record.stream_seq,
            sent_at: record.sent_at,
            duplicate: true,
            reply_to: record.reply_to,
            mentions: record.mentions,
        }))
    }

    /// Reads the conversation's last entry and makes sure its index and idempotency records exist.
    async fn load_tail(&self, shard: &LogShard, conversation: &Id) -> Result<(Tail, Option<StoredMessage>), StoreError> {
        let Some((stream_seq, last)) = self.reader.last_entry(conversation).await? else {
            return Ok((Tail { stream_seq: 0, seq: 0, latest_message_stream_seq: None }, None));
        };
        if let Ok(client_msg_id) = Id::parse(&last.message.client_msg_id) {
            let outcome = AppendOutcome {
                seq: last.message.seq,
                stream_seq,
                sent_at: last.message.sent_at,
                duplicate: true,
                reply_to: last.message.reply_to,
                mentions: last.message.mentions.clone(),
            };
            self.write_records(shard, conversation, &client_msg_id, &outcome).await?;
        }
        self.states.apply(conversation, &last).await?;
        Ok((Tail { stream_seq, seq: last.message.seq, latest_message_stream_seq: last.latest_message_at(stream_seq) }, Some(last)))
    }

    /// The records of a message that is already in the log, retried for a while: failing now would
    /// send the client into a resend for a message that is stored, and a bucket without a leader (a
    /// cluster electing one) comes back within seconds.
    async fn write_records_patiently(&self, shard: &LogShard, conversation: &Id, client_msg_id: &Id, outcome: &AppendOutcome) -> Result<(), StoreError> {
        let patience = Patience { budget: RECORDS_RETRY_BUDGET, first_pause: Duration::from_millis(50), longest_pause: Duration::from_secs(1) };
        let on_retry = |error: &StoreError, _pause| tracing::debug!(%error, %conversation, seq = outcome.seq, "records not written yet; retrying");
        retry_with_patience(patience, |_| true, on_retry, || self.write_records(shard, conversation, client_msg_id, outcome)).await
    }

    /// A change's fold into its target, retried like the records: history must show it once it is acked.
    async fn fold_patiently(&self, conversation: &Id, entry: &StoredMessage) -> Result<(), StoreError> {
        if entry.change.is_none() {
            return Ok(());
        }
        let patience = Patience { budget: RECORDS_RETRY_BUDGET, first_pause: Duration::from_millis(50), longest_pause: Duration::from_secs(1) };
        let on_retry = |error: &StoreError, _pause| tracing::debug!(%error, %conversation, seq = entry.message.seq, "change not folded yet; retrying");
        retry_with_patience(patience, |_| true, on_retry, || async { self.states.apply(conversation, entry).await.map(|_| ()) }).await
    }

    /// The history index entry and, for a reply, its thread index entry, and an unread-mention key
    /// per mentioned member, side by side.
    async fn write_indexes(&self, shard: &LogShard, conversation: &Id, outcome: &AppendOutcome) -> Result<(), StoreError> {
        let stream_seq: bytes::Bytes = outcome.stream_seq.to_string().into();
        let history = shard.message_index.put(subjects::message_index_key(conversation, outcome.seq), stream_seq.clone());
        let thread = async {
            match outcome.reply_to {
                Some(parent) => shard.thread_index.put(subjects::thread_index_key(conversation, parent, outcome.seq), stream_seq.clone()).await.map(|_| ()),
                None => Ok(()),
            }
        };
        // Stored mentions were checked as ids before the append; anything else is not a key.
        let mention_keys = outcome.mentions.iter().filter_map(|user| Id::parse(user).ok()).map(|user| subjects::mention_key(&user, conversation, outcome.seq));
        let mentions = futures::future::join_all(mention_keys.map(|key| self.storage.mentions.put(key, stream_seq.clone())));
        let (history_result, thread_result, mention_results) = tokio::join!(history, thread, mentions);
        history_result.map_err(|error| from_nats("failed to write history index", error))?;
        thread_result.map_err(|error| from_nats("failed to write thread index", error))?;
        for result in mention_results {
            result.map_err(|error| from_nats("failed to write an unread mention", error))?;
        }
        Ok(())
    }

    /// Index (`seq` → stream sequence, and the thread entry of a reply) and idempotency records; all idempotent puts.
    async fn write_records(&self, shard: &LogShard, conversation: &Id, client_msg_id: &Id, outcome: &AppendOutcome) -> Result<(), StoreError> {
        let record = ClientMsgIdRecord {
            v: 1,
            seq: outcome.seq,
            stream_seq: outcome.stream_seq,
            sent_at: outcome.sent_at,
            reply_to: outcome.reply_to,
            mentions: outcome.mentions.clone(),
        };
        let record_put = shard.client_msg_ids.put(subjects::client_msg_id_key(conversation, client_msg_id), record.to_bytes().into());
        let (index_result, record_result) = tokio::join!(self.write_indexes(shard, conversation, outcome), record_put);
        index_result?;
        record_result.map_err(|error| from_nats("failed to write idempotency record", error))?;
        Ok(())
    }

    fn tail_lock(&self, conversation: &Id) -> Arc<tokio::sync::Mutex<Option<Tail>>> {
        let mut tails = self.tails.lock().expect("tail map lock poisoned");
        if tails.len() >= MAX_CACHED_TAILS {
            tails.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        tails.entry(conversation.clone()).or_default().clone()
    }
}

/// Another append took the tail first. A stream answers 10071 "wrong last sequence: <n>"; a
/// replicated one under load may answer 10164 "wrong last sequence" instead, when the leader checks
/// the expected sequence against appends it has proposed but not yet applied. async-nats names only
/// the first, so the second is told by its error code; both mean: reload the tail and retry.
fn lost_the_race_for_the_tail(error: &PublishError) -> bool {
    let constant_form = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|error| error.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT);
    error.kind() == PublishErrorKind::WrongLastSequence || constant_form
}

fn retry_pause(attempt: u32) -> Duration {
    let cap = Duration::from_micros(100).saturating_mul(1 << attempt.min(16)).min(MAX_RETRY_PAUSE);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(json: &str) -> async_nats::jetstream::Error {
        serde_json::from_str(json).expect("a JetStream API error")
    }

    #[test]
    fn both_forms_of_wrong_last_sequence_are_a_lost_race_and_nothing_else_is() {
        let numbered = PublishError::with_source(PublishErrorKind::WrongLastSequence, server_error(r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 7"}"#));
        let constant = PublishError::with_source(PublishErrorKind::Other, server_error(r#"{"code":400,"err_code":10164,"description":"wrong last sequence"}"#));
        let other = PublishError::with_source(PublishErrorKind::Other, server_error(r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#));
        assert!(lost_the_race_for_the_tail(&numbered));
        assert!(lost_the_race_for_the_tail(&constant));
        assert!(!lost_the_race_for_the_tail(&other));
        assert!(!lost_the_race_for_the_tail(&PublishError::new(PublishErrorKind::TimedOut)));
    }
}
