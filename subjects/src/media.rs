//! Names and definitions of the media pipeline: the upload job stream, its consumer, the record bucket and the object stores.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, object_store, stream};

use crate::{Id, StorageSettings};

/// Work queue of uploaded media waiting for a scan: one message per upload, removed when acked.
pub const MEDIA_JOBS_STREAM: &str = "MEDIA_JOBS";
/// Durable consumer the media workers share.
pub const MEDIA_CONSUMER: &str = "media";
/// Media records: `<media>` → uploader, type, size, status; `<media>.<conv>` → where it was sent.
pub const MEDIA_RECORDS_BUCKET: &str = "media";
/// Object store holding uploads until they are scanned; nothing here is ever served.
pub const MEDIA_QUARANTINE_OBJECTS: &str = "media-quarantine";
/// Object store of scanned, clean media and their thumbnails: the only one downloads read.
pub const MEDIA_OBJECTS: &str = "media";

/// Uploads that never get scanned (or the partial chunks of a refused upload) leave quarantine after this.
pub const MEDIA_QUARANTINE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const MEDIA_UPLOADED_SUBJECT: &str = "media.uploaded";

/// `media.uploaded`: where the gateway announces an upload that is waiting for a scan.
pub fn media_uploaded_subject() -> String {
    MEDIA_UPLOADED_SUBJECT.to_owned()
}

/// `<media>` in [`MEDIA_RECORDS_BUCKET`].
pub fn media_record_key(media: &Id) -> String {
    media.to_string()
}

/// `<media>.<conv>` in [`MEDIA_RECORDS_BUCKET`]: the media was sent in that conversation, so its members may read it.
pub fn media_share_key(media: &Id, conversation: &Id) -> String {
    format!("{media}.{conversation}")
}

/// Filter for every share key of one media in [`MEDIA_RECORDS_BUCKET`].
pub fn media_shares_filter(media: &Id) -> String {
    format!("{media}.*")
}

/// Recovers the conversation from a [`media_share_key`].
pub fn conversation_of_media_share_key(key: &str) -> Option<Id> {
    let (_, conversation) = key.split_once('.')?;
    Id::parse(conversation).ok()
}

/// Object name of the uploaded (quarantined) or served file.
pub fn media_object_name(media: &Id) -> String {
    media.to_string()
}

/// Object name of a served thumbnail, beside its file.
pub fn media_thumbnail_object_name(media: &Id) -> String {
    format!("{media}.thumbnail")
}

/// `Nats-Msg-Id` of an upload job: a retried announcement of the same upload is dropped by JetStream.
pub fn media_job_dedupe_id(media: &Id) -> String {
    format!("media:{media}")
}

/// The upload job stream: a work queue, so an acked job is gone and each job goes to one worker.
pub fn media_jobs_stream_config(settings: &StorageSettings) -> stream::Config {
    stream::Config {
        name: MEDIA_JOBS_STREAM.to_owned(),
        description: Some("media uploads waiting for a scan: media.uploaded".to_owned()),
        subjects: vec![MEDIA_UPLOADED_SUBJECT.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: settings.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The media workers' shared durable consumer; `ack_wait` is how long a dead worker's job waits before another takes it.
pub fn media_consumer_config(ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(MEDIA_CONSUMER.to_owned()),
        description: Some("media: scan, thumbnail, publish".to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: 256,
        ..Default::default()
    }
}

/// The media record bucket.
pub fn media_records_bucket_config(settings: &StorageSettings) -> kv::Config {
    kv::Config {
        bucket: MEDIA_RECORDS_BUCKET.to_owned(),
        description: "media: <media> -> record, <media>.<conversation> -> shared".to_owned(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The quarantine object store: uploads expire from it, scanned or not.
pub fn media_quarantine_objects_config(settings: &StorageSettings) -> object_store::Config {
    object_store::Config {
        bucket: MEDIA_QUARANTINE_OBJECTS.to_owned(),
        description: Some("uploads waiting for a scan; never served".to_owned()),
        max_age: MEDIA_QUARANTINE_MAX_AGE,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The served object store.
pub fn media_objects_config(settings: &StorageSettings) -> object_store::Config {
    object_store::Config {
        bucket: MEDIA_OBJECTS.to_owned(),
        description: Some("scanned media and thumbnails".to_owned()),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}
