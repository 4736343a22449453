//! Push notifications: registration and settings bodies and records, the push job, and the notification payload devices receive.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// The push services Natter speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushProvider {
    Fcm,
    Apns,
    Webpush,
}

impl PushProvider {
    pub const ALL: [PushProvider; 3] = [PushProvider::Fcm, PushProvider::Apns, PushProvider::Webpush];

    pub fn as_str(self) -> &'static str {
        match self {
            PushProvider::Fcm => "fcm",
            PushProvider::Apns => "apns",
            PushProvider::Webpush => "webpush",
        }
    }

    pub fn parse(name: &str) -> Option<PushProvider> {
        PushProvider::ALL.into_iter().find(|provider| provider.as_str() == name)
    }
}

/// A browser's `PushSubscription.toJSON()` (other fields, such as `expirationTime`, are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
}

/// The subscription's P-256 public key and auth secret, unpadded base64url as browsers give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// `POST /v1/devices/{device}/push`. `provider` stays a string so an unknown one gets a clear `invalid`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterPushRequest {
    #[schema(value_type = PushProvider)]
    pub provider: String,
    /// FCM registration token or APNs device token (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Web Push only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
}

/// `push-devices` bucket value: how to reach one device of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRegistrationRecord {
    pub v: u64,
    pub provider: PushProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: Timestamp,
}

/// `PUT /v1/conversations/{id}/settings`; `null` or absent unmutes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationSettingsRequest {
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub muted_until: Option<Timestamp>,
}

/// The answer to `PUT /v1/conversations/{id}/settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationSettings {
    pub conversation_id: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "time::serde::rfc3339::option")]
    pub muted_until: Option<Timestamp>,
}

/// `PUT /v1/settings/notifications` and its answer; `null` or absent ends do-not-disturb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotificationSettings {
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub do_not_disturb_until: Option<Timestamp>,
}

/// `notification-settings` bucket value, for a conversation's mute (`<user>.<conv>`) and a user's do-not-disturb (`<user>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceRecord {
    pub v: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub until: Option<Timestamp>,
}

impl SilenceRecord {
    /// Whether notifications are silenced at `now`.
    pub fn silences_at(&self, now: Timestamp) -> bool {
        self.until.is_some_and(|until| until > now)
    }
}

/// A job on the `PUSH` work queue: notify `device` of `user` about a burst in `conversation_id`
/// that began with message `seq`. The worker reads the latest state when it sends, so the job
/// stays small and the count covers every message of the burst.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushJob {
    pub v: u64,
    pub conversation_id: String,
    pub user: String,
    pub device: String,
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: Timestamp,
}

crate::records::json_record!(PushRegistrationRecord, SilenceRecord, PushJob);

/// What a device's app receives (FCM `data`, APNs custom keys, the decrypted Web Push body).
/// `sender` and `text` are present only when content is allowed and the conversation is not end-to-end encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushNotification {
    #[serde(rename = "type")]
    pub kind: String,
    pub conversation_id: String,
    /// Unread messages in the conversation when the push was sent.
    pub count: u64,
    /// The newest message's `seq`.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Of the unread messages, how many mention the user; absent when none do.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mentions: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl PushNotification {
    pub const MESSAGE_KIND: &'static str = "message";

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("notifications always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::golden;

    #[test]
    fn push_records_stay_readable() {
        let registration = PushRegistrationRecord::from_bytes(&golden("push-registration.v1.json")).unwrap();
        assert_eq!(registration.provider, PushProvider::Webpush);
        assert_eq!(registration.subscription.unwrap().keys.auth, "BTBZMqHH6r4Tts7J_aSIgg");
        let silence = SilenceRecord::from_bytes(&golden("silence.v1.json")).unwrap();
        assert!(silence.silences_at(time::macros::datetime!(2026-11-28 10:00 UTC)));
        assert!(!silence.silences_at(time::macros::datetime!(2026-11-29 10:00 UTC)));
        let job = PushJob::from_bytes(&golden("push-job.v1.json")).unwrap();
        assert_eq!((job.user.as_str(), job.device.as_str(), job.seq), ("bob", "phone", 3));
        let newer = br#"{"v":2,"conversation_id":"c","user":"bob","device":"phone","seq":1,"enqueued_at":"2026-11-28T10:00:00Z"}"#;
        assert!(matches!(PushJob::from_bytes(newer), Err(crate::RecordError::UnknownVersion(2))));
    }

    #[test]
    fn providers_parse_by_their_wire_names() {
        for provider in PushProvider::ALL {
            assert_eq!(PushProvider::parse(provider.as_str()), Some(provider));
        }
        assert_eq!(PushProvider::parse("gcm"), None);
    }
}
