//! The gateway's configuration: defaults, then `NATTER_*` environment values, then `validate()`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use subjects::StorageSettings;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub jwt: JwtConfig,
    /// Dev mode mints tokens at `POST /v1/dev/token`; never on in production.
    pub dev_mode: bool,
    pub storage: StorageSettings,
    pub limits: Limits,
    /// Redis for presence and cross-gateway typing limits (`NATTER_REDIS_URL`). `None` disables
    /// presence entirely (no `presence` frames are ever sent) and rate-limits typing per gateway.
    pub redis_url: Option<String>,
    /// The server pings every socket this often; a socket silent for twice this long is closed
    /// (1001 "heartbeat timeout") and its device stops counting as online.
    pub heartbeat_interval: Duration,
    /// Upload caps, allowed types and signed-URL lifetimes.
    pub media: crate::media_settings::MediaSettings,
    /// Sends, connects and uploads per user and per client address (`NATTER_RATE_*`).
    pub rate_limits: crate::rate_limit::RateLimits,
    /// Deny-list and spam signal for readable text.
    pub content_policy: crate::content_filter::ContentPolicy,
}

/// Default heartbeat: frequent enough to notice a vanished phone within a minute, rare enough to cost little.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest heartbeat accepted; below this the pings themselves become the load.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Lifetime of tokens this server mints in dev mode.
    pub dev_token_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Cap on a message body's content (text, media id or ciphertext).
    pub max_body_bytes: usize,
    /// Cap on one WebSocket message after reassembling its fragments, and on HTTP bodies.
    pub max_frame_bytes: usize,
    /// Frames queued for one device before it counts as too slow and is disconnected.
    pub outbound_queue_frames: usize,
    /// Bad frames one connection may send before it is closed.
    pub max_protocol_errors: u32,
    /// How long a sync may wait on a device that does not read.
    pub sync_send_timeout: Duration,
    /// How often coalesced delivered receipts are announced.
    pub delivered_announce_interval: Duration,
    /// How often coalesced delivered watermarks are stored (announcing them does not wait for it).
    pub delivered_store_interval: Duration,
    /// Members per group and conversations per user (`NATTER_MAX_GROUP_MEMBERS`, `NATTER_MAX_CONVERSATIONS_PER_USER`).
    pub conversations: store::ConversationLimits,
    /// Devices one user may have connected to one gateway at once (`NATTER_MAX_DEVICES_PER_USER`).
    pub max_devices_per_user: usize,
    /// How long after sending the sender may edit a message (`NATTER_EDIT_WINDOW_SECS`).
    pub edit_window: Duration,
    /// Members from which a group is delivered by multicast (`NATTER_MULTICAST_MIN_MEMBERS`).
    pub multicast_min_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_frame_bytes: 256 * 1024,
            outbound_queue_frames: 1024,
            max_protocol_errors: 20,
            sync_send_timeout: Duration::from_secs(30),
            delivered_announce_interval: Duration::from_millis(250),
            delivered_store_interval: Duration::from_secs(2),
            conversations: store::ConversationLimits::default(),
            max_devices_per_user: 20,
            // Telegram's 48 hours: long enough to fix a typo found the next day.
            edit_window: Duration::from_secs(48 * 3600),
            // Below a few hundred members, a publish per member costs less than every gateway's interest bookkeeping.
            multicast_min_members: 500,
        }
    }
}

impl GatewayConfig {
    /// A development configuration with the given secret; tests start from this.
    pub fn for_development(secret: impl Into<String>) -> GatewayConfig {
        GatewayConfig {
            jwt: JwtConfig { secret: secret.into(), issuer: None, audience: None, dev_token_ttl: Duration::from_secs(7 * 24 * 3600) },
            dev_mode: true,
            storage: StorageSettings::default(),
            limits: Limits::default(),
            redis_url: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            media: crate::media_settings::MediaSettings::default(),
            rate_limits: crate::rate_limit::RateLimits::default(),
            content_policy: crate::content_filter::ContentPolicy::default(),
        }
    }

    /// Reads `NATTER_*` values from `environment` (passed in so tests and the launcher control it).
    pub fn from_environment(environment: &HashMap<String, String>) -> anyhow::Result<GatewayConfig> {
        let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
        let mut config = GatewayConfig::for_development(get("NATTER_JWT_SECRET").unwrap_or_default());
        config.dev_mode = parse_flag(get("NATTER_DEV_MODE"))?;
        config.jwt.issuer = get("NATTER_JWT_ISSUER").map(str::to_owned);
        config.jwt.audience = get("NATTER_JWT_AUDIENCE").map(str::to_owned);
        config.storage = store::storage_settings_from_environment(environment)?;
        if let Some(bytes) = get("NATTER_MAX_BODY_BYTES") {
            config.limits.max_body_bytes = bytes.parse().context("NATTER_MAX_BODY_BYTES must be a byte count")?;
        }
        if let Some(bytes) = get("NATTER_MAX_FRAME_BYTES") {
            config.limits.max_frame_bytes = bytes.parse().context("NATTER_MAX_FRAME_BYTES must be a byte count")?;
        }
        if let Some(frames) = get("NATTER_OUTBOUND_QUEUE") {
            config.limits.outbound_queue_frames = frames.parse().context("NATTER_OUTBOUND_QUEUE must be a frame count")?;
        }
        if let Some(count) = get("NATTER_MAX_GROUP_MEMBERS") {
            config.limits.conversations.max_group_members = count.parse().context("NATTER_MAX_GROUP_MEMBERS must be a count")?;
        }
        if let Some(count) = get("NATTER_MAX_CONVERSATIONS_PER_USER") {
            config.limits.conversations.max_conversations_per_user = count.parse().context("NATTER_MAX_CONVERSATIONS_PER_USER must be a count")?;
        }
        if let Some(count) = get("NATTER_MAX_DEVICES_PER_USER") {
            config.limits.max_devices_per_user = count.parse().context("NATTER_MAX_DEVICES_PER_USER must be a count")?;
        }
        if let Some(seconds) = get("NATTER_EDIT_WINDOW_SECS") {
            config.limits.edit_window = Duration::from_secs(seconds.parse().context("NATTER_EDIT_WINDOW_SECS must be a whole number of seconds")?);
        }
        if let Some(count) = get("NATTER_MULTICAST_MIN_MEMBERS") {
            config.limits.multicast_min_members = count.parse().context("NATTER_MULTICAST_MIN_MEMBERS must be a count")?;
        }
        config.redis_url = get("NATTER_REDIS_URL").map(str::to_owned);
        if let Some(seconds) = get("NATTER_HEARTBEAT_SECS") {
            let seconds: f64 = seconds.parse().context("NATTER_HEARTBEAT_SECS must be a number of seconds (fractions allowed)")?;
            config.heartbeat_interval = Duration::try_from_secs_f64(seconds).context("NATTER_HEARTBEAT_SECS must be a positive number of seconds")?;
        }
        if let Some(millis) = get("NATTER_HEARTBEAT_MILLIS") {
            config.heartbeat_interval = Duration::from_millis(millis.parse().context("NATTER_HEARTBEAT_MILLIS must be a whole number of milliseconds")?);
        }
        config.media = crate::media_settings::MediaSettings::from_environment(environment)?;
        config.rate_limits = crate::rate_limit::RateLimits::from_environment(environment)?;
        config.content_policy = crate::content_filter::ContentPolicy::from_environment(environment)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.jwt.secret.len() < 32 {
            bail!("NATTER_JWT_SECRET must be at least 32 bytes (HS256 needs a strong shared secret)");
        }
        if self.limits.max_frame_bytes < self.limits.max_body_bytes + 1024 {
            bail!("the frame cap must exceed the body cap, with room for the envelope");
        }
        if self.limits.outbound_queue_frames == 0 {
            bail!("the outbound queue needs room for at least one frame");
        }
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            bail!("the heartbeat interval must be at least {MIN_HEARTBEAT_INTERVAL:?}");
        }
        Ok(())
    }
}

fn parse_flag(value: Option<&str>) -> anyhow::Result<bool> {
    match value {
        None => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("expected a yes/no flag, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::GatewayConfig;

    fn check(settings: &[(&str, &str)], expected: Result<Duration, &str>) {
        let mut environment: HashMap<String, String> = settings.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        environment.insert("NATTER_JWT_SECRET".to_owned(), "a-test-secret-that-is-long-enough-for-hs256".to_owned());
        match (GatewayConfig::from_environment(&environment), expected) {
            (Ok(config), Ok(interval)) => assert_eq!(config.heartbeat_interval, interval, "{settings:?}"),
            (Err(error), Err(fragment)) => assert!(format!("{error:#}").contains(fragment), "{settings:?}: {error:#}"),
            (outcome, expected) => panic!("{settings:?}: got {:?}, expected {expected:?}", outcome.map(|config| config.heartbeat_interval)),
        }
    }

    #[test]
    fn heartbeat_interval_from_seconds_or_millis() {
        check(&[], Ok(Duration::from_secs(30)));
        check(&[("NATTER_HEARTBEAT_SECS", "10")], Ok(Duration::from_secs(10)));
        check(&[("NATTER_HEARTBEAT_SECS", "0.5")], Ok(Duration::from_millis(500)));
        check(&[("NATTER_HEARTBEAT_MILLIS", "250")], Ok(Duration::from_millis(250)));
        check(&[("NATTER_HEARTBEAT_SECS", "10"), ("NATTER_HEARTBEAT_MILLIS", "250")], Ok(Duration::from_millis(250)));
        check(&[("NATTER_HEARTBEAT_SECS", "soon")], Err("NATTER_HEARTBEAT_SECS"));
        check(&[("NATTER_HEARTBEAT_SECS", "-1")], Err("NATTER_HEARTBEAT_SECS"));
        check(&[("NATTER_HEARTBEAT_MILLIS", "5")], Err("heartbeat interval must be at least"));
    }
}
