//! Queues push jobs for one log entry: every registered device of every member with no live connection, unless they silenced it; never the sender's.
//!
//! A member the message mentions is pushed even in a conversation they muted, but never during
//! do-not-disturb. In a muted conversation only a mention starts a burst; later messages that find
//! it pending only join it, as always.
//!
//! Bursts coalesce: a `push-pending` marker per (user, device, conversation) is created with the
//! burst's first job, and later messages that find it only join the burst. The push worker waits
//! out the coalescing window, removes the marker, and then reads the conversation's state, so one
//! notification carries the count of everything that arrived meanwhile.
//!
//! Pushes are a side channel of the log, so a failure here is logged and the entry still acked:
//! retrying the entry would re-publish its deliveries to every member to save one notification.

use futures::StreamExt;
use schemas::{Message, PushJob};
use store::{MemberSet, PushStorage, RegisteredUsers, StoreError};
use subjects::Id;
use time::OffsetDateTime;

use crate::presence_probe::PresenceProbe;

/// Offline members handled at once for one message (registrations and settings are KV reads).
const MEMBERS_IN_FLIGHT: usize = 16;

pub struct PushEnqueuer {
    pub push: PushStorage,
    pub presence: PresenceProbe,
    /// Checked first: members who never registered a device cost nothing more.
    pub registered: std::sync::Arc<RegisteredUsers>,
}

impl PushEnqueuer {
    /// Queues this message's pushes; logs and gives up on failure (see the module comment).
    pub async fn enqueue_for(&self, message: &Message, members: &MemberSet, request_id: Option<&str>) {
        let (Ok(conversation), Ok(sender)) = (Id::parse(&message.conversation_id), Id::parse(&message.sender)) else {
            return;
        };
        let recipients: Vec<Id> = members.keys().filter(|user| **user != sender && self.registered.has_registrations(user)).cloned().collect();
        if recipients.is_empty() {
            return;
        }
        let live = match self.presence.live_users(&recipients).await {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(%error, conversation = %conversation, seq = message.seq, "presence unknown; no pushes for this message");
                return;
            }
        };
        let offline = recipients.into_iter().filter(|user| !live.contains(user));
        let outcomes: Vec<_> = futures::stream::iter(offline)
            .map(|user| {
                let conversation = &conversation;
                let mentioned = message.mentions.iter().any(|mentioned| mentioned == user.as_str());
                async move { (self.enqueue_for_user(&user, conversation, message.seq, mentioned, request_id).await, user) }
            })
            .buffer_unordered(MEMBERS_IN_FLIGHT)
            .collect()
            .await;
        for (outcome, user) in outcomes {
            if let Err(error) = outcome {
                tracing::warn!(%error, %user, conversation = %conversation, seq = message.seq, "failed to queue pushes");
            }
        }
    }

    async fn enqueue_for_user(&self, user: &Id, conversation: &Id, seq: u64, mentioned: bool, request_id: Option<&str>) -> Result<(), StoreError> {
        let registrations = self.push.registrations_of(user).await?;
        if registrations.is_empty() {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        if !self.push.silence_of(user, conversation, now).await?.allows(mentioned) {
            return Ok(());
        }
        for (device, _) in registrations {
            if !self.push.begin_burst(user, &device, conversation).await? {
                continue;
            }
            let job = PushJob {
                v: 1,
                conversation_id: conversation.to_string(),
                user: user.to_string(),
                device: device.to_string(),
                seq,
                enqueued_at: now,
            };
            if let Err(error) = self.push.enqueue(&job, user, &device, conversation, request_id).await {
                // Without its job the marker would swallow every later message until it expires.
                let _ = self.push.end_burst(user, &device, conversation).await;
                return Err(error);
            }
        }
        Ok(())
    }
}
