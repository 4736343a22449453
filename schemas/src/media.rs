//! Media: the stored record and share marker, the upload job, the HTTP bodies and the signed-URL query.

use serde::{Deserialize, Serialize};
use utoipa::{ToSchema, IntoParams};

use crate::Timestamp;

/// Where an upload stands. `uploading` is internal (a PUT is streaming); clients see it as `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    Uploading,
    Pending,
    Ready,
    Rejected,
}

impl MediaStatus {
    /// The status PROTOCOL.md names: "pending" | "ready" | "rejected".
    pub fn public(self) -> MediaStatus {
        match self {
            MediaStatus::Uploading => MediaStatus::Pending,
            other => other,
        }
    }
}

/// A served thumbnail's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThumbnailInfo {
    pub width: u32,
    pub height: u32,
    pub content_type: String,
    pub size: u64,
}

/// `media` bucket value under `<media>`, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub v: u64,
    pub id: String,
    pub uploader: String,
    /// The type served: the declared one, or the re-encoded image's once ready.
    pub content_type: String,
    /// Bytes served: the declared size, or the re-encoded image's once ready.
    pub size: u64,
    pub status: MediaStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Strong validator of the served bytes (their SHA-256), set once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailInfo>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}

/// `media` bucket value under `<media>.<conv>`: the media was sent there, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaShareRecord {
    pub v: u64,
    pub sender: String,
    #[serde(with = "time::serde::rfc3339")]
    pub shared_at: Timestamp,
}

/// The `media.uploaded` job, version 1: the record holds the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaJob {
    pub v: u64,
    pub media_id: String,
}

crate::records::json_record!(MediaRecord, MediaShareRecord, MediaJob);

/// `POST /v1/media`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateMediaRequest {
    pub content_type: String,
    #[schema(minimum = 1)]
    pub size: u64,
}

/// Reply to `POST /v1/media`: PUT the bytes to `upload_url` before `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateMediaResponse {
    pub media_id: String,
    pub upload_url: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
}

/// `GET /v1/media/{id}`: `url` and `thumbnail_url` are signed and expire; present once ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MediaInfo {
    pub media_id: String,
    pub status: MediaStatus,
    pub content_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailInfo>,
}

/// Query of a signed upload URL: the grant itself, so the gateway keeps no state until the PUT.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadGrantQuery {
    pub uploader: String,
    pub size: u64,
    pub content_type: String,
    /// Unix seconds.
    pub expires: i64,
    /// Hex HMAC-SHA256 of the grant.
    pub sig: String,
}

/// Query of a signed download URL: issued to one reader, whose access is checked again at download time.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadGrantQuery {
    pub reader: String,
    /// Unix seconds.
    pub expires: i64,
    pub sig: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::golden;

    #[test]
    fn media_records_stay_readable() {
        let record = MediaRecord::from_bytes(&golden("media.v1.json")).unwrap();
        assert_eq!((record.status, record.size), (MediaStatus::Ready, 2048));
        assert_eq!(record.thumbnail.as_ref().map(|thumbnail| thumbnail.width), Some(320));
        let written: serde_json::Value = serde_json::from_slice(&record.to_bytes()).unwrap();
        assert_eq!(written, serde_json::from_slice::<serde_json::Value>(&golden("media.v1.json")).unwrap());
        let share = MediaShareRecord::from_bytes(&golden("media-share.v1.json")).unwrap();
        assert_eq!(share.sender, "alice");
        let job = MediaJob::from_bytes(&golden("media-job.v1.json")).unwrap();
        assert_eq!(job.media_id, "01JDMEDIA0000000000000000");
        assert!(matches!(MediaJob::from_bytes(br#"{"v":2,"media_id":"x"}"#), Err(crate::RecordError::UnknownVersion(2))));
    }
}
