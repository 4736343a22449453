//! The push worker: takes jobs from the `PUSH` work queue and notifies offline devices through FCM HTTP v1, APNs or Web Push, retrying through JetStream.
//!
//! Each job waits out its burst's coalescing window, then reads the conversation's unread count
//! and sends one notification. A failed attempt is naked with exponential backoff (or the
//! provider's `Retry-After`); the last allowed attempt (`max_deliver`) goes to the dead-letter
//! stream with its reason; an invalid-token answer removes the registration.

mod config;
mod job;
mod metrics;
pub mod providers;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use store::{LogReader, Mentions, PushStorage, Receipts, Storage};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::PushWorkerConfig;
pub use metrics::{ProviderCounters, ProviderMetricsSnapshot, PushMetrics, PushOutcome};
pub use retry::{backoff_delay, parse_retry_after};

/// How long jobs in progress get to finish after shutdown begins; the rest are redelivered.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// What the push worker's `/readyz` checks: NATS, the job stream and the shared durable consumer.
pub fn readiness(nats: async_nats::Client) -> telemetry::Readiness {
    telemetry::Readiness::new(nats).stream(subjects::PUSH_STREAM).consumer(subjects::PUSH_STREAM, subjects::PUSH_CONSUMER)
}

/// Runs until `shutdown` with its own metrics.
pub async fn run(config: PushWorkerConfig, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_metrics(config, nats, shutdown, Arc::new(PushMetrics::default())).await
}

/// Runs until `shutdown`, counting into `metrics` (which the caller may export).
pub async fn run_with_metrics(config: PushWorkerConfig, nats: async_nats::Client, shutdown: CancellationToken, metrics: Arc<PushMetrics>) -> anyhow::Result<()> {
    config.validate()?;
    // Declared up front, so the first scrape lists every provider's outcomes at zero.
    PushMetrics::declare_series();
    let storage = store::retry_at_startup("provision streams and buckets", || Storage::provision(async_nats::jetstream::new(nats.clone()), &config.storage))
        .await
        .context("failed to provision streams and buckets")?;
    let push = store::retry_at_startup("provision push storage", || PushStorage::provision(nats.clone(), &config.storage)).await.context("failed to provision push storage")?;
    let providers = providers::Providers {
        fcm: config.fcm.as_ref().map(providers::FcmSender::new).transpose()?.map(|sender| Box::new(sender) as Box<dyn providers::PushSender>),
        apns: config.apns.as_ref().map(providers::ApnsSender::new).transpose()?.map(|sender| Box::new(sender) as Box<dyn providers::PushSender>),
        webpush: config.webpush.as_ref().map(providers::WebPushSender::new).transpose()?.map(|sender| Box::new(sender) as Box<dyn providers::PushSender>),
    };
    let stream = push.jetstream.get_stream(subjects::PUSH_STREAM).await.context("failed to open the push stream")?;
    let max_deliver = i64::try_from(config.max_attempts).context("NATTER_PUSH_MAX_ATTEMPTS is too large")?;
    let consumer = stream
        .create_consumer(subjects::push_consumer_config(config.ack_wait, max_deliver))
        .await
        .context("failed to open the push consumer")?;
    let mut messages = store::open_pull_messages(&consumer).await.context("failed to pull from the push consumer")?;
    let runner = Arc::new(job::JobRunner {
        push: push.clone(),
        reader: LogReader::new(storage.clone()),
        receipts: Receipts::new(nats.clone(), &storage),
        mentions: Mentions::new(nats.clone(), &storage),
        providers,
        metrics,
        coalesce_window: config.coalesce_window,
        content_free: config.content_free,
        max_attempts: config.max_attempts,
        backoff_base: config.backoff_base,
        backoff_max: config.backoff_max,
    });
    let backlog_task = tokio::spawn(telemetry::sample_consumer_backlog(
        nats.clone(),
        subjects::PUSH_STREAM.to_owned(),
        subjects::PUSH_CONSUMER.to_owned(),
        shutdown.clone(),
    ));
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let jobs = TaskTracker::new();
    tracing::info!(
        fcm = config.fcm.is_some(),
        apns = config.apns.is_some(),
        webpush = config.webpush.is_some(),
        content_free = config.content_free,
        "push worker running"
    );
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.context("push job slots closed")?,
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                store::recover_pull_messages(&consumer, &mut messages, &error, "push").await;
                continue;
            }
            None => break,
        };
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        // The send that began the burst, so this job's log lines can be found beside the gateway's and the fanout's.
        let request_id = message.headers.as_ref().and_then(|headers| headers.get(subjects::HEADER_REQUEST_ID)).map(|id| id.as_str().to_owned());
        let span = tracing::info_span!("push_job", request_id = request_id.as_deref().unwrap_or(""), subject = %message.subject);
        jobs.spawn(tracing::Instrument::instrument(
            async move {
                runner.run(message, &shutdown).await;
                drop(slot);
            },
            span,
        ));
    }
    drop(messages);
    // Aborted, not awaited: the loop can also end without shutdown (the consumer's stream closed).
    backlog_task.abort();
    jobs.close();
    if tokio::time::timeout(STOP_DEADLINE, jobs.wait()).await.is_err() {
        tracing::warn!("push jobs still running at shutdown; they will be redelivered");
    }
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("push worker stopped");
    Ok(())
}
