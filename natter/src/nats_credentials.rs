//! Which NATS user a role connects as (`NATTER_NATS_USER`, `NATTER_NATS_PASSWORD`) and its own reply-inbox prefix.

use anyhow::bail;
use subjects::permissions::Role;

use crate::config::NatterConfig;

pub const NATS_USER: &str = store::NATS_USER;
pub const NATS_PASSWORD: &str = "NATTER_NATS_PASSWORD";

/// Adds the configured user to `options`, and always the role's inbox prefix: under
/// `nats-config/users.conf` a role may subscribe to `_INBOX_<role>.>` only, so that no role reads
/// another's replies.
pub fn apply(options: async_nats::ConnectOptions, config: &NatterConfig, role: Role) -> anyhow::Result<async_nats::ConnectOptions> {
    let options = options.custom_inbox_prefix(role.inbox_prefix());
    match (config.get(NATS_USER), config.get(NATS_PASSWORD)) {
        (Some(user), Some(password)) => Ok(options.user_and_password(user.to_owned(), password.to_owned())),
        (None, None) => Ok(options),
        _ => bail!("{NATS_USER} and {NATS_PASSWORD} go together"),
    }
}
