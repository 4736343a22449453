//! The push worker's configuration from `NATTER_PUSH_*` values: retries, coalescing, privacy, and each provider's credentials.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use subjects::StorageSettings;

use crate::providers::{ApnsSettings, FcmSettings, WebPushSettings};

#[derive(Debug, Clone)]
pub struct PushWorkerConfig {
    pub storage: StorageSettings,
    /// How long a job may stay unacked before JetStream offers it to another worker; must exceed the coalescing window.
    pub ack_wait: Duration,
    /// Attempts per job (`max_deliver`); after the last failed one the job is dead-lettered.
    pub max_attempts: u64,
    /// The first retry's delay; each later one doubles, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long after a burst's first message its push is sent; messages meanwhile join it.
    pub coalesce_window: Duration,
    /// Send only the conversation, count and seq, never sender or text. End-to-end encrypted messages are always sent this way.
    pub content_free: bool,
    /// Jobs in progress at once (most wait out their coalescing window).
    pub concurrency: usize,
    pub fcm: Option<FcmSettings>,
    pub apns: Option<ApnsSettings>,
    pub webpush: Option<WebPushSettings>,
}

impl Default for PushWorkerConfig {
    fn default() -> Self {
        PushWorkerConfig {
            storage: StorageSettings::default(),
            ack_wait: Duration::from_secs(60),
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            coalesce_window: Duration::from_secs(2),
            content_free: true,
            concurrency: 256,
            fcm: None,
            apns: None,
            webpush: None,
        }
    }
}

impl PushWorkerConfig {
    /// Reads `NATTER_*` values (see docs in ARCHITECTURE.md, "Push"); key files are read here, so the
    /// config holds their contents.
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<PushWorkerConfig> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let number = |name: &str| -> anyhow::Result<Option<u64>> { get(name).map(|value| value.parse().with_context(|| format!("{name} must be a whole number"))).transpose() };
        let read_file = |name: &str| -> anyhow::Result<Option<String>> {
            get(name).map(|path| std::fs::read_to_string(path).with_context(|| format!("failed to read {name} ({path})"))).transpose()
        };
        let mut config = PushWorkerConfig { storage: store::storage_settings_from_environment(environment)?, ..PushWorkerConfig::default() };
        if let Some(seconds) = number("NATTER_PUSH_ACK_WAIT_SECS")? {
            config.ack_wait = Duration::from_secs(seconds);
        }
        if let Some(attempts) = number("NATTER_PUSH_MAX_ATTEMPTS")? {
            config.max_attempts = attempts;
        }
        if let Some(millis) = number("NATTER_PUSH_BACKOFF_BASE_MILLIS")? {
            config.backoff_base = Duration::from_millis(millis);
        }
        if let Some(seconds) = number("NATTER_PUSH_BACKOFF_MAX_SECS")? {
            config.backoff_max = Duration::from_secs(seconds);
        }
        if let Some(millis) = number("NATTER_PUSH_COALESCE_MILLIS")? {
            config.coalesce_window = Duration::from_millis(millis);
        }
        if let Some(flag) = get("NATTER_PUSH_CONTENT_FREE") {
            config.content_free = flag.parse().context("NATTER_PUSH_CONTENT_FREE must be true or false")?;
        }
        if let Some(concurrency) = number("NATTER_PUSH_CONCURRENCY")? {
            config.concurrency = usize::try_from(concurrency).context("NATTER_PUSH_CONCURRENCY is too large")?;
        }
        if let Some(service_account_json) = read_file("NATTER_PUSH_FCM_SERVICE_ACCOUNT_FILE")? {
            let base_url = get("NATTER_PUSH_FCM_BASE_URL").unwrap_or("https://fcm.googleapis.com").to_owned();
            config.fcm = Some(FcmSettings { service_account_json, base_url });
        }
        if let Some(key_pem) = read_file("NATTER_PUSH_APNS_KEY_FILE")? {
            let required = |name: &str| get(name).map(str::to_owned).with_context(|| format!("{name} is required with NATTER_PUSH_APNS_KEY_FILE"));
            config.apns = Some(ApnsSettings {
                key_pem,
                key_id: required("NATTER_PUSH_APNS_KEY_ID")?,
                team_id: required("NATTER_PUSH_APNS_TEAM_ID")?,
                topic: required("NATTER_PUSH_APNS_TOPIC")?,
                base_url: get("NATTER_PUSH_APNS_BASE_URL").unwrap_or("https://api.push.apple.com").to_owned(),
                token_renewal: crate::providers::DEFAULT_APNS_TOKEN_RENEWAL,
            });
        }
        if let Some(vapid_key_pem) = read_file("NATTER_PUSH_VAPID_KEY_FILE")? {
            let vapid_subject = get("NATTER_PUSH_VAPID_SUBJECT").context("NATTER_PUSH_VAPID_SUBJECT (mailto: or https: contact) is required with a VAPID key")?;
            let allow_http_endpoints = get("NATTER_PUSH_WEBPUSH_ALLOW_HTTP").map(str::parse).transpose().context("NATTER_PUSH_WEBPUSH_ALLOW_HTTP must be true or false")?;
            config.webpush = Some(WebPushSettings { vapid_key_pem, vapid_subject: vapid_subject.to_owned(), allow_http_endpoints: allow_http_endpoints.unwrap_or(false) });
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_attempts >= 1, "NATTER_PUSH_MAX_ATTEMPTS must be at least 1");
        anyhow::ensure!(self.concurrency >= 1, "NATTER_PUSH_CONCURRENCY must be at least 1");
        anyhow::ensure!(
            self.coalesce_window < self.ack_wait,
            "the coalescing window ({:?}) must be shorter than the push ack wait ({:?}), or a waiting job is handed to a second worker",
            self.coalesce_window,
            self.ack_wait
        );
        Ok(())
    }
}
