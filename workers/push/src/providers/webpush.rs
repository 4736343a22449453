//! Web Push: the payload encrypted to the subscription (RFC 8291, aes128gcm) and signed with VAPID (RFC 8292), posted to the subscription's endpoint.

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use schemas::push_providers::VapidClaims;
use sha2::{Digest, Sha256};

use super::{outcome_of_status, outcome_of_transport_error, unix_now, Delivery, PushSender, SendOutcome};

/// VAPID tokens may live at most 24 h; 12 h leaves room for clock skew.
const VAPID_LIFETIME_SECS: u64 = 12 * 3600;
/// How long the push service keeps an undelivered message (RFC 8030 `TTL`).
const MESSAGE_TTL_SECS: u64 = 24 * 3600;
/// RFC 8030 `Topic`: at most 32 characters of the base64url alphabet; 24 bytes encode to exactly 32.
const TOPIC_BYTES: usize = 24;

#[derive(Debug, Clone)]
pub struct WebPushSettings {
    /// The VAPID key: PKCS#8 PEM, P-256. Its public half is the app's `applicationServerKey`.
    pub vapid_key_pem: String,
    /// `mailto:` or `https:` contact the push service can reach the sender at.
    pub vapid_subject: String,
    /// Endpoints come from clients, so only `https://` is posted to unless this is set (local stand-ins in tests).
    pub allow_http_endpoints: bool,
}

pub struct WebPushSender {
    http: reqwest::Client,
    settings: WebPushSettings,
    signing_key: EncodingKey,
    /// `k=` of the VAPID header: the uncompressed public key, base64url.
    vapid_public_key: String,
}

impl WebPushSender {
    pub fn new(settings: &WebPushSettings) -> anyhow::Result<WebPushSender> {
        let signing_key = EncodingKey::from_ec_pem(settings.vapid_key_pem.as_bytes()).context("the VAPID key is not a P-256 PKCS#8 PEM key")?;
        let secret = p256::SecretKey::from_pkcs8_pem(&settings.vapid_key_pem).context("the VAPID key is not a P-256 PKCS#8 PEM key")?;
        let vapid_public_key = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let http = reqwest::Client::builder().timeout(super::REQUEST_TIMEOUT).build().context("failed to build the Web Push HTTP client")?;
        Ok(WebPushSender { http, settings: settings.clone(), signing_key, vapid_public_key })
    }

    /// The public key browsers pass to `pushManager.subscribe` as `applicationServerKey`.
    pub fn vapid_public_key(&self) -> &str {
        &self.vapid_public_key
    }

    async fn send_once(&self, delivery: &Delivery<'_>) -> SendOutcome {
        let Some(subscription) = delivery.registration.subscription.as_ref() else {
            return SendOutcome::Rejected("a Web Push registration without a subscription".to_owned());
        };
        let endpoint = match reqwest::Url::parse(&subscription.endpoint) {
            Ok(endpoint) if endpoint.scheme() == "https" || (endpoint.scheme() == "http" && self.settings.allow_http_endpoints) => endpoint,
            _ => return SendOutcome::Rejected(format!("refusing to post to endpoint {:?}", subscription.endpoint)),
        };
        let (Ok(p256dh), Ok(auth)) = (URL_SAFE_NO_PAD.decode(subscription.keys.p256dh.trim_end_matches('=')), URL_SAFE_NO_PAD.decode(subscription.keys.auth.trim_end_matches('='))) else {
            return SendOutcome::Rejected("subscription keys are not base64url".to_owned());
        };
        let Ok(user_agent_key) = p256::PublicKey::from_sec1_bytes(&p256dh) else {
            return SendOutcome::Rejected("subscription p256dh is not a P-256 point".to_owned());
        };
        let Ok(auth) = <[u8; 16]>::try_from(auth.as_slice()) else {
            return SendOutcome::Rejected("subscription auth is not 16 bytes".to_owned());
        };
        let auth = web_push_native::Auth::from(auth);
        let body = match web_push_native::encrypt(delivery.notification.to_json().into_bytes(), &user_agent_key, &auth) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Rejected(format!("failed to encrypt the payload: {error}")),
        };
        let audience = endpoint.origin().ascii_serialization();
        let claims = VapidClaims { aud: audience, exp: unix_now() + VAPID_LIFETIME_SECS, sub: self.settings.vapid_subject.clone() };
        let vapid_token = match jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing_key) {
            Ok(token) => token,
            Err(error) => return SendOutcome::Rejected(format!("failed to sign the VAPID token: {error}")),
        };
        let request = self
            .http
            .post(endpoint)
            .header(reqwest::header::AUTHORIZATION, format!("vapid t={vapid_token}, k={}", self.vapid_public_key))
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("TTL", MESSAGE_TTL_SECS.to_string())
            .header("Urgency", "high")
            .header("Topic", topic_for(delivery.collapse_key))
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return outcome_of_transport_error(&error),
        };
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).cloned();
        let body = response.text().await.unwrap_or_default();
        match status.as_u16() {
            404 | 410 => SendOutcome::InvalidToken(format!("Web Push {status}: the subscription is gone")),
            _ => outcome_of_status(status, retry_after.as_ref(), &body),
        }
    }
}

/// A `Topic` (replaces an undelivered message with the same topic) for a collapse key of up to 64 id characters.
pub fn topic_for(collapse_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(collapse_key.as_bytes())[..TOPIC_BYTES])
}

impl PushSender for WebPushSender {
    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_once(delivery))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topics_fit_rfc_8030() {
        let topic = super::topic_for(&"g".repeat(64));
        assert_eq!(topic.len(), 32);
        assert!(topic.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
        assert_ne!(super::topic_for("a"), super::topic_for("b"));
    }
}
