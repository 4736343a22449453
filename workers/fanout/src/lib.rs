//! The fanout worker: reads the conversation log through a shared durable consumer and publishes each entry to `deliver.<user>` for every member, or once to `mcast.<conv>` for a multicast group.
//!
//! Deliveries are core NATS (the log is the truth): a message is acked only after its
//! deliveries were handed to the connection, so a worker killed mid-stream leaves the rest
//! to its siblings or its restart, and gateways drop the resulting duplicates by `seq`.
//! With Redis configured it also queues push jobs for members with no live connection (`push_enqueue.rs`).

mod change_frames;
mod presence_probe;
mod push_enqueue;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::message::AckKind;
use async_nats::HeaderMap;
use futures::StreamExt;
use schemas::ServerFrame;
use store::{LogReader, MembershipCache, MulticastGroups, Storage};
use async_nats::jetstream::consumer::pull::Stream as PullMessages;
use async_nats::jetstream::consumer::PullConsumer;
use subjects::{Id, Shard, StorageSettings};
use tokio_util::sync::CancellationToken;

/// How long a message whose members could not be read waits before it is offered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a pulled message may stay unacked before JetStream offers it to another worker.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// A gateway sees a new flag within its KV watch's latency (milliseconds); ten seconds also covers one that is reconnecting.
const DEFAULT_MULTICAST_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub storage: StorageSettings,
    /// Redelivery delay after a worker dies mid-message; short in tests, longer in production.
    pub ack_wait: Duration,
    /// The gateways' presence Redis (`NATTER_REDIS_URL`): with it the fanout queues pushes for offline members; without it, none.
    pub redis_url: Option<String>,
    /// How long after a group is flagged for multicast its deliveries also go per member
    /// (`NATTER_MULTICAST_GRACE_MILLIS`): every gateway must have seen the flag and subscribed first.
    pub multicast_grace: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig { storage: StorageSettings::default(), ack_wait: DEFAULT_ACK_WAIT, redis_url: None, multicast_grace: DEFAULT_MULTICAST_GRACE }
    }
}

impl FanoutConfig {
    /// Reads `NATTER_*` values: the shared storage settings and `NATTER_FANOUT_ACK_WAIT_SECS`.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<FanoutConfig> {
        let mut config = FanoutConfig { storage: store::storage_settings_from_environment(environment)?, ..FanoutConfig::default() };
        if let Some(seconds) = environment.get("NATTER_FANOUT_ACK_WAIT_SECS").filter(|value| !value.is_empty()) {
            config.ack_wait = Duration::from_secs(seconds.parse().context("NATTER_FANOUT_ACK_WAIT_SECS must be whole seconds")?);
        }
        config.redis_url = environment.get("NATTER_REDIS_URL").filter(|value| !value.is_empty()).cloned();
        if let Some(millis) = environment.get("NATTER_MULTICAST_GRACE_MILLIS").filter(|value| !value.is_empty()) {
            config.multicast_grace = Duration::from_millis(millis.parse().context("NATTER_MULTICAST_GRACE_MILLIS must be whole milliseconds")?);
        }
        anyhow::ensure!(!config.ack_wait.is_zero(), "the fanout ack wait must be at least one second");
        Ok(config)
    }
}

/// What the fanout's `/readyz` checks: NATS, every log shard and its shared durable consumer, and the presence Redis when one is configured.
pub fn readiness(nats: async_nats::Client, redis_url: Option<&str>, settings: &StorageSettings) -> anyhow::Result<telemetry::Readiness> {
    let redis = redis_url.map(presence_probe::lazy_connection).transpose()?;
    let mut readiness = telemetry::Readiness::new(nats).redis(redis);
    for shard in Shard::all(settings.message_shards) {
        readiness = readiness.stream(shard.message_stream()).consumer(shard.message_stream(), subjects::FANOUT_CONSUMER);
    }
    Ok(readiness)
}

/// Runs until `shutdown`; in-flight work that was not acked is redelivered to a sibling.
///
/// Every copy consumes every log shard, each through that shard's shared durable consumer, so
/// copies share each shard's work and one busy shard never holds up another's entries.
pub async fn run(config: FanoutConfig, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let storage = store::retry_at_startup("provision streams and buckets", || Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage))
        .await
        .context("failed to provision streams and buckets")?;
    let (membership, membership_task) = MembershipCache::start(nats.clone(), &storage, shutdown.clone()).await?;
    let reader = LogReader::new(storage.clone());
    let (multicast, multicast_task) = MulticastGroups::start(&nats, &storage, shutdown.clone()).await?;
    let mut consumers = Vec::new();
    for shard in storage.every_shard().await? {
        let consumer = shard
            .messages
            .create_consumer(subjects::fanout_consumer_config(config.ack_wait))
            .await
            .with_context(|| format!("failed to open the fanout consumer of {}", shard.shard.message_stream()))?;
        let messages = store::open_pull_messages(&consumer).await.context("failed to pull from the fanout consumer")?;
        consumers.push((shard.shard, consumer, messages));
    }
    let (push, registered_users_task) = match &config.redis_url {
        Some(url) => {
            let push = store::retry_at_startup("provision push storage", || store::PushStorage::provision(nats.clone(), &config.storage)).await.context("failed to provision push storage")?;
            let (registered, task) = store::RegisteredUsers::start(&push, shutdown.clone()).await?;
            let presence = presence_probe::PresenceProbe::connect(url)?;
            (Some(push_enqueue::PushEnqueuer { push, presence, registered }), Some(task))
        }
        None => {
            tracing::info!("NATTER_REDIS_URL is not set: presence is unknown, so no push notifications are queued");
            (None, None)
        }
    };
    let backlog_tasks: Vec<_> = consumers
        .iter()
        .map(|(shard, _, _)| tokio::spawn(telemetry::sample_consumer_backlog(nats.clone(), shard.message_stream(), subjects::FANOUT_CONSUMER.to_owned(), shutdown.clone())))
        .collect();
    tracing::info!(shards = consumers.len(), "fanout running");
    let context = Fanout { nats: &nats, membership: &membership, reader: &reader, push: push.as_ref(), multicast: &multicast, multicast_grace: config.multicast_grace };
    let shard_loops = consumers.into_iter().map(|(_, consumer, messages)| consume_shard(&context, consumer, messages, &shutdown));
    futures::future::join_all(shard_loops).await;
    // Aborted, not awaited: the loops can also end without shutdown (a consumer's stream closed).
    for task in backlog_tasks {
        task.abort();
    }
    let _ = membership_task.await;
    let _ = multicast_task.await;
    if let Some(task) = registered_users_task {
        let _ = task.await;
    }
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("fanout stopped");
    Ok(())
}

/// Fans one shard's entries out, in the order the consumer hands them over, until `shutdown`.
async fn consume_shard(context: &Fanout<'_>, consumer: PullConsumer, mut messages: PullMessages, shutdown: &CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                store::recover_pull_messages(&consumer, &mut messages, &error, "fanout").await;
                continue;
            }
            None => break,
        };
        let request_id = message.headers.as_ref().and_then(|headers| headers.get(subjects::HEADER_REQUEST_ID)).map(|id| id.as_str().to_owned());
        let span = tracing::info_span!("fanout", request_id = request_id.as_deref().unwrap_or(""), subject = %message.subject);
        // Every line logged while handling the entry, acks and retries included, names the request that appended it.
        let handling = handle_log_entry(context, &message, request_id.as_deref());
        tracing::Instrument::instrument(handling, span).await;
    }
}

/// Fans one log entry out, then acks it, terminates it (unreadable) or naks it for a later retry.
async fn handle_log_entry(context: &Fanout<'_>, message: &async_nats::jetstream::Message, request_id: Option<&str>) {
    match fan_out(context, message, request_id).await {
        Ok(()) => {
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "failed to ack; the message will be redelivered");
            }
        }
        Err(FanoutError::Unreadable(reason)) => {
            tracing::error!(%reason, subject = %message.subject, "unreadable log entry; skipped");
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(FanoutError::Retry(reason)) => {
            tracing::warn!(%reason, "fanout failed; retrying later");
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
        }
    }
}

pub(crate) enum FanoutError {
    Unreadable(String),
    Retry(String),
}

/// What fanning one entry out needs.
struct Fanout<'a> {
    nats: &'a async_nats::Client,
    membership: &'a MembershipCache,
    reader: &'a LogReader,
    push: Option<&'a push_enqueue::PushEnqueuer>,
    multicast: &'a MulticastGroups,
    multicast_grace: Duration,
}

impl Fanout<'_> {
    /// (once to the group's multicast subject, once per member): a multicast group's first moments take both.
    fn routes(&self, conversation: &Id) -> (bool, bool) {
        match self.multicast.since(conversation) {
            None => (false, true),
            Some(since) => (true, time::OffsetDateTime::now_utc() - since < self.multicast_grace),
        }
    }

    async fn publish(&self, subject: String, headers: &HeaderMap, payload: bytes::Bytes) -> Result<(), FanoutError> {
        self.nats.publish_with_headers(subject, headers.clone(), payload).await.map_err(|error| FanoutError::Retry(error.to_string()))
    }
}

async fn fan_out(context: &Fanout<'_>, message: &async_nats::jetstream::Message, request_id: Option<&str>) -> Result<(), FanoutError> {
    let stored = schemas::decode_stored_message(&message.payload).map_err(|error| FanoutError::Unreadable(error.to_string()))?;
    let conversation = Id::parse(&stored.message.conversation_id).map_err(|error| FanoutError::Unreadable(error.to_string()))?;
    let stream_seq = message.info().map_err(|error| FanoutError::Unreadable(error.to_string()))?.stream_sequence;
    let members = context.membership.members(&conversation).await.map_err(|error| FanoutError::Retry(error.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(subjects::HEADER_CONVERSATION, conversation.as_str());
    headers.insert(subjects::HEADER_SEQ, stored.message.seq.to_string().as_str());
    headers.insert(subjects::HEADER_STREAM_SEQ, stream_seq.to_string().as_str());
    headers.insert(subjects::HEADER_SENDER, stored.message.sender.as_str());
    if let Some(request_id) = request_id {
        headers.insert(subjects::HEADER_REQUEST_ID, request_id);
    }
    let sent_at_micros = stored.message.sent_at.unix_timestamp_nanos() / 1_000;
    headers.insert(subjects::HEADER_SENT_AT_MICROS, sent_at_micros.to_string().as_str());
    let (multicast, per_user) = context.routes(&conversation);
    let metrics = telemetry::fanout_metrics();
    if stored.change.is_some() {
        // An edit, delete or reaction: `message_updated` with the message as it now stands; nobody is pushed for it.
        let payloads = change_frames::payloads(context.reader, &conversation, &stored, &members).await?;
        if multicast {
            // Everyone's view but reactions' `me`, which each gateway sets for its own members.
            context.publish(subjects::multicast_subject(&conversation), &headers, payloads.shared()).await?;
            metrics.count_publishes("multicast", 1);
        }
        if per_user {
            for user in members.keys() {
                context.publish(subjects::deliver_subject(user), &headers, payloads.for_user(user)).await?;
            }
            metrics.count_publishes("per_user", members.len() as u64);
        }
        return Ok(());
    }
    // Pushes go after the deliveries, so connected devices never wait for them.
    let push_message = context.push.map(|_| stored.message.clone());
    let payload = bytes::Bytes::from(ServerFrame::Message { message: stored.message }.to_json());
    if multicast {
        context.publish(subjects::multicast_subject(&conversation), &headers, payload.clone()).await?;
        metrics.count_publishes("multicast", 1);
    }
    if per_user {
        for user in members.keys() {
            context.publish(subjects::deliver_subject(user), &headers, payload.clone()).await?;
        }
        metrics.count_publishes("per_user", members.len() as u64);
    }
    if let (Some(push), Some(message)) = (context.push, push_message) {
        push.enqueue_for(&message, &members, request_id).await;
    }
    Ok(())
}
