//! `natter token <user>`: prints a token signed with `NATTER_JWT_SECRET` or, failing that, the data directory's dev secret.

use std::path::Path;

use anyhow::Context;

use crate::config::{JWT_SECRET, NatterConfig};
use crate::dev_secret::{dev_secret_path, read_dev_secret};

/// The token for `user`, with the issuer, audience and lifetime the gateway is configured with.
/// `analyst_scope`: `Some(None)` for an analyst of every conversation, `Some(Some(ids))` for some.
pub fn mint_token(config: &NatterConfig, user: &str, data_dir: &Path, analyst_scope: Option<Option<Vec<String>>>) -> anyhow::Result<String> {
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
    let authenticator = gateway::Authenticator::new(&gateway_config.jwt);
    match analyst_scope {
        None => Ok(authenticator.mint(&user)),
        Some(conversations) => {
            let conversations = conversations
                .map(|ids| ids.iter().map(|id| subjects::Id::parse(id).with_context(|| format!("{id:?} is not a valid conversation id"))).collect::<anyhow::Result<Vec<_>>>())
                .transpose()?;
            Ok(authenticator.mint_analyst(&user, conversations.as_deref()))
        }
    }
}
