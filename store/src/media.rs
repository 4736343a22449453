//! Media in JetStream: the record bucket, the quarantine and served object stores, and the upload job stream.

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use schemas::{MediaJob, MediaRecord, MediaShareRecord};
use subjects::{Id, Provisioning, StorageSettings};

use crate::error::{from_nats, StoreError};

/// Handles to everything media; cheap to clone. Gateways and media workers both provision it.
#[derive(Clone)]
pub struct MediaStorage {
    pub jetstream: jetstream::Context,
    pub records: kv::Store,
    pub quarantine: ObjectStore,
    pub objects: ObjectStore,
    client: async_nats::Client,
}

/// A record and the revision it was read at, for compare-and-set updates.
pub struct VersionedMediaRecord {
    pub record: MediaRecord,
    pub revision: u64,
}

impl MediaStorage {
    /// Creates or updates the stream, bucket and object stores (safe from every process at every start), or only opens them.
    pub async fn provision(client: async_nats::Client, settings: &StorageSettings) -> Result<MediaStorage, StoreError> {
        let jetstream = jetstream::new(client.clone());
        if settings.provisioning == Provisioning::OpenExisting {
            let open_objects = |bucket: &'static str| {
                let jetstream = jetstream.clone();
                async move { jetstream.get_object_store(bucket).await.map_err(|error| crate::provision::not_provisioned(bucket, error)) }
            };
            let records = jetstream
                .get_key_value(subjects::MEDIA_RECORDS_BUCKET)
                .await
                .map_err(|error| crate::provision::not_provisioned(subjects::MEDIA_RECORDS_BUCKET, error))?;
            let quarantine = open_objects(subjects::MEDIA_QUARANTINE_OBJECTS).await?;
            let objects = open_objects(subjects::MEDIA_OBJECTS).await?;
            return Ok(MediaStorage { jetstream, records, quarantine, objects, client });
        }
        jetstream
            .create_or_update_stream(subjects::media_jobs_stream_config(settings))
            .await
            .map_err(|error| from_nats("failed to create or update the media job stream", error))?;
        let records = jetstream
            .create_or_update_key_value(subjects::media_records_bucket_config(settings))
            .await
            .map_err(|error| from_nats("failed to create or update the media bucket", error))?;
        let quarantine = open_object_store(&jetstream, subjects::media_quarantine_objects_config(settings)).await?;
        let objects = open_object_store(&jetstream, subjects::media_objects_config(settings)).await?;
        Ok(MediaStorage { jetstream, records, quarantine, objects, client })
    }

    /// Claims `media` for one upload: fails with `Forbidden` when a record exists (the URL was used already).
    pub async fn claim_upload(&self, record: &MediaRecord) -> Result<u64, StoreError> {
        let media = Id::parse(&record.id).map_err(|error| StoreError::Invalid(error.to_string()))?;
        match self.records.create(subjects::media_record_key(&media), record.to_bytes().into()).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(StoreError::Forbidden("this upload URL has already been used".to_owned()))
            }
            Err(error) => Err(from_nats("failed to claim the upload", error)),
        }
    }

    /// Forgets a claim whose upload failed, so the same URL may be retried until it expires.
    pub async fn release_upload(&self, media: &Id) -> Result<(), StoreError> {
        self.records.purge(subjects::media_record_key(media)).await.map_err(|error| from_nats("failed to release the upload", error))
    }

    pub async fn record(&self, media: &Id) -> Result<Option<VersionedMediaRecord>, StoreError> {
        let entry = self.records.entry(subjects::media_record_key(media)).await.map_err(|error| from_nats("failed to read a media record", error))?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let record = MediaRecord::from_bytes(&entry.value).map_err(StoreError::internal)?;
        Ok(Some(VersionedMediaRecord { record, revision: entry.revision }))
    }

    /// Writes `record` only if nobody changed it since `revision`; `Invalid` when someone did.
    pub async fn update_record(&self, record: &MediaRecord, revision: u64) -> Result<u64, StoreError> {
        let media = Id::parse(&record.id).map_err(|error| StoreError::Invalid(error.to_string()))?;
        self.records.update(subjects::media_record_key(&media), record.to_bytes().into(), revision).await.map_err(|error| {
            if error.kind() == kv::UpdateErrorKind::WrongLastRevision {
                StoreError::Invalid(format!("media {media} changed concurrently"))
            } else {
                from_nats("failed to update a media record", error)
            }
        })
    }

    /// Announces an upload to the media workers; deduplicated per media by JetStream.
    pub async fn publish_job(&self, media: &Id) -> Result<(), StoreError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, subjects::media_job_dedupe_id(media).as_str());
        let job = MediaJob { v: 1, media_id: media.to_string() };
        self.jetstream
            .publish_with_headers(subjects::media_uploaded_subject(), headers, job.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to publish a media job", error))?
            .await
            .map_err(|error| from_nats("failed to publish a media job", error))?;
        Ok(())
    }

    /// Records that `media` was sent in `conversation`, so its members may read it. Idempotent.
    pub async fn record_share(&self, media: &Id, conversation: &Id, share: &MediaShareRecord) -> Result<(), StoreError> {
        self.records
            .put(subjects::media_share_key(media, conversation), share.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to record where media was sent", error))?;
        Ok(())
    }

    /// Stops `conversation`'s members reading `media` (its message was deleted). Idempotent.
    pub async fn remove_share(&self, media: &Id, conversation: &Id) -> Result<(), StoreError> {
        self.records
            .delete(subjects::media_share_key(media, conversation))
            .await
            .map_err(|error| from_nats("failed to withdraw media from a conversation", error))?;
        Ok(())
    }

    /// Every conversation `media` was sent in.
    pub async fn shared_in(&self, media: &Id) -> Result<Vec<Id>, StoreError> {
        let entries = crate::kv_listing::list_entries(&self.client, &self.records, &subjects::media_shares_filter(media)).await?;
        Ok(entries.iter().filter_map(|(key, _)| subjects::conversation_of_media_share_key(key)).collect())
    }
}

async fn open_object_store(jetstream: &jetstream::Context, config: async_nats::jetstream::object_store::Config) -> Result<ObjectStore, StoreError> {
    let bucket = config.bucket.clone();
    match jetstream.get_object_store(&bucket).await {
        Ok(store) => Ok(store),
        Err(_) => match jetstream.create_object_store(config).await {
            Ok(store) => Ok(store),
            // Another process created it between our get and create.
            Err(_) => jetstream.get_object_store(&bucket).await.map_err(|error| from_nats(&format!("failed to open object store {bucket}"), error)),
        },
    }
}
