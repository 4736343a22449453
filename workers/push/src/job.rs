//! One push job: wait out the coalescing window, close the burst, read what is unread, send through the device's provider, and decide ack, retry or dead letter.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use schemas::{fold_message, Message, PushJob, PushNotification, PushProvider, StoredMessage};
use store::{LogReader, Mentions, PushStorage, Receipts, StoreError};
use subjects::Id;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::metrics::{PushMetrics, PushOutcome};
use crate::providers::{Delivery, Providers, SendOutcome};
use crate::retry::backoff_delay;

/// Longest text put into a notification that may carry content; the app shows the rest after opening.
const MAX_PREVIEW_CHARS: usize = 200;

pub struct JobRunner {
    pub push: PushStorage,
    pub reader: LogReader,
    pub receipts: Receipts,
    pub mentions: Mentions,
    pub providers: Providers,
    pub metrics: Arc<PushMetrics>,
    pub coalesce_window: Duration,
    pub content_free: bool,
    pub max_attempts: u64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// What to tell JetStream about one delivery of a job.
enum Verdict {
    Done,
    RetryAfter(Duration),
    /// Leave it unacked: shutdown came first, and another worker takes it after `ack_wait`.
    Abandon,
}

/// A failure before any provider was asked (storage, a bad job), for the same retry rules.
struct Failure {
    provider: Option<PushProvider>,
    outcome: SendOutcome,
}

impl JobRunner {
    /// Runs one delivery of a job to its end, acking, naking or dead-lettering it.
    pub async fn run(&self, message: async_nats::jetstream::Message, shutdown: &CancellationToken) {
        let attempt = message.info().map(|info| u64::try_from(info.delivered).unwrap_or(1)).unwrap_or(1);
        let verdict = match PushJob::from_bytes(&message.payload) {
            Ok(job) => self.attempt(&job, attempt, shutdown).await,
            Err(error) => {
                tracing::error!(%error, subject = %message.subject, "unreadable push job; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let ack = match verdict {
            Verdict::Done => message.ack().await,
            Verdict::RetryAfter(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Verdict::Abandon => return,
        };
        if let Err(error) = ack {
            tracing::warn!(%error, "failed to answer a push job; it will be redelivered");
        }
    }

    async fn attempt(&self, job: &PushJob, attempt: u64, shutdown: &CancellationToken) -> Verdict {
        if attempt == 1 {
            let due = job.enqueued_at + self.coalesce_window;
            let wait = Duration::try_from(due - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = shutdown.cancelled() => return Verdict::Abandon,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match self.send(job).await {
            Ok(()) => Verdict::Done,
            Err(failure) => self.after_failure(job, attempt, failure).await,
        }
    }

    async fn send(&self, job: &PushJob) -> Result<(), Failure> {
        let ids = (Id::parse(&job.user), Id::parse(&job.device), Id::parse(&job.conversation_id));
        let (Ok(user), Ok(device), Ok(conversation)) = ids else {
            return Err(Failure { provider: None, outcome: SendOutcome::Rejected("job has invalid ids".to_owned()) });
        };
        let storage_failure = |error: StoreError| Failure { provider: None, outcome: SendOutcome::Retry { reason: error.to_string(), retry_after: None } };
        // Before reading the unread count: a message appended after this starts a new burst, one
        // appended before it is in the count. Either way no message is left without a push.
        self.push.end_burst(&user, &device, &conversation).await.map_err(storage_failure)?;
        let Some(registration) = self.push.registration(&user, &device).await.map_err(storage_failure)? else {
            tracing::debug!(%user, %device, "device unregistered since the job was queued");
            return Ok(());
        };
        let provider = registration.record.provider;
        let failure = |outcome: SendOutcome| Failure { provider: Some(provider), outcome };
        let Some((_, latest)) = self.reader.last_entry(&conversation).await.map_err(storage_failure)? else {
            return Ok(());
        };
        let read = self.receipts.watermarks(&conversation, &user).await.map_err(storage_failure)?.read;
        let count = latest.message.seq.saturating_sub(read);
        if count == 0 {
            tracing::debug!(%user, %conversation, "already read on another device; no push");
            return Ok(());
        }
        // Read now, like the count: a mention anywhere in the burst (the one that began it in a muted
        // conversation, or one that joined) makes the notification say so. Only a label: unknown is none.
        let mentions = match self.mentions.unread_in(&user, &conversation, read).await {
            Ok(mentions) => mentions.min(count),
            Err(error) => {
                tracing::debug!(%error, %user, %conversation, "unread mentions unknown; the push does not mention them");
                0
            }
        };
        let latest_seq = latest.message.seq;
        let preview = self.preview_message(&conversation, latest, job.seq).await.map_err(storage_failure)?;
        // End-to-end encrypted messages carry only ciphertext; nothing else about them leaves either,
        // and a deleted message's words are gone from the preview as from history.
        let with_content = !self.content_free && preview.body.ciphertext.is_none();
        let notification = PushNotification {
            kind: PushNotification::MESSAGE_KIND.to_owned(),
            conversation_id: conversation.to_string(),
            count,
            seq: latest_seq,
            sender: with_content.then(|| preview.sender.clone()),
            text: (with_content && !preview.deleted).then(|| preview.body.text.clone().map(|text| text.chars().take(MAX_PREVIEW_CHARS).collect())).flatten(),
            mentions,
        };
        let Some(sender) = self.providers.sender(provider) else {
            return Err(failure(SendOutcome::Rejected(format!("{} is not configured on this worker", provider.as_str()))));
        };
        let delivery = Delivery { registration: &registration.record, notification: &notification, collapse_key: conversation.as_str() };
        match sender.send(&delivery).await {
            SendOutcome::Delivered => {
                self.metrics.record(provider, PushOutcome::Sent);
                Ok(())
            }
            SendOutcome::InvalidToken(reason) => {
                self.metrics.record(provider, PushOutcome::Failed);
                self.metrics.record(provider, PushOutcome::InvalidToken);
                tracing::info!(%user, %device, %reason, "provider says the token is invalid; registration removed");
                self.push.forget_invalid_registration(&user, &device, registration.revision).await.map_err(storage_failure)?;
                Ok(())
            }
            other => Err(failure(other)),
        }
    }

    /// The message a notification previews, as it now stands: the conversation's latest entry, or
    /// when that is an edit or reaction, the message that started the burst; edits and deletes folded in.
    async fn preview_message(&self, conversation: &Id, latest: StoredMessage, burst_seq: u64) -> Result<Message, StoreError> {
        let message = match latest.change {
            None => latest.message,
            Some(_) => match self.reader.get_by_seq(conversation, burst_seq).await? {
                Some(first) if first.change.is_none() => first.message,
                _ => latest.message,
            },
        };
        let state = self.reader.states().get(conversation, message.seq).await?;
        Ok(fold_message(message, state.as_ref().map(|(state, revision)| (state, *revision)), None))
    }

    async fn after_failure(&self, job: &PushJob, attempt: u64, failure: Failure) -> Verdict {
        if let Some(provider) = failure.provider {
            self.metrics.record(provider, PushOutcome::Failed);
        }
        let reason = match failure.outcome {
            SendOutcome::Retry { reason, retry_after } if attempt < self.max_attempts => {
                let delay = retry_after.unwrap_or_else(|| backoff_delay(attempt, self.backoff_base, self.backoff_max));
                tracing::info!(%reason, attempt, ?delay, user = %job.user, device = %job.device, "push failed; retrying");
                if let Some(provider) = failure.provider {
                    self.metrics.record(provider, PushOutcome::Retried);
                }
                return Verdict::RetryAfter(delay);
            }
            SendOutcome::Retry { reason, .. } => format!("gave up after {attempt} attempts: {reason}"),
            SendOutcome::Rejected(reason) | SendOutcome::InvalidToken(reason) => reason,
            SendOutcome::Delivered => return Verdict::Done,
        };
        let provider_name = failure.provider.map_or("none", PushProvider::as_str);
        match self.push.dead_letter(job, provider_name, &reason).await {
            Ok(()) => {
                tracing::warn!(%reason, user = %job.user, device = %job.device, conversation = %job.conversation_id, "push dead-lettered");
                if let Some(provider) = failure.provider {
                    self.metrics.record(provider, PushOutcome::DeadLettered);
                }
                Verdict::Done
            }
            Err(error) => {
                // Keep the job rather than lose it; JetStream offers it again up to max_deliver.
                tracing::warn!(%error, "failed to dead-letter a push job");
                Verdict::RetryAfter(self.backoff_base)
            }
        }
    }
}
