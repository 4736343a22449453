//! One upload job: scan, then (for images) decode, strip and thumbnail, then store the outcome and tell the uploader.

use std::panic::AssertUnwindSafe;

use async_nats::jetstream::object_store::ObjectMetadata;
use schemas::{MediaJob, MediaRecord, MediaStatus, ServerFrame, ThumbnailInfo};
use store::MediaStorage;
use subjects::Id;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::images::{is_image, process_image, ImageLimits, ProcessedImage};
use crate::scan::{Scanner, Verdict, SCAN_CHUNK_BYTES};

pub enum JobError {
    /// The job can never succeed (garbage payload): drop it.
    Unreadable(String),
    /// A passing failure: offer the job again later.
    Retry(String),
}

fn retry(context: &str) -> impl FnOnce(String) -> JobError + '_ {
    move |error| JobError::Retry(format!("{context}: {error}"))
}

pub struct JobRunner {
    pub nats: async_nats::Client,
    pub media: MediaStorage,
    pub scanner: Scanner,
    pub image_limits: ImageLimits,
}

/// What a finished job stores.
enum Outcome {
    Ready { content_type: String, size: u64, etag: String, thumbnail: Option<ThumbnailInfo> },
    Rejected(String),
}

impl JobRunner {
    pub async fn process(&self, payload: &[u8]) -> Result<(), JobError> {
        let job = MediaJob::from_bytes(payload).map_err(|error| JobError::Unreadable(error.to_string()))?;
        let media_id = Id::parse(&job.media_id).map_err(|error| JobError::Unreadable(error.to_string()))?;
        let Some(current) = self.media.record(&media_id).await.map_err(|error| JobError::Retry(error.to_string()))? else {
            return Err(JobError::Unreadable(format!("no record for media {media_id}")));
        };
        match current.record.status {
            // Finished by a worker that died before its ack: nothing left to do.
            MediaStatus::Ready | MediaStatus::Rejected => return Ok(()),
            MediaStatus::Uploading => return Err(JobError::Retry(format!("media {media_id} is still uploading"))),
            MediaStatus::Pending => {}
        }
        let outcome = self.scan_and_prepare(&media_id, &current.record).await?;
        let mut record = current.record.clone();
        match outcome {
            Outcome::Ready { content_type, size, etag, thumbnail } => {
                record.status = MediaStatus::Ready;
                record.content_type = content_type;
                record.size = size;
                record.etag = Some(etag);
                record.thumbnail = thumbnail;
            }
            Outcome::Rejected(reason) => {
                tracing::info!(media = %media_id, %reason, "media rejected");
                record.status = MediaStatus::Rejected;
                record.reason = Some(reason);
            }
        }
        self.media.update_record(&record, current.revision).await.map_err(|error| JobError::Retry(error.to_string()))?;
        if let Err(error) = self.media.quarantine.delete(subjects::media_object_name(&media_id)).await {
            tracing::warn!(%error, media = %media_id, "failed to delete a quarantined upload; it expires with the bucket's max age");
        }
        if let Ok(uploader) = Id::parse(&record.uploader) {
            let frame = ServerFrame::Media { media_id: record.id.clone(), status: record.status, reason: record.reason.clone() };
            if let Err(error) = store::publish_event(&self.nats, &uploader, &frame).await {
                tracing::warn!(%error, "failed to tell the uploader; GET /v1/media/{{id}} still has the status");
            }
        }
        Ok(())
    }

    async fn scan_and_prepare(&self, media_id: &Id, record: &MediaRecord) -> Result<Outcome, JobError> {
        let object_name = subjects::media_object_name(media_id);
        let mut object = self.media.quarantine.get(&object_name).await.map_err(|error| retry("failed to open the upload")(error.to_string()))?;
        if !is_image(&record.content_type) {
            // Streamed end to end: files up to the upload cap never sit in memory whole.
            let verdict = self
                .scanner
                .scan_stream(ReaderStream::with_capacity(object, SCAN_CHUNK_BYTES))
                .await
                .map_err(|error| JobError::Retry(error.to_string()))?;
            if let Some(rejection) = rejection_of(verdict) {
                return Ok(rejection);
            }
            let mut object = self.media.quarantine.get(&object_name).await.map_err(|error| retry("failed to reopen the upload")(error.to_string()))?;
            let served = self
                .media
                .objects
                .put(ObjectMetadata { name: object_name, ..Default::default() }, &mut object)
                .await
                .map_err(|error| retry("failed to store the scanned file")(error.to_string()))?;
            return Ok(Outcome::Ready {
                content_type: record.content_type.clone(),
                size: served.size as u64,
                etag: served.digest.unwrap_or(served.nuid),
                thumbnail: None,
            });
        }
        // Images are decoded whole anyway, and are bounded by the upload cap.
        let mut content = Vec::with_capacity(record.size as usize);
        object.read_to_end(&mut content).await.map_err(|error| retry("failed to read the upload")(error.to_string()))?;
        let verdict = self.scanner.scan_bytes(&content).await.map_err(|error| JobError::Retry(error.to_string()))?;
        if let Some(rejection) = rejection_of(verdict) {
            return Ok(rejection);
        }
        let limits = self.image_limits.clone();
        let processed = tokio::task::spawn_blocking(move || std::panic::catch_unwind(AssertUnwindSafe(|| process_image(&content, &limits))))
            .await
            .map_err(|error| JobError::Retry(format!("image task failed: {error}")))?;
        let processed: ProcessedImage = match processed {
            Ok(Ok(processed)) => processed,
            Ok(Err(reason)) => return Ok(Outcome::Rejected(reason)),
            Err(_) => return Ok(Outcome::Rejected("the image decoder crashed on this file".to_owned())),
        };
        let thumbnail_name = subjects::media_thumbnail_object_name(media_id);
        let thumbnail = &processed.thumbnail;
        self.media
            .objects
            .put(ObjectMetadata { name: thumbnail_name, ..Default::default() }, &mut thumbnail.bytes.as_slice())
            .await
            .map_err(|error| retry("failed to store the thumbnail")(error.to_string()))?;
        let original = &processed.original;
        let served = self
            .media
            .objects
            .put(ObjectMetadata { name: object_name, ..Default::default() }, &mut original.bytes.as_slice())
            .await
            .map_err(|error| retry("failed to store the image")(error.to_string()))?;
        Ok(Outcome::Ready {
            content_type: original.content_type.to_owned(),
            size: served.size as u64,
            etag: served.digest.unwrap_or(served.nuid),
            thumbnail: Some(ThumbnailInfo {
                width: thumbnail.width,
                height: thumbnail.height,
                content_type: thumbnail.content_type.to_owned(),
                size: thumbnail.bytes.len() as u64,
            }),
        })
    }
}

fn rejection_of(verdict: Verdict) -> Option<Outcome> {
    match verdict {
        Verdict::Clean => None,
        Verdict::Infected(signature) => Some(Outcome::Rejected(format!("malware found: {signature}"))),
        Verdict::TooLargeToScan => Some(Outcome::Rejected("too large to scan".to_owned())),
    }
}
