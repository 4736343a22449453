//! `natter`: the all-in-one launcher (`natter run`), single roles (`natter gateway`, `natter fanout`, `natter indexer` …) and `natter token`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use natter::config::{self, NatterConfig};
use natter::{launcher, roles, shutdown_signal, token};

#[derive(Parser)]
#[command(name = "natter", version, about = "Natter: chat on NATS JetStream")]
struct Cli {
    /// TOML file whose keys are the NATTER_* names without the prefix, lowercased (`listen = "0.0.0.0:8080"`);
    /// defaults to $NATTER_CONFIG. Environment variables win over the file.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on this machine: local nats-server and redis-server unless NATTER_NATS_URL / NATTER_REDIS_URL
    /// are set, then the gateway and a fanout worker. Ctrl-C stops it all.
    Run,
    /// Create or update every stream, bucket and object store, then exit; run it as the `provisioner`
    /// NATS user before roles that run as their own users (NATTER_NATS_USER), which only open them.
    Provision,
    /// Only the gateway, against the configured NATS.
    Gateway,
    /// Only a fanout worker, against the configured NATS.
    Fanout,
    /// Only a media worker (scan, thumbnails), against the configured NATS and NATTER_CLAMD_ADDRESS.
    Media,
    /// Only a push worker (FCM, APNs, Web Push), against the configured NATS and the NATTER_PUSH_* credentials.
    Push,
    /// Only a search indexer (index in NATTER_SEARCH_INDEX_DIR, answers svc.search), against the configured NATS.
    Indexer,
    /// Print a token for USER, signed with NATTER_JWT_SECRET or the dev secret in the data directory.
    Token {
        user: String,
        /// Data directory holding the dev secret; defaults to $NATTER_DATA_DIR, then ./.natter-data.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// An analyst's token (POST /v1/analytics/search), for every conversation unless --conversations is given.
        #[arg(long)]
        analyst: bool,
        /// With --analyst: the only conversations the token may search, comma-separated.
        #[arg(long, value_delimiter = ',', requires = "analyst", value_name = "IDS")]
        conversations: Option<Vec<String>>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = NatterConfig::load(cli.config.as_deref(), &config::process_environment()?)?;
    natter::init_tracing(&config)?;

    let shutdown = CancellationToken::new();
    let signal_task = shutdown_signal::cancel_on_shutdown_signal(shutdown.clone())?;
    let outcome = match cli.command {
        Command::Run => launcher::run_all_in_one(config, shutdown).await,
        Command::Provision => roles::run_provision(&config).await,
        Command::Gateway => roles::run_gateway(&config, shutdown).await,
        Command::Fanout => roles::run_fanout(&config, shutdown).await,
        Command::Media => roles::run_media(&config, shutdown).await,
        Command::Push => roles::run_push(&config, shutdown).await,
        Command::Indexer => roles::run_indexer(&config, shutdown).await,
        Command::Token { user, data_dir, analyst, conversations } => {
            let data_dir = data_dir.unwrap_or_else(|| config.data_dir());
            let analyst_scope = analyst.then_some(conversations);
            token::mint_token(&config, &user, &data_dir, analyst_scope).map(|token| println!("{token}"))
        }
    };
    signal_task.abort();
    outcome
}
