//! Signed downloads of scanned media and thumbnails, cacheable: `ETag`, `Cache-Control: private, max-age`, `Range` → 206, `If-None-Match` → 304.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::{DownloadGrantQuery, ErrorBody, MediaStatus};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiPath, ApiQuery};
use crate::media_urls::DownloadKind;
use crate::state::AppState;

/// Downloads are read in object-store-sized chunks.
const DOWNLOAD_CHUNK_BYTES: usize = 128 * 1024;

/// Downloads a scanned media through the signed URL `GET /v1/media/{id}` handed out.
#[utoipa::path(get, path = "/v1/media/{id}/file", tag = "media", params(("id" = String, Path, description = "The media id", pattern = "^[A-Za-z0-9_-]{1,64}$"), DownloadGrantQuery), responses(
    (status = 200, description = "The bytes, with `ETag` and `Cache-Control: private, max-age`", content_type = "application/octet-stream", body = crate::openapi::Bytes),
    (status = 206, description = "The requested `Range`", content_type = "application/octet-stream", body = crate::openapi::Bytes),
    (status = 304, description = "`If-None-Match` names the current `ETag`"),
    (status = 400, description = "`invalid`: a bad media or reader id", body = ErrorBody),
    (status = 403, description = "`forbidden`: a bad or expired signature, or the reader lost access", body = ErrorBody),
    (status = 404, description = "`not_found`: not ready, or no thumbnail", body = ErrorBody),
    (status = 416, description = "An unsatisfiable or multi-part `Range`"),
))]
pub async fn file(state: State<AppState>, id: ApiPath<String>, query: ApiQuery<DownloadGrantQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    download(state, id, query, headers, DownloadKind::File).await
}

/// Downloads a media's thumbnail through the signed URL `GET /v1/media/{id}` handed out.
#[utoipa::path(get, path = "/v1/media/{id}/thumbnail", tag = "media", params(("id" = String, Path, description = "The media id", pattern = "^[A-Za-z0-9_-]{1,64}$"), DownloadGrantQuery), responses(
    (status = 200, description = "The bytes, with `ETag` and `Cache-Control: private, max-age`", content_type = "application/octet-stream", body = crate::openapi::Bytes),
    (status = 206, description = "The requested `Range`", content_type = "application/octet-stream", body = crate::openapi::Bytes),
    (status = 304, description = "`If-None-Match` names the current `ETag`"),
    (status = 400, description = "`invalid`: a bad media or reader id", body = ErrorBody),
    (status = 403, description = "`forbidden`: a bad or expired signature, or the reader lost access", body = ErrorBody),
    (status = 404, description = "`not_found`: not ready, or no thumbnail", body = ErrorBody),
    (status = 416, description = "An unsatisfiable or multi-part `Range`"),
))]
pub async fn thumbnail(state: State<AppState>, id: ApiPath<String>, query: ApiQuery<DownloadGrantQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    download(state, id, query, headers, DownloadKind::Thumbnail).await
}

async fn download(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DownloadGrantQuery>,
    headers: HeaderMap,
    kind: DownloadKind,
) -> Result<Response, ApiError> {
    let media = parse_id("media id", &id)?;
    if !state.media_urls.verify_download(&media, kind, &query.reader, query.expires, &query.sig) {
        return Err(ApiError::forbidden("the download URL's signature does not match"));
    }
    let seconds_left = query.expires - OffsetDateTime::now_utc().unix_timestamp();
    if seconds_left <= 0 {
        return Err(ApiError::forbidden("the download URL has expired"));
    }
    // Access is checked again now: a reader removed from the conversation loses the URLs they were given.
    let reader = parse_id("reader", &query.reader)?;
    let record = crate::media_api::readable_record(&state, &media, &reader).await?;
    // Only the record says a file is clean; the served bucket is never read for anything not ready.
    if record.status != MediaStatus::Ready {
        return Err(ApiError::not_found(format!("no downloadable media {media}")));
    }
    let (object_name, content_type) = match kind {
        DownloadKind::File => (subjects::media_object_name(&media), record.content_type.clone()),
        DownloadKind::Thumbnail => match &record.thumbnail {
            Some(thumbnail) => (subjects::media_thumbnail_object_name(&media), thumbnail.content_type.clone()),
            None => return Err(ApiError::not_found(format!("media {media} has no thumbnail"))),
        },
    };
    let object = state.media.objects.get(&object_name).await.map_err(|error| {
        tracing::warn!(%error, %media, "a ready media's object is missing");
        ApiError::not_found(format!("no downloadable media {media}"))
    })?;
    let info = object.info().clone();
    let size = info.size as u64;
    let etag = format!("\"{}\"", info.digest.as_deref().unwrap_or(&info.nuid).trim_start_matches("SHA-256="));
    let mut common = HeaderMap::new();
    common.insert(header::ETAG, header_value(&etag)?);
    common.insert(header::CACHE_CONTROL, header_value(&format!("private, max-age={seconds_left}"))?);
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if if_none_match_hits(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    common.insert(header::CONTENT_TYPE, header_value(&content_type)?);
    // Uploads are user content on our origin: never let a browser sniff a "text/plain" into HTML, and
    // hand anything but a re-encoded image over as a download rather than rendering it.
    common.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !content_type.starts_with("image/") {
        common.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    let range = match headers.get(header::RANGE).and_then(|value| value.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, size) {
            Some(range) => Some(range),
            None => {
                common.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}"))?);
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
            }
        },
    };
    let (status, start, length) = match range {
        Some((start, end)) => {
            common.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{size}"))?);
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    common.insert(header::CONTENT_LENGTH, header_value(&length.to_string())?);
    let mut reader = object;
    if start > 0 {
        // The object store reads forward only; skipping costs reading the skipped chunks.
        tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink())
            .await
            .map_err(|error| ApiError::new(schemas::ErrorCode::Unavailable, format!("failed to read media: {error}")))?;
    }
    let body = Body::from_stream(ReaderStream::with_capacity(reader.take(length), DOWNLOAD_CHUNK_BYTES));
    Ok((status, common, body).into_response())
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|_| ApiError::new(schemas::ErrorCode::Internal, "unrepresentable header"))
}

/// Whether `If-None-Match` names `etag` (weak or strong) or `*`: the client's copy is current.
pub(crate) fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == "*" || candidate == etag)
}

/// One `bytes=` range as inclusive (start, end) within `size`; `None` when unsatisfiable or unsupported
/// (several ranges are refused rather than answered as multipart).
pub fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().ok()?;
            if suffix == 0 {
                return None;
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    fn check(value: &str, expected: Option<(u64, u64)>) {
        assert_eq!(parse_range(value, 100), expected, "{value}");
    }

    #[test]
    fn byte_ranges() {
        check("bytes=0-9", Some((0, 9)));
        check("bytes=90-", Some((90, 99)));
        check("bytes=-10", Some((90, 99)));
        check("bytes=95-200", Some((95, 99)));
        check("bytes=100-", None);
        check("bytes=5-2", None);
        check("bytes=0-1,5-6", None);
        check("items=0-1", None);
    }
}
