//! Serves the web client (`web/app` and the protocol library in `web/client`) from bytes compiled into the binary: `/` and `/web/{file}`.
//!
//! Nothing is read from disk or a CDN at run time, so every gateway serves the same client it was
//! built with. File names are not content-hashed (there is no build step), so responses say
//! `no-cache`: browsers keep them and revalidate with the ETag, which costs a 304 and no body.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::state::AppState;

struct WebAsset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! web_asset {
    ($directory:literal, $name:literal, $content_type:expr) => {
        WebAsset { name: $name, content_type: $content_type, bytes: include_bytes!(concat!("../../web/", $directory, "/", $name)) }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

static WEB_ASSETS: &[WebAsset] = &[
    web_asset!("app", "index.html", "text/html; charset=utf-8"),
    web_asset!("app", "app.css", "text/css; charset=utf-8"),
    web_asset!("app", "app.js", JAVASCRIPT),
    web_asset!("app", "dom.js", JAVASCRIPT),
    web_asset!("app", "sign-in.js", JAVASCRIPT),
    web_asset!("app", "inbox-view.js", JAVASCRIPT),
    web_asset!("app", "conversation-view.js", JAVASCRIPT),
    web_asset!("app", "new-conversation.js", JAVASCRIPT),
    web_asset!("app", "search-view.js", JAVASCRIPT),
    web_asset!("app", "message-state-view.js", JAVASCRIPT),
    web_asset!("client", "natter-client.js", JAVASCRIPT),
    web_asset!("client", "http-api.js", JAVASCRIPT),
    web_asset!("client", "connection.js", JAVASCRIPT),
    web_asset!("client", "conversation-state.js", JAVASCRIPT),
    web_asset!("client", "media-uploads.js", JAVASCRIPT),
    web_asset!("client", "message-changes.js", JAVASCRIPT),
    web_asset!("client", "typing.js", JAVASCRIPT),
];

/// Strong ETags (the SHA-256 of each asset, quoted), in `WEB_ASSETS` order, computed once.
static WEB_ASSET_ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    WEB_ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// Scripts and styles only from this gateway; images and API calls may go to the configured public base URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' http: https: data: blob:; \
     connect-src 'self' ws: wss: http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/web/{file}", get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }))
}

fn serve(name: &str, request_headers: &HeaderMap) -> Response {
    let Some(index) = WEB_ASSETS.iter().position(|asset| asset.name == name) else {
        return ApiError::not_found("no such web client file").into_response();
    };
    let asset = &WEB_ASSETS[index];
    let etag = &WEB_ASSET_ETAGS[index];
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if crate::media_download::if_none_match_hits(request_headers, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, if_none_match: Option<&str>, expected_status: StatusCode, expected_content_type: Option<&str>) {
        let mut request_headers = HeaderMap::new();
        if let Some(value) = if_none_match {
            request_headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        }
        let response = serve(name, &request_headers);
        assert_eq!(response.status(), expected_status, "{name} with If-None-Match {if_none_match:?}");
        let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
        if let Some(expected) = expected_content_type {
            assert_eq!(content_type, Some(expected), "{name}");
        }
    }

    #[test]
    fn assets_are_served_with_their_types_and_revalidate_by_etag() {
        let index_etag = WEB_ASSET_ETAGS[0].clone();
        check("index.html", None, StatusCode::OK, Some("text/html; charset=utf-8"));
        check("app.css", None, StatusCode::OK, Some("text/css; charset=utf-8"));
        check("natter-client.js", None, StatusCode::OK, Some(JAVASCRIPT));
        check("index.html", Some(&index_etag), StatusCode::NOT_MODIFIED, None);
        check("index.html", Some(&format!("\"other\", W/{index_etag}")), StatusCode::NOT_MODIFIED, None);
        check("index.html", Some("\"stale\""), StatusCode::OK, None);
        check("../Cargo.toml", None, StatusCode::NOT_FOUND, None);
        check("missing.js", None, StatusCode::NOT_FOUND, None);
    }

    #[test]
    fn every_module_the_app_imports_is_served() {
        // A relative import the gateway does not serve would break the app only in a browser.
        for asset in WEB_ASSETS.iter().filter(|asset| asset.name.ends_with(".js")) {
            let source = std::str::from_utf8(asset.bytes).expect("web assets are UTF-8");
            for line in source.lines().filter(|line| line.starts_with("import ") || line.starts_with("export ") && line.contains(" from ")) {
                let Some(specifier) = line.rsplit_once(" from ").map(|(_, rest)| rest.trim().trim_end_matches(';').trim_matches(|c| c == '\'' || c == '"')) else {
                    continue;
                };
                let served_name = specifier.trim_start_matches("./");
                assert!(WEB_ASSETS.iter().any(|served| served.name == served_name), "{} imports {specifier}, which is not served", asset.name);
            }
        }
    }
}
