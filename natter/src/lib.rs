//! The Natter launcher's library: configuration (file + `NATTER_*` env), local nats-server/redis-server, and the roles every `natter*` binary runs.

pub mod config;
pub mod dev_secret;
pub mod indexer_commands;
pub mod launcher;
pub mod local_services;
pub mod nats_credentials;
pub mod nats_tls;
pub mod roles;
pub mod shutdown_signal;
pub mod token;

use std::io::IsTerminal;

use tokio_util::sync::CancellationToken;

/// Every `natter*` binary allocates through mimalloc: glibc's malloc was ~10 % of the gateway's
/// CPU under load (perf, 1,500 sends/s), most of it in `_int_malloc` and `malloc_consolidate`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs go to stderr: stdout carries the `run` banner and the bare `token` output.
/// Tantivy logs every commit and merge at info (several lines a second); by default only its warnings show.
/// With `NATTER_LOG_FORMAT=json` each line is one JSON object carrying its spans' fields, such as
/// the `request_id` a gateway connection or HTTP send hands on to the workers in a NATS header.
pub fn init_tracing(config: &config::NatterConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tantivy=warn".into());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    if config.log_format_is_json()? {
        builder.json().with_current_span(true).with_span_list(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    Ok(())
}

/// Which single role a `natter-*` binary runs.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Gateway,
    Fanout,
    Media,
    Push,
    Indexer,
}

/// The whole life of a single-role binary: config from `NATTER_CONFIG` and the environment, tracing, signals, the role.
pub async fn run_single_role(role: Role) -> anyhow::Result<()> {
    let config = config::NatterConfig::load(None, &config::process_environment()?)?;
    init_tracing(&config)?;
    let shutdown = CancellationToken::new();
    let signal_task = shutdown_signal::cancel_on_shutdown_signal(shutdown.clone())?;
    let outcome = match role {
        Role::Gateway => roles::run_gateway(&config, shutdown).await,
        Role::Fanout => roles::run_fanout(&config, shutdown).await,
        Role::Media => roles::run_media(&config, shutdown).await,
        Role::Push => roles::run_push(&config, shutdown).await,
        Role::Indexer => roles::run_indexer(&config, shutdown).await,
    };
    signal_task.abort();
    outcome
}
