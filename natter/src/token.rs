//! `natter token <user>`: prints a token signed with `NATTER_JWT_SECRET` or, failing that, the data directory's dev secret.

use std::path::Path;

use anyhow::Context;

use crate::config::{JWT_SECRET, NatterConfig};
use crate::dev_secret::{dev_secret_path, read_dev_secret};

/// The token for `user`, with the issuer, audience and lifetime the gateway is configured with.
pub fn mint_token(config: &NatterConfig, user: &str, data_dir: &Path) -> anyhow::Result<String> {
    let user =
        subjects::Id::parse(user).with_context(|| format!("{user:?} is not a valid user id"))?;
    let mut environment = config.environment().clone();
    if config.get(JWT_SECRET).is_none() {
        // Reading only: a token signed with a secret no gateway uses would just fail later, and confusingly.
        let secret = read_dev_secret(data_dir)?.with_context(|| {
            format!(
                "no signing secret: {JWT_SECRET} is unset and {} does not exist (run `natter run` with this data \
                 directory once, or pass --data-dir)",
                dev_secret_path(data_dir).display()
            )
        })?;
        environment.insert(JWT_SECRET.to_owned(), secret);
    }
    let gateway_config = gateway::GatewayConfig::from_environment(&environment)?;
    Ok(gateway::Authenticator::new(&gateway_config.jwt).mint(&user))
}
