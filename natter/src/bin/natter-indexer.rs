//! `natter-indexer`: one search indexer against the NATS in `NATTER_NATS_URL`; `reindex` rebuilds its index from the log, `bench` measures indexing and queries on a throwaway NATS.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "natter-indexer", version, about = "Natter's search indexer")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Index the log and answer searches (the default).
    Run,
    /// Rebuild the index in NATTER_SEARCH_INDEX_DIR from the whole log, with a progress bar; stop the indexer using it first.
    Reindex,
    /// Index throughput and query latency over synthetic messages, on a nats-server of its own.
    Bench {
        /// Messages to index.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Queries to time after indexing.
        #[arg(long, default_value_t = 10_000)]
        queries: u64,
        /// A small run that checks the whole path (2,000 messages, 100 queries); overrides the sizes.
        #[arg(long)]
        smoke: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => natter::run_single_role(natter::Role::Indexer).await,
        Command::Reindex => {
            let config = natter::config::NatterConfig::load(None, &natter::config::process_environment()?)?;
            natter::init_tracing(&config)?;
            natter::indexer_commands::run_reindex(&config).await
        }
        Command::Bench { messages, queries, smoke } => {
            natter::init_tracing(&natter::config::NatterConfig::load(None, &natter::config::process_environment()?)?)?;
            let options = if smoke { indexer::bench::BenchOptions::smoke() } else { indexer::bench::BenchOptions::full(messages, queries) };
            let report = natter::indexer_commands::run_bench(&options).await?;
            println!("{}", report.to_markdown());
            Ok(())
        }
    }
}
