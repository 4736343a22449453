//! The push providers behind one trait, and how a provider's HTTP answer becomes an outcome the job runner acts on.

mod apns;
mod fcm;
mod webpush;

use std::time::Duration;

use futures::future::BoxFuture;
use schemas::{PushNotification, PushProvider, PushRegistrationRecord};
use time::OffsetDateTime;

pub use apns::{ApnsSender, ApnsSettings, DEFAULT_TOKEN_RENEWAL as DEFAULT_APNS_TOKEN_RENEWAL};
pub use fcm::{FcmSender, FcmSettings};
pub use webpush::{WebPushSender, WebPushSettings};

/// The longest `Retry-After` we honour; a provider asking for more gets retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one provider request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Delivered,
    /// The provider says the token or subscription is gone for good: forget the registration.
    InvalidToken(String),
    /// Worth another attempt (5xx, 429, network, our credentials expired), after `retry_after` if the provider said.
    Retry { reason: String, retry_after: Option<Duration> },
    /// Another attempt would fail the same way (a malformed request): dead-letter now.
    Rejected(String),
}

/// One notification for one device: the payload and the key that collapses a conversation's pushes into one.
pub struct Delivery<'a> {
    pub registration: &'a PushRegistrationRecord,
    pub notification: &'a PushNotification,
    /// Ids are `[A-Za-z0-9_-]{1,64}`, which every provider's collapse field accepts (Web Push hashes it to fit `Topic`).
    pub collapse_key: &'a str,
}

/// A push service. Implementations keep their own credentials fresh (OAuth token, provider JWT).
pub trait PushSender: Send + Sync {
    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, SendOutcome>;
}

/// The configured senders; a provider without credentials is `None` and its jobs are dead-lettered.
#[derive(Default)]
pub struct Providers {
    pub fcm: Option<Box<dyn PushSender>>,
    pub apns: Option<Box<dyn PushSender>>,
    pub webpush: Option<Box<dyn PushSender>>,
}

impl Providers {
    pub fn sender(&self, provider: PushProvider) -> Option<&dyn PushSender> {
        match provider {
            PushProvider::Fcm => self.fcm.as_deref(),
            PushProvider::Apns => self.apns.as_deref(),
            PushProvider::Webpush => self.webpush.as_deref(),
        }
    }
}

/// The common part of every provider's answer: 429 and 5xx are retried (with `Retry-After`), a
/// network failure too; the provider-specific codes are decided by the caller before this.
pub fn outcome_of_status(status: reqwest::StatusCode, retry_after: Option<&reqwest::header::HeaderValue>, body: &str) -> SendOutcome {
    if status.is_success() {
        return SendOutcome::Delivered;
    }
    let reason = format!("{status}: {}", body.chars().take(200).collect::<String>());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = retry_after
            .and_then(|value| value.to_str().ok())
            .and_then(|value| crate::retry::parse_retry_after(value, OffsetDateTime::now_utc(), MAX_RETRY_AFTER));
        return SendOutcome::Retry { reason, retry_after };
    }
    SendOutcome::Rejected(reason)
}

/// A request that never got an answer (connect refused, timeout, reset) is worth retrying.
pub fn outcome_of_transport_error(error: &reqwest::Error) -> SendOutcome {
    SendOutcome::Retry { reason: format!("request failed: {error}"), retry_after: None }
}

/// Seconds since the epoch, for JWT `iat`/`exp`.
pub fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

/// Every provider gets the same bounded request time, so a hanging provider cannot hold a job forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
