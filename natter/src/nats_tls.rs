//! TLS to NATS, switched on by configuration: `NATTER_NATS_TLS_CA` trusts a CA and requires TLS; `NATTER_NATS_TLS_CERT` and `_KEY` add a client certificate.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::config::NatterConfig;

pub const NATS_TLS_CA: &str = "NATTER_NATS_TLS_CA";
pub const NATS_TLS_CERT: &str = "NATTER_NATS_TLS_CERT";
pub const NATS_TLS_KEY: &str = "NATTER_NATS_TLS_KEY";

/// Adds the configured TLS settings to `options`; without them the connection is plain, as before.
pub fn apply(options: async_nats::ConnectOptions, config: &NatterConfig) -> anyhow::Result<async_nats::ConnectOptions> {
    let readable = |name: &str| -> anyhow::Result<Option<PathBuf>> {
        match config.get(name) {
            None => Ok(None),
            Some(path) => {
                let path = PathBuf::from(path);
                // Checked here so a typo fails at start with the setting's name, not as a handshake error later.
                std::fs::metadata(&path).with_context(|| format!("{name}: cannot read {}", path.display()))?;
                Ok(Some(path))
            }
        }
    };
    let mut options = options;
    if let Some(ca) = readable(NATS_TLS_CA)? {
        // Trusting a CA means meaning it: never fall back to plaintext when the server offers it.
        options = options.add_root_certificates(ca).require_tls(true);
    }
    match (readable(NATS_TLS_CERT)?, readable(NATS_TLS_KEY)?) {
        (Some(cert), Some(key)) => options = options.add_client_certificate(cert, key).require_tls(true),
        (None, None) => {}
        _ => bail!("{NATS_TLS_CERT} and {NATS_TLS_KEY} go together: a client certificate needs its key"),
    }
    Ok(options)
}
