//! FCM HTTP v1: an OAuth2 access token from a service-account key (RS256 JWT bearer grant), then `projects/{id}/messages:send`.
//!
//! Not the `fcm` crate: it speaks only Google's legacy HTTP API (server keys), which Google shut down in 2024.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use schemas::push_providers::{
    FcmAndroidConfig, FcmErrorResponse, FcmMessage, FcmNotification, FcmSendRequest, GoogleAssertionClaims, OAuthTokenResponse, ServiceAccountKey,
};

use super::{outcome_of_status, outcome_of_transport_error, unix_now, Delivery, PushSender, SendOutcome, REQUEST_TIMEOUT};

/// The scope FCM sends need.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Google's answer for a token that no longer reaches an app install.
const UNREGISTERED: &str = "UNREGISTERED";
/// Assertions Google accepts are valid for at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Access tokens are renewed this long before Google says they expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// The service-account key file's JSON (its `token_uri` names the OAuth endpoint).
    pub service_account_json: String,
    /// `https://fcm.googleapis.com`, or a stand-in's.
    pub base_url: String,
}

struct CachedToken {
    value: String,
    renew_at: Instant,
}

pub struct FcmSender {
    http: reqwest::Client,
    base_url: String,
    key: ServiceAccountKey,
    signing_key: EncodingKey,
    /// Read and written under a short lock, never across an `.await`; two jobs may both renew at once, which is harmless.
    token: Mutex<Option<CachedToken>>,
}

impl FcmSender {
    pub fn new(settings: &FcmSettings) -> anyhow::Result<FcmSender> {
        let key: ServiceAccountKey = serde_json::from_str(&settings.service_account_json).context("the FCM service-account key is not valid JSON")?;
        let signing_key = EncodingKey::from_rsa_pem(key.private_key.as_bytes()).context("the FCM service-account private_key is not an RSA PEM key")?;
        let http = reqwest::Client::builder().timeout(super::REQUEST_TIMEOUT).build().context("failed to build the FCM HTTP client")?;
        Ok(FcmSender { http, base_url: settings.base_url.trim_end_matches('/').to_owned(), key, signing_key, token: Mutex::new(None) })
    }

    async fn access_token(&self) -> Result<String, SendOutcome> {
        if let Some(cached) = self.token.lock().expect("token lock poisoned").as_ref().filter(|cached| Instant::now() < cached.renew_at) {
            return Ok(cached.value.clone());
        }
        let now = unix_now();
        let claims = GoogleAssertionClaims {
            iss: self.key.client_email.clone(),
            scope: FCM_SCOPE.to_owned(),
            aud: self.key.token_uri.clone(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.signing_key)
            .map_err(|error| SendOutcome::Rejected(format!("failed to sign the OAuth assertion: {error}")))?;
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
        let response = self.http.post(&self.key.token_uri).form(&form).send().await.map_err(|error| outcome_of_transport_error(&error))?;
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).cloned();
        let body = response.text().await.map_err(|error| outcome_of_transport_error(&error))?;
        if !status.is_success() {
            // A refused grant is our configuration, not this job: retry so a fixed key still delivers it.
            return Err(match outcome_of_status(status, retry_after.as_ref(), &body) {
                SendOutcome::Rejected(reason) => SendOutcome::Retry { reason: format!("OAuth token request refused: {reason}"), retry_after: None },
                other => other,
            });
        }
        let token: OAuthTokenResponse =
            serde_json::from_str(&body).map_err(|error| SendOutcome::Retry { reason: format!("unreadable OAuth token answer: {error}"), retry_after: None })?;
        let lifetime = Duration::from_secs(token.expires_in).saturating_sub(TOKEN_REFRESH_MARGIN);
        *self.token.lock().expect("token lock poisoned") = Some(CachedToken { value: token.access_token.clone(), renew_at: Instant::now() + lifetime });
        Ok(token.access_token)
    }

    async fn send_once(&self, delivery: &Delivery<'_>) -> SendOutcome {
        let Some(device_token) = delivery.registration.token.clone() else {
            return SendOutcome::Rejected("an FCM registration without a token".to_owned());
        };
        let access_token = match self.access_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let notification = delivery.notification;
        let mut data = BTreeMap::from([
            ("type".to_owned(), notification.kind.clone()),
            ("conversation_id".to_owned(), notification.conversation_id.clone()),
            ("count".to_owned(), notification.count.to_string()),
            ("seq".to_owned(), notification.seq.to_string()),
        ]);
        if let Some(sender) = &notification.sender {
            data.insert("sender".to_owned(), sender.clone());
        }
        if notification.mentions > 0 {
            data.insert("mentions".to_owned(), notification.mentions.to_string());
        }
        let shown = notification.text.as_ref().map(|text| FcmNotification { title: notification.sender.clone(), body: text.clone() });
        if let Some(text) = &notification.text {
            data.insert("text".to_owned(), text.clone());
        }
        let request = FcmSendRequest {
            message: FcmMessage {
                token: device_token,
                data,
                notification: shown,
                android: FcmAndroidConfig { collapse_key: delivery.collapse_key.to_owned(), priority: "high".to_owned() },
            },
        };
        let url = format!("{}/v1/projects/{}/messages:send", self.base_url, self.key.project_id);
        let response = match self.http.post(url).bearer_auth(&access_token).timeout(REQUEST_TIMEOUT).json(&request).send().await {
            Ok(response) => response,
            Err(error) => return outcome_of_transport_error(&error),
        };
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).cloned();
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The access token was revoked or expired early: forget it so the retry gets a fresh one.
            *self.token.lock().expect("token lock poisoned") = None;
            return SendOutcome::Retry { reason: format!("FCM refused the access token: {body}"), retry_after: None };
        }
        if let Ok(error) = serde_json::from_str::<FcmErrorResponse>(&body)
            && error.fcm_error_code() == Some(UNREGISTERED)
        {
            return SendOutcome::InvalidToken(format!("FCM: {UNREGISTERED}"));
        }
        outcome_of_status(status, retry_after.as_ref(), &body)
    }
}

impl PushSender for FcmSender {
    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_once(delivery))
    }
}
