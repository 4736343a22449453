//! The media worker: takes upload jobs from a shared durable consumer, scans them with clamd, thumbnails images, and publishes them as ready or rejected.
//!
//! A job is acked only after its outcome is stored (served objects, then the record), so a
//! worker killed mid-job leaves the upload to a sibling or its restart: nothing is lost, and
//! nothing is served before its scan finished.

mod images;
mod job;
mod scan;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::message::AckKind;
use futures::StreamExt;
use store::MediaStorage;
use subjects::StorageSettings;
use tokio_util::sync::CancellationToken;

pub use images::{process_image, thumbnail_size, ImageLimits, ProcessedImage};
pub use scan::{Scanner, Verdict};

/// A job that failed for a passing reason (clamd away, NATS hiccup) is offered again after this.
const RETRY_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct MediaWorkerConfig {
    pub storage: StorageSettings,
    /// `host:port` of clamd (`NATTER_CLAMD_ADDRESS`).
    pub clamd_address: String,
    /// Longest one scan may take before the job is retried.
    pub scan_timeout: Duration,
    /// How long a job may stay unacked before JetStream offers it to another worker.
    pub ack_wait: Duration,
    pub image_limits: ImageLimits,
}

impl Default for MediaWorkerConfig {
    fn default() -> Self {
        MediaWorkerConfig {
            storage: StorageSettings::default(),
            clamd_address: "127.0.0.1:3310".to_owned(),
            scan_timeout: Duration::from_secs(30),
            ack_wait: Duration::from_secs(60),
            image_limits: ImageLimits::default(),
        }
    }
}

impl MediaWorkerConfig {
    /// Reads `NATTER_*` values: storage settings, `NATTER_CLAMD_ADDRESS`, `NATTER_MEDIA_ACK_WAIT_SECS`,
    /// `NATTER_MEDIA_SCAN_TIMEOUT_SECS`, `NATTER_MEDIA_MAX_IMAGE_SIDE` and `NATTER_MEDIA_MAX_DECODE_BYTES`.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<MediaWorkerConfig> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let mut config = MediaWorkerConfig { storage: store::storage_settings_from_environment(environment)?, ..MediaWorkerConfig::default() };
        if let Some(address) = get("NATTER_CLAMD_ADDRESS") {
            config.clamd_address = address.to_owned();
        }
        if let Some(seconds) = get("NATTER_MEDIA_ACK_WAIT_SECS") {
            config.ack_wait = Duration::from_secs(seconds.parse().context("NATTER_MEDIA_ACK_WAIT_SECS must be whole seconds")?);
        }
        if let Some(seconds) = get("NATTER_MEDIA_SCAN_TIMEOUT_SECS") {
            config.scan_timeout = Duration::from_secs(seconds.parse().context("NATTER_MEDIA_SCAN_TIMEOUT_SECS must be whole seconds")?);
        }
        if let Some(side) = get("NATTER_MEDIA_MAX_IMAGE_SIDE") {
            let side = side.parse().context("NATTER_MEDIA_MAX_IMAGE_SIDE must be a pixel count")?;
            config.image_limits.max_width = side;
            config.image_limits.max_height = side;
        }
        if let Some(bytes) = get("NATTER_MEDIA_MAX_DECODE_BYTES") {
            config.image_limits.max_alloc = bytes.parse().context("NATTER_MEDIA_MAX_DECODE_BYTES must be a byte count")?;
        }
        anyhow::ensure!(!config.ack_wait.is_zero(), "the media ack wait must be at least one second");
        Ok(config)
    }
}

/// What the media worker's `/readyz` checks: NATS, the job stream and the shared durable consumer.
pub fn readiness(nats: async_nats::Client) -> telemetry::Readiness {
    telemetry::Readiness::new(nats).stream(subjects::MEDIA_JOBS_STREAM).consumer(subjects::MEDIA_JOBS_STREAM, subjects::MEDIA_CONSUMER)
}

/// Runs until `shutdown`; a job in progress at shutdown is left unacked and redelivered.
pub async fn run(config: MediaWorkerConfig, nats: async_nats::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let media = store::retry_at_startup("provision media storage", || MediaStorage::provision(nats.clone(), &config.storage)).await.context("failed to provision media storage")?;
    let stream = media.jetstream.get_stream(subjects::MEDIA_JOBS_STREAM).await.context("failed to open the media job stream")?;
    let consumer = stream.create_consumer(subjects::media_consumer_config(config.ack_wait)).await.context("failed to open the media consumer")?;
    let mut messages = store::open_pull_messages(&consumer).await.context("failed to pull from the media consumer")?;
    let worker = job::JobRunner {
        nats: nats.clone(),
        media,
        scanner: Scanner { address: config.clamd_address.clone(), timeout: config.scan_timeout },
        image_limits: config.image_limits.clone(),
    };
    let backlog_task = tokio::spawn(telemetry::sample_consumer_backlog(
        nats.clone(),
        subjects::MEDIA_JOBS_STREAM.to_owned(),
        subjects::MEDIA_CONSUMER.to_owned(),
        shutdown.clone(),
    ));
    tracing::info!(clamd = %config.clamd_address, "media worker running");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                store::recover_pull_messages(&consumer, &mut messages, &error, "media").await;
                continue;
            }
            None => break,
        };
        let work = worker.process(&message.payload);
        tokio::pin!(work);
        // A long scan tells JetStream it is alive, so ack_wait can stay short (quick takeover after a
        // crash) without a slow job being handed to a second worker meanwhile.
        let progress_interval = config.ack_wait / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + progress_interval, progress_interval);
        let outcome = loop {
            tokio::select! {
                // Unacked on purpose: the job comes back to a sibling after ack_wait.
                _ = shutdown.cancelled() => break None,
                outcome = &mut work => break Some(outcome),
                _ = progress.tick() => {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(%error, "failed to extend a media job's ack deadline");
                    }
                }
            }
        };
        let Some(outcome) = outcome else { break };
        let ack = match outcome {
            Ok(()) => message.ack().await,
            Err(job::JobError::Unreadable(reason)) => {
                tracing::error!(%reason, "unreadable media job; dropped");
                message.ack_with(AckKind::Term).await
            }
            Err(job::JobError::Retry(reason)) => {
                tracing::warn!(%reason, "media job failed; retrying later");
                message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await
            }
        };
        if let Err(error) = ack {
            tracing::warn!(%error, "failed to ack a media job; it will be redelivered");
        }
    }
    drop(messages);
    // Aborted, not awaited: the loop can also end without shutdown (the consumer's stream closed).
    backlog_task.abort();
    nats.flush().await.context("failed to flush NATS")?;
    tracing::info!("media worker stopped");
    Ok(())
}
