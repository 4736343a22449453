//! Names and definitions of push notifications: the job work queue, its consumer, the dead-letter stream and the push buckets.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};

use crate::{Id, StorageSettings};

/// Work queue of push jobs: `push.<user>.<device>.<conv>`, one message per burst, removed when acked.
pub const PUSH_STREAM: &str = "PUSH";
/// Durable consumer the push workers share.
pub const PUSH_CONSUMER: &str = "push";
/// Jobs that failed their last attempt, with the reason in [`HEADER_PUSH_FAILURE_REASON`]: `push-dead.<user>.<device>.<conv>`.
pub const PUSH_DEAD_LETTER_STREAM: &str = "PUSH_DEAD";
/// Push registrations: `<user>.<device>` → provider and token or Web Push subscription.
pub const PUSH_DEVICES_BUCKET: &str = "push-devices";
/// Notification settings: `<user>` → do-not-disturb; `<user>.<conv>` → muted until.
pub const NOTIFICATION_SETTINGS_BUCKET: &str = "notification-settings";
/// Bursts waiting to be pushed: `<user>.<device>.<conv>` exists from a burst's first job until a worker takes it.
pub const PUSH_PENDING_BUCKET: &str = "push-pending";

/// Header on dead letters: why the last attempt failed.
pub const HEADER_PUSH_FAILURE_REASON: &str = "Natter-Push-Failure";
/// Header on dead letters: the provider that refused.
pub const HEADER_PUSH_PROVIDER: &str = "Natter-Push-Provider";

/// A pending marker outlives a fanout that died between writing it and publishing its job by at most this.
pub const PUSH_PENDING_MAX_AGE: Duration = Duration::from_secs(600);
/// Dead letters are kept this long for an operator to look at.
pub const PUSH_DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

const PUSH_SUBJECT_PREFIX: &str = "push.";
const PUSH_DEAD_LETTER_SUBJECT_PREFIX: &str = "push-dead.";

/// `push.<user>.<device>.<conv>`: the job that notifies one device of a burst in one conversation.
pub fn push_job_subject(user: &Id, device: &Id, conversation: &Id) -> String {
    format!("{PUSH_SUBJECT_PREFIX}{user}.{device}.{conversation}")
}

/// `push-dead.<user>.<device>.<conv>`: where a job goes after its last failed attempt.
pub fn push_dead_letter_subject(user: &Id, device: &Id, conversation: &Id) -> String {
    format!("{PUSH_DEAD_LETTER_SUBJECT_PREFIX}{user}.{device}.{conversation}")
}

/// `<user>.<device>` in [`PUSH_DEVICES_BUCKET`].
pub fn push_device_key(user: &Id, device: &Id) -> String {
    format!("{user}.{device}")
}

/// Filter for every registration of one user in [`PUSH_DEVICES_BUCKET`].
pub fn push_devices_of_user_filter(user: &Id) -> String {
    format!("{user}.*")
}

/// Splits a [`PUSH_DEVICES_BUCKET`] key into (user, device).
pub fn parse_push_device_key(key: &str) -> Option<(Id, Id)> {
    let (user, device) = key.split_once('.')?;
    Some((Id::parse(user).ok()?, Id::parse(device).ok()?))
}

/// `<user>` in [`NOTIFICATION_SETTINGS_BUCKET`]: the user's do-not-disturb.
pub fn do_not_disturb_key(user: &Id) -> String {
    user.to_string()
}

/// `<user>.<conv>` in [`NOTIFICATION_SETTINGS_BUCKET`]: the user's mute of one conversation.
pub fn conversation_mute_key(user: &Id, conversation: &Id) -> String {
    format!("{user}.{conversation}")
}

/// `<user>.<device>.<conv>` in [`PUSH_PENDING_BUCKET`].
pub fn push_pending_key(user: &Id, device: &Id, conversation: &Id) -> String {
    format!("{user}.{device}.{conversation}")
}

/// The job stream: a work queue, so an acked job is gone and each job goes to one worker.
pub fn push_stream_config(settings: &StorageSettings) -> stream::Config {
    stream::Config {
        name: PUSH_STREAM.to_owned(),
        description: Some("push jobs: push.<user>.<device>.<conversation>".to_owned()),
        subjects: vec![format!("{PUSH_SUBJECT_PREFIX}*.*.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: settings.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Dead letters: a limits stream, so they stay readable after an operator looked at them.
pub fn push_dead_letter_stream_config(settings: &StorageSettings) -> stream::Config {
    stream::Config {
        name: PUSH_DEAD_LETTER_STREAM.to_owned(),
        description: Some("push jobs that failed their last attempt: push-dead.<user>.<device>.<conversation>".to_owned()),
        subjects: vec![format!("{PUSH_DEAD_LETTER_SUBJECT_PREFIX}*.*.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: PUSH_DEAD_LETTER_MAX_AGE,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// The push workers' shared consumer. Redelivery is driven by the worker's naks (with its own
/// backoff or the provider's `Retry-After`); `max_deliver` bounds the attempts, and the worker
/// dead-letters a job itself on the last one, because JetStream would leave it in the queue.
pub fn push_consumer_config(ack_wait: Duration, max_attempts: i64) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(PUSH_CONSUMER.to_owned()),
        description: Some("push: jobs -> FCM, APNs, Web Push".to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: max_attempts,
        max_ack_pending: 1024,
        ..Default::default()
    }
}

/// The push buckets: registrations, notification settings, pending bursts.
pub fn push_bucket_configs(settings: &StorageSettings) -> Vec<kv::Config> {
    vec![
        crate::layout::bucket(PUSH_DEVICES_BUCKET, "push registrations: <user>.<device> -> provider, token", Duration::ZERO, settings),
        crate::layout::bucket(NOTIFICATION_SETTINGS_BUCKET, "<user> -> do not disturb; <user>.<conversation> -> muted until", Duration::ZERO, settings),
        crate::layout::bucket(PUSH_PENDING_BUCKET, "bursts waiting for a push: <user>.<device>.<conversation>", PUSH_PENDING_MAX_AGE, settings),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Id {
        Id::parse(text).expect("test ids are valid")
    }

    #[test]
    fn names_are_spelled_as_documented() {
        assert_eq!(push_job_subject(&id("bob"), &id("phone"), &id("g-1")), "push.bob.phone.g-1");
        assert_eq!(push_dead_letter_subject(&id("bob"), &id("phone"), &id("g-1")), "push-dead.bob.phone.g-1");
        assert_eq!(parse_push_device_key(&push_device_key(&id("bob"), &id("phone"))), Some((id("bob"), id("phone"))));
        assert_eq!(parse_push_device_key("bob"), None);
        assert_ne!(do_not_disturb_key(&id("bob")), conversation_mute_key(&id("bob"), &id("c")));
    }
}
