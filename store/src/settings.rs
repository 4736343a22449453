//! Reads the storage settings every role must agree on from `NATTER_*` values.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use subjects::{Provisioning, StorageSettings};

/// Set when the role runs as its own NATS user (see natter's config).
pub const NATS_USER: &str = "NATTER_NATS_USER";

/// `NATTER_STREAM_REPLICAS`, `NATTER_MESSAGE_TTL_SECS` (0 = forever), `NATTER_DUPLICATE_WINDOW_SECS`,
/// `NATTER_MESSAGE_SHARDS` (log shards new conversations are spread over; it may grow, never shrink);
/// with `NATTER_NATS_USER` the role only opens the layout: its user may not create streams.
pub fn storage_settings_from_environment(environment: &HashMap<String, String>) -> anyhow::Result<StorageSettings> {
    let get = |name: &str| environment.get(name).map(String::as_str).filter(|value| !value.is_empty());
    let mut settings = StorageSettings::default();
    if let Some(replicas) = get("NATTER_STREAM_REPLICAS") {
        settings.replicas = replicas.parse().context("NATTER_STREAM_REPLICAS must be 1, 3 or 5")?;
    }
    if let Some(seconds) = get("NATTER_MESSAGE_TTL_SECS") {
        settings.message_ttl = Duration::from_secs(seconds.parse().context("NATTER_MESSAGE_TTL_SECS must be whole seconds")?);
    }
    if let Some(seconds) = get("NATTER_DUPLICATE_WINDOW_SECS") {
        settings.duplicate_window = Duration::from_secs(seconds.parse().context("NATTER_DUPLICATE_WINDOW_SECS must be whole seconds")?);
    }
    if let Some(shards) = get("NATTER_MESSAGE_SHARDS") {
        settings.message_shards = shards.parse().context("NATTER_MESSAGE_SHARDS must be a whole number")?;
    }
    if get(NATS_USER).is_some() {
        settings.provisioning = Provisioning::OpenExisting;
    }
    anyhow::ensure!([1, 3, 5].contains(&settings.replicas), "stream replicas must be 1, 3 or 5, not {}", settings.replicas);
    anyhow::ensure!(
        (1..=subjects::MAX_MESSAGE_SHARDS).contains(&settings.message_shards),
        "NATTER_MESSAGE_SHARDS must be 1 to {} (the shards nats-config/users.conf grants), not {}",
        subjects::MAX_MESSAGE_SHARDS,
        settings.message_shards
    );
    anyhow::ensure!(!settings.duplicate_window.is_zero(), "the duplicate window must be at least one second");
    Ok(settings)
}
