//! The push providers' wire formats: Google service-account keys and OAuth2, FCM HTTP v1, APNs, and the JWT claims each one signs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fields of a Google service-account key file that the OAuth2 JWT grant needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceAccountKey {
    pub project_id: String,
    pub private_key: String,
    pub client_email: String,
    /// Google's token endpoint; a stand-in's in tests.
    pub token_uri: String,
}

/// Claims of the RS256 assertion exchanged for an access token (RFC 7523, Google's "JWT bearer" grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoogleAssertionClaims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthTokenResponse {
    pub access_token: String,
    pub expires_in: u64,
    #[serde(default)]
    pub token_type: String,
}

/// `POST /v1/projects/{project}/messages:send` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmSendRequest {
    pub message: FcmMessage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmMessage {
    pub token: String,
    /// FCM data values must be strings.
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<FcmNotification>,
    pub android: FcmAndroidConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmNotification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmAndroidConfig {
    /// A newer message with the same key replaces an undelivered older one.
    pub collapse_key: String,
    pub priority: String,
}

/// FCM's error body: a google.rpc.Status whose details carry the FCM error code (`UNREGISTERED`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmErrorResponse {
    pub error: FcmErrorStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmErrorStatus {
    pub code: u16,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub details: Vec<FcmErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmErrorDetail {
    #[serde(rename = "@type", default)]
    pub kind: String,
    #[serde(rename = "errorCode", default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl FcmErrorResponse {
    /// The FCM-specific code, e.g. `UNREGISTERED`.
    pub fn fcm_error_code(&self) -> Option<&str> {
        self.error.details.iter().find_map(|detail| detail.error_code.as_deref())
    }
}

/// Claims of the APNs provider token (ES256, header `kid` = the key id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsProviderClaims {
    /// The team id.
    pub iss: String,
    pub iat: u64,
}

/// An APNs notification: `aps` plus our own keys beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsPayload {
    pub aps: ApnsAps,
    #[serde(flatten)]
    pub notification: crate::PushNotification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsAps {
    pub alert: ApnsAlert,
    pub sound: String,
    /// Lets a notification service extension fetch and decrypt the message itself.
    #[serde(rename = "mutable-content")]
    pub mutable_content: u8,
    #[serde(rename = "thread-id")]
    pub thread_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsAlert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub body: String,
}

/// APNs' error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsErrorResponse {
    pub reason: String,
}

/// Claims of a VAPID token (RFC 8292).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VapidClaims {
    /// The push service's origin.
    pub aud: String,
    pub exp: u64,
    /// `mailto:` or `https:` contact of the sender.
    pub sub: String,
}
