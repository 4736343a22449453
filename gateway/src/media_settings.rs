//! Media limits and URL lifetimes of the gateway's configuration (`NATTER_MEDIA_*`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Largest declared upload (`NATTER_MEDIA_MAX_BYTES`, default 25 MiB).
    pub max_upload_bytes: u64,
    /// Content types an upload may declare; anything else is `invalid`.
    pub allowed_content_types: Vec<String>,
    /// How long an upload URL stays valid (`NATTER_MEDIA_UPLOAD_URL_SECS`).
    pub upload_url_ttl: Duration,
    /// How long a download URL stays valid (`NATTER_MEDIA_DOWNLOAD_URL_SECS`); also the longest `max-age`.
    pub download_url_ttl: Duration,
    /// `https://chat.example.com` for the URLs handed out; `None` uses the request's `Host`.
    pub public_base_url: Option<String>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            max_upload_bytes: 25 * 1024 * 1024,
            allowed_content_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "image/gif",
                "application/pdf",
                "text/plain",
                "application/zip",
                "application/octet-stream",
                "audio/mpeg",
                "audio/ogg",
                "video/mp4",
            ]
            .map(str::to_owned)
            .to_vec(),
            upload_url_ttl: Duration::from_secs(15 * 60),
            download_url_ttl: Duration::from_secs(3600),
            public_base_url: None,
        }
    }
}

impl MediaSettings {
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<MediaSettings> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let mut settings = MediaSettings::default();
        if let Some(bytes) = get("NATTER_MEDIA_MAX_BYTES") {
            settings.max_upload_bytes = bytes.parse().context("NATTER_MEDIA_MAX_BYTES must be a byte count")?;
        }
        if let Some(seconds) = get("NATTER_MEDIA_UPLOAD_URL_SECS") {
            settings.upload_url_ttl = Duration::from_secs(seconds.parse().context("NATTER_MEDIA_UPLOAD_URL_SECS must be whole seconds")?);
        }
        if let Some(seconds) = get("NATTER_MEDIA_DOWNLOAD_URL_SECS") {
            settings.download_url_ttl = Duration::from_secs(seconds.parse().context("NATTER_MEDIA_DOWNLOAD_URL_SECS must be whole seconds")?);
        }
        settings.public_base_url = get("NATTER_PUBLIC_BASE_URL").map(|url| url.trim_end_matches('/').to_owned());
        Ok(settings)
    }
}
