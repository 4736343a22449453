//! Push registration (`POST`/`DELETE /v1/devices/{device}/push`), per-conversation mute and per-user do-not-disturb.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use schemas::{
    ErrorBody, ConversationSettings, ConversationSettingsRequest, NotificationSettings, PushProvider, PushRegistrationRecord, RegisterPushRequest,
    WebPushSubscription,
};
use time::OffsetDateTime;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{ApiJson, ApiPath, Caller};
use crate::send::require_member;
use crate::state::AppState;

/// FCM tokens are ~160 characters today; the cap only keeps junk out of the bucket.
const MAX_TOKEN_LENGTH: usize = 4096;
/// Push service URLs are short; browsers' are well under this.
const MAX_ENDPOINT_LENGTH: usize = 2048;
/// An uncompressed P-256 point: 0x04, then x and y.
const P256_UNCOMPRESSED_POINT_LENGTH: usize = 65;
/// RFC 8291: the auth secret is 16 bytes.
const WEB_PUSH_AUTH_SECRET_LENGTH: usize = 16;

/// Registers (or replaces) how to reach one of the caller's devices: an FCM or APNs token, or a Web Push subscription.
#[utoipa::path(post, path = "/v1/devices/{device}/push", tag = "push", security(("bearer" = [])), params(("device" = String, Path, description = "The device id", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = RegisterPushRequest, responses(
    (status = 204, description = "Registered"),
))]
pub async fn register(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(device): ApiPath<String>,
    ApiJson(request): ApiJson<RegisterPushRequest>,
) -> Result<StatusCode, ApiError> {
    let device = parse_id("device", &device)?;
    let record = validated_registration(request)?;
    state.push.register(&caller, &device, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets a device's push registration.
#[utoipa::path(delete, path = "/v1/devices/{device}/push", tag = "push", security(("bearer" = [])), params(("device" = String, Path, description = "The device id", pattern = "^[A-Za-z0-9_-]{1,64}$")), responses(
    (status = 204, description = "Unregistered (or was not registered)"),
    (status = 400, description = "`invalid`: a bad device id", body = ErrorBody),
))]
pub async fn unregister(State(state): State<AppState>, Caller(caller): Caller, ApiPath(device): ApiPath<String>) -> Result<StatusCode, ApiError> {
    let device = parse_id("device", &device)?;
    state.push.unregister(&caller, &device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mutes a conversation's notifications until a time; `null` or absent unmutes.
#[utoipa::path(put, path = "/v1/conversations/{id}/settings", tag = "push", security(("bearer" = [])), params(("id" = String, Path, description = "The conversation id", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = ConversationSettingsRequest, responses(
    (status = 200, description = "The conversation's settings", body = ConversationSettings),
    (status = 403, description = "`forbidden`: the caller is not a member", body = ErrorBody),
    (status = 404, description = "`not_found`: no such conversation", body = ErrorBody),
))]
pub async fn conversation_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ConversationSettingsRequest>,
) -> Result<Json<ConversationSettings>, ApiError> {
    let conversation = parse_id("conversation id", &id)?;
    require_member(&state, &conversation, &caller).await?;
    state.push.set_conversation_mute(&caller, &conversation, request.muted_until).await?;
    Ok(Json(ConversationSettings { conversation_id: conversation.to_string(), muted_until: request.muted_until }))
}

/// Do-not-disturb for every conversation until a time; `null` or absent ends it.
#[utoipa::path(put, path = "/v1/settings/notifications", tag = "push", security(("bearer" = [])), request_body = NotificationSettings, responses(
    (status = 200, description = "The settings", body = NotificationSettings),
))]
pub async fn notification_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(request): ApiJson<NotificationSettings>,
) -> Result<Json<NotificationSettings>, ApiError> {
    state.push.set_do_not_disturb(&caller, request.do_not_disturb_until).await?;
    Ok(Json(request))
}

/// The caller's do-not-disturb.
#[utoipa::path(get, path = "/v1/settings/notifications", tag = "push", security(("bearer" = [])), responses(
    (status = 200, description = "The settings", body = NotificationSettings),
))]
pub async fn get_notification_settings(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<NotificationSettings>, ApiError> {
    Ok(Json(NotificationSettings { do_not_disturb_until: state.push.do_not_disturb(&caller).await? }))
}

/// The record to store, or `invalid` naming what is wrong; nothing is stored for a bad request.
fn validated_registration(request: RegisterPushRequest) -> Result<PushRegistrationRecord, ApiError> {
    let provider = PushProvider::parse(&request.provider)
        .ok_or_else(|| ApiError::invalid(format!("provider must be fcm, apns or webpush, not {:?}", request.provider)))?;
    let (token, subscription) = match provider {
        PushProvider::Fcm | PushProvider::Apns => {
            if request.subscription.is_some() {
                return Err(ApiError::invalid(format!("{} takes a token, not a subscription", provider.as_str())));
            }
            let token = request.token.ok_or_else(|| ApiError::invalid(format!("{} needs a token", provider.as_str())))?;
            validate_token(provider, &token)?;
            (Some(token), None)
        }
        PushProvider::Webpush => {
            if request.token.is_some() {
                return Err(ApiError::invalid("webpush takes a subscription, not a token"));
            }
            let subscription = request.subscription.ok_or_else(|| ApiError::invalid("webpush needs a subscription {endpoint, keys}"))?;
            validate_subscription(&subscription)?;
            (None, Some(subscription))
        }
    };
    Ok(PushRegistrationRecord { v: 1, provider, token, subscription, registered_at: OffsetDateTime::now_utc() })
}

fn validate_token(provider: PushProvider, token: &str) -> Result<(), ApiError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LENGTH {
        return Err(ApiError::invalid(format!("token must be 1 to {MAX_TOKEN_LENGTH} characters")));
    }
    // Both end up in a URL path or a JSON string: printable ASCII without spaces or slashes only.
    let printable = token.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'/');
    let well_formed = match provider {
        PushProvider::Apns => token.len().is_multiple_of(2) && token.bytes().all(|byte| byte.is_ascii_hexdigit()),
        _ => printable,
    };
    if !well_formed {
        return Err(ApiError::invalid(format!("this is not a {} token", provider.as_str())));
    }
    Ok(())
}

fn validate_subscription(subscription: &WebPushSubscription) -> Result<(), ApiError> {
    let endpoint = &subscription.endpoint;
    let has_host = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://")).is_some_and(|rest| !rest.is_empty());
    if !has_host || endpoint.len() > MAX_ENDPOINT_LENGTH || endpoint.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid("subscription.endpoint must be an http(s) URL"));
    }
    let decode = |field: &str, value: &str, length: usize| {
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')) {
            Ok(bytes) if bytes.len() == length => Ok(bytes),
            _ => Err(ApiError::invalid(format!("subscription.keys.{field} must be {length} bytes of base64url"))),
        }
    };
    let point = decode("p256dh", &subscription.keys.p256dh, P256_UNCOMPRESSED_POINT_LENGTH)?;
    if point[0] != 0x04 {
        return Err(ApiError::invalid("subscription.keys.p256dh must be an uncompressed P-256 point"));
    }
    decode("auth", &subscription.keys.auth, WEB_PUSH_AUTH_SECRET_LENGTH)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: serde_json::Value, expected: Result<PushProvider, &str>) {
        let request: RegisterPushRequest = serde_json::from_value(body.clone()).unwrap();
        match (validated_registration(request), expected) {
            (Ok(record), Ok(provider)) => assert_eq!(record.provider, provider, "{body}"),
            (Err(error), Err(fragment)) => assert!(error.message.contains(fragment), "{body}: {}", error.message),
            (outcome, expected) => panic!("{body}: expected {expected:?}, got {outcome:?}"),
        }
    }

    #[test]
    fn registrations_are_validated() {
        let p256dh = format!("BA{}", "A".repeat(85));
        let auth = "AAAAAAAAAAAAAAAAAAAAAA";
        let subscription = |endpoint: &str, p256dh: &str, auth: &str| serde_json::json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}});
        check(serde_json::json!({"provider": "fcm", "token": "fcm-token:APA91b"}), Ok(PushProvider::Fcm));
        check(serde_json::json!({"provider": "apns", "token": "a1b2c3d4"}), Ok(PushProvider::Apns));
        check(serde_json::json!({"provider": "webpush", "subscription": subscription("https://push.example/x", &p256dh, auth)}), Ok(PushProvider::Webpush));
        check(serde_json::json!({"provider": "gcm", "token": "x"}), Err("provider must be"));
        check(serde_json::json!({"provider": "fcm"}), Err("needs a token"));
        check(serde_json::json!({"provider": "fcm", "token": ""}), Err("1 to"));
        check(serde_json::json!({"provider": "fcm", "token": "a b"}), Err("not a fcm token"));
        check(serde_json::json!({"provider": "apns", "token": "xyz1"}), Err("not a apns token"));
        check(serde_json::json!({"provider": "webpush"}), Err("needs a subscription"));
        check(serde_json::json!({"provider": "webpush", "subscription": subscription("ftp://x", &p256dh, auth)}), Err("endpoint"));
        check(serde_json::json!({"provider": "webpush", "subscription": subscription("https://x", "BAAA", auth)}), Err("p256dh"));
        check(serde_json::json!({"provider": "webpush", "subscription": subscription("https://x", &p256dh, "AAAA")}), Err("auth"));
    }
}
