//! APNs over HTTP/2 with token authentication: an ES256 provider JWT (header `kid`, claims `iss` = team, `iat`), renewed before Apple's one-hour limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use schemas::push_providers::{ApnsAlert, ApnsAps, ApnsErrorResponse, ApnsPayload, ApnsProviderClaims};

use super::{outcome_of_status, outcome_of_transport_error, unix_now, Delivery, PushSender, SendOutcome};

/// Apple refuses provider tokens older than an hour and throttles renewals more often than every
/// 20 minutes; 50 minutes sits between the two.
pub const DEFAULT_TOKEN_RENEWAL: Duration = Duration::from_secs(50 * 60);
/// The body a content-free alert shows; the app may replace it (mutable-content) after fetching.
const CONTENT_FREE_ALERT: &str = "New message";
/// The content-free alert when an unread message mentions the user.
const CONTENT_FREE_MENTION_ALERT: &str = "You were mentioned";

#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// The `.p8` key (PKCS#8 PEM, P-256) from the Apple developer account.
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// `https://api.push.apple.com` (or the sandbox, or a stand-in).
    pub base_url: String,
    pub token_renewal: Duration,
}

struct ProviderToken {
    value: String,
    issued: Instant,
}

pub struct ApnsSender {
    http: reqwest::Client,
    settings: ApnsSettings,
    signing_key: EncodingKey,
    /// Short lock, never held across an `.await`.
    token: Mutex<Option<ProviderToken>>,
}

impl ApnsSender {
    pub fn new(settings: &ApnsSettings) -> anyhow::Result<ApnsSender> {
        let signing_key = EncodingKey::from_ec_pem(settings.key_pem.as_bytes()).context("the APNs key is not a P-256 PKCS#8 PEM key")?;
        // APNs speaks only HTTP/2; prior knowledge makes that hold over TLS and over a local h2c stand-in alike.
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(super::REQUEST_TIMEOUT)
            .build()
            .context("failed to build the APNs HTTP client")?;
        let mut settings = settings.clone();
        settings.base_url = settings.base_url.trim_end_matches('/').to_owned();
        Ok(ApnsSender { http, settings, signing_key, token: Mutex::new(None) })
    }

    /// The current provider token, signing a new one when it is older than the renewal age.
    fn provider_token(&self) -> Result<String, SendOutcome> {
        let mut token = self.token.lock().expect("token lock poisoned");
        if let Some(current) = token.as_ref().filter(|current| current.issued.elapsed() < self.settings.token_renewal) {
            return Ok(current.value.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.settings.key_id.clone());
        let claims = ApnsProviderClaims { iss: self.settings.team_id.clone(), iat: unix_now() };
        let value = jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map_err(|error| SendOutcome::Rejected(format!("failed to sign the APNs provider token: {error}")))?;
        *token = Some(ProviderToken { value: value.clone(), issued: Instant::now() });
        Ok(value)
    }

    async fn send_once(&self, delivery: &Delivery<'_>) -> SendOutcome {
        let Some(device_token) = delivery.registration.token.as_deref() else {
            return SendOutcome::Rejected("an APNs registration without a token".to_owned());
        };
        let provider_token = match self.provider_token() {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let notification = delivery.notification;
        let payload = ApnsPayload {
            aps: ApnsAps {
                alert: ApnsAlert {
                    title: notification.sender.clone(),
                    body: notification.text.clone().unwrap_or_else(|| {
                        let alert = if notification.mentions > 0 { CONTENT_FREE_MENTION_ALERT } else { CONTENT_FREE_ALERT };
                        alert.to_owned()
                    }),
                },
                sound: "default".to_owned(),
                mutable_content: 1,
                thread_id: notification.conversation_id.clone(),
            },
            notification: notification.clone(),
        };
        // The registration validated the token as hex, so it is safe in the path.
        let url = format!("{}/3/device/{device_token}", self.settings.base_url);
        let request = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, format!("bearer {provider_token}"))
            .header("apns-topic", &self.settings.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-collapse-id", delivery.collapse_key)
            .json(&payload);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return outcome_of_transport_error(&error),
        };
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).cloned();
        let body = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ApnsErrorResponse>(&body).map(|error| error.reason).unwrap_or_default();
        match (status.as_u16(), reason.as_str()) {
            (410, _) | (400, "BadDeviceToken") => SendOutcome::InvalidToken(format!("APNs {status}: {reason}")),
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                *self.token.lock().expect("token lock poisoned") = None;
                SendOutcome::Retry { reason: format!("APNs refused the provider token: {reason}"), retry_after: None }
            }
            _ => outcome_of_status(status, retry_after.as_ref(), &body),
        }
    }
}

impl PushSender for ApnsSender {
    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_once(delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_tokens_are_reused_then_signed_again_before_apple_refuses_them() {
        let key_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testkit/fixtures/push/apns.p8");
        let settings = ApnsSettings {
            key_pem: std::fs::read_to_string(key_path).unwrap(),
            key_id: "KEY1234567".to_owned(),
            team_id: "TEAM123456".to_owned(),
            topic: "chat.natter.app".to_owned(),
            base_url: "http://127.0.0.1:9".to_owned(),
            token_renewal: DEFAULT_TOKEN_RENEWAL,
        };
        let sender = ApnsSender::new(&settings).unwrap();
        let first = sender.provider_token().unwrap();
        assert_eq!(sender.provider_token().unwrap(), first, "reused while young");
        let issued = |sender: &ApnsSender| sender.token.lock().unwrap().as_ref().unwrap().issued;
        let first_issued = issued(&sender);
        // As if it had been signed 51 minutes ago: past the renewal age, still short of Apple's hour.
        let Some(old) = first_issued.checked_sub(Duration::from_secs(51 * 60)) else { return };
        sender.token.lock().unwrap().as_mut().unwrap().issued = old;
        sender.provider_token().unwrap();
        assert!(issued(&sender) >= first_issued, "signed again");
        assert!(DEFAULT_TOKEN_RENEWAL < Duration::from_secs(3600) && DEFAULT_TOKEN_RENEWAL > Duration::from_secs(20 * 60));
        let header = jsonwebtoken::decode_header(&first).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::ES256, Some("KEY1234567")));
    }
}
