//! The HTTP API's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]` annotations and the `schemas` types; checked in as `docs/openapi.json` and served at `GET /v1/openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The name operations use in `security(...)` for `Authorization: Bearer <jwt>`.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Natter HTTP API",
        description = "The HTTP half of the Natter client protocol (PROTOCOL.md). Every error answers \
                       `{\"error\":{\"code\",\"message\"}}` with the status its code names. The WebSocket frames \
                       after the `GET /v1/ws` upgrade are described in PROTOCOL.md, not here."
    ),
    paths(
        crate::http::dev_token,
        crate::http::create_conversation,
        crate::http::inbox,
        crate::http::get_conversation,
        crate::http::add_member,
        crate::http::remove_member,
        crate::http::history,
        crate::replies_api::replies,
        crate::changes_api::edit,
        crate::changes_api::delete,
        crate::changes_api::react,
        crate::http::post_message,
        crate::http::post_receipt,
        crate::search_api::search,
        crate::search_api::analytics_search,
        crate::ws::upgrade,
        crate::push_api::register,
        crate::push_api::unregister,
        crate::push_api::conversation_settings,
        crate::push_api::notification_settings,
        crate::push_api::get_notification_settings,
        crate::media_api::create_upload,
        crate::media_api::metadata,
        crate::media_upload::upload,
        crate::media_download::file,
        crate::media_download::thumbnail,
        openapi_json,
    ),
    components(schemas(schemas::ErrorBody, schemas::ErrorDetail, schemas::ErrorCode)),
    modifiers(&CommonResponses),
    tags(
        (name = "auth", description = "Development sign-in"),
        (name = "conversations", description = "Conversations and their members"),
        (name = "messages", description = "Sending, history and receipts"),
        (name = "realtime", description = "The WebSocket upgrade"),
        (name = "push", description = "Push registration, mute and do-not-disturb"),
        (name = "media", description = "Upload grants, signed uploads and downloads"),
        (name = "search", description = "Members' search and the analysts' endpoint"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDocument;

/// Raw bytes: an upload's body or a download. Only its schema is used; `Vec<u8>` alone would be documented as an array of numbers.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Bytes(#[allow(dead_code)] Vec<u8>);

/// The document as checked in: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut document = serde_json::to_value(ApiDocument::openapi()).expect("the document always serializes");
    drop_unsigned_formats(&mut document);
    let mut text = serde_json::to_string_pretty(&document).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Unsigned integers keep their `minimum: 0` but lose utoipa's non-standard `u-int64`/`u-int32` formats. Without
/// `non_strict_integers` they would be `int64`, which caps them at i64::MAX although the API takes any u64.
fn drop_unsigned_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            if object.get("format").and_then(|format| format.as_str()).is_some_and(|format| format.starts_with("u-int")) {
                object.remove("format");
            }
            object.values_mut().for_each(drop_unsigned_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// Built once: the document never changes while the binary runs.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(document_json);

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT_JSON.as_str())
}

/// Error responses many operations share, added here once instead of on every handler: the bearer
/// scheme's 401, a body's 400 and 413, and the 500/503 any storage call can end in.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()));
        let error_codes = [
            ("Invalid", "`invalid`: the request is malformed or names a bad id"),
            ("Unauthorized", "`unauthorized`: the bearer token is missing, malformed, expired or badly signed"),
            ("TooLarge", "`too_large`: the body is over the limit"),
            ("Internal", "`internal`: a server fault"),
            ("Unavailable", "`unavailable`: storage or a service is unavailable; retry shortly"),
        ];
        for (name, description) in error_codes {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            components.responses.insert(name.to_owned(), ResponseBuilder::new().description(description).content("application/json", content).build().into());
        }
        for path_item in openapi.paths.paths.values_mut() {
            for operation in [&mut path_item.get, &mut path_item.post, &mut path_item.put, &mut path_item.patch, &mut path_item.delete].into_iter().flatten() {
                let mut shared = Vec::new();
                if operation.request_body.is_some() {
                    shared.extend([("400", "Invalid"), ("413", "TooLarge")]);
                }
                if operation.security.as_ref().is_some_and(|requirements| !requirements.is_empty()) {
                    shared.push(("401", "Unauthorized"));
                }
                if operation.operation_id.as_deref() != Some("openapi_json") {
                    shared.extend([("500", "Internal"), ("503", "Unavailable")]);
                }
                for (status, name) in shared {
                    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| Ref::from_response_name(name).into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerate with `UPDATE_OPENAPI=1 cargo nextest run -p gateway openapi`.
    #[test]
    fn checked_in_openapi_document_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from what the code generates; regenerate it with \
             `UPDATE_OPENAPI=1 cargo nextest run -p gateway openapi` and review the diff"
        );
    }

    #[test]
    fn every_route_of_the_router_is_in_the_document() {
        let document = ApiDocument::openapi();
        let source = include_str!("http.rs");
        for route in source.lines().filter_map(|line| line.trim().strip_prefix(".route(\"")) {
            let path = route.split('"').next().unwrap();
            assert!(document.paths.paths.contains_key(path), "{path} is routed but not in the OpenAPI document");
        }
    }
}
