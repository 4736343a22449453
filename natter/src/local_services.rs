//! The `nats-server`, `redis-server` and `clamd` that `natter run` starts when none is configured, and their graceful stop.

use std::path::Path;

use anyhow::Context;
use devservers::{ClamdServer, NatsServer, NatsServerOptions, RedisServer, RedisServerOptions};

use crate::config::{CLAMD_ADDRESS, MEDIA_SIGNATURES_DIR, NATS_URL, NatterConfig, REDIS_URL};

/// Child servers owned by the launcher. Call [`LocalServices::stop`] on every path out: dropping the value
/// still kills the children, but with SIGKILL, which makes JetStream recover its store on the next start.
pub struct LocalServices {
    nats: Option<NatsServer>,
    redis: Option<RedisServer>,
    clamd: Option<ClamdServer>,
}

impl LocalServices {
    /// Starts whichever of NATS and Redis `config` does not point elsewhere, keeping their data under
    /// `data_dir`, and points `config` at what it started.
    pub async fn start_missing(
        config: &mut NatterConfig,
        data_dir: &Path,
    ) -> anyhow::Result<LocalServices> {
        let mut services = LocalServices {
            nats: None,
            redis: None,
            clamd: None,
        };
        if config.get(NATS_URL).is_none() {
            // Own process group: a Ctrl-C in the terminal reaches only the launcher, which stops the
            // gateway and fanout first and the servers last. A free port, so a nats-server already on 4222 is no obstacle.
            let options = NatsServerOptions {
                port: None,
                config_file: None,
                separate_process_group: true,
                environment: Vec::new(),
            };
            let nats = NatsServer::start_with_options(&data_dir.join("nats"), options)
                .await
                .context("failed to start the local nats-server")?;
            tracing::info!(url = %nats.client_url(), pid = nats.pid(), "local nats-server started");
            config.set_if_unset(NATS_URL, nats.client_url());
            services.nats = Some(nats);
        }
        if config.get(REDIS_URL).is_none() {
            let options = RedisServerOptions {
                port: None,
                separate_process_group: true,
            };
            match RedisServer::start_with_options(&data_dir.join("redis"), options).await {
                Ok(redis) => {
                    tracing::info!(url = %redis.url(), pid = redis.pid(), "local redis-server started");
                    config.set_if_unset(REDIS_URL, redis.url());
                    services.redis = Some(redis);
                }
                Err(error) => {
                    services.stop().await;
                    return Err(error.context("failed to start the local redis-server"));
                }
            }
        }
        if config.get(CLAMD_ADDRESS).is_none() {
            // Optional: without clamd, chat works and uploads stay pending (nothing unscanned is ever served).
            let signatures = config.get(MEDIA_SIGNATURES_DIR).map(std::path::PathBuf::from).unwrap_or_else(default_signature_dir);
            match ClamdServer::start(&signatures, &data_dir.join("clamd")).await {
                Ok(clamd) => {
                    tracing::info!(address = %clamd.address(), "local clamd started");
                    config.set_if_unset(CLAMD_ADDRESS, clamd.address());
                    services.clamd = Some(clamd);
                }
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "no clamd: media uploads will stay pending; run `cargo xtask setup`"),
            }
        }
        Ok(services)
    }

    /// True when NATS is our own child, i.e. a laptop or small-site install rather than a shared cluster.
    pub fn runs_local_nats(&self) -> bool {
        self.nats.is_some()
    }

    /// A line per local server for the start-up banner.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(nats) = &self.nats {
            lines.push(format!(
                "NATS:      {} (local nats-server, log {})",
                nats.client_url(),
                nats.log_path().display()
            ));
        }
        if let Some(clamd) = &self.clamd {
            lines.push(format!("clamd:     {} (local clamd, log {})", clamd.address(), clamd.log_path().display()));
        }
        if let Some(redis) = &self.redis {
            lines.push(format!(
                "Redis:     {} (local redis-server, log {})",
                redis.url(),
                redis.log_path().display()
            ));
        }
        lines
    }

    /// SIGTERM each server and wait for it to exit (SIGKILL after the grace period). Redis goes first:
    /// nothing durable lives there, while NATS may still be flushing JetStream.
    pub async fn stop(mut self) {
        if let Some(mut clamd) = self.clamd.take() {
            clamd.stop().await;
        }
        if let Some(mut redis) = self.redis.take() {
            redis.stop().await;
            tracing::info!("local redis-server stopped");
        }
        if let Some(mut nats) = self.nats.take() {
            nats.stop().await;
            tracing::info!("local nats-server stopped");
        }
    }
}

/// The repo's `media-signatures/` (the checkout this was built from), else `./media-signatures`.
fn default_signature_dir() -> std::path::PathBuf {
    let in_checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("media-signatures");
    if in_checkout.is_dir() { in_checkout } else { std::path::PathBuf::from("media-signatures") }
}
