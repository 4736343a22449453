//! `POST /v1/media` (upload grants), `GET /v1/media/{id}` (metadata with signed URLs), and the media check of the send path.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use schemas::{ErrorBody, CreateMediaRequest, CreateMediaResponse, MediaInfo, MediaRecord, MediaShareRecord, MediaStatus};
use subjects::Id;
use time::OffsetDateTime;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiJson, ApiPath, Caller};
use crate::media_urls::{DownloadKind, UploadGrant};
use crate::state::AppState;

/// An upload grant: PUT the bytes to `upload_url` before `expires_at`.
#[utoipa::path(post, path = "/v1/media", tag = "media", security(("bearer" = [])), request_body = CreateMediaRequest, responses(
    (status = 201, description = "The grant", body = CreateMediaResponse),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
pub async fn create_upload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Caller(caller): Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateMediaRequest>,
) -> Result<(StatusCode, Json<CreateMediaResponse>), ApiError> {
    let settings = &state.config.media;
    if request.size == 0 {
        return Err(ApiError::invalid("size must be at least one byte"));
    }
    if request.size > settings.max_upload_bytes {
        return Err(ApiError::too_large(format!("size is {} bytes; the limit is {}", request.size, settings.max_upload_bytes)));
    }
    if !settings.allowed_content_types.contains(&request.content_type) {
        return Err(ApiError::invalid(format!("content_type must be one of {}", settings.allowed_content_types.join(", "))));
    }
    // Uploads are the costliest request (storage, a virus scan, thumbnails): limited at the grant.
    state.rate_limiter.check(crate::rate_limit::LimitedAction::Upload, &caller, peer.ip()).await?;
    let media = Id::parse(&ulid::Ulid::new().to_string()).expect("a ULID is a valid id");
    let expires_at = OffsetDateTime::now_utc() + settings.upload_url_ttl;
    let expires = expires_at.unix_timestamp();
    let grant = UploadGrant { media: &media, uploader: caller.as_str(), size: request.size, content_type: &request.content_type, expires };
    let signature = state.media_urls.sign_upload(&grant);
    // Every value here is an id, a number or an allow-listed type: nothing needs percent-encoding.
    let upload_url = format!(
        "{}/v1/media/{media}/upload?uploader={caller}&size={}&content_type={}&expires={expires}&sig={signature}",
        base_url(&state, &headers),
        request.size,
        request.content_type
    );
    let expires_at = OffsetDateTime::from_unix_timestamp(expires).expect("a timestamp we just made");
    Ok((StatusCode::CREATED, Json(CreateMediaResponse { media_id: media.to_string(), upload_url, expires_at })))
}

/// A media's status, with signed, expiring download URLs once it is ready.
#[utoipa::path(get, path = "/v1/media/{id}", tag = "media", security(("bearer" = [])), params(("id" = String, Path, description = "The media id", pattern = "^[A-Za-z0-9_-]{1,64}$")), responses(
    (status = 200, description = "The media", body = MediaInfo),
    (status = 400, description = "`invalid`: a bad media id", body = ErrorBody),
    (status = 403, description = "`forbidden`: not the uploader nor a member of a conversation it was sent in (unknown media included)", body = ErrorBody),
))]
pub async fn metadata(State(state): State<AppState>, Caller(caller): Caller, headers: HeaderMap, ApiPath(id): ApiPath<String>) -> Result<Json<MediaInfo>, ApiError> {
    let media = parse_id("media id", &id)?;
    let record = readable_record(&state, &media, &caller).await?;
    let base = base_url(&state, &headers);
    let expires = (OffsetDateTime::now_utc() + state.config.media.download_url_ttl).unix_timestamp();
    let signed_url = |kind: DownloadKind| {
        let signature = state.media_urls.sign_download(&media, kind, caller.as_str(), expires);
        format!("{base}/v1/media/{media}/{}?reader={caller}&expires={expires}&sig={signature}", kind.path_segment())
    };
    let ready = record.status == MediaStatus::Ready;
    Ok(Json(MediaInfo {
        media_id: record.id.clone(),
        status: record.status.public(),
        content_type: record.content_type.clone(),
        size: record.size,
        reason: record.reason.clone(),
        url: ready.then(|| signed_url(DownloadKind::File)),
        thumbnail_url: (ready && record.thumbnail.is_some()).then(|| signed_url(DownloadKind::Thumbnail)),
        thumbnail: record.thumbnail.clone(),
    }))
}

/// The record, if `caller` uploaded it or belongs to a conversation it was sent in; `forbidden` otherwise
/// (unknown media included, so ids cannot be probed).
pub async fn readable_record(state: &AppState, media: &Id, caller: &Id) -> Result<MediaRecord, ApiError> {
    let forbidden = || ApiError::forbidden(format!("you cannot read media {media}"));
    let Some(current) = state.media.record(media).await? else {
        return Err(forbidden());
    };
    if current.record.uploader == caller.as_str() {
        return Ok(current.record);
    }
    for conversation in state.media.shared_in(media).await? {
        if state.membership.role_of(&conversation, caller).await?.is_some() {
            return Ok(current.record);
        }
    }
    Err(forbidden())
}

/// A message may carry only the sender's own media, and only once it is ready: members then never see a
/// media message they cannot open, and nothing unscanned is ever referenced. Records where it was sent.
pub async fn require_sendable_media(state: &AppState, sender: &Id, conversation: &Id, media_id: &str) -> Result<(), ApiError> {
    let media = parse_id("media_id", media_id)?;
    let Some(current) = state.media.record(&media).await? else {
        return Err(ApiError::invalid(format!("no media {media}")));
    };
    if current.record.uploader != sender.as_str() {
        return Err(ApiError::forbidden(format!("media {media} was uploaded by someone else")));
    }
    match current.record.status {
        MediaStatus::Ready => {}
        MediaStatus::Uploading | MediaStatus::Pending => {
            return Err(ApiError::invalid(format!("media {media} is still being scanned; send it once its status is ready")));
        }
        MediaStatus::Rejected => return Err(ApiError::invalid(format!("media {media} was rejected and cannot be sent"))),
    }
    // Before the append, so a member who sees the message can always open the media.
    let share = MediaShareRecord { v: 1, sender: sender.to_string(), shared_at: OffsetDateTime::now_utc() };
    state.media.record_share(&media, conversation, &share).await?;
    Ok(())
}

/// The configured public URL, else `http://<Host>` of this request.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(base) = &state.config.media.public_base_url {
        return base.clone();
    }
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}
