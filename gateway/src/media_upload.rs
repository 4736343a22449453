//! `PUT <upload_url>`: checks the signed grant, claims the media once, and streams the body into quarantine without buffering it.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::object_store::ObjectMetadata;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::TryStreamExt;
use schemas::{ErrorBody, MediaInfo, MediaRecord, MediaStatus, UploadGrantQuery};
use subjects::Id;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiPath, ApiQuery};
use crate::media_urls::UploadGrant;
use crate::state::AppState;

/// The signed `upload_url` of `POST /v1/media`: PUT exactly the granted number of bytes, once.
#[utoipa::path(put, path = "/v1/media/{id}/upload", tag = "media", params(("id" = String, Path, description = "The media id", pattern = "^[A-Za-z0-9_-]{1,64}$"), UploadGrantQuery),
    request_body(content = crate::openapi::Bytes, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Stored in quarantine; scanning starts", body = MediaInfo),
        (status = 400, description = "`invalid`: a bad id, fewer bytes than granted, or an interrupted upload", body = ErrorBody),
        (status = 403, description = "`forbidden`: a bad or expired signature, or the URL was already used", body = ErrorBody),
        (status = 413, description = "`too_large`: more bytes than granted", body = ErrorBody),
    ),
)]
pub async fn upload(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadGrantQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<MediaInfo>), ApiError> {
    let media = parse_id("media id", &id)?;
    let grant = UploadGrant { media: &media, uploader: &query.uploader, size: query.size, content_type: &query.content_type, expires: query.expires };
    if !state.media_urls.verify_upload(&grant, &query.sig) {
        return Err(ApiError::forbidden("the upload URL's signature does not match"));
    }
    if OffsetDateTime::now_utc().unix_timestamp() >= query.expires {
        return Err(ApiError::forbidden("the upload URL has expired"));
    }
    let declared_length = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > query.size) {
        return Err(ApiError::too_large(format!("the upload URL allows {} bytes", query.size)));
    }
    let record = MediaRecord {
        v: 1,
        id: media.to_string(),
        uploader: query.uploader.clone(),
        content_type: query.content_type.clone(),
        size: query.size,
        status: MediaStatus::Uploading,
        reason: None,
        etag: None,
        thumbnail: None,
        created_at: OffsetDateTime::now_utc(),
    };
    // The claim is the replay guard: a second PUT to the same URL finds the record and is refused.
    let claim_revision = state.media.claim_upload(&record).await?;
    if let Err(error) = store_quarantined(&state, &media, query.size, body).await {
        let _ = state.media.quarantine.delete(subjects::media_object_name(&media)).await;
        if let Err(release_error) = state.media.release_upload(&media).await {
            tracing::warn!(%release_error, %media, "failed to release a failed upload's claim");
        }
        return Err(error);
    }
    let pending = MediaRecord { status: MediaStatus::Pending, ..record };
    state.media.update_record(&pending, claim_revision).await?;
    // Pending before the job exists, so a worker never finds a job whose record still says uploading.
    state.media.publish_job(&media).await?;
    let info = MediaInfo {
        media_id: pending.id,
        status: MediaStatus::Pending,
        content_type: pending.content_type,
        size: pending.size,
        reason: None,
        url: None,
        thumbnail_url: None,
        thumbnail: None,
    };
    Ok((StatusCode::CREATED, Json(info)))
}

async fn store_quarantined(state: &AppState, media: &Id, declared_size: u64, body: Body) -> Result<(), ApiError> {
    let chunks = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = SizeCappedReader { inner: StreamReader::new(chunks), limit: declared_size, read: 0 };
    let stored = state.media.quarantine.put(ObjectMetadata { name: subjects::media_object_name(media), ..Default::default() }, &mut reader).await;
    if reader.read > declared_size {
        return Err(ApiError::too_large(format!("the upload URL allows {declared_size} bytes")));
    }
    match stored {
        Ok(info) if info.size as u64 == declared_size => Ok(()),
        Ok(info) => Err(ApiError::invalid(format!("received {} bytes; the upload URL was for {declared_size}", info.size))),
        Err(error) => {
            tracing::warn!(%error, %media, "upload failed");
            Err(ApiError::invalid("the upload was interrupted; retry with the same URL"))
        }
    }
}

/// Counts bytes and fails the read as soon as the body goes past the declared size, so an oversized
/// upload stops early instead of filling the store.
struct SizeCappedReader<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for SizeCappedReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(context, buffer);
        if let Poll::Ready(Ok(())) = &poll {
            self.read += (buffer.filled().len() - before) as u64;
            if self.read > self.limit {
                return Poll::Ready(Err(std::io::Error::other("upload is larger than declared")));
            }
        }
        poll
    }
}
